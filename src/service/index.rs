//! Lookups by name in the committed configuration: farm and backend positions and each farm's
//! priority tiers. The writer keeps them one commit at a time from the commit's diff (O(change):
//! a farm of 60,000 backends is not walked to change one), and publishes them with the
//! configuration; the maps are persistent, so publishing a copy is O(1).

use std::sync::Arc;

use imbl::HashMap as PMap;

use super::diff::{Diff, FarmChange, What};
use crate::model::{Backend, Config, Farm, FarmRules, PriorityTiers, whole_farm_pass};

/// A removal costs a binary search on every later lookup: past this many, the farm's positions
/// are written again (O(farm) once per this many removals: amortized O(1)).
const REBUILD_AFTER: usize = 1024;

/// Positions and tiers by name, kept in step with a configuration (see the module).
#[derive(Clone, Default)]
pub struct Names {
    farms: PMap<String, FarmNames>,
}

#[derive(Clone)]
struct FarmNames {
    at: usize,
    /// Backend name → its position as of the last rebuild; one appended since is stored as if
    /// none had been removed, so that `stored − removed before it` is its position in each case.
    backends: PMap<String, u32>,
    /// The stored positions of the backends removed since the last rebuild, ascending.
    removed: Vec<u32>,
    tiers: PriorityTiers,
}

