//! The methods of `org.nftlbd1` (and `org.varlink.service`): parameters in, the service's
//! changes and reads out, polkit for the calling process on every change.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::Reply;
use super::farm_reply::FarmReply;
use crate::model::{parse_config, parse_farm_value, parse_policy_value};
use crate::polkit::Subject;
use crate::service::operation::Kind;
use crate::service::{
    BackendUpdate, Caller, ElementEdit, Event, ImportMode, Operation, Output, Patch, Service, ServiceError,
    edit,
};

/// The interface description served by `GetInterfaceDescription`.
const DESCRIPTION: &str = include_str!("../../varlink/org.nftlbd1.varlink");
const SERVICE_DESCRIPTION: &str = "interface org.varlink.service
method GetInfo() -> (vendor: string, product: string, version: string, url: string, interfaces: []string)
method GetInterfaceDescription(interface: string) -> (description: string)
error InterfaceNotFound (interface: string)
error MethodNotFound (method: string)
error MethodNotImplemented (method: string)
error InvalidParameter (parameter: string)
error PermissionDenied ()
";

/// What every connection shares.
pub struct Ctx {
    pub service: Service,
}

impl Ctx {
    pub fn new(service: Service) -> Ctx {
        Ctx { service }
    }
}

const HOW_TO_ASK: &str = "call with \"allowInteractiveAuthentication\": true, with an agent running, as nftlbctl does at a terminal";

/// The caller of a connection, from the socket's credentials (the kernel's, not the caller's
/// word); `interactive` is this call's `allowInteractiveAuthentication`.
pub fn caller(uid: u32, pid: Option<u32>, interactive: bool) -> Caller {
    Caller {
        // Without a pid polkit cannot identify the process: it refuses, as it should.
        subject: Subject::Process {
            pid: pid.unwrap_or(0),
            uid,
        },
        uid,
        interactive,
        how_to_ask: HOW_TO_ASK,
    }
}

type Result<T> = std::result::Result<T, Reply>;

fn error(name: &str, parameters: Value) -> Reply {
    Reply::Err(format!("org.nftlbd1.{name}"), parameters)
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Reply {
    error(
        "InvalidArgument",
        json!({ "errors": [{ "field": field.into(), "reason": reason.into() }] }),
    )
}

impl From<ServiceError> for Reply {
    fn from(e: ServiceError) -> Reply {
        match e {
            ServiceError::Invalid(i) => {
                let errors: Vec<Value> =
                    i.0.iter()
                        .map(|f| json!({ "field": f.field, "reason": f.reason }))
                        .collect();
                error("InvalidArgument", json!({ "errors": errors }))
            }
            ServiceError::NotFound(m) => error("NotFound", json!({ "message": m })),
            ServiceError::Exists(m) => error("Exists", json!({ "message": m })),
            ServiceError::NotAuthorized(m) => error("NotAuthorized", json!({ "message": m })),
            ServiceError::Unsupported { field, reason } => {
                error("Unsupported", json!({ "field": field, "reason": reason }))
            }
            other => error("Kernel", json!({ "message": other.to_string() })),
        }
    }
}

impl From<crate::model::Invalid> for Reply {
    fn from(i: crate::model::Invalid) -> Reply {
        ServiceError::Invalid(i).into()
    }
}

/// A parameter, typed; a missing or mistyped one is varlink's `InvalidParameter`.
fn param<T: DeserializeOwned>(params: &Value, name: &str) -> Result<T> {
    // Read in place: a parameter can be a whole farm, and a copy of it would double the request.
    T::deserialize(params.get(name).unwrap_or(&Value::Null)).map_err(|_| {
        Reply::Err(
            "org.varlink.service.InvalidParameter".into(),
            json!({ "parameter": name }),
        )
    })
}

/// `changes` as a patch: keys to set, and keys set to null (back to their defaults).
fn patch(changes: Map<String, Value>, at: &str) -> Result<Patch> {
    if changes.contains_key("name") {
        return Err(invalid(format!("{at}.name"), "is changed by renaming"));
    }
    let mut p = Patch::default();
    for (k, v) in changes {
        if v.is_null() {
            p.removed.push(k);
        } else {
            p.set.insert(k, v);
        }
    }
    Ok(p)
}

/// The `name` of an object given as canonical JSON, checked as every object name is.
fn object_name(obj: &Map<String, Value>, at: &str) -> Result<String> {
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{at}.name"), "is missing"))?
        .to_string();
    edit::check_name(&format!("{at}.name"), &name)?;
    Ok(name)
}

fn object_ref<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| invalid(at, "is not an object"))
}

