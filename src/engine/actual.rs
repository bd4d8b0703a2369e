//! Reading what is really in our tables, to reconcile at start-up and to repair foreign changes.
//! Both sides are compared flattened (all chains, all elements by set), because the kernel does
//! not know which farm an element belongs to.

use std::collections::BTreeMap;

use crate::netlink::sys::NFT_SET_EVAL;
use crate::netlink::{Connection, Family, Obj, Result, Set, SetElem, Table};

use super::layout::{PORTS_CHAIN_PREFIX, TABLE, chain_farm};
use super::ruleset::{ChainDef, FamilyState, FarmPart};

/// One state as a single part: every chain in `chains`, every element under one nameless farm.
pub fn flatten(state: &FamilyState) -> FamilyState {
    let mut chains = state.chains.clone();
    let mut elems: BTreeMap<String, Vec<SetElem>> = BTreeMap::new();
    for part in state.shared.values().chain(state.farms.values()) {
        chains.extend(part.chain.iter().cloned());
        chains.extend(part.extra.iter().cloned());
        for (set, e) in &part.elems {
            elems.entry(set.clone()).or_default().extend(e.iter().cloned());
        }
    }
    flat(
        state.table.clone(),
        state.sets.clone(),
        state.objs.clone(),
        chains,
        elems,
    )
}

/// A state with every chain in `chains` and every element under one nameless farm part.
fn flat(
    table: Table,
    sets: BTreeMap<String, Set>,
    objs: BTreeMap<String, Obj>,
    chains: Vec<ChainDef>,
    elems: BTreeMap<String, Vec<SetElem>>,
) -> FamilyState {
    let part = FarmPart {
        chain: None,
        extra: Vec::new(),
        elems,
    };
    FamilyState {
        table,
        sets,
        objs,
        chains,
        shared: BTreeMap::new(),
        farms: BTreeMap::from([(String::new(), part)]),
    }
}

/// Reads our table of one family, flattened; `None` if it does not exist. Elements that expire
/// (sessions learnt by the datapath) are runtime state, not configuration, and are left out.
pub fn read_family(conn: &mut Connection, family: Family) -> Result<Option<FamilyState>> {
    let Some(mut table) = conn
        .list_tables(Some(family))?
        .into_iter()
        .find(|t| t.name == TABLE)
    else {
        return Ok(None);
    };
    table.handle = None;
    table.owner = None;
    let mut rules_by_chain: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for mut r in conn.list_rules(family, TABLE, None)? {
        r.handle = None;
        rules_by_chain.entry(r.chain.clone()).or_default().push(r);
    }
    let mut chains = Vec::new();
    for mut c in conn.list_chains(family, TABLE)? {
        c.handle = None;
        let rules = rules_by_chain.remove(&c.name).unwrap_or_default();
        chains.push(ChainDef { chain: c, rules });
    }
    let mut sets = BTreeMap::new();
    let mut elems = BTreeMap::new();
    for mut s in conn.list_sets(family, TABLE)? {
        s.handle = None;
        // Sets the datapath fills (limits, connection counts) hold runtime state only.
        let mut e = if s.flags & NFT_SET_EVAL != 0 {
            Vec::new()
        } else {
            conn.list_elems(family, TABLE, &s.name)?
        };
        e.retain(|e| e.timeout_ms().is_none() && e.expires_ms().is_none());
        if !s.exprs.is_empty() {
            // Counters the set gives every element are runtime state, not configuration.
            for x in &mut e {
                x.clear_exprs();
            }
        }
        elems.insert(s.name.clone(), e);
        sets.insert(s.name.clone(), s);
    }
    // Base chains first, like the rendered state, so creation order matches.
    chains
        .sort_by_key(|c| chain_farm(&c.chain.name).is_some() || c.chain.name.starts_with(PORTS_CHAIN_PREFIX));
    let mut objs = BTreeMap::new();
    for mut o in conn.list_objs(family, TABLE, None, false)? {
        o.handle = None;
        // What a counter has counted is runtime state, not configuration.
        if let crate::netlink::ObjKind::Counter { packets, bytes } = &mut o.kind {
            (*packets, *bytes) = (0, 0);
        }
        objs.insert(o.name.clone(), o);
    }
    Ok(Some(flat(table, sets, objs, chains, elems)))
}
