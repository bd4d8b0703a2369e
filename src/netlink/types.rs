//! How `nft` knows what the bytes of a set key or map value mean: nft's data type ids and lengths
//! (`NFTA_SET_KEY_TYPE`/`NFTA_SET_DATA_TYPE`), and the set userdata (`NFTNL_UDATA_SET_*`) carrying
//! byte order and `typeof` expressions. The kernel ignores all of this; `nft list` and
//! `nft list ruleset | nft -f -` depend on it. Layouts were taken from `nft --debug=mnl` (nftables
//! 1.0.6) and are checked against nft in the kernel tests.

use super::error::{Error, Result};
use super::sys::*;

/// nft's data types (`enum datatypes` in nftables' datatype.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `integer` of the given byte length (from numgen, hash, meta…: host byte order).
    Integer(u32),
    Verdict,
    Ipv4Addr,
    Ipv6Addr,
    EtherAddr,
    InetProto,
    InetService,
    Mark,
    IfName,
    CtState,
}

impl DataType {
    pub fn id(self) -> u32 {
        match self {
            DataType::Integer(_) => 4,
            DataType::Verdict => NFT_DATA_VERDICT,
            DataType::Ipv4Addr => 7,
            DataType::Ipv6Addr => 8,
            DataType::EtherAddr => 9,
            DataType::InetProto => 12,
            DataType::InetService => 13,
            DataType::Mark => 19,
            DataType::IfName => 41,
            DataType::CtState => 26,
        }
    }

    /// Length in bytes of a value of this type.
    pub fn byte_len(self) -> u32 {
        match self {
            DataType::Integer(n) => n,
            DataType::Verdict => 0,
            DataType::Ipv4Addr => 4,
            DataType::Ipv6Addr => 16,
            DataType::EtherAddr => 6,
            DataType::InetProto => 1,
            DataType::InetService => 2,
            DataType::Mark | DataType::CtState => 4,
            DataType::IfName => 16,
        }
    }

    pub fn byteorder(self) -> ByteOrder {
        match self {
            DataType::Integer(_) | DataType::Mark | DataType::CtState | DataType::IfName => ByteOrder::Host,
            DataType::Verdict => ByteOrder::Invalid,
            _ => ByteOrder::Big,
        }
    }
}

/// Rounds a field length up to the 4-byte register size that concatenations use.
pub fn reg_len(len: u32) -> u32 {
    (len + 3) & !3
}

/// The type of a set key or map value: one data type or a concatenation of several.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TypeSpec {
    pub fields: Vec<DataType>,
}

impl TypeSpec {
    pub fn of(t: DataType) -> Self {
        Self { fields: vec![t] }
    }

    pub fn concat(fields: &[DataType]) -> Self {
        Self {
            fields: fields.to_vec(),
        }
    }

    /// The combined id: each component shifted by 6 bits, the first one most significant.
    pub fn id(&self) -> u32 {
        self.fields.iter().fold(0, |acc, t| (acc << 6) | t.id())
    }

    /// Total key length: a single field is its own length; concatenated fields are padded to 4 bytes.
    pub fn byte_len(&self) -> u32 {
        match self.fields.as_slice() {
            [one] => one.byte_len(),
            many => many.iter().map(|t| reg_len(t.byte_len())).sum(),
        }
    }

    /// Field lengths (unpadded) for `NFTA_SET_DESC_CONCAT`.
    pub fn field_lens(&self) -> Vec<u32> {
        self.fields.iter().map(|t| t.byte_len()).collect()
    }

    pub fn is_concat(&self) -> bool {
        self.fields.len() > 1
    }

    pub fn byteorder(&self) -> ByteOrder {
        match self.fields.as_slice() {
            [one] => one.byteorder(),
            _ => ByteOrder::Invalid,
        }
    }
}

/// Builds a concatenated key or value: each part padded with zeros to a 4-byte boundary.
pub fn concat(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parts.len() * 4);
    for p in parts {
        v.extend_from_slice(p);
        v.resize(reg_len(v.len() as u32) as usize, 0);
    }
    v
}

/// Byte order recorded in set userdata (`enum byteorder` in nftables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    Invalid,
    Host,
    Big,
}

impl ByteOrder {
    fn to_raw(self) -> u32 {
        match self {
            ByteOrder::Invalid => 0,
            ByteOrder::Host => 1,
            ByteOrder::Big => 2,
        }
    }

    fn from_raw(v: u32) -> Result<Self> {
        Ok(match v {
            0 => ByteOrder::Invalid,
            1 => ByteOrder::Host,
            2 => ByteOrder::Big,
            _ => return Err(Error::decode(format!("unknown byte order {v} in set userdata"))),
        })
    }
}

