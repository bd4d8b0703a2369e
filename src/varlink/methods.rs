//! The methods of `org.nftlbd1` (and `org.varlink.service`): parameters in, the service's
//! changes and reads out, polkit for the calling process on every change.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use super::Reply;
use crate::model::{effective_priority, is_active, parse_config, parse_farm_value, parse_policy_value};
use crate::polkit::{self, Answer, Details, Subject};
use crate::service::{Event, Origin, Service, ServiceError, edit, ops};

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

/// What every connection shares: the service, and a system bus connection to ask polkit.
pub struct Ctx {
    pub service: Service,
    polkit: OnceCell<Option<zbus::Connection>>,
}

impl Ctx {
    pub fn new(service: Service) -> Ctx {
        Ctx {
            service,
            polkit: OnceCell::new(),
        }
    }

    async fn polkit(&self) -> Option<&zbus::Connection> {
        self.polkit
            .get_or_init(|| async { zbus::Connection::system().await.ok() })
            .await
            .as_ref()
    }
}

/// Who calls, from the socket's credentials, and whether this call allows polkit to ask them.
pub struct Caller {
    pub uid: u32,
    pub pid: Option<u32>,
    pub interactive: bool,
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
    let v = params.get(name).cloned().unwrap_or(Value::Null);
    serde_json::from_value(v).map_err(|_| {
        Reply::Err(
            "org.varlink.service.InvalidParameter".into(),
            json!({ "parameter": name }),
        )
    })
}

/// polkit's answer for the caller (root: yes); `interactive`: polkit may ask the caller's agent.
async fn answer(
    ctx: &Ctx,
    caller: &Caller,
    action: &str,
    details: &Details,
    interactive: bool,
) -> Result<Answer> {
    if caller.uid == 0 {
        return Ok(Answer::Yes);
    }
    let refused = |m: String| error("NotAuthorized", json!({ "message": m }));
    let pid = caller
        .pid
        .ok_or_else(|| refused("the caller's process is unknown".into()))?;
    let conn = ctx
        .polkit()
        .await
        .ok_or_else(|| refused("polkit cannot be asked: no system bus".into()))?;
    let subject = Subject::Process { pid, uid: caller.uid };
    polkit::check(conn, &subject, action, details, interactive)
        .await
        .map_err(refused)
}

/// Refuses unless polkit says yes. A call with `"allowInteractiveAuthentication": true` (the
/// parameter systemd's varlink services take) lets polkit ask the caller's agent.
async fn require(ctx: &Ctx, caller: &Caller, action: &str, details: Details) -> Result<()> {
    let interactive = caller.interactive;
    match answer(ctx, caller, action, &details, interactive).await? {
        Answer::Yes => Ok(()),
        a => {
            let how = "call with \"allowInteractiveAuthentication\": true, with an agent running, as nftlbctl does at a terminal";
            let message = polkit::refusal(action, a, interactive, how);
            Err(error("NotAuthorized", json!({ "message": message })))
        }
    }
}

/// `changes` as a patch: keys to set, and keys set to null (back to their defaults).
fn patch(changes: Map<String, Value>, at: &str) -> Result<(Map<String, Value>, Vec<String>)> {
    if changes.contains_key("name") {
        return Err(invalid(format!("{at}.name"), "is changed by renaming"));
    }
    let mut set = Map::new();
    let mut removed = Vec::new();
    for (k, v) in changes {
        if v.is_null() {
            removed.push(k);
        } else {
            set.insert(k, v);
        }
    }
    Ok((set, removed))
}

/// The `name` of an object given as canonical JSON, checked as API.md names are.
fn object_name(obj: &Map<String, Value>, at: &str) -> Result<String> {
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{at}.name"), "is missing"))?
        .to_string();
    edit::check_name(&format!("{at}.name"), &name)?;
    Ok(name)
}

fn object(v: Value, at: &str) -> Result<Map<String, Value>> {
    match v {
        Value::Object(o) => Ok(o),
        _ => Err(invalid(at, "is not an object")),
    }
}

async fn change(ctx: &Ctx, c: impl ops::Change) -> Result<Value> {
    ctx.service.change(Origin::api(), c).await?;
    Ok(json!({}))
}

pub async fn call(ctx: &Ctx, caller: &Caller, method: &str, p: Value) -> Reply {
    match dispatch(ctx, caller, method, p).await {
        Ok(v) => Reply::Ok(v),
        Err(e) => e,
    }
}

