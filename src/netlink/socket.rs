//! A netlink socket (NETLINK_NETFILTER, or NETLINK_ROUTE for links and addresses): the only I/O
//! of the netlink layer.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, setsockopt, sockopt,
};
use nix::sys::time::TimeVal;
use nix::{setsockopt_impl, sockopt_impl};

use super::consts::*;

// The netlink options nix does not define, declared through nix's own macro so that the value is
// passed with the type and length the kernel reads (an int).
sockopt_impl!(
    /// Extended acks: an error names the attribute the kernel refused.
    ExtAck,
    SetOnly,
    SOL_NETLINK,
    NETLINK_EXT_ACK,
    bool
);
sockopt_impl!(
    /// Error replies carry only the header of the refused message, not all of it.
    CapAck,
    SetOnly,
    SOL_NETLINK,
    NETLINK_CAP_ACK,
    bool
);
sockopt_impl!(
    /// Joins one multicast group, by number.
    AddMembership,
    SetOnly,
    SOL_NETLINK,
    NETLINK_ADD_MEMBERSHIP,
    u32
);
sockopt_impl!(
    /// Leaves one multicast group, by number.
    DropMembership,
    SetOnly,
    SOL_NETLINK,
    NETLINK_DROP_MEMBERSHIP,
    u32
);

/// The least receive buffer: twice the largest datagram nf_tables or rtnetlink queues at once.
const RECV_BUF: usize = 64 * 1024;

pub struct Socket {
    fd: OwnedFd,
    portid: u32,
    sndbuf: usize,
    rcvbuf: usize,
}

impl Socket {
    /// Opens and binds a socket; `groups` is a multicast group to join (0 for none).
    pub fn open(group: u32) -> io::Result<Self> {
        Self::open_protocol(SockProtocol::NetlinkNetFilter, group)
    }

    /// The same for another netlink protocol (NETLINK_ROUTE for links, addresses, neighbours).
    pub fn open_protocol(protocol: SockProtocol, group: u32) -> io::Result<Self> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )?;
        // Port id 0: the kernel picks a unique one, read back below.
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        let bound: NetlinkAddr = socket::getsockname(fd.as_raw_fd())?;
        let mut s = Self {
            fd,
            portid: bound.pid(),
            sndbuf: 0,
            rcvbuf: 0,
        };
        setsockopt(&s.fd, ExtAck, &true)?;
        setsockopt(&s.fd, CapAck, &true)?;
        if group != 0 {
            setsockopt(&s.fd, AddMembership, &group)?;
        }
        s.set_rcvbuf(1 << 20)?;
        Ok(s)
    }

    pub fn portid(&self) -> u32 {
        self.portid
    }

    /// Joins multicast group `group` (again).
    pub fn join(&self, group: u32) -> io::Result<()> {
        Ok(setsockopt(&self.fd, AddMembership, &group)?)
    }

    /// Leaves multicast group `group`: nothing more is queued for it; what was queued stays.
    pub fn leave(&self, group: u32) -> io::Result<()> {
        Ok(setsockopt(&self.fd, DropMembership, &group)?)
    }

    /// A second handle on this socket that joins and leaves `group`, for the code that knows
    /// when a transaction is large enough not to be heard.
    pub fn membership(&self, group: u32) -> io::Result<Membership> {
        Ok(Membership {
            fd: self.fd.try_clone()?,
            group,
        })
    }

    /// Joins legacy multicast groups given as a bit mask (rtnetlink's RTMGRP_*) by rebinding.
    pub fn join_legacy_groups(&self, mask: u32) -> io::Result<()> {
        Ok(socket::bind(
            self.fd.as_raw_fd(),
            &NetlinkAddr::new(self.portid, mask),
        )?)
    }

    /// Grows the send buffer so that one batch fits in one message (as nft does); the FORCE
    /// variant ignores wmem_max and needs CAP_NET_ADMIN, which every caller of nf_tables has.
    pub fn ensure_sndbuf(&mut self, len: usize) -> io::Result<()> {
        if len + 4096 <= self.sndbuf {
            return Ok(());
        }
        let want = (len + 65536).next_power_of_two().min(i32::MAX as usize / 2);
        setsockopt(&self.fd, sockopt::SndBufForce, &want)
            .or_else(|_| setsockopt(&self.fd, sockopt::SndBuf, &want))?;
        self.sndbuf = want;
        Ok(())
    }

    pub fn set_rcvbuf(&mut self, len: usize) -> io::Result<()> {
        if len <= self.rcvbuf {
            return Ok(());
        }
        // The kernel reads an int: a larger request would wrap to a negative size.
        let len = len.min(i32::MAX as usize / 2);
        setsockopt(&self.fd, sockopt::RcvBufForce, &len)
            .or_else(|_| setsockopt(&self.fd, sockopt::RcvBuf, &len))?;
        self.rcvbuf = len;
        Ok(())
    }

    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        // Port id 0 is the kernel.
        let kernel = NetlinkAddr::new(0, 0);
        loop {
            match socket::sendto(self.fd.as_raw_fd(), buf, &kernel, MsgFlags::empty()) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(n) if n != buf.len() => {
                    return Err(io::Error::other(format!(
                        "short netlink send: {n} of {}",
                        buf.len()
                    )));
                }
                Ok(_) => return Ok(()),
            }
        }
    }

    /// Receives one datagram into `buf` (at least 64 KiB); returns its length. A datagram longer
    /// than `buf` is lost: that is an error, and `buf` is grown to fit the next.
    pub fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.recv_flags(buf, MsgFlags::empty())
    }

    /// Receives one datagram if one is queued, without waiting; `None` when none is.
    pub fn try_recv(&self, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
        match self.recv_flags(buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn recv_flags(&self, buf: &mut Vec<u8>, flags: MsgFlags) -> io::Result<usize> {
        // One read per datagram: with MSG_TRUNC the kernel returns the datagram's real length.
        // The buffers are larger than anything nf_tables sends at once (a dump part or a
        // notification skb is at most 32 KiB), so a cut is an anomaly: it is reported, and the
        // buffer grown so that the next one fits.
        if buf.len() < RECV_BUF {
            buf.resize(RECV_BUF, 0);
        }
        loop {
            match socket::recv(self.fd.as_raw_fd(), buf, flags | MsgFlags::MSG_TRUNC) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(n) if n > buf.len() => {
                    buf.resize(n, 0);
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a netlink message of {n} bytes did not fit the buffer and was lost"),
                    ));
                }
                Ok(n) => return Ok(n),
            }
        }
    }

    /// Sets a receive timeout (None: block forever).
    pub fn set_recv_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        let tv = match t {
            Some(d) => TimeVal::new(
                d.as_secs().try_into().unwrap_or(nix::libc::time_t::MAX),
                d.subsec_micros().into(),
            ),
            None => TimeVal::new(0, 0),
        };
        Ok(setsockopt(&self.fd, sockopt::ReceiveTimeout, &tv)?)
    }
}

/// Joins and leaves one multicast group of a socket owned elsewhere (the descriptor is a
/// duplicate: the membership is the socket's).
pub struct Membership {
    fd: OwnedFd,
    group: u32,
}

impl Membership {
    pub fn join(&self) -> io::Result<()> {
        Ok(setsockopt(&self.fd, AddMembership, &self.group)?)
    }

    pub fn leave(&self) -> io::Result<()> {
        Ok(setsockopt(&self.fd, DropMembership, &self.group)?)
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