/// Header fields nft knows by (protocol description, template index) for `typeof`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadField {
    EtherDaddr,
    EtherSaddr,
    IpProtocol,
    IpSaddr,
    IpDaddr,
    Ip6Nexthdr,
    Ip6Saddr,
    Ip6Daddr,
    ThSport,
    ThDport,
    TcpSport,
    TcpDport,
    TcpFlags,
    UdpSport,
    UdpDport,
    SctpSport,
    SctpDport,
}

impl PayloadField {
    /// (base, offset, len) for the payload expression.
    pub fn location(self) -> (u32, u32, u32) {
        use PayloadField::*;
        let (ll, nh, th) = (
            NFT_PAYLOAD_LL_HEADER,
            NFT_PAYLOAD_NETWORK_HEADER,
            NFT_PAYLOAD_TRANSPORT_HEADER,
        );
        match self {
            EtherDaddr => (ll, 0, 6),
            EtherSaddr => (ll, 6, 6),
            IpProtocol => (nh, 9, 1),
            IpSaddr => (nh, 12, 4),
            IpDaddr => (nh, 16, 4),
            Ip6Nexthdr => (nh, 6, 1),
            Ip6Saddr => (nh, 8, 16),
            Ip6Daddr => (nh, 24, 16),
            ThSport | TcpSport | UdpSport | SctpSport => (th, 0, 2),
            ThDport | TcpDport | UdpDport | SctpDport => (th, 2, 2),
            TcpFlags => (th, 13, 1),
        }
    }

    /// (nft proto_desc id, template index).
    fn nft_desc(self) -> (u32, u32) {
        use PayloadField::*;
        const UDP: u32 = 6;
        const TCP: u32 = 8;
        const SCTP: u32 = 10;
        const TH: u32 = 11;
        const IP: u32 = 12;
        const IP6: u32 = 13;
        const ETHER: u32 = 17;
        match self {
            EtherDaddr => (ETHER, 1),
            EtherSaddr => (ETHER, 2),
            IpProtocol => (IP, 9),
            IpSaddr => (IP, 11),
            IpDaddr => (IP, 12),
            Ip6Nexthdr => (IP6, 6),
            Ip6Saddr => (IP6, 8),
            Ip6Daddr => (IP6, 9),
            ThSport => (TH, 1),
            ThDport => (TH, 2),
            TcpSport => (TCP, 1),
            TcpDport => (TCP, 2),
            TcpFlags => (TCP, 8),
            UdpSport => (UDP, 1),
            UdpDport => (UDP, 2),
            SctpSport => (SCTP, 1),
            SctpDport => (SCTP, 2),
        }
    }

    fn from_nft_desc(desc: u32, tmpl: u32) -> Option<Self> {
        use PayloadField::*;
        [
            EtherDaddr, EtherSaddr, IpProtocol, IpSaddr, IpDaddr, Ip6Nexthdr, Ip6Saddr, Ip6Daddr, ThSport,
            ThDport, TcpSport, TcpDport, TcpFlags, UdpSport, UdpDport, SctpSport, SctpDport,
        ]
        .into_iter()
        .find(|f| f.nft_desc() == (desc, tmpl))
    }
}

/// An expression recorded as a set's `typeof` (what `nft list` prints instead of a type name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Typeof {
    Payload(PayloadField),
    Meta { key: u32 },
    Ct { key: u32 },
    Numgen { random: bool, modulus: u32, offset: u32 },
    Symhash { modulus: u32, offset: u32 },
    Concat(Vec<Typeof>),
}

// nftables' `enum expr_types` values used by typeof userdata.
const EXPR_PAYLOAD: u32 = 7;
const EXPR_META: u32 = 9;
const EXPR_CT: u32 = 12;
const EXPR_CONCAT: u32 = 13;
const EXPR_NUMGEN: u32 = 23;
const EXPR_HASH: u32 = 24;

/// Userdata TLVs: one byte type, one byte length, value. Integers are host order.
#[derive(Default)]
struct Udata(Vec<u8>);

impl Udata {
    fn put(&mut self, ty: u8, v: &[u8]) {
        self.0.push(ty);
        self.0.push(v.len() as u8);
        self.0.extend_from_slice(v);
    }
    fn put_u32(&mut self, ty: u8, v: u32) {
        self.put(ty, &v.to_ne_bytes());
    }
}

fn udata_iter(mut b: &[u8]) -> impl Iterator<Item = Result<(u8, &[u8])>> {
    std::iter::from_fn(move || {
        if b.is_empty() {
            return None;
        }
        if b.len() < 2 || b.len() < 2 + b[1] as usize {
            b = &[];
            return Some(Err(Error::decode("truncated userdata")));
        }
        let (ty, len) = (b[0], b[1] as usize);
        let v = &b[2..2 + len];
        b = &b[2 + len..];
        Some(Ok((ty, v)))
    })
}

