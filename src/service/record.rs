//! The journal record of one commit, built from the diff the service computes for its event, so
//! saving a change costs the change: a backend put or deleted, a farm put whole only when its
//! own keys changed, and the allocation's delta (member ids, slot edits) of the changed farms.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::diff::{Diff, FarmChange, What};
use crate::engine::alloc::{FamilyDelta, FarmAlloc, SlotDelta};
use crate::engine::{Allocation, Engine};
use crate::model::{Config, Farm, whole_farm_pass};
use crate::state::records::{AllocDelta, Change, Op, SlotEdit};

/// The allocation of the farms a commit changes, as it was before the commit: what the record's
/// allocation delta is computed against. Neither slots nor member ids are copied: the engine
/// tells the slot edits it made ([`Engine::slot_delta`]), the diff which backends came and went.
pub struct AllocBefore {
    /// `None`: not known (the change was made by an engine operation), so farms are put whole.
    farms: Option<HashMap<String, Option<FarmBefore>>>,
    next_farm_id: u16,
}

struct FarmBefore {
    id: u16,
    members: usize,
    next_member: u16,
    /// Member ids of the backends the commit removes, to put back on undo.
    removed: Vec<(String, u16)>,
    /// The whole allocation of a farm the commit deletes.
    whole: Option<FarmAlloc>,
}

impl AllocBefore {
    /// The allocation of the farms `diff` names.
    pub fn take(alloc: &Allocation, diff: &Diff) -> AllocBefore {
        let farms = diff
            .farms
            .iter()
            .map(|f| {
                let before = alloc.farms.get(&f.name).map(|fa| FarmBefore {
                    id: fa.id,
                    members: fa.members.len(),
                    next_member: fa.next_member,
                    removed: f
                        .backends
                        .iter()
                        .filter(|b| b.what == What::Removed)
                        .filter_map(|b| fa.members.get(&b.name).map(|id| (b.name.clone(), *id)))
                        .collect(),
                    whole: (f.what == What::Removed).then(|| fa.clone()),
                });
                (f.name.clone(), before)
            })
            .collect();
        AllocBefore {
            farms: Some(farms),
            next_farm_id: alloc.next_farm_id,
        }
    }

    /// The whole allocation as it was, from `now` (the allocation after the commit): what an
    /// undo must give back exactly, or the kernel would keep slots the files do not have.
    /// `None` when it is not known. `engine` made the commit.
    pub fn restore(&self, engine: &dyn Engine, diff: &Diff) -> Option<Allocation> {
        let farms = self.farms.as_ref()?;
        let now = engine.allocation();
        let mut alloc = now.clone();
        alloc.next_farm_id = self.next_farm_id;
        for fc in &diff.farms {
            match farms.get(&fc.name)? {
                None => {
                    alloc.farms.remove(&fc.name);
                }
                Some(b) => {
                    let fa = match (&b.whole, now.farms.get(&fc.name)) {
                        (Some(whole), _) => whole.clone(),
                        (None, Some(after)) => {
                            let delta = engine.slot_delta(&fc.name)?;
                            let mut fa = after.clone();
                            for bc in fc.backends.iter().filter(|bc| bc.what == What::Added) {
                                fa.members.remove(&bc.name);
                            }
                            fa.members.extend(b.removed.iter().cloned());
                            fa.id = b.id;
                            fa.next_member = b.next_member;
                            delta.v4.undo(&mut fa.slots4);
                            delta.v6.undo(&mut fa.slots6);
                            fa
                        }
                        (None, None) => return None,
                    };
                    alloc.farms.insert(fc.name.clone(), fa);
                }
            }
        }
        Some(alloc)
    }

    /// Only the farm id cursor is known: the changed farms' allocations are written whole.
    pub fn unknown(alloc: &Allocation) -> AllocBefore {
        AllocBefore {
            farms: None,
            next_farm_id: alloc.next_farm_id,
        }
    }
}

/// Positions by name in a list, looked up linearly for a few names and through a map for many.
struct Positions<'a> {
    names: Vec<&'a str>,
    map: Option<HashMap<&'a str, usize>>,
}

impl<'a> Positions<'a> {
    fn new(names: impl Iterator<Item = &'a str>, lookups: usize) -> Positions<'a> {
        let names: Vec<&str> = names.collect();
        let map = (lookups > 4).then(|| names.iter().enumerate().map(|(i, n)| (*n, i)).collect());
        Positions { names, map }
    }

    fn of(&self, name: &str) -> Option<usize> {
        match &self.map {
            Some(m) => m.get(name).copied(),
            None => self.names.iter().position(|n| *n == name),
        }
    }
}

/// Whether `new` is `old` with some names removed and some added, the rest in the same order
/// (so deletes, then inserts at their new positions, rebuild it).
fn same_order<'a>(
    old: impl Iterator<Item = &'a str>,
    new: impl Iterator<Item = &'a str>,
    removed: &HashSet<&str>,
    added: &HashSet<&str>,
) -> bool {
    old.filter(|n| !removed.contains(n))
        .eq(new.filter(|n| !added.contains(n)))
}

