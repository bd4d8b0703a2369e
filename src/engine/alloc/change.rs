//! One backend's change applied to its farm's allocation in O(the backend's weight), giving what
//! `FarmAlloc::update` gives for the farm after the change, and the slot edits to send.

use super::slot_index::{FamilyDelta, IndexCell, SlotIndex};
use super::{AllocError, FarmAlloc};
use crate::model::{Backend, Farm, effective_weight, takes_new_flows};

/// The slot edits of one change, per family (see [`FamilyDelta`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotDelta {
    pub v4: FamilyDelta,
    pub v6: FamilyDelta,
}

impl SlotDelta {
    pub fn family(&self, v6: bool) -> &FamilyDelta {
        if v6 { &self.v6 } else { &self.v4 }
    }

    /// What turned `before`'s slots into `after`'s (a change worked out for the whole farm).
    pub fn between(before: &FarmAlloc, after: &FarmAlloc) -> SlotDelta {
        SlotDelta {
            v4: FamilyDelta::between(&before.slots4, &after.slots4),
            v6: FamilyDelta::between(&before.slots6, &after.slots6),
        }
    }

    /// This delta followed by `next`, as one (see [`FamilyDelta::chain`]).
    pub fn then(&self, next: &SlotDelta) -> SlotDelta {
        SlotDelta::chain(&[self, next])
    }

    /// Deltas made one after the other, as one (see [`FamilyDelta::chain`]).
    pub fn chain(deltas: &[&SlotDelta]) -> SlotDelta {
        let v4: Vec<&FamilyDelta> = deltas.iter().map(|d| &d.v4).collect();
        let v6: Vec<&FamilyDelta> = deltas.iter().map(|d| &d.v6).collect();
        SlotDelta {
            v4: FamilyDelta::chain(&v4),
            v6: FamilyDelta::chain(&v6),
        }
    }

    /// Nothing to send: no slot changed, appeared or went.
    pub fn is_empty(&self) -> bool {
        [&self.v4, &self.v6]
            .iter()
            .all(|d| d.changed.is_empty() && d.old_len == d.new_len)
    }
}

/// The slots a backend owns at effective priority `p`: its effective weight in its family, none
/// in the other.
fn wants(farm: &Farm, b: &Backend, p: u32, v6: bool) -> u32 {
    if b.ip_addr.is_ipv6() == v6 && takes_new_flows(farm, b, p) {
        effective_weight(b)
    } else {
        0
    }
}

impl FarmAlloc {
    /// Applies one backend's change: `old` is the backend as it was (`None`: added), `new` as it
    /// is in `farm` (`None`: removed); a different name is a rename. `old_p` and `new_p` are the
    /// farm's effective priority before and after.
    ///
    /// Precondition: `self` is what `update` made of the farm before the change.
    /// Result: `self` is exactly what `update(farm)` would make of it (members, `next_member`,
    /// slots), in O(weight of the backend + log) once the index is built; the index is built on
    /// first use (O(slots), see [`FarmAlloc::build_index`]). When the priority changes, tiers fail
    /// over and the whole farm is rebalanced by `update`: O(slots), with the exact delta.
    /// On error (no member id free) nothing changed.
    pub fn change_backend(
        &mut self,
        farm: &Farm,
        old: Option<&Backend>,
        new: Option<&Backend>,
        old_p: u32,
        new_p: u32,
    ) -> Result<SlotDelta, AllocError> {
        if old_p != new_p {
            let (before4, before6) = (self.slots4.clone(), self.slots6.clone());
            self.update(farm)?;
            self.build_index();
            return Ok(SlotDelta {
                v4: FamilyDelta::between(&before4, &self.slots4),
                v6: FamilyDelta::between(&before6, &self.slots6),
            });
        }
        let old_id = old.and_then(|b| self.members.get(&b.name).copied());
        let kept_id = new.and_then(|b| self.members.get(&b.name).copied());
        let involved: Vec<u16> = old_id.iter().chain(kept_id.iter()).copied().collect();
        let mut ix = match self.index.0.take() {
            Some(ix) if ix.fits(self, &involved) => ix,
            _ => Box::new(SlotIndex::build(self)),
        };
        let renamed = match (old, new) {
            (Some(o), Some(n)) => o.name != n.name,
            (Some(_), None) => true,
            _ => false,
        };
        // As `update`: the removed name's id is forgotten before new ids are handed out.
        let gone = if renamed { old_id } else { None };
        if let Some(id) = gone {
            ix.set_used(id, false);
        }
        let new_id = match (new, kept_id) {
            (_, Some(id)) => Some(id),
            (None, None) => None,
            (Some(_), None) => {
                let Some(id) = ix.next_free(self.next_member) else {
                    if let Some(id) = gone {
                        ix.set_used(id, true);
                    }
                    self.index.0 = Some(ix);
                    return Err(AllocError::MemberIds(farm.name.clone()));
                };
                Some(id)
            }
        };
        if let (Some(o), Some(_)) = (old, gone) {
            self.members.remove(&o.name);
        }
        if let (Some(n), Some(id), None) = (new, new_id, kept_id) {
            ix.set_used(id, true);
            self.members.insert(n.name.clone(), id);
            self.next_member = id;
        }
        let mut delta = SlotDelta::default();
        for (f, v6) in [(0, false), (1, true)] {
            let want = match (new, new_id) {
                (Some(b), Some(id)) => Some((id, wants(farm, b, new_p, v6))),
                _ => None,
            };
            let (dec, inc) = match (gone, want) {
                (Some(g), w) => (Some((g, 0)), w),
                (None, Some((id, w))) if ix.fam[f].count(id) > w => (Some((id, w)), None),
                (None, w) => (None, w),
            };
            let slots = if v6 { &mut self.slots6 } else { &mut self.slots4 };
            let d = ix.fam[f].apply(slots, dec, inc);
            if v6 {
                delta.v6 = d;
            } else {
                delta.v4 = d;
            }
        }
        ix.reshaped(self);
        self.index.0 = Some(ix);
        Ok(delta)
    }

    /// Builds the reverse index now (O(slots)) rather than at the first change: for a farm loaded
    /// from the state file, so that its first backend change is as quick as the next.
    pub fn build_index(&mut self) {
        self.index = IndexCell(Some(Box::new(SlotIndex::build(self))));
    }
}

#[cfg(test)]
#[path = "change_tests.rs"]
mod tests;
