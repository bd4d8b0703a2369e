//! The D-Bus front end (`org.nftlbd1` on the system bus, API.md): translates calls into changes
//! for the service and asks polkit first; never changes anything itself. The object tree follows
//! the service's events: one task adds and removes farm and backend objects and emits
//! `PropertiesChanged`, `StateChanged` and the ObjectManager's signals, once per change, whoever
//! made it.

mod auth;
mod backend;
mod error;
mod farm;
pub(crate) mod keyed;
mod manager;
mod policy;
pub mod props;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, fdo};

pub use error::Error;

use crate::model::{Config, Farm, bus_path_escape};
use crate::service::{Event, Service};

pub const BUS_NAME: &str = "org.nftlbd1";
pub const ROOT: &str = "/org/nftlbd1";

pub fn farm_path(farm: &str) -> OwnedObjectPath {
    path(format!("{ROOT}/farm/{}", bus_path_escape(farm)))
}

pub fn backend_path(farm: &str, backend: &str) -> OwnedObjectPath {
    path(format!(
        "{ROOT}/farm/{}/backend/{}",
        bus_path_escape(farm),
        bus_path_escape(backend)
    ))
}

pub fn policy_path(policy: &str) -> OwnedObjectPath {
    path(format!("{ROOT}/policy/{}", bus_path_escape(policy)))
}

fn path(s: String) -> OwnedObjectPath {
    // Escaped names only have [A-Za-z0-9_] and slashes between them: always a valid path.
    OwnedObjectPath::try_from(s).unwrap_or_else(|_| {
        OwnedObjectPath::from(zbus::zvariant::ObjectPath::from_static_str_unchecked(ROOT))
    })
}

fn owned(v: Value<'static>) -> fdo::Result<OwnedValue> {
    OwnedValue::try_from(v).map_err(|e| fdo::Error::Failed(e.to_string()))
}

/// Connects to the system bus (or `address`), publishes the objects of the committed
/// configuration, then takes the name `org.nftlbd1`: a client that sees the name sees the
/// whole tree.
pub async fn serve(service: Service, address: Option<&str>) -> zbus::Result<Connection> {
    let builder = match address {
        Some(a) => zbus::connection::Builder::address(a)?,
        None => zbus::connection::Builder::system()?,
    };
    let conn = builder
        .serve_at(ROOT, fdo::ObjectManager)?
        .serve_at(
            ROOT,
            manager::Manager {
                service: service.clone(),
            },
        )?
        .build()
        .await?;
    let events = service.subscribe();
    let shown = service.config();
    for f in &shown.farms {
        add_farm(&conn, &service, f).await?;
    }
    for p in &shown.policies {
        add_policy(&conn, &service, &p.name).await?;
    }
    let sync_conn = conn.clone();
    let sync_service = service.clone();
    tokio::spawn(async move { follow(sync_conn, sync_service, shown, events).await });
    conn.request_name(BUS_NAME).await?;
    Ok(conn)
}

/// Leaves the bus cleanly: the name goes first (so a successor can take it at once, and the
/// connection is still there to read the bus's answer), then the connection.
pub async fn stop(conn: Connection) {
    if let Err(e) = conn.release_name(BUS_NAME).await {
        tracing::warn!("releasing {BUS_NAME}: {e}");
    }
    if let Err(e) = conn.close().await {
        tracing::warn!("closing the bus connection: {e}");
    }
}

async fn add_farm(conn: &Connection, service: &Service, f: &Farm) -> zbus::Result<()> {
    let server = conn.object_server();
    server
        .at(
            farm_path(&f.name),
            farm::FarmObject {
                farm: f.name.clone(),
                service: service.clone(),
            },
        )
        .await?;
    for b in &f.backends {
        add_backend(conn, service, &f.name, &b.name).await?;
    }
    Ok(())
}

async fn add_backend(conn: &Connection, service: &Service, farm: &str, backend: &str) -> zbus::Result<()> {
    conn.object_server()
        .at(
            backend_path(farm, backend),
            backend::BackendObject {
                farm: farm.to_string(),
                backend: backend.to_string(),
                service: service.clone(),
            },
        )
        .await?;
    Ok(())
}

async fn add_policy(conn: &Connection, service: &Service, name: &str) -> zbus::Result<()> {
    conn.object_server()
        .at(
            policy_path(name),
            policy::PolicyObject {
                policy: name.to_string(),
                service: service.clone(),
            },
        )
        .await?;
    Ok(())
}

async fn remove_farm(conn: &Connection, f: &Farm) -> zbus::Result<()> {
    let server = conn.object_server();
    for b in &f.backends {
        gone(
            server
                .remove::<backend::BackendObject, _>(backend_path(&f.name, &b.name))
                .await,
        )?;
    }
    gone(server.remove::<farm::FarmObject, _>(farm_path(&f.name)).await)
}

