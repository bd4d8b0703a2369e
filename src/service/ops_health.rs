//! Backend health as a change: `SetBackendHealth` (an outside checker, or an operator) and the
//! daemon's own checker, whose verdicts arriving together are one commit. Health is a key of the
//! backend beside its state; what it means for scheduling is the model's (`effective_state`).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::ServiceError;
use super::edit::{self, Edited};
use super::index::ConfigIndex;
use super::operation::Patch;
use super::ops::IndexedChange;
use crate::health::Advice;
use crate::model::{Backend, Config, FieldError, Health, Invalid, Ramp, Touched};

/// Reasons longer than this are cut: they travel in every signal and the state file.
pub const MAX_REASON: usize = 256;

/// One backend's health, as the checker found it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthUpdate {
    pub farm: String,
    pub backend: String,
    pub health: Health,
    pub reason: String,
    /// What an agent check asks for now; none (any other check, or a failing agent): nothing,
    /// so an earlier drain or percentage is dropped. Each agent reply says all it asks for.
    pub advice: Option<Advice>,
    /// The backend recovered under this slow start: its ramp starts at its first share.
    /// Otherwise a healthy backend's ramp goes on as it was, and any other's ends.
    pub ramp: Option<Ramp>,
}

/// A slow start's next step for one backend: the share of its weight it has reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RampStep {
    pub farm: String,
    pub backend: String,
    pub share: u8,
}

fn parse_health(health: &str, field: &str) -> Result<Health, ServiceError> {
    Health::parse(health).ok_or_else(|| {
        ServiceError::Invalid(Invalid::one(
            field,
            format!("{health:?} is not one of unknown, healthy, failing"),
        ))
    })
}

/// The reason as saved: one line, at most [`MAX_REASON`] bytes (cut at a character boundary).
fn clean_reason(reason: &str) -> String {
    let line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut end = line.len().min(MAX_REASON);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].trim().to_string()
}

/// The backend keys only `SetBackendHealth` (and the daemon's checks) set: a verdict, not a
/// setting. A whole backend (AddBackend, CreateFarm, ImportConfig) may carry them, as saved.
pub const HEALTH_KEYS: [&str; 5] = [
    "health",
    "health-reason",
    "health-drain",
    "health-weight",
    "health-ramp",
];

/// Refuses a backend update that sets or resets a health key: the one check for every front
/// end, so none of them accepts what another refuses.
pub fn refuse_health_keys(farm: &str, backend: &str, patch: &Patch) -> Result<(), ServiceError> {
    let errors: Vec<FieldError> = HEALTH_KEYS
        .iter()
        .filter(|k| patch.set.contains_key(**k) || patch.removed.iter().any(|r| r == *k))
        .map(|k| FieldError {
            field: format!("farms[{farm}].backends[{backend}].{k}"),
            reason: "is not changed by an update: use SetBackendHealth".into(),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::Invalid(Invalid(errors)))
    }
}

/// Sets a backend's `health` and `health-reason` (`unknown` and `""` remove the keys).
pub fn set_backend_health(
    farm: String,
    backend: String,
    health: String,
    reason: String,
) -> impl IndexedChange {
    move |c: &ConfigIndex| {
        let at = format!("farms[{farm}].backends[{backend}].health");
        let health = parse_health(&health, &at)?;
        let reason = clean_reason(&reason);
        edit::backend(c, &farm, &backend, |obj| {
            edit::set_key(
                obj,
                "health",
                (health != Health::Unknown).then(|| Value::String(health.as_str().into())),
            );
            edit::set_key(
                obj,
                "health-reason",
                (!reason.is_empty()).then_some(Value::String(reason)),
            );
            // A slow start follows the daemon's own checks; a ramp under way ends with its health.
            if health != Health::Healthy {
                obj.remove("health-ramp");
            }
            Ok(())
        })
    }
}

