//! What each change of the operation table means: a function of the committed configuration
//! that the writer runs in its turn (so concurrent requests compose instead of overwriting each
//! other).

use serde_json::Value;

use super::ServiceError;
use super::edit::{self, Edited, Obj};
use super::index::ConfigIndex;
use std::collections::HashSet;

use super::operation::{BackendUpdate, ElementEdit, ImportMode, Patch};
use crate::model::{
    BackendState, ClientError, Config, Farm, Invalid, List, Policy, PolicyElement, PolicyElementError,
    Session, SessionClient, Touched, validate,
};

/// What [`super::Service::change`] runs.
pub trait Change: FnOnce(&Config) -> Result<Config, ServiceError> + Send + 'static {}
impl<T: FnOnce(&Config) -> Result<Config, ServiceError> + Send + 'static> Change for T {}

/// What [`super::Service::change_indexed`] runs: a change that finds what it edits by name
/// through the configuration's lookups.
pub trait IndexedChange: FnOnce(&ConfigIndex) -> Result<Edited, ServiceError> + Send + 'static {}
impl<T: FnOnce(&ConfigIndex) -> Result<Edited, ServiceError> + Send + 'static> IndexedChange for T {}

pub fn create_farm(farm: Farm) -> impl Change {
    move |c: &Config| {
        if c.farm(&farm.name).is_some() {
            return Err(ServiceError::Exists(format!(
                "a farm is already named {:?}",
                farm.name
            )));
        }
        let mut new = c.clone();
        new.farms.push(farm);
        Ok(new)
    }
}

pub fn delete_farm(name: String) -> impl Change {
    move |c: &Config| {
        let mut new = c.clone();
        let before = new.farms.len();
        new.farms.retain(|f| f.name != name);
        if new.farms.len() == before {
            return Err(ServiceError::NotFound(format!("no farm is named {name:?}")));
        }
        Ok(new)
    }
}

pub fn rename_farm(old: String, new_name: String) -> impl IndexedChange {
    move |c: &ConfigIndex| {
        edit::check_name(&format!("farms[{old}].name"), &new_name)?;
        if c.farm(&new_name).is_some() {
            return Err(ServiceError::Exists(format!(
                "a farm is already named {new_name:?}"
            )));
        }
        edit::farm(c, &old, |obj| {
            obj.insert("name".into(), Value::String(new_name));
            Ok(())
        })
        .map(Edited::from)
    }
}

/// Sets the keys of `patch` and removes its `removed` ones (back to their defaults).
pub fn update_farm(name: String, patch: Patch) -> impl IndexedChange {
    move |c: &ConfigIndex| edit::farm(c, &name, |obj| apply(obj, patch)).map(Edited::from)
}

fn apply(obj: &mut Obj, patch: Patch) -> Result<(), ServiceError> {
    for k in &patch.removed {
        obj.remove(k);
    }
    obj.extend(patch.set);
    Ok(())
}

/// The farm `name` of a copy of `c`, to edit in place (typed: O(backends of the farm), no JSON).
fn farm_mut<'c>(c: &'c mut Config, name: &str) -> Result<&'c mut Farm, ServiceError> {
    c.farms
        .iter_mut()
        .find(|f| f.name == name)
        .ok_or_else(|| ServiceError::NotFound(format!("no farm is named {name:?}")))
}

/// The farm `name` of a copy of the indexed configuration, to edit in place: found in O(1),
/// copying only the path to it.
fn farm_at<'c>(
    new: &'c mut Config,
    ix: &ConfigIndex,
    name: &str,
) -> Result<(usize, &'c mut Farm), ServiceError> {
    ix.names()
        .farm_position(name)
        .and_then(|i| Some((i, new.farms.get_mut(i)?)))
        .ok_or_else(|| ServiceError::NotFound(format!("no farm is named {name:?}")))
}

