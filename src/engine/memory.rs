//! An engine whose "ruleset" is the committed configuration in memory, so the service and the
//! front ends can be tested without privileges, a kernel or a bus.
//!
//! It validates as the kernel engine does (the model's rules, then `check_supported`), allocates
//! ids and slots the same way, and counts its transactions. A test drives the datapath side
//! through a [`MemoryControl`]: counters, learnt sessions, and refusals of the next commits or of
//! commits touching a given object, which fail like a kernel refusal and change nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::model::{self, Config, Farm, KeyValue};
use crate::netlink::{self, KernelFeatures};

use super::alloc::SlotDelta;
use super::api::Engine;
use super::persist::format_client;
use super::{Allocation, EngineError, Outcome, Result, SessionInfo, Traffic, check_supported};

/// The in-memory engine. Cloning its [`MemoryControl`] (before handing the engine to a service)
/// keeps a hand on it.
pub struct MemoryEngine {
    features: KernelFeatures,
    config: Config,
    alloc: Allocation,
    control: MemoryControl,
    /// The slot edits of the last commit, per farm allocated before and after.
    deltas: HashMap<String, SlotDelta>,
}

/// What a test sets and observes of a [`MemoryEngine`], shared with it (cheap to clone).
#[derive(Clone, Default)]
pub struct MemoryControl {
    shared: Arc<Mutex<Controls>>,
}

type Matcher = Box<dyn Fn(&str) -> bool + Send>;

#[derive(Default)]
struct Controls {
    generation: u32,
    transactions: usize,
    fail_next: usize,
    fail_when: Option<Matcher>,
    traffic: HashMap<(String, Option<String>), Traffic>,
    policy_counters: HashMap<(String, String), (u64, u64)>,
    learnt: Vec<Learnt>,
}

/// A session the datapath learnt, as a test injects it.
struct Learnt {
    farm: String,
    client: String,
    backend: String,
    expires_ms: u64,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        MemoryEngine::new()
    }
}

impl MemoryEngine {
    /// An empty engine on a kernel that has every feature.
    pub fn new() -> MemoryEngine {
        MemoryEngine::with_features(KernelFeatures {
            table_owner: true,
            table_persist: true,
            queue: true,
            flowtable: true,
        })
    }

    /// An empty engine on a kernel with these features (to test refusals of missing ones).
    pub fn with_features(features: KernelFeatures) -> MemoryEngine {
        MemoryEngine {
            features,
            config: Config::default(),
            alloc: Allocation::default(),
            control: MemoryControl::default(),
            deltas: HashMap::new(),
        }
    }

    pub fn control(&self) -> MemoryControl {
        self.control.clone()
    }

    fn farm(&self, name: &str) -> Result<&Farm> {
        self.config
            .farm(name)
            .ok_or_else(|| EngineError::NotFound(format!("no farm is named {name:?}")))
    }

    /// Validates and allocates as the kernel engine does; commits `config` if it differs.
    fn commit_config(&mut self, config: Config, mut alloc: Allocation) -> Result<Outcome> {
        model::validate(&config)?;
        check_supported(&config, &self.features)?;
        alloc.update(&config)?;
        let mut changes = describe(&self.config, &config);
        if changes.is_empty() && alloc != self.alloc {
            changes.push("replace allocation".to_string());
        }
        let mut c = self.control.lock();
        let outcome = c.transact(changes)?;
        c.learnt
            .retain(|l| config.farm(&l.farm).is_some_and(|f| !f.persistence.is_empty()));
        drop(c);
        self.deltas = alloc
            .farms
            .iter()
            .filter_map(|(name, after)| {
                let before = self.alloc.farms.get(name).filter(|b| b.id == after.id)?;
                Some((name.clone(), SlotDelta::between(before, after)))
            })
            .collect();
        self.config = config;
        self.alloc = alloc;
        Ok(outcome)
    }

    /// Deletes the farm's learnt sessions (of `client`, or all) in one transaction;
    /// `None` when there is none.
    fn forget(&self, farm: &Farm, client: Option<&[KeyValue]>) -> Option<Result<Outcome>> {
        let mut c = self.control.lock();
        let doomed = c.learnt_of(farm, client);
        if doomed.is_empty() {
            return None;
        }
        let changes = doomed
            .iter()
            .map(|(_, v)| format!("delete session {} {}", farm.name, format_client(v)))
            .collect();
        let outcome = c.transact(changes);
        if outcome.is_ok() {
            for (i, _) in doomed.into_iter().rev() {
                c.learnt.remove(i);
            }
        }
        Some(outcome)
    }
}

