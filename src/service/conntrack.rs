//! A backend's connections in conntrack, found by its ct mark (see `engine::layout`): how many
//! are established now, and deleting them when a check with `on-failure: cut` finds it failing.

use std::collections::HashMap;

use super::Service;
use super::check_targets::target;
use super::ops_health::HealthUpdate;
use crate::engine::layout::{backend_id, farm_tag};
use crate::model::{Health, OnFailure};
use crate::netlink::conntrack::ConntrackSocket;

/// A farm's id and its backends' member ids, as the engine allocated them (none: no such farm).
async fn ids(service: &Service, farm: &str) -> Option<(u16, HashMap<String, u16>)> {
    let farm = farm.to_string();
    let q = service.query(move |e| {
        Ok(e.allocation()
            .farms
            .get(&farm)
            .map(|f| (f.id, f.members.iter().map(|(b, m)| (b.clone(), *m)).collect())))
    });
    q.await.ok().flatten()
}

/// Established connections of each backend of `farm` now (one conntrack dump for the farm);
/// empty when conntrack cannot be read (the reason is logged).
pub async fn established(service: &Service, farm: &str) -> HashMap<String, u64> {
    let Some((id, members)) = ids(service, farm).await else {
        return HashMap::new();
    };
    let counted = tokio::task::spawn_blocking(move || {
        ConntrackSocket::new()?.count_established(farm_tag(id), 0xffff_0000)
    })
    .await;
    let by_mark = match counted {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            tracing::warn!("conntrack: cannot count connections: {e}");
            return HashMap::new();
        }
        Err(_) => return HashMap::new(),
    };
    members
        .into_iter()
        .map(|(b, m)| {
            let n = by_mark.get(&backend_id(id, m)).copied().unwrap_or(0);
            (b, n)
        })
        .collect()
}

/// The backends of `batch` turning failing whose check says cut.
pub fn to_cut(service: &Service, batch: &[HealthUpdate]) -> Vec<(String, String)> {
    let index = service.index();
    batch
        .iter()
        .filter(|u| u.health == Health::Failing)
        .filter(|u| {
            index
                .backend(&u.farm, &u.backend)
                .and_then(|(f, b)| target(f, b))
                .is_some_and(|t| t.check.on_failure == OnFailure::Cut)
        })
        .map(|u| (u.farm.clone(), u.backend.clone()))
        .collect()
}

/// Deletes the connections of `backends` (after their failing verdict is committed, so that
/// their next packets are scheduled to another backend and reset there).
pub async fn cut(service: &Service, backends: Vec<(String, String)>) {
    for (farm, backend) in backends {
        let Some((id, members)) = ids(service, &farm).await else {
            continue;
        };
        let Some(member) = members.get(&backend).copied() else {
            continue;
        };
        let mark = backend_id(id, member);
        let done = tokio::task::spawn_blocking(move || ConntrackSocket::new()?.delete_marked(mark)).await;
        match done {
            Ok(Ok(())) => tracing::info!(farm, backend, "health check: connections cut"),
            Ok(Err(e)) => tracing::error!(farm, backend, "health check: cannot cut connections: {e}"),
            Err(e) => tracing::error!(farm, backend, "health check: cannot cut connections: {e}"),
        }
    }
}
