//! What the service needs of an engine, whatever holds the ruleset: the kernel
//! ([`KernelEngine`](super::KernelEngine)) or memory ([`MemoryEngine`](super::MemoryEngine), for
//! tests that run without privileges, a kernel or a bus).
//!
//! Every method that changes something is atomic: on error nothing changed, neither the ruleset
//! nor what [`Engine::config`] and [`Engine::allocation`] return.

use crate::model::{Config, Touched};
use crate::netlink::KernelFeatures;

use super::alloc::SlotDelta;
use super::{Allocation, Outcome, Result, SessionInfo, Traffic};

/// An engine: the committed configuration and the means to change and read it. `Send` because
/// the service's writer thread owns it.
pub trait Engine: Send {
    /// What the datapath can do (kernel probes); `check_supported` judges configurations by it.
    fn features(&self) -> &KernelFeatures;

    /// The configuration last committed.
    fn config(&self) -> &Config;

    /// The ids and slots of the committed configuration, to be saved with it.
    fn allocation(&self) -> &Allocation;

    /// Makes the ruleset match `config` whatever it holds now (start-up, reload, repair), keeping
    /// the ids and slots of `alloc` (the allocation saved with that configuration). Validates
    /// first; sends nothing when the ruleset already matches.
    fn reconcile(&mut self, config: Config, alloc: Allocation) -> Result<Outcome>;

    /// Commits a new configuration as one transaction, changing only what differs from the
    /// committed one. Validates first (the model's rules and what this engine supports).
    fn apply(&mut self, config: Config) -> Result<Outcome>;

    /// [`Engine::apply`] of a configuration that differs from the committed one only where
    /// `touched` says (the service's edits know), so that the engine need not compare the lists.
    fn apply_touched(&mut self, config: Config, _touched: &Touched) -> Result<Outcome> {
        self.apply(config)
    }

    /// The slot edits the last successful [`Engine::apply`] made to `farm`'s allocation (empty
    /// when it moved none), so that the service records and undoes a change without copying
    /// the farm's slots. `None`: not known (the farm was not changed by the last apply, its id
    /// changed, or the engine reconciled since).
    fn slot_delta(&self, farm: &str) -> Option<&SlotDelta>;

    /// A policy's elements with the packets and bytes each has matched.
    fn policy_counters(&mut self, policy: &str) -> Result<Vec<(String, u64, u64)>>;

    /// (packets, bytes) of a farm, or of one of its backends. `NotFound` for an unknown name.
    fn traffic(&mut self, farm: &str, backend: Option<&str>) -> Result<Traffic>;

    /// A farm's traffic and each of its backends' (in the farm's order), read at once.
    fn farm_traffic(&mut self, farm: &str) -> Result<(Traffic, Vec<(String, Traffic)>)>;

    /// The farm's sessions: static ones (configuration, no expiry) and learnt ones. Empty for a
    /// farm without persistence.
    fn sessions(&mut self, farm: &str) -> Result<Vec<SessionInfo>>;

    /// Forgets one client's session: a static one leaves the configuration (so `config()` then
    /// differs and must be saved), a learnt one leaves the ruleset. `NotFound` when there is none.
    fn delete_session(&mut self, farm: &str, client: &str) -> Result<Outcome>;

    /// Forgets every learnt session of the farm; static sessions are configuration and stay.
    fn flush_sessions(&mut self, farm: &str) -> Result<Outcome>;

    /// Follows the host's interfaces, routes and neighbours for layer-2 farms; sends what differs.
    fn refresh_l2(&mut self) -> Result<Outcome>;

    /// The netlink port id the engine's changes carry in nf_tables monitor events, so the service
    /// can tell them from other processes' changes. `None`: the engine writes no kernel tables,
    /// and there is nothing to watch or repair.
    fn portid(&self) -> Option<u32>;

    /// How many transactions the engine has committed to the kernel (each moved its generation by
    /// one), so that the service can tell the generations it made from others'. 0 without a
    /// kernel.
    fn commits(&self) -> u64;

    /// Commits large transactions unheard by the service's monitor (see `netlink::Quiet`). A no-op
    /// without a kernel.
    fn quiet(&mut self, _quiet: crate::netlink::Quiet) {}
}
