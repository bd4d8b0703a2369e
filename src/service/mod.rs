//! The service: the single writer of the kernel tables and the state file. Front ends (D-Bus,
//! varlink) send it changes as functions of the current configuration; it runs them one at a time
//! on its own thread (so two clients editing at once both land, in order, none lost), applies the
//! result as one kernel transaction, saves it, and publishes what changed as an [`Event`].
//!
//! Between requests it keeps the kernel as committed: changes others make to its tables are
//! repaired, and layer-2 farms follow the host's links and neighbours.
//!
//! [`operation`] is the table of everything a client can ask (each with its polkit action and
//! details); [`Service::execute`] authorizes an operation once, through the [`authority`], and
//! runs it; [`ops`] says what each change means, built on `edit`'s helpers. The front ends only
//! translate their wire formats into operations and the outputs back.

pub mod authority;
pub mod check_targets;
pub mod checkpoint;
#[cfg(test)]
mod checkpoint_policy_tests;
#[cfg(test)]
mod checkpoint_tests;
mod checkpoint_writer;
pub mod checks;
#[cfg(test)]
mod checks_tests;
pub mod conntrack;
pub mod diff;
pub mod edit;
mod execute;
mod files;
#[cfg(test)]
mod files_tests;
#[cfg(test)]
mod guard_tests;
pub mod index;
#[cfg(test)]
mod journal_tests;
pub mod operation;
pub mod ops;
pub mod ops_health;
#[cfg(test)]
mod parity_tests;
mod ramps;
mod record;
#[cfg(test)]
mod tests;
pub mod timed;
#[cfg(test)]
mod timed_tests;
mod timed_writer;
pub mod trim;
mod watch;

pub use authority::{Authority, Caller};
pub use files::Reloaded;
pub use operation::{BackendUpdate, ElementEdit, ImportMode, Operation, Output, Patch};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, oneshot};

use crate::engine::{Engine, EngineError, KernelEngine};
use crate::model::{Config, Invalid};
use crate::netlink::{KernelFeatures, Monitor};
use crate::state::{self, Journal};

/// Why a request was refused. Nothing changed: not the kernel, not the state file, not the
/// published configuration.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    /// The caller may not do this (polkit said no, or could not be asked).
    #[error("{0}")]
    NotAuthorized(String),
    #[error("{field}: {reason}")]
    Unsupported { field: String, reason: String },
    /// The kernel refused the transaction, or could not be reached.
    #[error("{0}")]
    Kernel(String),
    /// The state file could not be written; the kernel was put back as it was.
    #[error("{0}")]
    State(String),
    #[error("the service has stopped")]
    Stopped,
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(i) => ServiceError::Invalid(i),
            EngineError::Unsupported { field, reason } => ServiceError::Unsupported { field, reason },
            EngineError::NotFound(m) => ServiceError::NotFound(m),
            EngineError::Alloc(a) => ServiceError::Invalid(Invalid::one("farms", a.to_string())),
            EngineError::Kernel(k) => ServiceError::Kernel(k.to_string()),
        }
    }
}

/// Where a change came from, for those who report it.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Why backends' states changed (`api`, …), as `Backend.StateChanged` tells it.
    pub reason: String,
}

impl Origin {
    pub fn api() -> Origin {
        Origin { reason: "api".into() }
    }
}

/// A committed change of the configuration, and what it changed (computed once, here).
#[derive(Debug)]
pub struct Event {
    pub generation: u64,
    pub old: Arc<Config>,
    pub new: Arc<Config>,
    pub origin: Origin,
    pub diff: diff::Diff,
}

type Edit = Box<dyn FnOnce(&index::ConfigIndex) -> Result<edit::Edited, ServiceError> + Send>;
type Query = Box<dyn FnOnce(&mut dyn Engine) + Send>;
type EngineOp = Box<dyn FnOnce(&mut dyn Engine) -> Result<(), EngineError> + Send>;

