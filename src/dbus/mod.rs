//! The D-Bus front end (`org.nftlbd1` on the system bus; docs/dbus.md): translates calls into changes
//! for the service and asks polkit first; never changes anything itself. The object tree follows
//! the service's events: one task adds and removes farm and backend objects and emits
//! `PropertiesChanged`, `StateChanged` and the ObjectManager's signals, once per change, whoever
//! made it.

mod auth;
mod backend;
mod checkpoint;
mod error;
mod farm;
#[doc(hidden)]
pub mod fuzzing;
pub mod join;
pub(crate) mod keyed;
pub mod limits;
mod manager;
mod policy;
pub mod props;
mod signals;
#[cfg(test)]
mod tests;

use std::fmt::Write;

use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, fdo};

pub use error::Error;

use crate::service::Service;

pub use crate::schema::{BUS_NAME, ROOT};

pub fn farm_path(farm: &str) -> OwnedObjectPath {
    path(crate::schema::farm_path(farm))
}

pub fn backend_path(farm: &str, backend: &str) -> OwnedObjectPath {
    path(crate::schema::backend_path(farm, backend))
}

pub fn policy_path(policy: &str) -> OwnedObjectPath {
    path(crate::schema::policy_path(policy))
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
/// whole tree. All of it within `within`, or the error names the step the bus left unanswered.
pub async fn serve(
    service: Service,
    address: Option<&str>,
    within: std::time::Duration,
) -> Result<Connection, join::JoinError> {
    use join::Step;
    let deadline = join::Deadline::after(within);
    let conn = deadline
        .run(Step::Connect, async {
            let builder = match address {
                Some(a) => zbus::connection::Builder::address(a)?,
                None => zbus::connection::Builder::system()?,
            };
            builder.build().await
        })
        .await?;
    deadline.run(Step::Publish, publish(&conn, service)).await?;
    deadline
        .run(Step::RequestName, async { conn.request_name(BUS_NAME).await })
        .await?;
    Ok(conn)
}

/// Serves the object tree on `conn` (a bus connection, or a peer-to-peer one, whose caller is the
/// peer process) and keeps it following the service's events; takes no name.
pub async fn publish(conn: &Connection, service: Service) -> zbus::Result<()> {
    let server = conn.object_server();
    server.at(ROOT, fdo::ObjectManager).await?;
    server
        .at(
            ROOT,
            manager::Manager {
                service: service.clone(),
            },
        )
        .await?;
    let events = service.subscribe();
    let shown = service.config();
    for f in &shown.farms {
        signals::add_farm(conn, &service, f).await?;
    }
    for p in &shown.policies {
        signals::add_policy(conn, &service, &p.name).await?;
    }
    let checkpoints = service.checkpoints();
    for c in checkpoints.iter() {
        let object = checkpoint::CheckpointObject {
            id: c.id,
            service: service.clone(),
        };
        server.at(checkpoint::checkpoint_path(c.id), object).await?;
    }
    tokio::spawn(checkpoint::follow(conn.clone(), service.clone(), checkpoints));
    let sync_conn = conn.clone();
    tokio::spawn(async move { signals::follow(sync_conn, service, shown, events).await });
    Ok(())
}

/// Leaves the bus cleanly: the name goes first (so a successor can take it at once, and the
/// connection is still there to read the bus's answer), then the connection. Within `within`:
/// a bus that stopped answering does not hold the exit.
pub async fn stop(conn: Connection, within: std::time::Duration) {
    use join::Step;
    let deadline = join::Deadline::after(within);
    if let Err(e) = deadline
        .run(Step::ReleaseName, async { conn.release_name(BUS_NAME).await })
        .await
    {
        tracing::warn!("{e}");
    }
    if let Err(e) = deadline.run(Step::Close, conn.close()).await {
        tracing::warn!("{e}");
    }
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