/// The checker's verdicts as one change: O(updates) lookups in the name index. A backend that
/// went away meanwhile (or already says the same) is skipped, never an error: the checker's
/// targets follow the configuration a moment later.
pub fn set_healths(updates: Vec<HealthUpdate>) -> impl IndexedChange {
    move |ix: &ConfigIndex| {
        let mut new: Config = (*ix.config).clone();
        let mut last: HashMap<(usize, usize), HealthUpdate> = HashMap::new();
        for u in updates {
            if let Some(at) = ix.names().backend_position(&u.farm, &u.backend) {
                last.insert(at, u);
            }
        }
        let mut errors: Vec<FieldError> = Vec::new();
        let touched = Touched::backends(last.keys().copied().collect());
        for ((i, j), u) in last {
            let Some(b) = new.farms.get_mut(i).and_then(|f| f.backends.get_mut(j)) else {
                errors.push(FieldError {
                    field: format!("farms[{}].backends[{}]", u.farm, u.backend),
                    reason: "not found".into(),
                });
                continue;
            };
            apply(b, &u);
        }
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(Invalid(errors)));
        }
        Ok(Edited { config: new, touched })
    }
}

/// One verdict on its backend: health, the agent's advice, the slow start's ramp.
fn apply(b: &mut Backend, u: &HealthUpdate) {
    b.health = u.health;
    b.health_reason = clean_reason(&u.reason);
    let advice = u.advice.unwrap_or_default();
    b.health_drain = advice.drain;
    b.health_weight = advice.weight_percent.filter(|p| *p < 100);
    b.health_ramp = match (u.health, u.ramp) {
        (Health::Healthy, Some(ramp)) => Some(ramp.first()),
        (Health::Healthy, None) => b.health_ramp,
        _ => None,
    };
}