enum Job {
    Change {
        edit: Edit,
        origin: Origin,
        /// What the change does to the pending timed changes.
        timed: timed::TimedEdit,
        reply: oneshot::Sender<Result<u64, ServiceError>>,
    },
    /// Ends a pending timed change now: its value is restored.
    CancelTimed {
        target: timed::Target,
        reply: oneshot::Sender<Result<u64, ServiceError>>,
    },
    Query(Query),
    /// An engine operation that may change the configuration too (static sessions).
    Operate {
        op: EngineOp,
        origin: Origin,
        reply: oneshot::Sender<Result<u64, ServiceError>>,
    },
    Reload(oneshot::Sender<Result<Reloaded, ServiceError>>),
    Checkpoint(
        checkpoint_writer::Request,
        oneshot::Sender<Result<checkpoint_writer::Answer, ServiceError>>,
    ),
}

/// What front ends read without asking the writer.
struct Shared {
    config: RwLock<Arc<Config>>,
    /// The published configuration with its lookups by name (kept by the writer per commit).
    index: RwLock<Arc<index::ConfigIndex>>,
    generation: AtomicU64,
    features: KernelFeatures,
    events: broadcast::Sender<Arc<Event>>,
    /// The checkpoints as published by the writer, and a wake-up for those who show them.
    checkpoints: tokio::sync::watch::Sender<Arc<Vec<checkpoint::Info>>>,
    /// Which farm file owns each name (the writer replaces it at each load).
    origins: RwLock<Arc<crate::farms_dir::Origins>>,
    /// Held while a farm is written back to its file.
    writing: std::sync::Mutex<()>,
    /// The pending timed changes, as the writer last saved them.
    timed: RwLock<Arc<Vec<timed::Pending>>>,
}

/// A handle on the running service (cheap to clone).
#[derive(Clone)]
pub struct Service {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    /// Who decides whether a caller may run an operation.
    authority: Arc<dyn Authority>,
    /// What the health checks saw last (runtime facts, read by the fronts, never committed).
    observed: Arc<crate::health::Observed>,
}

/// Where the service keeps its state, and whether it watches the kernel and the host.
pub struct Options {
    pub state_dir: PathBuf,
    /// Repairs foreign changes to its tables and follows the host (off for one-shot tools, and
    /// for engines that write no kernel tables).
    pub watch: bool,
    /// The directory of farm files read at start and at each Reload; none: no files.
    pub farms_dir: Option<PathBuf>,
}

type Opener = Box<dyn FnOnce() -> Result<Box<dyn Engine>, String> + Send>;

impl Service {
    /// Opens the kernel engine, makes the kernel match the saved state, and starts the writer
    /// thread.
    pub fn start(options: Options) -> Result<Service, String> {
        Service::spawn(
            options,
            Box::new(|| {
                let engine = KernelEngine::open().map_err(|e| e.to_string())?;
                Ok(Box::new(engine) as Box<dyn Engine>)
            }),
            state::Limits::default(),
        )
    }

    /// Starts the service on `engine` (the in-memory one in tests): makes it match the saved
    /// state and starts the writer thread.
    pub fn start_with(engine: Box<dyn Engine>, options: Options) -> Result<Service, String> {
        Service::start_with_limits(engine, options, state::Limits::default())
    }

    /// Like `start_with`, compacting the journal at other limits (tests).
    pub fn start_with_limits(
        engine: Box<dyn Engine>,
        options: Options,
        limits: state::Limits,
    ) -> Result<Service, String> {
        Service::spawn(options, Box::new(move || Ok(engine)), limits)
    }

