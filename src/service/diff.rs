//! What one commit changed, computed once by the service and carried by its event: farms,
//! backends and policies added, removed and changed (keys with old and new values), and backend
//! state transitions with their reason. The D-Bus objects and signals, the varlink Monitor and
//! the journal all read it; none of them compares configurations again.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::index::Names;
use crate::model::{
    Backend, BackendState, Config, Farm, FarmRules, Policy, PriorityTiers, Touched, effective_state,
    is_active, whole_farm_pass,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum What {
    Added,
    Removed,
    Changed,
}

/// One canonical key: its value before and after (`null`: not set, its default applies).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyChange {
    pub key: String,
    pub old: Value,
    pub new: Value,
}

/// A backend's state before and after, and why it changed (`api`, `health-check`, ...).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub old: BackendState,
    pub new: BackendState,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendChange {
    pub name: String,
    pub what: What,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyChange>,
    /// Whether the scheduler gives it new connections, when that changed (priority tiers make it
    /// follow the other backends too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Transition>,
    /// Where it is in the farm's new list of backends (in the old one when removed): what the
    /// journal and the name index need, without looking it up by name.
    #[serde(skip)]
    pub at: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FarmChange {
    pub name: String,
    pub what: What,
    /// The farm's own keys (its backends are in `backends`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendChange>,
    /// Whether the list of backends (names, order) changed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backend_list: bool,
    /// Whether the backends that stayed kept their order (the old list without the removed
    /// ones is the new list without the added ones).
    #[serde(skip)]
    pub in_order: bool,
    /// Where the farm is in the new list of farms (in the old one when removed).
    #[serde(skip)]
    pub at: usize,
    /// The highest backend priority in use, when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_priority: Option<u32>,
    /// Whether the farm has its quorum, when that changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_met: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyChange {
    pub name: String,
    pub what: What,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyChange>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    pub farms: Vec<FarmChange>,
    pub policies: Vec<PolicyChange>,
    /// Whether the list of farms (names, order) changed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub farm_list: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub policy_list: bool,
}

impl Diff {
    /// What changed from `old` to `new`; state transitions are said to be for `reason`.
    pub fn between(old: &Config, new: &Config, reason: &str) -> Diff {
        Diff::between_known(old, new, reason, None)
    }

    /// [`Diff::between_known`] where the edit said what it touched: those backends are all
    /// that is looked at (the lists are not compared).
    pub fn between_touched(
        old: &Config,
        new: &Config,
        reason: &str,
        names: &Names,
        touched: &Touched,
    ) -> Diff {
        let tiers = |f: &Farm| match names.tiers(&f.name) {
            Some(t) => t.clone(),
            None => PriorityTiers::of(f),
        };
        let farm = |i: usize, known: Known| {
            let (o, n) = (&old.farms[i], &new.farms[i]);
            let mut fc = farm_change(o, n, reason, tiers(o), Some(known));
            fc.at = i;
            fc
        };
        let farms = match touched {
            Touched::Unknown => return Diff::between_known(old, new, reason, Some(names)),
            Touched::Backends(at) => at
                .iter()
                .map(|(i, bs)| farm(*i, Known::InPlace(bs.clone())))
                .filter(|fc| {
                    !fc.backends.is_empty() || fc.effective_priority.is_some() || fc.quorum_met.is_some()
                })
                .collect(),
            Touched::Appended { farm: i } => vec![farm(*i, Known::InPlace(Vec::new()))],
            Touched::Removed { farm: i, at } => vec![farm(*i, Known::Removed(*at))],
        };
        Diff {
            farms,
            ..Diff::default()
        }
    }

    /// [`Diff::between`], with the name index of `old` (its farms' priority tiers): a change to
    /// some backends of a farm then costs those backends, not the farm.
    pub fn between_known(old: &Config, new: &Config, reason: &str, names: Option<&Names>) -> Diff {
        let tiers = |f: &Farm| match names.and_then(|n| n.tiers(&f.name)) {
            Some(t) => t.clone(),
            None => PriorityTiers::of(f),
        };
        // Farms changed in place (the same names in the same order): found by the leaves the
        // lists do not share, without a map of every farm's name.
        if old.farms.len() == new.farms.len()
            && let Some(at) = old.farms.differences(&new.farms)
            && at.iter().all(|i| old.farms[*i].name == new.farms[*i].name)
        {
            let farms = at
                .into_iter()
                .map(|i| {
                    let mut fc =
                        farm_change(&old.farms[i], &new.farms[i], reason, tiers(&old.farms[i]), None);
                    fc.at = i;
                    fc
                })
                .collect();
            let (policies, policy_list) = if old.policies == new.policies {
                (Vec::new(), false)
            } else {
                policy_changes(old, new)
            };
            return Diff {
                farms,
                policies,
                farm_list: false,
                policy_list,
            };
        }
        let mut farms = Vec::new();
        let after: HashMap<&str, &Farm> = new.farms.iter().map(|f| (f.name.as_str(), f)).collect();
        let before: HashMap<&str, (usize, &Farm)> = old
            .farms
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.as_str(), (i, f)))
            .collect();
        for (i, f) in old.farms.iter().enumerate() {
            if !after.contains_key(f.name.as_str()) {
                farms.push(FarmChange::whole(f, What::Removed, i));
            }
        }
        for (i, f) in new.farms.iter().enumerate() {
            match before.get(f.name.as_str()) {
                None => farms.push(FarmChange::whole(f, What::Added, i)),
                Some((_, o)) if *o != f => {
                    let mut fc = farm_change(o, f, reason, tiers(o), None);
                    fc.at = i;
                    farms.push(fc);
                }
                Some(_) => {}
            }
        }
        let (policies, policy_list) = policy_changes(old, new);
        Diff {
            farms,
            policies,
            farm_list: old
                .farms
                .iter()
                .map(|f| &f.name)
                .ne(new.farms.iter().map(|f| &f.name)),
            policy_list,
        }
    }
}

