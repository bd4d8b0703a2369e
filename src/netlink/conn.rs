//! A connection to nf_tables: commits batches and reads objects back.

use super::attr::{AttrIter, AttrWriter, Attrs};
use super::batch::{Batch, end_msg, nft_type, put_header};
use super::consts::*;
use super::data::Family;
use super::error::{Error, Result};
use super::objects::{Chain, Obj, Rule, Set, SetElem, Table};
use super::socket::Socket;
use super::sys::*;

/// Family of requests about every family, and of generation messages.
const NFPROTO_UNSPEC: u8 = 0;

/// One received netlink message.
pub(crate) struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub portid: u32,
    /// Everything after the nlmsghdr.
    pub body: &'a [u8],
}

impl<'a> Msg<'a> {
    /// The nf_tables family and attributes of a (non-error) message.
    pub fn nft(&self) -> Result<(u8, &'a [u8])> {
        if self.body.len() < NFGENMSG_LEN {
            return Err(Error::decode("message shorter than nfgenmsg"));
        }
        Ok((self.body[0], &self.body[NFGENMSG_LEN..]))
    }

    /// For NLMSG_ERROR: (positive errno or 0, extack message, extack offset).
    pub fn error(&self) -> Result<(i32, Option<String>, Option<u32>)> {
        if self.body.len() < 4 + NLMSG_HDRLEN {
            return Err(Error::decode("truncated error message"));
        }
        let err = -i32::from_ne_bytes([self.body[0], self.body[1], self.body[2], self.body[3]]);
        let mut msg = None;
        let mut offs = None;
        if self.flags & NLM_F_ACK_TLVS != 0 {
            // With NETLINK_CAP_ACK only the original header is echoed; TLVs follow it.
            let orig_len =
                u32::from_ne_bytes([self.body[4], self.body[5], self.body[6], self.body[7]]) as usize;
            let echoed = if self.flags & 0x100 != 0 {
                NLMSG_HDRLEN
            } else {
                orig_len
            }; // NLM_F_CAPPED
            let tlvs = self
                .body
                .get(4 + super::attr::align(echoed)..)
                .unwrap_or_default();
            let a = Attrs::parse(tlvs, "extended ack")?;
            msg = a.opt_string(NLMSGERR_ATTR_MSG)?;
            offs = a.opt_ne32(NLMSGERR_ATTR_OFFS)?;
        }
        Ok((err, msg, offs))
    }
}

pub(crate) fn parse_msgs(mut buf: &[u8]) -> impl Iterator<Item = Result<Msg<'_>>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            buf = &[];
            return Some(Err(Error::decode(format!("netlink message of bad length {len}"))));
        }
        let m = Msg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            portid: u32::from_ne_bytes([buf[12], buf[13], buf[14], buf[15]]),
            body: &buf[NLMSG_HDRLEN..len],
        };
        buf = &buf[super::attr::align(len).min(buf.len())..];
        Some(Ok(m))
    })
}

/// Names the part of a refused message the kernel pointed at (extack offset), e.g. the expression.
fn describe_offset(msg: &[u8], offset: u32) -> Option<String> {
    let off = offset as usize;
    let attrs_start = NLMSG_HDRLEN + NFGENMSG_LEN;
    let ty = u16::from_ne_bytes([*msg.get(4)?, *msg.get(5)?]) & 0xff;
    let mut pos = attrs_start;
    for a in AttrIter::new(msg.get(attrs_start..)?) {
        let (aty, payload) = a.ok()?;
        let len = 4 + payload.len();
        if off >= pos && off < pos + len {
            if ty == NFT_MSG_NEWRULE && aty == NFTA_RULE_EXPRESSIONS {
                let mut epos = pos + 4;
                for (i, e) in AttrIter::new(payload).enumerate() {
                    let (_, e) = e.ok()?;
                    let elen = 4 + e.len();
                    if off >= epos && off < epos + elen {
                        let name = Attrs::parse(e, "expression")
                            .ok()?
                            .opt_string(NFTA_EXPR_NAME)
                            .ok()??;
                        return Some(format!("expression #{} ({name})", i + 1));
                    }
                    epos += super::attr::align(elen);
                }
            }
            return Some(format!("attribute {aty}"));
        }
        pos += super::attr::align(len);
    }
    None
}

