//! The reverse of a farm's allocation: where each member's slots are, and which member ids are
//! taken. Derived from `members` and `slots4`/`slots6` (never saved), so that one backend's
//! change finds its slots in O(its weight) instead of scanning the farm.

use std::collections::HashMap;
use std::fmt;

use super::FarmAlloc;

/// A slot position. A farm has at most `MAX_FARM_WEIGHT` slots per family, far below `u32::MAX`.
pub(super) type Pos = u32;

fn pos(i: usize) -> Pos {
    // Slot vectors are bounded by the farm's total weight (validated), so this never saturates.
    Pos::try_from(i).unwrap_or(Pos::MAX)
}

/// Where the index lives in a [`FarmAlloc`]: derived data, so it is not part of the value (equal
/// allocations may differ in whether it was built) and a clone starts without it (a clone is
/// usually edited through the public fields, which would make a copied index lie).
#[derive(Default)]
pub(super) struct IndexCell(pub(super) Option<Box<SlotIndex>>);

impl Clone for IndexCell {
    fn clone(&self) -> Self {
        IndexCell(None)
    }
}

impl PartialEq for IndexCell {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for IndexCell {}

impl fmt::Debug for IndexCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "built" } else { "none" })
    }
}

pub(super) struct SlotIndex {
    /// IPv4, IPv6.
    pub(super) fam: [FamilyIndex; 2],
    /// One bit per member id in use (id 0 is never handed out: always set), as long as the
    /// highest id in use needs: ids past its end are free. A fixed map of all 65,536 ids was 8 KiB
    /// per farm, most of the memory of 10,000 farms of 2 backends.
    used: Vec<u64>,
    /// The sizes the index was built or last kept for: a mismatch means the public fields were
    /// edited behind the index's back, and it is rebuilt.
    shape: (usize, usize, usize),
}

#[derive(Default)]
pub(super) struct FamilyIndex {
    /// Member id → its slot positions, in no particular order.
    positions: HashMap<u16, Vec<Pos>>,
    /// Slot → where it is in its member's `positions` list.
    at: Vec<Pos>,
}

/// The edits of one family's slots: every slot below `new_len` whose member changed or that is
/// new, ascending. Slots from `new_len` to `old_len` are gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyDelta {
    pub old_len: u32,
    pub new_len: u32,
    pub changed: Vec<u32>,
    /// The member each `changed` slot had before (0: the slot is new), so that the change can
    /// be undone and its old elements named without a copy of the farm's slots.
    pub was: Vec<u16>,
    /// The members of the slots that are gone (`new_len..old_len`), before.
    pub gone: Vec<u16>,
}

impl FamilyDelta {
    /// The delta between two slot vectors (for changes that rebalance the whole farm).
    pub(super) fn between(before: &[u16], after: &[u16]) -> FamilyDelta {
        let changed: Vec<u32> = after
            .iter()
            .enumerate()
            .filter(|(i, m)| before.get(*i) != Some(*m))
            .map(|(i, _)| pos(i))
            .collect();
        FamilyDelta {
            old_len: pos(before.len()),
            new_len: pos(after.len()),
            was: changed
                .iter()
                .map(|i| before.get(*i as usize).copied().unwrap_or(0))
                .collect(),
            changed,
            gone: before.get(after.len()..).unwrap_or_default().to_vec(),
        }
    }

    /// Puts `slots` back as they were before the change.
    pub fn undo(&self, slots: &mut Vec<u16>) {
        slots.truncate(self.new_len as usize);
        slots.extend_from_slice(&self.gone);
        for (i, m) in self.changed.iter().zip(&self.was) {
            if let Some(s) = slots.get_mut(*i as usize) {
                *s = *m;
            }
        }
        slots.truncate(self.old_len as usize);
    }

    /// The slots that no longer exist.
    pub fn removed(&self) -> std::ops::Range<u32> {
        self.new_len..self.old_len.max(self.new_len)
    }

    /// This delta followed by `next` (made on the slots this one left), as one delta.
    pub fn then(&self, next: &FamilyDelta) -> FamilyDelta {
        FamilyDelta::chain(&[self, next])
    }