/// A removal of an object that is already gone is done (a retried change removes it twice).
fn gone(r: zbus::Result<bool>) -> zbus::Result<()> {
    match r {
        Ok(_) | Err(zbus::Error::InterfaceNotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Keeps the object tree and its signals in step with the committed configuration.
async fn follow(
    conn: Connection,
    service: Service,
    mut shown: Arc<Config>,
    mut events: tokio::sync::broadcast::Receiver<Arc<Event>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let (mut new, reason) = match events.recv().await {
            Ok(ev) => (ev.new.clone(), ev.origin.reason.clone()),
            // Missed some: catch up with the latest configuration in one step.
            Err(RecvError::Lagged(_)) => (service.config(), "api".to_string()),
            Err(RecvError::Closed) => return,
        };
        // The objects must end up as the configuration says: a step that failed half-way is
        // tried again from what was shown (adding and removing are idempotent), towards the
        // latest configuration.
        while let Err(e) = show(&conn, &service, &shown, &new, &reason).await {
            tracing::error!("D-Bus objects could not follow a change: {e}; trying again");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            new = service.config();
        }
        shown = new;
    }
}

async fn show(
    conn: &Connection,
    service: &Service,
    old: &Config,
    new: &Config,
    reason: &str,
) -> zbus::Result<()> {
    let before: HashMap<&str, &Farm> = old.farms.iter().map(|f| (f.name.as_str(), f)).collect();
    let after: HashMap<&str, &Farm> = new.farms.iter().map(|f| (f.name.as_str(), f)).collect();
    for f in &old.farms {
        if !after.contains_key(f.name.as_str()) {
            remove_farm(conn, f).await?;
        }
    }
    for f in &new.farms {
        match before.get(f.name.as_str()) {
            None => add_farm(conn, service, f).await?,
            Some(o) if *o != f => farm_changed(conn, service, o, f, reason).await?,
            Some(_) => {}
        }
    }
    policies_changed(conn, service, old, new).await?;
    let emitter = SignalEmitter::new(conn, ROOT)?;
    let mut changed: HashMap<&str, Value<'_>> = HashMap::new();
    changed.insert("Generation", Value::from(service.generation()));
    let names = |c: &Config| c.farms.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
    if names(old) != names(new) {
        let paths: Vec<OwnedObjectPath> = new.farms.iter().map(|f| farm_path(&f.name)).collect();
        changed.insert("Farms", Value::from(paths));
    }
    let policy_names = |c: &Config| c.policies.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    if policy_names(old) != policy_names(new) {
        let paths: Vec<OwnedObjectPath> = new.policies.iter().map(|p| policy_path(&p.name)).collect();
        changed.insert("Policies", Value::from(paths));
    }
    properties_changed(&emitter, "org.nftlbd1.Manager", changed).await
}

async fn policies_changed(
    conn: &Connection,
    service: &Service,
    old: &Config,
    new: &Config,
) -> zbus::Result<()> {
    use crate::model::Policy;
    let before: HashMap<&str, &Policy> = old.policies.iter().map(|p| (p.name.as_str(), p)).collect();
    let after: HashMap<&str, &Policy> = new.policies.iter().map(|p| (p.name.as_str(), p)).collect();
    for p in &old.policies {
        if !after.contains_key(p.name.as_str()) {
            gone(
                conn.object_server()
                    .remove::<policy::PolicyObject, _>(policy_path(&p.name))
                    .await,
            )?;
        }
    }
    for p in &new.policies {
        match before.get(p.name.as_str()) {
            None => add_policy(conn, service, &p.name).await?,
            Some(o) if *o != p => {
                let path = policy_path(&p.name);
                let emitter = SignalEmitter::new(conn, path.as_ref())?;
                let mut changed = HashMap::new();
                for prop in props::POLICY {
                    let (a, b) = (
                        props::policy_value(o, prop.name),
                        props::policy_value(p, prop.name),
                    );
                    if a != b
                        && let Some(v) = b
                    {
                        changed.insert(prop.name, v);
                    }
                }
                properties_changed(&emitter, policy::IFACE, changed).await?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

async fn properties_changed(
    emitter: &SignalEmitter<'_>,
    iface: &'static str,
    changed: HashMap<&str, Value<'_>>,
) -> zbus::Result<()> {
    if changed.is_empty() {
        return Ok(());
    }
    fdo::Properties::properties_changed(
        emitter,
        InterfaceName::from_static_str_unchecked(iface),
        changed,
        Cow::Borrowed(&[]),
    )
    .await
}

async fn farm_changed(
    conn: &Connection,
    service: &Service,
    old: &Farm,
    new: &Farm,
    reason: &str,
) -> zbus::Result<()> {
    let fpath = farm_path(&new.name);
    let emitter = SignalEmitter::new(conn, fpath.as_ref())?;
    let mut changed = HashMap::new();
    for p in props::FARM.iter().map(|p| p.name).chain(["EffectivePriority"]) {
        let (a, b) = (props::farm_value(old, p), props::farm_value(new, p));
        if a != b
            && let Some(v) = b
        {
            changed.insert(p, v);
        }
    }
    let old_b: HashMap<&str, &crate::model::Backend> =
        old.backends.iter().map(|b| (b.name.as_str(), b)).collect();
    let new_b: HashMap<&str, &crate::model::Backend> =
        new.backends.iter().map(|b| (b.name.as_str(), b)).collect();
    if old
        .backends
        .iter()
        .map(|b| &b.name)
        .ne(new.backends.iter().map(|b| &b.name))
    {
        let paths: Vec<OwnedObjectPath> = new
            .backends
            .iter()
            .map(|b| backend_path(&new.name, &b.name))
            .collect();
        changed.insert("Backends", Value::from(paths));
    }
    properties_changed(&emitter, farm::IFACE, changed).await?;
    for b in &old.backends {
        if !new_b.contains_key(b.name.as_str()) {
            gone(
                conn.object_server()
                    .remove::<backend::BackendObject, _>(backend_path(&new.name, &b.name))
                    .await,
            )?;
        }
    }
    // Once per farm, not per backend: a farm may have thousands.
    let (prio_old, prio_new) = (
        crate::model::effective_priority(old),
        crate::model::effective_priority(new),
    );
    for b in &new.backends {
        let Some(o) = old_b.get(b.name.as_str()) else {
            add_backend(conn, service, &new.name, &b.name).await?;
            continue;
        };
        // `Active` follows the farm and the other backends too (priority tiers).
        let (was, is) = (
            crate::model::is_active(old, o, prio_old),
            crate::model::is_active(new, b, prio_new),
        );
        if *o == b && was == is {
            continue;
        }
        let bpath = backend_path(&new.name, &b.name);
        let emitter = SignalEmitter::new(conn, bpath.as_ref())?;
        let mut changed = HashMap::new();
        if was != is {
            changed.insert("Active", Value::from(is));
        }
        for p in props::BACKEND {
            let (x, y) = (props::backend_value(o, p.name), props::backend_value(b, p.name));
            if x != y
                && let Some(v) = y
            {
                changed.insert(p.name, v);
            }
        }
        properties_changed(&emitter, backend::IFACE, changed).await?;
        if o.state != b.state {
            let word = |s: &crate::model::BackendState| {
                serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            };
            emitter
                .emit(
                    backend::IFACE,
                    "StateChanged",
                    &(word(&o.state), word(&b.state), reason),
                )
                .await?;
        }
    }
    Ok(())
}

/// A D-Bus argument: (name, signature).
type Arg = (&'static str, &'static str);
/// A method for introspection: name, in-arguments, out-arguments.
type Method = (&'static str, &'static [Arg], &'static [Arg]);
/// A signal for introspection: name, arguments.
type Signal = (&'static str, &'static [Arg]);

/// Introspection XML of a hand-written interface.
fn introspect<'a>(
    w: &mut dyn Write,
    level: usize,
    name: &str,
    props: impl Iterator<Item = (&'a str, &'a str, bool)>,
    methods: &[Method],
    signals: &[Signal],
) {
    let pad = " ".repeat(level);
    let _ = writeln!(w, "{pad}<interface name=\"{name}\">");
    // Signals first: busctl carries the direction of a method's last argument over to the
    // next signal's arguments when it reads nested nodes, and then warns.
    for (s, args) in signals {
        let _ = writeln!(w, "{pad}  <signal name=\"{s}\">");
        for (a, t) in args.iter() {
            let _ = writeln!(w, "{pad}    <arg name=\"{a}\" type=\"{t}\"/>");
        }
        let _ = writeln!(w, "{pad}  </signal>");
    }
    for (m, ins, outs) in methods {
        if ins.is_empty() && outs.is_empty() {
            let _ = writeln!(w, "{pad}  <method name=\"{m}\"/>");
            continue;
        }
        let _ = writeln!(w, "{pad}  <method name=\"{m}\">");
        for (a, t) in ins.iter() {
            let _ = writeln!(w, "{pad}    <arg name=\"{a}\" type=\"{t}\" direction=\"in\"/>");
        }
        for (a, t) in outs.iter() {
            let _ = writeln!(w, "{pad}    <arg name=\"{a}\" type=\"{t}\" direction=\"out\"/>");
        }
        let _ = writeln!(w, "{pad}  </method>");
    }
    for (p, t, writable) in props {
        let access = if writable { "readwrite" } else { "read" };
        let _ = writeln!(
            w,
            "{pad}  <property name=\"{p}\" type=\"{t}\" access=\"{access}\"/>"
        );
    }
    let _ = writeln!(w, "{pad}</interface>");
}