/// Adds a backend given as canonical JSON (its `name` included and already checked). Its values
/// are validated with its farm when the change is applied.
pub fn add_backend(farm: String, backend: Obj) -> impl IndexedChange {
    move |ix: &ConfigIndex| {
        let name = backend
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let at = format!("farms[{farm}].backends[{name}]");
        let b = crate::model::parse_backend_value(Value::Object(backend), &at)?;
        let mut new = (*ix.config).clone();
        let (i, f) = farm_at(&mut new, ix, &farm)?;
        if ix.names().backend_position(&farm, &name).is_some() {
            return Err(ServiceError::Exists(format!(
                "farm {farm:?} already has a backend named {name:?}"
            )));
        }
        f.backends.push(b);
        Ok(Edited {
            config: new,
            touched: Touched::Appended { farm: i },
        })
    }
}

pub fn update_backend(farm: String, backend: String, patch: Patch) -> impl IndexedChange {
    move |c: &ConfigIndex| edit::backend(c, &farm, &backend, |obj| apply(obj, patch))
}

pub fn set_backend_state(farm: String, backend: String, state: String) -> impl IndexedChange {
    move |c: &ConfigIndex| {
        edit::backend(c, &farm, &backend, |obj| {
            obj.insert("state".into(), Value::String(state));
            Ok(())
        })
    }
}

/// Many backends' state, weight or priority at once, typed (no JSON): O(number of changes) plus
/// a lookup table of the farms they name. A backend named twice, or not there, refuses the whole
/// batch; values are validated with their farms when the change is applied.
pub fn set_backends(changes: Vec<BackendUpdate>) -> impl IndexedChange {
    move |ix: &ConfigIndex| {
        let mut new = (*ix.config).clone();
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        let mut errors = Vec::new();
        let mut touched = Vec::with_capacity(changes.len());
        for (i, u) in changes.iter().enumerate() {
            let at = format!("changes[{i}]");
            if !seen.insert((u.farm.as_str(), u.backend.as_str())) {
                errors.push(crate::model::FieldError {
                    field: at,
                    reason: format!("backend {:?} of farm {:?} is named twice", u.backend, u.farm),
                });
                continue;
            }
            if ix.names().farm_position(&u.farm).is_none() {
                return Err(ServiceError::NotFound(format!(
                    "{at}: no farm is named {:?}",
                    u.farm
                )));
            }
            // Found through the index: O(log n) per change, however large the farm.
            let b = ix
                .names()
                .backend_position(&u.farm, &u.backend)
                .and_then(|(fi, bi)| {
                    touched.push((fi, bi));
                    new.farms.get_mut(fi)?.backends.get_mut(bi)
                })
                .filter(|b| b.name == u.backend)
                .ok_or_else(|| {
                    ServiceError::NotFound(format!(
                        "{at}: farm {:?} has no backend named {:?}",
                        u.farm, u.backend
                    ))
                })?;
            if let Some(state) = &u.state {
                match serde_json::from_value::<BackendState>(Value::String(state.clone())) {
                    Ok(s) => b.state = s,
                    Err(_) => errors.push(crate::model::FieldError {
                        field: format!("{at}.state"),
                        reason: format!("{state:?} is not one of up, down, off, drain"),
                    }),
                }
            }
            if let Some(w) = u.weight {
                b.weight = w;
            }
            if let Some(p) = u.priority {
                b.priority = p;
            }
        }
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(Invalid(errors)));
        }
        Ok(Edited {
            config: new,
            touched: Touched::backends(touched),
        })
    }
}

pub fn remove_backend(farm: String, backend: String) -> impl IndexedChange {
    move |ix: &ConfigIndex| {
        let mut new = (*ix.config).clone();
        let (i, f) = farm_at(&mut new, ix, &farm)?;
        let j = ix
            .names()
            .backend_position(&farm, &backend)
            .map(|(_, j)| j)
            .filter(|j| f.backends.get(*j).is_some_and(|b| b.name == backend))
            .ok_or_else(|| {
                ServiceError::NotFound(format!("farm {farm:?} has no backend named {backend:?}"))
            })?;
        f.backends.remove(j);
        Ok(Edited {
            config: new,
            touched: Touched::Removed { farm: i, at: j },
        })
    }
}

