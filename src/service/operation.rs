//! Every read and change a client can ask of the service, in one table. The front ends translate
//! their wire formats into an [`Operation`] and its [`Output`] back; what an operation means, and
//! which polkit action and details guard it, is decided here, once, for every transport.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::timed::Pending;
use crate::engine::{SessionInfo, Traffic};
use crate::model::{Config, Farm, Policy};
use crate::polkit::{self, Answer, Details};

/// Canonical keys to set, and keys to remove (back to their defaults).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    pub set: Map<String, Value>,
    pub removed: Vec<String>,
}

impl Patch {
    /// One key set (`None`: reset to its default).
    pub fn one(key: &str, value: Option<Value>) -> Patch {
        let mut p = Patch::default();
        match value {
            Some(v) => {
                p.set.insert(key.to_string(), v);
            }
            None => p.removed.push(key.to_string()),
        }
        p
    }

    /// The keys the patch touches, sorted, for polkit rules (`keys` detail) and logs.
    pub fn keys(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self
            .set
            .keys()
            .map(String::as_str)
            .chain(self.removed.iter().map(String::as_str))
            .collect();
        k.sort_unstable();
        k.dedup();
        k
    }
}

/// A change of a policy's elements, applied in this order: replace all, remove, add. Removing an
/// element that is not there refuses the whole change; adding one that is there keeps it once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ElementEdit {
    pub replace: Option<Vec<String>>,
    pub remove: Vec<String>,
    pub add: Vec<String>,
}

/// One backend's new state, weight or priority, in a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendUpdate {
    pub farm: String,
    pub backend: String,
    pub state: Option<String>,
    pub weight: Option<u32>,
    pub priority: Option<u32>,
}

impl BackendUpdate {
    /// The canonical keys it sets.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> {
        [
            self.state.as_ref().map(|_| "state"),
            self.weight.map(|_| "weight"),
            self.priority.map(|_| "priority"),
        ]
        .into_iter()
        .flatten()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// Farms and policies of the document are added, or replace those of the same name.
    Merge,
    /// The document becomes the configuration.
    Replace,
}

impl ImportMode {
    pub fn parse(word: &str) -> Option<ImportMode> {
        match word {
            "merge" => Some(ImportMode::Merge),
            "replace" => Some(ImportMode::Replace),
            _ => None,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            ImportMode::Merge => "merge",
            ImportMode::Replace => "replace",
        }
    }
}

/// One request, typed. Names are checked and values parsed by the front end's translation (so
/// an error names the caller's own field); the service decides the rest.
#[derive(Debug, Clone)]
pub enum Operation {
    GetConfig,
    ListFarms,
    GetFarm {
        farm: String,
    },
    GetPolicy {
        policy: String,
    },
    /// Packets, bytes and new connections of a farm, or of one of its backends.
    GetTraffic {
        farm: String,
        backend: Option<String>,
    },
    /// The farm's and every backend's packets, bytes and new connections, in one read.
    GetFarmCounters {
        farm: String,
    },
    /// Every backend's established connections (conntrack), in one read.
    GetFarmConnections {
        farm: String,
    },
    ListSessions {
        farm: String,
    },
    GetPolicyCounters {
        policy: String,
    },
    /// What polkit answers the caller for each action.
    GetPermissions,
    /// The pending timed changes.
    ListTimedChanges,
    CreateFarm {
        farm: Box<Farm>,
    },
    UpdateFarm {
        farm: String,
        patch: Patch,
    },
    RenameFarm {
        farm: String,
        new_name: String,
    },
    DeleteFarm {
        farm: String,
    },
    /// A backend as canonical JSON, its `name` included; validated with its farm.
    AddBackend {
        farm: String,
        backend: Map<String, Value>,
    },
    /// With `for_secs`, a timed change: the keys (weight and priority only) go back to their
    /// values after that many seconds (see `service::timed`).
    UpdateBackend {
        farm: String,
        backend: String,
        patch: Patch,
        for_secs: Option<u32>,
    },
    /// With `for_secs`, a timed change: the state goes back after that many seconds.
    SetBackendState {
        farm: String,
        backend: String,
        state: String,
        for_secs: Option<u32>,
    },
    /// A backend's health as a checker sees it (`unknown`, `healthy`, `failing`), and why.
    SetBackendHealth {
        farm: String,
        backend: String,
        health: String,
        reason: String,
    },
    RemoveBackend {
        farm: String,
        backend: String,
    },
    /// The state, weight or priority of many backends, across farms: one transaction, all or
    /// nothing (a rack failure, a health-check sweep).
    SetBackends {
        changes: Vec<BackendUpdate>,
    },
    /// Ends a pending timed change now: the key gets back the value it had before.
    CancelTimedChange {
        farm: String,
        backend: String,
        key: String,
    },
    /// Pins a client (in the farm's persistence format) to a backend.
    AddSession {
        farm: String,
        client: String,
        backend: String,
    },
    /// Forgets a client: a static session leaves the configuration, a learnt one the kernel.
    DeleteSession {
        farm: String,
        client: String,
    },
    /// Forgets every learnt session of the farm (static ones stay).
    FlushSessions {
        farm: String,
    },
    CreatePolicy {
        policy: Box<Policy>,
    },
    DeletePolicy {
        policy: String,
    },
    EditPolicyElements {
        policy: String,
        edit: ElementEdit,
    },
    ImportConfig {
        config: Box<Config>,
        mode: ImportMode,
    },
    /// Keeps the farms (`farms`, empty: every farm) as they are now, to roll back to unless
    /// destroyed (confirmed) within `rollback_timeout` seconds (0: never rolls back by itself).
    /// `flags`: checkpoint::DESTROY_ALL, DELETE_NEW_FARMS, ALLOW_OVERLAPPING (NetworkManager's).
    CheckpointCreate {
        farms: Vec<String>,
        rollback_timeout: u32,
        flags: u32,
    },
    /// Restores the checkpoint's farms in one commit; the checkpoint is gone.
    CheckpointRollback {
        checkpoint: u32,
    },
    /// Confirms: the changes stay, the checkpoint is gone.
    CheckpointDestroy {
        checkpoint: u32,
    },
    /// Rolls back `add_timeout` seconds from now (0: never by itself).
    CheckpointAdjustRollbackTimeout {
        checkpoint: u32,
        add_timeout: u32,
    },
    ListCheckpoints,
    /// Writes a farm as it runs into the file that declares it.
    RuntimeToPersistent {
        farm: String,
    },
    /// Re-reads the state file and the farm files and makes the kernel match them.
    Reload,
}