fn object(v: Value, at: &str) -> Result<Map<String, Value>> {
    match v {
        Value::Object(o) => Ok(o),
        _ => Err(invalid(at, "is not an object")),
    }
}

pub async fn call(ctx: &Ctx, caller: &Caller, method: &str, p: Value) -> Reply {
    dispatch(ctx, caller, method, p).await.unwrap_or_else(|e| e)
}

async fn dispatch(ctx: &Ctx, caller: &Caller, method: &str, p: Value) -> Result<Reply> {
    let Some(name) = method.strip_prefix("org.nftlbd1.") else {
        return service_method(method, &p).map(Reply::Ok);
    };
    if name == "Monitor" {
        return Ok(monitor_now(ctx));
    }
    let op = operation(name, &p).ok_or_else(|| {
        Reply::Err(
            "org.varlink.service.MethodNotFound".into(),
            json!({ "method": method }),
        )
    })??;
    // The request as JSON is several times the size of the operation (a farm of 60,000
    // backends: ~90 MiB against ~6): gone before the change runs, not held beside its peak.
    drop(p);
    let kind = op.kind();
    let farm = match &op {
        Operation::GetFarm { farm } => Some(farm.clone()),
        _ => None,
    };
    let out = ctx.service.execute(caller, op).await?;
    match (out, farm) {
        // A farm comes with what the kernel counts for it.
        (Output::Farm(f), Some(name)) => {
            let counters = ctx
                .service
                .execute(caller, Operation::GetFarmCounters { farm: name })
                .await?;
            let checks = ctx.service.observed().farm(&f.name);
            let conns = crate::service::conntrack::established(&ctx.service, &f.name).await;
            let origin = ctx.service.origins().farm_origin(&f.name);
            let reply = farm_reply(*f, counters)?
                .with_origin(origin)
                .with_checks(&checks)
                .with_connections(&conns);
            Ok(Reply::Farm(Box::new(reply)))
        }
        // A policy comes with where it is declared, as a farm does.
        (Output::Policy(p), _) => {
            let origin = ctx.service.origins().policy_origin(&p.name);
            Ok(Reply::Ok(json!({ "policy": to_json(&*p), "origin": origin })))
        }
        (out, _) => Ok(Reply::Ok(reply(kind, out))),
    }
}

/// The operation a method asks for: `None` for a method that is not one; `Some(Err)` for
/// parameters that do not make one.
fn operation(name: &str, p: &Value) -> Option<Result<Operation>> {
    translate(name, p).transpose()
}