/// A batch at least this long is committed unheard by the monitor (see [`Quiet`]); a smaller
/// one's few events cost less to read and skip than the two generation round trips a pause needs.
pub const QUIET_BATCH_BYTES: usize = 16 * 1024;

/// How a connection keeps its large transactions out of a monitor's feed: it leaves the monitor's
/// group around them and, from the generation before and after, flags a foreign commit the
/// monitor could not hear meanwhile.
pub struct Quiet {
    pub(crate) membership: super::socket::Membership,
    pub(crate) missed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

pub struct Connection {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// Transactions committed through this connection.
    commits: u64,
    quiet: Option<Quiet>,
}

impl Connection {
    pub fn new() -> Result<Self> {
        let sock = Socket::open(0)?;
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Self {
            sock,
            seq,
            buf: vec![0; 64 * 1024],
            commits: 0,
            quiet: None,
        })
    }

    /// From now on, large batches are committed with the monitor that gave `quiet` not hearing.
    pub fn set_quiet(&mut self, quiet: Quiet) {
        self.quiet = Some(quiet);
    }

    /// How many transactions this connection has committed (each moved the generation by one).
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Port id of the socket (the kernel reports it as the origin of our changes).
    pub fn portid(&self) -> u32 {
        self.sock.portid()
    }