/// The record of the commit from `old` to `new` (`diff` between them), whose allocation went
/// from `before` to what `engine` has now. `dirty` farms' allocations are written whole (they
/// may differ from the journal's after a commit was undone).
pub fn build(
    old: &Config,
    new: &Config,
    diff: &Diff,
    before: &AllocBefore,
    engine: &dyn Engine,
    dirty: &BTreeSet<String>,
) -> Change {
    let after = engine.allocation();
    let by_what = |w: What| {
        diff.farms
            .iter()
            .filter(move |f| f.what == w)
            .map(|f| f.name.as_str())
    };
    let policies_by = |w: What| {
        diff.policies
            .iter()
            .filter(move |p| p.what == w)
            .map(|p| p.name.as_str())
    };
    let farms_in_order = !diff.farm_list
        || same_order(
            old.farms.iter().map(|f| f.name.as_str()),
            new.farms.iter().map(|f| f.name.as_str()),
            &by_what(What::Removed).collect(),
            &by_what(What::Added).collect(),
        );
    let policies_in_order = !diff.policy_list
        || same_order(
            old.policies.iter().map(|p| p.name.as_str()),
            new.policies.iter().map(|p| p.name.as_str()),
            &policies_by(What::Removed).collect(),
            &policies_by(What::Added).collect(),
        );
    if !farms_in_order || !policies_in_order {
        // Reordered lists (an import): the whole state, rare and already O(configuration).
        return Change {
            ops: vec![Op::PutState {
                config: Box::new(new.clone()),
                allocation: Box::new(after.clone()),
            }],
            next_farm_id: None,
        };
    }
    let mut ops = Vec::new();
    for name in policies_by(What::Removed) {
        ops.push(Op::DeletePolicy {
            name: name.to_string(),
        });
    }
    // Deleted from the end, so the positions of those before stay right.
    let removed: Vec<&str> = by_what(What::Removed).collect();
    for name in removed.iter().rev() {
        ops.push(Op::DeleteFarm {
            name: name.to_string(),
        });
    }
    let mut whole: HashSet<&str> = HashSet::new();
    for fc in diff.farms.iter().filter(|f| f.what != What::Removed) {
        let i = fc.at;
        let Some(farm) = new.farms.get(i).filter(|f| f.name == fc.name) else {
            continue;
        };
        if !(fc.what == What::Changed && fc.keys.is_empty() && backend_ops(farm, fc, &mut ops)) {
            ops.push(Op::PutFarm {
                index: i,
                farm: Box::new(farm.clone()),
            });
            whole.insert(&fc.name);
        }
    }
    let policies = Positions::new(new.policies.iter().map(|p| p.name.as_str()), diff.policies.len());
    for pc in diff.policies.iter().filter(|p| p.what != What::Removed) {
        if let Some(i) = policies.of(&pc.name) {
            ops.push(Op::PutPolicy {
                index: i,
                policy: Box::new(new.policies[i].clone()),
            });
        }
    }
    let mut allocated: HashSet<&str> = HashSet::new();
    for fc in &diff.farms {
        allocated.insert(&fc.name);
        let known = before.farms.as_ref().map(|m| m.get(&fc.name));
        let put_whole = whole.contains(fc.name.as_str()) || dirty.contains(&fc.name);
        let delta = engine.slot_delta(&fc.name);
        alloc_op(fc, known, put_whole, after.farms.get(&fc.name), delta, &mut ops);
    }
    for name in dirty.iter().filter(|n| !allocated.contains(n.as_str())) {
        ops.push(match after.farms.get(name) {
            Some(fa) => Op::PutAlloc {
                farm: name.clone(),
                alloc: Box::new(fa.clone()),
            },
            None => Op::DeleteAlloc { farm: name.clone() },
        });
    }
    let cursor_moved = after.next_farm_id != before.next_farm_id || !dirty.is_empty();
    Change {
        ops,
        next_farm_id: cursor_moved.then_some(after.next_farm_id),
    }
}