    /// Deltas made one after the other (each on the slots the one before left), as one delta
    /// from the slots before the first to those after the last: O(all the deltas' entries ×
    /// log), so that a batch of backend changes sends, records and undoes each slot once.
    /// Empty `deltas`: an empty delta.
    pub fn chain(deltas: &[&FamilyDelta]) -> FamilyDelta {
        let (Some(first), Some(last)) = (deltas.first(), deltas.last()) else {
            return FamilyDelta::default();
        };
        // Each touched slot's member before the first delta: the first delta that touched it
        // knows (untouched before, a slot is as it was: absent, 0, past the old length).
        let mut was: std::collections::BTreeMap<u32, u16> = std::collections::BTreeMap::new();
        for d in deltas {
            for (i, m) in d
                .changed
                .iter()
                .copied()
                .zip(d.was.iter().copied())
                .chain(d.removed().zip(d.gone.iter().copied()))
            {
                was.entry(i).or_insert(m);
            }
        }
        let (old_len, new_len) = (first.old_len, last.new_len);
        let (changed, was_below) = was.range(..new_len).map(|(i, m)| (*i, *m)).unzip();
        FamilyDelta {
            old_len,
            new_len,
            changed,
            was: was_below,
            gone: (new_len..old_len.max(new_len))
                .map(|i| was.get(&i).copied().unwrap_or(0))
                .collect(),
        }
    }
}

fn shape(fa: &FarmAlloc) -> (usize, usize, usize) {
    (fa.slots4.len(), fa.slots6.len(), fa.members.len())
}

impl SlotIndex {
    pub(super) fn build(fa: &FarmAlloc) -> SlotIndex {
        let mut used = Vec::new();
        set_bit(&mut used, 0, true);
        for m in fa.members.values() {
            set_bit(&mut used, *m, true);
        }
        SlotIndex {
            fam: [FamilyIndex::build(&fa.slots4), FamilyIndex::build(&fa.slots6)],
            used,
            shape: shape(fa),
        }
    }

    /// Whether the index still describes `fa`, as far as can be told cheaply: the sizes, and the
    /// slots of the members about to change.
    pub(super) fn fits(&self, fa: &FarmAlloc, involved: &[u16]) -> bool {
        self.shape == shape(fa)
            && involved
                .iter()
                .all(|m| self.fam[0].holds(&fa.slots4, *m) && self.fam[1].holds(&fa.slots6, *m))
    }

    pub(super) fn reshaped(&mut self, fa: &FarmAlloc) {
        self.shape = shape(fa);
    }

    pub(super) fn set_used(&mut self, id: u16, used: bool) {
        set_bit(&mut self.used, id, used);
    }

    /// The id `FreeIds` would hand out after `cursor`: the first free one in cursor+1..=65535,
    /// then 1..=cursor. A word of 64 ids at a time, so a dense farm costs at most 1,024 steps.
    pub(super) fn next_free(&self, cursor: u16) -> Option<u16> {
        let after = usize::from(cursor) + 1;
        self.first_free(after, 65535)
            .or_else(|| self.first_free(1, usize::from(cursor)))
    }

    fn first_free(&self, lo: usize, hi: usize) -> Option<u16> {
        let mut i = lo;
        while i <= hi {
            let word = i / 64;
            let free = !self.used.get(word).copied().unwrap_or(0) >> (i % 64);
            if free != 0 {
                let id = i + free.trailing_zeros() as usize;
                return if id <= hi { u16::try_from(id).ok() } else { None };
            }
            i = (word + 1) * 64;
        }
        None
    }
}

fn set_bit(used: &mut Vec<u64>, id: u16, on: bool) {
    let (w, b) = (usize::from(id) / 64, usize::from(id) % 64);
    if on && w >= used.len() {
        used.resize(w + 1, 0);
    }
    if let Some(word) = used.get_mut(w) {
        if on {
            *word |= 1 << b;
        } else {
            *word &= !(1 << b);
        }
    }
}

impl FamilyIndex {
    fn build(slots: &[u16]) -> FamilyIndex {
        let mut ix = FamilyIndex {
            positions: HashMap::new(),
            at: Vec::with_capacity(slots.len()),
        };
        for (i, m) in slots.iter().enumerate() {
            let list = ix.positions.entry(*m).or_default();
            ix.at.push(pos(list.len()));
            list.push(pos(i));
        }
        ix
    }

    fn holds(&self, slots: &[u16], m: u16) -> bool {
        self.positions
            .get(&m)
            .is_none_or(|l| l.iter().all(|p| slots.get(*p as usize) == Some(&m)))
    }