/// What an operation answers.
#[derive(Debug, Clone)]
pub enum Output {
    /// A change: the generation it committed (the current one when it changed nothing).
    Done {
        generation: u64,
    },
    Config {
        config: Arc<Config>,
        generation: u64,
    },
    Names(Vec<String>),
    Farm(Box<Farm>),
    Policy(Box<Policy>),
    Traffic(Traffic),
    FarmCounters {
        farm: Traffic,
        backends: Vec<(String, Traffic)>,
    },
    Sessions(Vec<SessionInfo>),
    /// (element, packets, bytes).
    PolicyCounters(Vec<(String, u64, u64)>),
    /// (backend, established connections), in the farm's order.
    Connections(Vec<(String, u64)>),
    /// (action, answer) for every action.
    Permissions(Vec<(&'static str, Answer)>),
    /// A checkpoint's id.
    Checkpoint(u32),
    /// (farm, result code) of a rollback: checkpoint::RESTORED or a refusal's code.
    RolledBack(Vec<(String, u32)>),
    Checkpoints(Arc<Vec<crate::service::checkpoint::Info>>),
    /// A Reload: the generation it committed, and the farm files it refused (`PATH: field`).
    Reloaded {
        generation: u64,
        refused: Vec<crate::model::FieldError>,
    },
    /// The pending timed changes, by farm, backend and key.
    TimedChanges(Arc<Vec<Pending>>),
}

/// The operations as a closed list, for tables, tests and the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    GetConfig,
    ListFarms,
    GetFarm,
    GetPolicy,
    GetTraffic,
    GetFarmCounters,
    GetFarmConnections,
    ListSessions,
    GetPolicyCounters,
    GetPermissions,
    ListTimedChanges,
    CreateFarm,
    UpdateFarm,
    RenameFarm,
    DeleteFarm,
    AddBackend,
    UpdateBackend,
    SetBackendState,
    SetBackendHealth,
    RemoveBackend,
    SetBackends,
    CancelTimedChange,
    AddSession,
    DeleteSession,
    FlushSessions,
    CreatePolicy,
    DeletePolicy,
    EditPolicyElements,
    ImportConfig,
    CheckpointCreate,
    CheckpointRollback,
    CheckpointDestroy,
    CheckpointAdjustRollbackTimeout,
    ListCheckpoints,
    RuntimeToPersistent,
    /// Stays last: the table's length is checked against it.
    Reload,
}

/// One row of the operation table.
pub struct Spec {
    pub kind: Kind,
    /// The operation's name; for changes, also their varlink method.
    pub name: &'static str,
    /// The polkit action that guards it; `None`: open to anyone (it reveals no client).
    pub action: Option<&'static str>,
    /// Whether it may change the configuration or the kernel.
    pub changes: bool,
    /// Where D-Bus offers it: `Interface.Member`, or `Interface.Property=` for a property set,
    /// `Interface.Property` for a property read (interfaces without the `org.nftlbd1.` prefix).
    pub dbus: &'static [&'static str],
    /// Where varlink offers it: methods of interface `org.nftlbd1`.
    pub varlink: &'static [&'static str],
    /// The polkit details it passes besides `verb`.
    pub details: &'static [&'static str],
    pub summary: &'static str,
}