/// Pins `client` (in the farm's persistence format) to `backend`: a static session.
/// Pins a client to a backend. The client is compared with the farm's static sessions as parsed
/// values (`"192.0.2.7 . 080"` is `"192.0.2.7 . 80"`); whether it fits the farm's persistence and
/// the backend exists is validated when the change is applied.
pub fn add_session(farm: String, client: String, backend: String) -> impl Change {
    move |c: &Config| {
        let mut new = c.clone();
        let f = farm_mut(&mut new, &farm)?;
        let parsed: SessionClient = client.parse().map_err(|e: ClientError| {
            ServiceError::Invalid(Invalid::one(
                format!("farms[{farm}].sessions.client"),
                e.to_string(),
            ))
        })?;
        if f.sessions.iter().any(|s| s.client == parsed) {
            return Err(ServiceError::Exists(format!(
                "farm {farm:?} already pins {client:?}"
            )));
        }
        f.sessions.push(Session {
            client: parsed,
            backend,
        });
        Ok(new)
    }
}

pub fn create_policy(policy: Policy) -> impl Change {
    move |c: &Config| {
        if c.policies.iter().any(|p| p.name == policy.name) {
            return Err(ServiceError::Exists(format!(
                "a policy is already named {:?}",
                policy.name
            )));
        }
        let mut new = c.clone();
        new.policies.push(policy);
        Ok(new)
    }
}

/// Deletes a policy no farm attaches.
pub fn delete_policy(name: String) -> impl Change {
    move |c: &Config| {
        let mut new = c.clone();
        let before = new.policies.len();
        new.policies.retain(|p| p.name != name);
        if new.policies.len() == before {
            return Err(ServiceError::NotFound(format!("no policy is named {name:?}")));
        }
        if let Some(f) = new.farms.iter().find(|f| f.policies.contains(&name)) {
            return Err(ServiceError::Invalid(Invalid::one(
                format!("farms[{}].policies", f.name),
                format!("attaches policy {name:?}; detach it first"),
            )));
        }
        Ok(new)
    }
}

/// The policy's elements replaced, then removed, then added (see [`ElementEdit`]). Elements are
/// compared as parsed values, that is by their canonical text: `192.0.2.77/24` names
/// `192.0.2.0/24`, while `10.0.0.1` and `10.0.0.1/32` are two elements.
pub fn edit_policy_elements(name: String, edit: ElementEdit) -> impl Change {
    move |c: &Config| {
        let i = c
            .policies
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| ServiceError::NotFound(format!("no policy is named {name:?}")))?;
        let at = format!("policies[{name}].elements");
        let mut new = c.clone();
        edit_elements(&mut new.policies[i].elements, edit, &at)?;
        Ok(new)
    }
}

/// The elements of one list of an edit, each refused under `at` with the parser's reason.
fn parse_elements(list: Vec<String>, at: &str) -> Result<Vec<PolicyElement>, ServiceError> {
    list.iter()
        .map(|x| {
            x.parse()
                .map_err(|e: PolicyElementError| ServiceError::Invalid(Invalid::one(at, e.to_string())))
        })
        .collect()
}

fn edit_elements(list: &mut Vec<PolicyElement>, edit: ElementEdit, at: &str) -> Result<(), ServiceError> {
    let replace = edit.replace.map(|r| parse_elements(r, at)).transpose()?;
    let remove = parse_elements(edit.remove, at)?;
    let add = parse_elements(edit.add, at)?;
    if let Some(r) = replace {
        *list = Vec::with_capacity(r.len());
        for x in r {
            if !list.contains(&x) {
                list.push(x);
            }
        }
    }
    // Every element named must be there: naming one twice is naming it once.
    if let Some(missing) = remove.iter().find(|e| !list.contains(e)) {
        return Err(ServiceError::Invalid(Invalid::one(
            at,
            format!("\"{missing}\" is not an element"),
        )));
    }
    let gone: HashSet<&PolicyElement> = remove.iter().collect();
    list.retain(|x| !gone.contains(x));
    for x in add {
        if !list.contains(&x) {
            list.push(x);
        }
    }
    Ok(())
}