/// One change per farm or policy added, replaced or deleted (`add farm web`), in the order of
/// the configurations.
fn describe(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for f in &new.farms {
        match old.farm(&f.name) {
            None => out.push(format!("add farm {}", f.name)),
            Some(o) if o != f => out.push(format!("replace farm {}", f.name)),
            Some(_) => {}
        }
    }
    for f in old.farms.iter().filter(|f| new.farm(&f.name).is_none()) {
        out.push(format!("delete farm {}", f.name));
    }
    for p in &new.policies {
        match old.policies.iter().find(|o| o.name == p.name) {
            None => out.push(format!("add policy {}", p.name)),
            Some(o) if o != p => out.push(format!("replace policy {}", p.name)),
            Some(_) => {}
        }
    }
    for p in old
        .policies
        .iter()
        .filter(|p| !new.policies.iter().any(|n| n.name == p.name))
    {
        out.push(format!("delete policy {}", p.name));
    }
    out
}

impl Controls {
    /// The farm's learnt sessions (of `client`, or all) that parse as its persistence key:
    /// their index in `learnt` (ascending) and key values.
    fn learnt_of(&self, farm: &Farm, client: Option<&[KeyValue]>) -> Vec<(usize, Vec<KeyValue>)> {
        if farm.persistence.is_empty() {
            return Vec::new();
        }
        self.learnt
            .iter()
            .enumerate()
            .filter(|(_, l)| l.farm == farm.name)
            .filter_map(|(i, l)| Some((i, model::parse_session_client(&farm.persistence, &l.client).ok()?)))
            .filter(|(_, v)| client.is_none_or(|c| c == v.as_slice()))
            .collect()
    }

    /// One transaction of `changes` (none: nothing is sent), or its refusal when asked for.
    fn transact(&mut self, changes: Vec<String>) -> Result<Outcome> {
        if changes.is_empty() {
            return Ok(Outcome::default());
        }
        self.transactions += 1;
        let culprit = match &self.fail_when {
            Some(m) => changes.iter().position(|ch| m(ch)),
            None => None,
        };
        let culprit = culprit.or_else(|| {
            (self.fail_next > 0).then(|| {
                self.fail_next -= 1;
                0
            })
        });
        if let Some(i) = culprit {
            return Err(EngineError::Kernel(netlink::Error::Kernel {
                what: format!("{} (message {} of {})", changes[i], i + 1, changes.len()),
                errno: libc::EPERM,
                detail: Some("refused by the in-memory engine, as its test asked".into()),
            }));
        }
        self.generation += 1;
        Ok(Outcome {
            generation: Some(self.generation),
            messages: changes.len(),
            changes,
        })
    }
}

impl MemoryControl {
    fn lock(&self) -> MutexGuard<'_, Controls> {
        // A test that panicked while holding the lock left plain data: still usable.
        match self.shared.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The next `n` transactions are refused (each naming its first change).
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// Transactions with a change `matches` accepts (`"replace farm web"`) are refused, naming
    /// that change, until [`MemoryControl::stop_failing`].
    pub fn fail_when(&self, matches: impl Fn(&str) -> bool + Send + 'static) {
        self.lock().fail_when = Some(Box::new(matches));
    }

    pub fn stop_failing(&self) {
        let mut c = self.lock();
        c.fail_next = 0;
        c.fail_when = None;
    }

    /// Transactions committed so far (the ruleset's generation; 0 before the first).
    pub fn generation(&self) -> u32 {
        self.lock().generation
    }

    /// Transactions sent so far, committed or refused (a configuration refused by validation is
    /// never sent).
    pub fn transactions(&self) -> usize {
        self.lock().transactions
    }

    /// What the farm (`backend` `None`) or one of its backends has carried.
    pub fn set_traffic(&self, farm: &str, backend: Option<&str>, traffic: Traffic) {
        self.lock()
            .traffic
            .insert((farm.to_string(), backend.map(str::to_string)), traffic);
    }

    /// What one element of a policy has matched.
    pub fn set_policy_counter(&self, policy: &str, element: &str, traffic: (u64, u64)) {
        self.lock()
            .policy_counters
            .insert((policy.to_string(), element.to_string()), traffic);
    }

    /// A session the datapath learnt: `client` as the farm's persistence key
    /// (`"192.0.2.7 . 40000"`). Listed while the farm keeps persistence and the client parses.
    pub fn learn_session(&self, farm: &str, client: &str, backend: &str, expires_ms: u64) {
        self.lock().learnt.push(Learnt {
            farm: farm.to_string(),
            client: client.to_string(),
            backend: backend.to_string(),
            expires_ms,
        });
    }
}