    fn spawn(options: Options, open: Opener, limits: state::Limits) -> Result<Service, String> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Arc<Shared>, String>>();
        std::thread::Builder::new()
            .name("nftlbd-writer".into())
            .spawn(move || {
                let mut writer = match Writer::open(options, open, limits) {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(writer.shared.clone()));
                writer.serve(rx);
            })
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        let shared = ready_rx
            .recv()
            .map_err(|_| "the writer thread stopped while starting".to_string())??;
        Ok(Service {
            jobs,
            shared,
            authority: Arc::new(authority::Polkit::default()),
            observed: Arc::default(),
        })
    }

    /// The same service, with another authority deciding who may do what (tests).
    pub fn with_authority(mut self, authority: Arc<dyn Authority>) -> Service {
        self.authority = authority;
        self
    }

    /// Each checked backend's last health check.
    pub fn observed(&self) -> &Arc<crate::health::Observed> {
        &self.observed
    }

    /// The committed configuration.
    pub fn config(&self) -> Arc<Config> {
        match self.shared.config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The published configuration with lookups by name.
    pub fn index(&self) -> Arc<index::ConfigIndex> {
        match self.shared.index.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Bumps with every committed change of the configuration.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::SeqCst)
    }

    pub fn features(&self) -> &KernelFeatures {
        &self.shared.features
    }

    /// Committed changes, in order, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.shared.events.subscribe()
    }

    /// Runs `edit` on the configuration as committed when its turn comes, and commits the result
    /// (one kernel transaction, then the state file). Returns the new generation.
    pub async fn change(
        &self,
        origin: Origin,
        edit: impl FnOnce(&Config) -> Result<Config, ServiceError> + Send + 'static,
    ) -> Result<u64, ServiceError> {
        self.change_indexed(origin, move |ix| edit(&ix.config)).await
    }

    /// [`Service::change`] of an edit that finds farms and backends through the lookups by name
    /// of the configuration it edits (in O(log n), not by searching the lists).
    pub async fn change_indexed<R: Into<edit::Edited>>(
        &self,
        origin: Origin,
        edit: impl FnOnce(&index::ConfigIndex) -> Result<R, ServiceError> + Send + 'static,
    ) -> Result<u64, ServiceError> {
        self.change_timed(origin, timed::TimedEdit::default(), edit).await
    }

    /// [`Service::change_indexed`] that also starts timed changes of the keys it sets, or ends
    /// the pending ones of keys it sets explicitly (saved before the reply, with the commit).
    pub async fn change_timed<R: Into<edit::Edited>>(
        &self,
        origin: Origin,
        timed: timed::TimedEdit,
        edit: impl FnOnce(&index::ConfigIndex) -> Result<R, ServiceError> + Send + 'static,
    ) -> Result<u64, ServiceError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Change {
                edit: Box::new(move |ix| edit(ix).map(Into::into)),
                origin,
                timed,
                reply,
            })
            .map_err(|_| ServiceError::Stopped)?;
        rx.await.map_err(|_| ServiceError::Stopped)?
    }

    /// Runs `f` on the engine in the writer's turn (reads of runtime state: sessions, counters).
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Engine) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Query(Box::new(move |e| {
                let _ = reply.send(f(e).map_err(ServiceError::from));
            })))
            .map_err(|_| ServiceError::Stopped)?;
        rx.await.map_err(|_| ServiceError::Stopped)?
    }

    /// Runs an engine operation in the writer's turn (deleting a session, say); when it changed
    /// the configuration, that is saved and published like any change.
    pub async fn operate(
        &self,
        origin: Origin,
        op: impl FnOnce(&mut dyn Engine) -> Result<(), EngineError> + Send + 'static,
    ) -> Result<u64, ServiceError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Operate {
                op: Box::new(op),
                origin,
                reply,
            })
            .map_err(|_| ServiceError::Stopped)?;
        rx.await.map_err(|_| ServiceError::Stopped)?
    }

    /// Ends a pending timed change now, restoring its value (one commit, reason `timed`).
    pub async fn cancel_timed(&self, target: timed::Target) -> Result<u64, ServiceError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::CancelTimed { target, reply })
            .map_err(|_| ServiceError::Stopped)?;
        rx.await.map_err(|_| ServiceError::Stopped)?
    }

    /// The pending timed changes, by farm, backend and key.
    pub fn timed_changes(&self) -> Arc<Vec<timed::Pending>> {
        match self.shared.timed.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the state file and the farm files and makes the kernel match them.
    pub async fn reload(&self) -> Result<u64, ServiceError> {
        Ok(self.reload_report().await?.generation)
    }

    /// [`Service::reload`], saying which farm files were refused.
    pub async fn reload_report(&self) -> Result<Reloaded, ServiceError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Reload(reply))
            .map_err(|_| ServiceError::Stopped)?;
        rx.await.map_err(|_| ServiceError::Stopped)?
    }
}

