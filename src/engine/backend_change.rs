//! A change to one backend of a NAT farm whose own keys stayed (its state, weight, priority,
//! address, or a backend added): worked out from that backend alone, so that it costs the same in
//! a farm of 10 backends or of 60,000. Its allocation moves only its slots
//! ([`FarmAlloc::change_backend`]), its elements are rendered alone ([`render::backend_elems`]),
//! and the farm's chains (O(1) in backends) are rendered again and compared.
//!
//! The farm's committed part then no longer lists every element: it is marked stale, and a later
//! change to the whole farm renders the old part again from the committed configuration.

use std::collections::BTreeMap;

use crate::model::{Backend, Farm, List, Mode, Policy, PriorityTiers};
use crate::netlink::SetElem;

use super::alloc::{FarmAlloc, SlotDelta};
use super::layout::{self, shard_of, slots_set};
use super::render::{self, IpFamily};
use super::ruleset::FarmPart;

/// One backend as it was and as it is; `None` before: it was added, after: removed.
pub(super) type Pair<'a> = (Option<&'a Backend>, Option<&'a Backend>);

/// The backends that changed between two versions of a farm, when the change can be followed
/// per backend: a NAT farm, the farm's own keys equal, entries changed in place (same name) and
/// appended, or one removed, and nothing that shared parts of the table count (marks,
/// connection limits, static sessions). Several only when no priority changes (each would
/// rebalance the farm). `None`: the farm is worked out whole.
pub(super) fn several<'a>(old: &'a Farm, new: &'a Farm) -> Option<Vec<Pair<'a>>> {
    if !followable(new) {
        return None;
    }
    let pairs = if new.backends.len() + 1 == old.backends.len() {
        // One removed: the lists agree before it and after it (the shared leaves compare by
        // pointer).
        let i = old.backends.first_difference(&new.backends);
        (old.backends.skip(i + 1) == new.backends.skip(i)).then(|| vec![(old.backends.get(i), None)])?
    } else {
        let changed = old.backends.differences(&new.backends)?;
        in_place(old, new, &changed)?
    };
    let pairs = checked(pairs)?;
    // Last, as it copies the farm's keys: O(1) in backends, but not free.
    (old.without_backends() == new.without_backends()).then_some(pairs)
}

/// [`several`] where the edit said what it touched (`Touched`): the backends replaced at
/// `changed` (equal ones left out) and any appended, or the one removed at `removed`. The
/// farm's own keys are known to have stayed; the lists are not compared.
pub(super) fn known<'a>(
    old: &'a Farm,
    new: &'a Farm,
    changed: &[usize],
    removed: Option<usize>,
) -> Option<Vec<Pair<'a>>> {
    if !followable(new) {
        return None;
    }
    let pairs = match removed {
        Some(i) => vec![(Some(old.backends.get(i)?), None)],
        None => {
            let changed: Vec<usize> = changed
                .iter()
                .copied()
                .filter(|i| old.backends.get(*i) != new.backends.get(*i))
                .collect();
            in_place(old, new, &changed)?
        }
    };
    // Nothing differs in this farm (an edit may replace a backend by an equal one).
    if pairs.is_empty() {
        return Some(pairs);
    }
    checked(pairs)
}

/// Whether the farm's backend changes can be followed one by one at all: a NAT farm without
/// static sessions.
fn followable(farm: &Farm) -> bool {
    !(layout::is_l2(farm) || farm.mode == Mode::Local || !farm.sessions.is_empty())
}

/// The pairs of backends replaced at `changed` (keeping their names) and appended after the old
/// ones.
fn in_place<'a>(old: &'a Farm, new: &'a Farm, changed: &[usize]) -> Option<Vec<Pair<'a>>> {
    let appended = old.backends.len()..new.backends.len();
    let mut pairs = Vec::with_capacity(changed.len() + appended.len());
    for i in changed {
        let (o, n) = (old.backends.get(*i)?, new.backends.get(*i)?);
        if o.name != n.name {
            return None;
        }
        pairs.push((Some(o), Some(n)));
    }
    pairs.extend(
        appended
            .filter_map(|i| new.backends.get(i))
            .map(|b| (None, Some(b))),
    );
    Some(pairs)
}

