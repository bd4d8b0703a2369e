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
//!
//! Quorum and sorry backends (keepalived's `quorum` and `sorry_server`): the tiers are made of the
//! regular backends only. When fewer regular backends than the farm's `quorum` take new flows
//! (up, healthy, in an active tier) and a `sorry` backend can take them, the farm's effective
//! priority is [`SORRY_TIER`]: the sorry backends take every new flow and the regular ones none.
//! Established flows and persistent clients stay where they are (as with drain). Otherwise the
//! sorry backends take no new flows. A farm below its quorum with no sorry backend able to serve
//! (none, or all failing, drained or off) keeps serving with the regular backends it has: fewer
//! backends are better than none, and `QuorumMet` false says so.

use std::collections::BTreeMap;

use super::config::{Backend, Farm};
use super::health::{Health, HealthStart, is_checked};
use super::values::{BackendState, FarmState};

/// The effective priority of a farm below its quorum whose sorry backends serve: no regular
/// backend has it (priorities start at 1), so the tiers' one comparison also shuts them out.
pub const SORRY_TIER: u32 = 0;

/// What of its farm a backend's scheduling depends on besides the backend itself. O(1) to take,
/// so one backend's change stays O(1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FarmRules {
    /// `health-start: pessimistic`.
    pub pessimistic: bool,
    /// The farm has a `health-check` (its backends are checked unless they opt out).
    pub farm_checked: bool,
    /// `quorum` (0: off).
    pub quorum: u32,
}

impl FarmRules {
    pub fn of(farm: &Farm) -> FarmRules {
        FarmRules {
            pessimistic: farm.health_start == HealthStart::Pessimistic,
            farm_checked: farm.health_check.is_some(),
            quorum: farm.quorum,
        }
    }
}

/// The highest backend priority currently in use by the farm, or [`SORRY_TIER`] when its sorry
/// backends serve. Counted whole, apart from [`PriorityTiers`], which the tests compare with it.
pub fn effective_priority(farm: &Farm) -> u32 {
    let rules = FarmRules::of(farm);
    let p = regular_priority(farm, rules);
    if sorry_serves(farm, rules, p) {
        SORRY_TIER
    } else {
        p
    }
}

/// Whether at least `quorum` regular backends take new flows (always, with no quorum). O(farm).
pub fn quorum_met(farm: &Farm) -> bool {
    let rules = FarmRules::of(farm);
    rules.quorum == 0 || serving(farm, rules, regular_priority(farm, rules)) >= rules.quorum
}

/// The tiers of the regular backends, as nftlb counts them.
fn regular_priority(farm: &Farm, rules: FarmRules) -> u32 {
    let mut p = 1u32;
    loop {
        let failed = farm
            .backends
            .iter()
            .filter(|b| !b.sorry && b.priority <= p && !counts_as_up(rules, b))
            .count() as u32;
        let next = 1u32.saturating_add(failed);
        if next <= p {
            return p;
        }
        p = next;
    }
}

