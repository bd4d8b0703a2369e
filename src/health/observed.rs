//! What the checker saw last, per backend: when it last checked and how long the probe took.
//! Runtime facts, not configuration: they never go to the canonical JSON or the journal, and a
//! check writes this map, never a commit. The fronts read it when asked.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One backend's last check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LastCheck {
    /// When the last run started, in microseconds since the epoch (0: never checked).
    pub at_us: u64,
    /// How long that run took, in microseconds (its timeout when it timed out).
    pub duration_us: u64,
    /// Whether that run succeeded (health itself turns only after rise or fall runs).
    pub ok: bool,
}

impl LastCheck {
    pub fn new(at: SystemTime, took: Duration, ok: bool) -> LastCheck {
        LastCheck {
            at_us: micros(at.duration_since(UNIX_EPOCH).unwrap_or_default()),
            duration_us: micros(took),
            ok,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Farm → backend → last check. Farm first, so a farm's backends are read under one lock and a
/// lookup needs no owned key.
#[derive(Debug, Default)]
pub struct Observed {
    farms: Mutex<HashMap<String, HashMap<String, LastCheck>>>,
}

impl Observed {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, LastCheck>>> {
        // A writer that panicked left whole entries: the map is still right to read.
        self.farms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a run for every backend `targets` names.
    pub fn record<'a>(&self, targets: impl IntoIterator<Item = (&'a str, &'a str)>, last: LastCheck) {
        let mut farms = self.lock();
        for (farm, backend) in targets {
            let backends = match farms.get_mut(farm) {
                Some(b) => b,
                None => farms.entry(farm.to_string()).or_default(),
            };
            match backends.get_mut(backend) {
                Some(entry) => *entry = last,
                None => {
                    backends.insert(backend.to_string(), last);
                }
            }
        }
    }

    /// Forgets a backend that is no longer checked.
    pub fn forget(&self, farm: &str, backend: &str) {
        let mut farms = self.lock();
        if let Some(backends) = farms.get_mut(farm) {
            backends.remove(backend);
            if backends.is_empty() {
                farms.remove(farm);
            }
        }
    }

    /// A backend's last check (`None`: not checked yet, or not checked at all).
    pub fn get(&self, farm: &str, backend: &str) -> Option<LastCheck> {
        self.lock().get(farm)?.get(backend).copied()
    }

    /// Every backend of `farm` checked so far.
    pub fn farm(&self, farm: &str) -> HashMap<String, LastCheck> {
        self.lock().get(farm).cloned().unwrap_or_default()
    }

    /// Every backend's last check (benches and tests).
    pub fn all(&self) -> Vec<(String, String, LastCheck)> {
        let farms = self.lock();
        let mut out = Vec::new();
        for (f, backends) in farms.iter() {
            out.extend(backends.iter().map(|(b, l)| (f.clone(), b.clone(), *l)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_reads_and_forgets_per_backend() {
        let o = Observed::default();
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let l = LastCheck::new(at, Duration::from_micros(1500), true);
        assert_eq!(
            l,
            LastCheck {
                at_us: 1_700_000_000_123_456,
                duration_us: 1500,
                ok: true
            }
        );
        o.record([("web", "a"), ("db", "a")], l);
        assert_eq!(o.get("web", "a"), Some(l));
        assert_eq!(o.get("db", "a"), Some(l));
        assert_eq!(o.get("web", "b"), None);
        let later = LastCheck {
            at_us: 2,
            duration_us: 3,
            ok: false,
        };
        o.record([("web", "a")], later);
        assert_eq!(o.get("web", "a"), Some(later));
        assert_eq!(o.farm("web").len(), 1);
        o.forget("web", "a");
        assert_eq!(o.get("web", "a"), None);
        assert!(o.farm("web").is_empty());
        assert_eq!(o.all(), vec![("db".into(), "a".into(), l)]);
    }
}
