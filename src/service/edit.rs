//! Changes as functions of the committed configuration, on its canonical JSON: the service runs
//! them in its turn, so concurrent requests compose instead of overwriting each other.

use serde_json::{Map, Value};

use super::ServiceError;
use super::index::ConfigIndex;
use crate::model::{Config, Invalid, Touched, parse_backend_value, parse_farm_value};

pub type Obj = Map<String, Value>;

/// A new configuration, and where it differs from the one it was made of when the edit knows.
#[derive(Debug)]
pub struct Edited {
    pub config: Config,
    pub touched: Touched,
}

/// Read as the configuration it is.
impl std::ops::Deref for Edited {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

impl From<Config> for Edited {
    fn from(config: Config) -> Edited {
        Edited {
            config,
            touched: Touched::Unknown,
        }
    }
}

fn not_found_farm(name: &str) -> ServiceError {
    ServiceError::NotFound(format!("no farm is named {name:?}"))
}

/// The configuration with farm `name` replaced by `f` of its canonical JSON, parsed back.
pub fn farm(
    ix: &ConfigIndex,
    name: &str,
    f: impl FnOnce(&mut Obj) -> Result<(), ServiceError>,
) -> Result<Config, ServiceError> {
    let c = &*ix.config;
    let i = ix
        .names()
        .farm_position(name)
        .ok_or_else(|| not_found_farm(name))?;
    let mut obj = to_obj(&c.farms[i])?;
    f(&mut obj)?;
    let at = format!("farms[{name}]");
    let farm = parse_farm_value(&Value::Object(obj), &at)?;
    let mut new = c.clone();
    new.farms[i] = farm;
    Ok(new)
}

/// The configuration with backend `backend` of farm `name` replaced by `f` of its JSON. Only
/// that backend goes through JSON (a farm may have thousands); it is validated with its farm
/// when the change is applied.
pub fn backend(
    ix: &ConfigIndex,
    name: &str,
    backend: &str,
    f: impl FnOnce(&mut Obj) -> Result<(), ServiceError>,
) -> Result<Edited, ServiceError> {
    let c = &*ix.config;
    ix.names()
        .farm_position(name)
        .ok_or_else(|| not_found_farm(name))?;
    let (i, j) = ix
        .names()
        .backend_position(name, backend)
        .ok_or_else(|| ServiceError::NotFound(format!("farm {name:?} has no backend named {backend:?}")))?;
    let mut obj = to_obj(&c.farms[i].backends[j])?;
    f(&mut obj)?;
    let b = parse_backend_value(Value::Object(obj), &format!("farms[{name}].backends[{backend}]"))?;
    let mut new = c.clone();
    new.farms[i].backends[j] = b;
    Ok(Edited {
        config: new,
        touched: Touched::backend(i, j),
    })
}

pub fn to_obj<T: serde::Serialize>(x: &T) -> Result<Obj, ServiceError> {
    match serde_json::to_value(x) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(ServiceError::Invalid(Invalid::one(
            "document",
            "cannot be shown as JSON",
        ))),
    }
}

/// Sets or removes (`None`: back to the default) one canonical key.
pub fn set_key(obj: &mut Obj, key: &str, value: Option<Value>) {
    match value {
        Some(v) => obj.insert(key.to_string(), v),
        None => obj.remove(key),
    };
}

/// Refuses a name the API does not allow, naming the field.
pub fn check_name(field: &str, name: &str) -> Result<(), ServiceError> {
    crate::model::validate_name(name).map_err(|e| ServiceError::Invalid(Invalid::one(field, e.to_string())))
}