/// The regular backends that take new flows at regular priority `p`.
fn serving(farm: &Farm, rules: FarmRules, p: u32) -> u32 {
    let n = farm
        .backends
        .iter()
        .filter(|b| !b.sorry && b.priority <= p && counts_as_up(rules, b))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn sorry_serves(farm: &Farm, rules: FarmRules, p: u32) -> bool {
    rules.quorum > 0
        && serving(farm, rules, p) < rules.quorum
        && farm.backends.iter().any(|b| b.sorry && counts_as_up(rules, b))
}

/// A farm's regular backends, and those not `up`, counted per priority, and its sorry backends
/// that are up: [`effective_priority`] kept up to date one backend at a time. Add every backend
/// of the farm (or use [`PriorityTiers::of`]), then `remove` a backend as it was and `add` it as
/// it is on each change. Whether the farm has its quorum follows from the same counts, so a
/// change that does not cross it stays O(1) in backends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriorityTiers {
    not_up: BTreeMap<u32, u32>,
    /// Every regular backend, per priority.
    regular: BTreeMap<u32, u32>,
    /// The sorry backends that are up (and not failing).
    sorry_up: u32,
    /// The highest priority of any regular backend counted (a high-water mark: `remove` keeps it).
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
        self.weight += u64::from(b.weight);
        let up = counts_as_up(self.rules, b);
        if b.sorry {
            self.sorry_up += u32::from(up);
            return;
        }
        self.highest = self.highest.max(b.priority);
        let n = self.regular.entry(b.priority).or_default();
        *n = n.saturating_add(1);
        if !up {
            let n = self.not_up.entry(b.priority).or_default();
            *n = n.saturating_add(1);
        }
    }

    /// Forgets a backend that was added (as it was when added).
    pub fn remove(&mut self, b: &Backend) {
        self.weight = self.weight.saturating_sub(u64::from(b.weight));
        let up = counts_as_up(self.rules, b);
        if b.sorry {
            self.sorry_up = self.sorry_up.saturating_sub(u32::from(up));
            return;
        }
        let forget = |counts: &mut BTreeMap<u32, u32>| {
            if let Some(n) = counts.get_mut(&b.priority) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&b.priority);
                }
            }
        };
        forget(&mut self.regular);
        if !up {
            forget(&mut self.not_up);
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

    /// What [`effective_priority`] gives for the farm, in O(distinct priorities).
    pub fn effective(&self) -> u32 {
        let p = self.regular_effective();
        if self.rules.quorum > 0 && self.sorry_up > 0 && self.serving(p) < self.rules.quorum {
            SORRY_TIER
        } else {
            p
        }
    }

    /// What [`quorum_met`] gives for the farm, in O(distinct priorities).
    pub fn quorum_met(&self) -> bool {
        self.rules.quorum == 0 || self.serving(self.regular_effective()) >= self.rules.quorum
    }

    /// The regular backends that take new flows at priority `p`: those of the active tiers
    /// less those of them not up.
    fn serving(&self, p: u32) -> u32 {
        let within = |counts: &BTreeMap<u32, u32>| {
            counts
                .range(..=p)
                .fold(0u32, |sum, (_, n)| sum.saturating_add(*n))
        };
        within(&self.regular).saturating_sub(within(&self.not_up))
    }

    /// The tiers of the regular backends, in O(distinct priorities of backends not up).
    fn regular_effective(&self) -> u32 {
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
    counts_as_up(FarmRules::of(farm), backend)
        && if backend.sorry {
            effective_priority == SORRY_TIER
        } else {
            backend.priority <= effective_priority
        }
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
        let mut sorry_served = 0;
        for round in 0..200 {
            let mut f = farm(&[]);
            // Half the rounds with a quorum: the sorry tier comes and goes with the same counts.
            f.quorum = if round % 2 == 0 { 0 } else { next(5) as u32 + 1 };
            let mut tiers = PriorityTiers::of(&f);
            for step in 0..100 {
                let before = effective_priority(&f);
                let n = f.backends.len() as u64;
                let mut b = Backend::new(&format!("s{step}"), "10.0.0.1".parse().unwrap());
                b.priority = next(6) as u32 + 1;
                b.state = states[next(4) as usize];
                b.sorry = next(5) == 0;
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
                assert_eq!(tiers.quorum_met(), quorum_met(&f), "{:?}", f.backends);
                let whole = PriorityTiers::of(&f);
                assert_eq!(
                    (&tiers.not_up, &tiers.regular, tiers.sorry_up, tiers.weight()),
                    (&whole.not_up, &whole.regular, whole.sorry_up, whole.weight())
                );
                sorry_served += usize::from(effective_priority(&f) == SORRY_TIER);
                // A high-water mark: removed backends' priorities count.
                assert!(tiers.highest() >= whole.highest());
                moved += usize::from(before != effective_priority(&f));
            }
        }
        assert!(
            moved > 1000,
            "the effective priority changed in only {moved} steps"
        );
        assert!(
            sorry_served > 1000,
            "the sorry backends served in only {sorry_served} steps"
        );
    }

    /// Two regular backends (priority 1), quorum 2, and one sorry backend.
    fn quorum_farm() -> Farm {
        let mut f = farm(&[(1, Up), (1, Up), (1, Up)]);
        f.quorum = 2;
        f.backends.get_mut(2).unwrap().sorry = true;
        f
    }

    fn new_flows(f: &Farm) -> Vec<bool> {
        let p = effective_priority(f);
        f.backends.iter().map(|b| takes_new_flows(f, b, p)).collect()
    }

    #[test]
    fn the_sorry_backend_takes_no_new_flows_while_the_farm_has_its_quorum() {
        let f = quorum_farm();
        assert_eq!(effective_priority(&f), 1);
        assert!(quorum_met(&f));
        assert_eq!(new_flows(&f), [true, true, false]);
        // The sorry backend keeps its established flows and clients whatever the quorum.
        assert!(keeps_clients(&f.backends[2]));
    }

    #[test]
    fn below_the_quorum_the_sorry_backend_takes_every_new_flow_and_gives_them_back() {
        for out in [Down, Drain, Off] {
            let mut f = quorum_farm();
            f.backends.get_mut(0).unwrap().state = out;
            assert_eq!(effective_priority(&f), SORRY_TIER, "{out:?}");
            assert!(!quorum_met(&f), "{out:?}");
            assert_eq!(new_flows(&f), [false, false, true], "{out:?}");
            // The regular backend still up keeps its established flows and clients.
            assert!(keeps_clients(&f.backends[1]), "{out:?}");
            assert!(!is_active(&f, &f.backends[1], SORRY_TIER), "{out:?}");
            f.backends.get_mut(0).unwrap().state = Up;
            assert_eq!(new_flows(&f), [true, true, false], "{out:?}: given back");
        }
        // A failing check counts as down.
        let f = failing(quorum_farm(), 1);
        assert_eq!(new_flows(&f), [false, false, true]);
    }

    #[test]
    fn standby_tiers_count_toward_the_quorum() {
        // a, b in tier 1, c in tier 2: a down brings in c, and two still serve.
        let mut f = farm(&[(1, Down), (1, Up), (2, Up), (1, Up)]);
        f.quorum = 2;
        f.backends.get_mut(3).unwrap().sorry = true;
        assert_eq!(effective_priority(&f), 2);
        assert!(quorum_met(&f));
        assert_eq!(new_flows(&f), [false, true, true, false]);
        f.backends.get_mut(2).unwrap().state = Off;
        assert_eq!(new_flows(&f), [false, false, false, true]);
        // A sorry backend's priority is no tier: it neither brings one in nor waits for one.
        f.backends.get_mut(3).unwrap().priority = 9;
        assert_eq!(new_flows(&f), [false, false, false, true]);
        f.backends.get_mut(2).unwrap().state = Up;
        assert_eq!(effective_priority(&f), 2);
    }

    #[test]
    fn without_a_sorry_backend_able_to_serve_the_farm_keeps_what_it_has() {
        // No sorry backend: the quorum is only reported.
        let mut f = farm(&[(1, Down), (1, Up)]);
        f.quorum = 2;
        assert_eq!(effective_priority(&f), 2);
        assert!(!quorum_met(&f));
        assert_eq!(new_flows(&f), [false, true]);
        // A failing sorry backend does not take flows either, so the regular ones keep them.
        let mut f = failing(quorum_farm(), 2);
        f.backends.get_mut(0).unwrap().state = Down;
        assert!(!quorum_met(&f));
        assert_eq!(new_flows(&f), [false, true, false]);
        let f = {
            let mut f = quorum_farm();
            f.backends.get_mut(0).unwrap().state = Down;
            f.backends.get_mut(2).unwrap().state = Drain;
            f
        };
        assert_eq!(new_flows(&f), [false, true, false]);
        // No quorum: sorry backends never serve, even with every regular one down.
        let mut f = quorum_farm();
        f.quorum = 0;
        f.backends.get_mut(0).unwrap().state = Down;
        f.backends.get_mut(1).unwrap().state = Down;
        assert!(quorum_met(&f));
        assert_eq!(new_flows(&f), [false, false, false]);
    }

    #[test]
    fn a_quorum_above_the_regular_backends_sends_everything_to_the_sorry_backend() {
        let mut f = quorum_farm();
        f.quorum = 5;
        assert_eq!(new_flows(&f), [false, false, true]);
        let tiers = PriorityTiers::of(&f);
        assert_eq!((tiers.effective(), tiers.quorum_met()), (SORRY_TIER, false));
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
