//! What backend states and priorities mean for scheduling (docs/json.md; as nftlb's priority tiers).
//!
//! - `up`: schedulable when its priority tier is active.
//! - `drain`: no new flows; established flows and persistent clients continue.
//! - `down` (failed) and `off` (administratively out): no new flows, persistent clients move away.
//!
//! Health (`health`, set by checks) is a separate field: a `failing` backend that is `up` schedules
//! as `down` does (no new flows, persistent clients move away, it brings in the next tier); a
//! `drain` or `off` backend stays what it is whatever its health. An agent check's advice is health
//! too: its `drain` (`health-drain`) makes an `up` backend schedule as `drain`, and its
//! percentage (`health-weight`) with a slow start's ramp (`health-ramp`) scale the weight the
//! slots are given (`effective_weight`).
//!
//! A farm's `health-start` decides what `unknown` means for a checked backend: `optimistic` (the
//! default) schedules it as healthy; `pessimistic` as failing (no new flows, the next tier in)
//! until its first verdict. Established flows and persistent clients stay either way: nothing
//! has been said against the backend. Unchecked backends are never held back by it.
//!
//! Priority tiers as in nftlb: starting at 1, every backend of the active tiers that does not take
//! new flows brings in one more tier, until that is stable. So with `a` (priority 1) and `b`
//! (priority 2), `b` is a hot standby until `a` fails; two failures in tier 1 bring in tiers 2 and 3.

use std::collections::BTreeMap;

use super::config::{Backend, Farm};
use super::health::{Health, HealthStart, is_checked};
use super::values::{BackendState, FarmState};

/// What of its farm a backend's scheduling depends on besides the backend itself. O(1) to take,
/// so one backend's change stays O(1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FarmRules {
    /// `health-start: pessimistic`.
    pub pessimistic: bool,
    /// The farm has a `health-check` (its backends are checked unless they opt out).
    pub farm_checked: bool,
}

impl FarmRules {
    pub fn of(farm: &Farm) -> FarmRules {
        FarmRules {
            pessimistic: farm.health_start == HealthStart::Pessimistic,
            farm_checked: farm.health_check.is_some(),
        }
    }
}

/// The highest backend priority currently in use by the farm.
pub fn effective_priority(farm: &Farm) -> u32 {
    let rules = FarmRules::of(farm);
    let mut p = 1u32;
    loop {
        let failed = farm
            .backends
            .iter()
            .filter(|b| b.priority <= p && !counts_as_up(rules, b))
            .count() as u32;
        let next = 1u32.saturating_add(failed);
        if next <= p {
            return p;
        }
        p = next;
    }
}

/// A farm's backends that are not `up`, counted per priority: [`effective_priority`] kept up to
/// date one backend at a time. Add every backend of the farm (or use [`PriorityTiers::of`]), then
/// `remove` a backend as it was and `add` it as it is on each change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriorityTiers {
    not_up: BTreeMap<u32, u32>,
    /// The highest priority of any backend counted (a high-water mark: `remove` keeps it).
    highest: u32,
    /// The weights of the backends counted, added up.
    weight: u64,
    /// The farm's, when counted with [`PriorityTiers::of`]; a farm-level change counts anew.
    rules: FarmRules,
}

impl PriorityTiers {
    /// Counts every backend of the farm: O(farm), for farm-level changes and start-up only.
    pub fn of(farm: &Farm) -> PriorityTiers {
        whole_farm_pass();
        let mut t = PriorityTiers {
            rules: FarmRules::of(farm),
            ..PriorityTiers::default()
        };
        for b in &farm.backends {
            t.add(b);
        }
        t
    }

    pub fn add(&mut self, b: &Backend) {
        self.highest = self.highest.max(b.priority);
        self.weight += u64::from(b.weight);
        if !counts_as_up(self.rules, b) {
            let n = self.not_up.entry(b.priority).or_default();
            *n = n.saturating_add(1);
        }
    }

