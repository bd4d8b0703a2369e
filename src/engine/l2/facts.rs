//! What the host tells about layer-2 farms (interfaces, addresses, routes, neighbours), as plain
//! data, and what a farm resolves to from it. Discovery (`discover`) fills these facts; rendering
//! only reads them, so it is a pure function of the configuration and the facts.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::{Config, Farm};

use super::super::layout::is_l2;

/// An interface of the engine's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mac: [u8; 6],
}

/// What the host knows that layer-2 farms need. A fact that is missing was looked for and not
/// found (or not looked for, as nothing needed it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Interfaces by name.
    pub links: BTreeMap<String, Link>,
    /// A local address → the interface that has it.
    pub owners: BTreeMap<IpAddr, String>,
    /// A backend address → the interface the route to it leaves by.
    pub routes: BTreeMap<IpAddr, String>,
    /// (interface, address) → the MAC in that interface's neighbour table.
    pub neighbours: BTreeMap<(String, IpAddr), [u8; 6]>,
}

/// What a layer-2 farm resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub iface: String,
    pub input: Link,
    pub oface: String,
    pub output: Link,
    /// Backend name → MAC.
    pub macs: BTreeMap<String, [u8; 6]>,
}

/// A field of a farm that this host cannot resolve, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Unresolved {
    pub field: String,
    pub reason: String,
}

/// The interface a farm listens on: its `iface`, or the one that owns its first address.
pub(super) fn iface_of(farm: &Farm, facts: &HostFacts) -> Result<String, Unresolved> {
    let field = format!("farms[{}].iface", farm.name);
    match (&farm.iface, farm.virtual_addresses.first()) {
        (Some(i), _) => Ok(i.clone()),
        (None, Some(v)) => facts.owners.get(v).cloned().ok_or_else(|| Unresolved {
            field,
            reason: format!("no interface of this host has {v}; set iface"),
        }),
        (None, None) => Err(Unresolved {
            field,
            reason: "set iface".into(),
        }),
    }
}

/// The interface towards the backends: `oface`, the route to the first backend, or `iface`.
pub(super) fn oface_of(farm: &Farm, iface: &str, facts: &HostFacts) -> Result<String, Unresolved> {
    match (&farm.oface, farm.backends.first().map(|b| b.ip_addr)) {
        (Some(o), _) => Ok(o.clone()),
        (None, Some(b)) => facts.routes.get(&b).cloned().ok_or_else(|| Unresolved {
            field: format!("farms[{}].oface", farm.name),
            reason: format!("no route to backend {b} from this host; set oface"),
        }),
        (None, None) => Ok(iface.to_string()),
    }
}

fn link(farm: &Farm, key: &str, name: &str, facts: &HostFacts) -> Result<Link, Unresolved> {
    facts.links.get(name).copied().ok_or_else(|| Unresolved {
        field: format!("farms[{}].{key}", farm.name),
        reason: format!("no interface named {name:?} on this host"),
    })
}

/// Resolves a farm from the facts, or says which field cannot be and why (the first one, in the
/// order iface, oface, backends).
pub fn resolve(farm: &Farm, facts: &HostFacts) -> Result<Resolved, Unresolved> {
    let iface = iface_of(farm, facts)?;
    let input = link(farm, "iface", &iface, facts)?;
    let oface = oface_of(farm, &iface, facts)?;
    let output = link(farm, "oface", &oface, facts)?;
    let mut macs = BTreeMap::new();
    for b in &farm.backends {
        let mac = match b.ether_addr {
            Some(m) => m.0,
            None => *facts.neighbours.get(&(oface.clone(), b.ip_addr)).ok_or_else(|| {
                let how = if b.ip_addr.is_ipv6() {
                    "neighbour discovery"
                } else {
                    "ARP"
                };
                Unresolved {
                    field: format!("farms[{}].backends[{}].ether-addr", farm.name, b.name),
                    reason: format!("{} does not answer {how} on {oface}; set ether-addr", b.ip_addr),
                }
            })?,
        };
        macs.insert(b.name.clone(), mac);
    }
    Ok(Resolved {
        iface,
        input,
        oface,
        output,
        macs,
    })
}

/// Checks what layer-2 farms need that only the host can tell; the first problem, by field.
pub fn check(config: &Config, facts: &HostFacts) -> Result<(), Unresolved> {
    for f in config.farms.iter().filter(|f| is_l2(f)) {
        resolve(f, facts)?;
    }
    Ok(())
}
