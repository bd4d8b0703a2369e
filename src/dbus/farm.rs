//! `org.nftlbd1.Farm` at `/org/nftlbd1/farm/<escaped name>`: one property per farm key (read from
//! the committed configuration), setters and methods that commit one transaction each.
//!
//! Implemented by hand rather than with `#[interface]`: the properties come from one table
//! (`props::FARM`), and changes are announced by the service's event, once, whoever made them.

use std::collections::HashMap;

use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, Message};

use super::auth::{execute, unexpected};
use super::error::Error;
use super::keyed::{Keyed, keyed_interface};
use super::{backend_path, props};
use crate::service::{Operation, Output, Patch, Service, edit};

pub const IFACE: &str = "org.nftlbd1.Farm";

pub struct FarmObject {
    pub farm: String,
    pub service: Service,
}

/// Read-only properties besides the writable keys.
const READ_ONLY: &[super::Arg] = &[
    ("Name", "s"),
    ("Backends", "ao"),
    ("EffectivePriority", "u"),
    ("HealthReady", "b"),
    ("QuorumMet", "b"),
    ("Origin", "s"),
    ("Packets", "t"),
    ("Bytes", "t"),
    ("NewConnections", "t"),
];

/// (name, in-arguments, out-arguments) of each method, for introspection.
const METHODS: &[super::Method] = &[
    ("Update", &[("changes", "a{sv}")], &[]),
    (
        "AddBackend",
        &[("name", "s"), ("settings", "a{sv}")],
        &[("backend", "o")],
    ),
    ("RemoveBackend", &[("name", "s")], &[]),
    ("Rename", &[("new_name", "s")], &[]),
    ("Delete", &[], &[]),
    ("ListSessions", &[], &[("sessions", "aa{sv}")]),
    ("AddSession", &[("client", "s"), ("backend", "s")], &[]),
    ("DeleteSession", &[("client", "s")], &[]),
    ("FlushSessions", &[], &[]),
    ("GetBackendCounters", &[], &[("counters", "a(sttt)")]),
    ("GetBackendConnections", &[], &[("connections", "a(st)")]),
];

/// The canonical JSON of a backend `AddBackend` adds to `farm`: its name (checked) and its
/// `a{sv}` settings.
pub(super) fn new_backend(
    farm: &str,
    name: &str,
    settings: &HashMap<String, OwnedValue>,
) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    let at = format!("farms[{farm}].backends[{name}]");
    edit::check_name(&format!("{at}.name"), name)?;
    let mut backend = serde_json::Map::new();
    props::apply_settings(&mut backend, props::BACKEND, settings, &at, false)?;
    backend.insert("name".into(), serde_json::Value::String(name.to_string()));
    Ok(backend)
}

impl FarmObject {
    async fn run(&self, conn: &Connection, msg: &Message, op: Operation) -> Result<Output, Error> {
        execute(&self.service, conn, &msg.header(), op).await
    }

    async fn update(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let changes: HashMap<String, OwnedValue> = msg.body().deserialize()?;
        let at = format!("farms[{}]", self.farm);
        let patch = props::patch(props::FARM, &changes, &at, true)?;
        let farm = self.farm.clone();
        self.run(conn, msg, Operation::UpdateFarm { farm, patch }).await?;
        Ok(())
    }

    async fn add_backend(&self, conn: &Connection, msg: &Message) -> Result<OwnedObjectPath, Error> {
        let (bname, settings): (String, HashMap<String, OwnedValue>) = msg.body().deserialize()?;
        let backend = new_backend(&self.farm, &bname, &settings)?;
        let farm = self.farm.clone();
        self.run(conn, msg, Operation::AddBackend { farm, backend })
            .await?;
        Ok(backend_path(&self.farm, &bname))
    }

    async fn remove_backend(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let backend: String = msg.body().deserialize()?;
        let farm = self.farm.clone();
        self.run(conn, msg, Operation::RemoveBackend { farm, backend })
            .await?;
        Ok(())
    }

    async fn rename(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let new_name: String = msg.body().deserialize()?;
        let farm = self.farm.clone();
        self.run(conn, msg, Operation::RenameFarm { farm, new_name })
            .await?;
        Ok(())
    }

    async fn delete(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let farm = self.farm.clone();
        self.run(conn, msg, Operation::DeleteFarm { farm }).await?;
        Ok(())
    }

