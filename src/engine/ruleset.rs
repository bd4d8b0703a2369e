//! What the engine wants in one family's table, split so that a change costs O(change): the
//! shared skeleton (table, base chains, sets) and one part per farm (its chain and the elements
//! it contributes to shared sets). `diff` turns two states into one ordered batch.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rustc_hash::FxHashMap;

use crate::netlink::{Batch, Chain, Family, Obj, Result, Rule, Set, SetElem, Table};

use super::layout::TABLE;

/// A chain and its rules, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainDef {
    pub chain: Chain,
    pub rules: Vec<Rule>,
}

/// What one farm adds to a family's table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FarmPart {
    pub chain: Option<ChainDef>,
    /// More chains of the farm (log and refusal chains), by name.
    pub extra: Vec<ChainDef>,
    /// Set name → elements.
    pub elems: BTreeMap<String, Vec<SetElem>>,
}

/// Everything of one family's table.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyState {
    pub table: Table,
    pub sets: BTreeMap<String, Set>,
    /// Named objects (conntrack helpers), by name.
    pub objs: BTreeMap<String, Obj>,
    /// Base and shared chains, in creation order.
    pub chains: Vec<ChainDef>,
    /// Parts shared by several farms, by name: the port-range dispatch of one protocol and
    /// address (`ports-…`: its chain and its element in `service-addrs`), and the elements of
    /// each policy (`policy-…`).
    pub shared: BTreeMap<String, FarmPart>,
    pub farms: BTreeMap<String, FarmPart>,
}

impl FamilyState {
    pub fn family(&self) -> Family {
        self.table.family
    }
}

/// The identity of an element in its set: key and range end.
type ElemKey<'a> = (&'a [u8], Option<&'a [u8]>);

fn elem_key(e: &SetElem) -> ElemKey<'_> {
    (&e.key, e.key_end())
}

/// Element changes of one set: what to delete and what to add.
#[derive(Default)]
struct ElemDelta {
    del: Vec<SetElem>,
    add: Vec<SetElem>,
}

/// Compares two element lists of one set; an element whose value changed is deleted and re-added
/// in the same transaction. Only the differing elements are copied.
fn diff_elems(old: &[SetElem], new: &[SetElem], delta: &mut ElemDelta) {
    if old == new {
        return;
    }
    // Elements come in the same order on both sides when little changed: skip the common prefix
    // and suffix, and hash only the rest (a fast hash: keys are a few bytes).
    let head = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let (old, new) = (&old[head..], &new[head..]);
    let tail = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (old, new) = (&old[..old.len() - tail], &new[..new.len() - tail]);
    let old_by_key: FxHashMap<ElemKey, &SetElem> = old.iter().map(|e| (elem_key(e), e)).collect();
    let new_by_key: FxHashMap<ElemKey, &SetElem> = new.iter().map(|e| (elem_key(e), e)).collect();
    for e in old {
        if new_by_key.get(&elem_key(e)).is_none_or(|n| *n != e) {
            delta.del.push(e.clone());
        }
    }
    for e in new {
        if old_by_key.get(&elem_key(e)).is_none_or(|o| *o != e) {
            delta.add.push(e.clone());
        }
    }
}

/// The ordered steps of one transaction. Order matters to the kernel: chains must exist before
/// verdict elements point at them, elements must go before the chains they point at, rules that
/// bind a map are added before its elements (binding walks existing elements), and sets can only
/// be deleted once no rule uses them.
#[derive(Default)]
struct Steps {
    add_objs: Vec<Obj>,
    del_objs: Vec<Obj>,
    add_sets: Vec<Set>,
    add_chains: Vec<Chain>,
    elems: BTreeMap<String, ElemDelta>,
    /// Chains whose rules are replaced (flushed, then re-added) or newly filled.
    fill_chains: Vec<(bool, ChainDef)>,
    del_chains: Vec<Chain>,
    del_sets: Vec<String>,
}