/// Every method of `org.nftlbd1` but `Monitor`, as its operation.
pub(crate) fn translate(name: &str, p: &Value) -> Result<Option<Operation>> {
    let s = |key: &str| param::<String>(p, key);
    Ok(Some(match name {
        "GetConfig" => Operation::GetConfig,
        "ListFarms" => Operation::ListFarms,
        "GetFarm" => Operation::GetFarm { farm: s("name")? },
        "GetPolicy" => Operation::GetPolicy { policy: s("name")? },
        "ListSessions" => Operation::ListSessions { farm: s("farm")? },
        "GetPolicyCounters" => Operation::GetPolicyCounters { policy: s("name")? },
        "GetPermissions" => Operation::GetPermissions,
        "CreateFarm" => {
            let doc = p.get("farm").unwrap_or(&Value::Null);
            let name = object_name(object_ref(doc, "farm")?, "farm")?;
            let farm = parse_farm_value(doc, &format!("farms[{name}]"))?;
            Operation::CreateFarm { farm: Box::new(farm) }
        }
        "UpdateFarm" => {
            let farm = s("name")?;
            let patch = patch(param(p, "changes")?, &format!("farms[{farm}]"))?;
            Operation::UpdateFarm { farm, patch }
        }
        "RenameFarm" => Operation::RenameFarm {
            farm: s("name")?,
            new_name: s("newName")?,
        },
        "DeleteFarm" => Operation::DeleteFarm { farm: s("name")? },
        "AddBackend" => {
            let farm = s("farm")?;
            let at = format!("farms[{farm}].backends");
            let backend = object(param(p, "backend")?, &at)?;
            object_name(&backend, &at)?;
            Operation::AddBackend { farm, backend }
        }
        "UpdateBackend" => {
            let (farm, backend) = (s("farm")?, s("backend")?);
            let patch = patch(
                param(p, "changes")?,
                &format!("farms[{farm}].backends[{backend}]"),
            )?;
            Operation::UpdateBackend {
                farm,
                backend,
                patch,
                for_secs: param(p, "for")?,
            }
        }
        "RemoveBackend" => Operation::RemoveBackend {
            farm: s("farm")?,
            backend: s("backend")?,
        },
        "SetBackendState" => Operation::SetBackendState {
            farm: s("farm")?,
            backend: s("backend")?,
            state: s("state")?,
            for_secs: param(p, "for")?,
        },
        "ListTimedChanges" => Operation::ListTimedChanges,
        "CancelTimedChange" => Operation::CancelTimedChange {
            farm: s("farm")?,
            backend: s("backend")?,
            key: s("key")?,
        },
        "SetBackendHealth" => Operation::SetBackendHealth {
            farm: s("farm")?,
            backend: s("backend")?,
            health: s("health")?,
            reason: match p.get("reason") {
                None | Some(Value::Null) => String::new(),
                Some(_) => s("reason")?,
            },
        },
        "SetBackends" => {
            let changes: Vec<Value> = param(p, "changes")?;
            let mut updates = Vec::with_capacity(changes.len());
            for (i, c) in changes.iter().enumerate() {
                updates.push(backend_update(c, &format!("changes[{i}]"))?);
            }
            Operation::SetBackends { changes: updates }
        }
        "AddSession" => Operation::AddSession {
            farm: s("farm")?,
            client: s("client")?,
            backend: s("backend")?,
        },
        "DeleteSession" => Operation::DeleteSession {
            farm: s("farm")?,
            client: s("client")?,
        },
        "FlushSessions" => Operation::FlushSessions { farm: s("farm")? },
        "CreatePolicy" => {
            let obj = object(param(p, "policy")?, "policy")?;
            let name = object_name(&obj, "policy")?;
            let policy = parse_policy_value(Value::Object(obj), &format!("policies[{name}]"))?;
            Operation::CreatePolicy {
                policy: Box::new(policy),
            }
        }
        "DeletePolicy" => Operation::DeletePolicy { policy: s("name")? },
        "EditPolicyElements" => Operation::EditPolicyElements {
            policy: s("name")?,
            edit: ElementEdit {
                replace: param(p, "replace")?,
                remove: param::<Option<Vec<String>>>(p, "remove")?.unwrap_or_default(),
                add: param::<Option<Vec<String>>>(p, "add")?.unwrap_or_default(),
            },
        },
        "ImportConfig" => {
            let mode: String = s("mode")?;
            let mode = ImportMode::parse(&mode)
                .ok_or_else(|| invalid("mode", format!("{mode:?} is not merge or replace")))?;
            // Written out from where it lies rather than copied first: a document of 10,000 farms
            // spent more time in the copy than in being parsed.
            let config = p.get("config").unwrap_or(&Value::Null).to_string();
            Operation::ImportConfig {
                config: Box::new(parse_config(&config)?),
                mode,
            }
        }
        "RuntimeToPersistent" => Operation::RuntimeToPersistent { farm: s("name")? },
        "Reload" => Operation::Reload,
        "CheckpointCreate" => Operation::CheckpointCreate {
            farms: param::<Option<Vec<String>>>(p, "farms")?.unwrap_or_default(),
            rollback_timeout: param::<Option<u32>>(p, "rollbackTimeout")?.unwrap_or(0),
            flags: param::<Option<u32>>(p, "flags")?.unwrap_or(0),
        },
        "CheckpointRollback" => Operation::CheckpointRollback {
            checkpoint: param(p, "checkpoint")?,
        },
        "CheckpointDestroy" => Operation::CheckpointDestroy {
            checkpoint: param(p, "checkpoint")?,
        },
        "CheckpointAdjustRollbackTimeout" => Operation::CheckpointAdjustRollbackTimeout {
            checkpoint: param(p, "checkpoint")?,
            add_timeout: param(p, "addTimeout")?,
        },
        "ListCheckpoints" => Operation::ListCheckpoints,
        _ => return Ok(None),
    }))
}

