//! Farm, backend and policy keys as D-Bus values: reading is typed per key; writing turns the
//! variant into the key's JSON and lets the model parse it, so a bad value gets the model's own
//! error, naming the key. The tables themselves are [`crate::schema`]'s.

use std::collections::HashMap;

use serde::Serialize;
use zbus::zvariant::{OwnedValue, Value};

use crate::model::{Backend, Farm};
pub use crate::schema::props::{BACKEND, FARM, POLICY, Prop, find};

/// A policy key's value.
pub fn policy_value(x: &crate::model::Policy, name: &str) -> Option<Value<'static>> {
    Some(match name {
        "Name" => x.name.clone().into(),
        "Type" => word(&x.kind).into(),
        "Family" => word(&x.family).into(),
        "Timeout" => x.timeout.into(),
        "LogPrefix" => x.log_prefix.clone().unwrap_or_default().into(),
        "Elements" => Value::from(x.elements.iter().map(ToString::to_string).collect::<Vec<_>>()),
        _ => return None,
    })
}

/// A value as its canonical JSON word (`"ipv4"`, `"10/second"`, `"02:00:00:00:00:01"`).
fn word<T: Serialize>(x: &T) -> String {
    match serde_json::to_value(x) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => String::new(),
    }
}

/// An object key as its JSON text; `""` when not set.
fn json_text<T: Serialize>(x: &Option<T>) -> String {
    x.as_ref()
        .and_then(|x| serde_json::to_string(x).ok())
        .unwrap_or_default()
}

fn opt<T: Serialize>(x: &Option<T>) -> String {
    x.as_ref().map(word).unwrap_or_default()
}

fn words<'a, T: Serialize + 'a>(xs: impl IntoIterator<Item = &'a T>) -> Value<'static> {
    Value::from(xs.into_iter().map(word).collect::<Vec<String>>())
}

/// A farm key's value (`None` for a name that is not a farm key).
pub fn farm_value(f: &Farm, name: &str) -> Option<Value<'static>> {
    Some(match name {
        "Name" => f.name.clone().into(),
        "Family" => word(&f.family).into(),
        "VirtualAddresses" => words(&f.virtual_addresses),
        "VirtualPorts" => f.virtual_ports.to_string().into(),
        "Protocol" => word(&f.protocol).into(),
        "Mode" => word(&f.mode).into(),
        "Scheduler" => word(&f.scheduler).into(),
        "SchedParam" => words(&f.sched_param),
        "Persistence" => words(&f.persistence),
        "PersistTtl" => f.persist_ttl.into(),
        "Helper" => word(&f.helper).into(),
        "Log" => words(&f.log),
        "LogPrefix" => f.log_prefix.clone().unwrap_or_default().into(),
        "LogRtLimit" => opt(&f.log_rtlimit).into(),
        "Mark" => f.mark.map(|m| m.0).unwrap_or(0).into(),
        "Priority" => f.priority.into(),
        "State" => word(&f.state).into(),
        "SourceAddr" => opt(&f.source_addr).into(),
        "Iface" => f.iface.clone().unwrap_or_default().into(),
        "Oface" => f.oface.clone().unwrap_or_default().into(),
        "IetherAddr" => opt(&f.iether_addr).into(),
        "OetherAddr" => opt(&f.oether_addr).into(),
        "NewRtLimit" => opt(&f.new_rtlimit).into(),
        "NewRtLimitBurst" => f.new_rtlimit_burst.into(),
        "RstRtLimit" => opt(&f.rst_rtlimit).into(),
        "RstRtLimitBurst" => f.rst_rtlimit_burst.into(),
        "EstConnLimit" => f.est_connlimit.into(),
        "TcpStrict" => f.tcp_strict.into(),
        "Queue" => f.queue.into(),
        "Verdict" => words(&f.verdict),
        "IntraConnect" => f.intra_connect.into(),
        "FlowOffload" => f.flow_offload.into(),
        "LimitsTtl" => f.limits_ttl.into(),
        "Policies" => Value::from(f.policies.clone()),
        "HealthCheck" => json_text(&f.health_check).into(),
        "HealthStart" => word(&f.health_start).into(),
        "HealthReady" => f.health_ready().into(),
        "EffectivePriority" => crate::model::effective_priority(f).into(),
        "Quorum" => f.quorum.into(),
        "QuorumMet" => crate::model::quorum_met(f).into(),
        _ => return None,
    })
}

