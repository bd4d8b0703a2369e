//! The object tree and its signals follow the service's events: objects are added and removed,
//! and `PropertiesChanged`, `StateChanged` and the ObjectManager's signals are emitted once per
//! change, whoever made it, from the diff the service computed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, Value};
use zbus::{Connection, fdo};

use super::{backend, backend_path, farm, farm_path, policy, policy_path, props};
use crate::model::{Config, Farm};
use crate::schema::props::by_key;
use crate::service::diff::{Diff, FarmChange, What};
use crate::service::{Event, Service};

pub async fn add_farm(conn: &Connection, service: &Service, f: &Farm) -> zbus::Result<()> {
    conn.object_server()
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

pub async fn add_policy(conn: &Connection, service: &Service, name: &str) -> zbus::Result<()> {
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
pub async fn follow(
    conn: Connection,
    service: Service,
    mut shown: Arc<Config>,
    mut events: tokio::sync::broadcast::Receiver<Arc<Event>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let (mut new, mut diff) = match events.recv().await {
            // The event's diff is from the configuration this task showed last (events come in
            // order, and a missed one is caught up below).
            Ok(ev) if Arc::ptr_eq(&ev.old, &shown) || *ev.old == *shown => (ev.new.clone(), ev.diff.clone()),
            Ok(ev) => {
                let new = ev.new.clone();
                let diff = Diff::between(&shown, &new, &ev.origin.reason);
                (new, diff)
            }
            // Missed some: catch up with the latest configuration in one step.
            Err(RecvError::Lagged(_)) => {
                let new = service.config();
                let diff = Diff::between(&shown, &new, "api");
                (new, diff)
            }
            Err(RecvError::Closed) => return,
        };
        // The objects must end up as the configuration says: a step that failed half-way is
        // tried again from what was shown (adding and removing are idempotent), towards the
        // latest configuration.
        while let Err(e) = show(&conn, &service, &diff, &shown, &new).await {
            tracing::error!("D-Bus objects could not follow a change: {e}; trying again");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            new = service.config();
            diff = Diff::between(&shown, &new, "api");
        }
        shown = new;
    }
}

async fn show(
    conn: &Connection,
    service: &Service,
    diff: &Diff,
    old: &Config,
    new: &Config,
) -> zbus::Result<()> {
    let old_farms: HashMap<&str, &Farm> = if diff.farms.iter().any(|f| f.what == What::Removed) {
        old.farms.iter().map(|f| (f.name.as_str(), f)).collect()
    } else {
        HashMap::new()
    };
    let new_farms: HashMap<&str, &Farm> = if diff.farms.iter().any(|f| f.what != What::Removed) {
        new.farms.iter().map(|f| (f.name.as_str(), f)).collect()
    } else {
        HashMap::new()
    };
    for change in &diff.farms {
        match change.what {
            What::Removed => {
                if let Some(f) = old_farms.get(change.name.as_str()) {
                    remove_farm(conn, f).await?;
                }
            }
            What::Added => {
                if let Some(f) = new_farms.get(change.name.as_str()) {
                    add_farm(conn, service, f).await?;
                }
            }
            What::Changed => {
                if let Some(f) = new_farms.get(change.name.as_str()) {
                    farm_changed(conn, service, change, f).await?;
                }
            }
        }
    }
    policies_changed(conn, service, diff, new).await?;
    let emitter = SignalEmitter::new(conn, super::ROOT)?;
    let mut changed: HashMap<&str, Value<'_>> = HashMap::new();
    changed.insert("Generation", Value::from(service.generation()));
    if diff.farm_list {
        let paths: Vec<OwnedObjectPath> = new.farms.iter().map(|f| farm_path(&f.name)).collect();
        changed.insert("Farms", Value::from(paths));
    }
    if diff.policy_list {
        let paths: Vec<OwnedObjectPath> = new.policies.iter().map(|p| policy_path(&p.name)).collect();
        changed.insert("Policies", Value::from(paths));
    }
    properties_changed(&emitter, "org.nftlbd1.Manager", changed).await
}

async fn policies_changed(
    conn: &Connection,
    service: &Service,
    diff: &Diff,
    new: &Config,
) -> zbus::Result<()> {
    for change in &diff.policies {
        match change.what {
            What::Removed => gone(
                conn.object_server()
                    .remove::<policy::PolicyObject, _>(policy_path(&change.name))
                    .await,
            )?,
            What::Added => add_policy(conn, service, &change.name).await?,
            What::Changed => {
                let Some(p) = new.policies.iter().find(|p| p.name == change.name) else {
                    continue;
                };
                let path = policy_path(&p.name);
                let emitter = SignalEmitter::new(conn, path.as_ref())?;
                let mut changed = HashMap::new();
                for k in &change.keys {
                    if let Some(prop) = by_key(props::POLICY, &k.key)
                        && let Some(v) = props::policy_value(p, prop.name)
                    {
                        changed.insert(prop.name, v);
                    }
                }
                properties_changed(&emitter, policy::IFACE, changed).await?;
            }
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
    change: &FarmChange,
    new: &Farm,
) -> zbus::Result<()> {
    let fpath = farm_path(&new.name);
    let emitter = SignalEmitter::new(conn, fpath.as_ref())?;
    let mut changed = HashMap::new();
    for k in &change.keys {
        if let Some(prop) = by_key(props::FARM, &k.key)
            && let Some(v) = props::farm_value(new, prop.name)
        {
            changed.insert(prop.name, v);
        }
    }
    if let Some(p) = change.effective_priority {
        changed.insert("EffectivePriority", Value::from(p));
    }
    if let Some(met) = change.quorum_met {
        changed.insert("QuorumMet", Value::from(met));
    }
    if change.backend_list {
        let paths: Vec<OwnedObjectPath> = new
            .backends
            .iter()
            .map(|b| backend_path(&new.name, &b.name))
            .collect();
        changed.insert("Backends", Value::from(paths));
    }
    properties_changed(&emitter, farm::IFACE, changed).await?;
    let backends: HashMap<&str, &crate::model::Backend> = if change.backends.is_empty() {
        HashMap::new()
    } else {
        new.backends.iter().map(|b| (b.name.as_str(), b)).collect()
    };
    for bc in &change.backends {
        let bpath = backend_path(&new.name, &bc.name);
        match bc.what {
            What::Removed => {
                gone(
                    conn.object_server()
                        .remove::<backend::BackendObject, _>(bpath)
                        .await,
                )?;
                continue;
            }
            What::Added => {
                add_backend(conn, service, &new.name, &bc.name).await?;
                continue;
            }
            What::Changed => {}
        }
        let Some(b) = backends.get(bc.name.as_str()) else {
            continue;
        };
        let emitter = SignalEmitter::new(conn, bpath.as_ref())?;
        let mut changed = HashMap::new();
        if let Some(active) = bc.active {
            changed.insert("Active", Value::from(active));
        }
        for k in &bc.keys {
            if let Some(prop) = by_key(props::BACKEND, &k.key)
                .or_else(|| by_key(crate::schema::props::BACKEND_HEALTH, &k.key))
                && let Some(v) = props::backend_value(b, prop.name)
            {
                changed.insert(prop.name, v);
            }
        }
        if bc
            .keys
            .iter()
            .any(|k| crate::schema::props::EFFECTIVE_WEIGHT_KEYS.contains(&k.key.as_str()))
            && let Some(v) = props::backend_value(b, "EffectiveWeight")
        {
            changed.insert("EffectiveWeight", v);
        }
        properties_changed(&emitter, backend::IFACE, changed).await?;
        if let Some(t) = &bc.state {
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
                    &(word(&t.old), word(&t.new), t.reason.as_str()),
                )
                .await?;
        }
    }
    Ok(())
}