/// One `BackendUpdate` of `SetBackends`.
fn backend_update(c: &Value, at: &str) -> Result<BackendUpdate> {
    let field = |k: &str| format!("{at}.{k}");
    let text = |k: &str| -> Result<String> {
        c.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| invalid(field(k), "is missing or not a string"))
    };
    let number = |k: &str| -> Result<Option<u32>> {
        match c.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| invalid(field(k), "is not a number from 0 to 4294967295")),
        }
    };
    let Some(obj) = c.as_object() else {
        return Err(invalid(at, "is not an object"));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["farm", "backend", "state", "weight", "priority"].contains(&k.as_str()))
    {
        return Err(invalid(
            field(k),
            "unknown key; a change has farm, backend, state, weight, priority",
        ));
    }
    let u = BackendUpdate {
        farm: text("farm")?,
        backend: text("backend")?,
        state: match c.get("state") {
            None | Some(Value::Null) => None,
            Some(_) => Some(text("state")?),
        },
        weight: number("weight")?,
        priority: number("priority")?,
    };
    if u.keys().next().is_none() {
        return Err(invalid(at, "sets nothing (state, weight or priority)"));
    }
    Ok(u)
}

/// An operation's output as the method's reply parameters.
fn reply(kind: Kind, out: Output) -> Value {
    match out {
        Output::Done { .. } => json!({}),
        Output::Reloaded { refused, .. } => {
            let refused: Vec<Value> = refused
                .iter()
                .map(|f| json!({ "field": f.field, "reason": f.reason }))
                .collect();
            json!({ "refused": refused })
        }
        Output::Config { config, generation } => {
            json!({ "config": to_json(&*config), "generation": generation })
        }
        Output::Names(names) => json!({ "farms": names }),
        Output::Farm(f) => json!({ "farm": to_json(&*f) }),
        Output::Policy(p) => json!({ "policy": to_json(&*p) }),
        Output::Traffic(t) => {
            json!({ "packets": t.packets, "bytes": t.bytes, "newConnections": t.new_connections })
        }
        Output::FarmCounters { farm, backends } => {
            let backends: Vec<Value> = backends
                .into_iter()
                .map(|(n, t)| {
                    json!({ "name": n, "packets": t.packets, "bytes": t.bytes,
                            "newConnections": t.new_connections })
                })
                .collect();
            json!({ "packets": farm.packets, "bytes": farm.bytes,
                    "newConnections": farm.new_connections, "backends": backends })
        }
        Output::Sessions(list) => {
            let sessions: Vec<Value> = list
                .into_iter()
                .map(|s| {
                    json!({ "client": s.client, "backend": s.backend.unwrap_or_default(),
                            "static": s.expires_ms.is_none(), "expiresMs": s.expires_ms.unwrap_or(0) })
                })
                .collect();
            json!({ "sessions": sessions })
        }
        Output::PolicyCounters(c) => {
            let counters: Vec<Value> = c
                .into_iter()
                .map(|(e, p, b)| json!({ "element": e, "packets": p, "bytes": b }))
                .collect();
            json!({ "counters": counters })
        }
        // Not a varlink method of its own: GetFarm carries each backend's connections.
        Output::Connections(c) => {
            let backends: Vec<Value> = c
                .into_iter()
                .map(|(n, k)| json!({ "name": n, "connections": k }))
                .collect();
            json!({ "backends": backends })
        }
        Output::Permissions(list) => {
            let words: Map<String, Value> = list
                .into_iter()
                .map(|(action, a)| (action.to_string(), Value::from(a.word())))
                .collect();
            debug_assert_eq!(kind, Kind::GetPermissions);
            json!({ "permissions": words })
        }
        Output::Checkpoint(id) => json!({ "checkpoint": id }),
        Output::RolledBack(results) => {
            let results: Map<String, Value> = results
                .into_iter()
                .map(|(farm, code)| (farm, Value::from(code)))
                .collect();
            json!({ "results": results })
        }
        Output::Checkpoints(list) => {
            let list: Vec<Value> = list
                .iter()
                .map(|c| {
                    json!({ "id": c.id, "farms": c.farms, "created": c.created,
                            "rollbackTimeout": c.rollback_timeout, "deadline": c.deadline })
                })
                .collect();
            json!({ "checkpoints": list })
        }
        Output::TimedChanges(list) => json!({ "changes": to_json(&*list) }),
    }
}

