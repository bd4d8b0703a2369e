//! The checker: given the targets (farm, backend, address, port, effective check), it runs the
//! checks and reports each target's turns of health on a channel. Independent of the service,
//! which gives it the targets and turns the reports into transactions.
//!
//! One scheduler task holds every probe in a timer heap and sleeps until the earliest is due: ten
//! thousand checks cost one task and one timer, not ten thousand sleeping tasks, and the order
//! of runs is one data structure to reason about. Each run is its own short task in a `JoinSet`,
//! bounded by the check's timeout, so a hung backend (or command) delays nothing else, and at
//! most `limit` runs are in flight (sockets and processes stay bounded). Identical checks of the
//! same address and port are one probe, whatever the number of farms and backends using it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Duration, Instant, sleep_until};

use super::agent::Advice;
use super::counter::Counter;
use super::observed::{LastCheck, Observed};
use super::probe::{self, Outcome};
use super::random;
use crate::model::{CheckType, Health, HealthCheck, Seconds};

/// Runs in flight at once by default: far below the usual file limit, far above what checks
/// answering in milliseconds need.
pub const DEFAULT_IN_FLIGHT: usize = 512;

/// A backend to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub farm: String,
    pub backend: String,
    pub addr: IpAddr,
    /// The port probed (see `HealthCheck::probe_port`).
    pub port: u16,
    /// The backend's effective check (`model::effective`).
    pub check: HealthCheck,
}

/// A target's health turned (or, for an agent check, what the agent asks for changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub farm: String,
    pub backend: String,
    /// The type of the check that decided (what the journal names).
    pub check: CheckType,
    pub health: Health,
    /// "http 503, 3 failures", "connection refused".
    pub reason: String,
    /// What the agent asks for (agent checks only).
    pub advice: Option<Advice>,
    /// The probe turned from failing to healthy (not its first verdict, not a target joining a
    /// probe that was healthy already): what starts a slow start.
    pub recovered: bool,
    /// The check's `slow-start`.
    pub slow_start: Seconds,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the health checker has stopped")]
pub struct Stopped;

/// A backend by farm and name.
pub type TargetName = (String, String);

enum Command {
    /// The whole set of targets.
    Set(Vec<Target>),
    /// Targets that joined or changed, and those that left.
    Update {
        added: Vec<Target>,
        removed: Vec<TargetName>,
    },
}

/// The handle of a running checker; dropping it stops every check.
pub struct Checker {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
    observed: Arc<Observed>,
}

impl Checker {
    /// Starts a checker on the current tokio runtime, reporting on `events`. It stops when
    /// `events` is closed or the handle dropped. A slow reader delays checks rather than
    /// buffer without bound.
    pub fn start(events: mpsc::Sender<Transition>) -> Checker {
        Checker::with_limit(events, DEFAULT_IN_FLIGHT)
    }

    pub fn with_limit(events: mpsc::Sender<Transition>, limit: usize) -> Checker {
        Checker::observing(events, limit, Arc::default())
    }

    /// A checker that records each target's last run in `observed` (shared with whoever reads
    /// it: the fronts, through the service).
    pub fn observing(events: mpsc::Sender<Transition>, limit: usize, observed: Arc<Observed>) -> Checker {
        let (commands, receiver) = mpsc::unbounded_channel();
        let scheduler = Scheduler {
            events,
            observed: observed.clone(),
            limit: limit.max(1),
            probes: HashMap::new(),
            by_key: HashMap::new(),
            by_target: HashMap::new(),
            next_id: 0,
            due: BinaryHeap::new(),
            waiting: VecDeque::new(),
            running: JoinSet::new(),
            tasks: HashMap::new(),
        };
        let task = tokio::spawn(scheduler.run(receiver));
        Checker {
            commands,
            task,
            observed,
        }
    }

    /// Each target's last run.
    pub fn observed(&self) -> &Arc<Observed> {
        &self.observed
    }

    /// Replaces the set of targets. Probes that stay keep their state and timing; a target
    /// joining a probe that already knows its health is told at once; a target whose check
    /// changed keeps its last health until the new check's first result.
    pub fn set_targets(&self, targets: Vec<Target>) -> Result<(), Stopped> {
        self.commands.send(Command::Set(targets)).map_err(|_| Stopped)
    }