    fn next_seq(&mut self, n: u32) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n);
        s
    }

    /// Commits the batch as one transaction; returns the new ruleset generation.
    /// On failure nothing of the batch is applied and the error names the refused message.
    pub fn commit(&mut self, batch: Batch) -> Result<u32> {
        let empty = batch.is_empty();
        let generation = if batch.w.buf.len() >= QUIET_BATCH_BYTES && self.quiet.is_some() {
            self.commit_unheard(batch)
        } else {
            self.send_batch(batch, true)
        }?;
        if !empty {
            self.commits += 1;
        }
        Ok(generation)
    }

    /// Commits with the monitor out of its group, so that the kernel builds no events for this
    /// transaction (one per set element: a load of 10,000 farms spent a sixth of its time on
    /// events the monitor then dropped). A transaction by anyone else between the two generation
    /// reads moves the generation by more than ours did, and the monitor is told it missed one.
    fn commit_unheard(&mut self, batch: Batch) -> Result<u32> {
        // Read before leaving: a transaction after it, even one whose events were still queued
        // for the monitor, moves the generation and is counted.
        let before = self.generation().ok();
        let left = self.quiet.as_ref().map(|q| q.membership.leave());
        let done = self.send_batch(batch, true);
        // Joined before the generation is read: a transaction after the read is heard.
        // Should joining fail, the flag below makes the monitor join again before it reads.
        let joined = self.quiet.as_ref().map(|q| q.membership.join());
        let after = self.generation().ok();
        let ours = u32::from(done.is_ok());
        let accounted = matches!((before, after), (Some(b), Some(a)) if b.wrapping_add(ours) == a);
        let membership_failed = matches!(left, Some(Err(_))) || matches!(joined, Some(Err(_)));
        if let Some(q) = &self.quiet
            && (!accounted || membership_failed)
        {
            q.missed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        done
    }

    /// Has the kernel check every message of the batch, then abort it: nothing changes, not even
    /// the generation. Errors are reported as `commit` reports them.
    pub fn check(&mut self, batch: Batch) -> Result<()> {
        self.send_batch(batch, false).map(|_| ())
    }

    fn send_batch(&mut self, mut batch: Batch, commit: bool) -> Result<u32> {
        if batch.is_empty() {
            return self.generation();
        }
        let first = self.next_seq(batch.len() as u32 + 2);
        let wire_len = {
            let bytes = batch.finish(first, commit);
            bytes.len()
        };
        self.sock.ensure_sndbuf(wire_len)?;
        self.sock.send(&batch.w.buf)?;
        // The kernel processes the batch inside send(); the GETGEN reply comes after every
        // error it queued, so it marks the end of the answer.
        let gen_seq = self.send_getgen()?;
        let mut first_err: Option<Error> = None;
        let mut errors = 0usize;
        let mut genid = None;
        while genid.is_none() {
            let n = self.sock.recv(&mut self.buf)?;
            let buf = std::mem::take(&mut self.buf);
            let res = (|| -> Result<()> {
                for m in parse_msgs(&buf[..n]) {
                    let m = m?;
                    if m.ty == NLMSG_ERROR {
                        let (errno, ext, offs) = m.error()?;
                        if errno == 0 {
                            continue;
                        }
                        if m.seq == gen_seq {
                            return Err(Error::Kernel {
                                what: "generation query".into(),
                                errno,
                                detail: ext,
                            });
                        }
                        errors += 1;
                        if first_err.is_none() {
                            first_err = Some(Self::batch_error(&batch, first, m.seq, errno, ext, offs));
                        }
                    } else if m.seq == gen_seq && m.ty == nft_type(NFT_MSG_NEWGEN) {
                        let (_, attrs) = m.nft()?;
                        genid = Some(Attrs::parse(attrs, "generation")?.be32(NFTA_GEN_ID)?);
                    }
                }
                Ok(())
            })();
            self.buf = buf;
            res?;
        }
        match first_err {
            None => Ok(genid.unwrap_or(0)),
            Some(Error::Kernel { what, errno, detail }) if errors > 1 => Err(Error::Kernel {
                what,
                errno,
                detail: Some(format!(
                    "{}; {} messages refused in all",
                    detail.unwrap_or_default(),
                    errors
                )),
            }),
            Some(e) => Err(e),
        }
    }

    fn batch_error(
        batch: &Batch,
        first: u32,
        seq: u32,
        errno: i32,
        ext: Option<String>,
        offs: Option<u32>,
    ) -> Error {
        let total = batch.len();
        match batch.message(first, seq) {
            Some((what, bytes)) => {
                let at = offs.and_then(|o| describe_offset(bytes, o));
                let detail = match (ext, at) {
                    (Some(m), Some(a)) => Some(format!("{m}, at {a}")),
                    (Some(m), None) => Some(m),
                    (None, Some(a)) => Some(format!("at {a}")),
                    (None, None) => None,
                };
                let idx = seq - first;
                Error::Kernel {
                    what: format!("{what} (message {idx} of {total})"),
                    errno,
                    detail,
                }
            }
            None => Error::Kernel {
                what: format!("the batch (seq {seq})"),
                errno,
                detail: ext,
            },
        }
    }

    fn send_getgen(&mut self) -> Result<u32> {
        let seq = self.next_seq(1);
        let mut w = AttrWriter::new();
        let h = put_header(&mut w, nft_type(NFT_MSG_GETGEN), 0, 0, 0);
        end_msg(&mut w, h);
        w.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.sock.send(&w.buf)?;
        Ok(seq)
    }

    /// The current ruleset generation (bumps on every commit by anyone).
    pub fn generation(&mut self) -> Result<u32> {
        let msgs = self.request(NFT_MSG_GETGEN, 0, NFPROTO_UNSPEC, |_| {})?;
        let (_, attrs) = msgs.first().ok_or_else(|| Error::decode("no generation reply"))?;
        Attrs::parse(attrs, "generation")?.be32(NFTA_GEN_ID)
    }

    /// Sends a GET request (a dump with NLM_F_DUMP) and collects the replies' (family, attributes).
    /// A dump interrupted by a concurrent change is restarted.
    fn request(
        &mut self,
        msg: u16,
        flags: u16,
        family: u8,
        attrs: impl Fn(&mut AttrWriter),
    ) -> Result<Vec<(u8, Vec<u8>)>> {
        for _ in 0..16 {
            let seq = self.next_seq(1);
            let mut w = AttrWriter::new();
            let h = put_header(&mut w, nft_type(msg), flags | NLM_F_ACK, family, 0);
            attrs(&mut w);
            end_msg(&mut w, h);
            w.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
            self.sock.send(&w.buf)?;
            let mut out = Vec::new();
            let mut interrupted = false;
            let is_dump = flags & NLM_F_DUMP == NLM_F_DUMP;
            'recv: loop {
                let n = self.sock.recv(&mut self.buf)?;
                for m in parse_msgs(&self.buf[..n]) {
                    let m = m?;
                    if m.seq != seq {
                        continue; // a late answer to an earlier request
                    }
                    match m.ty {
                        NLMSG_DONE => {
                            if !is_dump {
                                continue;
                            }
                            // The ACK for a dump follows DONE only on some kernels: stop here.
                            break 'recv;
                        }
                        NLMSG_ERROR => {
                            let (errno, ext, _) = m.error()?;
                            if errno == 0 {
                                if is_dump {
                                    continue;
                                }
                                break 'recv;
                            }
                            if errno == libc::EINTR {
                                interrupted = true;
                                break 'recv;
                            }
                            return Err(Error::Kernel {
                                what: format!("request {msg}"),
                                errno,
                                detail: ext,
                            });
                        }
                        _ => {
                            if m.flags & 0x10 != 0 {
                                interrupted = true; // NLM_F_DUMP_INTR
                            }
                            let (fam, a) = m.nft()?;
                            out.push((fam, a.to_vec()));
                        }
                    }
                }
            }
            if !interrupted {
                return Ok(out);
            }
        }
        Err(Error::Kernel {
            what: "dump (ruleset kept changing)".into(),
            errno: libc::EINTR,
            detail: None,
        })
    }

    /// A dump; `None` asks for every family at once (NFPROTO_UNSPEC).
    fn dump(
        &mut self,
        msg: u16,
        family: Option<Family>,
        attrs: impl Fn(&mut AttrWriter),
    ) -> Result<Vec<(u8, Vec<u8>)>> {
        self.request(
            msg,
            NLM_F_DUMP,
            family.map_or(NFPROTO_UNSPEC, Family::to_raw),
            attrs,
        )
    }

    pub fn list_tables(&mut self, family: Option<Family>) -> Result<Vec<Table>> {
        self.dump(NFT_MSG_GETTABLE, family, |_| {})?
            .iter()
            .map(|(f, a)| Table::decode(Family::from_raw(*f)?, a))
            .collect()
    }

    pub fn list_chains(&mut self, family: Family, table: &str) -> Result<Vec<Chain>> {
        let v = self.dump(NFT_MSG_GETCHAIN, Some(family), |w| {
            w.put_str(NFTA_CHAIN_TABLE, table)
        })?;
        let all: Vec<Chain> = v
            .iter()
            .map(|(f, a)| Chain::decode(Family::from_raw(*f)?, a))
            .collect::<Result<_>>()?;
        Ok(all.into_iter().filter(|c| c.table == table).collect())
    }

    /// Rules of a table (of one chain if given), in chain order, with handles.
    pub fn list_rules(&mut self, family: Family, table: &str, chain: Option<&str>) -> Result<Vec<Rule>> {
        let v = self.dump(NFT_MSG_GETRULE, Some(family), |w| {
            w.put_str(NFTA_RULE_TABLE, table);
            if let Some(c) = chain {
                w.put_str(NFTA_RULE_CHAIN, c);
            }
        })?;
        v.iter()
            .map(|(f, a)| Rule::decode(Family::from_raw(*f)?, a))
            .collect()
    }

    /// The named sets and maps of a table (anonymous sets bound to rules included).
    pub fn list_sets(&mut self, family: Family, table: &str) -> Result<Vec<Set>> {
        let v = self.dump(NFT_MSG_GETSET, Some(family), |w| w.put_str(NFTA_SET_TABLE, table))?;
        let all: Vec<Set> = v
            .iter()
            .map(|(f, a)| Set::decode(Family::from_raw(*f)?, a))
            .collect::<Result<_>>()?;
        Ok(all.into_iter().filter(|s| s.table == table).collect())
    }

    pub fn get_set(&mut self, family: Family, table: &str, name: &str) -> Result<Set> {
        let v = self.request(NFT_MSG_GETSET, 0, family.to_raw(), |w| {
            w.put_str(NFTA_SET_TABLE, table);
            w.put_str(NFTA_SET_NAME, name);
        })?;
        let (f, a) = v.first().ok_or_else(|| Error::decode("empty reply to GETSET"))?;
        Set::decode(Family::from_raw(*f)?, a)
    }

    /// Elements of a set, including dynamic ones with their remaining timeout.
    ///
    /// The kernel resumes a multi-part set dump by skipping the elements it already sent; while a
    /// hash set is still being resized (right after a bulk insert) the order changes between parts,
    /// and a dump returns some elements twice and misses others. Duplicates are the tell-tale, so
    /// such a dump is read again until it is consistent.
    pub fn list_elems(&mut self, family: Family, table: &str, set: &str) -> Result<Vec<SetElem>> {
        let set_timeout = self.get_set(family, table, set)?.timeout_ms;
        for _ in 0..100 {
            let elems = self.dump_elems_once(family, table, set, set_timeout)?;
            let mut seen = std::collections::HashSet::with_capacity(elems.len());
            if elems
                .iter()
                .all(|e| seen.insert((e.key.as_slice(), e.key_end(), e.interval_end)))
            {
                return Ok(elems);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(Error::Kernel {
            what: format!("dump of set {family} {table} {set}"),
            errno: libc::EAGAIN,
            detail: Some("the set kept being resized during the dump".into()),
        })
    }

    /// One element of a set, looked up by the kernel by its key (no dump: O(1) for hash sets);
    /// `None` when the element, the set or the table does not exist.
    pub fn get_elem(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        key: &[u8],
    ) -> Result<Option<SetElem>> {
        let reply = self.request(NFT_MSG_GETSETELEM, 0, family.to_raw(), |w| {
            w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
            w.put_str(NFTA_SET_ELEM_LIST_SET, set);
            w.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |w| {
                w.nest(NFTA_LIST_ELEM, |w| {
                    super::Data::encode_value(w, NFTA_SET_ELEM_KEY, key)
                })
            });
        });
        let v = match reply {
            Err(Error::Kernel { errno, .. }) if errno == libc::ENOENT => return Ok(None),
            r => r?,
        };
        for (_, a) in &v {
            let a = Attrs::parse(a, "set element list")?;
            if let Some(list) = a.get(NFTA_SET_ELEM_LIST_ELEMENTS)
                && let Some(e) = AttrIter::new(list).next()
            {
                let (_, e) = e?;
                return Ok(Some(SetElem::decode(e, None)?));
            }
        }
        Ok(None)
    }

    fn dump_elems_once(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        set_timeout: Option<u64>,
    ) -> Result<Vec<SetElem>> {
        let v = self.dump(NFT_MSG_GETSETELEM, Some(family), |w| {
            w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
            w.put_str(NFTA_SET_ELEM_LIST_SET, set);
        })?;
        let mut out = Vec::new();
        for (_, a) in &v {
            let a = Attrs::parse(a, "set element list")?;
            if let Some(list) = a.get(NFTA_SET_ELEM_LIST_ELEMENTS) {
                for e in AttrIter::new(list) {
                    let (_, e) = e?;
                    out.push(SetElem::decode(e, set_timeout)?);
                }
            }
        }
        Ok(out)
    }

    /// Named objects of a table, optionally of one type; `reset` zeroes counters/quotas atomically
    /// with the read.
    /// One named object by type and name (no dump); `None` when it, or its table, does not exist.
    pub fn get_obj(&mut self, family: Family, table: &str, obj_type: u32, name: &str) -> Result<Option<Obj>> {
        let reply = self.request(NFT_MSG_GETOBJ, 0, family.to_raw(), |w| {
            w.put_str(NFTA_OBJ_TABLE, table);
            w.put_str(NFTA_OBJ_NAME, name);
            w.put_be32(NFTA_OBJ_TYPE, obj_type);
        });
        let v = match reply {
            Err(Error::Kernel { errno, .. }) if errno == libc::ENOENT => return Ok(None),
            r => r?,
        };
        v.first()
            .map(|(f, a)| Obj::decode(Family::from_raw(*f)?, a))
            .transpose()
    }

    pub fn list_objs(
        &mut self,
        family: Family,
        table: &str,
        obj_type: Option<u32>,
        reset: bool,
    ) -> Result<Vec<Obj>> {
        let msg = if reset {
            NFT_MSG_GETOBJ_RESET
        } else {
            NFT_MSG_GETOBJ
        };
        let v = self.dump(msg, Some(family), |w| {
            w.put_str(NFTA_OBJ_TABLE, table);
            if let Some(t) = obj_type {
                w.put_be32(NFTA_OBJ_TYPE, t);
            }
        })?;
        let all: Vec<Obj> = v
            .iter()
            .map(|(f, a)| Obj::decode(Family::from_raw(*f)?, a))
            .collect::<Result<_>>()?;
        Ok(all
            .into_iter()
            .filter(|o| o.table == table && obj_type.is_none_or(|t| o.kind.type_id() == t))
            .collect())
    }
}
