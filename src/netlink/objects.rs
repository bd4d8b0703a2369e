//! nf_tables objects: tables, chains, rules, sets and their elements, named (stateful) objects.
//! Each encodes its attributes into a message and decodes from a dump or a notification.
//! Read-only fields (`handle`, `use`, counters) are `None`/zero when building a request.

use super::attr::{AttrIter, AttrWriter, Attrs};
use super::bytes::Bytes;
use super::data::{ChainType, Data, Family, Hook, HookPoint, Verdict};
use super::error::{Error, Result};
use super::expr::{Expr, Limit};
use super::sys::*;
use super::types::{SetUserdata, TypeSpec, rule_comment_decode, rule_comment_encode};

/// Longest object name the kernel takes (NFT_NAME_MAXLEN - 1).
pub const NAME_MAX: usize = 255;

pub(crate) fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > NAME_MAX || name.contains('\0') {
        return Err(Error::Invalid(format!(
            "{kind} name {name:?} must be 1..={NAME_MAX} bytes without NUL"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    /// `NFT_TABLE_F_*`: DORMANT, OWNER, PERSIST.
    pub flags: u32,
    pub handle: Option<u64>,
    /// Port id of the owning socket when the table has the OWNER flag.
    pub owner: Option<u32>,
}

impl Table {
    pub fn new(family: Family, name: &str) -> Self {
        Self {
            family,
            name: name.into(),
            flags: 0,
            handle: None,
            owner: None,
        }
    }

    pub(crate) fn encode(&self, w: &mut AttrWriter) -> Result<()> {
        check_name("table", &self.name)?;
        w.put_str(NFTA_TABLE_NAME, &self.name);
        w.put_be32(NFTA_TABLE_FLAGS, self.flags);
        Ok(())
    }

    pub(crate) fn decode(family: Family, b: &[u8]) -> Result<Self> {
        let a = Attrs::parse(b, "table")?;
        Ok(Self {
            family,
            name: a.string(NFTA_TABLE_NAME)?,
            flags: a.opt_be32(NFTA_TABLE_FLAGS)?.unwrap_or(0),
            handle: a.opt_be64(NFTA_TABLE_HANDLE)?,
            owner: a.opt_be32(NFTA_TABLE_OWNER)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub handle: Option<u64>,
    /// Base chains have a hook, a type and a policy; regular chains have none.
    pub hook: Option<Hook>,
    pub chain_type: Option<ChainType>,
    pub policy: Option<Verdict>,
    /// `NFT_CHAIN_*` flags other than BASE (HW_OFFLOAD, BINDING).
    pub flags: u32,
}

impl Chain {
    pub fn regular(family: Family, table: &str, name: &str) -> Self {
        Self {
            family,
            table: table.into(),
            name: name.into(),
            handle: None,
            hook: None,
            chain_type: None,
            policy: None,
            flags: 0,
        }
    }

    pub fn base(
        family: Family,
        table: &str,
        name: &str,
        chain_type: ChainType,
        hook: Hook,
        policy: Verdict,
    ) -> Self {
        Self {
            hook: Some(hook),
            chain_type: Some(chain_type),
            policy: Some(policy),
            ..Self::regular(family, table, name)
        }
    }

    pub(crate) fn encode(&self, w: &mut AttrWriter) -> Result<()> {
        check_name("chain", &self.name)?;
        w.put_str(NFTA_CHAIN_TABLE, &self.table);
        w.put_str(NFTA_CHAIN_NAME, &self.name);
        if let Some(h) = &self.hook {
            w.nest(NFTA_CHAIN_HOOK, |w| {
                w.put_be32(NFTA_HOOK_HOOKNUM, h.point.to_raw(self.family));
                w.put_be32(NFTA_HOOK_PRIORITY, h.priority as u32);
                if let Some(d) = &h.device {
                    w.put_str(NFTA_HOOK_DEV, d);
                }
            });
        }
        if let Some(t) = self.chain_type {
            w.put_str(NFTA_CHAIN_TYPE, t.name());
        }
        if let Some(p) = &self.policy {
            w.put_be32(NFTA_CHAIN_POLICY, p.policy_code()?);
        }
        if self.flags != 0 {
            w.put_be32(NFTA_CHAIN_FLAGS, self.flags);
        }
        Ok(())
    }

    pub(crate) fn decode(family: Family, b: &[u8]) -> Result<Self> {
        let a = Attrs::parse(b, "chain")?;
        let hook = match a.get(NFTA_CHAIN_HOOK) {
            None => None,
            Some(h) => {
                let h = Attrs::parse(h, "chain hook")?;
                let dev = match h.opt_string(NFTA_HOOK_DEV)? {
                    Some(d) => Some(d),
                    // Newer kernels report devices as a list even for one device.
                    None => match h.get(NFTA_HOOK_DEVS) {
                        Some(l) => AttrIter::new(l).next().transpose()?.map(|(_, d)| {
                            String::from_utf8_lossy(d.split(|c| *c == 0).next().unwrap_or_default())
                                .into_owned()
                        }),
                        None => None,
                    },
                };
                Some(Hook {
                    point: HookPoint::from_raw(family, h.be32(NFTA_HOOK_HOOKNUM)?)?,
                    priority: h.be32(NFTA_HOOK_PRIORITY)? as i32,
                    device: dev,
                })
            }
        };
        let policy = match a.opt_be32(NFTA_CHAIN_POLICY)? {
            None => None,
            Some(NF_ACCEPT) => Some(Verdict::Accept),
            Some(NF_DROP) => Some(Verdict::Drop),
            Some(p) => return Err(Error::decode(format!("unknown chain policy {p}"))),
        };
        Ok(Self {
            family,
            table: a.string(NFTA_CHAIN_TABLE)?,
            name: a.string(NFTA_CHAIN_NAME)?,
            handle: a.opt_be64(NFTA_CHAIN_HANDLE)?,
            hook,
            chain_type: a
                .opt_string(NFTA_CHAIN_TYPE)?
                .map(|t| ChainType::from_name(&t))
                .transpose()?,
            policy,
            flags: a.opt_be32(NFTA_CHAIN_FLAGS)?.unwrap_or(0) & !NFT_CHAIN_BASE,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: Family,
    pub table: String,
    pub chain: String,
    pub handle: Option<u64>,
    pub exprs: Vec<Expr>,
    /// Stored in the rule's userdata, shown by `nft list` as `comment "…"`.
    pub comment: Option<String>,
}

impl Rule {
    pub fn new(family: Family, table: &str, chain: &str, exprs: Vec<Expr>) -> Self {
        Self {
            family,
            table: table.into(),
            chain: chain.into(),
            handle: None,
            exprs,
            comment: None,
        }
    }

    pub fn with_comment(mut self, c: &str) -> Self {
        self.comment = Some(c.into());
        self
    }

    /// `position`: the handle to insert after (append) or before (insert).
    pub(crate) fn encode(&self, w: &mut AttrWriter, position: Option<u64>) -> Result<()> {
        w.put_str(NFTA_RULE_TABLE, &self.table);
        w.put_str(NFTA_RULE_CHAIN, &self.chain);
        if let Some(h) = self.handle {
            w.put_be64(NFTA_RULE_HANDLE, h);
        }
        if let Some(p) = position {
            w.put_be64(NFTA_RULE_POSITION, p);
        }
        Expr::encode_list(&self.exprs, w, NFTA_RULE_EXPRESSIONS);
        if let Some(c) = &self.comment {
            if c.len() > 128 {
                return Err(Error::Invalid(format!(
                    "rule comment of {} bytes (max 128)",
                    c.len()
                )));
            }
            w.put(NFTA_RULE_USERDATA, &rule_comment_encode(c));
        }
        Ok(())
    }

    pub(crate) fn decode(family: Family, b: &[u8]) -> Result<Self> {
        let a = Attrs::parse(b, "rule")?;
        Ok(Self {
            family,
            table: a.string(NFTA_RULE_TABLE)?,
            chain: a.string(NFTA_RULE_CHAIN)?,
            handle: a.opt_be64(NFTA_RULE_HANDLE)?,
            exprs: match a.get(NFTA_RULE_EXPRESSIONS) {
                Some(l) => Expr::decode_list(l)?,
                None => Vec::new(),
            },
            comment: match a.get(NFTA_RULE_USERDATA) {
                Some(u) => rule_comment_decode(u)?,
                None => None,
            },
        })
    }
}

/// A named set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub handle: Option<u64>,
    /// `NFT_SET_*`: CONSTANT, INTERVAL, MAP, TIMEOUT, EVAL (dynamic), OBJECT, CONCAT, EXPR.
    pub flags: u32,
    pub key: TypeSpec,
    /// Maps: the value type (`DataType::Verdict` for verdict maps).
    pub data: Option<TypeSpec>,
    /// Maximum number of elements (`size`), required for sets updated from the packet path.
    pub size: Option<u32>,
    /// Default element timeout.
    pub timeout_ms: Option<u64>,
    pub gc_interval_ms: Option<u32>,
    pub userdata: SetUserdata,
    /// Expressions every element carries (e.g. `counter`).
    pub exprs: Vec<Expr>,
}

impl Set {
    pub fn new(family: Family, table: &str, name: &str, key: TypeSpec) -> Self {
        let userdata = SetUserdata {
            key_byteorder: Some(key.byteorder()),
            ..Default::default()
        };
        Self {
            family,
            table: table.into(),
            name: name.into(),
            handle: None,
            flags: 0,
            key,
            data: None,
            size: None,
            timeout_ms: None,
            gc_interval_ms: None,
            userdata,
            exprs: Vec::new(),
        }
    }

    pub fn map(family: Family, table: &str, name: &str, key: TypeSpec, data: TypeSpec) -> Self {
        let mut s = Self::new(family, table, name, key);
        s.flags |= NFT_SET_MAP;
        if data.fields != [super::types::DataType::Verdict] {
            s.userdata.data_byteorder = Some(data.byteorder());
        }
        s.data = Some(data);
        s
    }

    pub fn with_flags(mut self, flags: u32) -> Self {
        self.flags |= flags;
        self
    }

    pub fn is_interval(&self) -> bool {
        self.flags & NFT_SET_INTERVAL != 0
    }

    pub(crate) fn encode(&self, w: &mut AttrWriter, id: u32) -> Result<()> {
        check_name("set", &self.name)?;
        w.put_str(NFTA_SET_TABLE, &self.table);
        w.put_str(NFTA_SET_NAME, &self.name);
        let concat_interval = self.key.is_concat() && self.is_interval();
        // Concatenated ranges need the pipapo backend, selected by CONCAT and the field lengths.
        w.put_be32(
            NFTA_SET_FLAGS,
            if concat_interval {
                self.flags | NFT_SET_CONCAT
            } else {
                self.flags
            },
        );
        // nft packs a concatenation's types into one u32, 6 bits each: five at most.
        if self.key.fields.len() > 5 || self.data.as_ref().is_some_and(|d| d.fields.len() > 5) {
            return Err(Error::Invalid(format!(
                "set {}: a key or value concatenates more than 5 types",
                self.name
            )));
        }
        w.put_be32(NFTA_SET_KEY_TYPE, self.key.id());
        w.put_be32(NFTA_SET_KEY_LEN, self.key.byte_len());
        if let Some(d) = &self.data {
            let is_verdict = d.fields == [super::types::DataType::Verdict];
            w.put_be32(NFTA_SET_DATA_TYPE, d.id());
            // Verdict maps carry no value length.
            w.put_be32(NFTA_SET_DATA_LEN, if is_verdict { 0 } else { d.byte_len() });
        }
        if let Some(t) = self.timeout_ms {
            w.put_be64(NFTA_SET_TIMEOUT, t);
        }
        if let Some(g) = self.gc_interval_ms {
            w.put_be32(NFTA_SET_GC_INTERVAL, g);
        }
        if self.size.is_some() || concat_interval {
            w.nest(NFTA_SET_DESC, |w| {
                if let Some(s) = self.size {
                    w.put_be32(NFTA_SET_DESC_SIZE, s);
                }
                if concat_interval {
                    w.nest(NFTA_SET_DESC_CONCAT, |w| {
                        for len in self.key.field_lens() {
                            w.nest(NFTA_LIST_ELEM, |w| w.put_be32(NFTA_SET_FIELD_LEN, len));
                        }
                    });
                }
            });
        }
        w.put_be32(NFTA_SET_ID, id);
        if !self.userdata.is_empty() {
            w.put(NFTA_SET_USERDATA, &self.userdata.encode());
        }
        match self.exprs.as_slice() {
            [] => {}
            [one] => w.nest(NFTA_SET_EXPR, |w| one.encode(w)),
            many => Expr::encode_list(many, w, NFTA_SET_EXPRESSIONS),
        }
        Ok(())
    }

    pub(crate) fn decode(family: Family, b: &[u8]) -> Result<Self> {
        use super::types::DataType;
        let a = Attrs::parse(b, "set")?;
        // Delete notifications carry only table, name and handle.
        let key_id = a.opt_be32(NFTA_SET_KEY_TYPE)?.unwrap_or(4);
        let key_len = a.opt_be32(NFTA_SET_KEY_LEN)?.unwrap_or(0);
        let mut size = None;
        let mut field_lens = Vec::new();
        if let Some(d) = a.get(NFTA_SET_DESC) {
            let d = Attrs::parse(d, "set description")?;
            size = d.opt_be32(NFTA_SET_DESC_SIZE)?;
            if let Some(c) = d.get(NFTA_SET_DESC_CONCAT) {
                for f in AttrIter::new(c) {
                    let (_, f) = f?;
                    field_lens.push(Attrs::parse(f, "set field")?.be32(NFTA_SET_FIELD_LEN)?);
                }
            }
        }
        let key = decode_type_spec(key_id, key_len)?;
        let data = match a.opt_be32(NFTA_SET_DATA_TYPE)? {
            None => None,
            Some(NFT_DATA_VERDICT) => Some(TypeSpec::of(DataType::Verdict)),
            Some(id) => Some(decode_type_spec(id, a.opt_be32(NFTA_SET_DATA_LEN)?.unwrap_or(0))?),
        };
        let mut exprs = Vec::new();
        if let Some(e) = a.get(NFTA_SET_EXPR) {
            exprs.push(Expr::decode(e)?);
        }
        if let Some(l) = a.get(NFTA_SET_EXPRESSIONS) {
            exprs.extend(Expr::decode_list(l)?);
        }
        Ok(Self {
            family,
            table: a.string(NFTA_SET_TABLE)?,
            name: a.string(NFTA_SET_NAME)?,
            handle: a.opt_be64(NFTA_SET_HANDLE)?,
            flags: a.opt_be32(NFTA_SET_FLAGS)?.unwrap_or(0) & !NFT_SET_CONCAT,
            key,
            data,
            size,
            timeout_ms: a.opt_be64(NFTA_SET_TIMEOUT)?,
            gc_interval_ms: a.opt_be32(NFTA_SET_GC_INTERVAL)?,
            userdata: match a.get(NFTA_SET_USERDATA) {
                Some(u) => SetUserdata::decode(u)?,
                None => SetUserdata::default(),
            },
            exprs,
        })
    }
}

/// Rebuilds a [`TypeSpec`] from nft's packed type id (6 bits per component).
fn decode_type_spec(id: u32, len: u32) -> Result<TypeSpec> {
    use super::types::DataType;
    let mut ids = Vec::new();
    let mut v = id;
    loop {
        ids.push(v & 0x3f);
        v >>= 6;
        if v == 0 {
            break;
        }
    }
    ids.reverse();
    let single = ids.len() == 1;
    let fields = ids
        .into_iter()
        .map(|t| {
            Ok(match t {
                4 => DataType::Integer(if single { len } else { 4 }),
                7 => DataType::Ipv4Addr,
                8 => DataType::Ipv6Addr,
                9 => DataType::EtherAddr,
                12 => DataType::InetProto,
                13 => DataType::InetService,
                19 => DataType::Mark,
                26 => DataType::CtState,
                41 => DataType::IfName,
                other => return Err(Error::decode(format!("set data type {other} is not supported"))),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TypeSpec { fields })
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetElem {
    /// Inline up to a few bytes (see [`Bytes`]), as is a value in `data`.
    pub key: Bytes,
    pub data: Option<Data>,
    /// `NFT_SET_ELEM_INTERVAL_END`: this element closes a range in a plain interval set.
    pub interval_end: bool,
    /// What few elements have, out of line: the engine keeps every element it committed (eight
    /// per backend and slot of a large farm), and inline these fields made each one 2.5 times
    /// as large. `None` when all are unset, so equal elements compare equal.
    more: Option<Box<ElemMore>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct ElemMore {
    /// End of a range in concatenated interval sets (pipapo); inclusive.
    key_end: Option<Bytes>,
    timeout_ms: Option<u64>,
    /// Remaining lifetime, only in dumps of sets with timeouts.
    expires_ms: Option<u64>,
    exprs: Vec<Expr>,
    /// Stateful object name for object maps.
    objref: Option<String>,
}

impl SetElem {
    pub fn key(key: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            data: None,
            interval_end: false,
            more: None,
        }
    }

    pub fn mapping(key: impl Into<Bytes>, data: Data) -> Self {
        Self {
            data: Some(data),
            ..Self::key(key)
        }
    }

    /// End of a range in concatenated interval sets (pipapo); inclusive.
    pub fn key_end(&self) -> Option<&[u8]> {
        self.more.as_ref().and_then(|m| m.key_end.as_deref())
    }

    pub fn timeout_ms(&self) -> Option<u64> {
        self.more.as_ref().and_then(|m| m.timeout_ms)
    }

    /// Remaining lifetime, only in dumps of sets with timeouts.
    pub fn expires_ms(&self) -> Option<u64> {
        self.more.as_ref().and_then(|m| m.expires_ms)
    }

    pub fn exprs(&self) -> &[Expr] {
        self.more.as_ref().map_or(&[], |m| m.exprs.as_slice())
    }

    /// Stateful object name for object maps.
    pub fn objref(&self) -> Option<&str> {
        self.more.as_ref().and_then(|m| m.objref.as_deref())
    }

    /// Changes the rare fields, keeping `more` at `None` when none is set.
    fn set_more(&mut self, f: impl FnOnce(&mut ElemMore)) {
        let mut m = self.more.take().map(|b| *b).unwrap_or_default();
        f(&mut m);
        if m != ElemMore::default() {
            self.more = Some(Box::new(m));
        }
    }

    /// Drops the element's expressions (counters read back are runtime state).
    pub fn clear_exprs(&mut self) {
        self.set_more(|m| m.exprs.clear());
    }

    pub fn with_timeout(mut self, ms: u64) -> Self {
        self.set_more(|m| m.timeout_ms = Some(ms));
        self
    }

    /// The elements that express `[from, to]` (inclusive) in a plain interval set: a start element
    /// carrying the data, and an interval-end element at `to + 1` unless `to` is the largest value.
    pub fn range(from: &[u8], to: &[u8], data: Option<Data>) -> Vec<SetElem> {
        let mut start = SetElem::key(from);
        start.data = data;
        let mut out = vec![start];
        if let Some(next) = increment(to) {
            out.push(SetElem {
                interval_end: true,
                ..SetElem::key(next)
            });
        }
        out
    }

    /// A range element of a concatenated interval set: `key` to `key_end`, both inclusive.
    pub fn concat_range(from: Vec<u8>, to: Vec<u8>, data: Option<Data>) -> SetElem {
        let mut e = SetElem {
            data,
            ..SetElem::key(from)
        };
        e.set_more(|m| m.key_end = Some(to.into()));
        e
    }

    pub(crate) fn encode(&self, w: &mut AttrWriter) {
        Data::encode_value(w, NFTA_SET_ELEM_KEY, &self.key);
        if let Some(k) = self.key_end() {
            Data::encode_value(w, NFTA_SET_ELEM_KEY_END, k);
        }
        if let Some(d) = &self.data {
            d.encode(w, NFTA_SET_ELEM_DATA);
        }
        if self.interval_end {
            w.put_be32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        }
        if let Some(t) = self.timeout_ms() {
            w.put_be64(NFTA_SET_ELEM_TIMEOUT, t);
        }
        if let Some(o) = self.objref() {
            w.put_str(NFTA_SET_ELEM_OBJREF, o);
        }
        match self.exprs() {
            [] => {}
            [one] => w.nest(NFTA_SET_ELEM_EXPR, |w| one.encode(w)),
            many => Expr::encode_list(many, w, NFTA_SET_ELEM_EXPRESSIONS),
        }
    }

    pub(crate) fn decode(b: &[u8], set_timeout_ms: Option<u64>) -> Result<Self> {
        let a = Attrs::parse(b, "set element")?;
        let mut exprs = Vec::new();
        if let Some(e) = a.get(NFTA_SET_ELEM_EXPR) {
            exprs.push(Expr::decode(e)?);
        }
        if let Some(l) = a.get(NFTA_SET_ELEM_EXPRESSIONS) {
            exprs.extend(Expr::decode_list(l)?);
        }
        // The kernel reports an element's own timeout only when it differs from the set default.
        let timeout = a
            .opt_be64(NFTA_SET_ELEM_TIMEOUT)?
            .filter(|t| Some(*t) != set_timeout_ms);
        let more = ElemMore {
            key_end: a.get(NFTA_SET_ELEM_KEY_END).map(Data::value).transpose()?,
            timeout_ms: timeout,
            expires_ms: a.opt_be64(NFTA_SET_ELEM_EXPIRATION)?,
            exprs,
            objref: a.opt_string(NFTA_SET_ELEM_OBJREF)?,
        };
        Ok(Self {
            key: Data::value(a.bytes(NFTA_SET_ELEM_KEY)?)?,
            data: a.get(NFTA_SET_ELEM_DATA).map(Data::decode).transpose()?,
            interval_end: a.opt_be32(NFTA_SET_ELEM_FLAGS)?.unwrap_or(0) & NFT_SET_ELEM_INTERVAL_END != 0,
            more: (more != ElemMore::default()).then(|| Box::new(more)),
        })
    }
}

/// Adds one to a big-endian byte string; `None` on overflow.
fn increment(v: &[u8]) -> Option<Vec<u8>> {
    let mut out = v.to_vec();
    for b in out.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(out);
        }
    }
    None
}

/// A stateful named object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjKind {
    Counter {
        packets: u64,
        bytes: u64,
    },
    Quota {
        bytes: u64,
        consumed: u64,
        over: bool,
    },
    Limit(Limit),
    /// `ct helper`: kernel helper name (`ftp`, `sip`…), layer 3 (NFPROTO_*) and layer 4 protocol.
    CtHelper {
        helper: String,
        l3proto: u16,
        l4proto: u8,
    },
}

impl ObjKind {
    pub fn type_id(&self) -> u32 {
        match self {
            ObjKind::Counter { .. } => NFT_OBJECT_COUNTER,
            ObjKind::Quota { .. } => NFT_OBJECT_QUOTA,
            ObjKind::Limit(_) => NFT_OBJECT_LIMIT,
            ObjKind::CtHelper { .. } => NFT_OBJECT_CT_HELPER,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obj {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub handle: Option<u64>,
    pub kind: ObjKind,
}

impl Obj {
    pub fn new(family: Family, table: &str, name: &str, kind: ObjKind) -> Self {
        Self {
            family,
            table: table.into(),
            name: name.into(),
            handle: None,
            kind,
        }
    }

    pub(crate) fn encode(&self, w: &mut AttrWriter) -> Result<()> {
        check_name("object", &self.name)?;
        w.put_str(NFTA_OBJ_TABLE, &self.table);
        w.put_str(NFTA_OBJ_NAME, &self.name);
        w.put_be32(NFTA_OBJ_TYPE, self.kind.type_id());
        w.nest(NFTA_OBJ_DATA, |w| match &self.kind {
            ObjKind::Counter { packets, bytes } => {
                w.put_be64(NFTA_COUNTER_BYTES, *bytes);
                w.put_be64(NFTA_COUNTER_PACKETS, *packets);
            }
            ObjKind::Quota {
                bytes,
                consumed,
                over,
            } => {
                w.put_be64(NFTA_QUOTA_BYTES, *bytes);
                w.put_be32(NFTA_QUOTA_FLAGS, if *over { NFT_QUOTA_F_INV } else { 0 });
                w.put_be64(NFTA_QUOTA_CONSUMED, *consumed);
            }
            ObjKind::Limit(l) => l.encode(w),
            ObjKind::CtHelper {
                helper,
                l3proto,
                l4proto,
            } => {
                w.put_str(NFTA_CT_HELPER_NAME, helper);
                w.put_be16(NFTA_CT_HELPER_L3PROTO, *l3proto);
                w.put_u8(NFTA_CT_HELPER_L4PROTO, *l4proto);
            }
        });
        Ok(())
    }

    pub(crate) fn decode(family: Family, b: &[u8]) -> Result<Self> {
        let a = Attrs::parse(b, "object")?;
        let d = Attrs::parse(a.get(NFTA_OBJ_DATA).unwrap_or_default(), "object data")?;
        let kind = match a.be32(NFTA_OBJ_TYPE)? {
            NFT_OBJECT_COUNTER => ObjKind::Counter {
                packets: d.opt_be64(NFTA_COUNTER_PACKETS)?.unwrap_or(0),
                bytes: d.opt_be64(NFTA_COUNTER_BYTES)?.unwrap_or(0),
            },
            NFT_OBJECT_QUOTA => ObjKind::Quota {
                bytes: d.be64(NFTA_QUOTA_BYTES)?,
                consumed: d.opt_be64(NFTA_QUOTA_CONSUMED)?.unwrap_or(0),
                over: d.opt_be32(NFTA_QUOTA_FLAGS)?.unwrap_or(0) & NFT_QUOTA_F_INV != 0,
            },
            NFT_OBJECT_LIMIT => ObjKind::Limit(Limit::decode(&d)?),
            NFT_OBJECT_CT_HELPER => ObjKind::CtHelper {
                helper: d.string(NFTA_CT_HELPER_NAME)?,
                l3proto: d.opt_be16(NFTA_CT_HELPER_L3PROTO)?.unwrap_or(0),
                l4proto: d.opt_u8(NFTA_CT_HELPER_L4PROTO)?.unwrap_or(0),
            },
            t => return Err(Error::decode(format!("object type {t} is not supported"))),
        };
        Ok(Self {
            family,
            table: a.string(NFTA_OBJ_TABLE)?,
            name: a.string(NFTA_OBJ_NAME)?,
            handle: a.opt_be64(NFTA_OBJ_HANDLE)?,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_element_keeps_its_rare_fields_out_of_line() {
        // Key, data, flag and one pointer: the size a large farm pays per element.
        assert_eq!(std::mem::size_of::<SetElem>(), 72);
        let plain = SetElem::key(vec![1, 2, 3, 4]);
        let mut counted = plain.clone();
        counted.set_more(|m| m.exprs = vec![Expr::counter()]);
        assert_eq!(counted.exprs(), [Expr::counter()]);
        assert_ne!(counted, plain);
        counted.clear_exprs();
        // Nothing set is the same element as one never given anything.
        assert_eq!(counted, plain);
        assert!(counted.more.is_none());
        let timed = plain.clone().with_timeout(5000);
        assert_eq!(
            (timed.timeout_ms(), timed.expires_ms(), timed.key_end()),
            (Some(5000), None, None)
        );
    }

    #[test]
    fn a_mapping_keeps_its_key_and_value_inline_and_encodes_them_as_before() {
        let e = SetElem::mapping(vec![10, 0, 0, 1], Data::Value(vec![0, 0, 0, 7].into()));
        assert!(e.key.is_inline());
        assert!(matches!(&e.data, Some(Data::Value(v)) if v.is_inline()));
        let mut w = AttrWriter::new();
        e.encode(&mut w);
        let nested = |ty: u8| [12, 0, ty, 0x80, 8, 0, 1, 0];
        let mut want = Vec::new();
        want.extend(nested(1));
        want.extend([10, 0, 0, 1]);
        want.extend(nested(2));
        want.extend([0, 0, 0, 7]);
        assert_eq!(w.buf, want);
        assert_eq!(SetElem::decode(&w.buf, None).unwrap(), e);
    }

    #[test]
    fn range_elements_close_one_past_the_end() {
        let r = SetElem::range(&[0, 80], &[0, 88], None);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].key, vec![0, 89]);
        assert!(r[1].interval_end);
        assert_eq!(SetElem::range(&[0, 80], &[0xff, 0xff], None).len(), 1);
        assert_eq!(increment(&[0, 0xff]), Some(vec![1, 0]));
    }

    #[test]
    fn names_are_checked() {
        let t = Table::new(Family::Ip, "");
        assert!(t.encode(&mut AttrWriter::new()).is_err());
        let t = Table::new(Family::Ip, &"x".repeat(300));
        assert!(t.encode(&mut AttrWriter::new()).is_err());
    }
}
