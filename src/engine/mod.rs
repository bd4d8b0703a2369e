//! The engine: desired configuration → nftables objects, diffed against what was committed, sent as
//! one transaction. It is the only code that writes our tables.
//!
//! - `layout`: names and mark encoding of the kernel objects (and why the layout scales).
//! - `alloc`: ids and scheduling slots that must survive restarts.
//! - `render`: configuration → objects (pure).
//! - `ruleset`: the desired state's shape and the diff that orders a transaction.
//! - `actual`: reading our tables back, for start-up reconciliation and repair.
//! - `api`: the [`Engine`] trait the service holds; [`KernelEngine`] (here) writes the kernel,
//!   `memory`'s [`MemoryEngine`] keeps the configuration in memory for tests.

mod actual;
pub mod alloc;
mod api;
mod backend_change;
mod counters;
mod family;
pub mod l2;
pub mod layout;
pub mod memory;
mod persist;
mod render;
pub mod ruleset;
mod sessions;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{self, Config, Farm, Invalid, List, Mode, Policy, Touched};
use crate::netlink::{self, Batch, Connection, KernelFeatures};

pub use alloc::Allocation;
pub use api::Engine;
pub use family::IpFamily;
pub use memory::{MemoryControl, MemoryEngine};
use ruleset::FamilyState;
pub use sessions::SessionInfo;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is invalid: each field and reason is listed.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// This kernel or this version of nftlbd cannot do what was asked.
    #[error("{field}: {reason}")]
    Unsupported { field: String, reason: String },
    /// The kernel refused the transaction (nothing was changed) or could not be reached.
    #[error("{0}")]
    Kernel(#[from] netlink::Error),
    #[error("{0}")]
    Alloc(#[from] alloc::AllocError),
    /// The named farm, backend or session does not exist.
    #[error("{0}")]
    NotFound(String),
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The ruleset generation after the commit; `None` when there was nothing to change.
    pub generation: Option<u32>,
    /// Number of netlink messages in the transaction.
    pub messages: usize,
    /// What each message did (`add rule ip nftlbd farm-web`, …).
    pub changes: Vec<String>,
}

/// Refuses what this version does not implement yet, or what the kernel cannot do, with the field
/// that asks for it. Nothing is partially applied: this runs before anything is rendered.
pub fn check_supported(config: &Config, features: &KernelFeatures) -> Result<()> {
    check_supported_farms(config, None, features)
}

/// [`check_supported`] for the farms in `only` (all when `None`) and the policies.
fn check_supported_farms(
    config: &Config,
    only: Option<&BTreeSet<String>>,
    features: &KernelFeatures,
) -> Result<()> {
    let unsupported = |field: String, reason: &str| EngineError::Unsupported {
        field,
        reason: reason.to_string(),
    };
    const LATER: &str = "is not implemented yet in this version of nftlbd";
    for f in config
        .farms
        .iter()
        .filter(|f| only.is_none_or(|o| o.contains(&f.name)))
    {
        let at = |k: &str| format!("farms[{}].{k}", f.name);
        if f.mode == Mode::Stlsdnat {
            if f.virtual_addresses.len() != 1 {
                return Err(unsupported(
                    at("virtual-addresses"),
                    "a stlsdnat farm takes one address (replies are rewritten to it)",
                ));
            }
            if let Some(b) = f.backends.iter().find(|b| b.port.is_some())
                && l2::stl_port_rewrite(f).is_none()
            {
                return Err(unsupported(
                    format!("farms[{}].backends[{}].port", f.name, b.name),
                    "a stlsdnat farm rewrites ports only with one virtual port and protocol tcp or udp",
                ));
            }
        }
        if matches!(f.mode, Mode::Dsr | Mode::Stlsdnat) {
            let nat_only = [
                ("new-rtlimit", f.new_rtlimit.is_some()),
                ("rst-rtlimit", f.rst_rtlimit.is_some()),
                (
                    "est-connlimit",
                    f.est_connlimit > 0 || f.backends.iter().any(|b| b.est_connlimit > 0),
                ),
                ("tcp-strict", f.tcp_strict),
                ("intra-connect", f.intra_connect),
                ("helper", f.helper != model::Helper::None),
                ("sessions", !f.sessions.is_empty()),
            ];
            if let Some((key, _)) = nat_only.iter().find(|(_, set)| *set) {
                return Err(unsupported(at(key), "not available in layer-2 modes yet"));
            }
        }
        if f.queue >= 0 && !features.queue {
            return Err(unsupported(
                at("queue"),
                "this kernel has no nf_tables queue support (NFT_QUEUE)",
            ));
        }
        if f.flow_offload && !features.flowtable {
            return Err(unsupported(
                at("flow-offload"),
                "this kernel has no flowtable support (NF_FLOW_TABLE)",
            ));
        }
        let later = [("queue", f.queue >= 0), ("flow-offload", f.flow_offload)];
        if let Some((key, _)) = later.iter().find(|(_, set)| *set) {
            return Err(unsupported(at(key), LATER));
        }
    }
    Ok(())
}

/// Names of the policies that differ between two configurations (added, removed or changed).
fn changed_policies(old: &Config, new: &Config) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in &new.policies {
        if old.policies.iter().find(|o| o.name == p.name) != Some(p) {
            out.insert(p.name.clone());
        }
    }
    for p in &old.policies {
        if !new.policies.iter().any(|n| n.name == p.name) {
            out.insert(p.name.clone());
        }
    }
    out
}