async fn dispatch(ctx: &Ctx, caller: &Caller, method: &str, p: Value) -> Result<Value> {
    let Some(name) = method.strip_prefix("org.nftlbd1.") else {
        return service_method(method, &p);
    };
    let svc = &ctx.service;
    match name {
        "GetConfig" => {
            let config = serde_json::to_value(&*svc.config()).unwrap_or_default();
            Ok(json!({ "config": config, "generation": svc.generation() }))
        }
        "ListFarms" => {
            let names: Vec<String> = svc.config().farms.iter().map(|f| f.name.clone()).collect();
            Ok(json!({ "farms": names }))
        }
        "GetFarm" => get_farm(ctx, param(&p, "name")?).await,
        "CreateFarm" => {
            let obj = object(param(&p, "farm")?, "farm")?;
            let name = object_name(&obj, "farm")?;
            require(ctx, caller, polkit::FARM_MANAGE, Details::farm(&name, "create")).await?;
            let farm = parse_farm_value(Value::Object(obj), &format!("farms[{name}]"))?;
            change(ctx, ops::create_farm(farm)).await
        }
        "UpdateFarm" => {
            let name: String = param(&p, "name")?;
            let (set, removed) = patch(param(&p, "changes")?, &format!("farms[{name}]"))?;
            require(ctx, caller, polkit::FARM_MANAGE, Details::farm(&name, "update")).await?;
            change(ctx, ops::update_farm(name, set, removed)).await
        }
        "RenameFarm" => {
            let (name, new): (String, String) = (param(&p, "name")?, param(&p, "newName")?);
            require(ctx, caller, polkit::FARM_MANAGE, Details::farm(&name, "rename")).await?;
            change(ctx, ops::rename_farm(name, new)).await
        }
        "DeleteFarm" => {
            let name: String = param(&p, "name")?;
            require(ctx, caller, polkit::FARM_MANAGE, Details::farm(&name, "delete")).await?;
            change(ctx, ops::delete_farm(name)).await
        }
        "AddBackend" => {
            let farm: String = param(&p, "farm")?;
            let at = format!("farms[{farm}].backends");
            let obj = object(param(&p, "backend")?, &at)?;
            let name = object_name(&obj, &at)?;
            let details = Details::backend(&farm, &name, "add");
            require(ctx, caller, polkit::BACKEND_MANAGE, details).await?;
            change(ctx, ops::add_backend(farm, obj)).await
        }
        "UpdateBackend" => {
            let (farm, backend): (String, String) = (param(&p, "farm")?, param(&p, "backend")?);
            let at = format!("farms[{farm}].backends[{backend}]");
            let (set, removed) = patch(param(&p, "changes")?, &at)?;
            let details = Details::backend(&farm, &backend, "update");
            require(ctx, caller, polkit::BACKEND_MANAGE, details).await?;
            change(ctx, ops::update_backend(farm, backend, set, removed)).await
        }
        "RemoveBackend" => {
            let (farm, backend): (String, String) = (param(&p, "farm")?, param(&p, "backend")?);
            let details = Details::backend(&farm, &backend, "remove");
            require(ctx, caller, polkit::BACKEND_MANAGE, details).await?;
            change(ctx, ops::remove_backend(farm, backend)).await
        }
        "SetBackendState" => {
            let (farm, backend): (String, String) = (param(&p, "farm")?, param(&p, "backend")?);
            let state: String = param(&p, "state")?;
            let details = Details::backend(&farm, &backend, &format!("set-state {state}"));
            require(ctx, caller, polkit::BACKEND_SET_STATE, details).await?;
            change(ctx, ops::set_backend_state(farm, backend, state)).await
        }
        "ListSessions" => {
            let farm: String = param(&p, "farm")?;
            let details = Details::farm(&farm, "list-sessions");
            require(ctx, caller, polkit::INFO, details).await?;
            let list = svc.query(move |e| e.sessions(&farm)).await?;
            let sessions: Vec<Value> = list
                .into_iter()
                .map(|s| {
                    json!({ "client": s.client, "backend": s.backend.unwrap_or_default(),
                            "static": s.expires_ms.is_none(), "expiresMs": s.expires_ms.unwrap_or(0) })
                })
                .collect();
            Ok(json!({ "sessions": sessions }))
        }
        "CreatePolicy" => {
            let obj = object(param(&p, "policy")?, "policy")?;
            let name = object_name(&obj, "policy")?;
            let details = Details {
                policy: name.clone(),
                verb: "create".into(),
                ..Details::default()
            };
            require(ctx, caller, polkit::POLICY_MANAGE, details).await?;
            let policy = parse_policy_value(Value::Object(obj), &format!("policies[{name}]"))?;
            change(ctx, ops::create_policy(policy)).await
        }
        "DeletePolicy" | "EditPolicyElements" | "GetPolicyCounters" => {
            let policy: String = param(&p, "name")?;
            let details = Details {
                policy: policy.clone(),
                verb: name.to_string(),
                ..Details::default()
            };
            match name {
                "DeletePolicy" => {
                    require(ctx, caller, polkit::POLICY_MANAGE, details).await?;
                    change(ctx, ops::delete_policy(policy)).await
                }
                "EditPolicyElements" => {
                    let add: Option<Vec<String>> = param(&p, "add")?;
                    let remove: Option<Vec<String>> = param(&p, "remove")?;
                    let replace: Option<Vec<String>> = param(&p, "replace")?;
                    require(ctx, caller, polkit::POLICY_MANAGE, details).await?;
                    let at = format!("policies[{policy}].elements");
                    let edit = move |list: &mut Vec<String>| {
                        if let Some(r) = replace {
                            *list = r;
                        }
                        for x in remove.unwrap_or_default() {
                            let before = list.len();
                            list.retain(|e| *e != x);
                            if list.len() == before {
                                return Err(ServiceError::Invalid(crate::model::Invalid::one(
                                    at.clone(),
                                    format!("{x:?} is not an element"),
                                )));
                            }
                        }
                        for x in add.unwrap_or_default() {
                            if !list.contains(&x) {
                                list.push(x);
                            }
                        }
                        Ok(())
                    };
                    change(ctx, ops::edit_policy_elements(policy, edit)).await
                }
                _ => {
                    require(ctx, caller, polkit::INFO, details).await?;
                    let counters = svc.query(move |e| e.policy_counters(&policy)).await?;
                    let counters: Vec<Value> = counters
                        .into_iter()
                        .map(|(e, p, b)| json!({ "element": e, "packets": p, "bytes": b }))
                        .collect();
                    Ok(json!({ "counters": counters }))
                }
            }
        }
        "ImportConfig" => {
            let mode: String = param(&p, "mode")?;
            let replace = match mode.as_str() {
                "replace" => true,
                "merge" => false,
                other => return Err(invalid("mode", format!("{other:?} is not merge or replace"))),
            };
            let config: Value = param(&p, "config")?;
            require(
                ctx,
                caller,
                polkit::CONFIG,
                Details::verb(&format!("import {mode}")),
            )
            .await?;
            let incoming = parse_config(&config.to_string())?;
            change(ctx, ops::import(incoming, replace)).await
        }
        "Reload" => {
            require(ctx, caller, polkit::CONFIG, Details::verb("reload")).await?;
            svc.reload().await?;
            Ok(json!({}))
        }
        "GetPermissions" => {
            let mut out = Map::new();
            for action in polkit::ALL {
                let word = match answer(ctx, caller, action, &Details::default(), false).await? {
                    Answer::Yes => "yes",
                    Answer::No => "no",
                    Answer::Auth => "auth",
                };
                out.insert(action.to_string(), Value::from(word));
            }
            Ok(json!({ "permissions": out }))
        }
        "Monitor" => match monitor_now(ctx) {
            Reply::Ok(v) => Ok(v),
            e => Err(e),
        },
        _ => Err(Reply::Err(
            "org.varlink.service.MethodNotFound".into(),
            json!({ "method": method }),
        )),
    }
}