fn udata_u32(v: &[u8]) -> Result<u32> {
    v.try_into()
        .map(u32::from_ne_bytes)
        .map_err(|_| Error::decode("userdata integer of wrong size"))
}

fn udata_fields(b: &[u8]) -> Result<Vec<Option<&[u8]>>> {
    let mut out = Vec::new();
    for item in udata_iter(b) {
        let (ty, v) = item?;
        if out.len() <= ty as usize {
            out.resize(ty as usize + 1, None);
        }
        out[ty as usize] = Some(v);
    }
    Ok(out)
}

impl Typeof {
    fn encode(&self) -> Vec<u8> {
        let (ty, data) = match self {
            Typeof::Payload(f) => {
                let (desc, tmpl) = f.nft_desc();
                let mut d = Udata::default();
                d.put_u32(0, desc);
                d.put_u32(1, tmpl);
                (EXPR_PAYLOAD, d.0)
            }
            Typeof::Meta { key } => {
                let mut d = Udata::default();
                d.put_u32(0, *key);
                (EXPR_META, d.0)
            }
            Typeof::Ct { key } => {
                let mut d = Udata::default();
                d.put_u32(0, *key);
                d.put_u32(1, u32::MAX);
                (EXPR_CT, d.0)
            }
            Typeof::Numgen {
                random,
                modulus,
                offset,
            } => {
                let mut d = Udata::default();
                d.put_u32(0, *random as u32);
                d.put_u32(1, *modulus);
                d.put_u32(2, *offset);
                (EXPR_NUMGEN, d.0)
            }
            Typeof::Symhash { modulus, offset } => {
                let mut d = Udata::default();
                d.put_u32(0, NFT_HASH_SYM);
                d.put_u32(1, *offset);
                d.put_u32(2, *modulus);
                d.put_u32(3, 0);
                d.put_u32(4, 0);
                (EXPR_HASH, d.0)
            }
            Typeof::Concat(parts) => {
                let mut d = Udata::default();
                for (i, p) in parts.iter().enumerate() {
                    d.put(i as u8, &p.encode());
                }
                (EXPR_CONCAT, d.0)
            }
        };
        let mut u = Udata::default();
        u.put_u32(0, ty);
        u.put(1, &data);
        u.0
    }

    fn decode(b: &[u8]) -> Result<Self> {
        let f = udata_fields(b)?;
        let get = |f: &[Option<&[u8]>], i: usize| -> Result<u32> {
            udata_u32(
                f.get(i)
                    .copied()
                    .flatten()
                    .ok_or_else(|| Error::decode("typeof field missing"))?,
            )
        };
        let ty = get(&f, 0)?;
        let data = f.get(1).copied().flatten().unwrap_or_default();
        let d = udata_fields(data)?;
        Ok(match ty {
            EXPR_PAYLOAD => {
                let (desc, tmpl) = (get(&d, 0)?, get(&d, 1)?);
                Typeof::Payload(
                    PayloadField::from_nft_desc(desc, tmpl)
                        .ok_or_else(|| Error::decode(format!("typeof payload {desc}/{tmpl} not known")))?,
                )
            }
            EXPR_META => Typeof::Meta { key: get(&d, 0)? },
            EXPR_CT => Typeof::Ct { key: get(&d, 0)? },
            EXPR_NUMGEN => Typeof::Numgen {
                random: get(&d, 0)? == 1,
                modulus: get(&d, 1)?,
                offset: get(&d, 2)?,
            },
            EXPR_HASH => Typeof::Symhash {
                modulus: get(&d, 2)?,
                offset: get(&d, 1)?,
            },
            EXPR_CONCAT => Typeof::Concat(
                d.iter()
                    .flatten()
                    .map(|p| Typeof::decode(p))
                    .collect::<Result<_>>()?,
            ),
            t => return Err(Error::decode(format!("typeof expression type {t} not known"))),
        })
    }
}

/// The userdata nft attaches to a set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SetUserdata {
    pub key_byteorder: Option<ByteOrder>,
    pub data_byteorder: Option<ByteOrder>,
    /// `auto-merge` of interval sets.
    pub merge_elements: bool,
    pub key_typeof: Option<Typeof>,
    pub data_typeof: Option<Typeof>,
    pub comment: Option<String>,
}

const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_DATABYTEORDER: u8 = 1;
const UDATA_SET_MERGE_ELEMENTS: u8 = 2;
const UDATA_SET_KEY_TYPEOF: u8 = 3;
const UDATA_SET_DATA_TYPEOF: u8 = 4;
const UDATA_SET_COMMENT: u8 = 7;

