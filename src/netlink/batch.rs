//! A batch: nf_tables messages between BATCH_BEGIN and BATCH_END, applied by the kernel as one
//! transaction (all or nothing). Each message remembers what it does, so that a refusal can name
//! the object.

use super::attr::AttrWriter;
use super::consts::*;
use super::data::Family;
use super::error::Result;
use super::objects::{Chain, Obj, Rule, Set, SetElem, Table};
use super::sys::*;

/// Element payload per NEWSETELEM message: `nla_len` is 16 bits, so a list must stay under 64 KiB.
pub(crate) const ELEMS_CHUNK_BYTES: usize = 48 * 1024;

pub(crate) struct MsgInfo {
    pub offset: usize,
    pub what: String,
}

pub struct Batch {
    /// Starts with room for the BEGIN message; messages follow with seq 0 until [`Batch::finish`].
    pub(crate) w: AttrWriter,
    pub(crate) msgs: Vec<MsgInfo>,
    next_set_id: u32,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes an nlmsghdr + nfgenmsg; returns the header's offset.
pub(crate) fn put_header(w: &mut AttrWriter, ty: u16, flags: u16, family: u8, res_id: u16) -> usize {
    let start = w.buf.len();
    w.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by end_msg
    w.buf.extend_from_slice(&ty.to_ne_bytes());
    w.buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    w.buf.extend_from_slice(&0u32.to_ne_bytes()); // seq
    w.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    w.buf.push(family);
    w.buf.push(NFNETLINK_V0 as u8);
    w.buf.extend_from_slice(&res_id.to_be_bytes());
    start
}

pub(crate) fn end_msg(w: &mut AttrWriter, start: usize) {
    let len = (w.buf.len() - start) as u32;
    w.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

pub(crate) fn nft_type(msg: u16) -> u16 {
    ((NFNL_SUBSYS_NFTABLES as u16) << 8) | msg
}

impl Batch {
    pub fn new() -> Self {
        let mut w = AttrWriter::new();
        let h = put_header(&mut w, NFNL_MSG_BATCH_BEGIN, 0, 0, NFNL_SUBSYS_NFTABLES as u16);
        end_msg(&mut w, h);
        Self {
            w,
            msgs: Vec::new(),
            next_set_id: 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// One line per message ("add rule ip t c", …), for logs and tests.
    pub fn describe(&self) -> Vec<String> {
        self.msgs.iter().map(|m| m.what.clone()).collect()
    }

    /// Number of messages (not counting BEGIN and END).
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Size in bytes of the batch on the wire (without END).
    pub fn byte_len(&self) -> usize {
        self.w.len()
    }

    /// Appends one message; on an encoding error the batch is left as it was.
    pub(crate) fn push(
        &mut self,
        msg: u16,
        flags: u16,
        family: Family,
        what: impl FnOnce() -> String,
        body: impl FnOnce(&mut AttrWriter) -> Result<()>,
    ) -> Result<()> {
        let start = put_header(&mut self.w, nft_type(msg), flags, family.to_raw(), 0);
        if let Err(e) = body(&mut self.w) {
            self.w.buf.truncate(start);
            return Err(e);
        }
        end_msg(&mut self.w, start);
        self.msgs.push(MsgInfo {
            offset: start,
            what: what(),
        });
        Ok(())
    }

    /// Sets seq numbers (`first` for BEGIN, then one per message) and appends END.
    /// Numbers the messages from `first`; with `commit` false the END message is left out, so
    /// the kernel checks every message and then aborts the transaction (as `nft -c` does).
    pub(crate) fn finish(&mut self, first: u32, commit: bool) -> &[u8] {
        self.w.buf[8..12].copy_from_slice(&first.to_ne_bytes());
        for (i, m) in self.msgs.iter().enumerate() {
            let seq = first + 1 + i as u32;
            self.w.buf[m.offset + 8..m.offset + 12].copy_from_slice(&seq.to_ne_bytes());
        }
        if !commit {
            return &self.w.buf;
        }
        let end = put_header(&mut self.w, NFNL_MSG_BATCH_END, 0, 0, NFNL_SUBSYS_NFTABLES as u16);
        end_msg(&mut self.w, end);
        let seq = first + 1 + self.msgs.len() as u32;
        self.w.buf[end + 8..end + 12].copy_from_slice(&seq.to_ne_bytes());
        &self.w.buf
    }

    /// The message with this seq, given the BEGIN seq: (description, bytes).
    pub(crate) fn message(&self, first: u32, seq: u32) -> Option<(&str, &[u8])> {
        let i = seq.checked_sub(first + 1)? as usize;
        let m = self.msgs.get(i)?;
        let end = self.msgs.get(i + 1).map(|n| n.offset).unwrap_or(self.w.buf.len());
        Some((&m.what, &self.w.buf[m.offset..end]))
    }

    // --- tables ---

    pub fn add_table(&mut self, t: &Table) -> Result<()> {
        self.push(
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE,
            t.family,
            || format!("add table {} {}", t.family, t.name),
            |w| t.encode(w),
        )
    }

    pub fn del_table(&mut self, family: Family, name: &str) -> Result<()> {
        self.push(
            NFT_MSG_DELTABLE,
            0,
            family,
            || format!("delete table {family} {name}"),
            |w| {
                w.put_str(NFTA_TABLE_NAME, name);
                Ok(())
            },
        )
    }

    // --- chains ---

    pub fn add_chain(&mut self, c: &Chain) -> Result<()> {
        let what = || format!("add chain {} {} {}", c.family, c.table, c.name);
        self.push(NFT_MSG_NEWCHAIN, NLM_F_CREATE, c.family, what, |w| c.encode(w))
    }

    pub fn del_chain(&mut self, family: Family, table: &str, name: &str) -> Result<()> {
        let what = || format!("delete chain {family} {table} {name}");
        self.push(NFT_MSG_DELCHAIN, 0, family, what, |w| {
            w.put_str(NFTA_CHAIN_TABLE, table);
            w.put_str(NFTA_CHAIN_NAME, name);
            Ok(())
        })
    }

    /// Deletes every rule of a chain.
    pub fn flush_chain(&mut self, family: Family, table: &str, chain: &str) -> Result<()> {
        let what = || format!("flush chain {family} {table} {chain}");
        self.push(NFT_MSG_DELRULE, 0, family, what, |w| {
            w.put_str(NFTA_RULE_TABLE, table);
            w.put_str(NFTA_RULE_CHAIN, chain);
            Ok(())
        })
    }

    // --- rules ---

    fn rule_what(verb: &str, r: &Rule) -> String {
        format!(
            "{verb} rule {} {} {}{}",
            r.family,
            r.table,
            r.chain,
            r.handle.map(|h| format!(" handle {h}")).unwrap_or_default()
        )
    }

    /// Appends at the end of the chain, or after the rule with handle `after`.
    pub fn add_rule(&mut self, r: &Rule) -> Result<()> {
        self.push(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            r.family,
            || Self::rule_what("add", r),
            |w| r.encode(w, None),
        )
    }

    pub fn add_rule_after(&mut self, r: &Rule, after: u64) -> Result<()> {
        let what = || Self::rule_what("add", r);
        self.push(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            r.family,
            what,
            |w| r.encode(w, Some(after)),
        )
    }

    /// Inserts at the start of the chain, or before the rule with handle `before`.
    pub fn insert_rule(&mut self, r: &Rule, before: Option<u64>) -> Result<()> {
        self.push(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE,
            r.family,
            || Self::rule_what("insert", r),
            |w| r.encode(w, before),
        )
    }

    /// Replaces the rule whose handle is `r.handle`.
    pub fn replace_rule(&mut self, r: &Rule) -> Result<()> {
        if r.handle.is_none() {
            return Err(super::error::Error::Invalid(
                "replace_rule needs the rule's handle".into(),
            ));
        }
        self.push(
            NFT_MSG_NEWRULE,
            NLM_F_REPLACE,
            r.family,
            || Self::rule_what("replace", r),
            |w| r.encode(w, None),
        )
    }

    pub fn del_rule(&mut self, family: Family, table: &str, chain: &str, handle: u64) -> Result<()> {
        let what = || format!("delete rule {family} {table} {chain} handle {handle}");
        self.push(NFT_MSG_DELRULE, 0, family, what, |w| {
            w.put_str(NFTA_RULE_TABLE, table);
            w.put_str(NFTA_RULE_CHAIN, chain);
            w.put_be64(NFTA_RULE_HANDLE, handle);
            Ok(())
        })
    }

    // --- sets ---

    /// Adds a set; returns the transaction-local id the kernel knows it by until commit.
    pub fn add_set(&mut self, s: &Set) -> Result<u32> {
        let id = self.next_set_id;
        let kind = if s.data.is_some() { "map" } else { "set" };
        self.push(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            s.family,
            || format!("add {kind} {} {} {}", s.family, s.table, s.name),
            |w| s.encode(w, id),
        )?;
        self.next_set_id += 1;
        Ok(id)
    }

    pub fn del_set(&mut self, family: Family, table: &str, name: &str) -> Result<()> {
        self.push(
            NFT_MSG_DELSET,
            0,
            family,
            || format!("delete set {family} {table} {name}"),
            |w| {
                w.put_str(NFTA_SET_TABLE, table);
                w.put_str(NFTA_SET_NAME, name);
                Ok(())
            },
        )
    }

    /// Adds elements, split over as many messages as the 64 KiB attribute limit needs.
    pub fn add_elems(&mut self, family: Family, table: &str, set: &str, elems: &[SetElem]) -> Result<()> {
        self.elems(NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add", family, table, set, elems)
    }

    pub fn del_elems(&mut self, family: Family, table: &str, set: &str, elems: &[SetElem]) -> Result<()> {
        self.elems(NFT_MSG_DELSETELEM, 0, "delete", family, table, set, elems)
    }

    /// Removes every element of a set.
    pub fn flush_set(&mut self, family: Family, table: &str, set: &str) -> Result<()> {
        self.push(
            NFT_MSG_DELSETELEM,
            0,
            family,
            || format!("flush set {family} {table} {set}"),
            |w| {
                w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
                w.put_str(NFTA_SET_ELEM_LIST_SET, set);
                Ok(())
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn elems(
        &mut self,
        msg: u16,
        flags: u16,
        verb: &str,
        family: Family,
        table: &str,
        set: &str,
        elems: &[SetElem],
    ) -> Result<()> {
        let mut encoded = AttrWriter::new();
        let mut first = 0;
        let flush = |b: &mut Batch, list: &AttrWriter, from: usize, to: usize| -> Result<()> {
            let what = || format!("{verb} elements {from}..{to} of {family} {table} {set}");
            b.push(msg, flags, family, what, |w| {
                w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
                w.put_str(NFTA_SET_ELEM_LIST_SET, set);
                let n = w.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
                w.buf.extend_from_slice(&list.buf);
                w.end_nest(n);
                Ok(())
            })
        };
        for (i, e) in elems.iter().enumerate() {
            let before = encoded.len();
            encoded.nest(NFTA_LIST_ELEM, |w| e.encode(w));
            if encoded.len() > ELEMS_CHUNK_BYTES && before > 0 {
                let tail = encoded.buf.split_off(before);
                flush(self, &encoded, first, i)?;
                encoded.buf = tail;
                first = i;
            }
        }
        if !encoded.is_empty() {
            flush(self, &encoded, first, elems.len())?;
        }
        Ok(())
    }

    // --- named objects ---

    pub fn add_obj(&mut self, o: &Obj) -> Result<()> {
        self.push(
            NFT_MSG_NEWOBJ,
            NLM_F_CREATE,
            o.family,
            || format!("add object {} {} {}", o.family, o.table, o.name),
            |w| o.encode(w),
        )
    }

    pub fn del_obj(&mut self, family: Family, table: &str, obj_type: u32, name: &str) -> Result<()> {
        self.push(
            NFT_MSG_DELOBJ,
            0,
            family,
            || format!("delete object {family} {table} {name}"),
            |w| {
                w.put_str(NFTA_OBJ_TABLE, table);
                w.put_str(NFTA_OBJ_NAME, name);
                w.put_be32(NFTA_OBJ_TYPE, obj_type);
                Ok(())
            },
        )
    }
}
