//! Counters read from the kernel: per element of a policy's set (`Policy.GetCounters`, docs/dbus.md),
//! and the traffic of a farm or a backend (`Packets`, `Bytes`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{Policy, PolicyFamily};
use crate::netlink::sys::NFT_OBJECT_COUNTER;
use crate::netlink::{Connection, DataType, Expr, Family, Obj, ObjKind, Result, Set, TypeSpec};

use super::layout::{SET_TRAFFIC, TABLE, policy_set};

/// The set whose elements count traffic: farm tags and backend ids, each with a counter.
pub fn traffic_set(family: Family) -> Set {
    let mut s = Set::new(family, TABLE, SET_TRAFFIC, TypeSpec::of(DataType::Mark));
    s.exprs = vec![Expr::counter()];
    s
}

/// (packets, bytes) of a layer-2 farm: its named counter.
pub fn l2_traffic(conn: &mut Connection, farm_id: u16) -> Result<(u64, u64)> {
    let name = super::layout::l2_counter(farm_id);
    Ok(
        match conn.get_obj(Family::Netdev, TABLE, NFT_OBJECT_COUNTER, &name)? {
            Some(Obj {
                kind: ObjKind::Counter { packets, bytes },
                ..
            }) => (packets, bytes),
            _ => (0, 0),
        },
    )
}

/// Every element of `@traffic` in the IPv4 and IPv6 tables (farm tags and backend ids), summed:
/// one dump per family, for reading a whole farm at once.
pub fn traffic_all(conn: &mut Connection) -> Result<std::collections::HashMap<u32, (u64, u64)>> {
    let mut all = std::collections::HashMap::new();
    for family in [Family::Ip, Family::Ip6] {
        if !conn.list_tables(Some(family))?.iter().any(|t| t.name == TABLE) {
            continue;
        }
        for e in conn.list_elems(family, TABLE, SET_TRAFFIC)? {
            let Ok(key) = <[u8; 4]>::try_from(e.key.as_slice()) else {
                continue;
            };
            let sum: &mut (u64, u64) = all.entry(u32::from_ne_bytes(key)).or_default();
            for x in e.exprs() {
                if let Expr::Counter { packets, bytes } = x {
                    sum.0 += packets;
                    sum.1 += bytes;
                }
            }
        }
    }
    Ok(all)
}

/// (packets, bytes) of one element of a counting set; (0, 0) when it (or the set) is not there.
pub fn element_traffic(conn: &mut Connection, family: Family, set: &str, key: &[u8]) -> Result<(u64, u64)> {
    let mut sum = (0, 0);
    if let Some(e) = conn.get_elem(family, TABLE, set, key)? {
        for x in e.exprs() {
            if let Expr::Counter { packets, bytes } = x {
                sum.0 += packets;
                sum.1 += bytes;
            }
        }
    }
    Ok(sum)
}

/// (packets, bytes) of the connections of one farm (`key` is its tag) or backend (its id), summed
/// over the IPv4 and IPv6 tables: two lookups by key, whatever the number of farms.
pub fn traffic(conn: &mut Connection, key: u32) -> Result<(u64, u64)> {
    let mut sum = (0, 0);
    for family in [Family::Ip, Family::Ip6] {
        let (p, b) = element_traffic(conn, family, SET_TRAFFIC, &key.to_ne_bytes())?;
        sum = (sum.0 + p, sum.1 + b);
    }
    Ok(sum)
}

/// (element as `a` or `a-b`, packets, bytes) for every merged range of the policy: the sum of
/// its set in the NAT table of its family and its copy in the layer-2 table.
pub fn read(conn: &mut Connection, p: &Policy) -> Result<Vec<(String, u64, u64)>> {
    let nat = if p.family == PolicyFamily::Ipv6 {
        Family::Ip6
    } else {
        Family::Ip
    };
    let mut sum: Vec<(String, u64, u64)> = Vec::new();
    let mut at = std::collections::HashMap::new();
    for family in [nat, Family::Netdev] {
        for (text, packets, bytes) in read_in(conn, family, p)? {
            match at.get(&text) {
                Some(&i) => {
                    let x: &mut (String, u64, u64) = &mut sum[i];
                    x.1 += packets;
                    x.2 += bytes;
                }
                None => {
                    at.insert(text.clone(), sum.len());
                    sum.push((text, packets, bytes));
                }
            }
        }
    }
    Ok(sum)
}

fn read_in(conn: &mut Connection, family: Family, p: &Policy) -> Result<Vec<(String, u64, u64)>> {
    let set = policy_set(&p.name);
    if !conn.list_tables(Some(family))?.iter().any(|t| t.name == TABLE)
        || !conn.list_sets(family, TABLE)?.iter().any(|s| s.name == set)
    {
        return Ok(Vec::new());
    }
    let mut elems = conn.list_elems(family, TABLE, &set)?;
    elems.sort_by(|a, b| a.key.cmp(&b.key));
    let addr = |k: &[u8]| -> Option<IpAddr> {
        Some(match k.len() {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(k).ok()?)),
            16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(k).ok()?)),
            _ => return None,
        })
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < elems.len() {
        let e = &elems[i];
        i += 1;
        if e.interval_end {
            continue;
        }
        let Some(first) = addr(&e.key) else { continue };
        // The range ends just before the next interval end (or at the top of the space).
        let last = match elems.get(i).filter(|n| n.interval_end).and_then(|n| addr(&n.key)) {
            Some(IpAddr::V4(n)) => IpAddr::V4(Ipv4Addr::from(u32::from(n).wrapping_sub(1))),
            Some(IpAddr::V6(n)) => IpAddr::V6(Ipv6Addr::from(u128::from(n).wrapping_sub(1))),
            None if first.is_ipv4() => IpAddr::V4(Ipv4Addr::BROADCAST),
            None => IpAddr::V6(Ipv6Addr::from(u128::MAX)),
        };
        let (packets, bytes) = e
            .exprs()
            .iter()
            .find_map(|x| match x {
                Expr::Counter { packets, bytes } => Some((*packets, *bytes)),
                _ => None,
            })
            .unwrap_or((0, 0));
        let text = if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        };
        out.push((text, packets, bytes));
    }
    Ok(out)
}
