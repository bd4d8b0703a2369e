//! A small ctnetlink client: the connections the kernel tracks for one backend, found by their
//! `ct mark` (a backend's mark is `farm id << 16 | member id`, unique to that farm's backend,
//! whatever its address), counted or deleted by the kernel's own mark filter.

use std::collections::HashMap;

use super::attr::{AttrIter, Attrs};
use super::consts::{NLM_F_ACK, NLM_F_DUMP};
use super::error::Result;
use super::request::{self, Next};
use super::socket::Socket;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_PROTOINFO: u16 = 4;
const CTA_MARK: u16 = 8;
const CTA_MARK_MASK: u16 = 21;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const TCP_CONNTRACK_ESTABLISHED: u8 = 3;
/// Every family: the kernel's filter then matches on the mark alone.
const AF_UNSPEC: u8 = 0;

pub struct ConntrackSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// A request: netlink header, nfgenmsg (family, version 0, res_id 0), the mark filter.
fn request(ty: u16, flags: u16, seq: u32, mark: u32) -> Vec<u8> {
    masked(ty, flags, seq, mark, u32::MAX)
}

fn masked(ty: u16, flags: u16, seq: u32, mark: u32, mask: u32) -> Vec<u8> {
    let mut body = vec![AF_UNSPEC, 0, 0, 0];
    for (t, v) in [(CTA_MARK, mark), (CTA_MARK_MASK, mask)] {
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&t.to_ne_bytes());
        body.extend_from_slice(&v.to_be_bytes());
    }
    request::message((NFNL_SUBSYS_CTNETLINK << 8) | ty, flags, seq, &body)
}

/// Whether a dumped connection counts as established: tcp in state established, any other
/// protocol as long as it is tracked.
fn established(attrs: &[u8]) -> Result<bool> {
    let a = Attrs::parse(attrs, "conntrack entry")?;
    let Some(info) = a.get(CTA_PROTOINFO) else {
        return Ok(true);
    };
    for nested in AttrIter::new(info) {
        let (ty, tcp) = nested?;
        if ty == CTA_PROTOINFO_TCP {
            let t = Attrs::parse(tcp, "conntrack tcp info")?;
            return Ok(t.opt_u8(CTA_PROTOINFO_TCP_STATE)? == Some(TCP_CONNTRACK_ESTABLISHED));
        }
    }
    Ok(true)
}

impl ConntrackSocket {
    /// A socket in the calling thread's network namespace.
    pub fn new() -> Result<ConntrackSocket> {
        Ok(ConntrackSocket {
            sock: Socket::open(0)?,
            seq: 1,
            buf: Vec::new(),
        })
    }

    /// Established connections per ct mark, of those whose mark & `mask` is `mark` (a farm's
    /// backends: its tag and 0xffff0000, one dump for all of them).
    pub fn count_established(&mut self, mark: u32, mask: u32) -> Result<HashMap<u32, u64>> {
        let mut n = HashMap::new();
        let req = masked(IPCTNL_MSG_CT_GET, NLM_F_DUMP, self.next_seq(), mark, mask);
        self.exchange(req, &mut |attrs| {
            if established(attrs)? {
                let a = Attrs::parse(attrs, "conntrack entry")?;
                if let Some(m) = a.opt_be32(CTA_MARK)? {
                    *n.entry(m).or_insert(0) += 1;
                }
            }
            Ok(())
        })?;
        Ok(n)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Deletes every connection whose ct mark is `mark` (the kernel's filtered flush: one
    /// request, whatever their number). Their next packet finds no entry: it is scheduled
    /// anew, reaches a backend that knows no such connection, and is reset.
    pub fn delete_marked(&mut self, mark: u32) -> Result<()> {
        let req = request(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, self.next_seq(), mark);
        self.exchange(req, &mut |_| Ok(()))
    }

    /// Sends one request and hands each reply's attributes to `each`, until done or acked.
    /// Nothing to delete is the same outcome as deleted.
    fn exchange(&mut self, req: Vec<u8>, each: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let ty = u16::from_ne_bytes([req[4], req[5]]) & 0xff;
        let what = || format!("conntrack request {ty}");
        request::exchange(
            &mut self.sock,
            &mut self.buf,
            &req,
            self.seq,
            &what,
            &[libc_enoent()],
            &mut |m| {
                each(m.body.get(4..).unwrap_or_default())?;
                Ok(Next::More)
            },
        )
    }
}

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::consts::NLM_F_REQUEST;

    #[test]
    fn a_request_filters_on_the_whole_mark() {
        let m = request(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, 7, 0x0003_0002);
        assert_eq!(m.len(), 16 + 4 + 8 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 36);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0102);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..20], &[0, 0, 0, 0]);
        assert_eq!(&m[24..28], &0x0003_0002u32.to_be_bytes());
        assert_eq!(u16::from_ne_bytes([m[30], m[31]]), CTA_MARK_MASK);
        assert_eq!(&m[32..36], &[0xff; 4]);
    }

    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(payload);
        a.resize((a.len() + 3) & !3, 0);
        a
    }

    #[test]
    fn tcp_counts_only_when_established() {
        let tcp = |state: u8| {
            nla(
                CTA_PROTOINFO | 0x8000,
                &nla(CTA_PROTOINFO_TCP | 0x8000, &nla(1, &[state])),
            )
        };
        assert!(established(&tcp(TCP_CONNTRACK_ESTABLISHED)).unwrap());
        assert!(!established(&tcp(7)).unwrap());
        // udp: no tcp info, tracked means counted.
        assert!(established(&nla(CTA_MARK, &[0, 3, 0, 2])).unwrap());
    }
}
