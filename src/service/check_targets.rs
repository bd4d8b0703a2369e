//! Which backends the daemon's checker probes, and how one committed change moves them: read
//! from the change's diff, so a change to one backend costs that backend, never a pass over the
//! configuration (the whole set is computed once, at start).

use super::diff::{BackendChange, Diff, FarmChange, KeyChange, What};
use crate::health::{Target, TargetName};
use crate::model::{Backend, Config, Farm, Health, effective};

/// Farm keys a backend's target is made of (its check, and the port when the check and the
/// backend have none).
const FARM_KEYS: &[&str] = &["health-check", "virtual-ports"];
/// Backend keys a target is made of.
const BACKEND_KEYS: &[&str] = &["name", "ip-addr", "port", "health-check"];

/// A backend's target: its effective check and the port probed; none when it is not checked.
pub fn target(farm: &Farm, b: &Backend) -> Option<Target> {
    if farm.health_check.is_none() && b.health_check.is_none() {
        return None;
    }
    // Validation refused a check that does not merge or has no port before it was committed.
    let check = effective(farm.health_check.as_ref(), b.health_check.as_ref()).ok()??;
    let farm_port = farm.virtual_ports.as_slice().first().map(|r| r.first);
    let port = check.probe_port(b.port, farm_port)?;
    Some(Target {
        farm: farm.name.clone(),
        backend: b.name.clone(),
        addr: b.ip_addr,
        port,
        check,
    })
}

/// Every checked backend of the configuration.
pub fn all(config: &Config) -> Vec<Target> {
    config
        .farms
        .iter()
        .flat_map(|f| f.backends.iter().filter_map(move |b| target(f, b)))
        .collect()
}

/// What a commit does to the checker's targets.
#[derive(Debug, Default, PartialEq)]
pub struct Moves {
    /// Targets new or changed (the checker leaves one that did not change as it is).
    pub added: Vec<Target>,
    pub removed: Vec<TargetName>,
    /// Backends that lost their check and still carry its last verdict: no check will ever
    /// change it again, so it is put back to `unknown` (a failing one would stay out for good).
    pub stale: Vec<TargetName>,
}

impl Moves {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.stale.is_empty()
    }
}

/// How the commit from `old` to `new` (whose diff is `diff`) moves the targets.
pub fn moves(old: &Config, new: &Config, diff: &Diff) -> Moves {
    let mut m = Moves::default();
    for fc in &diff.farms {
        match fc.what {
            What::Removed => {
                if let Some(f) = farm_at(old, fc) {
                    m.removed
                        .extend(f.backends.iter().map(|b| (f.name.clone(), b.name.clone())));
                }
            }
            What::Added => {
                if let Some(f) = farm_at(new, fc) {
                    m.added.extend(f.backends.iter().filter_map(|b| target(f, b)));
                }
            }
            What::Changed => changed_farm(&mut m, old, new, fc),
        }
    }
    m
}

fn changed_farm(m: &mut Moves, old: &Config, new: &Config, fc: &FarmChange) {
    let (Some(was), Some(is)) = (farm_at(old, fc), farm_at(new, fc)) else {
        return;
    };
    for bc in fc.backends.iter().filter(|bc| bc.what == What::Removed) {
        m.removed.push((fc.name.clone(), bc.name.clone()));
    }
    if touches(&fc.keys, FARM_KEYS) {
        // The farm's check or port: every backend's target may have changed (O(farm), looked up
        // by name once the lists no longer line up).
        let mut by_name: Option<std::collections::HashMap<&str, &Backend>> = None;
        for (i, b) in is.backends.iter().enumerate() {
            let before = match was.backends.get(i) {
                Some(o) if o.name == b.name => Some(o),
                _ => by_name
                    .get_or_insert_with(|| was.backends.iter().map(|o| (o.name.as_str(), o)).collect())
                    .get(b.name.as_str())
                    .copied(),
            };
            follow(m, was, before, is, b);
        }
        return;
    }
    for bc in &fc.backends {
        let wanted = match bc.what {
            What::Added => true,
            What::Changed => touches(&bc.keys, BACKEND_KEYS),
            What::Removed => false,
        };
        if !wanted {
            continue;
        }
        if let Some(b) = backend_at(is, bc) {
            // An added backend was not there (looking would search the whole farm).
            let before = match bc.what {
                What::Added => None,
                _ => backend_named(was, &bc.name, Some(bc.at)),
            };
            follow(m, was, before, is, b);
        }
    }
}

/// One backend's target after a change that may have moved it.
fn follow(m: &mut Moves, was: &Farm, before: Option<&Backend>, is: &Farm, b: &Backend) {
    match target(is, b) {
        Some(t) => m.added.push(t),
        None => {
            let name = (is.name.clone(), b.name.clone());
            let checked = before.is_some_and(|o| target(was, o).is_some());
            if checked && b.health != Health::Unknown {
                m.stale.push(name.clone());
            }
            m.removed.push(name);
        }
    }
}

fn touches(keys: &[KeyChange], names: &[&str]) -> bool {
    keys.iter().any(|k| names.contains(&k.key.as_str()))
}

/// The farm a change names, where the diff says it is (searched only when the list moved).
fn farm_at<'a>(config: &'a Config, fc: &FarmChange) -> Option<&'a Farm> {
    match config.farms.get(fc.at) {
        Some(f) if f.name == fc.name => Some(f),
        _ => config.farms.iter().find(|f| f.name == fc.name),
    }
}

fn backend_at<'a>(farm: &'a Farm, bc: &BackendChange) -> Option<&'a Backend> {
    backend_named(farm, &bc.name, Some(bc.at))
}

/// A backend by name, looked for first at `hint` (changes in place keep positions).
fn backend_named<'a>(farm: &'a Farm, name: &str, hint: Option<usize>) -> Option<&'a Backend> {
    match hint.and_then(|i| farm.backends.get(i)) {
        Some(b) if b.name == name => Some(b),
        _ => farm.backends.iter().find(|b| b.name == name),
    }
}
