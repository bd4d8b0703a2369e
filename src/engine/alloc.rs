//! Identities the kernel sees and that must outlive a restart: farm ids, backend member ids and
//! each farm's scheduling slots. Kept in the state file beside the configuration, so that a daemon
//! restarted on the same state renders byte-identical objects (and changes nothing), and so that
//! connection marks of running connections keep naming the same backend.
//!
//! Slots: a farm with total weight N owns slots 0..N of its range; each slot names one backend.
//! Changes move as few slots as possible: a removed backend's slots are refilled from the end,
//! so adding or removing one backend of weight w changes O(w) map elements, not the farm.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::{Config, Farm, effective_priority, effective_weight, takes_new_flows};

mod change;
mod slot_index;

pub use change::SlotDelta;
pub use slot_index::FamilyDelta;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    pub farms: BTreeMap<String, FarmAlloc>,
    /// Where the search for the next free farm id starts: ids are handed out round-robin so a
    /// freed id is reused as late as possible (old connections and sessions may still carry it).
    #[serde(default)]
    pub next_farm_id: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FarmAlloc {
    pub id: u16,
    /// Backend name → member id (1..=65535).
    pub members: BTreeMap<String, u16>,
    /// Round-robin start of the member id search (see `Allocation::next_farm_id`).
    #[serde(default)]
    pub next_member: u16,
    /// Member id of each IPv4 slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots4: Vec<u16>,
    /// Member id of each IPv6 slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots6: Vec<u16>,
    /// Where each member's slots are, for [`FarmAlloc::change_backend`]; rebuilt when missing.
    /// Whoever edits `members` or the slots in place must `forget_index`.
    #[serde(skip)]
    index: slot_index::IndexCell,
}

impl FarmAlloc {
    pub fn slots(&self, v6: bool) -> &[u16] {
        if v6 { &self.slots6 } else { &self.slots4 }
    }

    /// Drops the reverse index after `members` or the slots were edited in place (a clone has
    /// none): the next [`FarmAlloc::change_backend`] rebuilds it.
    pub fn forget_index(&mut self) {
        self.index = slot_index::IndexCell::default();
    }
}

/// Free numbers in 1..=65535, handed out round-robin from a cursor.
struct FreeIds {
    used: Vec<bool>,
    cursor: usize,
}

impl FreeIds {
    fn new(used: impl Iterator<Item = u16>, cursor: u16) -> Self {
        let mut v = vec![false; 65536];
        v[0] = true;
        for u in used {
            v[usize::from(u)] = true;
        }
        FreeIds {
            used: v,
            cursor: usize::from(cursor),
        }
    }

    fn take(&mut self) -> Option<u16> {
        for _ in 0..65535 {
            self.cursor = if self.cursor >= 65535 { 1 } else { self.cursor + 1 };
            if !self.used[self.cursor] {
                self.used[self.cursor] = true;
                return u16::try_from(self.cursor).ok();
            }
        }
        None
    }

    fn cursor(&self) -> u16 {
        u16::try_from(self.cursor).unwrap_or(0)
    }
}

/// Moves as few slots as possible so that each member owns exactly `want[member]` slots.
/// `order` lists members in the order new slots are handed out (the configuration order).
pub fn rebalance_slots(old: &[u16], want: &HashMap<u16, u32>, order: &[u16]) -> Vec<u16> {
    let top = want.keys().copied().max().unwrap_or(0);
    let mut by_id = vec![0; usize::from(top) + 1];
    for (m, w) in want {
        by_id[usize::from(*m)] = *w;
    }
    rebalance(old, &by_id, order)
}

