//! Expression builders of the layer-2 rules, and what differs between the two IP families at
//! layer 2: the EtherType, the sets' names (IPv6 ones end in `6`), and which registers are free
//! after a key (IPv6 addresses take four times the room).

use std::net::IpAddr;

use crate::model::{Farm, KeyField, Scheduler};
use crate::netlink::consts::reg;
use crate::netlink::sys::*;
use crate::netlink::*;

use super::super::family::IpFamily;
use super::super::layout::{SET_L2_FLOWS, STL_FLOWS, l2_family_name, l2_persist_set};

/// How long an idle flow keeps its backend.
const FLOW_TTL_MS: u64 = 300_000;
/// Register of a persistent client's backend (after a key of up to 12 words).
pub(super) const PERSIST_DATA: u32 = reg::R4;

/// The layer-2 side of an IP family.
pub(super) trait L2Family: Copy {
    /// `meta protocol ip|ip6`.
    fn dependency(self, e: &mut Vec<Expr>);
    /// 32-bit registers an address takes.
    fn words(self) -> u32;
    /// A set's or chain's name in this family.
    fn name(self, base: &str) -> String;
    /// Where a flow's backend goes: after the flow key (3 words, or 9 over IPv6).
    fn flow_data(self) -> u32;
    /// `ip[6] saddr|daddr set` from `sreg`, with the checksums updated (IPv4's header
    /// checksum, and the transport checksum's pseudo-header in both families).
    fn set_addr(self, e: &mut Vec<Expr>, dst: bool, sreg: u32);
}

impl L2Family for IpFamily {
    fn dependency(self, e: &mut Vec<Expr>) {
        let ethertype: u16 = if self.is_v6() { 0x86dd } else { 0x0800 };
        e.push(Expr::meta(NFT_META_PROTOCOL, reg::R1));
        e.push(Expr::cmp(reg::R1, CmpOp::Eq, ethertype.to_be_bytes().to_vec()));
    }

    fn words(self) -> u32 {
        if self.is_v6() { 4 } else { 1 }
    }

    fn name(self, base: &str) -> String {
        l2_family_name(self.is_v6(), base)
    }

    fn flow_data(self) -> u32 {
        if self.is_v6() { reg::R4 } else { reg::R3 }
    }

    fn set_addr(self, e: &mut Vec<Expr>, dst: bool, sreg: u32) {
        let (_, offset, len) = if dst { self.daddr() } else { self.saddr() }.location();
        let (csum_type, csum_offset) = if self.is_v6() {
            (NFT_PAYLOAD_CSUM_NONE, 0)
        } else {
            (NFT_PAYLOAD_CSUM_INET, 10)
        };
        e.push(Expr::PayloadSet {
            sreg,
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len,
            csum_type,
            csum_offset,
            csum_flags: NFT_PAYLOAD_L4CSUM_PSEUDOHDR,
        });
    }
}

pub(super) fn family_of(ip: IpAddr) -> IpFamily {
    if ip.is_ipv6() { IpFamily::V6 } else { IpFamily::V4 }
}

pub(super) fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `meta iiftype ether`, which nft wants before link-layer matches.
pub(super) fn ether_dependency(e: &mut Vec<Expr>) {
    e.push(Expr::meta(NFT_META_IFTYPE, reg::R1));
    e.push(Expr::cmp(reg::R1, CmpOp::Eq, 1u16.to_ne_bytes().to_vec()));
}

/// Both dependencies a rule on an IP packet in an Ethernet frame starts with.
pub(super) fn dependencies(e: &mut Vec<Expr>, fam: IpFamily) {
    fam.dependency(e);
    ether_dependency(e);
}

/// `ether daddr|saddr set` (offset 0 or 6) from `sreg`.
pub(super) fn set_ether(e: &mut Vec<Expr>, offset: u32, sreg: u32) {
    e.push(Expr::PayloadSet {
        sreg,
        base: NFT_PAYLOAD_LL_HEADER,
        offset,
        len: 6,
        csum_type: 0,
        csum_offset: 0,
        csum_flags: 0,
    });
}

/// `th dport|sport set` from `sreg`, with the transport checksum updated (`csum_offset` is the
/// checksum's offset in the TCP or UDP header).
pub(super) fn set_port(e: &mut Vec<Expr>, offset: u32, sreg: u32, csum_offset: u32) {
    e.push(Expr::PayloadSet {
        sreg,
        base: NFT_PAYLOAD_TRANSPORT_HEADER,
        offset,
        len: 2,
        csum_type: NFT_PAYLOAD_CSUM_INET,
        csum_offset,
        csum_flags: 0,
    });
}

