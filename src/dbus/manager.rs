//! `org.nftlbd1.Manager` at `/org/nftlbd1` (with the ObjectManager): farms are created, found and
//! deleted here; the whole configuration goes in and out as canonical JSON.

use std::collections::HashMap;

use zbus::message::Header;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, interface};

use super::auth::{self, Details};
use super::error::Error;
use super::{farm_path, policy_path, props};
use crate::model::{Invalid, parse_config, parse_farm_value, parse_policy_value};
use crate::service::{Origin, Service, ServiceError};
use crate::service::{edit, ops};

pub struct Manager {
    pub service: Service,
}

#[interface(name = "org.nftlbd1.Manager")]
impl Manager {
    /// Creates a farm, its backends included (`Backends` as `aa{sv}`), in one transaction.
    #[zbus(out_args("farm"))]
    async fn create_farm(
        &self,
        name: String,
        settings: HashMap<String, OwnedValue>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<OwnedObjectPath, Error> {
        auth::require(conn, &hdr, auth::FARM_MANAGE, &Details::farm(&name, "create")).await?;
        let at = format!("farms[{name}]");
        let farm = parse_farm_value(new_object(&name, props::FARM, &settings, &at, true)?, &at)?;
        self.service.change(Origin::api(), ops::create_farm(farm)).await?;
        Ok(farm_path(&name))
    }

    async fn delete_farm(
        &self,
        name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        auth::require(conn, &hdr, auth::FARM_MANAGE, &Details::farm(&name, "delete")).await?;
        super::farm::delete_farm(&self.service, &name).await
    }

    #[zbus(out_args("farm"))]
    async fn get_farm(&self, name: String) -> Result<OwnedObjectPath, Error> {
        match self.service.config().farm(&name) {
            Some(_) => Ok(farm_path(&name)),
            None => Err(Error::NotFound(format!("no farm is named {name:?}"))),
        }
    }

    #[zbus(out_args("farms"))]
    async fn list_farms(&self) -> Vec<OwnedObjectPath> {
        self.farms()
    }

    /// Creates a policy (`Type`, `Family`, `Timeout`, `LogPrefix`, `Elements`) in one transaction.
    #[zbus(out_args("policy"))]
    async fn create_policy(
        &self,
        name: String,
        settings: HashMap<String, OwnedValue>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<OwnedObjectPath, Error> {
        let details = Details {
            policy: name.clone(),
            verb: "create".into(),
            ..Details::default()
        };
        auth::require(conn, &hdr, auth::POLICY_MANAGE, &details).await?;
        let at = format!("policies[{name}]");
        let policy = parse_policy_value(new_object(&name, props::POLICY, &settings, &at, false)?, &at)?;
        self.service
            .change(Origin::api(), ops::create_policy(policy))
            .await?;
        Ok(policy_path(&name))
    }

    async fn delete_policy(
        &self,
        name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let details = Details {
            policy: name.clone(),
            verb: "delete".into(),
            ..Details::default()
        };
        auth::require(conn, &hdr, auth::POLICY_MANAGE, &details).await?;
        super::policy::delete_policy(&self.service, &name).await
    }

    #[zbus(out_args("policy"))]
    async fn get_policy(&self, name: String) -> Result<OwnedObjectPath, Error> {
        match self.service.config().policies.iter().any(|p| p.name == name) {
            true => Ok(policy_path(&name)),
            false => Err(Error::NotFound(format!("no policy is named {name:?}"))),
        }
    }

    /// The whole configuration as canonical JSON.
    #[zbus(out_args("json"))]
    async fn export_config(&self) -> Result<String, Error> {
        serde_json::to_string_pretty(&*self.service.config()).map_err(|e| Error::Kernel(e.to_string()))
    }

    /// Replaces the configuration (`replace`) or adds and replaces the farms and policies it
    /// names (`merge`); all or nothing.
    async fn import_config(
        &self,
        json: String,
        mode: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        auth::require(
            conn,
            &hdr,
            auth::CONFIG,
            &Details::verb(&format!("import {mode}")),
        )
        .await?;
        let replace = match mode.as_str() {
            "replace" => true,
            "merge" => false,
            other => {
                return Err(Invalid::one("mode", format!("{other:?} is not merge or replace")).into());
            }
        };
        // Shape and values first, so the error names the document's own fields.
        let incoming = parse_config(&json)?;
        self.service
            .change(Origin::api(), ops::import(incoming, replace))
            .await?;
        Ok(())
    }

    /// Re-reads the state file and makes the kernel match it.
    async fn reload(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        auth::require(conn, &hdr, auth::CONFIG, &Details::verb("reload")).await?;
        self.service.reload().await?;
        Ok(())
    }

    /// action id → `yes`, `no` or `auth` for the caller (no details: the general answer).
    #[zbus(out_args("permissions"))]
    async fn get_permissions(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<HashMap<String, String>, Error> {
        let mut out = HashMap::new();
        for action in auth::ALL {
            let a = auth::check(conn, &hdr, action, &Details::default()).await?;
            let word = match a {
                auth::Answer::Yes => "yes",
                auth::Answer::No => "no",
                auth::Answer::Auth => "auth",
            };
            out.insert(action.to_string(), word.to_string());
        }
        Ok(out)
    }

    #[zbus(property)]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    #[zbus(property)]
    fn farms(&self) -> Vec<OwnedObjectPath> {
        self.service
            .config()
            .farms
            .iter()
            .map(|f| farm_path(&f.name))
            .collect()
    }

    #[zbus(property)]
    fn policies(&self) -> Vec<OwnedObjectPath> {
        self.service
            .config()
            .policies
            .iter()
            .map(|p| policy_path(&p.name))
            .collect()
    }

    /// Bumps with every committed change of the configuration.
    #[zbus(property)]
    fn generation(&self) -> u64 {
        self.service.generation()
    }

    #[zbus(property)]
    fn kernel_features(&self) -> Vec<String> {
        let f = self.service.features();
        [
            ("table-owner", f.table_owner),
            ("table-persist", f.table_persist),
            ("queue", f.queue),
            ("flowtable", f.flowtable),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| n.to_string())
        .collect()
    }
}

impl From<ServiceError> for zbus::fdo::Error {
    fn from(e: ServiceError) -> Self {
        super::error::to_fdo(e.into())
    }
}

/// The canonical JSON of a new farm or policy: its name (checked) and its `a{sv}` settings.
fn new_object(
    name: &str,
    table: &'static [props::Prop],
    settings: &HashMap<String, OwnedValue>,
    at: &str,
    backends: bool,
) -> Result<serde_json::Value, Error> {
    edit::check_name(&format!("{at}.name"), name)?;
    let mut obj = serde_json::Map::new();
    props::apply_settings(&mut obj, table, settings, at, backends)?;
    obj.insert("name".into(), serde_json::Value::String(name.to_string()));
    Ok(serde_json::Value::Object(obj))
}