/// The policies added, removed and changed, and whether their list changed.
fn policy_changes(old: &Config, new: &Config) -> (Vec<PolicyChange>, bool) {
    let mut policies = Vec::new();
    let after: HashMap<&str, &Policy> = new.policies.iter().map(|p| (p.name.as_str(), p)).collect();
    let before: HashMap<&str, &Policy> = old.policies.iter().map(|p| (p.name.as_str(), p)).collect();
    for p in &old.policies {
        if !after.contains_key(p.name.as_str()) {
            policies.push(PolicyChange {
                name: p.name.clone(),
                what: What::Removed,
                keys: Vec::new(),
            });
        }
    }
    for p in &new.policies {
        let (what, keys) = match before.get(p.name.as_str()) {
            None => (What::Added, Vec::new()),
            Some(o) if *o != p => (What::Changed, keys(&object(*o), &object(p))),
            Some(_) => continue,
        };
        policies.push(PolicyChange {
            name: p.name.clone(),
            what,
            keys,
        });
    }
    let list = old
        .policies
        .iter()
        .map(|p| &p.name)
        .ne(new.policies.iter().map(|p| &p.name));
    (policies, list)
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.farms.is_empty() && self.policies.is_empty()
    }

    /// Every backend state transition: (farm, backend, transition).
    pub fn transitions(&self) -> impl Iterator<Item = (&str, &str, &Transition)> {
        self.farms.iter().flat_map(|f| {
            f.backends
                .iter()
                .filter_map(move |b| b.state.as_ref().map(|t| (f.name.as_str(), b.name.as_str(), t)))
        })
    }
}

impl FarmChange {
    fn whole(f: &Farm, what: What, at: usize) -> FarmChange {
        FarmChange {
            name: f.name.clone(),
            what,
            keys: Vec::new(),
            backends: Vec::new(),
            backend_list: false,
            in_order: false,
            at,
            effective_priority: None,
            quorum_met: None,
        }
    }
}

/// A change of state, or of health that changes what the scheduler does with the backend (the
/// effective words, `up` → `down`, for the reason the check gave).
fn transition(o: &Backend, b: &Backend, reason: &str) -> Option<Transition> {
    if o.state != b.state {
        return Some(Transition {
            old: effective_state(o),
            new: effective_state(b),
            reason: reason.to_string(),
        });
    }
    let (old, new) = (effective_state(o), effective_state(b));
    (old != new).then(|| Transition {
        old,
        new,
        reason: if b.health_reason.is_empty() {
            "health-check".to_string()
        } else {
            format!("health-check: {}", b.health_reason)
        },
    })
}

