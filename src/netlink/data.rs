//! Values carried by nf_tables objects: families, verdicts, data registers, hooks.

use super::attr::{AttrWriter, Attrs};
use super::bytes::Bytes;
use super::error::{Error, Result};
use super::sys::*;

/// Protocol family of a table (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Inet,
    Ip,
    Arp,
    Netdev,
    Bridge,
    Ip6,
}

impl Family {
    pub fn to_raw(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Arp => 3,
            Family::Netdev => 5,
            Family::Bridge => 7,
            Family::Ip6 => 10,
        }
    }

    pub fn from_raw(v: u8) -> Result<Self> {
        Ok(match v {
            1 => Family::Inet,
            2 => Family::Ip,
            3 => Family::Arp,
            5 => Family::Netdev,
            7 => Family::Bridge,
            10 => Family::Ip6,
            _ => return Err(Error::decode(format!("unknown family {v}"))),
        })
    }

    /// The name `nft` uses.
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Arp => "arp",
            Family::Netdev => "netdev",
            Family::Bridge => "bridge",
            Family::Ip6 => "ip6",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A rule verdict, or the data of a verdict map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Queue,
    Continue,
    Break,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => NF_DROP as i32,
            Verdict::Accept => NF_ACCEPT as i32,
            Verdict::Queue => NF_QUEUE as i32,
            Verdict::Continue => NFT_CONTINUE,
            Verdict::Break => NFT_BREAK,
            Verdict::Jump(_) => NFT_JUMP,
            Verdict::Goto(_) => NFT_GOTO,
            Verdict::Return => NFT_RETURN,
        }
    }

    pub(crate) fn encode(&self, w: &mut AttrWriter) {
        w.put_be32(NFTA_VERDICT_CODE, self.code() as u32);
        if let Verdict::Jump(c) | Verdict::Goto(c) = self {
            w.put_str(NFTA_VERDICT_CHAIN, c);
        }
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        let a = Attrs::parse(b, "verdict")?;
        let code = a.be32(NFTA_VERDICT_CODE)? as i32;
        let chain = || a.string(NFTA_VERDICT_CHAIN);
        Ok(match code {
            c if c == NF_DROP as i32 => Verdict::Drop,
            c if c == NF_ACCEPT as i32 => Verdict::Accept,
            c if c == NF_QUEUE as i32 => Verdict::Queue,
            NFT_CONTINUE => Verdict::Continue,
            NFT_BREAK => Verdict::Break,
            NFT_RETURN => Verdict::Return,
            NFT_JUMP => Verdict::Jump(chain()?),
            NFT_GOTO => Verdict::Goto(chain()?),
            c => return Err(Error::decode(format!("unknown verdict code {c}"))),
        })
    }

    /// Base chain policy: only accept and drop are valid.
    pub(crate) fn policy_code(&self) -> Result<u32> {
        match self {
            Verdict::Accept => Ok(NF_ACCEPT),
            Verdict::Drop => Ok(NF_DROP),
            v => Err(Error::Invalid(format!(
                "chain policy must be accept or drop, not {v:?}"
            ))),
        }
    }
}

/// Contents of an `NFTA_DATA_*` attribute: a value (at most 64 bytes) or a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Data {
    Value(Bytes),
    Verdict(Verdict),
}

impl Data {
    pub(crate) fn encode(&self, w: &mut AttrWriter, ty: u16) {
        match self {
            Data::Value(v) => Self::encode_value(w, ty, v),
            Data::Verdict(v) => w.nest(ty, |w| w.nest(NFTA_DATA_VERDICT, |w| v.encode(w))),
        }
    }

    /// Encodes `v` as [`Data::Value`] does, without making one.
    pub(crate) fn encode_value(w: &mut AttrWriter, ty: u16, v: &[u8]) {
        w.nest(ty, |w| w.put(NFTA_DATA_VALUE, v));
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        let a = Attrs::parse(b, "data")?;
        if let Some(v) = a.get(NFTA_DATA_VALUE) {
            Ok(Data::Value(v.into()))
        } else if let Some(v) = a.get(NFTA_DATA_VERDICT) {
            Ok(Data::Verdict(Verdict::decode(v)?))
        } else {
            Err(Error::decode("data attribute holds neither value nor verdict"))
        }
    }

    pub(crate) fn value(b: &[u8]) -> Result<Bytes> {
        match Data::decode(b)? {
            Data::Value(v) => Ok(v),
            Data::Verdict(v) => Err(Error::decode(format!("expected a value, got verdict {v:?}"))),
        }
    }

    pub fn value_len(&self) -> usize {
        match self {
            Data::Value(v) => v.len(),
            Data::Verdict(_) => 0,
        }
    }
}

/// Netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPoint {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Ingress,
    Egress,
}

impl HookPoint {
    pub(crate) fn to_raw(self, family: Family) -> u32 {
        match (family, self) {
            (Family::Netdev, HookPoint::Ingress) => 0,
            (Family::Netdev, HookPoint::Egress) => 1,
            (_, HookPoint::Prerouting) => NF_INET_PRE_ROUTING,
            (_, HookPoint::Input) => NF_INET_LOCAL_IN,
            (_, HookPoint::Forward) => NF_INET_FORWARD,
            (_, HookPoint::Output) => NF_INET_LOCAL_OUT,
            (_, HookPoint::Postrouting) => NF_INET_POST_ROUTING,
            (_, HookPoint::Ingress) => NF_INET_INGRESS,
            (_, HookPoint::Egress) => u32::MAX,
        }
    }

    pub(crate) fn from_raw(family: Family, v: u32) -> Result<Self> {
        Ok(match (family, v) {
            (Family::Netdev, 0) => HookPoint::Ingress,
            (Family::Netdev, 1) => HookPoint::Egress,
            (_, NF_INET_PRE_ROUTING) => HookPoint::Prerouting,
            (_, NF_INET_LOCAL_IN) => HookPoint::Input,
            (_, NF_INET_FORWARD) => HookPoint::Forward,
            (_, NF_INET_LOCAL_OUT) => HookPoint::Output,
            (_, NF_INET_POST_ROUTING) => HookPoint::Postrouting,
            (_, NF_INET_INGRESS) => HookPoint::Ingress,
            _ => return Err(Error::decode(format!("unknown hook {v} for family {family}"))),
        })
    }
}

/// The hook of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub point: HookPoint,
    pub priority: i32,
    /// Device for netdev (and inet ingress) chains.
    pub device: Option<String>,
}

impl Hook {
    /// A hook without a device (every family but netdev).
    pub fn new(point: HookPoint, priority: i32) -> Self {
        Self {
            point,
            priority,
            device: None,
        }
    }
}

/// Chain type of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

impl ChainType {
    pub fn name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }

    pub(crate) fn from_name(s: &str) -> Result<Self> {
        Ok(match s {
            "filter" => ChainType::Filter,
            "nat" => ChainType::Nat,
            "route" => ChainType::Route,
            _ => return Err(Error::decode(format!("unknown chain type {s:?}"))),
        })
    }
}