fn part_elems(part: Option<&FarmPart>) -> impl Iterator<Item = (&String, &Vec<SetElem>)> {
    part.into_iter().flat_map(|p| p.elems.iter())
}

impl Steps {
    fn chain(&mut self, old: Option<&ChainDef>, new: Option<&ChainDef>) {
        match (old, new) {
            (None, Some(n)) => {
                self.add_chains.push(n.chain.clone());
                self.fill_chains.push((false, n.clone()));
            }
            (Some(o), None) => self.del_chains.push(o.chain.clone()),
            (Some(o), Some(n)) if o.chain != n.chain => {
                // A base chain's hook cannot change in place; farm chains never differ here.
                self.del_chains.push(o.chain.clone());
                self.add_chains.push(n.chain.clone());
                self.fill_chains.push((false, n.clone()));
            }
            (Some(o), Some(n)) if o.rules != n.rules => self.fill_chains.push((true, n.clone())),
            _ => {}
        }
    }

    fn farm(&mut self, old: Option<&FarmPart>, new: Option<&FarmPart>) {
        self.chain(
            old.and_then(|p| p.chain.as_ref()),
            new.and_then(|p| p.chain.as_ref()),
        );
        let extra = |p: Option<&FarmPart>| -> BTreeMap<String, ChainDef> {
            p.map(|p| {
                p.extra
                    .iter()
                    .map(|c| (c.chain.name.clone(), c.clone()))
                    .collect()
            })
            .unwrap_or_default()
        };
        let (o, n) = (extra(old), extra(new));
        for name in o.keys().chain(n.keys()).collect::<BTreeSet<_>>() {
            self.chain(o.get(name), n.get(name));
        }
        let names: BTreeSet<&String> = part_elems(old).chain(part_elems(new)).map(|(n, _)| n).collect();
        for name in names {
            let o = old
                .and_then(|p| p.elems.get(name))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let n = new
                .and_then(|p| p.elems.get(name))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            diff_elems(o, n, self.elems.entry(name.clone()).or_default());
        }
    }

    fn write(self, family: Family, b: &mut Batch) -> Result<()> {
        for o in &self.add_objs {
            b.add_obj(o)?;
        }
        for s in &self.add_sets {
            b.add_set(s)?;
        }
        for c in &self.add_chains {
            b.add_chain(c)?;
        }
        for (set, d) in &self.elems {
            if !d.del.is_empty() {
                b.del_elems(family, TABLE, set, &d.del)?;
            }
        }
        for (flush, c) in &self.fill_chains {
            if *flush {
                b.flush_chain(family, TABLE, &c.chain.name)?;
            }
            for r in &c.rules {
                b.add_rule(r)?;
            }
        }
        for (set, d) in &self.elems {
            if !d.add.is_empty() {
                b.add_elems(family, TABLE, set, &d.add)?;
            }
        }
        // Empty every doomed chain first: one may still jump to another.
        for c in &self.del_chains {
            b.flush_chain(family, TABLE, &c.name)?;
        }
        for c in &self.del_chains {
            b.del_chain(family, TABLE, &c.name)?;
        }
        for s in &self.del_sets {
            b.del_set(family, TABLE, s)?;
        }
        for o in &self.del_objs {
            b.del_obj(family, TABLE, o.kind.type_id(), &o.name)?;
        }
        Ok(())
    }
}

/// Appends to `b` what turns `old` into `new` for one family: every farm part present on either
/// side is compared (callers pass views holding only the farms that changed).
///
/// `old` may hold a set whose definition differs from the one wanted under the same name only
/// when it was read from the kernel (a foreign change); sets cannot be changed in place, so with
/// `complete` (both sides hold every farm) the whole table is rebuilt in the same transaction.
/// Without it the conflict is an error.
pub fn diff(
    old: Option<&FamilyState>,
    new: Option<&FamilyState>,
    complete: bool,
    b: &mut Batch,
) -> Result<()> {
    let none = BTreeMap::new();
    let pairs = |pick: fn(&FamilyState) -> &BTreeMap<String, FarmPart>| {
        let o = old.map(pick).unwrap_or(&none);
        let n = new.map(pick).unwrap_or(&none);
        let names: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
        names.into_iter().map(move |k| (o.get(k), n.get(k)))
    };
    // Port dispatch first: its chains point at farm chains, so they must go before them.
    let parts = pairs(|s| &s.shared).chain(pairs(|s| &s.farms));
    diff_parts(old, new, parts, complete, b)
}

