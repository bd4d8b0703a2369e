//! A NETLINK_NETFILTER socket: the only I/O of the netlink layer.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::consts::*;

pub struct Socket {
    fd: OwnedFd,
    portid: u32,
    sndbuf: usize,
    rcvbuf: usize,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Socket {
    /// Opens and binds a socket; `groups` is a multicast group to join (0 for none).
    pub fn open(group: u32) -> io::Result<Self> {
        Self::open_protocol(libc::NETLINK_NETFILTER, group)
    }

    /// The same for another netlink protocol (NETLINK_ROUTE for links, addresses, neighbours).
    pub fn open_protocol(protocol: libc::c_int, group: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd =
            cvt(unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) })?;
        // SAFETY: fd is a freshly created, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain old data; zeroed is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: addr is a valid sockaddr_nl of `len` bytes.
        cvt(unsafe { libc::bind(fd.as_raw_fd(), &addr as *const _ as *const libc::sockaddr, len) })?;
        let mut bound: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut blen = len;
        // SAFETY: bound/blen describe a writable sockaddr_nl.
        cvt(unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                &mut bound as *mut _ as *mut libc::sockaddr,
                &mut blen,
            )
        })?;
        let mut s = Self {
            fd,
            portid: bound.nl_pid,
            sndbuf: 0,
            rcvbuf: 0,
        };
        // Extended acks name the refused attribute; CAP_ACK keeps error replies small.
        s.setopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)?;
        s.setopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)?;
        if group != 0 {
            s.setopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group as i32)?;
        }
        s.set_rcvbuf(1 << 20)?;
        Ok(s)
    }

    pub fn portid(&self) -> u32 {
        self.portid
    }

    /// Joins legacy multicast groups given as a bit mask (rtnetlink's RTMGRP_*) by rebinding.
    pub fn join_legacy_groups(&self, mask: u32) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain old data; zeroed is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_pid = self.portid;
        addr.nl_groups = mask;
        let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: addr is a valid sockaddr_nl of `len` bytes.
        cvt(unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                len,
            )
        })
        .map(|_| ())
    }

    fn setopt(&self, level: i32, name: i32, v: i32) -> io::Result<()> {
        // SAFETY: v is an int that outlives the call.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                &v as *const _ as *const libc::c_void,
                4,
            )
        })
        .map(|_| ())
    }

    /// Grows the send buffer so that one batch fits in one message (as nft does); the FORCE
    /// variant ignores wmem_max and needs CAP_NET_ADMIN, which every caller of nf_tables has.
    pub fn ensure_sndbuf(&mut self, len: usize) -> io::Result<()> {
        if len + 4096 <= self.sndbuf {
            return Ok(());
        }
        let want = (len + 65536).next_power_of_two().min(i32::MAX as usize / 2);
        self.setopt(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want as i32)
            .or_else(|_| self.setopt(libc::SOL_SOCKET, libc::SO_SNDBUF, want as i32))?;
        self.sndbuf = want;
        Ok(())
    }

    pub fn set_rcvbuf(&mut self, len: usize) -> io::Result<()> {
        if len <= self.rcvbuf {
            return Ok(());
        }
        self.setopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, len as i32)
            .or_else(|_| self.setopt(libc::SOL_SOCKET, libc::SO_RCVBUF, len as i32))?;
        self.rcvbuf = len;
        Ok(())
    }

    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl zeroed = the kernel (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        loop {
            // SAFETY: buf and addr are valid for the given lengths.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    buf.as_ptr() as *const libc::c_void,
                    buf.len(),
                    0,
                    &addr as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r as usize != buf.len() {
                return Err(io::Error::other(format!(
                    "short netlink send: {r} of {}",
                    buf.len()
                )));
            }
            return Ok(());
        }
    }

    /// Receives one datagram into `buf` (grown if the datagram was truncated); returns its length.
    pub fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            // Peek at the size first so that no datagram is ever cut.
            // SAFETY: buf is valid for its length.
            let r = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_PEEK | libc::MSG_TRUNC,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let need = r as usize;
            if need > buf.len() {
                buf.resize(need, 0);
            }
            // SAFETY: as above.
            let r = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            return Ok(r as usize);
        }
    }

    /// Sets a receive timeout (None: block forever).
    pub fn set_recv_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        let tv = match t {
            Some(d) => libc::timeval {
                tv_sec: d.as_secs() as _,
                tv_usec: d.subsec_micros() as _,
            },
            None => libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
        };
        // SAFETY: tv is a valid timeval for the duration of the call.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })
        .map(|_| ())
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
