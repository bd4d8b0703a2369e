//! What backend states and priorities mean for scheduling (docs/json.md; as nftlb's priority tiers).
//!
//! - `up`: schedulable when its priority tier is active.
//! - `drain`: no new flows; established flows and persistent clients continue.
//! - `down` (failed) and `off` (administratively out): no new flows, persistent clients move away.
//!
//! Priority tiers as in nftlb: starting at 1, every backend of the active tiers that does not take
//! new flows brings in one more tier, until that is stable. So with `a` (priority 1) and `b`
//! (priority 2), `b` is a hot standby until `a` fails; two failures in tier 1 bring in tiers 2 and 3.

use super::config::{Backend, Farm};
use super::values::{BackendState, FarmState};

/// The highest backend priority currently in use by the farm.
pub fn effective_priority(farm: &Farm) -> u32 {
    let mut p = 1u32;
    loop {
        let failed = farm
            .backends
            .iter()
            .filter(|b| b.priority <= p && b.state != BackendState::Up)
            .count() as u32;
        let next = 1u32.saturating_add(failed);
        if next <= p {
            return p;
        }
        p = next;
    }
}

/// Whether the scheduler gives new connections to this backend (at the farm's effective priority).
pub fn takes_new_flows(backend: &Backend, effective_priority: u32) -> bool {
    backend.state == BackendState::Up && backend.priority <= effective_priority
}

/// `Backend.Active` of both front ends: the scheduler gives it new connections now (the farm is
/// up, the backend is up and in an active priority tier).
pub fn is_active(farm: &Farm, backend: &Backend, effective_priority: u32) -> bool {
    farm.state == FarmState::Up && takes_new_flows(backend, effective_priority)
}

/// Whether persistent clients and established flows may stay with this backend.
pub fn keeps_clients(backend: &Backend) -> bool {
    matches!(backend.state, BackendState::Up | BackendState::Drain)
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
        assert!(!takes_new_flows(&f.backends[1], 1));
        let f = farm(&[(1, Off), (2, Up)]);
        assert_eq!(effective_priority(&f), 2);
        assert!(takes_new_flows(&f.backends[1], 2));
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
    fn drain_keeps_clients_but_takes_no_new_flows() {
        let f = farm(&[(1, Drain), (1, Down), (1, Off), (1, Up)]);
        let p = effective_priority(&f);
        let new: Vec<bool> = f.backends.iter().map(|b| takes_new_flows(b, p)).collect();
        let keep: Vec<bool> = f.backends.iter().map(keeps_clients).collect();
        assert_eq!(new, [false, false, false, true]);
        assert_eq!(keep, [true, false, false, true]);
    }
}