/// What an edit said it changed in a farm (see [`Touched`]): its own keys stayed.
enum Known {
    /// These backends replaced in place (maybe by equal ones), and any after the old ones appended.
    InPlace(Vec<usize>),
    /// The backend at this position of the old farm removed.
    Removed(usize),
}

/// `tiers_old`: the priority tiers of `old`; `known`: what changed, when the edit said.
fn farm_change(
    old: &Farm,
    new: &Farm,
    reason: &str,
    tiers_old: PriorityTiers,
    known: Option<Known>,
) -> FarmChange {
    // Backends changed in place or appended, or one removed: only those differ, found by the
    // leaves the two lists do not share unless the edit said, and the priority tiers of the new
    // farm follow from the old one's by them.
    let own_keys_stayed = known.is_some();
    // The farm's keys the tiers depend on (its quorum, its start mode) changed: counted anew.
    let rules_changed = !own_keys_stayed && FarmRules::of(old) != FarmRules::of(new);
    let (at, gone) = match known {
        Some(Known::InPlace(at)) => (Some(at), None),
        Some(Known::Removed(i)) => (None, old.backends.get(i).map(|b| (i, b))),
        None => (in_place(old, new), removed_one(old, new)),
    };
    let tiers_new = match (&at, gone) {
        _ if rules_changed => PriorityTiers::of(new),
        (Some(at), _) => {
            let mut t = tiers_old.clone();
            for i in at {
                t.remove(&old.backends[*i]);
                t.add(&new.backends[*i]);
            }
            new.backends.tail(old.backends.len()).for_each(|b| t.add(b));
            t
        }
        (None, Some((_, b))) => {
            let mut t = tiers_old.clone();
            t.remove(b);
            t
        }
        (None, None) => {
            whole_farm_pass();
            PriorityTiers::of(new)
        }
    };
    let (prio_old, prio_new) = (tiers_old.effective(), tiers_new.effective());
    let changed = |o: &Backend, b: &Backend, at: usize| -> Option<BackendChange> {
        let (was, is) = (is_active(old, o, prio_old), is_active(new, b, prio_new));
        if o == b && was == is {
            return None;
        }
        let state = transition(o, b, reason);
        Some(BackendChange {
            name: b.name.clone(),
            what: What::Changed,
            keys: if o == b {
                Vec::new()
            } else {
                keys(&object(o), &object(b))
            },
            active: (was != is).then_some(is),
            state,
            at,
        })
    };
    let added = |b: &Backend, at: usize| BackendChange {
        name: b.name.clone(),
        what: What::Added,
        keys: Vec::new(),
        active: None,
        state: None,
        at,
    };
    // Above the highest priority a backend has, every tier is active alike: with the same tiers
    // active, the changed backends are all that differ.
    let top = tiers_old.highest().max(tiers_new.highest());
    let same_tiers = prio_old.min(top) == prio_new.min(top) && new.state == old.state && !rules_changed;
    let (backends, backend_list, in_order) = match at.filter(|_| same_tiers) {
        _ if same_tiers && gone.is_some() => {
            let gone = gone.map(|(i, b)| BackendChange {
                what: What::Removed,
                ..added(b, i)
            });
            (gone.into_iter().collect(), true, true)
        }
        Some(at) => {
            let mut out: Vec<BackendChange> = at
                .into_iter()
                .filter_map(|i| changed(&old.backends[i], &new.backends[i], i))
                .collect();
            let n = old.backends.len();
            out.extend(new.backends.tail(n).enumerate().map(|(k, b)| added(b, n + k)));
            (out, new.backends.len() != n, true)
        }
        None => {
            // Tiers changed or the list was reordered: every backend may have changed.
            whole_farm_pass();
            let before: HashMap<&str, &Backend> = old.backends.iter().map(|b| (b.name.as_str(), b)).collect();
            let after: HashMap<&str, &Backend> = new.backends.iter().map(|b| (b.name.as_str(), b)).collect();
            let mut out = Vec::new();
            for (i, b) in old.backends.iter().enumerate() {
                if !after.contains_key(b.name.as_str()) {
                    out.push(BackendChange {
                        what: What::Removed,
                        ..added(b, i)
                    });
                }
            }
            for (i, b) in new.backends.iter().enumerate() {
                match before.get(b.name.as_str()) {
                    None => out.push(added(b, i)),
                    Some(o) => out.extend(changed(o, b, i)),
                }
            }
            let list = old
                .backends
                .iter()
                .map(|b| &b.name)
                .ne(new.backends.iter().map(|b| &b.name));
            let in_order = old
                .backends
                .iter()
                .filter(|b| after.contains_key(b.name.as_str()))
                .map(|b| &b.name)
                .eq(new
                    .backends
                    .iter()
                    .filter(|b| before.contains_key(b.name.as_str()))
                    .map(|b| &b.name));
            (out, list, in_order)
        }
    };
    FarmChange {
        name: new.name.clone(),
        what: What::Changed,
        keys: if own_keys_stayed {
            Vec::new()
        } else {
            keys(&farm_keys(old), &farm_keys(new))
        },
        backends,
        backend_list,
        in_order,
        at: 0,
        effective_priority: (prio_old != prio_new).then_some(prio_new),
        quorum_met: (tiers_old.quorum_met() != tiers_new.quorum_met()).then_some(tiers_new.quorum_met()),
    }
}