/// A configuration's farms by name.
type FarmsByName<'a> = HashMap<&'a str, &'a Farm>;

/// Above this many elements, a committed part's elements are freed on a thread of their own.
const FREE_ASIDE: usize = 10_000;

pub use counters::Traffic;

/// One farm's backend changes, allocated and not yet committed.
struct Allocated<'a> {
    farm: &'a Farm,
    /// Each changed backend, with the member id a removed one had.
    backends: Vec<(backend_change::Pair<'a>, Option<u16>)>,
    /// What undoes each step, in order.
    steps: Vec<(backend_change::Undo, alloc::SlotDelta)>,
    /// The steps' slot edits as one.
    delta: alloc::SlotDelta,
    /// The farm's priority tiers after the changes.
    tiers: model::PriorityTiers,
}

/// Undoes a farm's allocation steps, last first.
fn undo_steps(fa: &mut alloc::FarmAlloc, steps: Vec<(backend_change::Undo, alloc::SlotDelta)>) {
    for (undo, delta) in steps.into_iter().rev() {
        undo.restore(fa, &delta);
    }
}

/// The engine on the kernel: the single writer of our tables.
pub struct KernelEngine {
    conn: Connection,
    features: KernelFeatures,
    config: Config,
    alloc: Allocation,
    /// What was last committed, per family (`IpFamily::BOTH` order).
    committed: [Option<FamilyState>; 2],
    /// A transaction's outcome is unknown (the socket failed after sending it): the next change
    /// reads the kernel back first instead of trusting `committed`.
    unsure: bool,
    /// The services the committed configuration claims, to validate a change in O(change).
    index: model::ServiceIndex,
    /// Per family: backend `est-connlimit` value → how many backends use it.
    climits: [BTreeMap<u32, usize>; 2],
    /// The committed `netdev` table of layer-2 farms, and the backend MACs it was made with.
    l2: Option<FamilyState>,
    l2_macs: l2::BackendMacs,
    /// Farms whose committed parts lack their elements (a per-backend change did not list them):
    /// rendered again from the committed configuration when the farm changes whole.
    stale: std::collections::HashSet<String>,
    /// Each farm's priority tiers, kept per backend change (see `apply_backend`) so that one
    /// backend's change does not count the farm's backends.
    tiers: HashMap<String, model::PriorityTiers>,
    /// Interfaces, routes and neighbours of the engine's network namespace.
    host: l2::Host,
    /// The slot edits of the last apply, per farm it changed (see [`Engine::slot_delta`]).
    deltas: HashMap<String, alloc::SlotDelta>,
}

impl KernelEngine {
    /// Connects to nf_tables and probes the kernel. Nothing is written until `reconcile`.
    pub fn open() -> Result<KernelEngine> {
        let mut conn = Connection::new()?;
        let features = conn.probe()?;
        Ok(KernelEngine {
            conn,
            features,
            config: Config::default(),
            alloc: Allocation::default(),
            committed: [None, None],
            unsure: true,
            index: model::ServiceIndex::default(),
            climits: [BTreeMap::new(), BTreeMap::new()],
            l2: None,
            l2_macs: l2::BackendMacs::new(),
            stale: Default::default(),
            tiers: HashMap::new(),
            host: l2::Host::here(),
            deltas: HashMap::new(),
        })
    }

    /// Our netlink port id: the origin of our changes in monitor events.
    pub fn portid(&self) -> u32 {
        self.conn.portid()
    }