/// [`rebalance_slots`] with the wanted slots indexed by member id (ids are u16): a farm of
/// thousands of backends is rebalanced on every change of one, and hashing each slot and member
/// cost more than the moves.
fn rebalance(old: &[u16], want: &[u32], order: &[u16]) -> Vec<u16> {
    let want = |m: u16| want.get(usize::from(m)).copied().unwrap_or(0);
    let mut slots = old.to_vec();
    // Sized by the highest id in use, not 65,536: an import rebalances thousands of farms.
    let top = slots.iter().chain(order).copied().max().unwrap_or(0);
    let mut have = vec![0u32; usize::from(top) + 1];
    for m in &slots {
        have[usize::from(*m)] += 1;
    }
    // Drop excess slots, the highest first, so low slots stay where they are.
    let mut holes = Vec::new();
    for i in (0..slots.len()).rev() {
        let m = slots[i];
        let h = &mut have[usize::from(m)];
        if *h > want(m) {
            *h -= 1;
            holes.push(i);
        }
    }
    holes.reverse();
    let mut adds = Vec::new();
    for m in order {
        for _ in have[usize::from(*m)]..want(*m) {
            adds.push(*m);
        }
    }
    // Refill holes with new slots first.
    let fill = holes.len().min(adds.len());
    for (h, m) in holes.iter().zip(adds.iter()).take(fill) {
        slots[*h] = *m;
    }
    let holes = &holes[fill..];
    let adds = &adds[fill..];
    if !holes.is_empty() {
        // Close the remaining holes with slots taken from the end.
        let new_len = slots.len() - holes.len();
        let mut is_hole = vec![false; slots.len()];
        for h in holes {
            is_hole[*h] = true;
        }
        let mut tail = (new_len..slots.len()).filter(|i| !is_hole[*i]);
        for h in holes.iter().filter(|h| **h < new_len) {
            if let Some(src) = tail.next() {
                slots[*h] = slots[src];
            }
        }
        slots.truncate(new_len);
    }
    slots.extend_from_slice(adds);
    slots
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("no farm id is free (at most 65,535 farms)")]
    FarmIds,
    #[error("farm {0}: no backend id is free (at most 65,535 backends)")]
    MemberIds(String),
}

/// The allocation of some farms, to put back if a commit is refused.
pub struct Snapshot {
    farms: Vec<(String, Option<FarmAlloc>)>,
    next_farm_id: u16,
}

impl Snapshot {
    /// A farm's allocation as it was (`None`: it had none, or it was not taken).
    pub fn farm(&self, name: &str) -> Option<&FarmAlloc> {
        self.farms
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, fa)| fa.as_ref())
    }
}

impl Allocation {
    pub fn snapshot(&self, farms: &BTreeSet<String>) -> Snapshot {
        Snapshot {
            farms: farms
                .iter()
                .map(|n| (n.clone(), self.farms.get(n).cloned()))
                .collect(),
            next_farm_id: self.next_farm_id,
        }
    }

    pub fn restore(&mut self, s: Snapshot) {
        for (name, fa) in s.farms {
            match fa {
                Some(fa) => self.farms.insert(name, fa),
                None => self.farms.remove(&name),
            };
        }
        self.next_farm_id = s.next_farm_id;
    }

    /// Like `update`, for the named farms only (the others are unchanged by the caller's
    /// knowledge): O(changed farms), not O(configuration).
    pub fn update_farms(&mut self, config: &Config, names: &BTreeSet<String>) -> Result<(), AllocError> {
        let present: HashSet<&str> = config.farms.iter().map(|f| f.name.as_str()).collect();
        for name in names {
            if !present.contains(name.as_str()) {
                self.farms.remove(name);
            }
        }
        let mut farm_ids: Option<FreeIds> = None;
        // In configuration order, so ids come out as a full `update` would give them.
        for farm in config.farms.iter().filter(|f| names.contains(&f.name)) {
            let name = &farm.name;
            if !self.farms.contains_key(name) {
                let ids = farm_ids.get_or_insert_with(|| {
                    FreeIds::new(self.farms.values().map(|f| f.id), self.next_farm_id)
                });
                let id = ids.take().ok_or(AllocError::FarmIds)?;
                self.next_farm_id = ids.cursor();
                self.farms.insert(
                    name.clone(),
                    FarmAlloc {
                        id,
                        ..FarmAlloc::default()
                    },
                );
            }
            if let Some(fa) = self.farms.get_mut(name) {
                fa.update(farm)?;
                // Built now, with the farm's own change, rather than by the next change to one of its
                // backends (which must stay O(change)).
                fa.build_index();
            }
        }
        Ok(())
    }

