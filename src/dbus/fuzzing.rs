//! The D-Bus front end's translation of `a{sv}` settings, without a bus: the fuzz input is a
//! message body as the bus delivers it, decoded by zvariant for the method it picks, then
//! translated by the same code as the method (see `crate::fuzzing`).

use std::collections::HashMap;

use zbus::zvariant::serialized::{Context, Data};
use zbus::zvariant::{LE, OwnedValue, Type};

use super::farm::new_backend;
use super::manager::new_object;
use super::props::{self, BACKEND, FARM, POLICY};
use crate::model::{parse_farm_value, parse_policy_value};
use crate::service::{Operation, ServiceError};

type Settings = HashMap<String, OwnedValue>;

/// `data[0]` picks the method, the rest is its body (little endian, as most senders write it):
/// 0 `Manager.CreateFarm (sa{sv})`, 1 `Manager.CreatePolicy (sa{sv})`, 2 `Farm.Update (a{sv})`,
/// 3 `Farm.AddBackend (sa{sv})`, 4 `Backend.Update (a{sv})`, 5 `Manager.SetBackends
/// (a(ssa{sv}))`, 6 and 7 `Properties.Set (sv)` of a farm and of a backend. Whether the body
/// made an operation.
pub fn settings(data: &[u8]) -> bool {
    let Some((&method, body)) = data.split_first() else {
        return false;
    };
    let body = Data::new(body, Context::new_dbus(LE, 0));
    let op = match method % 8 {
        0 => decode::<(String, Settings)>(&body).map(|(name, s)| create_farm(&name, &s)),
        1 => decode::<(String, Settings)>(&body).map(|(name, s)| create_policy(&name, &s)),
        2 => decode::<Settings>(&body).map(|s| {
            let patch = props::patch(FARM, &s, "farms[web]", true)?;
            Ok(Operation::UpdateFarm {
                farm: "web".into(),
                patch,
            })
        }),
        3 => decode::<(String, Settings)>(&body).map(|(name, s)| add_backend(&name, &s)),
        4 => decode::<Settings>(&body).map(|s| {
            let patch = props::patch(BACKEND, &s, "farms[web].backends[a]", false)?;
            Ok(Operation::UpdateBackend {
                farm: "web".into(),
                backend: "a".into(),
                patch,
                for_secs: None,
            })
        }),
        5 => decode::<Vec<(String, String, Settings)>>(&body).map(|changes| {
            let mut updates = Vec::with_capacity(changes.len());
            for (i, (farm, backend, s)) in changes.into_iter().enumerate() {
                updates.push(props::backend_update(
                    farm,
                    backend,
                    &s,
                    &format!("changes[{i}]"),
                )?);
            }
            Ok(Operation::SetBackends { changes: updates })
        }),
        6 => decode::<(String, OwnedValue)>(&body).and_then(|(name, v)| set_property(true, &name, &v)),
        _ => decode::<(String, OwnedValue)>(&body).and_then(|(name, v)| set_property(false, &name, &v)),
    };
    match op {
        Some(Ok(op)) => {
            let _ = crate::fuzzing::apply(op);
            true
        }
        _ => false,
    }
}

fn decode<'d, T: serde::Deserialize<'d> + Type>(body: &'d Data<'d, 'd>) -> Option<T> {
    body.deserialize::<T>().ok().map(|(v, _)| v)
}

fn create_farm(name: &str, s: &Settings) -> Result<Operation, ServiceError> {
    let at = format!("farms[{name}]");
    let obj = new_object(name, FARM, s, &at, true).map_err(to_service)?;
    let farm = parse_farm_value(&obj, &at)?;
    Ok(Operation::CreateFarm { farm: Box::new(farm) })
}

fn create_policy(name: &str, s: &Settings) -> Result<Operation, ServiceError> {
    let at = format!("policies[{name}]");
    let obj = new_object(name, POLICY, s, &at, false).map_err(to_service)?;
    let policy = parse_policy_value(obj, &at)?;
    Ok(Operation::CreatePolicy {
        policy: Box::new(policy),
    })
}

fn add_backend(name: &str, s: &Settings) -> Result<Operation, ServiceError> {
    let backend = new_backend("web", name, s).map_err(to_service)?;
    Ok(Operation::AddBackend {
        farm: "web".into(),
        backend,
    })
}

/// As the `Properties.Set` handler of `keyed`: the key's JSON, set on farm `web` or its backend `a`.
fn set_property(farm: bool, name: &str, value: &OwnedValue) -> Option<Result<Operation, ServiceError>> {
    let table = if farm { FARM } else { BACKEND };
    let prop = props::find(table, name)?;
    let json = match props::to_json(prop, value) {
        Ok(j) => j,
        Err(e) => return Some(Err(ServiceError::Invalid(crate::model::Invalid::one(name, e)))),
    };
    let patch = crate::service::Patch::one(prop.key, json);
    Some(Ok(if farm {
        Operation::UpdateFarm {
            farm: "web".into(),
            patch,
        }
    } else {
        Operation::UpdateBackend {
            farm: "web".into(),
            backend: "a".into(),
            patch,
            for_secs: None,
        }
    }))
}

fn to_service(e: super::Error) -> ServiceError {
    ServiceError::Invalid(crate::model::Invalid::one("settings", e.to_string()))
}