/// The pairs, unless one of them touches parts of the table the farm's backends share (marks,
/// connection limits), or several change and one of them its priority (each would rebalance the
/// farm), or there are none.
fn checked(pairs: Vec<Pair>) -> Option<Vec<Pair>> {
    let shared_parts = |b: &Backend| b.mark.is_some() || b.est_connlimit > 0;
    if pairs.is_empty()
        || pairs
            .iter()
            .any(|p| p.0.is_some_and(shared_parts) || p.1.is_some_and(shared_parts))
    {
        return None;
    }
    if pairs.len() > 1
        && pairs
            .iter()
            .any(|p| matches!(p, (Some(o), Some(n)) if o.priority != n.priority))
    {
        return None;
    }
    Some(pairs)
}

/// What undoes the allocation side of a per-backend change (a commit refused by the kernel).
pub(super) struct Undo {
    next_member: u16,
    added: Option<String>,
    removed: Option<(String, u16)>,
}

impl Undo {
    pub(super) fn take(fa: &FarmAlloc, pair: Pair) -> Undo {
        Undo {
            next_member: fa.next_member,
            added: pair.0.is_none().then(|| pair.1.map(|b| b.name.clone())).flatten(),
            removed: match pair {
                (Some(o), None) => fa.members.get(&o.name).map(|m| (o.name.clone(), *m)),
                _ => None,
            },
        }
    }

    /// Puts the allocation back as it was before the change that gave `delta`.
    pub(super) fn restore(self, fa: &mut FarmAlloc, delta: &SlotDelta) {
        delta.v4.undo(&mut fa.slots4);
        delta.v6.undo(&mut fa.slots6);
        fa.next_member = self.next_member;
        if let Some(name) = self.added {
            fa.members.remove(&name);
        }
        if let Some((name, member)) = self.removed {
            fa.members.insert(name, member);
        }
        fa.forget_index();
    }

    /// The member id of the backend the change removes.
    pub(super) fn removed_member(&self) -> Option<u16> {
        self.removed.as_ref().map(|r| r.1)
    }
}

/// The farm's weight before the change, and its effective priorities before and after, capped
/// at the highest priority a backend has (before or after): above it every tier is active alike,
/// and one backend down among equals (which brings in a tier nobody is in) moves no other
/// backend. `tiers` are the farm's before the change; they come back as they are after it.
pub(super) fn weight_and_priorities(tiers: &mut PriorityTiers, pair: Pair) -> (u64, u32, u32) {
    let (weight, before) = (tiers.weight(), tiers.effective());
    if let Some(o) = pair.0 {
        tiers.remove(o);
    }
    if let Some(n) = pair.1 {
        tiers.add(n);
    }
    let top = tiers.highest();
    (weight, before.min(top), tiers.effective().min(top))
}

/// The old and new sides of the change in one family, as two small farm parts: the farm's
/// chains (whole: a few rules) and only the elements the change touches. Compared by the usual
/// diff, they give the change's messages. `backends` are the changed backends, each with the
/// member id a removed one had; `delta` is their slot edits as one.
pub(super) fn parts(
    fam: IpFamily,
    committed: &FarmPart,
    (farm, fa): (&Farm, &FarmAlloc),
    policies: &List<Policy>,
    backends: &[(Pair, Option<u16>)],
    delta: &SlotDelta,
) -> (FarmPart, FarmPart) {
    let own = render::farm_own_part(fam, farm, fa, policies);
    let mut old = FarmPart {
        chain: committed.chain.clone(),
        extra: committed.extra.clone(),
        elems: BTreeMap::new(),
    };
    let mut new = FarmPart {
        chain: own.chain,
        extra: own.extra,
        elems: BTreeMap::new(),
    };
    for (pair, removed_member) in backends {
        if let Some(o) = pair.0 {
            // A removed backend no longer has its member id in the allocation: the one it had.
            match removed_member {
                Some(m) => render::member_elems(fam, farm, fa.id, *m, o, &mut |set, e| put(&mut old, set, e)),
                None => render::backend_elems(fam, farm, fa, o, &mut |set, e| put(&mut old, set, e)),
            }
        }
        if let Some(n) = pair.1 {
            render::backend_elems(fam, farm, fa, n, &mut |set, e| put(&mut new, set, e));
        }
    }
    let d = delta.family(fam.is_v6());
    let shard = slots_set(shard_of(fa.id));
    let slots = fa.slots(fam.is_v6());
    // The slots as they were come with the delta: no copy of the farm's slots.
    for (i, was) in d.changed.iter().map(|i| *i as usize).zip(&d.was) {
        if *was != 0 {
            put(&mut old, &shard, render::slot_elem(fa, i, *was));
        }
        if let Some(m) = slots.get(i) {
            put(&mut new, &shard, render::slot_elem(fa, i, *m));
        }
    }
    for (i, m) in d.removed().map(|i| i as usize).zip(&d.gone) {
        put(&mut old, &shard, render::slot_elem(fa, i, *m));
    }
    (old, new)
}

