//! Counters read from the kernel: per element of a policy's set (`Policy.GetCounters`, docs/dbus.md),
//! and the traffic of a farm or a backend (`Packets`, `Bytes`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{Policy, PolicyFamily};
use crate::netlink::sys::NFT_OBJECT_COUNTER;
use crate::netlink::{Connection, DataType, Expr, Family, Obj, ObjKind, Result, Set, TypeSpec};

use super::layout::{SET_NEW_CONNS, SET_TRAFFIC, TABLE, policy_set};

/// What the kernel counted for a farm or a backend since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets of its connections, both directions.
    pub packets: u64,
    pub bytes: u64,
    /// Connections given to it (for a farm: to any of its backends).
    pub new_connections: u64,
}

impl Traffic {
    pub const fn new(packets: u64, bytes: u64, new_connections: u64) -> Self {
        Traffic {
            packets,
            bytes,
            new_connections,
        }
    }
}

/// The set whose elements count traffic: farm tags and backend ids, each with a counter.
pub fn traffic_set(family: Family) -> Set {
    counting_set(family, SET_TRAFFIC)
}

/// The set whose elements count the connections given to a farm or a backend: the same keys as
/// [`traffic_set`], looked up only where a new connection has got its backend.
pub fn new_conns_set(family: Family) -> Set {
    counting_set(family, SET_NEW_CONNS)
}

fn counting_set(family: Family, name: &str) -> Set {
    let mut s = Set::new(family, TABLE, name, TypeSpec::of(DataType::Mark));
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

/// Every element of `@traffic` and `@new-conns` in the IPv4 and IPv6 tables (farm tags and
/// backend ids), summed: one dump per set and family, for reading a whole farm at once.
pub fn traffic_all(conn: &mut Connection) -> Result<std::collections::HashMap<u32, Traffic>> {
    let mut all = std::collections::HashMap::new();
    for family in [Family::Ip, Family::Ip6] {
        let tables = conn.list_tables(Some(family))?;
        if !tables.iter().any(|t| t.name == TABLE) {
            continue;
        }
        for (set, new) in [(SET_TRAFFIC, false), (SET_NEW_CONNS, true)] {
            for e in conn.list_elems(family, TABLE, set)? {
                let Ok(key) = <[u8; 4]>::try_from(e.key.as_slice()) else {
                    continue;
                };
                let sum: &mut Traffic = all.entry(u32::from_ne_bytes(key)).or_default();
                for x in e.exprs() {
                    if let Expr::Counter { packets, bytes } = x {
                        if new {
                            // Counted once per connection: its packets are its connections.
                            sum.new_connections += packets;
                        } else {
                            sum.packets += packets;
                            sum.bytes += bytes;
                        }
                    }
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

/// What was counted for one farm (`key` is its tag) or backend (its id), summed over the IPv4 and
/// IPv6 tables: four lookups by key, whatever the number of farms.
pub fn traffic(conn: &mut Connection, key: u32) -> Result<Traffic> {
    let mut sum = Traffic::default();
    for family in [Family::Ip, Family::Ip6] {
        let (p, b) = element_traffic(conn, family, SET_TRAFFIC, &key.to_ne_bytes())?;
        let (n, _) = element_traffic(conn, family, SET_NEW_CONNS, &key.to_ne_bytes())?;
        sum.packets += p;
        sum.bytes += b;
        sum.new_connections += n;
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