    /// Changes some targets, at a cost of the targets named (not of all): `removed` leave first,
    /// then `added` join as `set_targets` would have them join (one already there with the same
    /// address, port and check is left as it is; one whose probe changed moves to the new one).
    pub fn update(&self, added: Vec<Target>, removed: Vec<TargetName>) -> Result<(), Stopped> {
        if added.is_empty() && removed.is_empty() {
            return Ok(());
        }
        self.commands
            .send(Command::Update { added, removed })
            .map_err(|_| Stopped)
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What makes two checks one probe: the same address, port and definition.
type ProbeKey = Arc<(IpAddr, u16, HealthCheck)>;

struct Probe {
    key: ProbeKey,
    targets: Vec<TargetName>,
    counter: Counter,
    advice: Option<Advice>,
    /// The reason of the last report, told to targets that join.
    reason: String,
}

/// One run's outcome, when it started and how long it took.
struct Run {
    outcome: Outcome,
    started: SystemTime,
    took: Duration,
}

struct Scheduler {
    events: mpsc::Sender<Transition>,
    observed: Arc<Observed>,
    limit: usize,
    probes: HashMap<u64, Probe>,
    by_key: HashMap<ProbeKey, u64>,
    /// The probe of each target.
    by_target: HashMap<TargetName, u64>,
    /// Ids are never reused, so an entry of a removed probe is simply skipped.
    next_id: u64,
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Due probes over the in-flight limit, started as runs end.
    waiting: VecDeque<u64>,
    running: JoinSet<Run>,
    tasks: HashMap<tokio::task::Id, u64>,
}

impl Scheduler {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let next = self.due.peek().map(|Reverse((at, _))| *at);
            // Far enough to never fire: the branch is disabled when nothing is due.
            let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let keep_going = tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Set(targets)) => self.set(targets).await,
                    Some(Command::Update { added, removed }) => self.update(added, removed).await,
                    None => false,
                },
                Some(done) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    let (task, run) = match done {
                        Ok((task, run)) => (task, run),
                        Err(e) => (e.id(), Run {
                            outcome: Outcome::fail(format!("check failed: {e}")),
                            started: SystemTime::now(),
                            took: Duration::ZERO,
                        }),
                    };
                    self.finished(task, run).await
                }
                _ = sleep_until(wake), if next.is_some() => {
                    self.start_due();
                    true
                }
            };
            if !keep_going {
                return;
            }
        }
    }

    /// Applies a new target set; false when the reader is gone.
    async fn set(&mut self, targets: Vec<Target>) -> bool {
        let wanted: HashSet<(&str, &str)> = targets
            .iter()
            .map(|t| (t.farm.as_str(), t.backend.as_str()))
            .collect();
        let gone: Vec<TargetName> = self
            .by_target
            .keys()
            .filter(|(f, b)| !wanted.contains(&(f.as_str(), b.as_str())))
            .cloned()
            .collect();
        self.update(targets, gone).await
    }

    /// Removes then adds targets; false when the reader is gone.
    async fn update(&mut self, added: Vec<Target>, removed: Vec<TargetName>) -> bool {
        for name in &removed {
            self.detach(name);
        }
        let now = Instant::now();
        let mut told = Vec::new();
        for t in added {
            let key: ProbeKey = Arc::new((t.addr, t.port, t.check));
            let name = (t.farm, t.backend);
            if let Some(id) = self.by_target.get(&name) {
                if self.probes.get(id).is_some_and(|p| p.key == key) {
                    continue;
                }
                self.detach(&name);
            }
            let id = match self.by_key.get(&key) {
                Some(id) => *id,
                None => self.add_probe(key, now),
            };
            let Some(probe) = self.probes.get_mut(&id) else {
                continue;
            };
            // A probe that knows its health tells a target joining it at once; a target whose
            // check changed keeps its last health until the new check's first result.
            if probe.counter.health() != Health::Unknown {
                told.push(Transition {
                    farm: name.0.clone(),
                    backend: name.1.clone(),
                    check: probe.key.2.kind,
                    health: probe.counter.health(),
                    reason: probe.reason.clone(),
                    advice: probe.advice,
                    recovered: false,
                    slow_start: probe.key.2.slow_start,
                });
            }
            probe.targets.push(name.clone());
            self.by_target.insert(name, id);
        }
        for t in told {
            if self.events.send(t).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Takes a target off its probe; a probe left without targets goes (its entries in the
    /// timer heap and the waiting queue are skipped when they come up).
    fn detach(&mut self, name: &TargetName) {
        let Some(id) = self.by_target.remove(name) else {
            return;
        };
        self.observed.forget(&name.0, &name.1);
        let Some(probe) = self.probes.get_mut(&id) else {
            return;
        };
        probe.targets.retain(|t| t != name);
        if probe.targets.is_empty()
            && let Some(probe) = self.probes.remove(&id)
        {
            self.by_key.remove(&probe.key);
        }
    }

    fn add_probe(&mut self, key: ProbeKey, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        // The first run at a random point within the jitter: a restart with thousands of
        // checks does not fire them in one burst.
        let first = now + Duration::from_millis(random::below(key.2.jitter().millis() + 1));
        self.due.push(Reverse((first, id)));
        self.by_key.insert(key.clone(), id);
        self.probes.insert(
            id,
            Probe {
                key,
                targets: Vec::new(),
                counter: Counter::default(),
                advice: None,
                reason: String::new(),
            },
        );
        id
    }

    fn start_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, id))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            if self.probes.contains_key(&id) {
                if self.running.len() < self.limit {
                    self.spawn(id);
                } else {
                    self.waiting.push_back(id);
                }
            }
        }
    }

    fn spawn(&mut self, id: u64) {
        let Some(probe) = self.probes.get(&id) else {
            return;
        };
        let key = probe.key.clone();
        let handle = self.running.spawn(async move {
            let (addr, port, check) = &*key;
            let started = SystemTime::now();
            let clock = Instant::now();
            let outcome =
                match tokio::time::timeout(check.timeout.duration(), probe::run(check, *addr, *port)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Outcome::fail(format!("timed out after {}", check.timeout)),
                };
            Run {
                outcome,
                started,
                took: clock.elapsed(),
            }
        });
        self.tasks.insert(handle.id(), id);
    }

    /// Counts a run's outcome, reports a turn, and schedules the probe's next run; false when
    /// the reader is gone.
    async fn finished(&mut self, task: tokio::task::Id, run: Run) -> bool {
        let id = self.tasks.remove(&task);
        while self.running.len() < self.limit {
            let Some(next) = self.waiting.pop_front() else {
                break;
            };
            self.spawn(next);
        }
        // A probe removed while its run was in flight: the result is nobody's.
        let Some(probe) = id.and_then(|id| self.probes.get_mut(&id).map(|p| (id, p))) else {
            return true;
        };
        let (id, probe) = probe;
        let Run {
            outcome,
            started,
            took,
        } = run;
        self.observed.record(
            probe.targets.iter().map(|(f, b)| (f.as_str(), b.as_str())),
            LastCheck::new(started, took, outcome.ok),
        );
        let check = &probe.key.2;
        let was = probe.counter.health();
        let first = was == Health::Unknown;
        let turned = probe.counter.record(outcome.ok, check.rise, check.fall);
        let advice = if outcome.ok { outcome.advice } else { None };
        let advice_changed = probe.counter.health() == Health::Healthy && advice != probe.advice;
        probe.advice = advice;
        let wait = probe.counter.wait(check).millis() + random::below(check.jitter().millis() + 1);
        self.due
            .push(Reverse((Instant::now() + Duration::from_millis(wait), id)));
        let reason = match turned {
            Some(health) => Counter::reason(health, &outcome.reason, check.rise, check.fall, first),
            None if advice_changed => outcome.reason,
            None => return true,
        };
        probe.reason = reason.clone();
        let reports: Vec<Transition> = probe
            .targets
            .iter()
            .map(|(farm, backend)| Transition {
                farm: farm.clone(),
                backend: backend.clone(),
                check: check.kind,
                health: probe.counter.health(),
                reason: reason.clone(),
                advice: probe.advice,
                recovered: was == Health::Failing && turned == Some(Health::Healthy),
                slow_start: check.slow_start,
            })
            .collect();
        for t in reports {
            if self.events.send(t).await.is_err() {
                return false;
            }
        }
        true
    }
}
