//! Sessions of a farm with persistence: static ones (configuration, no expiry) and the ones the
//! datapath learnt (with their remaining time), read from the kernel's persistence maps.

use crate::model::{Farm, KeyValue};
use crate::netlink::{Batch, Connection, SetElem};

use super::alloc::FarmAlloc;
use super::family::IpFamily;
use super::layout::{FARM_MASK, MEMBER_MASK, TABLE, farm_tag, persist_set};
use super::persist::{decode_key, format_client};

/// One session as the API shows it (docs/operations.md, ListSessions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The persistence key's fields joined with `" . "` (the format static sessions use).
    pub client: String,
    /// The backend's name; `None` when it no longer exists (the session will be replaced).
    pub backend: Option<String>,
    /// Remaining lifetime of a learnt session; `None` for a static one.
    pub expires_ms: Option<u64>,
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
                expires_ms: e.expires_ms().or(e.timeout_ms()),
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
                (e.expires_ms().is_some() || e.timeout_ms().is_some())
                    && client.is_none_or(|c| c == v.as_slice())
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