    pub fn features(&self) -> &KernelFeatures {
        &self.features
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn allocation(&self) -> &Allocation {
        &self.alloc
    }

    fn flags(&self) -> u32 {
        render::table_flags(&self.features)
    }

    /// Validates the whole configuration; the host's facts its layer-2 farms render with.
    fn validate(&self, config: &Config) -> Result<l2::HostFacts> {
        model::validate(config)?;
        check_supported(config, &self.features)?;
        self.host_facts(config)
    }

    /// What the host tells about the layer-2 farms, checked: the first farm field it cannot
    /// resolve is invalid.
    fn host_facts(&self, config: &Config) -> Result<l2::HostFacts> {
        let facts = self.host.discover(config);
        l2::check(config, &facts).map_err(|e| Invalid::one(e.field, e.reason))?;
        Ok(facts)
    }

    /// Makes the kernel match `config` whatever is in our tables now (start-up, reload, repair):
    /// reads the tables back and sends only the differences. With a state the kernel already
    /// has, nothing is sent. `alloc` is the allocation saved with that configuration.
    pub fn reconcile(&mut self, config: Config, mut alloc: Allocation) -> Result<Outcome> {
        let facts = self.validate(&config)?;
        alloc.update(&config)?;
        let mut batch = Batch::new();
        let mut desired: [Option<FamilyState>; 2] = [None, None];
        for (i, fam) in IpFamily::BOTH.into_iter().enumerate() {
            let want = render::render_family(fam, &config, &alloc, self.flags());
            let have = actual::read_family(&mut self.conn, fam.family())?;
            let want_flat = want.as_ref().map(actual::flatten);
            ruleset::diff(have.as_ref(), want_flat.as_ref(), true, &mut batch)?;
            desired[i] = want;
        }
        let (want_l2, want_macs) = l2::render(&config, &alloc, &facts);
        let have_l2 = actual::read_family(&mut self.conn, netlink::Family::Netdev)?;
        ruleset::diff(
            have_l2.as_ref(),
            want_l2.as_ref().map(actual::flatten).as_ref(),
            true,
            &mut batch,
        )?;
        let outcome = self.commit(batch)?;
        self.deltas.clear();
        self.config = config;
        self.alloc = alloc;
        self.committed = desired;
        self.l2 = want_l2;
        self.l2_macs = want_macs;
        self.stale.clear();
        self.unsure = false;
        self.index = model::ServiceIndex::of(&self.config);
        self.tiers = self
            .config
            .farms
            .iter()
            .map(|f| (f.name.clone(), model::PriorityTiers::of(f)))
            .collect();
        for (i, fam) in IpFamily::BOTH.into_iter().enumerate() {
            self.climits[i] = render::climit_users(fam, self.config.farms.iter());
        }
        Ok(outcome)
    }

    /// Applies a new configuration incrementally: only farms that differ from the committed
    /// configuration are rendered and compared. All or nothing.
    pub fn apply(&mut self, config: Config) -> Result<Outcome> {
        self.apply_touched(config, &Touched::Unknown)
    }

    /// [`apply`](Self::apply) of a configuration that differs from the committed one only where
    /// `touched` says: those backends are followed without comparing the farms' lists.
    pub fn apply_touched(&mut self, config: Config, touched: &Touched) -> Result<Outcome> {
        if self.unsure {
            // First change, or the last one's outcome is unknown: compare with the kernel itself.
            let alloc = self.alloc.clone();
            return self.reconcile(config, alloc);
        }
        // Out of `self` while the change is worked out, so its farms can be looked up by name
        // once and the engine still be changed; back in if the change is refused.
        let old = std::mem::take(&mut self.config);
        self.deltas.clear();
        let result = match self.apply_known(&old, &config, touched) {
            Some(result) => result,
            None => self.apply_against(&old, &config),
        };
        self.config = if result.is_ok() { config } else { old };
        result
    }

    /// [`apply`](Self::apply) of `config` over `old`, the committed configuration.
    fn apply_against(&mut self, old: &Config, config: &Config) -> Result<Outcome> {
        if let Some(outcome) = self.apply_in_place(old, config) {
            return outcome;
        }
        let old_by: HashMap<&str, &Farm> = old.farms.iter().map(|f| (f.name.as_str(), f)).collect();
        let new_by: HashMap<&str, &Farm> = config.farms.iter().map(|f| (f.name.as_str(), f)).collect();
        let mut changed = BTreeSet::new();
        for f in &config.farms {
            if old_by.get(f.name.as_str()) != Some(&f) {
                changed.insert(f.name.clone());
            }
        }
        for f in &old.farms {
            if !new_by.contains_key(f.name.as_str()) {
                changed.insert(f.name.clone());
            }
        }
        // A changed policy changes the farms that attach it (their rules name its type).
        let changed_policies = changed_policies(old, config);
        if !changed_policies.is_empty() {
            for f in &config.farms {
                if f.policies.iter().any(|p| changed_policies.contains(p)) {
                    changed.insert(f.name.clone());
                }
            }
        }
        if changed_policies.is_empty() {
            // Backends changed in farms whose own keys stayed: each followed alone.
            let per_backend: Option<Vec<_>> = changed
                .iter()
                .map(|name| {
                    let (o, n) = (old_by.get(name.as_str())?, new_by.get(name.as_str())?);
                    Some((*o, *n, backend_change::several(o, n)?))
                })
                .collect();
            if let Some(farms) = per_backend.filter(|f| !f.is_empty()) {
                return self.apply_backends(farms, &config.policies);
            }
        }
        model::validate_changes(config, &changed, &self.index)?;
        check_supported_farms(config, Some(&changed), &self.features)?;
        let facts = self.host_facts(config)?;
        // Only the changed farms' allocations change; keep theirs to undo a refused commit.
        let undo = self.alloc.snapshot(&changed);
        let by_name = (&old_by, &new_by);
        match self.apply_changed(
            config,
            &old.policies,
            by_name,
            &changed,
            &changed_policies,
            &facts,
        ) {
            Ok(outcome) => {
                for name in &changed {
                    if let (Some(before), Some(after)) = (undo.farm(name), self.alloc.farms.get(name))
                        && before.id == after.id
                    {
                        let delta = alloc::SlotDelta::between(before, after);
                        self.deltas.insert(name.clone(), delta);
                    }
                    if let Some(f) = old_by.get(name.as_str()) {
                        self.index.remove(f);
                        self.tiers.remove(name);
                    }
                    if let Some(f) = new_by.get(name.as_str()) {
                        self.index.insert(f);
                        self.tiers.insert(name.clone(), model::PriorityTiers::of(f));
                    }
                }
                Ok(outcome)
            }
            Err(e) => {
                self.alloc.restore(undo);
                Err(e)
            }
        }
    }

    /// Renders and diffs only the changed farms (plus the small shared skeleton), commits, and
    /// on success swaps the new parts into the committed state: O(change) apart from a scan of
    /// the farm list.
    fn apply_changed(
        &mut self,
        config: &Config,
        old_policies: &List<Policy>,
        (old_by_name, new_by_name): (&FarmsByName, &FarmsByName),
        changed: &BTreeSet<String>,
        changed_policies: &BTreeSet<String>,
        facts: &l2::HostFacts,
    ) -> Result<Outcome> {
        // Farms a per-backend change left without their elements: their committed parts again,
        // from the committed configuration and allocation (before it is updated).
        let stale_old: Vec<BTreeMap<String, ruleset::FarmPart>> = IpFamily::BOTH
            .into_iter()
            .map(|fam| {
                changed
                    .iter()
                    .filter(|n| self.stale.contains(*n))
                    .filter_map(|n| {
                        let f = old_by_name.get(n.as_str())?;
                        Some((n.clone(), render::render_farm(fam, f, &self.alloc, old_policies)?))
                    })
                    .collect()
            })
            .collect();
        self.alloc.update_farms(config, changed)?;
        let mut batch = Batch::new();
        let mut next = Vec::new();
        let mut climits = Vec::new();
        for (i, fam) in IpFamily::BOTH.into_iter().enumerate() {
            // Port-range dispatch of the addresses the changed farms take (or took) ranges on:
            // rebuilt from every farm on those addresses.
            let mut touched: BTreeSet<(u8, std::net::IpAddr)> = BTreeSet::new();
            for name in changed {
                for f in [old_by_name.get(name.as_str()), new_by_name.get(name.as_str())]
                    .into_iter()
                    .flatten()
                {
                    for (proto, vip, lo, hi) in render::dispatch_claims(fam, f) {
                        if lo != hi {
                            touched.insert((proto, vip));
                        }
                    }
                }
            }
            let mut new_ports = BTreeMap::new();
            for (proto, vip) in &touched {
                let names: BTreeSet<&str> = self
                    .index
                    .farms_on(*proto, vip)
                    .chain(changed.iter().map(String::as_str))
                    .collect();
                let claims: Vec<render::RangeClaim> = names
                    .iter()
                    .filter_map(|n| new_by_name.get(n))
                    .flat_map(|f| {
                        render::dispatch_claims(fam, f)
                            .into_iter()
                            .filter(|c| (c.0, c.1) == (*proto, *vip) && c.2 != c.3)
                            .map(move |c| (f.name.as_str(), c.2, c.3, f.intra_connect, f.tcp_strict))
                    })
                    .collect();
                let name = layout::ports_chain(*proto, vip);
                new_ports.insert(name, render::ports_part(fam, *proto, vip, &claims));
            }
            // Backend connection limits: a `climit-N` chain lives while some backend uses N.
            let count = |cfg: &HashMap<&str, &Farm>| {
                render::climit_users(fam, changed.iter().filter_map(|n| cfg.get(n.as_str()).copied()))
            };
            let (before, after) = (count(old_by_name), count(new_by_name));
            let mut users = self.climits[i].clone();
            for (n, k) in &before {
                if let Some(u) = users.get_mut(n) {
                    *u = u.saturating_sub(*k);
                }
            }
            for (n, k) in &after {
                *users.entry(*n).or_default() += k;
            }
            for n in before.keys().chain(after.keys()) {
                let live = users.get(n).is_some_and(|u| *u > 0);
                new_ports.insert(
                    layout::climit_chain(*n),
                    live.then(|| render::climit_part(fam, *n)),
                );
            }
            users.retain(|_, u| *u > 0);
            let values: Vec<u32> = users.keys().copied().collect();
            let skeleton = render::skeleton(fam, config, &self.alloc, self.flags(), &values);
            climits.push(users);
            // A table being created gets every policy's elements (a policy made before the
            // family had a farm has its set only now); otherwise only changed policies change.
            let creating = self.committed[i].is_none() && skeleton.is_some();
            let policies: Vec<&String> = if creating {
                config.policies.iter().map(|p| &p.name).collect()
            } else {
                changed_policies.iter().collect()
            };
            for name in policies {
                let part = config
                    .policies
                    .iter()
                    .find(|p| p.name == *name)
                    .and_then(|p| render::policy_part(fam, p));
                new_ports.insert(layout::policy_set(name), part);
            }
            let mut new_parts = BTreeMap::new();
            for farm in config.farms.iter().filter(|f| changed.contains(&f.name)) {
                if let Some(part) = render::render_farm(fam, farm, &self.alloc, &config.policies) {
                    new_parts.insert(farm.name.clone(), part);
                }
            }
            let committed = self.committed[i].as_ref();
            let ports = new_ports
                .iter()
                .map(|(n, p)| (committed.and_then(|s| s.shared.get(n)), p.as_ref()));
            let stale_old = &stale_old[i];
            let farms = changed.iter().map(|n| {
                let old = if self.stale.contains(n) {
                    stale_old.get(n)
                } else {
                    committed.and_then(|s| s.farms.get(n))
                };
                (old, new_parts.get(n))
            });
            // Port dispatch first: its chains point at farm chains, which may be going.
            ruleset::diff_parts(
                committed,
                skeleton.as_ref(),
                ports.chain(farms),
                false,
                &mut batch,
            )?;
            next.push((skeleton, new_parts, new_ports));
        }
        // Layer-2 farms: few, rendered whole and compared.
        let (new_l2, new_macs) = l2::render(config, &self.alloc, facts);
        ruleset::diff(self.l2.as_ref(), new_l2.as_ref(), true, &mut batch)?;
        let outcome = self.commit(batch)?;
        self.l2 = new_l2;
        self.l2_macs = new_macs;
        self.stale.retain(|n| !changed.contains(n));
        for (i, users) in climits.into_iter().enumerate() {
            self.climits[i] = users;
        }
        // A large farm's elements are not kept: ~650 bytes each (39 MiB of a 60,000-backend
        // farm's daemon), and a later change to the whole farm renders them again from the
        // committed configuration, as after a per-backend change.
        let mut freed = Vec::new();
        for (_, parts, _) in next.iter_mut() {
            for (name, part) in parts.iter_mut() {
                if part.elems.values().map(Vec::len).sum::<usize>() > FREE_ASIDE {
                    freed.push(std::mem::take(&mut part.elems));
                    self.stale.insert(name.clone());
                }
            }
        }
        if !freed.is_empty() {
            // O(farm) to free: not on the way to the reply.
            std::thread::spawn(move || drop(freed));
        }
        for (i, (skeleton, parts, ports)) in next.into_iter().enumerate() {
            self.committed[i] = skeleton.map(|sk| {
                let mut state = self.committed[i].take().unwrap_or_else(|| sk.clone());
                state.table = sk.table;
                state.sets = sk.sets;
                state.chains = sk.chains;
                for name in changed {
                    state.farms.remove(name);
                }
                state.farms.extend(parts);
                for (name, part) in ports {
                    match part {
                        Some(p) => state.shared.insert(name, p),
                        None => state.shared.remove(&name),
                    };
                }
                state
            });
        }
        Ok(outcome)
    }

    /// Changes to backends of farms whose own keys stayed (see `backend_change`): validated,
    /// allocated, rendered and committed from those backends alone, all farms in one
    /// transaction. All or nothing.
    /// The backend changes of farms changed in place (same farms, same order, same policies),
    /// found from the leaves the two farm lists do not share: one backend's change in a
    /// configuration of 10,000 farms looks at one farm, not at each farm by name. `None`: the
    /// change is not of that kind, and the caller compares farm by farm.
    fn apply_in_place(&mut self, old: &Config, config: &Config) -> Option<Result<Outcome>> {
        if old.farms.len() != config.farms.len() || old.policies != config.policies {
            return None;
        }
        let at = config.farms.differences(&old.farms)?;
        let mut farms = Vec::with_capacity(at.len());
        for i in at {
            let (o, n) = (old.farms.get(i)?, config.farms.get(i)?);
            if o.name != n.name {
                return None;
            }
            farms.push((o, n, backend_change::several(o, n)?));
        }
        if farms.is_empty() {
            return None;
        }
        Some(self.apply_backends(farms, &config.policies))
    }

    /// The backend changes an edit said it made (`touched`), followed per backend with no
    /// comparison of the farms' lists. `None`: not said, or not followable per backend (a
    /// layer-2 farm, ...): the caller compares.
    fn apply_known(&mut self, old: &Config, config: &Config, touched: &Touched) -> Option<Result<Outcome>> {
        let one = |i: usize, changed: &[usize], removed: Option<usize>| {
            let (o, n) = (old.farms.get(i)?, config.farms.get(i)?);
            Some((o, n, backend_change::known(o, n, changed, removed)?))
        };
        let farms: Option<Vec<_>> = match touched {
            Touched::Unknown => return None,
            Touched::Backends(at) => at.iter().map(|(i, bs)| one(*i, bs, None)).collect(),
            Touched::Appended { farm } => one(*farm, &[], None).map(|f| vec![f]),
            Touched::Removed { farm, at } => one(*farm, &[], Some(*at)).map(|f| vec![f]),
        };
        let farms: Vec<_> = farms?
            .into_iter()
            .filter(|(_, _, pairs)| !pairs.is_empty())
            .collect();
        if farms.is_empty() {
            // Every backend it named was replaced by an equal one.
            return Some(Ok(Outcome::default()));
        }
        Some(self.apply_backends(farms, &config.policies))
    }

    fn apply_backends(
        &mut self,
        farms: Vec<(&Farm, &Farm, Vec<backend_change::Pair>)>,
        policies: &List<Policy>,
    ) -> Result<Outcome> {
        let mut done: Vec<Allocated> = Vec::with_capacity(farms.len());
        for (old, new, pairs) in farms {
            match self.allocate_backends(old, new, pairs) {
                Ok(a) => done.push(a),
                Err(e) => {
                    self.unallocate(done);
                    return Err(e);
                }
            }
        }
        match self.send_backends(&done, policies) {
            Ok(outcome) => {
                for a in done {
                    self.stale.insert(a.farm.name.clone());
                    self.tiers.insert(a.farm.name.clone(), a.tiers);
                    self.deltas.insert(a.farm.name.clone(), a.delta);
                }
                Ok(outcome)
            }
            Err(e) => {
                self.unallocate(done);
                Err(e)
            }
        }
    }

    /// Validates and allocates one farm's backend changes, one after the other; on error the
    /// farm's allocation is as it was.
    fn allocate_backends<'a>(
        &mut self,
        old: &Farm,
        new: &'a Farm,
        pairs: Vec<backend_change::Pair<'a>>,
    ) -> Result<Allocated<'a>> {
        let mut tiers = match self.tiers.get(&old.name) {
            Some(t) => t.clone(),
            None => model::PriorityTiers::of(old),
        };
        let fa = self
            .alloc
            .farms
            .get_mut(&new.name)
            .ok_or_else(|| EngineError::NotFound(format!("farm {:?} has no allocation", new.name)))?;
        let mut steps: Vec<(backend_change::Undo, alloc::SlotDelta)> = Vec::with_capacity(pairs.len());
        let mut errors = Vec::new();
        let mut backends = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let (weight_before, p_old, p_new) = backend_change::weight_and_priorities(&mut tiers, pair);
            let added = pair.0.is_none();
            // A name changed in place stays unique; an added one is unique unless the farm has
            // it (the allocation has a member for each of the farm's backends, by name).
            let named = |n: &str| {
                if added && pair.1.is_some_and(|b| b.name == n) {
                    1 + usize::from(fa.members.contains_key(n))
                } else {
                    1
                }
            };
            if let Err(e) = model::validate_backend_change(new, pair.0, pair.1, named, weight_before) {
                // Every refused backend is named, as the whole-farm check would.
                errors.extend(e.0);
                continue;
            }
            if !errors.is_empty() {
                continue;
            }
            let undo = backend_change::Undo::take(fa, pair);
            match fa.change_backend(new, pair.0, pair.1, p_old, p_new) {
                Ok(delta) => {
                    backends.push((pair, undo.removed_member()));
                    steps.push((undo, delta));
                }
                Err(e) => {
                    undo_steps(fa, steps);
                    return Err(e.into());
                }
            }
        }
        if !errors.is_empty() {
            undo_steps(fa, steps);
            return Err(Invalid(errors).into());
        }
        // At once: composing step by step would cost the batch's size at each step.
        let delta = alloc::SlotDelta::chain(&steps.iter().map(|(_, d)| d).collect::<Vec<_>>());
        Ok(Allocated {
            farm: new,
            backends,
            steps,
            delta,
            tiers,
        })
    }

    /// Puts back the allocations of farms whose backend changes were refused.
    fn unallocate(&mut self, done: Vec<Allocated>) {
        for a in done.into_iter().rev() {
            if let Some(fa) = self.alloc.farms.get_mut(&a.farm.name) {
                undo_steps(fa, a.steps);
            }
        }
    }

    fn send_backends(&mut self, done: &[Allocated], policies: &List<Policy>) -> Result<Outcome> {
        let mut batch = Batch::new();
        let mut chains = Vec::new();
        for a in done {
            let fa =
                self.alloc.farms.get(&a.farm.name).ok_or_else(|| {
                    EngineError::NotFound(format!("farm {:?} has no allocation", a.farm.name))
                })?;
            for (i, fam) in IpFamily::BOTH.into_iter().enumerate() {
                let Some(state) = self.committed[i].as_ref() else {
                    continue;
                };
                let Some(committed) = state.farms.get(&a.farm.name) else {
                    continue;
                };
                let (o, n) =
                    backend_change::parts(fam, committed, (a.farm, fa), policies, &a.backends, &a.delta);
                ruleset::diff_parts(
                    Some(state),
                    Some(state),
                    [(Some(&o), Some(&n))].into_iter(),
                    false,
                    &mut batch,
                )?;
                chains.push((i, a.farm.name.as_str(), n.chain, n.extra));
            }
        }
        let outcome = self.commit(batch)?;
        let mut freed = Vec::new();
        for (i, name, chain, extra) in chains {
            if let Some(part) = self.committed[i].as_mut().and_then(|s| s.farms.get_mut(name)) {
                part.chain = chain;
                part.extra = extra;
                // The elements are no longer all listed: rendered again when needed. Freeing a
                // farm's worth of them is O(farm): not on the way to the reply.
                let elems = std::mem::take(&mut part.elems);
                if elems.values().map(Vec::len).sum::<usize>() > FREE_ASIDE {
                    freed.push(elems);
                }
            }
        }
        if !freed.is_empty() {
            std::thread::spawn(move || drop(freed));
        }
        Ok(outcome)
    }

    /// How many set elements the committed state keeps in memory: a large farm's are dropped
    /// after each commit (tests and memory measurements hold it to that).
    pub fn kept_elements(&self) -> usize {
        self.committed
            .iter()
            .flatten()
            .flat_map(|s| s.farms.values())
            .flat_map(|p| p.elems.values())
            .map(Vec::len)
            .sum()
    }

    fn farm_and_alloc(&self, farm: &str) -> Result<(&Farm, &alloc::FarmAlloc)> {
        let f = self
            .config
            .farm(farm)
            .ok_or_else(|| EngineError::NotFound(format!("no farm is named {farm:?}")))?;
        let fa = self
            .alloc
            .farms
            .get(farm)
            .ok_or_else(|| EngineError::NotFound(format!("farm {farm:?} has no allocation")))?;
        Ok((f, fa))
    }

    /// A policy's elements (merged ranges) with how many packets and bytes each has refused or
    /// admitted.
    pub fn policy_counters(&mut self, policy: &str) -> Result<Vec<(String, u64, u64)>> {
        let p = self
            .config
            .policies
            .iter()
            .find(|p| p.name == policy)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("no policy is named {policy:?}")))?;
        Ok(counters::read(&mut self.conn, &p)?)
    }

    /// What was counted for a farm's connections, or for one backend's, since it was created.
    /// Layer-2 backends are counted under their MAC (dsr) or address (stlsdnat); without
    /// connection tracking, layer-2 farms count no new connections.
    pub fn traffic(&mut self, farm: &str, backend: Option<&str>) -> Result<Traffic> {
        let (f, fa) = self.farm_and_alloc(farm)?;
        if layout::is_l2(f) {
            let id = fa.id;
            let Some(b) = backend else {
                let (packets, bytes) = counters::l2_traffic(&mut self.conn, id)?;
                return Ok(Traffic::new(packets, bytes, 0));
            };
            let b = f
                .backend(b)
                .ok_or_else(|| EngineError::NotFound(format!("farm {farm:?} has no backend {b:?}")))?;
            // The key the datapath counts under: the address (stateless DNAT) or the MAC.
            let key = if f.mode == model::Mode::Stlsdnat {
                match b.ip_addr {
                    std::net::IpAddr::V4(a) => a.octets().to_vec(),
                    std::net::IpAddr::V6(a) => a.octets().to_vec(),
                }
            } else {
                // The MAC the committed table uses (reading must not resolve, nor probe, again).
                match self.l2_macs.get(&(farm.to_string(), b.name.clone())) {
                    Some(mac) => mac.to_vec(),
                    None => return Ok(Traffic::default()),
                }
            };
            let (packets, bytes) = counters::element_traffic(
                &mut self.conn,
                crate::netlink::Family::Netdev,
                &layout::backend_traffic_set(id),
                &key,
            )?;
            return Ok(Traffic::new(packets, bytes, 0));
        }
        let key = match backend {
            None => layout::farm_tag(fa.id),
            Some(b) => {
                let member = *fa
                    .members
                    .get(b)
                    .ok_or_else(|| EngineError::NotFound(format!("farm {farm:?} has no backend {b:?}")))?;
                layout::backend_id(fa.id, member)
            }
        };
        Ok(counters::traffic(&mut self.conn, key)?)
    }

    /// A farm's traffic and each of its backends' (in the farm's order), read at once: one dump
    /// of the counters instead of a lookup per backend (a farm may have thousands).
    pub fn farm_traffic(&mut self, farm: &str) -> Result<(Traffic, Vec<(String, Traffic)>)> {
        let (f, fa) = self.farm_and_alloc(farm)?;
        if layout::is_l2(f) {
            let names: Vec<String> = f.backends.iter().map(|b| b.name.clone()).collect();
            let total = self.traffic(farm, None)?;
            let each = names
                .into_iter()
                .map(|b| self.traffic(farm, Some(&b)).map(|t| (b, t)))
                .collect::<Result<Vec<_>>>()?;
            return Ok((total, each));
        }
        let ids: Vec<(String, Option<u32>)> = f
            .backends
            .iter()
            .map(|b| {
                let id = fa.members.get(&b.name).map(|m| layout::backend_id(fa.id, *m));
                (b.name.clone(), id)
            })
            .collect();
        let tag = layout::farm_tag(fa.id);
        let all = counters::traffic_all(&mut self.conn)?;
        let get = |k: Option<u32>| k.and_then(|k| all.get(&k).copied()).unwrap_or_default();
        Ok((
            get(Some(tag)),
            ids.into_iter().map(|(n, id)| (n, get(id))).collect(),
        ))
    }

    /// The farm's sessions: static ones (no expiry) and the ones the datapath learnt.
    pub fn sessions(&mut self, farm: &str) -> Result<Vec<SessionInfo>> {
        let (f, fa) = self.farm_and_alloc(farm)?;
        if f.persistence.is_empty() {
            return Ok(Vec::new());
        }
        let (f, fa) = (f.clone(), fa.clone());
        Ok(sessions::list(&mut self.conn, &f, &fa)?)
    }

    /// Forgets one client's session: a static one leaves the configuration (returned changed in
    /// `config()`), a learnt one is deleted from the kernel.
    pub fn delete_session(&mut self, farm: &str, client: &str) -> Result<Outcome> {
        let (f, fa) = self.farm_and_alloc(farm)?;
        let (values, without) = persist::unpin(&self.config, f, client)?;
        if let Some(config) = without {
            return self.apply(config);
        }
        let (f, fa) = (f.clone(), fa.clone());
        let mut batch = Batch::new();
        if sessions::delete_learnt(&mut self.conn, &mut batch, &f, &fa, Some(&values))? == 0 {
            return Err(EngineError::NotFound(format!(
                "farm {farm:?} has no session for {client:?}"
            )));
        }
        self.commit(batch)
    }

    /// Forgets every session the datapath learnt for the farm (static sessions are configuration
    /// and stay).
    pub fn flush_sessions(&mut self, farm: &str) -> Result<Outcome> {
        let (f, fa) = self.farm_and_alloc(farm)?;
        let (f, fa) = (f.clone(), fa.clone());
        let mut batch = Batch::new();
        if !f.persistence.is_empty() {
            sessions::delete_learnt(&mut self.conn, &mut batch, &f, &fa, None)?;
        }
        self.commit(batch)
    }

    /// Re-resolves layer-2 farms (interfaces, routes, neighbours changed) and sends what differs.
    pub fn refresh_l2(&mut self) -> Result<Outcome> {
        let facts = self.host.discover(&self.config);
        let (new, macs) = l2::render(&self.config, &self.alloc, &facts);
        let mut batch = Batch::new();
        ruleset::diff(self.l2.as_ref(), new.as_ref(), true, &mut batch)?;
        let outcome = self.commit(batch)?;
        self.l2 = new;
        self.l2_macs = macs;
        Ok(outcome)
    }

    fn commit(&mut self, batch: Batch) -> Result<Outcome> {
        if batch.is_empty() {
            return Ok(Outcome::default());
        }
        let messages = batch.len();
        let changes = batch.describe();
        let generation = self.conn.commit(batch).inspect_err(|e| {
            // A refusal changed nothing; a socket failure may have happened after the kernel
            // took the batch.
            if matches!(e, netlink::Error::Io(_)) {
                self.unsure = true;
            }
        })?;
        Ok(Outcome {
            generation: Some(generation),
            messages,
            changes,
        })
    }
}