/// Like [`diff`], but the farm parts to compare are given (old, new) instead of taken from the
/// states, whose own `farms` are then ignored: a change compares only the farms it touches.
pub fn diff_parts<'a>(
    old: Option<&FamilyState>,
    new: Option<&FamilyState>,
    parts: impl Iterator<Item = (Option<&'a FarmPart>, Option<&'a FarmPart>)>,
    complete: bool,
    b: &mut Batch,
) -> Result<()> {
    let family = match (old, new) {
        (_, Some(n)) => n.family(),
        (Some(o), None) => {
            // The family has no farm left: the whole table goes.
            b.del_table(o.family(), TABLE)?;
            return Ok(());
        }
        (None, None) => return Ok(()),
    };
    let new = new.expect("matched above");
    // Sets and objects cannot be changed in place, and the engine never renders two definitions
    // under one name: a differing definition is a foreign change. With the whole table known it
    // is rebuilt in the same transaction; otherwise it is an error.
    let conflict = old.and_then(|o| {
        let set = o
            .sets
            .iter()
            .find(|(n, s)| new.sets.get(*n).is_some_and(|x| x != *s));
        let obj = o
            .objs
            .iter()
            .find(|(n, x)| new.objs.get(*n).is_some_and(|y| y != *x));
        set.map(|(n, _)| format!("set {n}"))
            .or(obj.map(|(n, _)| format!("object {n}")))
    });
    if let Some(what) = conflict {
        if !complete {
            return Err(crate::netlink::Error::Invalid(format!(
                "{what} would change its definition; reconcile the whole table instead"
            )));
        }
        b.del_table(family, TABLE)?;
        return diff(None, Some(new), true, b);
    }
    let mut steps = Steps::default();
    match old {
        None => b.add_table(&new.table)?,
        Some(o) if o.table.flags != new.table.flags => b.add_table(&new.table)?,
        _ => {}
    }
    let empty = BTreeMap::new();
    let old_sets = old.map(|o| &o.sets).unwrap_or(&empty);
    for (name, s) in &new.sets {
        if !old_sets.contains_key(name) {
            steps.add_sets.push(s.clone());
        }
    }
    for name in old_sets.keys().filter(|n| !new.sets.contains_key(*n)) {
        steps.del_sets.push(name.clone());
    }
    // Objects come and go like sets (a changed definition was handled above).
    let no_objs = BTreeMap::new();
    let old_objs = old.map(|o| &o.objs).unwrap_or(&no_objs);
    for (name, o) in &new.objs {
        if !old_objs.contains_key(name) {
            steps.add_objs.push(o.clone());
        }
    }
    for (name, o) in old_objs {
        if !new.objs.contains_key(name) {
            steps.del_objs.push(o.clone());
        }
    }
    let old_chains: HashMap<&str, &ChainDef> = old
        .map(|o| o.chains.iter().map(|c| (c.chain.name.as_str(), c)).collect())
        .unwrap_or_default();
    for c in &new.chains {
        steps.chain(old_chains.get(c.chain.name.as_str()).copied(), Some(c));
    }
    if let Some(o) = old {
        let wanted: HashSet<&str> = new.chains.iter().map(|c| c.chain.name.as_str()).collect();
        for c in o
            .chains
            .iter()
            .filter(|c| !wanted.contains(c.chain.name.as_str()))
        {
            steps.chain(Some(c), None);
        }
    }
    for (o, n) in parts {
        steps.farm(o, n);
    }
    steps.write(family, b)
}