const fn read(
    kind: Kind,
    name: &'static str,
    action: Option<&'static str>,
    dbus: &'static [&'static str],
    varlink: &'static [&'static str],
    details: &'static [&'static str],
    summary: &'static str,
) -> Spec {
    Spec {
        kind,
        name,
        action,
        changes: false,
        dbus,
        varlink,
        details,
        summary,
    }
}

const fn change(
    kind: Kind,
    name: &'static str,
    action: &'static str,
    dbus: &'static [&'static str],
    details: &'static [&'static str],
    summary: &'static str,
) -> Spec {
    Spec {
        kind,
        name,
        action: Some(action),
        changes: true,
        dbus,
        varlink: &[],
        details,
        summary,
    }
}

use Kind as K;

/// Every operation: its name, its action, and where each transport offers it.
pub const OPERATIONS: &[Spec] = &[
    read(
        K::GetConfig,
        "GetConfig",
        None,
        &["Manager.ExportConfig"],
        &["GetConfig"],
        &[],
        "The whole configuration as canonical JSON, with its generation.",
    ),
    read(
        K::ListFarms,
        "ListFarms",
        None,
        &["Manager.ListFarms", "Manager.Farms"],
        &["ListFarms"],
        &[],
        "The farms' names.",
    ),
    read(
        K::GetFarm,
        "GetFarm",
        None,
        &["Manager.GetFarm"],
        &["GetFarm"],
        &[],
        "One farm as canonical JSON (D-Bus: its object, one property per key).",
    ),
    read(
        K::GetPolicy,
        "GetPolicy",
        None,
        &["Manager.GetPolicy"],
        &["GetPolicy"],
        &[],
        "One policy as canonical JSON (D-Bus: its object, one property per key).",
    ),
    read(
        K::GetTraffic,
        "GetTraffic",
        None,
        &[
            "Farm.Packets",
            "Farm.Bytes",
            "Farm.NewConnections",
            "Backend.Packets",
            "Backend.Bytes",
            "Backend.NewConnections",
        ],
        &["GetFarm"],
        &[],
        "Packets, bytes and new connections of a farm or a backend, counted in the kernel (totals reveal no client).",
    ),
    read(
        K::GetFarmCounters,
        "GetFarmCounters",
        None,
        &["Farm.GetBackendCounters"],
        &["GetFarm"],
        &[],
        "Every backend's packets, bytes and new connections in one read.",
    ),
    read(
        K::GetFarmConnections,
        "GetFarmConnections",
        None,
        &["Farm.GetBackendConnections"],
        &["GetFarm"],
        &[],
        "Every backend's established connections (the kernel's connection tracking) in one read; counts reveal no client.",
    ),
    read(
        K::ListSessions,
        "ListSessions",
        Some(polkit::INFO),
        &["Farm.ListSessions"],
        &["ListSessions"],
        &["farm"],
        "Static and learnt persistence sessions (they reveal clients).",
    ),
    read(
        K::GetPolicyCounters,
        "GetPolicyCounters",
        Some(polkit::INFO),
        &["Policy.GetCounters"],
        &["GetPolicyCounters"],
        &["policy"],
        "What each element of a policy matched (reveals clients).",
    ),
    read(
        K::GetPermissions,
        "GetPermissions",
        None,
        &["Manager.GetPermissions"],
        &["GetPermissions"],
        &[],
        "For each action, yes, no or auth for the caller.",
    ),
    read(
        K::ListTimedChanges,
        "ListTimedChanges",
        None,
        &["Manager.ListTimedChanges"],
        &["ListTimedChanges"],
        &[],
        "The pending timed changes: farm, backend, key, the value it goes back to, and when \
         (microseconds since the Unix epoch).",
    ),
    change(
        K::CreateFarm,
        "CreateFarm",
        polkit::FARM_MANAGE,
        &["Manager.CreateFarm"],
        &["farm"],
        "Creates a farm with its backends, in one transaction.",
    ),
    change(
        K::UpdateFarm,
        "UpdateFarm",
        polkit::FARM_MANAGE,
        &["Farm.Update", "Farm.*="],
        &["farm", "keys"],
        "Sets (or resets to their defaults) keys of a farm, in one transaction.",
    ),
    change(
        K::RenameFarm,
        "RenameFarm",
        polkit::FARM_MANAGE,
        &["Farm.Rename"],
        &["farm"],
        "Renames a farm; its objects move.",
    ),
    change(
        K::DeleteFarm,
        "DeleteFarm",
        polkit::FARM_MANAGE,
        &["Manager.DeleteFarm", "Farm.Delete"],
        &["farm"],
        "Deletes a farm and its backends.",
    ),
    change(
        K::AddBackend,
        "AddBackend",
        polkit::BACKEND_MANAGE,
        &["Farm.AddBackend"],
        &["farm", "backend"],
        "Adds a backend to a farm.",
    ),
    change(
        K::UpdateBackend,
        "UpdateBackend",
        polkit::BACKEND_MANAGE,
        &["Backend.Update", "Backend.UpdateFor", "Backend.*="],
        &["farm", "backend", "keys"],
        "Sets (or resets) keys of a backend (its state: SetBackendState).",
    ),
    change(
        K::SetBackendState,
        "SetBackendState",
        polkit::BACKEND_SET_STATE,
        &["Backend.SetState", "Backend.SetStateFor", "Backend.State="],
        &["farm", "backend", "state"],
        "Sets a backend's state: up, down, off or drain (delegable on its own).",
    ),
    change(
        K::SetBackendHealth,
        "SetBackendHealth",
        polkit::BACKEND_SET_STATE,
        &["Backend.SetHealth"],
        &["farm", "backend"],
        "Sets a backend's health (unknown, healthy or failing) and its reason: an outside checker's verdict.",
    ),
    change(
        K::RemoveBackend,
        "RemoveBackend",
        polkit::BACKEND_MANAGE,
        &["Farm.RemoveBackend", "Backend.Remove"],
        &["farm", "backend"],
        "Removes a backend; its established connections are not cut.",
    ),
    change(
        K::SetBackends,
        "SetBackends",
        polkit::BACKEND_SET_STATE,
        &["Manager.SetBackends"],
        &["farm", "keys", "state"],
        "Sets the state, weight or priority of many backends across farms, in one transaction; all or \
         nothing. Checked once per farm: backend.set-state when only states change there, \
         backend.manage otherwise.",
    ),
    change(
        K::CancelTimedChange,
        "CancelTimedChange",
        polkit::BACKEND_SET_STATE,
        &["Manager.CancelTimedChange"],
        &["farm", "backend", "keys"],
        "Ends a pending timed change now, restoring the value it replaced. Checked as the \
         untimed change of its key: backend.set-state for state, backend.manage otherwise.",
    ),
    change(
        K::AddSession,
        "AddSession",
        polkit::FARM_MANAGE,
        &["Farm.AddSession"],
        &["farm", "backend"],
        "Pins a client to a backend: a static session.",
    ),
    change(
        K::DeleteSession,
        "DeleteSession",
        polkit::FARM_MANAGE,
        &["Farm.DeleteSession"],
        &["farm"],
        "Forgets one client's session, static or learnt.",
    ),
    change(
        K::FlushSessions,
        "FlushSessions",
        polkit::FARM_MANAGE,
        &["Farm.FlushSessions"],
        &["farm"],
        "Forgets every learnt session of a farm.",
    ),
    change(
        K::CreatePolicy,
        "CreatePolicy",
        polkit::POLICY_MANAGE,
        &["Manager.CreatePolicy"],
        &["policy"],
        "Creates a blacklist or whitelist.",
    ),
    change(
        K::DeletePolicy,
        "DeletePolicy",
        polkit::POLICY_MANAGE,
        &["Manager.DeletePolicy", "Policy.Delete"],
        &["policy"],
        "Deletes a policy no farm attaches.",
    ),
    change(
        K::EditPolicyElements,
        "EditPolicyElements",
        polkit::POLICY_MANAGE,
        &[
            "Policy.AddElements",
            "Policy.RemoveElements",
            "Policy.ReplaceElements",
        ],
        &["policy"],
        "Adds, removes or replaces a policy's elements, in one transaction.",
    ),
    change(
        K::ImportConfig,
        "ImportConfig",
        polkit::CONFIG,
        &["Manager.ImportConfig"],
        &["mode"],
        "Merges a document into the configuration, or replaces it; all or nothing.",
    ),
    change(
        K::CheckpointCreate,
        "CheckpointCreate",
        polkit::CHECKPOINT,
        &["Manager.CheckpointCreate"],
        &[],
        "Keeps farms (none named: every farm) and the policies they refer to (none named: every \
         policy) as they are, to roll back to unless destroyed within the rollback timeout; \
         overlapping checkpoints are refused unless allowed.",
    ),
    change(
        K::CheckpointRollback,
        "CheckpointRollback",
        polkit::CHECKPOINT,
        &["Manager.CheckpointRollback"],
        &[],
        "Restores a checkpoint's policies and farms (configuration, states, weights) in one \
         transaction; a result per farm.",
    ),
    change(
        K::CheckpointDestroy,
        "CheckpointDestroy",
        polkit::CHECKPOINT,
        &["Manager.CheckpointDestroy"],
        &[],
        "Confirms: the changes since the checkpoint stay, and it is gone.",
    ),
    change(
        K::CheckpointAdjustRollbackTimeout,
        "CheckpointAdjustRollbackTimeout",
        polkit::CHECKPOINT,
        &["Manager.CheckpointAdjustRollbackTimeout"],
        &[],
        "Moves a checkpoint's automatic rollback to seconds from now (0: never).",
    ),
    read(
        K::ListCheckpoints,
        "ListCheckpoints",
        None,
        &[
            "Manager.Checkpoints",
            "Checkpoint.Farms",
            "Checkpoint.Created",
            "Checkpoint.RollbackTimeout",
            "Checkpoint.Deadline",
        ],
        &["ListCheckpoints"],
        &[],
        "The checkpoints: the farms each covers, when it was created, its rollback deadline.",
    ),
    change(
        K::RuntimeToPersistent,
        "RuntimeToPersistent",
        polkit::CONFIG,
        &["Manager.RuntimeToPersistent"],
        &["farm"],
        "Writes a farm as it runs into the farm file that declares it (replaced atomically); \
         without it, runtime changes of a file's farm last until the next Reload.",
    ),
    change(
        K::Reload,
        "Reload",
        polkit::CONFIG,
        &["Manager.Reload"],
        &[],
        "Re-reads the state file and the farm files and makes the kernel match them, in one \
         transaction; a farm file that is refused is named with its field, and the others load.",
    ),
];