    /// Forgets a backend that was added (as it was when added).
    pub fn remove(&mut self, b: &Backend) {
        self.weight = self.weight.saturating_sub(u64::from(b.weight));
        if !counts_as_up(self.rules, b)
            && let Some(n) = self.not_up.get_mut(&b.priority)
        {
            *n -= 1;
            if *n == 0 {
                self.not_up.remove(&b.priority);
            }
        }
    }

    /// The highest priority of a backend counted, removed ones included: above it every tier is
    /// active alike, so effective priorities capped at it schedule the same backends.
    pub fn highest(&self) -> u32 {
        self.highest.max(1)
    }

    /// The weights of the backends counted.
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// What [`effective_priority`] gives for the farm, in O(distinct priorities of backends not up).
    pub fn effective(&self) -> u32 {
        let mut p = 1u32;
        let mut failed = 0u32;
        let mut tiers = self.not_up.iter().peekable();
        loop {
            while let Some((_, n)) = tiers.next_if(|(prio, _)| **prio <= p) {
                failed = failed.saturating_add(*n);
            }
            let next = 1u32.saturating_add(failed);
            if next <= p {
                return p;
            }
            p = next;
        }
    }
}

#[cfg(test)]
thread_local! {
    static WHOLE_FARM_PASSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static UNCOUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks a pass over every backend of a farm on a change's way (or over every leaf of a large
/// list, see `List`), so that tests can assert that a change to one backend makes none (a
/// count, not a timing: it cannot be flaky). Counted per thread, as each service has its own
/// writer thread.
pub fn whole_farm_pass() {
    #[cfg(test)]
    if !UNCOUNTED.with(|u| u.get()) {
        WHOLE_FARM_PASSES.with(|c| c.set(c.get() + 1));
    }
}

/// Runs `f` without counting its passes: what is O(configuration) on purpose (the in-memory
/// engine, debug builds' checks of what an edit says it touched).
pub fn uncounted<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(test)]
    {
        let was = UNCOUNTED.with(|u| u.replace(true));
        let r = f();
        UNCOUNTED.with(|u| u.set(was));
        r
    }
    #[cfg(not(test))]
    f()
}

/// How many whole-farm passes this thread made so far.
#[cfg(test)]
pub fn whole_farm_passes() -> usize {
    WHOLE_FARM_PASSES.with(|c| c.get())
}

/// Whether the backend is `up` and not failing its checks (nor, in a pessimistic farm, waiting
/// for its first one), and no agent asks it to drain or to take 0 % of its weight: what the
/// priority tiers count. An agent's drain or 0 % brings in the next tier as an operator's drain
/// does, so a tier whose agents all say 0 % does not leave the farm without backends.
fn counts_as_up(rules: FarmRules, backend: &Backend) -> bool {
    backend.state == BackendState::Up
        && !backend.health_drain
        && backend.health_weight != Some(0)
        && match backend.health {
            Health::Healthy => true,
            Health::Failing => false,
            Health::Unknown => {
                !(rules.pessimistic && is_checked(rules.farm_checked, backend.health_check.as_ref()))
            }
        }
}

/// The state the scheduler acts on: `up` with a failing check is `down`, `up` with an agent's
/// `drain` advice is `drain`; any other state is its own (a check never overrides drain or off).
/// The words of `StateChanged`.
pub fn effective_state(backend: &Backend) -> BackendState {
    match (backend.state, backend.health) {
        (BackendState::Up, Health::Failing) => BackendState::Down,
        (BackendState::Up, _) if backend.health_drain => BackendState::Drain,
        (state, _) => state,
    }
}

/// Whether the scheduler gives new connections to this backend of `farm` (at the farm's
/// effective priority). Reads only the farm's own keys, not its other backends.
pub fn takes_new_flows(farm: &Farm, backend: &Backend, effective_priority: u32) -> bool {
    counts_as_up(FarmRules::of(farm), backend) && backend.priority <= effective_priority
}