/// The trait forwards to the inherent methods, so code holding a `KernelEngine` (the CLI, kernel
/// tests, benches) uses it without importing the trait.
impl Engine for KernelEngine {
    fn features(&self) -> &KernelFeatures {
        KernelEngine::features(self)
    }
    fn config(&self) -> &Config {
        KernelEngine::config(self)
    }
    fn allocation(&self) -> &Allocation {
        KernelEngine::allocation(self)
    }
    fn reconcile(&mut self, config: Config, alloc: Allocation) -> Result<Outcome> {
        KernelEngine::reconcile(self, config, alloc)
    }
    fn apply(&mut self, config: Config) -> Result<Outcome> {
        KernelEngine::apply(self, config)
    }
    fn apply_touched(&mut self, config: Config, touched: &Touched) -> Result<Outcome> {
        KernelEngine::apply_touched(self, config, touched)
    }
    fn slot_delta(&self, farm: &str) -> Option<&alloc::SlotDelta> {
        self.deltas.get(farm)
    }
    fn policy_counters(&mut self, policy: &str) -> Result<Vec<(String, u64, u64)>> {
        KernelEngine::policy_counters(self, policy)
    }
    fn traffic(&mut self, farm: &str, backend: Option<&str>) -> Result<Traffic> {
        KernelEngine::traffic(self, farm, backend)
    }
    fn farm_traffic(&mut self, farm: &str) -> Result<(Traffic, Vec<(String, Traffic)>)> {
        KernelEngine::farm_traffic(self, farm)
    }
    fn sessions(&mut self, farm: &str) -> Result<Vec<SessionInfo>> {
        KernelEngine::sessions(self, farm)
    }
    fn delete_session(&mut self, farm: &str, client: &str) -> Result<Outcome> {
        KernelEngine::delete_session(self, farm, client)
    }
    fn flush_sessions(&mut self, farm: &str) -> Result<Outcome> {
        KernelEngine::flush_sessions(self, farm)
    }
    fn refresh_l2(&mut self) -> Result<Outcome> {
        KernelEngine::refresh_l2(self)
    }
    fn portid(&self) -> Option<u32> {
        Some(KernelEngine::portid(self))
    }
    fn commits(&self) -> u64 {
        self.conn.commits()
    }
    fn quiet(&mut self, quiet: netlink::Quiet) {
        self.conn.set_quiet(quiet);
    }
}