/// The canonical JSON of a model value (they always have one).
fn to_json<T: serde::Serialize>(x: &T) -> Value {
    serde_json::to_value(x).unwrap_or(Value::Null)
}

/// `GetFarm`'s reply: the farm, and per backend whether it takes new connections and what it
/// carried.
fn farm_reply(f: crate::model::Farm, counters: Output) -> Result<FarmReply> {
    match counters {
        Output::FarmCounters { farm, backends } => Ok(FarmReply::new(f, farm, backends)),
        // A defect, said as such rather than shown as zero traffic.
        other => {
            let message = format!("internal error: unexpected answer {other:?}");
            Err(error("Kernel", json!({ "message": message })))
        }
    }
}

/// `org.varlink.service`: what this service is, and its interfaces' descriptions.
pub(crate) fn service_method(method: &str, p: &Value) -> Result<Value> {
    match method {
        "org.varlink.service.GetInfo" => Ok(json!({
            "vendor": "nftlbd", "product": "nftlbd", "version": env!("CARGO_PKG_VERSION"),
            "url": "https://github.com/nftlbd/nftlbd",
            "interfaces": ["org.varlink.service", "org.nftlbd1"] })),
        "org.varlink.service.GetInterfaceDescription" => {
            let iface: String = param(p, "interface")?;
            match iface.as_str() {
                "org.nftlbd1" => Ok(json!({ "description": DESCRIPTION })),
                "org.varlink.service" => Ok(json!({ "description": SERVICE_DESCRIPTION })),
                _ => Err(Reply::Err(
                    "org.varlink.service.InterfaceNotFound".into(),
                    json!({ "interface": iface }),
                )),
            }
        }
        _ => {
            let iface = method.rsplit_once('.').map_or("", |(i, _)| i);
            let (name, key) = if iface == "org.varlink.service" {
                ("org.varlink.service.MethodNotFound", "method")
            } else {
                ("org.varlink.service.InterfaceNotFound", "interface")
            };
            let value = if key == "method" { method } else { iface };
            Err(Reply::Err(name.into(), json!({ key: value })))
        }
    }
}

/// The first reply of `Monitor`: where the configuration is now.
pub fn monitor_now(ctx: &Ctx) -> Reply {
    Reply::Ok(json!({ "generation": ctx.service.generation(), "farms": [], "policies": [] }))
}

/// One committed change: the farms and policies it touched, and what changed in them (objects,
/// keys with old and new values, backend state transitions with their reason).
pub fn monitor_event(ev: &Event) -> Reply {
    let farms: Vec<&str> = ev.diff.farms.iter().map(|f| f.name.as_str()).collect();
    let policies: Vec<&str> = ev.diff.policies.iter().map(|p| p.name.as_str()).collect();
    Reply::Ok(json!({
        "generation": ev.generation,
        "farms": farms,
        "policies": policies,
        "changes": to_json(&ev.diff),
    }))
}
