//! A small NETLINK_ROUTE client: which interface owns an address, which interface a route to an
//! address leaves by, and a neighbour's MAC — what layer-2 farms need when they are not told —
//! and a subscription to link, address, route and neighbour changes so they can follow the host.

use std::net::IpAddr;

use super::attr::AttrIter;
use super::consts::NLM_F_DUMP;
use super::error::{Error, Result};
use super::request::{self, Next};
use super::socket::Socket;

const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// Neighbour states whose MAC can be used (reachable, stale, delay, probe, noarp, permanent).
const NUD_VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;
/// rtnetlink multicast groups (legacy bit masks): link, neighbour, IPv4 address, IPv4 route.
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_NEIGH: u32 = 0x4;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;

pub struct RouteSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut a = Vec::with_capacity((len + 3) & !3);
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&ty.to_ne_bytes());
    a.extend_from_slice(payload);
    a.resize((len + 3) & !3, 0);
    a
}

impl RouteSocket {
    /// A request socket in the calling thread's network namespace.
    pub fn new() -> Result<RouteSocket> {
        Ok(RouteSocket {
            sock: Socket::open_protocol(nix::sys::socket::SockProtocol::NetlinkRoute, 0)?,
            seq: 1,
            buf: Vec::new(),
        })
    }

    /// A socket that receives link, address, route and neighbour changes.
    pub fn subscribe() -> Result<RouteSocket> {
        let sock = Socket::open_protocol(nix::sys::socket::SockProtocol::NetlinkRoute, 0)?;
        sock.join_legacy_groups(RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE)?;
        Ok(RouteSocket {
            sock,
            seq: 1,
            buf: Vec::new(),
        })
    }

    /// Reads every change notification queued now, without waiting; true when there was one.
    pub fn drain(&mut self) -> Result<bool> {
        let mut any = false;
        while let Some(n) = self.sock.try_recv(&mut self.buf)? {
            any |= n > 0;
        }
        Ok(any)
    }

    /// Sends one request and collects the payloads (after the netlink header) of the replies of
    /// type `reply`, until the kernel says done (dumps) or answers once (gets).
    fn request(&mut self, ty: u16, flags: u16, body: &[u8], reply: u16) -> Result<Vec<Vec<u8>>> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let dump = flags & NLM_F_DUMP != 0;
        let mut out = Vec::new();
        let what = || format!("rtnetlink request {ty}");
        request::exchange(
            &mut self.sock,
            &mut self.buf,
            &request::message(ty, flags, seq, body),
            seq,
            &what,
            &[],
            &mut |m| {
                if m.ty != reply {
                    return Ok(Next::More);
                }
                out.push(m.body.to_vec());
                Ok(if dump { Next::More } else { Next::Done })
            },
        )?;
        Ok(out)
    }

    /// The index of the interface that has `ip` as one of its addresses.
    pub fn owner_of(&mut self, ip: IpAddr) -> Result<Option<u32>> {
        let (family, ip) = family_and_octets(ip);
        let body = [family, 0, 0, 0, 0, 0, 0, 0];
        for p in self.request(RTM_GETADDR, NLM_F_DUMP, &body, RTM_NEWADDR)? {
            if p.len() < 8 {
                continue;
            }
            let index = u32::from_ne_bytes([p[4], p[5], p[6], p[7]]);
            for a in AttrIter::new(&p[8..]) {
                let (t, v) = a?;
                if (t == IFA_LOCAL || t == IFA_ADDRESS) && v == ip.as_slice() {
                    return Ok(Some(index));
                }
            }
        }
        Ok(None)
    }

    /// The index of the interface a packet to `dst` leaves by.
    pub fn route_oif(&mut self, dst: IpAddr) -> Result<Option<u32>> {
        let (family, dst) = family_and_octets(dst);
        let mut body = vec![family, (dst.len() * 8) as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        body.extend(attr(RTA_DST, &dst));
        let replies = match self.request(RTM_GETROUTE, 0, &body, RTM_NEWROUTE) {
            Ok(r) => r,
            Err(Error::Kernel { errno, .. }) if errno == libc::ENETUNREACH || errno == libc::EHOSTUNREACH => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        for p in replies {
            for a in AttrIter::new(p.get(12..).unwrap_or_default()) {
                let (t, v) = a?;
                if t == RTA_OIF && v.len() == 4 {
                    return Ok(Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]])));
                }
            }
        }
        Ok(None)
    }

    /// The MAC of neighbour `ip` on interface `index`, when the kernel has a usable entry.
    pub fn neighbour(&mut self, ip: IpAddr, index: u32) -> Result<Option<[u8; 6]>> {
        let (family, ip) = family_and_octets(ip);
        let body = [family, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        for p in self.request(RTM_GETNEIGH, NLM_F_DUMP, &body, RTM_NEWNEIGH)? {
            if p.len() < 12 {
                continue;
            }
            let ifindex = u32::from_ne_bytes([p[4], p[5], p[6], p[7]]);
            let state = u16::from_ne_bytes([p[8], p[9]]);
            if ifindex != index || state & NUD_VALID == 0 {
                continue;
            }
            let (mut dst, mut mac) = (None, None);
            for a in AttrIter::new(&p[12..]) {
                let (t, v) = a?;
                match t {
                    NDA_DST => dst = Some(v.to_vec()),
                    NDA_LLADDR if v.len() == 6 => mac = <[u8; 6]>::try_from(v).ok(),
                    _ => {}
                }
            }
            if dst.as_deref() == Some(ip.as_slice()) && mac.is_some() {
                return Ok(mac);
            }
        }
        Ok(None)
    }
}

/// The address family byte and the address's bytes.
fn family_and_octets(ip: IpAddr) -> (u8, Vec<u8>) {
    match ip {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    }
}