/// A tick of the slow starts under way, as one change. A backend gone, no longer healthy or
/// whose ramp ended meanwhile is skipped: only a recovery starts a ramp. Several steps of one
/// backend: the last wins.
pub fn step_ramps(steps: Vec<RampStep>) -> impl IndexedChange {
    move |ix: &ConfigIndex| {
        let mut new: Config = (*ix.config).clone();
        let mut at: HashSet<(usize, usize)> = HashSet::with_capacity(steps.len());
        for s in steps {
            let Some((i, j)) = ix.names().backend_position(&s.farm, &s.backend) else {
                continue;
            };
            let Some(b) = new.farms.get_mut(i).and_then(|f| f.backends.get_mut(j)) else {
                continue;
            };
            if b.health != Health::Healthy || b.health_ramp.is_none() {
                continue;
            }
            // The last step of a backend wins (an ended ramp takes no later one).
            b.health_ramp = (s.share < 100).then_some(s.share.max(1));
            at.insert((i, j));
        }
        Ok(Edited {
            config: new,
            touched: Touched::backends(at.into_iter().collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{BackendState, parse_config};
    use crate::service::diff::{Diff, Transition};

    fn web() -> ConfigIndex {
        let c = parse_config(
            r#"{"farms": [{"name": "web", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80",
                "backends": [{"name": "a", "ip-addr": "10.0.0.1"}, {"name": "b", "ip-addr": "10.0.0.2", "state": "drain"}]}]}"#,
        )
        .unwrap();
        ConfigIndex::build(Arc::new(c))
    }

    fn transition(ix: &ConfigIndex, new: &Config, backend: &str) -> Option<Transition> {
        let d = Diff::between(&ix.config, new, "api");
        d.farms[0]
            .backends
            .iter()
            .find(|b| b.name == backend)
            .and_then(|b| b.state.clone())
    }

    #[test]
    fn failing_an_up_backend_is_a_transition_to_down_for_the_check_s_reason() {
        let ix = web();
        let set = |b: &str, h: &str| {
            set_backend_health("web".into(), b.into(), h.into(), " connect: refused\n".into())(&ix).unwrap()
        };
        let new = set("a", "failing");
        let a = new.farms[0].backend("a").unwrap();
        assert_eq!(
            (a.health, a.health_reason.as_str()),
            (Health::Failing, "connect: refused")
        );
        assert_eq!(
            transition(&ix, &new, "a"),
            Some(Transition {
                old: BackendState::Up,
                new: BackendState::Down,
                reason: "health-check: connect: refused".into()
            })
        );
        // Drain stays drain: the health is saved, no transition.
        let new = set("b", "failing");
        assert_eq!(new.farms[0].backend("b").unwrap().health, Health::Failing);
        assert_eq!(transition(&ix, &new, "b"), None);
        // Unknown and no reason leave the keys out.
        let back =
            set_backend_health("web".into(), "a".into(), "unknown".into(), String::new())(&ix).unwrap();
        assert_eq!(back.config, *ix.config);
        let e = set_backend_health("web".into(), "a".into(), "sick".into(), String::new())(&ix).unwrap_err();
        assert_eq!(
            e.to_string(),
            "farms[web].backends[a].health: \"sick\" is not one of unknown, healthy, failing"
        );
    }

    #[test]
    fn a_batch_of_verdicts_keeps_the_last_per_backend_and_skips_the_gone() {
        let ix = web();
        let u = |b: &str, h: Health| HealthUpdate {
            farm: "web".into(),
            backend: b.into(),
            health: h,
            ..HealthUpdate::default()
        };
        let new = set_healths(vec![
            u("a", Health::Failing),
            u("gone", Health::Failing),
            u("a", Health::Healthy),
            u("b", Health::Failing),
        ])(&ix)
        .unwrap();
        let h: Vec<Health> = new.farms[0].backends.iter().map(|b| b.health).collect();
        assert_eq!(h, [Health::Healthy, Health::Failing]);
    }

    #[test]
    fn a_verdict_sets_the_agent_s_advice_and_a_recovery_starts_the_ramp() {
        let ix = web();
        let ramp = Ramp::of(crate::model::Seconds::from_millis(30_000)).unwrap();
        let u = |h: Health, advice: Option<Advice>, ramp: Option<Ramp>| HealthUpdate {
            farm: "web".into(),
            backend: "a".into(),
            health: h,
            advice,
            ramp,
            ..HealthUpdate::default()
        };
        let shares = |c: &Config| {
            let a = c.farms[0].backend("a").unwrap();
            (a.health_drain, a.health_weight, a.health_ramp)
        };
        let half = Some(Advice {
            drain: false,
            weight_percent: Some(50),
        });
        let new = set_healths(vec![u(Health::Healthy, half, Some(ramp))])(&ix).unwrap();
        assert_eq!(shares(&new), (false, Some(50), Some(9)));
        let ix = ConfigIndex::build(Arc::new(new.config));
        // Another healthy verdict keeps the ramp; each agent reply says all it asks for.
        let drain = Some(Advice {
            drain: true,
            weight_percent: Some(100),
        });
        let new = set_healths(vec![u(Health::Healthy, drain, None)])(&ix).unwrap();
        assert_eq!(shares(&new), (true, None, Some(9)));
        // Steps: 100 % ends the ramp.
        let ix = ConfigIndex::build(Arc::new(new.config));
        let step = |share: u8| RampStep {
            farm: "web".into(),
            backend: "a".into(),
            share,
        };
        let stepped = step_ramps(vec![step(18), step(27), step(40)])(&ix).unwrap();
        assert_eq!(shares(&stepped), (true, None, Some(40)));
        assert_eq!(stepped.touched, Touched::backend(0, 0));
        let ended = step_ramps(vec![step(100)])(&ix).unwrap();
        assert_eq!(shares(&ended), (true, None, None));
        // Failing: no advice, no ramp; a step then changes nothing.
        let failed = set_healths(vec![u(Health::Failing, None, None)])(&ix).unwrap();
        assert_eq!(shares(&failed), (false, None, None));
        let ix = ConfigIndex::build(Arc::new(failed.config));
        let stepped = step_ramps(vec![step(50)])(&ix).unwrap();
        assert_eq!(shares(&stepped), (false, None, None));
        assert_eq!(stepped.touched, Touched::Backends(Vec::new()));
        // The keys are the checks': an update may not set them.
        let patch = Patch {
            set: serde_json::json!({"health-ramp": 50, "weight": 2})
                .as_object()
                .unwrap()
                .clone(),
            removed: vec!["health-drain".into()],
        };
        let e = refuse_health_keys("web", "a", &patch).unwrap_err();
        assert_eq!(
            e.to_string(),
            "farms[web].backends[a].health-drain: is not changed by an update: use SetBackendHealth; \
             farms[web].backends[a].health-ramp: is not changed by an update: use SetBackendHealth"
        );
    }

    #[test]
    fn reasons_are_one_bounded_line() {
        assert_eq!(clean_reason(" connect:\nrefused "), "connect: refused");
        let long = "é".repeat(200);
        let cut = clean_reason(&long);
        assert_eq!(cut.len(), MAX_REASON);
        assert_eq!(cut, "é".repeat(128));
    }
}
