//! `org.nftlbd1.Checkpoint` at `/org/nftlbd1/checkpoint/N`: one object per checkpoint, added and
//! removed as the service's checkpoints change (created, confirmed, rolled back, expired), with
//! the Manager's `Checkpoints` announced each time.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, Value};
use zbus::{Connection, fdo, interface};

use super::{farm_path, path};
use crate::service::Service;
use crate::service::checkpoint::Info;

pub const IFACE: &str = "org.nftlbd1.Checkpoint";

pub fn checkpoint_path(id: u32) -> OwnedObjectPath {
    path(crate::schema::checkpoint_path(id))
}

/// The id of a checkpoint's object path (`None`: not one).
pub fn checkpoint_id(p: &str) -> Option<u32> {
    p.strip_prefix(crate::schema::ROOT)?
        .strip_prefix("/checkpoint/")?
        .parse()
        .ok()
}

pub struct CheckpointObject {
    pub id: u32,
    pub service: Service,
}

impl CheckpointObject {
    fn info(&self) -> fdo::Result<Info> {
        self.service
            .checkpoints()
            .iter()
            .find(|c| c.id == self.id)
            .cloned()
            .ok_or_else(|| fdo::Error::UnknownObject(format!("checkpoint {} is gone", self.id)))
    }
}

#[interface(name = "org.nftlbd1.Checkpoint")]
impl CheckpointObject {
    #[zbus(property(emits_changed_signal = "const"))]
    fn farms(&self) -> fdo::Result<Vec<OwnedObjectPath>> {
        Ok(self.info()?.farms.iter().map(|f| farm_path(f)).collect())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn created(&self) -> fdo::Result<u64> {
        Ok(self.info()?.created)
    }

    #[zbus(property)]
    fn rollback_timeout(&self) -> fdo::Result<u32> {
        Ok(self.info()?.rollback_timeout)
    }

    #[zbus(property)]
    fn deadline(&self) -> fdo::Result<u64> {
        Ok(self.info()?.deadline)
    }
}

/// The Manager's `Checkpoints`.
pub fn paths(list: &[Info]) -> Vec<OwnedObjectPath> {
    list.iter().map(|c| checkpoint_path(c.id)).collect()
}

/// Keeps one object per checkpoint, and announces the Manager's `Checkpoints` and a changed
/// deadline.
pub async fn follow(conn: Connection, service: Service, mut shown: Arc<Vec<Info>>) {
    let mut watch = service.watch_checkpoints();
    loop {
        let now = watch.borrow_and_update().clone();
        while let Err(e) = show(&conn, &service, &shown, &now).await {
            tracing::error!("D-Bus checkpoint objects could not follow a change: {e}; trying again");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        shown = now;
        if watch.changed().await.is_err() {
            return;
        }
    }
}

async fn show(conn: &Connection, service: &Service, old: &[Info], new: &[Info]) -> zbus::Result<()> {
    let server = conn.object_server();
    let kept: BTreeSet<u32> = new.iter().map(|c| c.id).collect();
    for c in old.iter().filter(|c| !kept.contains(&c.id)) {
        match server.remove::<CheckpointObject, _>(checkpoint_path(c.id)).await {
            Ok(_) | Err(zbus::Error::InterfaceNotFound) => {}
            Err(e) => return Err(e),
        }
    }
    for c in new {
        match old.iter().find(|o| o.id == c.id) {
            None => {
                let object = CheckpointObject {
                    id: c.id,
                    service: service.clone(),
                };
                server.at(checkpoint_path(c.id), object).await?;
            }
            Some(o) if o != c => {
                let path = checkpoint_path(c.id);
                let emitter = SignalEmitter::new(conn, path.as_ref())?;
                let mut changed: HashMap<&str, Value<'_>> = HashMap::new();
                changed.insert("RollbackTimeout", Value::from(c.rollback_timeout));
                changed.insert("Deadline", Value::from(c.deadline));
                changed_signal(&emitter, IFACE, changed).await?;
            }
            Some(_) => {}
        }
    }
    if old != new {
        let emitter = SignalEmitter::new(conn, super::ROOT)?;
        let mut changed: HashMap<&str, Value<'_>> = HashMap::new();
        changed.insert("Checkpoints", Value::from(paths(new)));
        changed_signal(&emitter, "org.nftlbd1.Manager", changed).await?;
    }
    Ok(())
}

async fn changed_signal(
    emitter: &SignalEmitter<'_>,
    iface: &'static str,
    changed: HashMap<&str, Value<'_>>,
) -> zbus::Result<()> {
    fdo::Properties::properties_changed(
        emitter,
        InterfaceName::from_static_str_unchecked(iface),
        changed,
        Cow::Borrowed(&[]),
    )
    .await
}
