//! `org.nftlbd1.Manager` at `/org/nftlbd1` (with the ObjectManager): farms and policies are
//! created, found and deleted here; the whole configuration goes in and out as canonical JSON.
//! Each method translates its arguments into one operation of the service.

use std::collections::HashMap;

use zbus::message::Header;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, interface};

use super::auth::{execute, unexpected};
use super::checkpoint::{checkpoint_id, checkpoint_path, paths as checkpoint_paths};
use super::error::Error;
use super::{farm_path, policy_path, props};
use crate::model::{Invalid, parse_config, parse_farm_value, parse_policy_value};
use crate::service::{ImportMode, Operation, Output, Service, ServiceError, edit};

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
        let at = format!("farms[{name}]");
        let farm = parse_farm_value(&new_object(&name, props::FARM, &settings, &at, true)?, &at)?;
        let op = Operation::CreateFarm { farm: Box::new(farm) };
        execute(&self.service, conn, &hdr, op).await?;
        Ok(farm_path(&name))
    }

    async fn delete_farm(
        &self,
        name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        execute(&self.service, conn, &hdr, Operation::DeleteFarm { farm: name }).await?;
        Ok(())
    }

    #[zbus(out_args("farm"))]
    async fn get_farm(
        &self,
        name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<OwnedObjectPath, Error> {
        let op = Operation::GetFarm { farm: name.clone() };
        execute(&self.service, conn, &hdr, op).await?;
        Ok(farm_path(&name))
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
        let at = format!("policies[{name}]");
        let policy = parse_policy_value(new_object(&name, props::POLICY, &settings, &at, false)?, &at)?;
        let op = Operation::CreatePolicy {
            policy: Box::new(policy),
        };
        execute(&self.service, conn, &hdr, op).await?;
        Ok(policy_path(&name))
    }

    async fn delete_policy(
        &self,
        name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        execute(
            &self.service,
            conn,
            &hdr,
            Operation::DeletePolicy { policy: name },
        )
        .await?;
        Ok(())
    }

    #[zbus(out_args("policy"))]
    async fn get_policy(
        &self,
        name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<OwnedObjectPath, Error> {
        let op = Operation::GetPolicy { policy: name.clone() };
        execute(&self.service, conn, &hdr, op).await?;
        Ok(policy_path(&name))
    }

    /// Many backends' State, Weight or Priority, across farms, in one transaction.
    async fn set_backends(
        &self,
        changes: Vec<(String, String, HashMap<String, OwnedValue>)>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let mut updates = Vec::with_capacity(changes.len());
        for (i, (farm, backend, settings)) in changes.into_iter().enumerate() {
            updates.push(props::backend_update(
                farm,
                backend,
                &settings,
                &format!("changes[{i}]"),
            )?);
        }
        execute(
            &self.service,
            conn,
            &hdr,
            Operation::SetBackends { changes: updates },
        )
        .await?;
        Ok(())
    }

    /// The whole configuration as canonical JSON.
    #[zbus(out_args("json"))]
    async fn export_config(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        match execute(&self.service, conn, &hdr, Operation::GetConfig).await? {
            Output::Config { config, .. } => {
                serde_json::to_string_pretty(&*config).map_err(|e| Error::Kernel(e.to_string()))
            }
            other => Err(unexpected(other)),
        }
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
        let mode = ImportMode::parse(&mode)
            .ok_or_else(|| Invalid::one("mode", format!("{mode:?} is not merge or replace")))?;
        // Shape and values first, so the error names the document's own fields.
        let config = Box::new(parse_config(&json)?);
        execute(
            &self.service,
            conn,
            &hdr,
            Operation::ImportConfig { config, mode },
        )
        .await?;
        Ok(())
    }

    /// Re-reads the state file and the farm files and makes the kernel match them; answers
    /// the refused farm files as (`PATH: field`, reason).
    #[zbus(out_args("refused"))]
    async fn reload(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<(String, String)>, Error> {
        match execute(&self.service, conn, &hdr, Operation::Reload).await? {
            Output::Reloaded { refused, .. } => {
                Ok(refused.into_iter().map(|f| (f.field, f.reason)).collect())
            }
            other => Err(unexpected(other)),
        }
    }

    /// Writes a farm as it runs into the farm file that declares it.
    async fn runtime_to_persistent(
        &self,
        farm: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        execute(&self.service, conn, &hdr, Operation::RuntimeToPersistent { farm }).await?;
        Ok(())
    }

    /// The pending timed changes: (farm, backend, key, value to restore, deadline in
    /// microseconds since the Unix epoch).
    #[zbus(out_args("changes"))]
    async fn list_timed_changes(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<(String, String, String, String, u64)>, Error> {
        match execute(&self.service, conn, &hdr, Operation::ListTimedChanges).await? {
            Output::TimedChanges(list) => Ok(list
                .iter()
                .map(|p| {
                    let restore = match &p.restore {
                        serde_json::Value::String(s) => s.clone(),
                        v => v.to_string(),
                    };
                    (
                        p.farm.clone(),
                        p.backend.clone(),
                        p.key.word().to_string(),
                        restore,
                        p.deadline,
                    )
                })
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    /// Ends a pending timed change now: the key gets back the value it replaced.
    async fn cancel_timed_change(
        &self,
        farm: String,
        backend: String,
        key: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let op = Operation::CancelTimedChange { farm, backend, key };
        execute(&self.service, conn, &hdr, op).await?;
        Ok(())
    }

    /// action id → `yes`, `no` or `auth` for the caller (no details: the general answer).
    #[zbus(out_args("permissions"))]
    async fn get_permissions(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<HashMap<String, String>, Error> {
        match execute(&self.service, conn, &hdr, Operation::GetPermissions).await? {
            Output::Permissions(list) => Ok(list
                .into_iter()
                .map(|(action, a)| (action.to_string(), a.word().to_string()))
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    /// Keeps farms (none: every farm) as they are, to roll back to unless destroyed within
    /// `rollback_timeout` seconds (0: never by itself). Flags as NetworkManager's.
    #[zbus(out_args("checkpoint"))]
    async fn checkpoint_create(
        &self,
        farms: Vec<OwnedObjectPath>,
        rollback_timeout: u32,
        flags: u32,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<OwnedObjectPath, Error> {
        let mut names = Vec::with_capacity(farms.len());
        for (i, p) in farms.iter().enumerate() {
            let name = p
                .as_str()
                .strip_prefix(crate::schema::ROOT)
                .and_then(|rest| rest.strip_prefix("/farm/"))
                .filter(|rest| !rest.contains('/'))
                .and_then(crate::model::bus_path_unescape)
                .ok_or_else(|| Invalid::one(format!("farms[{i}]"), format!("{p} is not a farm's path")))?;
            names.push(name);
        }
        let op = Operation::CheckpointCreate {
            farms: names,
            rollback_timeout,
            flags,
        };
        match execute(&self.service, conn, &hdr, op).await? {
            Output::Checkpoint(id) => Ok(checkpoint_path(id)),
            other => Err(unexpected(other)),
        }
    }

    /// Restores the checkpoint's farms in one transaction: farm → 0 restored, 1 invalid, 2 the
    /// kernel refused, 3 the state could not be saved.
    #[zbus(out_args("results"))]
    async fn checkpoint_rollback(
        &self,
        checkpoint: OwnedObjectPath,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<HashMap<String, u32>, Error> {
        let op = Operation::CheckpointRollback {
            checkpoint: id(&checkpoint)?,
        };
        match execute(&self.service, conn, &hdr, op).await? {
            Output::RolledBack(results) => Ok(results.into_iter().collect()),
            other => Err(unexpected(other)),
        }
    }

    /// Confirms: the changes stay.
    async fn checkpoint_destroy(
        &self,
        checkpoint: OwnedObjectPath,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let op = Operation::CheckpointDestroy {
            checkpoint: id(&checkpoint)?,
        };
        execute(&self.service, conn, &hdr, op).await?;
        Ok(())
    }

    async fn checkpoint_adjust_rollback_timeout(
        &self,
        checkpoint: OwnedObjectPath,
        add_timeout: u32,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let op = Operation::CheckpointAdjustRollbackTimeout {
            checkpoint: id(&checkpoint)?,
            add_timeout,
        };
        execute(&self.service, conn, &hdr, op).await?;
        Ok(())
    }

    #[zbus(property)]
    fn checkpoints(&self) -> Vec<OwnedObjectPath> {
        checkpoint_paths(&self.service.checkpoints())
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

/// The id of a checkpoint's path; another path is an unknown checkpoint.
fn id(p: &OwnedObjectPath) -> Result<u32, Error> {
    checkpoint_id(p.as_str()).ok_or_else(|| Error::NotFound(format!("{p} is no checkpoint")))
}

/// The canonical JSON of a new farm or policy: its name (checked) and its `a{sv}` settings.
pub(super) fn new_object(
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