/// A backend key's value (`None` for a name that is not a backend key).
pub fn backend_value(b: &Backend, name: &str) -> Option<Value<'static>> {
    Some(match name {
        "Name" => b.name.clone().into(),
        "IpAddr" => b.ip_addr.to_string().into(),
        "Port" => b.port.unwrap_or(0).into(),
        "Weight" => b.weight.into(),
        "Priority" => b.priority.into(),
        "Mark" => b.mark.map(|m| m.0).unwrap_or(0).into(),
        "State" => word(&b.state).into(),
        "SourceAddr" => opt(&b.source_addr).into(),
        "EtherAddr" => opt(&b.ether_addr).into(),
        "EstConnLimit" => b.est_connlimit.into(),
        "HealthCheck" => json_text(&b.health_check).into(),
        "Health" => b.health.as_str().into(),
        "HealthReason" => b.health_reason.clone().into(),
        "Sorry" => b.sorry.into(),
        "HealthDrain" => b.health_drain.into(),
        // Percentages; 100 (all of the weight) when the key is not set.
        "HealthWeight" => u32::from(b.health_weight.unwrap_or(100)).into(),
        "HealthRamp" => u32::from(b.health_ramp.unwrap_or(100)).into(),
        "EffectiveWeight" => crate::model::effective_weight(b).into(),
        _ => return None,
    })
}

/// A property value as the key's JSON: `None` removes the key (its default applies), which is
/// what an empty string, port 0 or mark 0 mean.
pub fn to_json(prop: &Prop, v: &Value<'_>) -> Result<Option<serde_json::Value>, String> {
    let v = match v {
        Value::Value(inner) => inner.as_ref(),
        other => other,
    };
    let want = || {
        format!(
            "{} takes D-Bus type {}, not {}",
            prop.name,
            prop.sig,
            v.value_signature()
        )
    };
    let int = || -> Option<i64> {
        Some(match v {
            Value::U8(x) => i64::from(*x),
            Value::I16(x) => i64::from(*x),
            Value::U16(x) => i64::from(*x),
            Value::I32(x) => i64::from(*x),
            Value::U32(x) => i64::from(*x),
            Value::I64(x) => *x,
            Value::U64(x) => i64::try_from(*x).ok()?,
            _ => return None,
        })
    };
    Ok(match prop.sig {
        "s" if crate::schema::props::is_json_object(prop.key) => match v {
            Value::Str(s) if s.is_empty() => None,
            Value::Str(s) => Some(
                serde_json::from_str::<serde_json::Value>(s)
                    .map_err(|e| format!("{} takes a JSON object as text: {e}", prop.name))?,
            ),
            _ => return Err(want()),
        },
        "s" => match v {
            Value::Str(s) if s.is_empty() => None,
            Value::Str(s) => Some(serde_json::Value::String(s.to_string())),
            _ => return Err(want()),
        },
        "as" => {
            let Value::Array(a) = v else { return Err(want()) };
            let mut out = Vec::new();
            for x in a.iter() {
                match x {
                    Value::Str(s) => out.push(serde_json::Value::String(s.to_string())),
                    _ => return Err(want()),
                }
            }
            Some(serde_json::Value::Array(out))
        }
        "b" => match v {
            Value::Bool(b) => Some(serde_json::Value::Bool(*b)),
            _ => return Err(want()),
        },
        _ => {
            let n = int().ok_or_else(want)?;
            if n == 0 && (prop.key == "port" || prop.key == "mark") {
                None
            } else {
                Some(serde_json::Value::from(n))
            }
        }
    })
}

