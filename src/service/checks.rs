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

use super::ops_health::{HealthUpdate, RampStep, set_healths, step_ramps};
use super::ramps::Ramps;
use super::{Origin, Service};
use super::{check_targets, conntrack};
use crate::health::{Checker, DEFAULT_IN_FLIGHT, Transition};
use crate::model::{Config, Health, Ramp, Seconds};

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
    let mut ramps = resumed(&service.config());
    let mut stale: Vec<HealthUpdate> = Vec::new();
    loop {
        let next_step = ramps.next_due();
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    let m = check_targets::moves(&event.old, &event.new, &event.diff);
                    for name in &m.stale {
                        ramps.stop(name);
                    }
                    stale.extend(m.stale.into_iter().map(|(farm, backend)| HealthUpdate {
                        farm,
                        backend,
                        ..HealthUpdate::default()
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
                follow_ramps(&mut ramps, &batch);
                let cut = conntrack::to_cut(&service, &batch);
                commit(&service, batch).await;
                conntrack::cut(&service, cut).await;
            }
            _ = sleep_until(next_step.unwrap_or_else(Instant::now)), if next_step.is_some() => {
                let steps = ramps.tick(Instant::now());
                commit_steps(&service, steps).await;
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
    let ramp = recovery_ramp(&t);
    HealthUpdate {
        farm: t.farm,
        backend: t.backend,
        health: t.health,
        reason: t.reason,
        advice: t.advice,
        ramp,
    }
}

/// The slow start a verdict begins: a recovery under a check with `slow-start`.
fn recovery_ramp(t: &Transition) -> Option<Ramp> {
    if t.recovered && t.health == Health::Healthy {
        Ramp::of(t.slow_start)
    } else {
        None
    }
}

/// Starts the ramps a batch of verdicts begins and stops those of backends no longer healthy.
fn follow_ramps(ramps: &mut Ramps, batch: &[HealthUpdate]) {
    let now = Instant::now();
    for u in batch {
        let name = (u.farm.clone(), u.backend.clone());
        match (u.health, u.ramp) {
            (Health::Healthy, Some(r)) => ramps.start(name, r, now),
            (Health::Healthy, None) => {}
            _ => ramps.stop(&name),
        }
    }
}

/// The ramps the configuration holds (a restart during a slow start): each goes on from its
/// share, over its check's `slow-start` (a check that no longer has one ends it in a second).
pub(super) fn resumed(config: &Config) -> Ramps {
    let now = Instant::now();
    let mut ramps = Ramps::default();
    for f in &config.farms {
        for b in f.backends.iter().filter(|b| b.health_ramp.is_some()) {
            let (Some(share), Health::Healthy) = (b.health_ramp, b.health) else {
                continue;
            };
            let slow_start = check_targets::target(f, b).map_or(Seconds::ZERO, |t| t.check.slow_start);
            let ramp = Ramp::of(slow_start).or_else(|| Ramp::of(Seconds::from_millis(1)));
            if let Some(r) = ramp {
                ramps.resume((f.name.clone(), b.name.clone()), r, share, now);
            }
        }
    }
    ramps
}

async fn commit_steps(service: &Service, steps: Vec<RampStep>) {
    if steps.is_empty() {
        return;
    }
    let n = steps.len();
    let origin = Origin {
        reason: ORIGIN.into(),
    };
    if let Err(e) = service.change_indexed(origin, step_ramps(steps)).await {
        tracing::error!(steps = n, "slow start: cannot commit: {e}");
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
