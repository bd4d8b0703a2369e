//! One request and its replies, for the small netlink clients (rtnetlink, conntrack): send, then
//! read until the kernel says done (a dump), acknowledges, or the caller has what it wanted.

use std::time::Duration;

use super::conn::{Msg, parse_msgs};
use super::consts::{NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN};
use super::error::{Error, Result};
use super::socket::Socket;

/// What a reply handler says.
pub(crate) enum Next {
    More,
    Done,
}

/// Sends `req` (sequence number `seq`) and hands each reply of that sequence to `each` until a
/// DONE, an acknowledgement, or `each` says `Done`. An error answer is `Error::Kernel` naming
/// `what`, unless its errno is in `fine` (an outcome the caller counts as success).
pub(crate) fn exchange(
    sock: &mut Socket,
    buf: &mut Vec<u8>,
    req: &[u8],
    seq: u32,
    what: &dyn Fn() -> String,
    fine: &[i32],
    each: &mut dyn FnMut(&Msg<'_>) -> Result<Next>,
) -> Result<()> {
    sock.set_recv_timeout(Some(Duration::from_secs(2)))?;
    sock.send(req)?;
    loop {
        let n = sock.recv(buf)?;
        let mut done = false;
        for m in parse_msgs(&buf[..n]) {
            let m = m?;
            if m.seq != seq {
                continue;
            }
            match m.ty {
                NLMSG_DONE => done = true,
                NLMSG_ERROR => {
                    let (errno, _, _) = m.error()?;
                    if errno != 0 && !fine.contains(&errno) {
                        return Err(Error::Kernel {
                            what: what(),
                            errno,
                            detail: None,
                        });
                    }
                    done = true;
                }
                _ => {
                    if let Next::Done = each(&m)? {
                        done = true;
                    }
                }
            }
        }
        if done {
            return Ok(());
        }
    }
}

/// One request message: the netlink header (type `ty`, `NLM_F_REQUEST | flags`, `seq`, port 0)
/// and its `body`, as the rtnetlink and ctnetlink clients send them.
pub(crate) fn message(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + body.len()) as u32;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}