/// `fwd to` the interface `index`.
pub(super) fn fwd(e: &mut Vec<Expr>, index: u32) {
    e.push(Expr::immediate(reg::R2, index.to_ne_bytes().to_vec()));
    e.push(Expr::Fwd {
        sreg_dev: reg::R2,
        addr: None,
    });
}

/// `ip saddr . ip daddr . th sport` into R1… The VIP is a constant when given (a stlsdnat
/// packet's destination is already rewritten when its memories are updated).
pub(super) fn flow_key(e: &mut Vec<Expr>, fam: IpFamily, vip: Option<IpAddr>) {
    let w = fam.words();
    e.push(Expr::payload(fam.saddr(), reg::R1));
    match vip {
        Some(v) => e.push(Expr::immediate(reg::r32(w), octets(v))),
        None => e.push(Expr::payload(fam.daddr(), reg::r32(w))),
    }
    e.push(Expr::payload(PayloadField::ThSport, reg::r32(2 * w)));
}

/// VIP . persistence fields into R1… (the VIP and destination as constants when given).
pub(super) fn persist_key(e: &mut Vec<Expr>, fam: IpFamily, keys: &[KeyField], vip: Option<IpAddr>) {
    let daddr = |e: &mut Vec<Expr>, reg: u32| match vip {
        Some(v) => e.push(Expr::immediate(reg, octets(v))),
        None => e.push(Expr::payload(fam.daddr(), reg)),
    };
    daddr(e, reg::R1);
    let mut word = fam.words();
    for k in keys {
        let field = fam.key_field(*k);
        if *k == KeyField::Dstip {
            daddr(e, reg::r32(word));
        } else {
            e.push(Expr::payload(field, reg::r32(word)));
        }
        word += types::reg_len(field.location().2) / 4;
    }
}

fn update(set: String, ttl_ms: u64, data: u32) -> Expr {
    Expr::Dynset {
        set,
        op: DynsetOp::Update,
        sreg_key: reg::R1,
        sreg_data: Some(data),
        timeout_ms: Some(ttl_ms),
        exprs: Vec::new(),
    }
}

/// Remember the client's backend (in `data`) in the farm's persistence map.
pub(super) fn persist_update(stateless: bool, fam: IpFamily, farm: &Farm, data: u32) -> Expr {
    let ttl = u64::from(farm.persist_ttl.max(1)) * 1000;
    let set = l2_persist_set(stateless, fam.is_v6(), &farm.persistence);
    update(set, ttl, data)
}

/// Remember the flow's backend (in `data`) in `l2-flows` or `stl-flows`.
pub(super) fn flow_update(stateless: bool, fam: IpFamily, data: u32) -> Expr {
    let set = if stateless { STL_FLOWS } else { SET_L2_FLOWS };
    update(fam.name(set), FLOW_TTL_MS, data)
}

/// The flow hash a layer-2 farm chooses with, into R1 (slot number).
pub(super) fn hash(e: &mut Vec<Expr>, fam: IpFamily, farm: &Farm, slots: u32, offset: u32) {
    let fields: Vec<KeyField> = farm.hash_fields();
    let mut word = 0u32;
    for k in &fields {
        let field = fam.key_field(*k);
        e.push(Expr::payload(
            field,
            if word == 0 { reg::R1 } else { reg::r32(word) },
        ));
        word += types::reg_len(field.location().2) / 4;
    }
    match farm.scheduler {
        Scheduler::Symhash => e.push(Expr::Symhash {
            dreg: reg::R1,
            modulus: slots,
            offset,
        }),
        _ => e.push(Expr::Jhash {
            sreg: reg::R1,
            dreg: reg::R1,
            len: if let [k] = fields.as_slice() {
                fam.key_field(*k).location().2
            } else {
                word * 4
            },
            modulus: slots,
            seed: Some(0),
            offset,
        }),
    }
}

/// A log statement with the farm's prefix, rate-limited by `log-rtlimit` when set.
pub(super) fn farm_log(e: &mut Vec<Expr>, farm: &Farm, prefix: String) {
    if let Some(rate) = farm.log_rtlimit.filter(|r| r.count > 0) {
        e.push(Expr::Limit(Limit {
            rate: rate.count,
            unit: match rate.unit {
                crate::model::RateUnit::Second => RateUnit::Second,
                crate::model::RateUnit::Minute => RateUnit::Minute,
                crate::model::RateUnit::Hour => RateUnit::Hour,
                crate::model::RateUnit::Day => RateUnit::Day,
                crate::model::RateUnit::Week => RateUnit::Week,
            },
            burst: 5,
            bytes: false,
            over: false,
        }));
    }
    e.push(super::super::render::log(prefix));
}