async fn get_farm(ctx: &Ctx, name: String) -> Result<Value> {
    let config = ctx.service.config();
    let f = config.farm(&name).ok_or_else(|| {
        error(
            "NotFound",
            json!({ "message": format!("no farm is named {name:?}") }),
        )
    })?;
    let farm = serde_json::to_value(f).unwrap_or_default();
    let prio = effective_priority(f);
    let active: std::collections::HashMap<&str, bool> = f
        .backends
        .iter()
        .map(|b| (b.name.as_str(), is_active(f, b, prio)))
        .collect();
    let (total, each) = ctx.service.query(move |e| e.farm_traffic(&name)).await?;
    let backends: Vec<Value> = each
        .into_iter()
        .map(|(n, (p, b))| {
            let a = active.get(n.as_str()).copied().unwrap_or(false);
            json!({ "name": n, "active": a, "packets": p, "bytes": b })
        })
        .collect();
    Ok(json!({ "farm": farm, "status": {
        "effectivePriority": prio, "packets": total.0, "bytes": total.1, "backends": backends } }))
}

/// `org.varlink.service`: what this service is, and its interfaces' descriptions.
fn service_method(method: &str, p: &Value) -> Result<Value> {
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

/// One committed change: the farms and policies it touched.
pub fn monitor_event(ev: &Event) -> Reply {
    Reply::Ok(json!({
        "generation": ev.generation,
        "farms": changed(&ev.old.farms, &ev.new.farms, |f| &f.name),
        "policies": changed(&ev.old.policies, &ev.new.policies, |p| &p.name),
    }))
}

/// The names of the items that are new, different or gone.
fn changed<T: PartialEq>(old: &[T], new: &[T], name: impl Fn(&T) -> &String) -> Vec<String> {
    let mut out: Vec<String> = new
        .iter()
        .filter(|n| !old.iter().any(|o| name(o) == name(n) && o == *n))
        .map(|n| name(n).clone())
        .collect();
    out.extend(
        old.iter()
            .filter(|o| !new.iter().any(|n| name(n) == name(o)))
            .map(|o| name(o).clone()),
    );
    out
}