/// Applies `a{sv}` settings (CamelCase keys) to a JSON object of canonical keys. Unknown keys
/// are refused, as are read-only ones; `Backends` (`aa{sv}`) is taken when `backends` is set.
pub fn apply_settings(
    obj: &mut serde_json::Map<String, serde_json::Value>,
    table: &'static [Prop],
    settings: &HashMap<String, OwnedValue>,
    at: &str,
    backends: bool,
) -> Result<(), crate::model::Invalid> {
    use crate::model::Invalid;
    let mut keys: Vec<&String> = settings.keys().collect();
    keys.sort();
    for k in keys {
        let v: &Value<'_> = &settings[k];
        if backends && k == "Backends" {
            let list = backend_dicts(v).map_err(|e| Invalid::one(format!("{at}.backends"), e))?;
            let mut out = Vec::new();
            for (i, d) in list.iter().enumerate() {
                let mut b = serde_json::Map::new();
                apply_settings(&mut b, BACKEND, d, &format!("{at}.backends[{i}]"), false)?;
                if let Some(n) = d.get("Name") {
                    match &**n {
                        Value::Str(s) => {
                            b.insert("name".into(), serde_json::Value::String(s.to_string()));
                        }
                        _ => {
                            return Err(Invalid::one(
                                format!("{at}.backends[{i}].name"),
                                "Name takes D-Bus type s",
                            ));
                        }
                    }
                }
                out.push(serde_json::Value::Object(b));
            }
            obj.insert("backends".into(), serde_json::Value::Array(out));
            continue;
        }
        if k == "Name" && !backends {
            // A backend's name inside CreateFarm's Backends list is taken above.
            continue;
        }
        let Some(prop) = find(table, k) else {
            let known: Vec<&str> = table.iter().map(|p| p.name).collect();
            return Err(Invalid::one(
                format!("{at}.{k}"),
                format!("unknown key; known keys: {}", known.join(", ")),
            ));
        };
        match to_json(prop, v).map_err(|e| Invalid::one(format!("{at}.{}", prop.key), e))? {
            Some(j) => obj.insert(prop.key.into(), j),
            None => obj.remove(prop.key),
        };
    }
    Ok(())
}

/// `a{sv}` changes of an object as a patch: keys set, and keys reset to their defaults (an empty
/// string, or 0 for port and mark).
pub fn patch(
    table: &'static [Prop],
    changes: &HashMap<String, OwnedValue>,
    at: &str,
    backends: bool,
) -> Result<crate::service::Patch, crate::model::Invalid> {
    let mut set = serde_json::Map::new();
    apply_settings(&mut set, table, changes, at, backends)?;
    let removed = table
        .iter()
        .filter(|p| changes.contains_key(p.name) && !set.contains_key(p.key))
        .map(|p| p.key.to_string())
        .collect();
    Ok(crate::service::Patch { set, removed })
}

/// One change of `Manager.SetBackends`: `State`, `Weight` and `Priority` only.
pub fn backend_update(
    farm: String,
    backend: String,
    settings: &HashMap<String, OwnedValue>,
    at: &str,
) -> Result<crate::service::BackendUpdate, crate::model::Invalid> {
    use crate::model::Invalid;
    let mut u = crate::service::BackendUpdate {
        farm,
        backend,
        ..Default::default()
    };
    let mut names: Vec<&String> = settings.keys().collect();
    names.sort();
    for name in names {
        let v: &Value<'_> = &settings[name];
        let field = format!("{at}.{name}");
        let prop = match name.as_str() {
            "State" | "Weight" | "Priority" => find(BACKEND, name),
            _ => None,
        }
        .ok_or_else(|| Invalid::one(&field, "a batch sets State, Weight or Priority only"))?;
        let json = to_json(prop, v).map_err(|e| Invalid::one(&field, e))?;
        // A number out of range is refused here, never dropped from the change.
        let number = |n: &serde_json::Value| {
            n.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| Invalid::one(&field, format!("{n} is not a number from 0 to 4294967295")))
        };
        match (prop.key, json) {
            ("state", Some(serde_json::Value::String(s))) => u.state = Some(s),
            ("weight", Some(n)) => u.weight = Some(number(&n)?),
            ("priority", Some(n)) => u.priority = Some(number(&n)?),
            _ => return Err(Invalid::one(&field, format!("{name} takes a value here"))),
        }
    }
    if u.keys().next().is_none() {
        return Err(Invalid::one(at, "sets nothing (State, Weight or Priority)"));
    }
    Ok(u)
}