    pub(super) fn count(&self, m: u16) -> u32 {
        self.positions.get(&m).map_or(0, |l| pos(l.len()))
    }

    fn push(&mut self, m: u16, p: Pos) {
        let list = self.positions.entry(m).or_default();
        let k = pos(list.len());
        list.push(p);
        match self.at.get_mut(p as usize) {
            Some(a) => *a = k,
            None => self.at.push(k),
        }
    }

    /// `rebalance` for the case where only `dec` may own too many slots and only `inc` too few
    /// (one backend changed, or one renamed): the same slots, and the edits made.
    pub(super) fn apply(
        &mut self,
        slots: &mut Vec<u16>,
        dec: Option<(u16, u32)>,
        inc: Option<(u16, u32)>,
    ) -> FamilyDelta {
        let old_len = slots.len();
        // `rebalance` drops a member's excess slots from the highest down.
        let mut holes = Vec::new();
        if let Some((m, want)) = dec
            && let Some(list) = self.positions.get_mut(&m)
            && list.len() > want as usize
        {
            list.sort_unstable();
            for (k, p) in list.iter().enumerate() {
                if let Some(a) = self.at.get_mut(*p as usize) {
                    *a = pos(k);
                }
            }
            holes = list.split_off(want as usize);
            if list.is_empty() {
                self.positions.remove(&m);
            }
        }
        let (inc_m, adds) = match inc {
            Some((m, want)) => (m, (want as usize).saturating_sub(self.count(m) as usize)),
            None => (0, 0),
        };
        let mut changed = Vec::new();
        let mut was = Vec::new();
        // Holes are refilled with new slots first.
        let fill = holes.len().min(adds);
        for h in &holes[..fill] {
            if let Some(s) = slots.get_mut(*h as usize) {
                was.push(*s);
                *s = inc_m;
            }
            self.push(inc_m, *h);
            changed.push(*h);
        }
        let rest = &holes[fill..];
        let mut gone = Vec::new();
        if !rest.is_empty() {
            // The remaining holes are closed with the slots at the end.
            let new_len = old_len - rest.len();
            let (inner, outer) = rest.split_at(rest.partition_point(|h| (*h as usize) < new_len));
            let mut outer = outer.iter().peekable();
            let mut tail = (new_len..old_len).filter(|i| {
                if outer.peek().is_some_and(|h| **h as usize == *i) {
                    outer.next();
                    false
                } else {
                    true
                }
            });
            for h in inner {
                let Some(src) = tail.next() else { break };
                let (h, x) = (*h as usize, slots[src]);
                was.push(slots[h]);
                slots[h] = x;
                let k = self.at[src];
                if let Some(p) = self.positions.get_mut(&x).and_then(|l| l.get_mut(k as usize)) {
                    *p = pos(h);
                }
                self.at[h] = k;
                changed.push(pos(h));
            }
            gone = slots[new_len..].to_vec();
            slots.truncate(new_len);
            self.at.truncate(new_len);
        }
        for _ in fill..adds {
            let p = pos(slots.len());
            slots.push(inc_m);
            self.push(inc_m, p);
            changed.push(p);
            was.push(0);
        }
        FamilyDelta {
            old_len: pos(old_len),
            new_len: pos(slots.len()),
            changed,
            was,
            gone,
        }
    }
}

#[cfg(test)]
impl SlotIndex {
    /// Whether the index says exactly what `fa` holds (for tests of its upkeep).
    pub(super) fn describes(&self, fa: &FarmAlloc) -> bool {
        let fresh = SlotIndex::build(fa);
        let trimmed = |u: &[u64]| u.iter().rposition(|w| *w != 0).map_or(0, |i| i + 1);
        self.used[..trimmed(&self.used)] == fresh.used[..trimmed(&fresh.used)]
            && self.shape == fresh.shape
            && self.fam.iter().zip([&fa.slots4, &fa.slots6]).all(|(ix, slots)| {
                ix.at.len() == slots.len()
                    && ix.positions.values().map(Vec::len).sum::<usize>() == slots.len()
                    && ix.positions.iter().all(|(m, l)| {
                        !l.is_empty()
                            && l.iter()
                                .enumerate()
                                .all(|(k, p)| slots[*p as usize] == *m && ix.at[*p as usize] as usize == k)
                    })
            })
    }
}
