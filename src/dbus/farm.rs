//! `org.nftlbd1.Farm` at `/org/nftlbd1/farm/<escaped name>`: one property per farm key (read from
//! the committed configuration), setters and methods that commit one transaction each.
//!
//! Implemented by hand rather than with `#[interface]`: the properties come from one table
//! (`props::FARM`), and changes are announced by the service's event, once, whoever made them.

use std::collections::HashMap;

use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, Message};

use super::auth::{self, Details};
use super::error::Error;
use super::keyed::{Change, Keyed, keyed_interface};
use super::{backend_path, props};
use crate::service::{Origin, Service};
use crate::service::{edit, ops};

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
    ("Packets", "t"),
    ("Bytes", "t"),
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
    ("GetBackendCounters", &[], &[("counters", "a(stt)")]),
];

impl FarmObject {
    async fn update(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let changes: HashMap<String, OwnedValue> = msg.body().deserialize()?;
        let hdr = msg.header();
        auth::require(
            conn,
            &hdr,
            auth::FARM_MANAGE,
            &Details::farm(&self.farm, "update"),
        )
        .await?;
        let at = format!("farms[{}]", self.farm);
        let mut patch = serde_json::Map::new();
        props::apply_settings(&mut patch, props::FARM, &changes, &at, true)?;
        let removed: Vec<String> = props::FARM
            .iter()
            .filter(|p| changes.contains_key(p.name) && !patch.contains_key(p.key))
            .map(|p| p.key.to_string())
            .collect();
        self.service
            .change(Origin::api(), ops::update_farm(self.farm.clone(), patch, removed))
            .await?;
        Ok(())
    }

    async fn add_backend(&self, conn: &Connection, msg: &Message) -> Result<OwnedObjectPath, Error> {
        let (bname, settings): (String, HashMap<String, OwnedValue>) = msg.body().deserialize()?;
        let hdr = msg.header();
        auth::require(
            conn,
            &hdr,
            auth::BACKEND_MANAGE,
            &Details::backend(&self.farm, &bname, "add"),
        )
        .await?;
        let at = format!("farms[{}].backends[{bname}]", self.farm);
        edit::check_name(&format!("{at}.name"), &bname)?;
        let mut b = serde_json::Map::new();
        props::apply_settings(&mut b, props::BACKEND, &settings, &at, false)?;
        b.insert("name".into(), serde_json::Value::String(bname.clone()));
        self.service
            .change(Origin::api(), ops::add_backend(self.farm.clone(), b))
            .await?;
        Ok(backend_path(&self.farm, &bname))
    }

    async fn remove_backend(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let bname: String = msg.body().deserialize()?;
        let hdr = msg.header();
        auth::require(
            conn,
            &hdr,
            auth::BACKEND_MANAGE,
            &Details::backend(&self.farm, &bname, "remove"),
        )
        .await?;
        remove_backend(&self.service, &self.farm, &bname).await
    }

    async fn rename(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let new_name: String = msg.body().deserialize()?;
        let hdr = msg.header();
        auth::require(
            conn,
            &hdr,
            auth::FARM_MANAGE,
            &Details::farm(&self.farm, "rename"),
        )
        .await?;
        self.service
            .change(Origin::api(), ops::rename_farm(self.farm.clone(), new_name))
            .await?;
        Ok(())
    }

    async fn delete(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let hdr = msg.header();
        auth::require(
            conn,
            &hdr,
            auth::FARM_MANAGE,
            &Details::farm(&self.farm, "delete"),
        )
        .await?;
        delete_farm(&self.service, &self.farm).await
    }
}

impl FarmObject {
    /// Static and learnt sessions: `Client` (the persistence key's fields joined with " . "),
    /// `Backend` ("" when it is gone), `Static` b, `ExpiresMs` t (0 for static ones). Reveals
    /// clients: polkit's info action.
    /// (backend, packets, bytes) for every backend in one read (one dump of the counters, where
    /// reading `Packets` and `Bytes` of each backend object would be a call each). Anyone may.
    async fn get_backend_counters(
        &self,
        _conn: &Connection,
        _msg: &Message,
    ) -> Result<Vec<(String, u64, u64)>, Error> {
        let farm = self.farm.clone();
        let (_, each) = self.service.query(move |e| e.farm_traffic(&farm)).await?;
        Ok(each.into_iter().map(|(n, (p, b))| (n, p, b)).collect())
    }

    async fn list_sessions(
        &self,
        conn: &Connection,
        msg: &Message,
    ) -> Result<Vec<HashMap<String, OwnedValue>>, Error> {
        let hdr = msg.header();
        auth::require(
            conn,
            &hdr,
            auth::INFO,
            &Details::farm(&self.farm, "list-sessions"),
        )
        .await?;
        let farm = self.farm.clone();
        let sessions = self.service.query(move |e| e.sessions(&farm)).await?;
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
        let hdr = msg.header();
        auth::require(
            conn,
            &hdr,
            auth::FARM_MANAGE,
            &Details::backend(&self.farm, &backend, "add-session"),
        )
        .await?;
        self.service
            .change(
                Origin::api(),
                ops::add_session(self.farm.clone(), client, backend),
            )
            .await?;
        Ok(())
    }

    /// Forgets one client: a static session leaves the configuration, a learnt one the kernel.
    async fn delete_session(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let client: String = msg.body().deserialize()?;
        let hdr = msg.header();
        auth::require(
            conn,
            &hdr,
            auth::FARM_MANAGE,
            &Details::farm(&self.farm, "delete-session"),
        )
        .await?;
        let farm = self.farm.clone();
        self.service
            .operate(Origin::api(), move |e| {
                e.delete_session(&farm, &client).map(|_| ())
            })
            .await?;
        Ok(())
    }

    /// Forgets every learnt session of the farm (static ones stay).
    async fn flush_sessions(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let hdr = msg.header();
        auth::require(
            conn,
            &hdr,
            auth::FARM_MANAGE,
            &Details::farm(&self.farm, "flush-sessions"),
        )
        .await?;
        let farm = self.farm.clone();
        self.service
            .operate(Origin::api(), move |e| e.flush_sessions(&farm).map(|_| ()))
            .await?;
        Ok(())
    }
}

pub async fn delete_farm(service: &Service, name: &str) -> Result<(), Error> {
    service
        .change(Origin::api(), ops::delete_farm(name.to_string()))
        .await?;
    Ok(())
}

pub async fn remove_backend(service: &Service, farm: &str, backend: &str) -> Result<(), Error> {
    service
        .change(
            Origin::api(),
            ops::remove_backend(farm.to_string(), backend.to_string()),
        )
        .await?;
    Ok(())
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

    fn set_auth(&self, prop: &props::Prop) -> (&'static str, Details) {
        (
            auth::FARM_MANAGE,
            Details::farm(&self.farm, &format!("set {}", prop.name)),
        )
    }

    fn set_change(&self, prop: &'static props::Prop, json: Option<serde_json::Value>) -> Change {
        Box::new(ops::set_farm_key(self.farm.clone(), prop.key, json))
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
});