/// A whole document: it becomes the configuration (`replace`), or its farms and policies are
/// added or replaced by name (`merge`); the result is validated whole.
pub fn import(incoming: Config, mode: ImportMode) -> impl Change {
    move |c: &Config| {
        if mode == ImportMode::Replace {
            return Ok(incoming);
        }
        let mut new = c.clone();
        upsert(&mut new.farms, incoming.farms, |f| f.name.clone());
        upsert(&mut new.policies, incoming.policies, |p| p.name.clone());
        validate(&new)?;
        Ok(new)
    }
}

/// Replaces the items of `into` that `from` names again, and appends the others.
fn upsert<T: Clone>(into: &mut List<T>, from: impl IntoIterator<Item = T>, name: impl Fn(&T) -> String) {
    for x in from {
        match into.iter().position(|y| name(y) == name(&x)) {
            Some(i) => into[i] = x,
            None => into.push(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_config;

    fn config() -> Config {
        parse_config(
            &serde_json::json!({"farms": [{"name": "web", "virtual-addresses": ["192.0.2.1"],
                "virtual-ports": "80", "persistence": ["srcip"],
                "backends": [{"name": "a", "ip-addr": "10.0.0.1"}]}],
                "policies": [{"name": "bad", "elements": ["10.8.0.2"]}]})
            .to_string(),
        )
        .unwrap()
    }

    fn ix(c: &Config) -> ConfigIndex {
        ConfigIndex::build(std::sync::Arc::new(c.clone()))
    }

    fn obj(v: serde_json::Value) -> Obj {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn farms_are_created_renamed_and_deleted_by_name() {
        let c = config();
        let web = c.farms[0].clone();
        assert!(matches!(create_farm(web)(&c), Err(ServiceError::Exists(_))));
        let c2 = rename_farm("web".into(), "www".into())(&ix(&c)).unwrap();
        assert!(c2.farm("www").is_some() && c2.farm("web").is_none());
        assert!(matches!(
            rename_farm("web".into(), "no way".into())(&ix(&c)),
            Err(ServiceError::Invalid(_))
        ));
        assert!(matches!(
            delete_farm("www".into())(&c),
            Err(ServiceError::NotFound(_))
        ));
        assert!(delete_farm("web".into())(&c).unwrap().farms.is_empty());
    }

    #[test]
    fn backends_and_sessions_are_named_once() {
        let c = config();
        let b = obj(serde_json::json!({"name": "b", "ip-addr": "10.0.0.2"}));
        let c2 = add_backend("web".into(), b.clone())(&ix(&c)).unwrap();
        assert_eq!(c2.farm("web").unwrap().backends.len(), 2);
        assert!(matches!(
            add_backend("web".into(), b)(&ix(&c2)),
            Err(ServiceError::Exists(_))
        ));
        let c3 = set_backend_state("web".into(), "b".into(), "drain".into())(&ix(&c2)).unwrap();
        let state = serde_json::to_value(c3.farm("web").unwrap().backend("b").unwrap().state).unwrap();
        assert_eq!(state, "drain");
        assert!(matches!(
            set_backend_state("web".into(), "b".into(), "sideways".into())(&ix(&c2)),
            Err(ServiceError::Invalid(_))
        ));
        let c4 = remove_backend("web".into(), "b".into())(&ix(&c3)).unwrap();
        assert_eq!(c4.farm("web").unwrap().backends.len(), 1);
        assert!(matches!(
            remove_backend("web".into(), "b".into())(&ix(&c4)),
            Err(ServiceError::NotFound(_))
        ));
        let c5 = add_session("web".into(), "10.8.0.9".into(), "a".into())(&c).unwrap();
        assert!(matches!(
            add_session("web".into(), "10.8.0.9".into(), "a".into())(&c5),
            Err(ServiceError::Exists(_))
        ));
        // Clients are compared as values, and stored in canonical form.
        let c6 = add_session("web".into(), "2001:DB8::9".into(), "a".into())(&c).unwrap();
        assert_eq!(c6.farms[0].sessions[0].client.to_string(), "2001:db8::9");
        let e = add_session("web".into(), "2001:db8:0::9".into(), "a".into())(&c6);
        assert!(
            matches!(&e, Err(ServiceError::Exists(m)) if m == "farm \"web\" already pins \"2001:db8:0::9\""),
            "{e:?}"
        );
        let e = add_session("web".into(), "10.8.0.9 . x".into(), "a".into())(&c);
        assert!(
            matches!(&e, Err(ServiceError::Invalid(i)) if i.to_string()
                == "farms[web].sessions.client: \"x\" is not an IP address, a port 1-65535 or a MAC address"),
            "{e:?}"
        );
        assert!(matches!(
            add_session("nope".into(), "10.8.0.9".into(), "a".into())(&c),
            Err(ServiceError::NotFound(_))
        ));
    }

    #[test]
    fn policy_elements_are_compared_as_parsed_values() {
        let c = config();
        let edit = |add: &[&str], remove: &[&str]| ElementEdit {
            add: add.iter().map(|x| x.to_string()).collect(),
            remove: remove.iter().map(|x| x.to_string()).collect(),
            ..ElementEdit::default()
        };
        let texts =
            |c: &Config| -> Vec<String> { c.policies[0].elements.iter().map(|e| e.to_string()).collect() };
        // The same value written two ways is one element, kept in canonical form.
        let c2 = edit_policy_elements(
            "bad".into(),
            edit(&["192.0.2.77/24", "192.0.2.0/24", "10.8.0.2"], &[]),
        )(&c)
        .unwrap();
        assert_eq!(texts(&c2), ["10.8.0.2", "192.0.2.0/24"]);
        // An address and its /32 are two elements: removing one leaves the other.
        let c3 = edit_policy_elements("bad".into(), edit(&["10.8.0.2/32"], &[]))(&c2).unwrap();
        assert_eq!(texts(&c3), ["10.8.0.2", "192.0.2.0/24", "10.8.0.2/32"]);
        let c4 = edit_policy_elements("bad".into(), edit(&[], &["10.8.0.2", "192.0.2.1/24"]))(&c3).unwrap();
        assert_eq!(texts(&c4), ["10.8.0.2/32"]);
        // A bad element refuses the whole edit, naming the field and the reason.
        let e = edit_policy_elements("bad".into(), edit(&["10.0.0.1", "10.0.0.9-10.0.0.1"], &[]))(&c);
        assert!(
            matches!(&e, Err(ServiceError::Invalid(i)) if i.to_string()
                == "policies[bad].elements: range \"10.0.0.9-10.0.0.1\" runs backwards"),
            "{e:?}"
        );
        let e = edit_policy_elements("bad".into(), edit(&[], &["nope"]))(&c);
        assert!(
            matches!(&e, Err(ServiceError::Invalid(i)) if i.to_string()
                == "policies[bad].elements: \"nope\" is not an IP address"),
            "{e:?}"
        );
        assert!(matches!(
            edit_policy_elements("nope".into(), edit(&["10.0.0.1"], &[]))(&c),
            Err(ServiceError::NotFound(_))
        ));
    }

    #[test]
    fn a_batch_is_all_or_nothing() {
        let mut c = config();
        c.farms[0]
            .backends
            .push(crate::model::Backend::new("b", "10.0.0.2".parse().unwrap()));
        let u = |backend: &str, state: Option<&str>, weight: Option<u32>| BackendUpdate {
            farm: "web".into(),
            backend: backend.into(),
            state: state.map(str::to_string),
            weight,
            priority: None,
        };
        let cix = ix(&c);
        let ok = set_backends(vec![u("a", Some("drain"), None), u("b", None, Some(4))])(&cix).unwrap();
        let web = ok.farm("web").unwrap();
        assert_eq!(web.backend("a").unwrap().state, BackendState::Drain);
        assert_eq!(web.backend("b").unwrap().weight, 4);
        // Every bad change is listed; nothing is returned to commit.
        let e = set_backends(vec![u("a", Some("sideways"), None), u("a", Some("up"), None)])(&cix);
        match e {
            Err(ServiceError::Invalid(i)) => assert_eq!(
                i.to_string(),
                "changes[0].state: \"sideways\" is not one of up, down, off, drain; \
                 changes[1]: backend \"a\" of farm \"web\" is named twice"
            ),
            other => panic!("{other:?}"),
        }
        let e = set_backends(vec![u("a", Some("down"), None), u("zz", Some("down"), None)])(&cix);
        assert!(
            matches!(&e, Err(ServiceError::NotFound(m)) if m == "changes[1]: farm \"web\" has no backend named \"zz\""),
            "{e:?}"
        );
    }

    #[test]
    fn policies_and_imports() {
        let c = config();
        let add = |xs: &[&str]| ElementEdit {
            add: xs.iter().map(|x| x.to_string()).collect(),
            ..ElementEdit::default()
        };
        let c2 = edit_policy_elements("bad".into(), add(&["192.0.2.0/24", "192.0.2.0/24"]))(&c).unwrap();
        assert_eq!(c2.policies[0].elements.len(), 2);
        // Naming an element twice is naming it once; naming a missing one refuses the whole edit.
        let remove = |xs: &[&str]| ElementEdit {
            remove: xs.iter().map(|x| x.to_string()).collect(),
            ..ElementEdit::default()
        };
        let c3 = edit_policy_elements("bad".into(), remove(&["10.8.0.2", "10.8.0.2"]))(&c2).unwrap();
        assert_eq!(c3.policies[0].elements.len(), 1);
        let e = edit_policy_elements("bad".into(), remove(&["192.0.2.0/24", "10.9.9.9"]))(&c2);
        assert!(
            matches!(&e, Err(ServiceError::Invalid(i)) if i.to_string() == "policies[bad].elements: \"10.9.9.9\" is not an element"),
            "{e:?}"
        );
        let replace = ElementEdit {
            replace: Some(vec!["10.1.0.0/16".into(), "10.1.0.0/16".into()]),
            add: vec!["10.2.0.1".into()],
            ..ElementEdit::default()
        };
        let c4 = edit_policy_elements("bad".into(), replace)(&c2).unwrap();
        assert_eq!(c4.policies[0].elements.len(), 2);
        let attached = update_farm(
            "web".into(),
            Patch {
                set: obj(serde_json::json!({"policies": ["bad"]})),
                removed: Vec::new(),
            },
        )(&ix(&c))
        .unwrap();
        assert!(matches!(
            delete_policy("bad".into())(&attached),
            Err(ServiceError::Invalid(_))
        ));
        assert!(delete_policy("bad".into())(&c).unwrap().policies.is_empty());
        // merge adds and replaces by name; replace keeps only the document
        let mut other = config();
        other.farms[0].name = "db".into();
        other.farms[0].virtual_addresses = vec!["192.0.2.2".parse().unwrap()];
        other.policies.clear();
        let merged = import(other.clone(), ImportMode::Merge)(&c).unwrap();
        assert_eq!(merged.farms.len(), 2);
        assert_eq!(merged.policies.len(), 1);
        let replaced = import(other, ImportMode::Replace)(&c).unwrap();
        assert_eq!((replaced.farms.len(), replaced.policies.len()), (1, 0));
        // a merge that makes two farms claim one service is refused whole
        let mut clash = config();
        clash.farms[0].name = "twin".into();
        clash.policies.clear();
        assert!(matches!(
            import(clash, ImportMode::Merge)(&c),
            Err(ServiceError::Invalid(_))
        ));
    }
}