    /// Brings the allocation in line with `config`: ids for new farms and backends, none for
    /// removed ones, slots for the backends that take new flows. Untouched farms keep everything.
    pub fn update(&mut self, config: &Config) -> Result<(), AllocError> {
        let names: HashSet<&str> = config.farms.iter().map(|f| f.name.as_str()).collect();
        self.farms.retain(|name, _| names.contains(name.as_str()));
        let mut farm_ids = FreeIds::new(self.farms.values().map(|f| f.id), self.next_farm_id);
        for farm in &config.farms {
            if !self.farms.contains_key(&farm.name) {
                let id = farm_ids.take().ok_or(AllocError::FarmIds)?;
                self.farms.insert(
                    farm.name.clone(),
                    FarmAlloc {
                        id,
                        ..FarmAlloc::default()
                    },
                );
            }
            if let Some(fa) = self.farms.get_mut(&farm.name) {
                fa.update(farm)?;
            }
        }
        self.next_farm_id = farm_ids.cursor();
        Ok(())
    }
}

impl FarmAlloc {
    fn update(&mut self, farm: &Farm) -> Result<(), AllocError> {
        self.forget_index();
        // Nothing to forget when every member is still a backend (names are unique).
        if self.members.len() != farm.backends.len()
            || farm.backends.iter().any(|b| !self.members.contains_key(&b.name))
        {
            let names: HashSet<&str> = farm.backends.iter().map(|b| b.name.as_str()).collect();
            self.members.retain(|name, _| names.contains(name.as_str()));
        }
        if self.members.len() < farm.backends.len() {
            let mut ids = FreeIds::new(self.members.values().copied(), self.next_member);
            for b in &farm.backends {
                if !self.members.contains_key(&b.name) {
                    let id = ids
                        .take()
                        .ok_or_else(|| AllocError::MemberIds(farm.name.clone()))?;
                    self.members.insert(b.name.clone(), id);
                }
            }
            self.next_member = ids.cursor();
        }
        let p = effective_priority(farm);
        let top = self.members.values().copied().max().unwrap_or(0);
        let mut want = vec![0u32; usize::from(top) + 1];
        for v6 in [false, true] {
            let mut order = Vec::new();
            for b in &farm.backends {
                if b.ip_addr.is_ipv6() == v6
                    && takes_new_flows(farm, b, p)
                    && let Some(m) = self.members.get(&b.name)
                {
                    want[usize::from(*m)] = effective_weight(b);
                    order.push(*m);
                }
            }
            let old = if v6 { &mut self.slots6 } else { &mut self.slots4 };
            *old = rebalance(old, &want, &order);
            // The other family's turn: a member that changed family leaves this one's slots.
            for m in order {
                want[usize::from(m)] = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(pairs: &[(u16, u32)]) -> (HashMap<u16, u32>, Vec<u16>) {
        (
            pairs.iter().copied().collect(),
            pairs.iter().map(|p| p.0).collect(),
        )
    }

    fn counts(slots: &[u16]) -> HashMap<u16, u32> {
        let mut c = HashMap::new();
        for s in slots {
            *c.entry(*s).or_default() += 1;
        }
        c
    }

    #[test]
    fn new_farm_gets_weight_blocks_in_order() {
        let (w, o) = want(&[(1, 3), (2, 1)]);
        assert_eq!(rebalance_slots(&[], &w, &o), [1, 1, 1, 2]);
    }

    #[test]
    fn removing_a_backend_moves_only_its_slots() {
        let old: Vec<u16> = (1..=10).collect();
        let (w, o) = want(&(1..=10).filter(|m| *m != 3).map(|m| (m, 1)).collect::<Vec<_>>());
        let new = rebalance_slots(&old, &w, &o);
        // Slot 2 (member 3) is refilled by the last slot; nothing else moves.
        assert_eq!(new, [1, 2, 10, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn adding_a_backend_appends_its_slots() {
        let old: Vec<u16> = (1..=5).collect();
        let (w, o) = want(
            &(1..=6)
                .map(|m| (m, if m == 6 { 2 } else { 1 }))
                .collect::<Vec<_>>(),
        );
        assert_eq!(rebalance_slots(&old, &w, &o), [1, 2, 3, 4, 5, 6, 6]);
    }

    #[test]
    fn weight_changes_and_swaps_keep_exact_counts() {
        let (w, o) = want(&[(1, 5), (2, 3), (3, 1)]);
        let s = rebalance_slots(&[], &w, &o);
        let (w2, o2) = want(&[(1, 1), (2, 3), (4, 4)]);
        let s2 = rebalance_slots(&s, &w2, &o2);
        assert_eq!(counts(&s2), w2);
        // Member 2's three slots did not move.
        for (i, m) in s.iter().enumerate() {
            if *m == 2 {
                assert_eq!(s2[i], 2);
            }
        }
        assert_eq!(rebalance_slots(&s2, &HashMap::new(), &[]), Vec::<u16>::new());
    }

    #[test]
    fn a_backend_that_changes_family_moves_its_slots_and_keeps_its_id() {
        let doc = |addr: &str, state: &str| -> Config {
            crate::model::parse_config(
                &serde_json::json!({"farms": [{"name": "f", "family": "dual",
                    "virtual-addresses": ["192.0.2.1", "2001:db8::1"], "scheduler": "weight",
                    "backends": [{"name": "a", "ip-addr": "10.0.0.1", "weight": 2},
                                 {"name": "b", "ip-addr": addr, "weight": 3, "state": state}]}]})
                .to_string(),
            )
            .unwrap()
        };
        let mut a = Allocation::default();
        a.update(&doc("10.0.0.2", "up")).unwrap();
        let fa = &a.farms["f"];
        let (ia, ib) = (fa.members["a"], fa.members["b"]);
        assert_eq!(fa.slots4, [ia, ia, ib, ib, ib]);
        assert!(fa.slots6.is_empty());
        a.update(&doc("2001:db8::2", "up")).unwrap();
        let fa = &a.farms["f"];
        assert_eq!(fa.members["b"], ib);
        assert_eq!(
            (fa.slots4.as_slice(), fa.slots6.as_slice()),
            ([ia, ia].as_slice(), [ib; 3].as_slice())
        );
        a.update(&doc("2001:db8::2", "drain")).unwrap();
        let fa = &a.farms["f"];
        assert_eq!(
            (fa.slots4.as_slice(), fa.slots6.as_slice()),
            ([ia, ia].as_slice(), [].as_slice())
        );
    }

    #[test]
    fn updating_only_the_changed_farms_gives_the_full_result() {
        let doc = |n: usize| -> Config {
            let farms: Vec<serde_json::Value> = (0..n)
                .map(|i| {
                    serde_json::json!({"name": format!("f{i}"), "virtual-addresses": [format!("192.0.2.{i}")],
                    "backends": [{"name": "a", "ip-addr": "10.0.0.1", "weight": i + 1}]})
                })
                .collect();
            serde_json::from_value(serde_json::json!({ "farms": farms })).unwrap()
        };
        let mut full = Allocation::default();
        full.update(&doc(5)).unwrap();
        let mut part = full.clone();
        let mut next = doc(8);
        next.farms.remove(1);
        next.farms[0].backends[0].weight = 9;
        full.update(&next).unwrap();
        let changed: BTreeSet<String> = ["f0", "f1", "f5", "f6", "f7"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let snap = part.snapshot(&changed);
        let before = part.clone();
        part.update_farms(&next, &changed).unwrap();
        assert_eq!(part, full);
        part.restore(snap);
        assert_eq!(part, before, "a snapshot puts the changed farms back");
    }

    #[test]
    fn allocation_is_stable_and_reuses_freed_ids_last() {
        let mut config: Config = serde_json::from_str(
            r#"{"farms":[{"name":"a","virtual-addresses":["192.0.2.1"],"backends":[
                {"name":"x","ip-addr":"10.0.0.1"},{"name":"y","ip-addr":"10.0.0.2","weight":2},
                {"name":"z","ip-addr":"2001:db8::1"}]},
                {"name":"b","virtual-addresses":["192.0.2.2"]}]}"#,
        )
        .unwrap();
        let mut a = Allocation::default();
        a.update(&config).unwrap();
        assert_eq!((a.farms["a"].id, a.farms["b"].id), (1, 2));
        assert_eq!(a.farms["a"].slots4, [1, 2, 2]);
        assert_eq!(a.farms["a"].slots6, [3]);
        let before = a.clone();
        a.update(&config).unwrap();
        assert_eq!(a, before, "an unchanged configuration changes nothing");
        config.farms.remove(0);
        a.update(&config).unwrap();
        config.farms.push(Farm::new("c"));
        a.update(&config).unwrap();
        assert_eq!(
            a.farms["c"].id, 3,
            "a freed id is not reused while others are free"
        );
        assert_eq!(a.farms["b"].id, 2);
        let mut ids = FreeIds::new([2u16, 3].into_iter(), 65534);
        assert_eq!(
            (ids.take(), ids.take(), ids.take()),
            (Some(65535), Some(1), Some(4))
        );
    }
}