fn pos(i: usize) -> u32 {
    // A farm has at most MAX_BACKENDS_PER_FARM backends (validated), far below u32::MAX.
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl FarmNames {
    fn build(at: usize, farm: &Farm) -> FarmNames {
        whole_farm_pass();
        FarmNames {
            at,
            backends: farm
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| (b.name.clone(), pos(i)))
                .collect(),
            removed: Vec::new(),
            tiers: PriorityTiers::of(farm),
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        let stored = *self.backends.get(name)?;
        let before = self.removed.partition_point(|r| *r < stored);
        Some(stored as usize - before)
    }

    fn remove(&mut self, b: &Backend) {
        if let Some(stored) = self.backends.remove(&b.name) {
            let k = self.removed.partition_point(|r| *r < stored);
            self.removed.insert(k, stored);
        }
        self.tiers.remove(b);
    }

    /// `b` appended at `at`, the end of the list.
    fn append(&mut self, at: usize, b: &Backend) {
        self.backends.insert(b.name.clone(), pos(at + self.removed.len()));
        self.tiers.add(b);
    }

    /// Follows one farm's change; false when it cannot be followed per backend (the caller
    /// rebuilds the farm's part).
    fn follow(&mut self, old: &Farm, new: &Farm, fc: &FarmChange) -> bool {
        if !fc.in_order
            || (fc.backend_list && fc.backends.iter().all(|b| b.what == What::Changed))
            || FarmRules::of(old) != FarmRules::of(new)
        {
            return false;
        }
        // The backends as they were, found before anything moves.
        let mut olds = Vec::with_capacity(fc.backends.len());
        for bc in &fc.backends {
            if bc.what == What::Added {
                olds.push(None);
                continue;
            }
            match self.position(&bc.name).and_then(|p| old.backends.get(p)) {
                Some(b) if b.name == bc.name => olds.push(Some(b)),
                _ => return false,
            }
        }
        for (bc, o) in fc.backends.iter().zip(&olds) {
            if let (What::Removed, Some(o)) = (bc.what, o) {
                self.remove(o);
            }
        }
        let mut adds: Vec<usize> = Vec::new();
        for (bc, o) in fc.backends.iter().zip(&olds) {
            match (bc.what, o) {
                (What::Changed, Some(o)) => match new.backends.get(bc.at) {
                    Some(n) if n.name == bc.name => {
                        self.tiers.remove(o);
                        self.tiers.add(n);
                    }
                    _ => return false,
                },
                (What::Added, _) => adds.push(bc.at),
                _ => {}
            }
        }
        adds.sort_unstable();
        for at in adds {
            // Appended at the end only: an insertion in the middle moves the others.
            match new.backends.get(at) {
                Some(n) if at == self.backends.len() => self.append(at, n),
                _ => return false,
            }
        }
        self.backends.len() == new.backends.len()
    }
}

impl Names {
    /// Everything, from the configuration: O(configuration), at start-up and on reload.
    pub fn build(config: &Config) -> Names {
        Names {
            farms: config
                .farms
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.clone(), FarmNames::build(i, f)))
                .collect(),
        }
    }

    pub fn farm_position(&self, farm: &str) -> Option<usize> {
        self.farms.get(farm).map(|f| f.at)
    }

    /// The positions of the farm and of its backend.
    pub fn backend_position(&self, farm: &str, backend: &str) -> Option<(usize, usize)> {
        let f = self.farms.get(farm)?;
        Some((f.at, f.position(backend)?))
    }

    pub fn tiers(&self, farm: &str) -> Option<&PriorityTiers> {
        self.farms.get(farm).map(|f| &f.tiers)
    }

    /// Follows the commit from `old` (what `self` describes) to `new`, whose changes `diff` says:
    /// O(change), apart from farm-level changes (a farm added, removed or reordered, a farm's
    /// backends reordered), which rebuild what they touch.
    pub fn follow(&mut self, old: &Config, new: &Config, diff: &Diff) {
        // The changed farms as they were, before positions move.
        let olds: Vec<Option<&Farm>> = diff
            .farms
            .iter()
            .map(|fc| {
                self.farm_position(&fc.name)
                    .and_then(|i| old.farms.get(i))
                    .filter(|f| f.name == fc.name)
            })
            .collect();
        if diff.farm_list {
            for fc in diff.farms.iter().filter(|f| f.what == What::Removed) {
                self.farms.remove(&fc.name);
            }
            // Farm-level: every farm's position, O(farms).
            for (i, f) in new.farms.iter().enumerate() {
                match self.farms.get(&f.name).map(|e| e.at) {
                    Some(at) if at == i => {}
                    Some(_) => {
                        if let Some(e) = self.farms.get_mut(&f.name) {
                            e.at = i;
                        }
                    }
                    None => {
                        self.farms.insert(f.name.clone(), FarmNames::build(i, f));
                    }
                }
            }
        }
        for (fc, o) in diff.farms.iter().zip(olds) {
            if fc.what != What::Changed {
                continue;
            }
            let Some(at) = self.farm_position(&fc.name) else {
                continue;
            };
            let Some(n) = new.farms.get(at).filter(|f| f.name == fc.name) else {
                continue;
            };
            let Some(entry) = self.farms.get_mut(&fc.name) else {
                continue;
            };
            let followed = o.is_some_and(|o| entry.follow(o, n, fc));
            if !followed || entry.removed.len() > REBUILD_AFTER {
                *entry = FarmNames::build(at, n);
            }
        }
    }
}

/// The published configuration with its lookups: what readers (property reads of thousands of
/// farms and backends) use instead of searching by name.
pub struct ConfigIndex {
    pub config: Arc<Config>,
    names: Names,
}

impl ConfigIndex {
    /// The lookups of `config`, built whole: O(configuration).
    pub fn build(config: Arc<Config>) -> ConfigIndex {
        let names = Names::build(&config);
        ConfigIndex { config, names }
    }

    /// `config` with lookups kept in step with it (see [`Names::follow`]).
    pub fn with(config: Arc<Config>, names: Names) -> ConfigIndex {
        ConfigIndex { config, names }
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn farm(&self, name: &str) -> Option<&Farm> {
        let at = self.names.farm_position(name)?;
        self.config.farms.get(at)
    }

    pub fn backend(&self, farm: &str, name: &str) -> Option<(&Farm, &Backend)> {
        let (i, j) = self.names.backend_position(farm, name)?;
        let f = self.config.farms.get(i)?;
        Some((f, f.backends.get(j)?))
    }

    /// The farm's highest backend priority in use now.
    pub fn effective_priority(&self, farm: &str) -> Option<u32> {
        self.names.tiers(farm).map(PriorityTiers::effective)
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