impl SetUserdata {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut u = Udata::default();
        if let Some(b) = self.key_byteorder {
            u.put_u32(UDATA_SET_KEYBYTEORDER, b.to_raw());
        }
        if let Some(b) = self.data_byteorder {
            u.put_u32(UDATA_SET_DATABYTEORDER, b.to_raw());
        }
        if self.merge_elements {
            u.put_u32(UDATA_SET_MERGE_ELEMENTS, 1);
        }
        if let Some(t) = &self.key_typeof {
            u.put(UDATA_SET_KEY_TYPEOF, &t.encode());
        }
        if let Some(t) = &self.data_typeof {
            u.put(UDATA_SET_DATA_TYPEOF, &t.encode());
        }
        if let Some(c) = &self.comment {
            let mut v = c.as_bytes().to_vec();
            v.push(0);
            u.put(UDATA_SET_COMMENT, &v);
        }
        u.0
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut s = SetUserdata::default();
        for item in udata_iter(b) {
            let (ty, v) = item?;
            match ty {
                UDATA_SET_KEYBYTEORDER => s.key_byteorder = Some(ByteOrder::from_raw(udata_u32(v)?)?),
                UDATA_SET_DATABYTEORDER => s.data_byteorder = Some(ByteOrder::from_raw(udata_u32(v)?)?),
                UDATA_SET_MERGE_ELEMENTS => s.merge_elements = udata_u32(v)? != 0,
                UDATA_SET_KEY_TYPEOF => s.key_typeof = Some(Typeof::decode(v)?),
                UDATA_SET_DATA_TYPEOF => s.data_typeof = Some(Typeof::decode(v)?),
                UDATA_SET_COMMENT => {
                    let v = v.split(|c| *c == 0).next().unwrap_or_default();
                    s.comment = Some(String::from_utf8_lossy(v).into_owned());
                }
                _ => {} // written by a newer nft: kept out of the model
            }
        }
        Ok(s)
    }
}

/// Rule userdata: nft stores a rule's comment there.
pub fn rule_comment_encode(comment: &str) -> Vec<u8> {
    let mut u = Udata::default();
    let mut v = comment.as_bytes().to_vec();
    v.push(0);
    u.put(0, &v);
    u.0
}

pub fn rule_comment_decode(b: &[u8]) -> Result<Option<String>> {
    for item in udata_iter(b) {
        let (ty, v) = item?;
        if ty == 0 {
            let v = v.split(|c| *c == 0).next().unwrap_or_default();
            return Ok(Some(String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Byte strings below are what nft 1.0.6 writes for the same declarations (nft --debug=mnl).
    #[test]
    fn typeof_concat_matches_nft() {
        let u = SetUserdata {
            key_byteorder: Some(ByteOrder::Invalid),
            key_typeof: Some(Typeof::Concat(vec![
                Typeof::Payload(PayloadField::IpSaddr),
                Typeof::Payload(PayloadField::ThDport),
            ])),
            ..Default::default()
        };
        let nft = hex(
            "000400000000033400040d000000012c0014000407000000010c00040c00000001040b000000\
             0114000407000000010c00040b000000010402000000",
        );
        assert_eq!(u.encode(), nft);
        assert_eq!(SetUserdata::decode(&nft).unwrap(), u);
    }

    #[test]
    fn typeof_ct_numgen_symhash_match_nft() {
        let cases = [
            (
                Typeof::Ct { key: NFT_CT_MARK },
                ByteOrder::Host,
                "000401000000031400040c000000010c0004030000000104ffffffff",
            ),
            (
                Typeof::Numgen {
                    random: true,
                    modulus: 10,
                    offset: 5,
                },
                ByteOrder::Host,
                "000401000000031a000417000000011200040100000001040a000000020405000000",
            ),
            (
                Typeof::Symhash {
                    modulus: 4,
                    offset: 7,
                },
                ByteOrder::Host,
                "0004010000000326000418000000011e000401000000010407000000020404000000030400000000040400000000",
            ),
            (
                Typeof::Meta { key: NFT_META_MARK },
                ByteOrder::Host,
                "000401000000030e0004090000000106000403000000",
            ),
        ];
        for (t, bo, nft) in cases {
            let u = SetUserdata {
                key_byteorder: Some(bo),
                key_typeof: Some(t),
                ..Default::default()
            };
            assert_eq!(u.encode(), hex(nft), "{u:?}");
            assert_eq!(SetUserdata::decode(&hex(nft)).unwrap(), u);
        }
    }

    #[test]
    fn concat_types_and_values() {
        let t = TypeSpec::concat(&[DataType::InetProto, DataType::Ipv4Addr, DataType::InetService]);
        assert_eq!(t.id(), 0xc1cd);
        assert_eq!(t.byte_len(), 12);
        assert_eq!(
            concat(&[&[6], &[10, 0, 0, 1], &[0, 80]]),
            vec![6, 0, 0, 0, 10, 0, 0, 1, 0, 80, 0, 0]
        );
    }

    #[test]
    fn truncated_userdata_is_an_error() {
        assert!(SetUserdata::decode(&[3, 10, 0]).is_err());
    }
}
