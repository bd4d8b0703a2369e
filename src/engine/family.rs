//! The two IP families of the `ip` and `ip6` tables, and what differs between them.

use std::net::IpAddr;

use crate::netlink::sys::{NFPROTO_IPV4, NFPROTO_IPV6};
use crate::netlink::{DataType, Family, PayloadField};

/// The two IP families a farm can render into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn family(self) -> Family {
        match self {
            IpFamily::V4 => Family::Ip,
            IpFamily::V6 => Family::Ip6,
        }
    }

    pub(super) fn nfproto(self) -> u32 {
        match self {
            IpFamily::V4 => NFPROTO_IPV4,
            IpFamily::V6 => NFPROTO_IPV6,
        }
    }

    /// Where a persistence or hash key field is read from the packet.
    pub(super) fn key_field(self, k: crate::model::KeyField) -> PayloadField {
        use crate::model::KeyField;
        match k {
            KeyField::Srcip => self.saddr(),
            KeyField::Dstip => self.daddr(),
            KeyField::Srcport => PayloadField::ThSport,
            KeyField::Dstport => PayloadField::ThDport,
            KeyField::Srcmac => PayloadField::EtherSaddr,
            KeyField::Dstmac => PayloadField::EtherDaddr,
        }
    }

    pub(super) fn is_v6(self) -> bool {
        self == IpFamily::V6
    }

    pub(super) fn has(self, ip: &IpAddr) -> bool {
        ip.is_ipv6() == self.is_v6()
    }

    pub(super) fn addr_type(self) -> DataType {
        match self {
            IpFamily::V4 => DataType::Ipv4Addr,
            IpFamily::V6 => DataType::Ipv6Addr,
        }
    }

    pub(super) fn saddr(self) -> PayloadField {
        match self {
            IpFamily::V4 => PayloadField::IpSaddr,
            IpFamily::V6 => PayloadField::Ip6Saddr,
        }
    }

    pub(super) fn daddr(self) -> PayloadField {
        match self {
            IpFamily::V4 => PayloadField::IpDaddr,
            IpFamily::V6 => PayloadField::Ip6Daddr,
        }
    }

    pub const BOTH: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];
}