    /// (backend, packets, bytes, new connections) for every backend in one read (one dump of the
    /// counters, where reading `Packets`, `Bytes` and `NewConnections` of each backend object
    /// would be a call each). Anyone may.
    async fn get_backend_counters(
        &self,
        conn: &Connection,
        msg: &Message,
    ) -> Result<Vec<(String, u64, u64, u64)>, Error> {
        let farm = self.farm.clone();
        match self.run(conn, msg, Operation::GetFarmCounters { farm }).await? {
            Output::FarmCounters { backends, .. } => Ok(backends
                .into_iter()
                .map(|(n, t)| (n, t.packets, t.bytes, t.new_connections))
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    /// (backend, established connections) for every backend in one read, from the kernel's
    /// connection tracking. Anyone may: counts reveal no client.
    async fn get_backend_connections(
        &self,
        conn: &Connection,
        msg: &Message,
    ) -> Result<Vec<(String, u64)>, Error> {
        let farm = self.farm.clone();
        match self
            .run(conn, msg, Operation::GetFarmConnections { farm })
            .await?
        {
            Output::Connections(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    /// Static and learnt sessions: `Client` (the persistence key's fields joined with " . "),
    /// `Backend` ("" when it is gone), `Static` b, `ExpiresMs` t (0 for static ones). Reveals
    /// clients: polkit's info action.
    async fn list_sessions(
        &self,
        conn: &Connection,
        msg: &Message,
    ) -> Result<Vec<HashMap<String, OwnedValue>>, Error> {
        let farm = self.farm.clone();
        let sessions = match self.run(conn, msg, Operation::ListSessions { farm }).await? {
            Output::Sessions(s) => s,
            other => return Err(unexpected(other)),
        };
        let mut out = Vec::new();
        for s in sessions {
            let entry = [
                ("Client", Value::from(s.client)),
                ("Backend", Value::from(s.backend.unwrap_or_default())),
                ("Static", Value::from(s.expires_ms.is_none())),
                ("ExpiresMs", Value::from(s.expires_ms.unwrap_or(0))),
            ];
            let mut m = HashMap::new();
            for (k, v) in entry {
                m.insert(
                    k.to_string(),
                    super::owned(v).map_err(|e| Error::Kernel(e.to_string()))?,
                );
            }
            out.push(m);
        }
        Ok(out)
    }

    /// Pins a client (in the farm's persistence format) to a backend.
    async fn add_session(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let (client, backend): (String, String) = msg.body().deserialize()?;
        let farm = self.farm.clone();
        let op = Operation::AddSession {
            farm,
            client,
            backend,
        };
        self.run(conn, msg, op).await?;
        Ok(())
    }

    /// Forgets one client: a static session leaves the configuration, a learnt one the kernel.
    async fn delete_session(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let client: String = msg.body().deserialize()?;
        let farm = self.farm.clone();
        self.run(conn, msg, Operation::DeleteSession { farm, client })
            .await?;
        Ok(())
    }

    /// Forgets every learnt session of the farm (static ones stay).
    async fn flush_sessions(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let farm = self.farm.clone();
        self.run(conn, msg, Operation::FlushSessions { farm }).await?;
        Ok(())
    }
}

impl Keyed for FarmObject {
    const IFACE: &'static str = IFACE;
    const TABLE: &'static [props::Prop] = props::FARM;
    const READ_ONLY: &'static [super::Arg] = READ_ONLY;
    const METHODS: &'static [super::Method] = METHODS;
    const SIGNALS: &'static [super::Signal] = &[];

    fn service(&self) -> &Service {
        &self.service
    }

    fn value(&self, name: &str) -> Option<Value<'static>> {
        let index = self.service.index();
        let f = index.farm(&self.farm)?;
        if name == "Origin" {
            return Some(Value::from(self.service.origins().farm_origin(&f.name)));
        }
        if name == "Backends" {
            let paths: Vec<OwnedObjectPath> = f
                .backends
                .iter()
                .map(|b| backend_path(&f.name, &b.name))
                .collect();
            return Some(Value::from(paths));
        }
        props::farm_value(f, name)
    }

    fn what(&self) -> String {
        format!("farm {:?}", self.farm)
    }

    fn counted(&self) -> (String, Option<String>) {
        (self.farm.clone(), None)
    }

    fn set_op(&self, prop: &'static props::Prop, json: Option<serde_json::Value>) -> Operation {
        Operation::UpdateFarm {
            farm: self.farm.clone(),
            patch: Patch::one(prop.key, json),
        }
    }
}

keyed_interface!(FarmObject, {
    "Update" => update,
    "AddBackend" => add_backend,
    "RemoveBackend" => remove_backend,
    "Rename" => rename,
    "Delete" => delete,
    "ListSessions" => list_sessions,
    "AddSession" => add_session,
    "DeleteSession" => delete_session,
    "FlushSessions" => flush_sessions,
    "GetBackendCounters" => get_backend_counters,
    "GetBackendConnections" => get_backend_connections,
});