/// `Backend.Active` of both front ends: the scheduler gives it new connections now (the farm is
/// up, the backend is up and in an active priority tier).
pub fn is_active(farm: &Farm, backend: &Backend, effective_priority: u32) -> bool {
    farm.state == FarmState::Up && takes_new_flows(farm, backend, effective_priority)
}

/// Whether persistent clients and established flows may stay with this backend.
pub fn keeps_clients(backend: &Backend) -> bool {
    matches!(effective_state(backend), BackendState::Up | BackendState::Drain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Backend;

    fn farm(backends: &[(u32, BackendState)]) -> Farm {
        let mut f = Farm::new("f");
        for (i, (prio, state)) in backends.iter().enumerate() {
            let mut b = Backend::new(&format!("b{i}"), "10.0.0.1".parse().unwrap());
            b.priority = *prio;
            b.state = *state;
            f.backends.push(b);
        }
        f
    }

    use BackendState::*;

    #[test]
    fn standby_tier_comes_in_when_the_primary_fails() {
        // nftlb API test 038.
        let f = farm(&[(1, Up), (2, Up)]);
        assert_eq!(effective_priority(&f), 1);
        assert!(!takes_new_flows(&f, &f.backends[1], 1));
        let f = farm(&[(1, Off), (2, Up)]);
        assert_eq!(effective_priority(&f), 2);
        assert!(takes_new_flows(&f, &f.backends[1], 2));
    }

    #[test]
    fn an_agent_s_drain_or_zero_is_a_drain_that_an_operator_s_state_and_a_failure_outrank() {
        let f = farm(&[(1, Up), (1, Up), (2, Up)]);
        let mut f2 = f.clone();
        f2.backends[0].health_drain = true;
        assert_eq!(effective_state(&f2.backends[0]), Drain);
        assert!(!takes_new_flows(&f2, &f2.backends[0], 2));
        assert!(keeps_clients(&f2.backends[0]));
        // It brings in the next tier, as an operator's drain does.
        assert_eq!(effective_priority(&f2), 2);
        let mut zero = f.clone();
        zero.backends[1].health_weight = Some(0);
        assert_eq!(effective_state(&zero.backends[1]), Up);
        assert!(!takes_new_flows(&zero, &zero.backends[1], 2));
        assert_eq!(effective_priority(&zero), 2);
        // A share above 0 keeps it in.
        zero.backends[1].health_weight = Some(1);
        assert!(takes_new_flows(&zero, &zero.backends[1], 1));
        // Off stays off, failing is down.
        f2.backends[0].state = Off;
        assert_eq!(effective_state(&f2.backends[0]), Off);
        f2.backends[0].state = Up;
        f2.backends[0].health = Health::Failing;
        assert_eq!(effective_state(&f2.backends[0]), Down);
        assert!(!keeps_clients(&f2.backends[0]));
    }

    #[test]
    fn each_failure_brings_in_one_more_tier() {
        let f = farm(&[(1, Down), (1, Drain), (2, Up), (3, Up), (4, Up)]);
        assert_eq!(effective_priority(&f), 3);
        // A failure in a tier that came in brings in the next one.
        let f = farm(&[(1, Down), (2, Down), (3, Up)]);
        assert_eq!(effective_priority(&f), 3);
        let f = farm(&[(1, Up), (1, Up)]);
        assert_eq!(effective_priority(&f), 1);
        assert_eq!(effective_priority(&farm(&[])), 1);
    }

    #[test]
    fn tiers_kept_one_backend_at_a_time_agree_with_the_whole_farm() {
        // xorshift64: deterministic cases.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let states = [Up, Drain, Down, Off];
        let mut moved = 0;
        for _ in 0..200 {
            let mut f = farm(&[]);
            let mut tiers = PriorityTiers::of(&f);
            for step in 0..100 {
                let before = effective_priority(&f);
                let n = f.backends.len() as u64;
                let mut b = Backend::new(&format!("s{step}"), "10.0.0.1".parse().unwrap());
                b.priority = next(6) as u32 + 1;
                b.state = states[next(4) as usize];
                match next(3) {
                    0 if n > 0 => tiers.remove(&f.backends.remove(next(n) as usize)),
                    1 if n > 0 => {
                        let i = next(n) as usize;
                        tiers.remove(&f.backends[i]);
                        f.backends[i] = b.clone();
                        tiers.add(&b);
                    }
                    _ => {
                        f.backends.push(b.clone());
                        tiers.add(&b);
                    }
                }
                assert_eq!(tiers.effective(), effective_priority(&f), "{:?}", f.backends);
                let whole = PriorityTiers::of(&f);
                assert_eq!((&tiers.not_up, tiers.weight()), (&whole.not_up, whole.weight()));
                // A high-water mark: removed backends' priorities count.
                assert!(tiers.highest() >= whole.highest());
                moved += usize::from(before != effective_priority(&f));
            }
        }
        assert!(
            moved > 1000,
            "the effective priority changed in only {moved} steps"
        );
    }

    fn failing(mut f: Farm, i: usize) -> Farm {
        if let Some(b) = f.backends.get_mut(i) {
            b.health = Health::Failing;
        }
        f
    }

    #[test]
    fn a_failing_backend_takes_no_new_flows_and_loses_its_clients() {
        let f = failing(farm(&[(1, Up), (1, Up)]), 0);
        let p = effective_priority(&f);
        let new: Vec<bool> = f.backends.iter().map(|b| takes_new_flows(&f, b, p)).collect();
        assert_eq!(new, [false, true]);
        assert!(!keeps_clients(&f.backends[0]));
        assert_eq!(effective_state(&f.backends[0]), Down);
        assert!(!is_active(&f, &f.backends[0], p));
        // Healthy and unknown schedule alike.
        let mut f = farm(&[(1, Up)]);
        f.backends.get_mut(0).unwrap().health = Health::Healthy;
        assert!(takes_new_flows(&f, &f.backends[0], 1));
    }

    #[test]
    fn a_failing_backend_brings_in_the_next_tier() {
        let f = failing(farm(&[(1, Up), (2, Up)]), 0);
        assert_eq!(effective_priority(&f), 2);
        assert!(takes_new_flows(&f, &f.backends[1], 2));
        let mut tiers = PriorityTiers::of(&farm(&[(1, Up), (2, Up)]));
        assert_eq!(tiers.effective(), 1);
        tiers.remove(&farm(&[(1, Up)]).backends[0]);
        tiers.add(&f.backends[0]);
        assert_eq!(tiers.effective(), 2);
        assert_eq!(tiers, PriorityTiers::of(&f));
    }

    #[test]
    fn drain_and_off_stay_themselves_whatever_the_health() {
        for health in [Health::Unknown, Health::Healthy, Health::Failing] {
            let mut f = farm(&[(1, Drain), (1, Off), (2, Up)]);
            f.backends.get_mut(0).unwrap().health = health;
            f.backends.get_mut(1).unwrap().health = health;
            assert_eq!(effective_state(&f.backends[0]), Drain, "{health:?}");
            assert_eq!(effective_state(&f.backends[1]), Off, "{health:?}");
            assert!(keeps_clients(&f.backends[0]), "{health:?}");
            assert!(!takes_new_flows(&f, &f.backends[0], 3), "{health:?}");
            // Two backends out of tier 1, whatever their health: tiers up to 3 are in.
            assert_eq!(effective_priority(&f), 3, "{health:?}");
        }
    }

    #[test]
    fn drain_keeps_clients_but_takes_no_new_flows() {
        let f = farm(&[(1, Drain), (1, Down), (1, Off), (1, Up)]);
        let p = effective_priority(&f);
        let new: Vec<bool> = f.backends.iter().map(|b| takes_new_flows(&f, b, p)).collect();
        let keep: Vec<bool> = f.backends.iter().map(keeps_clients).collect();
        assert_eq!(new, [false, false, false, true]);
        assert_eq!(keep, [true, false, false, true]);
    }

    fn checked(mut f: Farm, start: HealthStart) -> Farm {
        f.health_check = Some(crate::model::HealthCheck::new(crate::model::CheckType::Tcp));
        f.health_start = start;
        f
    }

    #[test]
    fn pessimistic_holds_unknown_checked_backends_until_their_first_verdict() {
        let mut f = checked(farm(&[(1, Up), (1, Up), (2, Up)]), HealthStart::Pessimistic);
        // Nobody passed yet: each waiting backend brings in one more tier, and none takes flows.
        assert_eq!(effective_priority(&f), 4);
        assert!(f.backends.iter().all(|b| !takes_new_flows(&f, b, 4)));
        // b1 and b2 passed once: b0 waits, and as one backend of tier 1 out it brings in tier 2.
        f.backends.get_mut(1).unwrap().health = Health::Healthy;
        f.backends.get_mut(2).unwrap().health = Health::Healthy;
        let p = effective_priority(&f);
        assert_eq!(p, 2);
        let new: Vec<bool> = f.backends.iter().map(|b| takes_new_flows(&f, b, p)).collect();
        assert_eq!(new, [false, true, true]);
        // Waiting is not failing: its clients stay, and StateChanged has nothing to say.
        assert!(keeps_clients(&f.backends[0]));
        assert_eq!(effective_state(&f.backends[0]), Up);
        assert_eq!(PriorityTiers::of(&f).effective(), 2);
        // A backend that opts out of the farm's check is not held back.
        f.backends.get_mut(0).unwrap().health_check = Some(crate::model::HealthCheckOverride {
            enabled: false,
            keys: serde_json::Map::new(),
        });
        assert_eq!(effective_priority(&f), 1);
        assert!(takes_new_flows(&f, &f.backends[0], 1));
    }

    #[test]
    fn optimistic_and_unchecked_farms_schedule_unknown_as_healthy() {
        let f = checked(farm(&[(1, Up), (2, Up)]), HealthStart::Optimistic);
        assert_eq!(effective_priority(&f), 1);
        assert!(takes_new_flows(&f, &f.backends[0], 1));
        // Pessimistic without any check holds nobody back.
        let mut f = farm(&[(1, Up), (2, Up)]);
        f.health_start = HealthStart::Pessimistic;
        assert_eq!(effective_priority(&f), 1);
        assert!(takes_new_flows(&f, &f.backends[0], 1));
    }

    #[test]
    fn tiers_kept_one_backend_at_a_time_follow_the_start_mode() {
        let mut f = checked(farm(&[(1, Up), (2, Up)]), HealthStart::Pessimistic);
        f.backends.get_mut(1).unwrap().health = Health::Healthy;
        let mut tiers = PriorityTiers::of(&f);
        assert_eq!(tiers.effective(), 2);
        let old = f.backends[0].clone();
        f.backends.get_mut(0).unwrap().health = Health::Healthy;
        tiers.remove(&old);
        tiers.add(&f.backends[0]);
        assert_eq!(tiers.effective(), 1);
        assert_eq!(tiers, PriorityTiers::of(&f));
    }

    #[test]
    fn health_ready_once_every_checked_backend_has_a_verdict() {
        let mut f = checked(farm(&[(1, Up), (1, Up)]), HealthStart::Pessimistic);
        assert!(!f.health_ready());
        f.backends.get_mut(0).unwrap().health = Health::Failing;
        assert!(!f.health_ready());
        f.backends.get_mut(1).unwrap().health_check = Some(crate::model::HealthCheckOverride {
            enabled: false,
            keys: serde_json::Map::new(),
        });
        assert!(f.health_ready());
        // Unchecked farms are ready from the start.
        assert!(farm(&[(1, Up)]).health_ready());
    }
}
