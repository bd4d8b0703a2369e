//! nf_tables expressions: typed values that encode to, and decode from, `NFTA_LIST_ELEM` nests.
//!
//! Each variant holds exactly what the kernel echoes back in a dump, so `decode(encode(e)) == e`
//! after a round trip through the kernel. Fields the kernel fills in by itself (NAT range flags
//! implied by the registers, the log level default) are set the same way by the constructors.

use super::attr::{AttrIter, AttrWriter, Attrs};
use super::consts::*;
use super::data::Data;
use super::error::{Error, Result};
use super::sys::*;
use super::types::PayloadField;

/// Comparison operators of `cmp` (and `range`, which takes only Eq/Neq).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl CmpOp {
    fn to_raw(self) -> u32 {
        match self {
            CmpOp::Eq => NFT_CMP_EQ,
            CmpOp::Neq => NFT_CMP_NEQ,
            CmpOp::Lt => NFT_CMP_LT,
            CmpOp::Lte => NFT_CMP_LTE,
            CmpOp::Gt => NFT_CMP_GT,
            CmpOp::Gte => NFT_CMP_GTE,
        }
    }
    fn from_raw(v: u32) -> Result<Self> {
        Ok(match v {
            NFT_CMP_EQ => CmpOp::Eq,
            NFT_CMP_NEQ => CmpOp::Neq,
            NFT_CMP_LT => CmpOp::Lt,
            NFT_CMP_LTE => CmpOp::Lte,
            NFT_CMP_GT => CmpOp::Gt,
            NFT_CMP_GTE => CmpOp::Gte,
            _ => return Err(Error::decode(format!("unknown cmp op {v}"))),
        })
    }
}

/// Time unit of rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateUnit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
}

impl RateUnit {
    pub fn seconds(self) -> u64 {
        match self {
            RateUnit::Second => 1,
            RateUnit::Minute => 60,
            RateUnit::Hour => 3600,
            RateUnit::Day => 86400,
            RateUnit::Week => 604800,
        }
    }
    pub(crate) fn from_seconds(v: u64) -> Result<Self> {
        Ok(match v {
            1 => RateUnit::Second,
            60 => RateUnit::Minute,
            3600 => RateUnit::Hour,
            86400 => RateUnit::Day,
            604800 => RateUnit::Week,
            _ => return Err(Error::decode(format!("unknown rate unit of {v} s"))),
        })
    }
}

/// A rate limit (expression `limit` and object `limit`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Limit {
    pub rate: u64,
    pub unit: RateUnit,
    pub burst: u32,
    /// Count bytes instead of packets.
    pub bytes: bool,
    /// `limit rate over`: match when the rate is exceeded.
    pub over: bool,
}

impl Limit {
    pub(crate) fn encode(&self, w: &mut AttrWriter) {
        w.put_be64(NFTA_LIMIT_RATE, self.rate);
        w.put_be64(NFTA_LIMIT_UNIT, self.unit.seconds());
        w.put_be32(NFTA_LIMIT_BURST, self.burst);
        w.put_be32(
            NFTA_LIMIT_TYPE,
            if self.bytes {
                NFT_LIMIT_PKT_BYTES
            } else {
                NFT_LIMIT_PKTS
            },
        );
        w.put_be32(NFTA_LIMIT_FLAGS, if self.over { NFT_LIMIT_F_INV } else { 0 });
    }
    pub(crate) fn decode(a: &Attrs) -> Result<Self> {
        Ok(Limit {
            rate: a.be64(NFTA_LIMIT_RATE)?,
            unit: RateUnit::from_seconds(a.be64(NFTA_LIMIT_UNIT)?)?,
            burst: a.opt_be32(NFTA_LIMIT_BURST)?.unwrap_or(0),
            bytes: a.opt_be32(NFTA_LIMIT_TYPE)? == Some(NFT_LIMIT_PKT_BYTES),
            over: a.opt_be32(NFTA_LIMIT_FLAGS)?.unwrap_or(0) & NFT_LIMIT_F_INV != 0,
        })
    }
}

/// NAT kind of the `nat` expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatType {
    Snat,
    Dnat,
}

/// Operation of `dynset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DynsetOp {
    Add,
    Update,
    Delete,
}

