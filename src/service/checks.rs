//! The daemon's health checks: a [`Checker`] on the runtime, its targets kept in step with every
//! committed change, and its verdicts committed through the writer. Verdicts arriving within
//! [`BATCH`] of each other are one change (a switch failing takes many backends at once: one
//! transaction, not one per backend). The writer is only ever given finished verdicts, so a hung
//! check cannot hold it; a busy writer holds the checker's reports, not the checks.

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::ops_health::{HealthUpdate, set_healths};
use super::{Origin, Service};
use super::{check_targets, conntrack};
use crate::health::{Checker, DEFAULT_IN_FLIGHT, Transition};
use crate::model::Health;

/// How long the first verdict of a batch waits for others.
pub const BATCH: Duration = Duration::from_millis(20);

/// What the checker's changes are said to come from (`Backend.StateChanged` then carries
/// "health-check: REASON").
pub const ORIGIN: &str = "health-check";

/// Reports the checker may queue while a commit is under way.
const QUEUE: usize = 1024;

/// Runs the checks of `service`'s configuration until the service stops.
pub fn spawn(service: Service) -> JoinHandle<()> {
    spawn_batching(service, BATCH)
}

/// [`spawn`] with another batching window (tests that need two verdicts in one commit on a
/// loaded machine).
pub fn spawn_batching(service: Service, window: Duration) -> JoinHandle<()> {
    tokio::spawn(run(service, window))
}

async fn run(service: Service, window: Duration) {
    // Subscribed before the targets are read: a change committed in between is seen twice at
    // worst, and following a change twice leaves the targets as once.
    let mut events = service.subscribe();
    let (tx, mut verdicts) = mpsc::channel(QUEUE);
    let checker = Checker::observing(tx, DEFAULT_IN_FLIGHT, service.observed().clone());
    if checker
        .set_targets(check_targets::all(&service.config()))
        .is_err()
    {
        return;
    }
    let mut stale: Vec<HealthUpdate> = Vec::new();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    let m = check_targets::moves(&event.old, &event.new, &event.diff);
                    stale.extend(m.stale.into_iter().map(|(farm, backend)| HealthUpdate {
                        farm,
                        backend,
                        health: Health::Unknown,
                        reason: String::new(),
                    }));
                    if checker.update(m.added, m.removed).is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "health checks: changes missed; targets read again");
                    if checker.set_targets(check_targets::all(&service.config())).is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            Some(first) = verdicts.recv() => {
                let mut batch = std::mem::take(&mut stale);
                batch.extend(gather(first, &mut verdicts, window).await);
                let cut = conntrack::to_cut(&service, &batch);
                commit(&service, batch).await;
                conntrack::cut(&service, cut).await;
            }
        }
        if !stale.is_empty() {
            commit(&service, std::mem::take(&mut stale)).await;
        }
    }
}

/// `first` and the verdicts that follow it within `window`, each logged.
async fn gather(
    first: Transition,
    verdicts: &mut mpsc::Receiver<Transition>,
    window: Duration,
) -> Vec<HealthUpdate> {
    let deadline = Instant::now() + window;
    let mut batch = vec![verdict(first)];
    loop {
        tokio::select! {
            next = verdicts.recv() => match next {
                Some(t) => batch.push(verdict(t)),
                None => return batch,
            },
            _ = sleep_until(deadline) => return batch,
        }
    }
}

fn verdict(t: Transition) -> HealthUpdate {
    tracing::info!(
        farm = t.farm,
        backend = t.backend,
        check = t.check.as_str(),
        health = t.health.as_str(),
        reason = t.reason,
        "backend health changed"
    );
    HealthUpdate {
        farm: t.farm,
        backend: t.backend,
        health: t.health,
        reason: t.reason,
    }
}

async fn commit(service: &Service, batch: Vec<HealthUpdate>) {
    let n = batch.len();
    let origin = Origin {
        reason: ORIGIN.into(),
    };
    if let Err(e) = service.change_indexed(origin, set_healths(batch)).await {
        tracing::error!(verdicts = n, "health checks: cannot commit: {e}");
    }
}
