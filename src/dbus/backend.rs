//! `org.nftlbd1.Backend` at `/org/nftlbd1/farm/<farm>/backend/<backend>`: one property per
//! backend key; `SetState` has its own polkit action so operators can be delegated just that.

use std::collections::HashMap;

use zbus::zvariant::{OwnedValue, Value};
use zbus::{Connection, Message};

use super::auth::execute;
use super::error::Error;
use super::keyed::{Keyed, keyed_interface};
use super::{farm_path, props};
use crate::service::{Operation, Patch, Service};

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
    ("Health", "s"),
    ("HealthReason", "s"),
    ("HealthDrain", "b"),
    ("HealthWeight", "u"),
    ("HealthRamp", "u"),
    ("EffectiveWeight", "u"),
    ("LastCheck", "t"),
    ("LastCheckDuration", "t"),
    ("Packets", "t"),
    ("Bytes", "t"),
    ("NewConnections", "t"),
];

const METHODS: &[super::Method] = &[
    ("Update", &[("changes", "a{sv}")], &[]),
    ("UpdateFor", &[("changes", "a{sv}"), ("seconds", "u")], &[]),
    ("SetState", &[("state", "s")], &[]),
    ("SetStateFor", &[("state", "s"), ("seconds", "u")], &[]),
    ("SetHealth", &[("health", "s"), ("reason", "s")], &[]),
    ("Remove", &[], &[]),
];

const SIGNALS: &[(&str, &[(&str, &str)])] =
    &[("StateChanged", &[("old", "s"), ("new", "s"), ("reason", "s")])];

impl BackendObject {
    async fn run(&self, conn: &Connection, msg: &Message, op: Operation) -> Result<(), Error> {
        execute(&self.service, conn, &msg.header(), op).await?;
        Ok(())
    }

    fn names(&self) -> (String, String) {
        (self.farm.clone(), self.backend.clone())
    }

    async fn update(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let changes: HashMap<String, OwnedValue> = msg.body().deserialize()?;
        self.update_timed(conn, msg, changes, None).await
    }

    /// `Update` of Weight and Priority for `seconds`, then put back by themselves.
    async fn update_for(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let (changes, seconds): (HashMap<String, OwnedValue>, u32) = msg.body().deserialize()?;
        self.update_timed(conn, msg, changes, Some(seconds)).await
    }

    async fn update_timed(
        &self,
        conn: &Connection,
        msg: &Message,
        changes: HashMap<String, OwnedValue>,
        for_secs: Option<u32>,
    ) -> Result<(), Error> {
        let at = format!("farms[{}].backends[{}]", self.farm, self.backend);
        let patch = props::patch(props::BACKEND, &changes, &at, false)?;
        let (farm, backend) = self.names();
        let op = Operation::UpdateBackend {
            farm,
            backend,
            patch,
            for_secs,
        };
        self.run(conn, msg, op).await
    }

    async fn set_state(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let state: String = msg.body().deserialize()?;
        self.set_state_timed(conn, msg, state, None).await
    }

    /// `SetState` for `seconds`, then the state before is put back by itself.
    async fn set_state_for(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let (state, seconds): (String, u32) = msg.body().deserialize()?;
        self.set_state_timed(conn, msg, state, Some(seconds)).await
    }

    async fn set_state_timed(
        &self,
        conn: &Connection,
        msg: &Message,
        state: String,
        for_secs: Option<u32>,
    ) -> Result<(), Error> {
        let (farm, backend) = self.names();
        let op = Operation::SetBackendState {
            farm,
            backend,
            state,
            for_secs,
        };
        self.run(conn, msg, op).await
    }

    async fn set_health(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let (health, reason): (String, String) = msg.body().deserialize()?;
        let (farm, backend) = self.names();
        let op = Operation::SetBackendHealth {
            farm,
            backend,
            health,
            reason,
        };
        self.run(conn, msg, op).await
    }

    async fn remove(&self, conn: &Connection, msg: &Message) -> Result<(), Error> {
        let (farm, backend) = self.names();
        self.run(conn, msg, Operation::RemoveBackend { farm, backend })
            .await
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
            // Runtime facts of the checker, not keys: 0 until the backend's first check.
            "LastCheck" | "LastCheckDuration" => {
                let last = self.service.observed().get(&self.farm, &self.backend);
                let last = last.unwrap_or_default();
                let v = if name == "LastCheck" {
                    last.at_us
                } else {
                    last.duration_us
                };
                return Some(Value::from(v));
            }
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

    /// Setting `State` is `SetState` (the narrower action); an empty state is the default, up.
    fn set_op(&self, prop: &'static props::Prop, json: Option<serde_json::Value>) -> Operation {
        let (farm, backend) = self.names();
        if prop.key == "state" {
            let state = match json {
                Some(serde_json::Value::String(s)) => s,
                _ => "up".to_string(),
            };
            return Operation::SetBackendState {
                farm,
                backend,
                state,
                for_secs: None,
            };
        }
        Operation::UpdateBackend {
            farm,
            backend,
            patch: Patch::one(prop.key, json),
            for_secs: None,
        }
    }
}

keyed_interface!(BackendObject, {
    "Update" => update,
    "UpdateFor" => update_for,
    "SetState" => set_state,
    "SetStateFor" => set_state_for,
    "SetHealth" => set_health,
    "Remove" => remove,
});