fn put(part: &mut FarmPart, set: &str, e: SetElem) {
    part.elems.entry(set.to_string()).or_default().push(e);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackendState, Mark, parse_config};

    fn farm(n: usize) -> Farm {
        let backends: Vec<serde_json::Value> = (0..n)
            .map(|i| serde_json::json!({"name": format!("b{i}"), "ip-addr": format!("10.0.{}.{}", i / 256, i % 256)}))
            .collect();
        let doc = serde_json::json!({"farms": [{"name": "f", "virtual-addresses": ["192.0.2.1"],
            "scheduler": "weight", "backends": backends}]});
        parse_config(&doc.to_string()).unwrap().farms[0].clone()
    }

    type Names = Vec<(Option<String>, Option<String>)>;

    fn names(p: Option<Vec<Pair>>) -> Option<Names> {
        p.map(|ps| {
            ps.into_iter()
                .map(|(o, n)| (o.map(|b| b.name.clone()), n.map(|b| b.name.clone())))
                .collect()
        })
    }

    #[test]
    fn one_backend_changed_added_or_removed_is_followed_alone() {
        let old = farm(1_000);
        let b = |s: &str| Some(s.to_string());
        let mut new = old.clone();
        new.backends[700].state = BackendState::Down;
        assert_eq!(names(several(&old, &new)), Some(vec![(b("b700"), b("b700"))]));
        let mut new = old.clone();
        new.backends[3].weight = 9;
        assert_eq!(names(several(&old, &new)), Some(vec![(b("b3"), b("b3"))]));
        let mut new = old.clone();
        let mut added = old.backends[0].clone();
        added.name = "new".into();
        new.backends.push(added);
        assert_eq!(names(several(&old, &new)), Some(vec![(None, b("new"))]));
        let mut new = old.clone();
        new.backends.remove(500);
        assert_eq!(names(several(&old, &new)), Some(vec![(b("b500"), None)]));
    }

    #[test]
    fn many_backends_changed_in_place_and_appended_are_followed_each() {
        let old = farm(300);
        let b = |s: &str| Some(s.to_string());
        let mut new = old.clone();
        new.backends[1].weight = 2;
        new.backends[200].state = BackendState::Drain;
        let mut added = old.backends[0].clone();
        added.name = "new".into();
        new.backends.push(added);
        assert_eq!(
            names(several(&old, &new)),
            Some(vec![(b("b1"), b("b1")), (b("b200"), b("b200")), (None, b("new"))])
        );
    }

    #[test]
    fn anything_else_is_worked_out_whole() {
        let old = farm(300);
        let mut keys = old.clone();
        keys.backends[1].weight = 2;
        keys.persist_ttl += 1;
        assert!(several(&old, &keys).is_none(), "the farm's own keys changed");
        let mut marked = old.clone();
        marked.backends[1].mark = Some(Mark(7));
        assert!(several(&old, &marked).is_none(), "a mark changes shared parts");
        let mut renamed = old.clone();
        renamed.backends[1].name = "other".into();
        assert!(several(&old, &renamed).is_none(), "a rename");
        let mut moved = old.clone();
        moved.backends.remove(10);
        moved.backends[20].weight = 5;
        assert!(several(&old, &moved).is_none(), "a removal and a change");
        let mut tiers = old.clone();
        tiers.backends[1].priority = 2;
        tiers.backends[2].weight = 3;
        assert!(
            several(&old, &tiers).is_none(),
            "a priority among several changes"
        );
        tiers.backends[2].weight = 1;
        assert!(several(&old, &tiers).is_some(), "one priority alone");
        assert!(several(&old, &old.clone()).is_none(), "nothing changed");
    }
}