/// `aa{sv}` as a list of dictionaries.
fn backend_dicts(v: &Value<'_>) -> Result<Vec<HashMap<String, OwnedValue>>, String> {
    let v = match v {
        Value::Value(inner) => inner.as_ref(),
        other => other,
    };
    let owned = OwnedValue::try_from(v.try_clone().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    Vec::<HashMap<String, OwnedValue>>::try_from(owned)
        .map_err(|_| format!("Backends takes D-Bus type aa{{sv}}, not {}", v.value_signature()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_change_refuses_what_it_cannot_carry() {
        let set =
            |k: &str, v: Value<'static>| HashMap::from([(k.to_string(), OwnedValue::try_from(v).unwrap())]);
        let u = backend_update(
            "web".into(),
            "a".into(),
            &set("Weight", Value::from(-1i32)),
            "changes[0]",
        );
        assert_eq!(
            u.unwrap_err().to_string(),
            "changes[0].Weight: -1 is not a number from 0 to 4294967295"
        );
        let u = backend_update(
            "web".into(),
            "a".into(),
            &set("IpAddr", Value::from("10.0.0.9")),
            "changes[0]",
        );
        assert_eq!(
            u.unwrap_err().to_string(),
            "changes[0].IpAddr: a batch sets State, Weight or Priority only"
        );
        let u = backend_update(
            "web".into(),
            "a".into(),
            &set("Priority", Value::from(2u32)),
            "changes[0]",
        )
        .unwrap();
        assert_eq!((u.priority, u.weight, u.state), (Some(2), None, None));
    }

    #[test]
    fn every_writable_key_reads_and_is_a_canonical_key() {
        let f = Farm::new("web");
        let json = serde_json::to_value(&f).unwrap();
        for prop in FARM {
            let v = farm_value(&f, prop.name).unwrap_or_else(|| panic!("{}", prop.name));
            assert_eq!(v.value_signature().to_string(), prop.sig, "{}", prop.name);
            // Setting the value read back (when not the "default" spelling) parses to the same farm.
            let mut obj = json.as_object().unwrap().clone();
            match to_json(prop, &v).unwrap() {
                Some(j) => obj.insert(prop.key.into(), j),
                None => obj.remove(prop.key),
            };
            let back = crate::model::parse_farm_value(&serde_json::Value::Object(obj), "farms[web]")
                .unwrap_or_else(|e| panic!("{}: {e}", prop.name));
            assert_eq!(back, f, "{}", prop.name);
        }
        let b = Backend::new("b", "192.0.2.1".parse().unwrap());
        for prop in BACKEND {
            let v = backend_value(&b, prop.name).unwrap();
            assert_eq!(v.value_signature().to_string(), prop.sig, "{}", prop.name);
        }
    }

    #[test]
    fn settings_name_the_key_and_the_type() {
        let mut obj = serde_json::Map::new();
        let s = HashMap::from([("Weight".to_string(), OwnedValue::from(3u32))]);
        let e = apply_settings(&mut obj, FARM, &s, "farms[web]", true).unwrap_err();
        assert!(e.to_string().starts_with("farms[web].Weight: unknown key"), "{e}");
        let s = HashMap::from([(
            "PersistTtl".to_string(),
            OwnedValue::try_from(Value::from("x")).unwrap(),
        )]);
        let e = apply_settings(&mut obj, FARM, &s, "farms[web]", true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "farms[web].persist-ttl: PersistTtl takes D-Bus type u, not s"
        );
        let s = HashMap::from([("PersistTtl".to_string(), OwnedValue::from(30i32))]);
        apply_settings(&mut obj, FARM, &s, "farms[web]", true).unwrap();
        assert_eq!(obj["persist-ttl"], 30);
    }
}
