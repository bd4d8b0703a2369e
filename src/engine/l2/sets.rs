//! The sets and maps of the `netdev nftlbd` table.

use crate::model::KeyField;
use crate::netlink::sys::*;
use crate::netlink::*;

use super::super::family::IpFamily;
use super::super::layout::{LIMIT_SIZE, PERSIST_SIZE, TABLE, l2_persist_set};

const F: Family = Family::Netdev;

/// A slot map of a shard: slot → backend MAC (dsr) or backend address (stlsdnat).
pub(super) fn slot_map(name: &str, data: DataType, data_typeof: PayloadField) -> Set {
    let mut s = Set::map(
        F,
        TABLE,
        name,
        TypeSpec::of(DataType::Integer(4)),
        TypeSpec::of(data),
    );
    s.userdata.key_typeof = Some(Typeof::Numgen {
        random: false,
        modulus: 2,
        offset: 0,
    });
    s.userdata.data_typeof = Some(Typeof::Payload(data_typeof));
    s
}

/// The persistence map of a key kind: VIP . fields → backend MAC (dsr) or address (stlsdnat).
pub(super) fn persist_map(stateless: bool, fam: IpFamily, keys: &[KeyField]) -> Set {
    let mut fields = vec![fam.addr_type()];
    fields.extend(keys.iter().map(|k| match k {
        KeyField::Srcip | KeyField::Dstip => fam.addr_type(),
        KeyField::Srcport | KeyField::Dstport => DataType::InetService,
        KeyField::Srcmac | KeyField::Dstmac => DataType::EtherAddr,
    }));
    let key = if fields.len() <= 5 {
        TypeSpec::concat(&fields)
    } else {
        TypeSpec::of(DataType::Integer(
            fields.iter().map(|f| types::reg_len(f.byte_len())).sum(),
        ))
    };
    let data = if stateless {
        fam.addr_type()
    } else {
        DataType::EtherAddr
    };
    let name = l2_persist_set(stateless, fam.is_v6(), keys);
    let mut s = Set::map(F, TABLE, &name, key, TypeSpec::of(data)).with_flags(NFT_SET_TIMEOUT | NFT_SET_EVAL);
    s.userdata.data_byteorder = Some(TypeSpec::of(data).byteorder());
    s.size = Some(PERSIST_SIZE);
    s
}

/// A farm's per-backend counters, keyed by what the datapath knows the backend by.
pub(super) fn traffic_set(name: &str, key: DataType) -> Set {
    let mut set = Set::new(F, TABLE, name, TypeSpec::of(key)).with_flags(NFT_SET_EVAL);
    set.size = Some(65_536);
    set.exprs = vec![Expr::counter()];
    set
}

/// A dispatch map: key → verdict.
pub(super) fn verdict_map(name: &str, key: TypeSpec) -> Set {
    Set::map(F, TABLE, name, key, TypeSpec::of(DataType::Verdict))
}

/// A memory the datapath fills (flows, clients' MACs), entries expiring.
pub(super) fn memory(name: &str, key: TypeSpec, data: DataType) -> Set {
    let mut s = Set::map(F, TABLE, name, key, TypeSpec::of(data)).with_flags(NFT_SET_TIMEOUT | NFT_SET_EVAL);
    s.size = Some(LIMIT_SIZE);
    s
}

/// A constant map from an address.
pub(super) fn addr_map(name: &str, fam: IpFamily, data: DataType) -> Set {
    Set::map(F, TABLE, name, TypeSpec::of(fam.addr_type()), TypeSpec::of(data))
}

/// A named counter.
pub(super) fn counter(name: &str) -> Obj {
    Obj {
        family: F,
        table: TABLE.into(),
        name: name.to_string(),
        handle: None,
        kind: ObjKind::Counter { packets: 0, bytes: 0 },
    }
}