/// The writer: owns the engine and the state directory (and its lock).
struct Writer {
    engine: Box<dyn Engine>,
    options: Options,
    shared: Arc<Shared>,
    _lock: state::StateLock,
    journal: Journal,
    /// Farms whose allocation may differ from the journal's since a commit was undone (an undo
    /// need not give back the same ids and slots): the next record writes them whole.
    dirty: std::collections::BTreeSet<String>,
    monitor: Option<Monitor>,
    host: Option<crate::netlink::rtnl::RouteSocket>,
    checkpoints: checkpoint::Saved,
    /// The pending timed changes: the writer's one deadline queue.
    timers: timed::Timers,
    /// Timers taken out for a restore: saved with its commit, before it is published.
    timers_unsaved: bool,
}

impl Writer {
    fn open(options: Options, open: Opener, limits: state::Limits) -> Result<Writer, String> {
        let dir = &options.state_dir;
        let lock = state::lock(dir).map_err(|e| e.to_string())?;
        let mut engine = open()?;
        // Read everything before touching the kernel: damage refuses the start, changing nothing.
        let recovery = state::recover(dir).map_err(|e| e.to_string())?;
        if let Some(t) = &recovery.torn {
            tracing::warn!("{t}");
        }
        if recovery.replayed > 0 {
            tracing::info!("replayed {} journal record(s)", recovery.replayed);
        }
        let mut journal = Journal::open(dir, &recovery, limits);
        let snapshot = dir.join(state::STATE_FILE).exists();
        let (saved, alloc) = recovery
            .state
            .map(|s| (s.config, s.allocation))
            .unwrap_or_default();
        // The farm files go over the saved configuration in the same first transaction.
        let (config, origins) = match &options.farms_dir {
            Some(farms) => {
                let owned = crate::farms_dir::Origins::load(dir).map_err(|e| e.to_string())?;
                match files::load(farms, &saved, &owned, engine.features()) {
                    Ok(l) => (l.config, l.origins),
                    Err(e) => {
                        tracing::error!("farm files not read: {e}");
                        (saved.clone(), owned)
                    }
                }
            }
            None => (saved.clone(), Default::default()),
        };
        let o = engine
            .reconcile(config, alloc.clone())
            .map_err(|e| e.to_string())?;
        match o.generation {
            Some(g) => tracing::info!("reconciled: {} message(s), generation {g}", o.messages),
            None => tracing::info!("the kernel matches the saved state"),
        }
        // A fresh snapshot when the journal has records (starts stay fast), when there is none,
        // or when the engine completed the allocation it was given.
        if !journal.is_empty() || !snapshot || *engine.config() != saved || *engine.allocation() != alloc {
            journal
                .compact(engine.config(), engine.allocation())
                .map_err(|e| e.to_string())?;
        }
        if options.farms_dir.is_some() {
            origins.save(dir).map_err(|e| e.to_string())?;
        }
        let (monitor, host) = if options.watch && engine.portid().is_some() {
            let monitor = Monitor::new().map_err(|e| e.to_string())?;
            // Our own small transactions are heard and skipped by port id; large ones are kept
            // out of the feed, a foreign commit made meanwhile still flagged.
            engine.quiet(monitor.quiet().map_err(|e| e.to_string())?);
            (
                Some(monitor),
                // Layer-2 farms follow the host: links, addresses, routes and neighbours.
                Some(crate::netlink::rtnl::RouteSocket::subscribe().map_err(|e| e.to_string())?),
            )
        } else {
            (None, None)
        };
        let checkpoints = checkpoint::load(dir).map_err(|e| e.to_string())?;
        let timers = timed::Timers::load(dir).map_err(|e| e.to_string())?;
        let (events, _) = broadcast::channel(1024);
        let config = Arc::new(engine.config().clone());
        let shared = Arc::new(Shared {
            config: RwLock::new(config.clone()),
            index: RwLock::new(Arc::new(index::ConfigIndex::build(config))),
            generation: AtomicU64::new(1),
            features: engine.features().clone(),
            events,
            checkpoints: tokio::sync::watch::Sender::new(Arc::new(
                checkpoints.checkpoints.iter().map(|c| c.info()).collect(),
            )),
            origins: RwLock::new(Arc::new(origins)),
            writing: Default::default(),
            timed: RwLock::default(),
        });
        let mut writer = Writer {
            engine,
            options,
            shared,
            _lock: lock,
            journal,
            dirty: Default::default(),
            monitor,
            host,
            checkpoints,
            timers,
            timers_unsaved: false,
        };
        // Those whose key was changed meanwhile (by hand in the files) are dropped; those due
        // are restored by the first turn of the loop.
        writer.follow_timers_all();
        Ok(writer)
    }

