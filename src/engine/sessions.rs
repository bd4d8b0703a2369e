//! Sessions of a farm with persistence: static ones (configuration, no expiry) and the ones the
//! datapath learnt (with their remaining time), read from the kernel's persistence maps.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{EtherAddr, Farm, KeyField, KeyValue};
use crate::netlink::types::concat;
use crate::netlink::{Batch, Connection, SetElem};

use super::alloc::FarmAlloc;
use super::layout::{FARM_MASK, MEMBER_MASK, TABLE, farm_tag, persist_set};
use super::render::IpFamily;

/// One session as API.md shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The persistence key's fields joined with `" . "` (the format static sessions use).
    pub client: String,
    /// The backend's name; `None` when it no longer exists (the session will be replaced).
    pub backend: Option<String>,
    /// Remaining lifetime of a learnt session; `None` for a static one.
    pub expires_ms: Option<u64>,
}

fn field_len(fam: IpFamily, f: KeyField) -> usize {
    match f {
        KeyField::Srcip | KeyField::Dstip if fam == IpFamily::V6 => 16,
        KeyField::Srcip | KeyField::Dstip => 4,
        KeyField::Srcport | KeyField::Dstport => 2,
        KeyField::Srcmac | KeyField::Dstmac => 6,
    }
}

/// Splits a persistence key (`tag . fields…`, each padded to 4 bytes) into the farm tag and values.
pub fn decode_key(fam: IpFamily, fields: &[KeyField], key: &[u8]) -> Option<(u32, Vec<KeyValue>)> {
    let tag = u32::from_ne_bytes(key.get(0..4)?.try_into().ok()?);
    let mut at = 4;
    let mut values = Vec::new();
    for f in fields {
        let len = field_len(fam, *f);
        let b = key.get(at..at + len)?;
        values.push(match f {
            KeyField::Srcip | KeyField::Dstip if len == 16 => {
                KeyValue::Ip(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?)))
            }
            KeyField::Srcip | KeyField::Dstip => {
                KeyValue::Ip(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?)))
            }
            KeyField::Srcport | KeyField::Dstport => KeyValue::Port(u16::from_be_bytes([b[0], b[1]])),
            KeyField::Srcmac | KeyField::Dstmac => KeyValue::Mac(EtherAddr(<[u8; 6]>::try_from(b).ok()?)),
        });
        at += len.div_ceil(4) * 4;
    }
    Some((tag, values))
}

/// The key bytes of a client of farm `id`.
pub fn encode_key(id: u16, values: &[KeyValue]) -> Vec<u8> {
    let mut parts: Vec<Vec<u8>> = vec![farm_tag(id).to_ne_bytes().to_vec()];
    for v in values {
        parts.push(match v {
            KeyValue::Ip(IpAddr::V4(a)) => a.octets().to_vec(),
            KeyValue::Ip(IpAddr::V6(a)) => a.octets().to_vec(),
            KeyValue::Port(p) => p.to_be_bytes().to_vec(),
            KeyValue::Mac(m) => m.0.to_vec(),
        });
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    concat(&refs)
}

pub fn format_client(values: &[KeyValue]) -> String {
    let parts: Vec<String> = values
        .iter()
        .map(|v| match v {
            KeyValue::Ip(ip) => ip.to_string(),
            KeyValue::Port(p) => p.to_string(),
            KeyValue::Mac(m) => m.to_string(),
        })
        .collect();
    parts.join(" . ")
}

/// The farm's persistence map elements in one family (static and learnt).
pub fn farm_elems(
    conn: &mut Connection,
    fam: IpFamily,
    farm: &Farm,
    fa: &FarmAlloc,
) -> crate::netlink::Result<Vec<(Vec<KeyValue>, SetElem)>> {
    let set = persist_set(&farm.persistence);
    let tables = conn.list_tables(Some(fam.family()))?;
    if !tables.iter().any(|t| t.name == TABLE)
        || !conn.list_sets(fam.family(), TABLE)?.iter().any(|s| s.name == set)
    {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in conn.list_elems(fam.family(), TABLE, &set)? {
        if let Some((tag, values)) = decode_key(fam, &farm.persistence, &e.key)
            && tag == farm_tag(fa.id)
        {
            out.push((values, e));
        }
    }
    Ok(out)
}

/// Lists the farm's sessions, static ones first as the kernel returns them.
pub fn list(conn: &mut Connection, farm: &Farm, fa: &FarmAlloc) -> crate::netlink::Result<Vec<SessionInfo>> {
    let names: std::collections::HashMap<u16, &str> =
        fa.members.iter().map(|(n, m)| (*m, n.as_str())).collect();
    let mut out = Vec::new();
    for fam in IpFamily::BOTH {
        for (values, e) in farm_elems(conn, fam, farm, fa)? {
            let bid = match &e.data {
                Some(crate::netlink::Data::Value(v)) if v.len() == 4 => {
                    u32::from_ne_bytes([v[0], v[1], v[2], v[3]])
                }
                _ => continue,
            };
            let backend = (bid & FARM_MASK == farm_tag(fa.id))
                .then(|| names.get(&((bid & MEMBER_MASK) as u16)).map(|n| n.to_string()))
                .flatten();
            out.push(SessionInfo {
                client: format_client(&values),
                backend,
                expires_ms: e.expires_ms.or(e.timeout_ms),
            });
        }
    }
    Ok(out)
}

/// Adds to `b` the deletion of the farm's learnt sessions (all, or the one of `client`).
pub fn delete_learnt(
    conn: &mut Connection,
    b: &mut Batch,
    farm: &Farm,
    fa: &FarmAlloc,
    client: Option<&[KeyValue]>,
) -> crate::netlink::Result<usize> {
    let mut n = 0;
    for fam in IpFamily::BOTH {
        let doomed: Vec<SetElem> = farm_elems(conn, fam, farm, fa)?
            .into_iter()
            .filter(|(v, e)| {
                (e.expires_ms.is_some() || e.timeout_ms.is_some()) && client.is_none_or(|c| c == v.as_slice())
            })
            .map(|(_, e)| SetElem::key(e.key))
            .collect();
        if !doomed.is_empty() {
            n += doomed.len();
            b.del_elems(fam.family(), TABLE, &persist_set(&farm.persistence), &doomed)?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let v = vec![
            KeyValue::Ip("2001:db8::7".parse().unwrap()),
            KeyValue::Port(4000),
            KeyValue::Mac("02:00:00:00:00:01".parse().unwrap()),
        ];
        let fields = [KeyField::Srcip, KeyField::Srcport, KeyField::Srcmac];
        let key = encode_key(9, &v);
        assert_eq!(key.len(), 4 + 16 + 4 + 8);
        assert_eq!(
            decode_key(IpFamily::V6, &fields, &key),
            Some((farm_tag(9), v.clone()))
        );
        assert_eq!(format_client(&v), "2001:db8::7 . 4000 . 02:00:00:00:00:01");
        assert_eq!(decode_key(IpFamily::V6, &fields, &key[..20]), None);
    }
}
