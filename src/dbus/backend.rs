//! `org.nftlbd1.Backend` at `/org/nftlbd1/farm/<farm>/backend/<backend>`: one property per
//! backend key; `SetState` has its own polkit action so operators can be delegated just that.

use std::collections::HashMap;

use zbus::zvariant::{OwnedValue, Value};
use zbus::{Connection, Message};

use super::auth::{self, Details};
use super::error::Error;
use super::keyed::{Change, Keyed, keyed_interface};
use super::{farm_path, props};
use crate::service::ops;
use crate::service::{Origin, Service};

pub const IFACE: &str = "org.nftlbd1.Backend";

pub struct BackendObject {
    pub farm: String,
    pub backend: String,
    pub service: Service,
}

const READ_ONLY: &[super::Arg] = &[
    ("Name", "s"),
    ("Farm", "o"),
    ("Active", "b"),
    ("Packets", "t"),
    ("Bytes", "t"),
];

const METHODS: &[super::Method] = &[
    ("Update", &[("changes", "a{sv}")], &[]),
    ("SetState", &[("state", "s")], &[]),
    ("Remove", &[], &[]),
];

const SIGNALS: &[(&str, &[(&str, &str)])] =
    &[("StateChanged", &[("old", "s"), ("new", "s"), ("reason", "s")])];

impl BackendObject {
    async fn update(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let changes: HashMap<String, OwnedValue> = msg.body().deserialize()?;
        let hdr = msg.header();
        let details = Details::backend(&self.farm, &self.backend, "update");
        auth::require(conn, &hdr, auth::BACKEND_MANAGE, &details).await?;
        let at = format!("farms[{}].backends[{}]", self.farm, self.backend);
        let mut patch = serde_json::Map::new();
        props::apply_settings(&mut patch, props::BACKEND, &changes, &at, false)?;
        let removed: Vec<String> = props::BACKEND
            .iter()
            .filter(|p| changes.contains_key(p.name) && !patch.contains_key(p.key))
            .map(|p| p.key.to_string())
            .collect();
        let (farm, backend) = (self.farm.clone(), self.backend.clone());
        self.service
            .change(Origin::api(), ops::update_backend(farm, backend, patch, removed))
            .await?;
        Ok(())
    }

    async fn set_state(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let state: String = msg.body().deserialize()?;
        let hdr = msg.header();
        let details = Details::backend(&self.farm, &self.backend, &format!("set-state {state}"));
        auth::require(conn, &hdr, auth::BACKEND_SET_STATE, &details).await?;
        let (farm, backend) = (self.farm.clone(), self.backend.clone());
        self.service
            .change(Origin::api(), ops::set_backend_state(farm, backend, state))
            .await?;
        Ok(())
    }

    async fn remove(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let hdr = msg.header();
        let details = Details::backend(&self.farm, &self.backend, "remove");
        auth::require(conn, &hdr, auth::BACKEND_MANAGE, &details).await?;
        super::farm::remove_backend(&self.service, &self.farm, &self.backend).await
    }
}

impl Keyed for BackendObject {
    const IFACE: &'static str = IFACE;
    const TABLE: &'static [props::Prop] = props::BACKEND;
    const READ_ONLY: &'static [super::Arg] = READ_ONLY;
    const METHODS: &'static [super::Method] = METHODS;
    const SIGNALS: &'static [super::Signal] = SIGNALS;

    fn service(&self) -> &Service {
        &self.service
    }

    fn value(&self, name: &str) -> Option<Value<'static>> {
        let index = self.service.index();
        let (f, b) = index.backend(&self.farm, &self.backend)?;
        match name {
            "Farm" => return Some(Value::from(farm_path(&self.farm))),
            "Active" => {
                let prio = index.effective_priority(&self.farm)?;
                return Some(Value::from(crate::model::is_active(f, b, prio)));
            }
            _ => {}
        }
        props::backend_value(b, name)
    }

    fn what(&self) -> String {
        format!("farms[{}].backends[{}]", self.farm, self.backend)
    }

    fn counted(&self) -> (String, Option<String>) {
        (self.farm.clone(), Some(self.backend.clone()))
    }

    /// Setting `State` is `SetState`: the narrower action.
    fn set_auth(&self, prop: &props::Prop) -> (&'static str, Details) {
        let action = if prop.key == "state" {
            auth::BACKEND_SET_STATE
        } else {
            auth::BACKEND_MANAGE
        };
        (
            action,
            Details::backend(&self.farm, &self.backend, &format!("set {}", prop.name)),
        )
    }

    fn set_change(&self, prop: &'static props::Prop, json: Option<serde_json::Value>) -> Change {
        let (farm, backend) = (self.farm.clone(), self.backend.clone());
        Box::new(ops::set_backend_key(farm, backend, prop.key, json))
    }
}

keyed_interface!(BackendObject, {
    "Update" => update,
    "SetState" => set_state,
    "Remove" => remove,
});