impl Engine for MemoryEngine {
    fn features(&self) -> &KernelFeatures {
        &self.features
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn allocation(&self) -> &Allocation {
        &self.alloc
    }

    fn reconcile(&mut self, config: Config, alloc: Allocation) -> Result<Outcome> {
        let outcome = self.commit_config(config, alloc)?;
        // As the kernel engine: a reconciliation's slot edits are not told.
        self.deltas.clear();
        Ok(outcome)
    }

    fn apply(&mut self, config: Config) -> Result<Outcome> {
        let alloc = self.alloc.clone();
        // A simulator: it compares whole configurations, which the service's tests do not count.
        model::uncounted(|| self.commit_config(config, alloc))
    }

    /// The policy's elements as configured (the kernel engine lists merged ranges).
    fn slot_delta(&self, farm: &str) -> Option<&SlotDelta> {
        self.deltas.get(farm)
    }

    fn policy_counters(&mut self, policy: &str) -> Result<Vec<(String, u64, u64)>> {
        let p = self
            .config
            .policies
            .iter()
            .find(|p| p.name == policy)
            .ok_or_else(|| EngineError::NotFound(format!("no policy is named {policy:?}")))?;
        let c = self.control.lock();
        Ok(p.elements
            .iter()
            .map(|e| {
                let (packets, bytes) = c
                    .policy_counters
                    .get(&(policy.to_string(), e.to_string()))
                    .copied()
                    .unwrap_or_default();
                (e.to_string(), packets, bytes)
            })
            .collect())
    }

    fn traffic(&mut self, farm: &str, backend: Option<&str>) -> Result<Traffic> {
        let f = self.farm(farm)?;
        if let Some(b) = backend
            && f.backend(b).is_none()
        {
            return Err(EngineError::NotFound(format!(
                "farm {farm:?} has no backend {b:?}"
            )));
        }
        let key = (farm.to_string(), backend.map(str::to_string));
        Ok(self.control.lock().traffic.get(&key).copied().unwrap_or_default())
    }

    fn farm_traffic(&mut self, farm: &str) -> Result<(Traffic, Vec<(String, Traffic)>)> {
        let names: Vec<String> = self.farm(farm)?.backends.iter().map(|b| b.name.clone()).collect();
        let total = self.traffic(farm, None)?;
        let each = names
            .into_iter()
            .map(|b| self.traffic(farm, Some(&b)).map(|t| (b, t)))
            .collect::<Result<Vec<_>>>()?;
        Ok((total, each))
    }

    fn sessions(&mut self, farm: &str) -> Result<Vec<SessionInfo>> {
        let f = self.farm(farm)?;
        if f.persistence.is_empty() {
            return Ok(Vec::new());
        }
        let backend = |name: &str| f.backend(name).map(|b| b.name.clone());
        let mut out: Vec<SessionInfo> = f
            .sessions
            .iter()
            .map(|s| SessionInfo {
                client: s.client.to_string(),
                backend: backend(&s.backend),
                expires_ms: None,
            })
            .collect();
        let c = self.control.lock();
        for (i, values) in c.learnt_of(f, None) {
            if let Some(l) = c.learnt.get(i) {
                out.push(SessionInfo {
                    client: format_client(&values),
                    backend: backend(&l.backend),
                    expires_ms: Some(l.expires_ms),
                });
            }
        }
        Ok(out)
    }

    fn delete_session(&mut self, farm: &str, client: &str) -> Result<Outcome> {
        let f = self.farm(farm)?;
        let (values, without) = super::persist::unpin(&self.config, f, client)?;
        if let Some(config) = without {
            return self.apply(config);
        }
        self.forget(f, Some(&values)).unwrap_or_else(|| {
            Err(EngineError::NotFound(format!(
                "farm {farm:?} has no session for {client:?}"
            )))
        })
    }

    fn flush_sessions(&mut self, farm: &str) -> Result<Outcome> {
        let f = self.farm(farm)?;
        self.forget(f, None).unwrap_or_else(|| Ok(Outcome::default()))
    }

    fn refresh_l2(&mut self) -> Result<Outcome> {
        // No host to follow: layer-2 farms resolve to nothing that could change.
        Ok(Outcome::default())
    }

    fn portid(&self) -> Option<u32> {
        None
    }

    fn commits(&self) -> u64 {
        0
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