// The table is in the order of `Kind`, one row each: checked when the crate is compiled, so a
// kind can never fall back to another row (and so to another action, or none).
const _: () = {
    assert!(OPERATIONS.len() == Kind::Reload as usize + 1);
    let mut i = 0;
    while i < OPERATIONS.len() {
        assert!(OPERATIONS[i].kind as usize == i);
        i += 1;
    }
};

/// The table's row for `kind`.
pub fn spec(kind: Kind) -> &'static Spec {
    &OPERATIONS[kind as usize]
}

impl Spec {
    /// The varlink methods that offer it: changes are their own method.
    pub fn varlink_methods(&self) -> Vec<&'static str> {
        if self.changes {
            vec![self.name]
        } else {
            self.varlink.to_vec()
        }
    }

    /// The `verb` detail: the name in kebab-case (`SetBackendState` → `set-backend-state`).
    pub fn verb(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.name.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('-');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl Operation {
    pub fn kind(&self) -> Kind {
        match self {
            Operation::GetConfig => K::GetConfig,
            Operation::ListFarms => K::ListFarms,
            Operation::GetFarm { .. } => K::GetFarm,
            Operation::GetPolicy { .. } => K::GetPolicy,
            Operation::GetTraffic { .. } => K::GetTraffic,
            Operation::GetFarmCounters { .. } => K::GetFarmCounters,
            Operation::GetFarmConnections { .. } => K::GetFarmConnections,
            Operation::ListSessions { .. } => K::ListSessions,
            Operation::GetPolicyCounters { .. } => K::GetPolicyCounters,
            Operation::GetPermissions => K::GetPermissions,
            Operation::ListTimedChanges => K::ListTimedChanges,
            Operation::CreateFarm { .. } => K::CreateFarm,
            Operation::UpdateFarm { .. } => K::UpdateFarm,
            Operation::RenameFarm { .. } => K::RenameFarm,
            Operation::DeleteFarm { .. } => K::DeleteFarm,
            Operation::AddBackend { .. } => K::AddBackend,
            Operation::UpdateBackend { .. } => K::UpdateBackend,
            Operation::SetBackendState { .. } => K::SetBackendState,
            Operation::SetBackendHealth { .. } => K::SetBackendHealth,
            Operation::RemoveBackend { .. } => K::RemoveBackend,
            Operation::SetBackends { .. } => K::SetBackends,
            Operation::CancelTimedChange { .. } => K::CancelTimedChange,
            Operation::AddSession { .. } => K::AddSession,
            Operation::DeleteSession { .. } => K::DeleteSession,
            Operation::FlushSessions { .. } => K::FlushSessions,
            Operation::CreatePolicy { .. } => K::CreatePolicy,
            Operation::DeletePolicy { .. } => K::DeletePolicy,
            Operation::EditPolicyElements { .. } => K::EditPolicyElements,
            Operation::ImportConfig { .. } => K::ImportConfig,
            Operation::CheckpointCreate { .. } => K::CheckpointCreate,
            Operation::CheckpointRollback { .. } => K::CheckpointRollback,
            Operation::CheckpointDestroy { .. } => K::CheckpointDestroy,
            Operation::CheckpointAdjustRollbackTimeout { .. } => K::CheckpointAdjustRollbackTimeout,
            Operation::ListCheckpoints => K::ListCheckpoints,
            Operation::RuntimeToPersistent { .. } => K::RuntimeToPersistent,
            Operation::Reload => K::Reload,
        }
    }

    pub fn spec(&self) -> &'static Spec {
        spec(self.kind())
    }

    /// The polkit checks to pass before running it, all of them; none: anyone may.
    pub fn authorizations(&self) -> Vec<(&'static str, Details)> {
        let spec = self.spec();
        let Some(mut action) = spec.action else {
            return Vec::new();
        };
        if let Operation::SetBackends { changes } = self {
            return batch_checks(changes, &spec.verb());
        }
        let mut d = Details::verb(&spec.verb());
        let own = |s: &String| s.clone();
        match self {
            Operation::GetFarm { .. }
            | Operation::GetPolicy { .. }
            | Operation::GetConfig
            | Operation::ListFarms
            | Operation::GetTraffic { .. }
            | Operation::GetFarmCounters { .. }
            | Operation::GetFarmConnections { .. }
            | Operation::GetPermissions
            | Operation::ListTimedChanges
            | Operation::SetBackends { .. }
            | Operation::CheckpointCreate { .. }
            | Operation::CheckpointRollback { .. }
            | Operation::CheckpointDestroy { .. }
            | Operation::CheckpointAdjustRollbackTimeout { .. }
            | Operation::ListCheckpoints
            | Operation::Reload => {}
            Operation::CreateFarm { farm } => d.farm = farm.name.clone(),
            Operation::ListSessions { farm }
            | Operation::RenameFarm { farm, .. }
            | Operation::DeleteFarm { farm }
            | Operation::DeleteSession { farm, .. }
            | Operation::FlushSessions { farm }
            | Operation::RuntimeToPersistent { farm } => d.farm = own(farm),
            Operation::UpdateFarm { farm, patch } => {
                d.farm = own(farm);
                d.keys = patch.keys().join(",");
            }
            Operation::AddBackend { farm, backend } => {
                d.farm = own(farm);
                d.backend = backend
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
            }
            Operation::UpdateBackend {
                farm, backend, patch, ..
            } => {
                d.farm = own(farm);
                d.backend = own(backend);
                d.keys = patch.keys().join(",");
            }
            Operation::SetBackendState {
                farm, backend, state, ..
            } => {
                d.farm = own(farm);
                d.backend = own(backend);
                d.state = own(state);
            }
            // Checked as the untimed change of that key would be.
            Operation::CancelTimedChange { farm, backend, key } => {
                if key != "state" {
                    action = polkit::BACKEND_MANAGE;
                }
                d.farm = own(farm);
                d.backend = own(backend);
                d.keys = own(key);
            }
            Operation::RemoveBackend { farm, backend }
            | Operation::SetBackendHealth { farm, backend, .. }
            | Operation::AddSession { farm, backend, .. } => {
                d.farm = own(farm);
                d.backend = own(backend);
            }
            Operation::CreatePolicy { policy } => d.policy = policy.name.clone(),
            Operation::GetPolicyCounters { policy }
            | Operation::DeletePolicy { policy }
            | Operation::EditPolicyElements { policy, .. } => d.policy = own(policy),
            Operation::ImportConfig { mode, .. } => d.mode = mode.word().to_string(),
        }
        vec![(action, d)]
    }
}

