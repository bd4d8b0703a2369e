//! Entry points for coverage-guided fuzzing and its corpus replay (`fuzz/`, `tests/fuzz_corpus.rs`):
//! what the kernel sends is decoded exactly as a dump or the monitor decodes it, and whatever
//! decodes must encode back to the same value. Also a capture of real dumps, to seed the corpus.

use super::attr::{AttrIter, AttrWriter, Attrs};
use super::batch::{end_msg, nft_type, put_header};
use super::conn::parse_msgs;
use super::consts::*;
use super::data::Family;
use super::monitor::decode_change;
use super::objects::{Rule, Set, SetElem};
use super::socket::Socket;
use super::sys::*;
use super::{Change, Result};

/// Decodes one datagram of netlink messages as [`super::Connection`]'s dumps and
/// [`super::Monitor`] do. Panics only when a decoded object does not survive being encoded and
/// decoded again: the reading-back code relies on that round trip. How many objects decoded.
pub fn decode_datagram(data: &[u8]) -> usize {
    let mut decoded = 0;
    for m in parse_msgs(data) {
        let Ok(m) = m else { break };
        match m.ty {
            NLMSG_ERROR => {
                let _ = m.error();
            }
            NLMSG_DONE => {}
            _ => {
                if let Ok((_, attrs)) = m.nft()
                    && m.ty & 0xff == NFT_MSG_NEWSETELEM
                {
                    // A dump's elements are decoded with their set's timeout, as `list_elems`.
                    let _ = dump_elems(attrs, Some(60_000));
                }
                if let Ok(Some(change)) = decode_change(m.ty, m.body) {
                    round_trip(&change);
                    decoded += 1;
                }
            }
        }
    }
    decoded
}

fn dump_elems(attrs: &[u8], set_timeout: Option<u64>) -> Result<Vec<SetElem>> {
    let a = Attrs::parse(attrs, "set element list")?;
    let mut out = Vec::new();
    if let Some(list) = a.get(NFTA_SET_ELEM_LIST_ELEMENTS) {
        for e in AttrIter::new(list) {
            out.push(SetElem::decode(e?.1, set_timeout)?);
        }
    }
    Ok(out)
}

/// Encodes a decoded object, decodes that and encodes again: the same bytes, or a panic naming
/// the object. (Bytes, not values: what the kernel reports read-only, such as an element's
/// remaining time, is rightly never sent back.)
fn round_trip(change: &Change) {
    fn check<T: std::fmt::Debug>(
        what: &str,
        before: &T,
        encode: impl Fn(&T, &mut AttrWriter) -> Result<()>,
        decode: impl FnOnce(&[u8]) -> Result<T>,
    ) {
        let mut first = AttrWriter::new();
        if encode(before, &mut first).is_err() {
            // Refused to encode (a comment too long, ...): nothing would be sent back.
            return;
        }
        let after = decode(&first.buf)
            .unwrap_or_else(|e| panic!("{what} {before:?} encoded to what does not decode: {e}"));
        let mut second = AttrWriter::new();
        let again = encode(&after, &mut second);
        assert!(
            again.is_ok() && first.buf == second.buf,
            "{what} changed in an encode/decode round trip: {before:?} became {after:?}"
        );
    }
    // Rules and elements are what the engine reads back and sends again; tables, chains, sets
    // and objects carry read-only attributes the encoder rightly leaves out.
    match change {
        Change::NewRule(r) | Change::DelRule(r) => {
            check("rule", r, |r, w| r.encode(w, None), |b| Rule::decode(r.family, b));
        }
        Change::NewElems { elems, .. } | Change::DelElems { elems, .. } => {
            for e in elems {
                check(
                    "set element",
                    e,
                    |e, w| {
                        e.encode(w);
                        Ok(())
                    },
                    |b| SetElem::decode(b, None),
                );
            }
        }
        _ => {}
    }
}

/// The datagrams the kernel answers to dumps of table `table` of `family`: the table, its
/// chains, rules, sets, every set's elements and its objects, as received (corpus seeds).
pub fn capture_dumps(family: Family, table: &str) -> Result<Vec<Vec<u8>>> {
    let sock = Socket::open(0)?;
    let mut out = Vec::new();
    let dump = |msg: u16, attrs: &dyn Fn(&mut AttrWriter)| -> Result<Vec<Vec<u8>>> {
        let mut w = AttrWriter::new();
        let h = put_header(&mut w, nft_type(msg), NLM_F_DUMP | NLM_F_ACK, family.to_raw(), 0);
        attrs(&mut w);
        end_msg(&mut w, h);
        sock.send(&w.buf)?;
        let mut got = Vec::new();
        let mut buf = Vec::new();
        loop {
            let n = sock.recv(&mut buf)?;
            let datagram = buf[..n].to_vec();
            let done =
                parse_msgs(&datagram).any(|m| m.is_ok_and(|m| m.ty == NLMSG_DONE || m.ty == NLMSG_ERROR));
            got.push(datagram);
            if done {
                return Ok(got);
            }
        }
    };
    out.extend(dump(NFT_MSG_GETTABLE, &|_| {})?);
    out.extend(dump(NFT_MSG_GETCHAIN, &|w| w.put_str(NFTA_CHAIN_TABLE, table))?);
    out.extend(dump(NFT_MSG_GETRULE, &|w| w.put_str(NFTA_RULE_TABLE, table))?);
    let sets = dump(NFT_MSG_GETSET, &|w| w.put_str(NFTA_SET_TABLE, table))?;
    let mut names = Vec::new();
    for d in &sets {
        for m in parse_msgs(d).flatten() {
            if let Ok((_, a)) = m.nft()
                && let Ok(s) = Set::decode(family, a)
            {
                names.push(s.name);
            }
        }
    }
    out.extend(sets);
    for name in names {
        out.extend(dump(NFT_MSG_GETSETELEM, &|w| {
            w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
            w.put_str(NFTA_SET_ELEM_LIST_SET, &name);
        })?);
    }
    out.extend(dump(NFT_MSG_GETOBJ, &|w| w.put_str(NFTA_OBJ_TABLE, table))?);
    Ok(out)
}

/// A socket in the nf_tables change group: what [`super::Monitor`] reads, kept raw.
pub struct RawMonitor(Socket);

impl RawMonitor {
    pub fn open() -> Result<RawMonitor> {
        Ok(RawMonitor(Socket::open(NFNLGRP_NFTABLES)?))
    }

    /// Every datagram queued now.
    pub fn drain(&self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(n) = self.0.try_recv(&mut buf)? {
            out.push(buf[..n].to_vec());
        }
        Ok(out)
    }
}
