//! The nf_tables change feed (NFNLGRP_NFTABLES): every change by anyone, as typed events. The
//! service uses it to notice when someone else flushes or edits its tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::attr::{AttrIter, Attrs};
use super::conn::{Connection, Quiet, parse_msgs};
use super::consts::*;
use super::data::Family;
use super::error::{Error, Result};
use super::objects::{Chain, Obj, Rule, Set, SetElem, Table};
use super::socket::Socket;
use super::sys::*; // NFNLGRP_NFTABLES among them

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    NewTable(Table),
    DelTable(Table),
    NewChain(Chain),
    DelChain(Chain),
    NewRule(Rule),
    DelRule(Rule),
    NewSet(Set),
    DelSet(Set),
    NewElems {
        family: Family,
        table: String,
        set: String,
        elems: Vec<SetElem>,
    },
    DelElems {
        family: Family,
        table: String,
        set: String,
        elems: Vec<SetElem>,
    },
    NewObj(Obj),
    DelObj(Obj),
    /// End of a transaction: the new generation, and who made it.
    NewGen {
        id: u32,
        pid: Option<u32>,
        process: Option<String>,
    },
}

impl Change {
    /// (family, table) the change is about, if any.
    pub fn table(&self) -> Option<(Family, &str)> {
        match self {
            Change::NewTable(t) | Change::DelTable(t) => Some((t.family, &t.name)),
            Change::NewChain(c) | Change::DelChain(c) => Some((c.family, &c.table)),
            Change::NewRule(r) | Change::DelRule(r) => Some((r.family, &r.table)),
            Change::NewSet(s) | Change::DelSet(s) => Some((s.family, &s.table)),
            Change::NewElems { family, table, .. } | Change::DelElems { family, table, .. } => {
                Some((*family, table))
            }
            Change::NewObj(o) | Change::DelObj(o) => Some((o.family, &o.table)),
            Change::NewGen { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Port id of the socket that made the change (compare with `Connection::portid`).
    pub origin: u32,
    pub change: Change,
}

pub struct Monitor {
    sock: Socket,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<Event>,
    /// Asks the generation while the feed is paused.
    conn: Connection,
    /// Someone else may have committed while the feed was paused (set by [`Monitor::pause`]'s
    /// caller or by a connection committing unheard, see [`Monitor::quiet`]).
    missed: Arc<AtomicBool>,
}

/// The feed paused: the generation before, to account for every transaction made meanwhile.
#[must_use = "a paused monitor hears nothing until it is resumed"]
pub struct Paused {
    generation: Option<u32>,
}

/// The feed's receive buffer. Events beyond it are lost (ENOBUFS): the reader then re-reads the
/// kernel, so this bounds memory, not correctness.
const RCVBUF: usize = 8 << 20;

/// Datagrams [`Monitor::discard_queued`] reads at most: twice what a full buffer holds.
const DISCARD_AT_MOST: usize = 2 * (2 * RCVBUF) / 4096;

impl Monitor {
    pub fn new() -> Result<Self> {
        let mut sock = Socket::open(NFNLGRP_NFTABLES)?;
        sock.set_rcvbuf(RCVBUF)?;
        Ok(Self {
            sock,
            buf: vec![0; 64 * 1024],
            pending: Default::default(),
            conn: Connection::new()?,
            missed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Makes the next [`Monitor::foreign_change`] report a foreign change, whatever is heard: the
    /// caller could not act on the last one and will look again.
    pub fn flag_missed(&self) {
        self.missed.store(true, Ordering::SeqCst);
    }

    /// What a [`Connection`] needs to commit its large transactions unheard by this monitor
    /// ([`Connection::set_quiet`]); its small ones are heard and skipped by port id.
    pub fn quiet(&self) -> Result<Quiet> {
        Ok(Quiet {
            membership: self.sock.membership(NFNLGRP_NFTABLES)?,
            missed: self.missed.clone(),
        })
    }

    /// Stops the feed while this process commits its own transactions: with no listener the
    /// kernel builds no event for them (one per set element: a load of 10,000 farms spent a sixth
    /// of its time on events it then dropped, as they overflowed the socket). What was queued
    /// before stays queued. [`Monitor::resume`] tells whether anyone else committed meanwhile.
    pub fn pause(&mut self) -> Paused {
        // The generation first: a transaction after it, even one whose events were still queued
        // for us, moves the generation and is counted.
        let generation = self.conn.generation().ok();
        // Should leaving fail, the feed simply goes on: our own events are skipped as always.
        let _ = self.sock.leave(NFNLGRP_NFTABLES);
        Paused { generation }
    }

    /// Hears again, after `ours` transactions of our own. When the generation moved by more (or
    /// cannot be told), the next [`Monitor::foreign_change`] says there was a foreign change:
    /// which tables it touched is not known, so the caller looks at its own.
    pub fn resume(&mut self, paused: Paused, ours: u64) -> Result<()> {
        // Joined before the generation is read: a transaction after the read is heard.
        let joined = self.sock.join(NFNLGRP_NFTABLES);
        let now = self.conn.generation();
        let expected = paused
            .generation
            .map(|g| u64::from(g).wrapping_add(ours) & u64::from(u32::MAX));
        if expected.is_none() || now.as_ref().ok().map(|&g| u64::from(g)) != expected {
            self.missed.store(true, Ordering::SeqCst);
        }
        joined?;
        now.map(|_| ())
    }

    /// The socket, for registering with an event loop.
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }

    /// Waits for the next event; `None` when `timeout` passes first. ENOBUFS (events lost because
    /// the reader was too slow) is returned as an error: the caller must re-read the state.
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Option<Event>> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(Some(e));
        }
        self.sock.set_recv_timeout(timeout)?;
        let n = match self.sock.recv(&mut self.buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        for m in parse_msgs(&self.buf[..n]) {
            let m = m?;
            if let Some(change) = decode_change(m.ty, m.body)? {
                self.pending.push_back(Event {
                    origin: m.portid,
                    change,
                });
            }
        }
        Ok(self.pending.pop_front())
    }
}

impl Monitor {
    /// After an error of the feed (ENOBUFS above all: events were lost), what the caller will read
    /// from the kernel next is all that counts: drops every event queued until now, so that
    /// what is heard afterwards is newer than that read. Errs when the socket keeps failing
    /// (then open a new monitor).
    pub fn discard_queued(&mut self) -> Result<usize> {
        self.pending.clear();
        // Anything paused is joined again: the caller is about to look at the kernel anyway.
        self.missed.store(false, Ordering::SeqCst);
        self.sock.join(NFNLGRP_NFTABLES)?;
        let mut dropped = 0;
        let mut errors = 0;
        // Bounded, should someone commit faster than this reads: what is left is heard later
        // and at worst makes one more (empty) repair.
        while dropped < DISCARD_AT_MOST {
            match self.sock.try_recv(&mut self.buf) {
                Ok(Some(_)) => dropped += 1,
                Ok(None) => break,
                // The queue overflowed again while being emptied; keep emptying it.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) && errors < 16 => errors += 1,
                // A datagram cut short is gone either way.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(dropped)
    }

    /// Reads every event queued now, without waiting: whether one came from a socket other than
    /// `ours` and touched a table named `table` (in any family). Our own transactions' events
    /// are skipped undecoded, so they cost only their reading.
    pub fn foreign_change(&mut self, ours: u32, table: &str) -> Result<bool> {
        let touches = |e: &Event| e.origin != ours && e.change.table().is_some_and(|(_, t)| t == table);
        let mut foreign = self.missed.swap(false, Ordering::SeqCst);
        // A pause may have ended without joining again: hear from now on, whatever happened.
        if foreign && let Err(e) = self.sock.join(NFNLGRP_NFTABLES) {
            self.missed.store(true, Ordering::SeqCst);
            return Err(e.into());
        }
        foreign |= self.pending.drain(..).any(|e| touches(&e));
        while let Some(n) = self.sock.try_recv(&mut self.buf)? {
            for m in parse_msgs(&self.buf[..n]) {
                let m = m?;
                if foreign || m.portid == ours {
                    continue;
                }
                if let Some(change) = decode_change(m.ty, m.body)? {
                    foreign = change.table().is_some_and(|(_, t)| t == table);
                }
            }
        }
        Ok(foreign)
    }
}

pub(super) fn decode_change(ty: u16, body: &[u8]) -> Result<Option<Change>> {
    if ty >> 8 != NFNL_SUBSYS_NFTABLES as u16 || body.len() < NFGENMSG_LEN {
        return Ok(None);
    }
    let family = Family::from_raw(body[0]);
    let a = &body[NFGENMSG_LEN..];
    let msg = ty & 0xff;
    if msg == NFT_MSG_NEWGEN {
        let g = Attrs::parse(a, "generation")?;
        return Ok(Some(Change::NewGen {
            id: g.be32(NFTA_GEN_ID)?,
            pid: g.opt_be32(NFTA_GEN_PROC_PID)?,
            process: g.opt_string(NFTA_GEN_PROC_NAME)?,
        }));
    }
    let Ok(family) = family else { return Ok(None) };
    let elems = |a: &[u8]| -> Result<(String, String, Vec<SetElem>)> {
        let l = Attrs::parse(a, "set element list")?;
        let mut v = Vec::new();
        if let Some(list) = l.get(NFTA_SET_ELEM_LIST_ELEMENTS) {
            for e in AttrIter::new(list) {
                v.push(SetElem::decode(e?.1, None)?);
            }
        }
        Ok((
            l.string(NFTA_SET_ELEM_LIST_TABLE)?,
            l.string(NFTA_SET_ELEM_LIST_SET)?,
            v,
        ))
    };
    Ok(Some(match msg {
        NFT_MSG_NEWTABLE => Change::NewTable(Table::decode(family, a)?),
        NFT_MSG_DELTABLE => Change::DelTable(Table::decode(family, a)?),
        NFT_MSG_NEWCHAIN => Change::NewChain(Chain::decode(family, a)?),
        NFT_MSG_DELCHAIN => Change::DelChain(Chain::decode(family, a)?),
        NFT_MSG_NEWRULE => Change::NewRule(Rule::decode(family, a)?),
        NFT_MSG_DELRULE => Change::DelRule(Rule::decode(family, a)?),
        NFT_MSG_NEWSET => Change::NewSet(Set::decode(family, a)?),
        NFT_MSG_DELSET => Change::DelSet(Set::decode(family, a)?),
        NFT_MSG_NEWSETELEM => {
            let (table, set, elems) = elems(a)?;
            Change::NewElems {
                family,
                table,
                set,
                elems,
            }
        }
        NFT_MSG_DELSETELEM => {
            let (table, set, elems) = elems(a)?;
            Change::DelElems {
                family,
                table,
                set,
                elems,
            }
        }
        NFT_MSG_NEWOBJ => match Obj::decode(family, a) {
            Ok(o) => Change::NewObj(o),
            Err(Error::Decode(_)) => return Ok(None), // an object type we do not model
            Err(e) => return Err(e),
        },
        NFT_MSG_DELOBJ => match Obj::decode(family, a) {
            Ok(o) => Change::DelObj(o),
            Err(Error::Decode(_)) => return Ok(None),
            Err(e) => return Err(e),
        },
        _ => return Ok(None),
    }))
}