    fn serve(&mut self, jobs: mpsc::Receiver<Job>) {
        let mut watched = std::time::Instant::now();
        // A large commit frees what it rendered, diffed and parsed; the allocator gives it back
        // once the queue is empty (after the reply, and once for a burst of changes). A small
        // change frees little, and a trim walks the whole heap (9% of the CPU of a backend
        // change at 60,000 backends): those are left to glibc's own trimming. The start-up
        // reconciliation counts as a large one.
        let mut trim = true;
        loop {
            self.fire_due_timers();
            let wait = if trim {
                Duration::ZERO
            } else {
                self.until_next_timer(Duration::from_millis(100))
            };
            let mut settled = false;
            let mut large = false;
            match jobs.recv_timeout(wait) {
                Ok(Job::Change {
                    edit,
                    origin,
                    timed,
                    reply,
                }) => {
                    let started = std::time::Instant::now();
                    let done = if timed.is_empty() {
                        self.change(edit, origin)
                    } else {
                        self.change_with_timers(edit, origin, timed)
                    };
                    (large, settled) = settle(started);
                    let _ = reply.send(done);
                }
                Ok(Job::CancelTimed { target, reply }) => {
                    let _ = reply.send(self.cancel_timer(&target));
                }
                Ok(Job::Query(q)) => {
                    q(self.engine.as_mut());
                    // Reads change nothing: between them, look at the kernel and the host at
                    // most every 100 ms (a client may read thousands of counters in a row).
                    if watched.elapsed() < Duration::from_millis(100) {
                        continue;
                    }
                }
                Ok(Job::Operate { op, origin, reply }) => {
                    let _ = reply.send(self.operate(op, origin));
                }
                Ok(Job::Reload(reply)) => {
                    let started = std::time::Instant::now();
                    let done = self.reload();
                    (large, settled) = settle(started);
                    let _ = reply.send(done);
                }
                Ok(Job::Checkpoint(request, reply)) => {
                    let _ = reply.send(self.checkpoint(request));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if trim {
                        trim::release_free_memory();
                        trim = false;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // A clean stop leaves the journal compacted, not a snapshot half written.
                    if let Some(Err(e)) = self.journal.finish_compaction(true) {
                        tracing::warn!("cannot compact the journal: {e}");
                    }
                    return;
                }
            }
            trim = (trim || large) && !settled;
            self.expire_checkpoints();
            self.finish_compaction();
            self.watch();
            watched = std::time::Instant::now();
        }
    }

    fn published(&self) -> Arc<Config> {
        match self.shared.config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn origins(&self) -> Arc<crate::farms_dir::Origins> {
        match self.shared.origins.read() {
            Ok(o) => o.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn published_index(&self) -> Arc<index::ConfigIndex> {
        match self.shared.index.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Commits a new configuration and publishes it (or changes nothing and says why). Where
    /// the edit says what it touched, only that is compared and applied.
    fn commit(&mut self, edited: edit::Edited, origin: Origin) -> Result<u64, ServiceError> {
        let edit::Edited { config: new, touched } = edited;
        let old = self.published();
        debug_assert!(
            touched.agrees(&old, &new),
            "{touched:?} says less than the edit changed"
        );
        if touched.unchanged(&old, &new) {
            return Ok(self.shared.generation.load(Ordering::SeqCst));
        }
        // Once, for the journal's record and for the event.
        let ix = self.published_index();
        let diff = diff::Diff::between_touched(&old, &new, &origin.reason, ix.names(), &touched);
        let before = record::AllocBefore::take(self.engine.allocation(), &diff);
        self.engine.apply_touched(new.clone(), &touched)?;
        self.save_or_undo(&old, &new, &diff, &before)?;
        Ok(self.publish(old, new, origin, diff))
    }

    /// Appends the commit's record to the journal (on disk before the caller hears of it), and
    /// compacts when the journal is long. When the record cannot be saved, the kernel is put
    /// back, so kernel, files and published configuration stay as they were.
    fn save_or_undo(
        &mut self,
        old: &Config,
        new: &Config,
        diff: &diff::Diff,
        before: &record::AllocBefore,
    ) -> Result<(), ServiceError> {
        let change = record::build(old, new, diff, before, self.engine.as_ref(), &self.dirty);
        if let Err(e) = self.journal.append(&change) {
            self.undo(old, diff, before);
            return Err(ServiceError::State(e.to_string()));
        }
        self.dirty.clear();
        if self.journal.needs_compaction() {
            // Written by another thread: the configuration is a persistent value (an O(1)
            // copy), the allocation is copied.
            let (config, alloc) = (self.engine.config().clone(), self.engine.allocation().clone());
            self.journal.compact_in_background(config, alloc);
        }
        Ok(())
    }

    /// Drops the records a background snapshot took in, once it is written.
    fn finish_compaction(&mut self) {
        match self.journal.finish_compaction(false) {
            Some(Ok(())) => {
                tracing::info!("journal compacted into {}", state::STATE_FILE);
                // The snapshot's thread wrote the whole configuration as text: give it back.
                trim::release_free_memory();
            }
            // The records stay in the journal; compaction is tried again at its next limit.
            Some(Err(e)) => tracing::warn!("cannot compact the journal: {e}"),
            None => {}
        }
    }

    /// Puts the kernel and the engine back as they were before a commit that could not be saved:
    /// the configuration and, when known, the very ids and slots (applying the old configuration
    /// alone would hand a backend put back other slots than the files say).
    fn undo(&mut self, old: &Config, diff: &diff::Diff, before: &record::AllocBefore) {
        let undone = match before.restore(self.engine.as_ref(), diff) {
            Some(alloc) => self.engine.reconcile(old.clone(), alloc).map(|_| true),
            None => self.engine.apply(old.clone()).map(|_| false),
        };
        match undone {
            Ok(true) => {}
            Ok(false) => self.dirty.extend(diff.farms.iter().map(|f| f.name.clone())),
            Err(e) => {
                tracing::error!("cannot undo after a failed save: {e}");
                self.dirty.extend(diff.farms.iter().map(|f| f.name.clone()));
            }
        }
    }

    fn publish(&mut self, old: Arc<Config>, new: Config, origin: Origin, diff: diff::Diff) -> u64 {
        let new = Arc::new(new);
        // The lookups follow the commit from its diff; they share all but what changed with
        // the old ones, which go with the old configuration.
        let mut names = self.published_index().names().clone();
        names.follow(&old, &new, &diff);
        let ix = Arc::new(index::ConfigIndex::with(new.clone(), names));
        self.follow_timers(&diff, &ix);
        match self.shared.config.write() {
            Ok(mut c) => *c = new.clone(),
            Err(p) => *p.into_inner() = new.clone(),
        }
        match self.shared.index.write() {
            Ok(mut c) => *c = ix,
            Err(p) => *p.into_inner() = ix,
        }
        let generation = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        log_changes(&diff, &new, generation);
        // No subscriber is fine: nobody is listening yet.
        let _ = self.shared.events.send(Arc::new(Event {
            generation,
            old,
            new,
            origin,
            diff,
        }));
        generation
    }

    fn change(&mut self, edit: Edit, origin: Origin) -> Result<u64, ServiceError> {
        let current = self.published_index();
        let new = edit(&current)?;
        self.commit(new, origin)
    }

    fn operate(&mut self, op: EngineOp, origin: Origin) -> Result<u64, ServiceError> {
        let old = self.published();
        // What the operation will touch is not known in advance: its farms' allocations are
        // written whole (an operation changes a farm's own keys, its static sessions).
        let before = record::AllocBefore::unknown(self.engine.allocation());
        op(self.engine.as_mut())?;
        if *self.engine.config() == *old {
            return Ok(self.shared.generation.load(Ordering::SeqCst));
        }
        let new = self.engine.config().clone();
        let ix = self.published_index();
        let diff = diff::Diff::between_known(&old, &new, &origin.reason, Some(ix.names()));
        self.save_or_undo(&old, &new, &diff, &before)?;
        Ok(self.publish(old, new, origin, diff))
    }

    fn reload(&mut self) -> Result<Reloaded, ServiceError> {
        // A file edited by hand that does not parse or validate is the caller's invalid input:
        // say where, and change nothing.
        let saved = state::load(&self.options.state_dir).map_err(|e| match e {
            state::StateError::Invalid { path, source } => ServiceError::Invalid(Invalid(
                source
                    .0
                    .into_iter()
                    .map(|mut f| {
                        f.field = format!("{}: {}", path.display(), f.field);
                        f
                    })
                    .collect(),
            )),
            state::StateError::Format { path, reason } => {
                ServiceError::Invalid(Invalid::one(path.display().to_string(), reason))
            }
            other => ServiceError::State(other.to_string()),
        })?;
        let (config, alloc) = saved.map(|s| (s.config, s.allocation)).unwrap_or_default();
        let owned = self.origins();
        let (config, origins, refused) = match &self.options.farms_dir {
            Some(dir) => {
                let l = files::load(dir, &config, &owned, self.engine.features())?;
                (l.config, l.origins, l.refused)
            }
            None => (config, (*owned).clone(), Vec::new()),
        };
        let old = self.published();
        self.engine.reconcile(config.clone(), alloc)?;
        if origins != *owned {
            // Before the reply: a farm whose file was removed is known as that file's until then.
            if let Err(e) = origins.save(&self.options.state_dir) {
                tracing::error!("cannot save the farms' origins: {e}");
            }
            match self.shared.origins.write() {
                Ok(mut o) => *o = Arc::new(origins),
                Err(p) => *p.into_inner() = Arc::new(origins),
            }
        }
        // The files now say what the engine has: one snapshot, so that later records follow
        // it (the snapshot may have been edited by hand under the journal).
        match self
            .journal
            .compact(self.engine.config(), self.engine.allocation())
        {
            Ok(()) => self.dirty.clear(),
            Err(e) => tracing::warn!("cannot compact the journal after reloading: {e}"),
        }
        let generation = if config == *old {
            self.shared.generation.load(Ordering::SeqCst)
        } else {
            let diff = diff::Diff::between(&old, &config, "api");
            self.publish(old, config, Origin::api(), diff)
        };
        Ok(Reloaded { generation, refused })
    }
}

/// Jobs that take at least this long freed enough to be worth a trim once the queue is empty.
const TRIM_AFTER: Duration = Duration::from_millis(20);

/// After a long job (a large farm loaded or replaced), gives freed memory back before the reply:
/// the trim costs a few milliseconds against the job's second or more, and the caller then sees
/// the daemon at its resting size. Shorter jobs of some size leave it to the idle loop, small
/// ones to the allocator. (whether it was large enough to trim, whether it trimmed)
fn settle(started: std::time::Instant) -> (bool, bool) {
    let took = started.elapsed();
    let long = took >= Duration::from_millis(500);
    if long {
        trim::release_free_memory();
    }
    (took >= TRIM_AFTER, long)
}

/// A value as its canonical JSON word (`"up"`).
fn word<T: serde::Serialize>(x: &T) -> String {
    match serde_json::to_value(x) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => String::new(),
    }
}

/// What a commit changed, for the journal (FARM=, BACKEND=, OLD=, NEW=, REASON=).
fn log_changes(diff: &diff::Diff, new: &Config, generation: u64) {
    use diff::What;
    // By name, once: an import may add thousands of farms.
    let sizes: std::collections::HashMap<&str, usize> = if diff.farms.iter().any(|f| f.what == What::Added) {
        new.farms
            .iter()
            .map(|f| (f.name.as_str(), f.backends.len()))
            .collect()
    } else {
        Default::default()
    };
    for f in &diff.farms {
        match f.what {
            What::Added => {
                let backends = sizes.get(f.name.as_str()).copied().unwrap_or(0);
                tracing::info!(farm = %f.name, generation, backends, "farm created")
            }
            What::Removed => tracing::info!(farm = %f.name, generation, "farm deleted"),
            What::Changed => tracing::info!(farm = %f.name, generation, "farm changed"),
        }
    }
    for (farm, backend, t) in diff.transitions() {
        tracing::info!(
            farm,
            backend,
            old = word(&t.old),
            new = word(&t.new),
            reason = t.reason,
            "backend state changed"
        );
    }
}