/// What `reject` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// ICMP (v4 or v6 by table family) of the given code.
    Icmp(u8),
    TcpRst,
    /// Family-independent ICMPx code (`NFT_REJECT_ICMPX_*`).
    Icmpx(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// Load `len` bytes at `offset` of header `base` into `dreg`.
    Payload {
        dreg: u32,
        base: u32,
        offset: u32,
        len: u32,
    },
    /// Write `sreg` into the packet, fixing the checksum at `csum_offset` (`csum_type` INET/SCTP).
    PayloadSet {
        sreg: u32,
        base: u32,
        offset: u32,
        len: u32,
        csum_type: u32,
        csum_offset: u32,
        csum_flags: u32,
    },
    Meta {
        key: u32,
        dreg: u32,
    },
    MetaSet {
        key: u32,
        sreg: u32,
    },
    Cmp {
        sreg: u32,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` over `len` bytes.
    Bitwise {
        sreg: u32,
        dreg: u32,
        len: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `from <= sreg <= to` (op Eq) or outside (op Neq).
    Range {
        sreg: u32,
        op: CmpOp,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// Match `sreg` in a set; with `dreg`, load the mapped value (a verdict when dreg is 0).
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        invert: bool,
    },
    Immediate {
        dreg: u32,
        data: Data,
    },
    Nat {
        nat_type: NatType,
        family: u32,
        addr: Option<(u32, u32)>,
        proto: Option<(u32, u32)>,
        /// `NF_NAT_RANGE_*`; MAP_IPS and PROTO_SPECIFIED follow from `addr`/`proto` (see [`Expr::nat`]).
        flags: u32,
    },
    Masq {
        flags: u32,
        proto: Option<(u32, u32)>,
    },
    Redir {
        flags: u32,
        proto: Option<(u32, u32)>,
    },
    Numgen {
        dreg: u32,
        modulus: u32,
        random: bool,
        offset: u32,
    },
    /// jhash of `len` bytes at `sreg`.
    Jhash {
        sreg: u32,
        dreg: u32,
        len: u32,
        modulus: u32,
        seed: Option<u32>,
        offset: u32,
    },
    Symhash {
        dreg: u32,
        modulus: u32,
        offset: u32,
    },
    Ct {
        key: u32,
        dreg: u32,
        dir: Option<u8>,
    },
    CtSet {
        key: u32,
        sreg: u32,
        dir: Option<u8>,
    },
    /// Add or update an element of `set` from the packet; `exprs` are per-element (limit, connlimit, counter).
    Dynset {
        set: String,
        op: DynsetOp,
        sreg_key: u32,
        sreg_data: Option<u32>,
        timeout_ms: Option<u64>,
        exprs: Vec<Expr>,
    },
    Counter {
        packets: u64,
        bytes: u64,
    },
    Limit(Limit),
    Connlimit {
        count: u32,
        over: bool,
    },
    Quota {
        bytes: u64,
        consumed: u64,
        over: bool,
    },
    Reject(Reject),
    Log {
        prefix: Option<String>,
        group: Option<u16>,
        snaplen: Option<u32>,
        qthreshold: Option<u16>,
        level: Option<u32>,
        flags: u32,
    },
    Queue {
        num: u16,
        total: u16,
        flags: u16,
    },
    Dup {
        sreg_addr: u32,
        sreg_dev: Option<u32>,
    },
    /// netdev only: forward to the device in `sreg_dev` (optionally to the neighbour `sreg_addr`).
    Fwd {
        sreg_dev: u32,
        addr: Option<(u32, u32)>,
    },
    Notrack,
    /// Use a named object (`counter name`, `ct helper set name`, `limit name`, `quota name`).
    Objref {
        obj_type: u32,
        name: String,
    },
    Fib {
        dreg: u32,
        result: u32,
        flags: u32,
    },
    /// Converts `len` bytes of `size`-byte words between host and network order (`hton` when true).
    Byteorder {
        sreg: u32,
        dreg: u32,
        hton: bool,
        len: u32,
        size: u32,
    },
}

impl Expr {
    // --- constructors for the common shapes ---------------------------------------------------

    pub fn payload(field: PayloadField, dreg: u32) -> Self {
        let (base, offset, len) = field.location();
        Expr::Payload {
            dreg,
            base,
            offset,
            len,
        }
    }

    pub fn cmp(sreg: u32, op: CmpOp, data: impl Into<Vec<u8>>) -> Self {
        Expr::Cmp {
            sreg,
            op,
            data: data.into(),
        }
    }

    pub fn meta(key: u32, dreg: u32) -> Self {
        Expr::Meta { key, dreg }
    }

    pub fn ct(key: u32, dreg: u32) -> Self {
        Expr::Ct { key, dreg, dir: None }
    }

    pub fn verdict(v: super::data::Verdict) -> Self {
        Expr::Immediate {
            dreg: reg::VERDICT,
            data: Data::Verdict(v),
        }
    }

    pub fn immediate(dreg: u32, value: impl Into<super::bytes::Bytes>) -> Self {
        Expr::Immediate {
            dreg,
            data: Data::Value(value.into()),
        }
    }

    pub fn lookup(set: &str, sreg: u32) -> Self {
        Expr::Lookup {
            set: set.into(),
            sreg,
            dreg: None,
            invert: false,
        }
    }

    pub fn map(set: &str, sreg: u32, dreg: u32) -> Self {
        Expr::Lookup {
            set: set.into(),
            sreg,
            dreg: Some(dreg),
            invert: false,
        }
    }

    pub fn counter() -> Self {
        Expr::Counter { packets: 0, bytes: 0 }
    }

    /// A NAT expression with the flags the kernel implies from the registers (so dumps compare equal).
    pub fn nat(
        nat_type: NatType,
        family: u32,
        addr: Option<(u32, u32)>,
        proto: Option<(u32, u32)>,
        flags: u32,
    ) -> Self {
        let mut f = flags;
        if addr.is_some() {
            f |= NF_NAT_RANGE_MAP_IPS;
        }
        if proto.is_some() {
            f |= NF_NAT_RANGE_PROTO_SPECIFIED;
        }
        Expr::Nat {
            nat_type,
            family,
            addr,
            proto,
            flags: f,
        }
    }

    /// `add @set { key [timeout T] [exprs] }`: add the packet's key (in `sreg_key`) to a dynamic set.
    pub fn set_add(set: &str, sreg_key: u32, timeout_ms: Option<u64>, exprs: Vec<Expr>) -> Self {
        Expr::Dynset {
            set: set.into(),
            op: DynsetOp::Add,
            sreg_key,
            sreg_data: None,
            timeout_ms,
            exprs,
        }
    }

    /// `masquerade` (optionally to a port range), flags as the kernel reports them.
    pub fn masq(proto: Option<(u32, u32)>, flags: u32) -> Self {
        let flags = if proto.is_some() {
            flags | NF_NAT_RANGE_PROTO_SPECIFIED
        } else {
            flags
        };
        Expr::Masq { flags, proto }
    }

    /// `redirect` (optionally to a port range), flags as the kernel reports them.
    pub fn redir(proto: Option<(u32, u32)>, flags: u32) -> Self {
        let flags = if proto.is_some() {
            flags | NF_NAT_RANGE_PROTO_SPECIFIED
        } else {
            flags
        };
        Expr::Redir { flags, proto }
    }

    pub fn log(prefix: Option<&str>) -> Self {
        Expr::Log {
            prefix: prefix.map(Into::into),
            group: None,
            snaplen: None,
            qthreshold: None,
            level: Some(NFT_LOGLEVEL_WARNING),
            flags: 0,
        }
    }

    /// The kernel's name of the expression type.
    pub fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } | Expr::PayloadSet { .. } => "payload",
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Range { .. } => "range",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate { .. } => "immediate",
            Expr::Nat { .. } => "nat",
            Expr::Masq { .. } => "masq",
            Expr::Redir { .. } => "redir",
            Expr::Numgen { .. } => "numgen",
            Expr::Jhash { .. } | Expr::Symhash { .. } => "hash",
            Expr::Ct { .. } | Expr::CtSet { .. } => "ct",
            Expr::Dynset { .. } => "dynset",
            Expr::Counter { .. } => "counter",
            Expr::Limit(_) => "limit",
            Expr::Connlimit { .. } => "connlimit",
            Expr::Quota { .. } => "quota",
            Expr::Reject(_) => "reject",
            Expr::Log { .. } => "log",
            Expr::Queue { .. } => "queue",
            Expr::Dup { .. } => "dup",
            Expr::Fwd { .. } => "fwd",
            Expr::Notrack => "notrack",
            Expr::Objref { .. } => "objref",
            Expr::Fib { .. } => "fib",
            Expr::Byteorder { .. } => "byteorder",
        }
    }

    // --- wire encoding ------------------------------------------------------------------------

    /// Encodes `NFTA_EXPR_NAME` and `NFTA_EXPR_DATA` (the caller opens the list element).
    pub(crate) fn encode(&self, w: &mut AttrWriter) {
        w.put_str(NFTA_EXPR_NAME, self.name());
        if matches!(self, Expr::Notrack) {
            return;
        }
        w.nest(NFTA_EXPR_DATA, |w| self.encode_data(w));
    }

    pub(crate) fn encode_list(exprs: &[Expr], w: &mut AttrWriter, ty: u16) {
        w.nest(ty, |w| {
            for e in exprs {
                w.nest(NFTA_LIST_ELEM, |w| e.encode(w));
            }
        });
    }

    fn encode_data(&self, w: &mut AttrWriter) {
        match self {
            Expr::Payload {
                dreg,
                base,
                offset,
                len,
            } => {
                w.put_be32(NFTA_PAYLOAD_DREG, *dreg);
                w.put_be32(NFTA_PAYLOAD_BASE, *base);
                w.put_be32(NFTA_PAYLOAD_OFFSET, *offset);
                w.put_be32(NFTA_PAYLOAD_LEN, *len);
            }
            Expr::PayloadSet {
                sreg,
                base,
                offset,
                len,
                csum_type,
                csum_offset,
                csum_flags,
            } => {
                w.put_be32(NFTA_PAYLOAD_SREG, *sreg);
                w.put_be32(NFTA_PAYLOAD_BASE, *base);
                w.put_be32(NFTA_PAYLOAD_OFFSET, *offset);
                w.put_be32(NFTA_PAYLOAD_LEN, *len);
                w.put_be32(NFTA_PAYLOAD_CSUM_TYPE, *csum_type);
                w.put_be32(NFTA_PAYLOAD_CSUM_OFFSET, *csum_offset);
                w.put_be32(NFTA_PAYLOAD_CSUM_FLAGS, *csum_flags);
            }
            Expr::Meta { key, dreg } => {
                w.put_be32(NFTA_META_KEY, *key);
                w.put_be32(NFTA_META_DREG, *dreg);
            }
            Expr::MetaSet { key, sreg } => {
                w.put_be32(NFTA_META_KEY, *key);
                w.put_be32(NFTA_META_SREG, *sreg);
            }
            Expr::Cmp { sreg, op, data } => {
                w.put_be32(NFTA_CMP_SREG, *sreg);
                w.put_be32(NFTA_CMP_OP, op.to_raw());
                Data::encode_value(w, NFTA_CMP_DATA, data);
            }
            Expr::Bitwise {
                sreg,
                dreg,
                len,
                mask,
                xor,
            } => {
                w.put_be32(NFTA_BITWISE_SREG, *sreg);
                w.put_be32(NFTA_BITWISE_DREG, *dreg);
                w.put_be32(NFTA_BITWISE_LEN, *len);
                Data::encode_value(w, NFTA_BITWISE_MASK, mask);
                Data::encode_value(w, NFTA_BITWISE_XOR, xor);
            }
            Expr::Range { sreg, op, from, to } => {
                w.put_be32(NFTA_RANGE_SREG, *sreg);
                w.put_be32(NFTA_RANGE_OP, op.to_raw());
                Data::encode_value(w, NFTA_RANGE_FROM_DATA, from);
                Data::encode_value(w, NFTA_RANGE_TO_DATA, to);
            }
            Expr::Lookup {
                set,
                sreg,
                dreg,
                invert,
            } => {
                w.put_str(NFTA_LOOKUP_SET, set);
                w.put_be32(NFTA_LOOKUP_SREG, *sreg);
                if let Some(d) = dreg {
                    w.put_be32(NFTA_LOOKUP_DREG, *d);
                }
                w.put_be32(NFTA_LOOKUP_FLAGS, if *invert { NFT_LOOKUP_F_INV } else { 0 });
            }
            Expr::Immediate { dreg, data } => {
                w.put_be32(NFTA_IMMEDIATE_DREG, *dreg);
                data.encode(w, NFTA_IMMEDIATE_DATA);
            }
            Expr::Nat {
                nat_type,
                family,
                addr,
                proto,
                flags,
            } => {
                w.put_be32(
                    NFTA_NAT_TYPE,
                    if *nat_type == NatType::Snat {
                        NFT_NAT_SNAT
                    } else {
                        NFT_NAT_DNAT
                    },
                );
                w.put_be32(NFTA_NAT_FAMILY, *family);
                if let Some((min, max)) = addr {
                    w.put_be32(NFTA_NAT_REG_ADDR_MIN, *min);
                    w.put_be32(NFTA_NAT_REG_ADDR_MAX, *max);
                }
                if let Some((min, max)) = proto {
                    w.put_be32(NFTA_NAT_REG_PROTO_MIN, *min);
                    w.put_be32(NFTA_NAT_REG_PROTO_MAX, *max);
                }
                if *flags != 0 {
                    w.put_be32(NFTA_NAT_FLAGS, *flags);
                }
            }
            Expr::Masq { flags, proto } | Expr::Redir { flags, proto } => {
                let (f, pmin, pmax) = match self {
                    Expr::Masq { .. } => (NFTA_MASQ_FLAGS, NFTA_MASQ_REG_PROTO_MIN, NFTA_MASQ_REG_PROTO_MAX),
                    _ => (
                        NFTA_REDIR_FLAGS,
                        NFTA_REDIR_REG_PROTO_MIN,
                        NFTA_REDIR_REG_PROTO_MAX,
                    ),
                };
                if *flags != 0 {
                    w.put_be32(f, *flags);
                }
                if let Some((min, max)) = proto {
                    w.put_be32(pmin, *min);
                    w.put_be32(pmax, *max);
                }
            }
            Expr::Numgen {
                dreg,
                modulus,
                random,
                offset,
            } => {
                w.put_be32(NFTA_NG_DREG, *dreg);
                w.put_be32(NFTA_NG_MODULUS, *modulus);
                w.put_be32(
                    NFTA_NG_TYPE,
                    if *random {
                        NFT_NG_RANDOM
                    } else {
                        NFT_NG_INCREMENTAL
                    },
                );
                w.put_be32(NFTA_NG_OFFSET, *offset);
            }
            Expr::Jhash {
                sreg,
                dreg,
                len,
                modulus,
                seed,
                offset,
            } => {
                w.put_be32(NFTA_HASH_SREG, *sreg);
                w.put_be32(NFTA_HASH_DREG, *dreg);
                w.put_be32(NFTA_HASH_LEN, *len);
                w.put_be32(NFTA_HASH_MODULUS, *modulus);
                if let Some(s) = seed {
                    w.put_be32(NFTA_HASH_SEED, *s);
                }
                if *offset != 0 {
                    w.put_be32(NFTA_HASH_OFFSET, *offset);
                }
                w.put_be32(NFTA_HASH_TYPE, NFT_HASH_JENKINS);
            }
            Expr::Symhash {
                dreg,
                modulus,
                offset,
            } => {
                w.put_be32(NFTA_HASH_DREG, *dreg);
                w.put_be32(NFTA_HASH_MODULUS, *modulus);
                if *offset != 0 {
                    w.put_be32(NFTA_HASH_OFFSET, *offset);
                }
                w.put_be32(NFTA_HASH_TYPE, NFT_HASH_SYM);
            }
            Expr::Ct { key, dreg, dir } => {
                w.put_be32(NFTA_CT_KEY, *key);
                w.put_be32(NFTA_CT_DREG, *dreg);
                if let Some(d) = dir {
                    w.put_u8(NFTA_CT_DIRECTION, *d);
                }
            }
            Expr::CtSet { key, sreg, dir } => {
                w.put_be32(NFTA_CT_KEY, *key);
                w.put_be32(NFTA_CT_SREG, *sreg);
                if let Some(d) = dir {
                    w.put_u8(NFTA_CT_DIRECTION, *d);
                }
            }
            Expr::Dynset {
                set,
                op,
                sreg_key,
                sreg_data,
                timeout_ms,
                exprs,
            } => {
                w.put_str(NFTA_DYNSET_SET_NAME, set);
                w.put_be32(
                    NFTA_DYNSET_OP,
                    match op {
                        DynsetOp::Add => NFT_DYNSET_OP_ADD,
                        DynsetOp::Update => NFT_DYNSET_OP_UPDATE,
                        DynsetOp::Delete => NFT_DYNSET_OP_DELETE,
                    },
                );
                w.put_be32(NFTA_DYNSET_SREG_KEY, *sreg_key);
                if let Some(d) = sreg_data {
                    w.put_be32(NFTA_DYNSET_SREG_DATA, *d);
                }
                if let Some(t) = timeout_ms {
                    w.put_be64(NFTA_DYNSET_TIMEOUT, *t);
                }
                match exprs.as_slice() {
                    [] => {}
                    [one] => w.nest(NFTA_DYNSET_EXPR, |w| one.encode(w)),
                    many => {
                        w.put_be32(NFTA_DYNSET_FLAGS, NFT_DYNSET_F_EXPR);
                        Expr::encode_list(many, w, NFTA_DYNSET_EXPRESSIONS);
                    }
                }
            }
            Expr::Counter { packets, bytes } => {
                w.put_be64(NFTA_COUNTER_BYTES, *bytes);
                w.put_be64(NFTA_COUNTER_PACKETS, *packets);
            }
            Expr::Limit(l) => l.encode(w),
            Expr::Connlimit { count, over } => {
                w.put_be32(NFTA_CONNLIMIT_COUNT, *count);
                w.put_be32(NFTA_CONNLIMIT_FLAGS, if *over { NFT_CONNLIMIT_F_INV } else { 0 });
            }
            Expr::Quota {
                bytes,
                consumed,
                over,
            } => {
                w.put_be64(NFTA_QUOTA_BYTES, *bytes);
                w.put_be32(NFTA_QUOTA_FLAGS, if *over { NFT_QUOTA_F_INV } else { 0 });
                w.put_be64(NFTA_QUOTA_CONSUMED, *consumed);
            }
            Expr::Reject(r) => match r {
                Reject::Icmp(code) => {
                    w.put_be32(NFTA_REJECT_TYPE, NFT_REJECT_ICMP_UNREACH);
                    w.put_u8(NFTA_REJECT_ICMP_CODE, *code);
                }
                Reject::TcpRst => w.put_be32(NFTA_REJECT_TYPE, NFT_REJECT_TCP_RST),
                Reject::Icmpx(code) => {
                    w.put_be32(NFTA_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH);
                    w.put_u8(NFTA_REJECT_ICMP_CODE, *code);
                }
            },
            Expr::Log {
                prefix,
                group,
                snaplen,
                qthreshold,
                level,
                flags,
            } => {
                if let Some(p) = prefix {
                    w.put_str(NFTA_LOG_PREFIX, p);
                }
                if let Some(g) = group {
                    w.put_be16(NFTA_LOG_GROUP, *g);
                }
                if let Some(s) = snaplen {
                    w.put_be32(NFTA_LOG_SNAPLEN, *s);
                }
                if let Some(q) = qthreshold {
                    w.put_be16(NFTA_LOG_QTHRESHOLD, *q);
                }
                if let Some(l) = level {
                    w.put_be32(NFTA_LOG_LEVEL, *l);
                }
                if *flags != 0 {
                    w.put_be32(NFTA_LOG_FLAGS, *flags);
                }
            }
            Expr::Queue { num, total, flags } => {
                w.put_be16(NFTA_QUEUE_NUM, *num);
                w.put_be16(NFTA_QUEUE_TOTAL, *total);
                w.put_be16(NFTA_QUEUE_FLAGS, *flags);
            }
            Expr::Dup { sreg_addr, sreg_dev } => {
                w.put_be32(NFTA_DUP_SREG_ADDR, *sreg_addr);
                if let Some(d) = sreg_dev {
                    w.put_be32(NFTA_DUP_SREG_DEV, *d);
                }
            }
            Expr::Fwd { sreg_dev, addr } => {
                w.put_be32(NFTA_FWD_SREG_DEV, *sreg_dev);
                if let Some((reg, nfproto)) = addr {
                    w.put_be32(NFTA_FWD_SREG_ADDR, *reg);
                    w.put_be32(NFTA_FWD_NFPROTO, *nfproto);
                }
            }
            Expr::Notrack => {}
            Expr::Objref { obj_type, name } => {
                w.put_be32(NFTA_OBJREF_IMM_TYPE, *obj_type);
                w.put_str(NFTA_OBJREF_IMM_NAME, name);
            }
            Expr::Fib { dreg, result, flags } => {
                w.put_be32(NFTA_FIB_DREG, *dreg);
                w.put_be32(NFTA_FIB_RESULT, *result);
                w.put_be32(NFTA_FIB_FLAGS, *flags);
            }
            Expr::Byteorder {
                sreg,
                dreg,
                hton,
                len,
                size,
            } => {
                w.put_be32(NFTA_BYTEORDER_SREG, *sreg);
                w.put_be32(NFTA_BYTEORDER_DREG, *dreg);
                w.put_be32(
                    NFTA_BYTEORDER_OP,
                    if *hton {
                        NFT_BYTEORDER_HTON
                    } else {
                        NFT_BYTEORDER_NTOH
                    },
                );
                w.put_be32(NFTA_BYTEORDER_LEN, *len);
                w.put_be32(NFTA_BYTEORDER_SIZE, *size);
            }
        }
    }

    // --- wire decoding ------------------------------------------------------------------------

    /// Decodes one `NFTA_LIST_ELEM` payload (NAME + DATA).
    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        let outer = Attrs::parse(b, "expression")?;
        let name = outer.string(NFTA_EXPR_NAME)?;
        let data = outer.get(NFTA_EXPR_DATA).unwrap_or_default();
        Self::decode_data(&name, data)
    }

    pub(crate) fn decode_list(b: &[u8]) -> Result<Vec<Self>> {
        AttrIter::new(b)
            .map(|a| a.and_then(|(_, e)| Expr::decode(e)))
            .collect()
    }

    fn decode_data(name: &str, data: &[u8]) -> Result<Self> {
        let what: &'static str = match name {
            "payload" => "payload expression",
            "meta" => "meta expression",
            "ct" => "ct expression",
            "hash" => "hash expression",
            _ => "expression",
        };
        let a = Attrs::parse(data, what)?;
        let pair = |min: u16, max: u16| -> Result<Option<(u32, u32)>> {
            Ok(match (a.opt_be32(min)?, a.opt_be32(max)?) {
                (Some(lo), hi) => Some((lo, hi.unwrap_or(lo))),
                _ => None,
            })
        };
        Ok(match name {
            "payload" => {
                let (base, offset, len) = (
                    a.be32(NFTA_PAYLOAD_BASE)?,
                    a.be32(NFTA_PAYLOAD_OFFSET)?,
                    a.be32(NFTA_PAYLOAD_LEN)?,
                );
                match a.opt_be32(NFTA_PAYLOAD_DREG)? {
                    Some(dreg) => Expr::Payload {
                        dreg,
                        base,
                        offset,
                        len,
                    },
                    None => Expr::PayloadSet {
                        sreg: a.be32(NFTA_PAYLOAD_SREG)?,
                        base,
                        offset,
                        len,
                        csum_type: a.opt_be32(NFTA_PAYLOAD_CSUM_TYPE)?.unwrap_or(0),
                        csum_offset: a.opt_be32(NFTA_PAYLOAD_CSUM_OFFSET)?.unwrap_or(0),
                        csum_flags: a.opt_be32(NFTA_PAYLOAD_CSUM_FLAGS)?.unwrap_or(0),
                    },
                }
            }
            "meta" => {
                let key = a.be32(NFTA_META_KEY)?;
                match a.opt_be32(NFTA_META_DREG)? {
                    Some(dreg) => Expr::Meta { key, dreg },
                    None => Expr::MetaSet {
                        key,
                        sreg: a.be32(NFTA_META_SREG)?,
                    },
                }
            }
            "cmp" => Expr::Cmp {
                sreg: a.be32(NFTA_CMP_SREG)?,
                op: CmpOp::from_raw(a.be32(NFTA_CMP_OP)?)?,
                data: Data::value(a.bytes(NFTA_CMP_DATA)?)?.into(),
            },
            "bitwise" => Expr::Bitwise {
                sreg: a.be32(NFTA_BITWISE_SREG)?,
                dreg: a.be32(NFTA_BITWISE_DREG)?,
                len: a.be32(NFTA_BITWISE_LEN)?,
                mask: Data::value(a.bytes(NFTA_BITWISE_MASK)?)?.into(),
                xor: Data::value(a.bytes(NFTA_BITWISE_XOR)?)?.into(),
            },
            "range" => Expr::Range {
                sreg: a.be32(NFTA_RANGE_SREG)?,
                op: CmpOp::from_raw(a.be32(NFTA_RANGE_OP)?)?,
                from: Data::value(a.bytes(NFTA_RANGE_FROM_DATA)?)?.into(),
                to: Data::value(a.bytes(NFTA_RANGE_TO_DATA)?)?.into(),
            },
            "lookup" => Expr::Lookup {
                set: a.string(NFTA_LOOKUP_SET)?,
                sreg: a.be32(NFTA_LOOKUP_SREG)?,
                dreg: a.opt_be32(NFTA_LOOKUP_DREG)?,
                invert: a.opt_be32(NFTA_LOOKUP_FLAGS)?.unwrap_or(0) & NFT_LOOKUP_F_INV != 0,
            },
            "immediate" => Expr::Immediate {
                dreg: a.be32(NFTA_IMMEDIATE_DREG)?,
                data: Data::decode(a.bytes(NFTA_IMMEDIATE_DATA)?)?,
            },
            "nat" => Expr::Nat {
                nat_type: if a.be32(NFTA_NAT_TYPE)? == NFT_NAT_SNAT {
                    NatType::Snat
                } else {
                    NatType::Dnat
                },
                family: a.be32(NFTA_NAT_FAMILY)?,
                addr: pair(NFTA_NAT_REG_ADDR_MIN, NFTA_NAT_REG_ADDR_MAX)?,
                proto: pair(NFTA_NAT_REG_PROTO_MIN, NFTA_NAT_REG_PROTO_MAX)?,
                flags: a.opt_be32(NFTA_NAT_FLAGS)?.unwrap_or(0),
            },
            "masq" => Expr::Masq {
                flags: a.opt_be32(NFTA_MASQ_FLAGS)?.unwrap_or(0),
                proto: pair(NFTA_MASQ_REG_PROTO_MIN, NFTA_MASQ_REG_PROTO_MAX)?,
            },
            "redir" => Expr::Redir {
                flags: a.opt_be32(NFTA_REDIR_FLAGS)?.unwrap_or(0),
                proto: pair(NFTA_REDIR_REG_PROTO_MIN, NFTA_REDIR_REG_PROTO_MAX)?,
            },
            "numgen" => Expr::Numgen {
                dreg: a.be32(NFTA_NG_DREG)?,
                modulus: a.be32(NFTA_NG_MODULUS)?,
                random: a.be32(NFTA_NG_TYPE)? == NFT_NG_RANDOM,
                offset: a.opt_be32(NFTA_NG_OFFSET)?.unwrap_or(0),
            },
            "hash" => {
                let dreg = a.be32(NFTA_HASH_DREG)?;
                let modulus = a.be32(NFTA_HASH_MODULUS)?;
                let offset = a.opt_be32(NFTA_HASH_OFFSET)?.unwrap_or(0);
                if a.opt_be32(NFTA_HASH_TYPE)? == Some(NFT_HASH_SYM) {
                    Expr::Symhash {
                        dreg,
                        modulus,
                        offset,
                    }
                } else {
                    Expr::Jhash {
                        sreg: a.be32(NFTA_HASH_SREG)?,
                        dreg,
                        len: a.be32(NFTA_HASH_LEN)?,
                        modulus,
                        seed: a.opt_be32(NFTA_HASH_SEED)?,
                        offset,
                    }
                }
            }
            "ct" => {
                let key = a.be32(NFTA_CT_KEY)?;
                let dir = a.opt_u8(NFTA_CT_DIRECTION)?;
                match a.opt_be32(NFTA_CT_DREG)? {
                    Some(dreg) => Expr::Ct { key, dreg, dir },
                    None => Expr::CtSet {
                        key,
                        sreg: a.be32(NFTA_CT_SREG)?,
                        dir,
                    },
                }
            }
            "dynset" => {
                let mut exprs = Vec::new();
                if let Some(e) = a.get(NFTA_DYNSET_EXPR) {
                    exprs.push(Expr::decode(e)?);
                }
                if let Some(l) = a.get(NFTA_DYNSET_EXPRESSIONS) {
                    exprs.extend(Expr::decode_list(l)?);
                }
                Expr::Dynset {
                    set: a.string(NFTA_DYNSET_SET_NAME)?,
                    op: match a.be32(NFTA_DYNSET_OP)? {
                        NFT_DYNSET_OP_ADD => DynsetOp::Add,
                        NFT_DYNSET_OP_UPDATE => DynsetOp::Update,
                        NFT_DYNSET_OP_DELETE => DynsetOp::Delete,
                        o => return Err(Error::decode(format!("unknown dynset op {o}"))),
                    },
                    sreg_key: a.be32(NFTA_DYNSET_SREG_KEY)?,
                    sreg_data: a.opt_be32(NFTA_DYNSET_SREG_DATA)?,
                    timeout_ms: a.opt_be64(NFTA_DYNSET_TIMEOUT)?.filter(|t| *t != 0),
                    exprs,
                }
            }
            "counter" => Expr::Counter {
                packets: a.opt_be64(NFTA_COUNTER_PACKETS)?.unwrap_or(0),
                bytes: a.opt_be64(NFTA_COUNTER_BYTES)?.unwrap_or(0),
            },
            "limit" => Expr::Limit(Limit::decode(&a)?),
            "connlimit" => Expr::Connlimit {
                count: a.be32(NFTA_CONNLIMIT_COUNT)?,
                over: a.opt_be32(NFTA_CONNLIMIT_FLAGS)?.unwrap_or(0) & NFT_CONNLIMIT_F_INV != 0,
            },
            "quota" => Expr::Quota {
                bytes: a.be64(NFTA_QUOTA_BYTES)?,
                consumed: a.opt_be64(NFTA_QUOTA_CONSUMED)?.unwrap_or(0),
                over: a.opt_be32(NFTA_QUOTA_FLAGS)?.unwrap_or(0) & NFT_QUOTA_F_INV != 0,
            },
            "reject" => {
                let code = a.opt_u8(NFTA_REJECT_ICMP_CODE)?.unwrap_or(0);
                Expr::Reject(match a.be32(NFTA_REJECT_TYPE)? {
                    NFT_REJECT_ICMP_UNREACH => Reject::Icmp(code),
                    NFT_REJECT_TCP_RST => Reject::TcpRst,
                    NFT_REJECT_ICMPX_UNREACH => Reject::Icmpx(code),
                    t => return Err(Error::decode(format!("unknown reject type {t}"))),
                })
            }
            "log" => Expr::Log {
                prefix: a.opt_string(NFTA_LOG_PREFIX)?,
                group: a.opt_be16(NFTA_LOG_GROUP)?,
                snaplen: a.opt_be32(NFTA_LOG_SNAPLEN)?,
                qthreshold: a.opt_be16(NFTA_LOG_QTHRESHOLD)?,
                level: a.opt_be32(NFTA_LOG_LEVEL)?,
                flags: a.opt_be32(NFTA_LOG_FLAGS)?.unwrap_or(0),
            },
            "queue" => Expr::Queue {
                num: a.opt_be16(NFTA_QUEUE_NUM)?.unwrap_or(0),
                total: a.opt_be16(NFTA_QUEUE_TOTAL)?.unwrap_or(1),
                flags: a.opt_be16(NFTA_QUEUE_FLAGS)?.unwrap_or(0),
            },
            "dup" => Expr::Dup {
                sreg_addr: a.be32(NFTA_DUP_SREG_ADDR)?,
                sreg_dev: a.opt_be32(NFTA_DUP_SREG_DEV)?,
            },
            "fwd" => Expr::Fwd {
                sreg_dev: a.be32(NFTA_FWD_SREG_DEV)?,
                addr: match a.opt_be32(NFTA_FWD_SREG_ADDR)? {
                    Some(r) => Some((r, a.be32(NFTA_FWD_NFPROTO)?)),
                    None => None,
                },
            },
            "notrack" => Expr::Notrack,
            "objref" => Expr::Objref {
                obj_type: a.be32(NFTA_OBJREF_IMM_TYPE)?,
                name: a.string(NFTA_OBJREF_IMM_NAME)?,
            },
            "fib" => Expr::Fib {
                dreg: a.be32(NFTA_FIB_DREG)?,
                result: a.be32(NFTA_FIB_RESULT)?,
                flags: a.opt_be32(NFTA_FIB_FLAGS)?.unwrap_or(0),
            },
            "byteorder" => Expr::Byteorder {
                sreg: a.be32(NFTA_BYTEORDER_SREG)?,
                dreg: a.be32(NFTA_BYTEORDER_DREG)?,
                hton: a.be32(NFTA_BYTEORDER_OP)? == NFT_BYTEORDER_HTON,
                len: a.be32(NFTA_BYTEORDER_LEN)?,
                size: a.be32(NFTA_BYTEORDER_SIZE)?,
            },
            other => {
                return Err(Error::decode(format!(
                    "expression type {other:?} is not supported"
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::data::Verdict;

    #[test]
    fn every_variant_round_trips_through_the_wire_format() {
        let exprs = vec![
            Expr::payload(PayloadField::IpSaddr, reg::R1),
            Expr::PayloadSet {
                sreg: 1,
                base: 1,
                offset: 16,
                len: 4,
                csum_type: 1,
                csum_offset: 10,
                csum_flags: 0,
            },
            Expr::meta(NFT_META_MARK, 1),
            Expr::MetaSet {
                key: NFT_META_MARK,
                sreg: 1,
            },
            Expr::cmp(1, CmpOp::Gte, vec![1, 2]),
            Expr::Bitwise {
                sreg: 1,
                dreg: 1,
                len: 4,
                mask: vec![0xff, 0, 0, 0],
                xor: vec![0; 4],
            },
            Expr::Range {
                sreg: 1,
                op: CmpOp::Eq,
                from: vec![0, 80],
                to: vec![0, 90],
            },
            Expr::Lookup {
                set: "s".into(),
                sreg: 1,
                dreg: Some(0),
                invert: true,
            },
            Expr::verdict(Verdict::Goto("c".into())),
            Expr::nat(NatType::Dnat, 2, Some((1, 1)), Some((9, 9)), 0),
            Expr::Masq {
                flags: 4,
                proto: None,
            },
            Expr::Redir {
                flags: 0,
                proto: Some((1, 1)),
            },
            Expr::Numgen {
                dreg: 1,
                modulus: 3,
                random: true,
                offset: 1,
            },
            Expr::Jhash {
                sreg: 1,
                dreg: 1,
                len: 8,
                modulus: 5,
                seed: Some(7),
                offset: 0,
            },
            Expr::Symhash {
                dreg: 1,
                modulus: 5,
                offset: 2,
            },
            Expr::Ct {
                key: NFT_CT_SRC,
                dreg: 1,
                dir: Some(0),
            },
            Expr::CtSet {
                key: NFT_CT_MARK,
                sreg: 1,
                dir: None,
            },
            Expr::Dynset {
                set: "d".into(),
                op: DynsetOp::Update,
                sreg_key: 1,
                sreg_data: None,
                timeout_ms: Some(1000),
                exprs: vec![Expr::counter(), Expr::Connlimit { count: 3, over: true }],
            },
            Expr::Limit(Limit {
                rate: 10,
                unit: RateUnit::Minute,
                burst: 5,
                bytes: false,
                over: true,
            }),
            Expr::Quota {
                bytes: 100,
                consumed: 0,
                over: false,
            },
            Expr::Reject(Reject::Icmpx(1)),
            Expr::Reject(Reject::TcpRst),
            Expr::log(Some("x ")),
            Expr::Queue {
                num: 1,
                total: 2,
                flags: 1,
            },
            Expr::Dup {
                sreg_addr: 1,
                sreg_dev: Some(2),
            },
            Expr::Fwd {
                sreg_dev: 1,
                addr: Some((2, 2)),
            },
            Expr::Notrack,
            Expr::Objref {
                obj_type: NFT_OBJECT_COUNTER,
                name: "c".into(),
            },
            Expr::Fib {
                dreg: 1,
                result: 1,
                flags: 2,
            },
        ];
        let mut w = AttrWriter::new();
        Expr::encode_list(&exprs, &mut w, 1);
        let outer = Attrs::parse(&w.buf, "t").unwrap();
        assert_eq!(Expr::decode_list(outer.bytes(1).unwrap()).unwrap(), exprs);
    }

    #[test]
    fn unknown_expression_is_a_decode_error() {
        let mut w = AttrWriter::new();
        w.put_str(NFTA_EXPR_NAME, "frobnicate");
        assert!(matches!(Expr::decode(&w.buf), Err(Error::Decode(_))));
    }
}