/// The backend ops that turn the farm as it was into `new`, at the positions the diff found;
/// false when the backends were reordered (the farm is then put whole).
fn backend_ops(new: &Farm, fc: &FarmChange, ops: &mut Vec<Op>) -> bool {
    if fc.backend_list && !fc.in_order {
        return false;
    }
    let mut deletes: Vec<(usize, &str)> = fc
        .backends
        .iter()
        .filter(|b| b.what == What::Removed)
        .map(|b| (b.at, b.name.as_str()))
        .collect();
    // From the end, so each position is right when its turn comes.
    deletes.sort_unstable_by_key(|d| std::cmp::Reverse(d.0));
    for (index, name) in deletes {
        ops.push(Op::DeleteBackend {
            farm: new.name.clone(),
            index,
            name: name.to_string(),
        });
    }
    let mut puts: Vec<usize> = fc
        .backends
        .iter()
        // A backend whose keys did not change only became (in)active: nothing to write.
        .filter(|b| b.what == What::Added || (b.what == What::Changed && !b.keys.is_empty()))
        .map(|b| b.at)
        .collect();
    puts.sort_unstable();
    for index in puts {
        let Some(b) = new.backends.get(index) else {
            return false;
        };
        ops.push(Op::PutBackend {
            farm: new.name.clone(),
            index,
            backend: Box::new(b.clone()),
        });
    }
    true
}

fn whole_alloc(name: &str, after: Option<&FarmAlloc>) -> Op {
    match after {
        Some(fa) => {
            // A farm's worth of ids and slots: counted with the passes over a farm.
            whole_farm_pass();
            Op::PutAlloc {
                farm: name.to_string(),
                alloc: Box::new(fa.clone()),
            }
        }
        None => Op::DeleteAlloc {
            farm: name.to_string(),
        },
    }
}

/// The record's edit of one family's slots, from the engine's delta and the slots after it;
/// `None` when no slot moved. `Err`: the delta does not describe these slots.
fn slot_edit(d: &FamilyDelta, after: &[u16]) -> Result<Option<SlotEdit>, ()> {
    if d.new_len as usize != after.len() {
        return Err(());
    }
    let set: Vec<(usize, u16)> = d
        .changed
        .iter()
        .zip(&d.was)
        .filter_map(|(i, was)| {
            let i = *i as usize;
            after.get(i).filter(|m| *m != was).map(|m| (i, *m))
        })
        .collect();
    if set.is_empty() && d.old_len == d.new_len {
        return Ok(None);
    }
    Ok(Some(SlotEdit {
        len: after.len(),
        set,
    }))
}

/// The allocation op of one changed farm. `known`: `None` when nothing is known of the
/// allocation before, `Some(None)` when the farm was not in it.
fn alloc_op(
    fc: &FarmChange,
    known: Option<Option<&Option<FarmBefore>>>,
    put_whole: bool,
    after: Option<&FarmAlloc>,
    slots: Option<&SlotDelta>,
    ops: &mut Vec<Op>,
) {
    let before = match known {
        None | Some(None) => return ops.push(whole_alloc(&fc.name, after)),
        Some(Some(b)) => b.as_ref(),
    };
    let (b, a, slots) = match (before, after, slots) {
        (None, None, _) => return,
        (Some(b), Some(a), Some(s)) if !put_whole && b.id == a.id => (b, a, s),
        _ => return ops.push(whole_alloc(&fc.name, after)),
    };
    let (Ok(slots4), Ok(slots6)) = (slot_edit(&slots.v4, &a.slots4), slot_edit(&slots.v6, &a.slots6)) else {
        return ops.push(whole_alloc(&fc.name, after));
    };
    let mut delta = AllocDelta {
        farm: fc.name.clone(),
        next_member: a.next_member,
        slots4,
        slots6,
        ..AllocDelta::default()
    };
    for bc in &fc.backends {
        match bc.what {
            What::Added => match a.members.get(&bc.name) {
                Some(id) => {
                    delta.added.insert(bc.name.clone(), *id);
                }
                None => return ops.push(whole_alloc(&fc.name, after)),
            },
            What::Removed => delta.removed.push(bc.name.clone()),
            What::Changed => {}
        }
    }
    // Member ids of backends that stayed do not move; if the counts say otherwise, the engine
    // did something this delta cannot tell, and the farm's allocation is written whole.
    if b.members + delta.added.len() != a.members.len() + delta.removed.len() {
        return ops.push(whole_alloc(&fc.name, after));
    }
    let unchanged = delta.added.is_empty()
        && delta.removed.is_empty()
        && delta.slots4.is_none()
        && delta.slots6.is_none()
        && b.next_member == a.next_member;
    if !unchanged {
        ops.push(Op::EditAlloc(Box::new(delta)));
    }
}