/// One check per farm a batch touches: `backend.set-state` when it only sets states there,
/// `backend.manage` otherwise; `keys` and `state` say what it sets (states joined with commas
/// when they differ).
fn batch_checks(changes: &[BackendUpdate], verb: &str) -> Vec<(&'static str, Details)> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut by_farm: BTreeMap<&str, (BTreeSet<&str>, Vec<&str>)> = BTreeMap::new();
    for c in changes {
        let (keys, states) = by_farm.entry(c.farm.as_str()).or_default();
        keys.extend(c.keys());
        if let Some(s) = &c.state
            && !states.contains(&s.as_str())
        {
            states.push(s);
        }
    }
    by_farm
        .into_iter()
        .map(|(farm, (keys, states))| {
            let action = if keys.iter().all(|k| *k == "state") {
                polkit::BACKEND_SET_STATE
            } else {
                polkit::BACKEND_MANAGE
            };
            let d = Details {
                farm: farm.to_string(),
                verb: verb.to_string(),
                keys: keys.into_iter().collect::<Vec<_>>().join(","),
                state: states.join(","),
                ..Details::default()
            };
            (action, d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_KINDS: &[Kind] = &[
        K::GetConfig,
        K::ListFarms,
        K::GetFarm,
        K::GetPolicy,
        K::GetTraffic,
        K::GetFarmCounters,
        K::GetFarmConnections,
        K::ListSessions,
        K::GetPolicyCounters,
        K::GetPermissions,
        K::ListTimedChanges,
        K::CreateFarm,
        K::UpdateFarm,
        K::RenameFarm,
        K::DeleteFarm,
        K::AddBackend,
        K::UpdateBackend,
        K::SetBackendState,
        K::SetBackendHealth,
        K::RemoveBackend,
        K::SetBackends,
        K::CancelTimedChange,
        K::AddSession,
        K::DeleteSession,
        K::FlushSessions,
        K::CreatePolicy,
        K::DeletePolicy,
        K::EditPolicyElements,
        K::ImportConfig,
        K::CheckpointCreate,
        K::CheckpointRollback,
        K::CheckpointDestroy,
        K::CheckpointAdjustRollbackTimeout,
        K::ListCheckpoints,
        K::RuntimeToPersistent,
        K::Reload,
    ];

    #[test]
    fn every_kind_has_one_row_and_every_change_an_action() {
        assert_eq!(OPERATIONS.len(), ALL_KINDS.len());
        for k in ALL_KINDS {
            let rows: Vec<&Spec> = OPERATIONS.iter().filter(|s| s.kind == *k).collect();
            assert_eq!(rows.len(), 1, "{k:?}");
            let s = rows[0];
            assert!(
                !s.changes || s.action.is_some(),
                "{} changes without an action",
                s.name
            );
            assert!(
                !s.dbus.is_empty() && !s.varlink_methods().is_empty(),
                "{}",
                s.name
            );
            assert_eq!(format!("{k:?}"), s.name);
        }
    }

    #[test]
    fn details_name_the_objects_the_rows_promise() {
        let farm = || "web".to_string();
        let ops = [
            Operation::SetBackendState {
                farm: farm(),
                backend: "a".into(),
                state: "drain".into(),
                for_secs: None,
            },
            Operation::UpdateFarm {
                farm: farm(),
                patch: Patch {
                    set: serde_json::json!({"scheduler": "hash", "persist-ttl": 3})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                    removed: vec!["mark".into()],
                },
            },
            Operation::EditPolicyElements {
                policy: "bl".into(),
                edit: ElementEdit::default(),
            },
        ];
        let (action, d) = ops[0].authorizations().remove(0);
        assert_eq!(action, polkit::BACKEND_SET_STATE);
        assert_eq!(
            (
                d.farm.as_str(),
                d.backend.as_str(),
                d.state.as_str(),
                d.verb.as_str()
            ),
            ("web", "a", "drain", "set-backend-state")
        );
        let (action, d) = ops[1].authorizations().remove(0);
        assert_eq!(action, polkit::FARM_MANAGE);
        assert_eq!(
            (d.keys.as_str(), d.verb.as_str()),
            ("mark,persist-ttl,scheduler", "update-farm")
        );
        let (action, d) = ops[2].authorizations().remove(0);
        assert_eq!((action, d.policy.as_str()), (polkit::POLICY_MANAGE, "bl"));
        assert!(Operation::GetConfig.authorizations().is_empty());
        let sessions = Operation::ListSessions { farm: farm() };
        assert_eq!(sessions.authorizations()[0].0, polkit::INFO);
    }

    #[test]
    fn a_batch_is_checked_once_per_farm_with_the_narrowest_action() {
        let u = |farm: &str, backend: &str, state: Option<&str>, weight: Option<u32>| BackendUpdate {
            farm: farm.into(),
            backend: backend.into(),
            state: state.map(str::to_string),
            weight,
            priority: None,
        };
        let op = Operation::SetBackends {
            changes: vec![
                u("web", "a", Some("drain"), None),
                u("web", "b", Some("down"), None),
                u("db", "x", Some("up"), Some(3)),
                u("web", "c", Some("drain"), None),
            ],
        };
        let checks = op.authorizations();
        let got: Vec<(&str, &str, &str, &str)> = checks
            .iter()
            .map(|(a, d)| (*a, d.farm.as_str(), d.keys.as_str(), d.state.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (polkit::BACKEND_MANAGE, "db", "state,weight", "up"),
                (polkit::BACKEND_SET_STATE, "web", "state", "drain,down"),
            ]
        );
        assert!(checks.iter().all(|(_, d)| d.verb == "set-backends"));
    }

    #[test]
    fn every_detail_a_row_promises_is_filled() {
        // One operation of each kind that takes details, with every name set.
        let s = || "x".to_string();
        let farm = Box::new(Farm::new("x"));
        let policy: Box<Policy> =
            Box::new(serde_json::from_value(serde_json::json!({"name": "x"})).expect("a policy named x"));
        let b: Map<String, Value> = serde_json::json!({"name": "x"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let p = Patch {
            set: b.clone(),
            removed: vec![],
        };
        let ops = vec![
            Operation::ListSessions { farm: s() },
            Operation::GetPolicyCounters { policy: s() },
            Operation::CreateFarm { farm },
            Operation::UpdateFarm {
                farm: s(),
                patch: p.clone(),
            },
            Operation::RenameFarm {
                farm: s(),
                new_name: s(),
            },
            Operation::DeleteFarm { farm: s() },
            Operation::AddBackend {
                farm: s(),
                backend: b,
            },
            Operation::UpdateBackend {
                farm: s(),
                backend: s(),
                patch: p,
                for_secs: Some(5),
            },
            Operation::SetBackendState {
                farm: s(),
                backend: s(),
                state: s(),
                for_secs: Some(5),
            },
            Operation::CancelTimedChange {
                farm: s(),
                backend: s(),
                key: s(),
            },
            Operation::RemoveBackend {
                farm: s(),
                backend: s(),
            },
            Operation::SetBackendHealth {
                farm: s(),
                backend: s(),
                health: s(),
                reason: s(),
            },
            Operation::SetBackends {
                changes: vec![BackendUpdate {
                    farm: s(),
                    backend: s(),
                    state: Some(s()),
                    weight: Some(2),
                    priority: None,
                }],
            },
            Operation::AddSession {
                farm: s(),
                client: s(),
                backend: s(),
            },
            Operation::DeleteSession {
                farm: s(),
                client: s(),
            },
            Operation::FlushSessions { farm: s() },
            Operation::CreatePolicy { policy },
            Operation::DeletePolicy { policy: s() },
            Operation::EditPolicyElements {
                policy: s(),
                edit: ElementEdit::default(),
            },
            Operation::ImportConfig {
                config: Box::default(),
                mode: ImportMode::Merge,
            },
            Operation::CheckpointCreate {
                farms: vec![s()],
                rollback_timeout: 1,
                flags: 0,
            },
            Operation::CheckpointRollback { checkpoint: 1 },
            Operation::CheckpointDestroy { checkpoint: 1 },
            Operation::CheckpointAdjustRollbackTimeout {
                checkpoint: 1,
                add_timeout: 1,
            },
            Operation::RuntimeToPersistent { farm: s() },
            Operation::Reload,
        ];
        for op in ops {
            let spec = op.spec();
            let (_, d) = op.authorizations().into_iter().next().expect("guarded");
            assert_eq!(d.verb, spec.verb());
            let mut given: Vec<&str> = d
                .pairs()
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| *n != "verb")
                .collect();
            let mut promised = spec.details.to_vec();
            given.sort_unstable();
            promised.sort_unstable();
            assert_eq!(given, promised, "{}", spec.name);
        }
    }
}