/// The one backend removed between two versions of a farm, the others unchanged, and where it was.
fn removed_one<'a>(old: &'a Farm, new: &Farm) -> Option<(usize, &'a Backend)> {
    if new.backends.len() + 1 != old.backends.len() {
        return None;
    }
    let i = old.backends.first_difference(&new.backends);
    (old.backends.skip(i + 1) == new.backends.skip(i))
        .then(|| old.backends.get(i).map(|b| (i, b)))
        .flatten()
}

/// Where two versions of a farm's backends differ when entries were only changed in place (each
/// keeping its name) or appended; `None` otherwise.
fn in_place(old: &Farm, new: &Farm) -> Option<Vec<usize>> {
    if new.backends.len() < old.backends.len() {
        return None;
    }
    let at = old.backends.differences(&new.backends)?;
    at.iter()
        .all(|i| old.backends[*i].name == new.backends[*i].name)
        .then_some(at)
}

/// A farm's own keys as canonical JSON, without its backends.
fn farm_keys(f: &Farm) -> Map<String, Value> {
    let mut m = object(&f.without_backends());
    m.remove("backends");
    m
}

fn object<T: Serialize>(x: &T) -> Map<String, Value> {
    match serde_json::to_value(x) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The keys whose values differ, in the order of `new` then the removed ones.
fn keys(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<KeyChange> {
    let mut out: Vec<KeyChange> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| KeyChange {
            key: k.clone(),
            old: old.get(k).cloned().unwrap_or(Value::Null),
            new: v.clone(),
        })
        .collect();
    out.extend(
        old.iter()
            .filter(|(k, _)| !new.contains_key(*k))
            .map(|(k, v)| KeyChange {
                key: k.clone(),
                old: v.clone(),
                new: Value::Null,
            }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_config;

    fn config(v: serde_json::Value) -> Config {
        parse_config(&v.to_string()).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({"farms": [
            {"name": "web", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80",
             "backends": [{"name": "a", "ip-addr": "10.0.0.1"},
                          {"name": "b", "ip-addr": "10.0.0.2", "priority": 2}]},
            {"name": "db", "virtual-addresses": ["192.0.2.2"]}],
            "policies": [{"name": "bl", "elements": ["10.9.0.1"]}]})
    }

    #[test]
    fn nothing_changed_is_empty() {
        let c = config(base());
        assert!(Diff::between(&c, &c, "api").is_empty());
    }

    #[test]
    fn a_quorum_set_on_the_farm_hands_new_connections_to_the_sorry_backend() {
        let mut v = base();
        v["farms"][0]["backends"][1] = serde_json::json!({"name": "s", "ip-addr": "10.0.0.9", "sorry": true});
        let old = config(v.clone());
        v["farms"][0]["quorum"] = 2.into();
        let new = config(v.clone());
        let d = Diff::between(&old, &new, "api");
        let f = &d.farms[0];
        assert_eq!(
            f.keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["quorum"]
        );
        assert_eq!((f.effective_priority, f.quorum_met), (Some(0), Some(false)));
        let active: Vec<(&str, Option<bool>)> =
            f.backends.iter().map(|b| (b.name.as_str(), b.active)).collect();
        assert_eq!(active, [("a", Some(false)), ("s", Some(true))]);
        // Followed one backend at a time: the sorry backend drained gives them back to a.
        let names = Names::build(&new);
        v["farms"][0]["backends"][1]["state"] = "drain".into();
        let drained = config(v);
        let d = Diff::between_touched(&new, &drained, "api", &names, &Touched::backend(0, 1));
        let f = &d.farms[0];
        assert_eq!((f.effective_priority, f.quorum_met), (Some(1), None));
        let active: Vec<(&str, Option<bool>)> =
            f.backends.iter().map(|b| (b.name.as_str(), b.active)).collect();
        assert_eq!(active, [("a", Some(true)), ("s", Some(false))]);
    }

    #[test]
    fn a_drain_that_brings_in_the_next_tier() {
        let old = config(base());
        let mut v = base();
        v["farms"][0]["backends"][0]["state"] = "drain".into();
        let new = config(v);
        let d = Diff::between(&old, &new, "health-check");
        assert_eq!(d.farms.len(), 1);
        let f = &d.farms[0];
        assert_eq!((f.name.as_str(), f.what), ("web", What::Changed));
        assert!(f.keys.is_empty() && !f.backend_list);
        assert_eq!(f.effective_priority, Some(2));
        let a = &f.backends.iter().find(|b| b.name == "a").unwrap();
        assert_eq!(
            a.keys,
            vec![KeyChange {
                key: "state".into(),
                old: "up".into(),
                new: "drain".into()
            }]
        );
        assert_eq!(a.active, Some(false));
        assert_eq!(
            a.state,
            Some(Transition {
                old: BackendState::Up,
                new: BackendState::Drain,
                reason: "health-check".into()
            })
        );
        // b's keys did not change, but it takes new connections now.
        let b = &f.backends.iter().find(|b| b.name == "b").unwrap();
        assert!(b.keys.is_empty() && b.state.is_none());
        assert_eq!(b.active, Some(true));
        assert_eq!(d.transitions().count(), 1);
    }

    #[test]
    fn adds_removals_and_keys() {
        let old = config(base());
        let mut v = base();
        v["farms"][0]["scheduler"] = "hash".into();
        v["farms"][0]["virtual-ports"] = "".into();
        v["farms"][0]["backends"].as_array_mut().unwrap().remove(1);
        v["farms"][0]["backends"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "c", "ip-addr": "10.0.0.3"}));
        v["farms"].as_array_mut().unwrap().remove(1);
        v["policies"][0]["elements"] = serde_json::json!(["10.9.0.1", "10.9.0.2"]);
        v["policies"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "wl", "type": "whitelist"}));
        let new = config(v);
        let d = Diff::between(&old, &new, "api");
        assert!(d.farm_list && d.policy_list);
        let whats: Vec<(&str, What)> = d.farms.iter().map(|f| (f.name.as_str(), f.what)).collect();
        assert_eq!(whats, vec![("db", What::Removed), ("web", What::Changed)]);
        let web = &d.farms[1];
        let keys: Vec<&str> = web.keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, vec!["scheduler", "virtual-ports"]);
        assert_eq!(web.keys[1].new, Value::from(""));
        assert!(web.backend_list);
        let bs: Vec<(&str, What)> = web.backends.iter().map(|b| (b.name.as_str(), b.what)).collect();
        assert_eq!(bs, vec![("b", What::Removed), ("c", What::Added)]);
        let ps: Vec<(&str, What)> = d.policies.iter().map(|p| (p.name.as_str(), p.what)).collect();
        assert_eq!(ps, vec![("bl", What::Changed), ("wl", What::Added)]);
        assert_eq!(d.policies[0].keys[0].key, "elements");
        // The monitor's JSON names objects and values.
        let j = serde_json::to_value(&d).unwrap();
        assert_eq!(
            j["farms"][1]["backends"][1],
            serde_json::json!({"name": "c", "what": "added"})
        );
    }
}
