//! Checkpoints (NetworkManager's model): the covered farms as they were, with the policies they
//! refer to (every policy for a checkpoint of every farm), kept until the operator
//! confirms (destroys the checkpoint) or rolls back; an unconfirmed one rolls back by itself at
//! its deadline. This file holds the values and the file they live in (`checkpoints.json` in the
//! state directory, fsynced before a caller hears of a change); the writer runs them
//! (`checkpoint_writer.rs`), so a rollback is one commit like any other.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::ServiceError;
use crate::model::{Config, Farm, Invalid, Policy};

pub const CHECKPOINTS_FILE: &str = "checkpoints.json";

/// Destroys every other checkpoint before this one is created.
pub const DESTROY_ALL: u32 = 0x1;
/// A rollback deletes the farms created since the checkpoint (without it they stay).
pub const DELETE_NEW_FARMS: u32 = 0x2;
/// The checkpoint may cover farms another one covers.
pub const ALLOW_OVERLAPPING: u32 = 0x8;
const KNOWN_FLAGS: u32 = DESTROY_ALL | DELETE_NEW_FARMS | ALLOW_OVERLAPPING;

/// Result codes of a rollback, per farm (docs/dbus.md, `CheckpointRollback`). The rollback is
/// one commit, so a refusal gives every farm the same code and restores none.
pub const RESTORED: u32 = 0;
/// The restored configuration is invalid (e.g. a farm names a policy deleted since).
pub const REFUSED_INVALID: u32 = 1;
/// The kernel refused the transaction.
pub const REFUSED_KERNEL: u32 = 2;
/// The state could not be saved; the kernel was put back.
pub const REFUSED_STATE: u32 = 3;

/// One checkpoint as it is saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Checkpoint {
    pub id: u32,
    /// Covers every farm (it was created with an empty list).
    pub all: bool,
    /// The covered farms as they were, in the configuration's order.
    pub farms: Vec<Farm>,
    /// Every farm's name at creation: the others are new when it rolls back.
    pub existing: Vec<String>,
    /// The policies as they were: every one when `all`, else those the covered farms refer to.
    /// Files written before checkpoints kept policies have none.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Every policy's name at creation; `None` in files written before checkpoints kept
    /// policies, whose rollback then deletes no policy.
    #[serde(default)]
    pub existing_policies: Option<Vec<String>>,
    pub flags: u32,
    /// Unix seconds.
    pub created: u64,
    /// Seconds from creation (or the last adjustment) to the deadline; 0: never.
    pub rollback_timeout: u32,
    /// Unix milliseconds of the automatic rollback; 0: never.
    pub deadline_ms: u64,
}

/// What clients read of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub id: u32,
    pub farms: Vec<String>,
    pub created: u64,
    pub rollback_timeout: u32,
    /// Unix seconds, rounded up; 0: never.
    pub deadline: u64,
}

impl Checkpoint {
    pub fn info(&self) -> Info {
        Info {
            id: self.id,
            farms: self.farms.iter().map(|f| f.name.clone()).collect(),
            created: self.created,
            rollback_timeout: self.rollback_timeout,
            deadline: self.deadline_ms.div_ceil(1000),
        }
    }

    fn covers(&self, name: &str) -> bool {
        self.all || self.farms.iter().any(|f| f.name == name)
    }

    /// Whether it covers a farm `other` covers too.
    pub fn overlaps(&self, other: &Checkpoint) -> bool {
        self.all || other.all || self.farms.iter().any(|f| other.covers(&f.name))
    }

    /// Sets the deadline `seconds` from `now_ms` (0: never).
    pub fn arm(&mut self, seconds: u32, now_ms: u64) {
        self.rollback_timeout = seconds;
        self.deadline_ms = match seconds {
            0 => 0,
            s => now_ms + u64::from(s) * 1000,
        };
    }

    pub fn expired(&self, now_ms: u64) -> bool {
        self.deadline_ms != 0 && self.deadline_ms <= now_ms
    }

    /// `config` with the kept policies and the covered farms put back as they were (in place, or
    /// appended when deleted since) and, with delete-new-farms, the farms created since removed
    /// (and, when it covers every farm, the policies created since that no farm uses); and the
    /// farms it touched, each once, sorted. Policies and farms change in the one commit, so a
    /// restored farm never names a policy missing at that moment.
    pub fn restore(&self, config: &Config) -> (Config, Vec<String>) {
        let mut new = config.clone();
        for saved in &self.policies {
            match new.policies.iter().position(|p| p.name == saved.name) {
                Some(i) => new.policies[i] = saved.clone(),
                None => new.policies.push(saved.clone()),
            }
        }
        let mut touched: Vec<String> = self.farms.iter().map(|f| f.name.clone()).collect();
        if self.flags & DELETE_NEW_FARMS != 0 {
            new.farms.retain(|f| {
                let fresh = !self.existing.contains(&f.name);
                if fresh {
                    touched.push(f.name.clone());
                }
                !fresh
            });
        }
        for saved in &self.farms {
            match new.farms.iter().position(|f| f.name == saved.name) {
                Some(i) => new.farms[i] = saved.clone(),
                None => new.farms.push(saved.clone()),
            }
        }
        if self.all
            && self.flags & DELETE_NEW_FARMS != 0
            && let Some(existing) = &self.existing_policies
        {
            // A checkpoint of some farms cannot tell a new policy from one that other farms
            // or a later change rely on, so only a checkpoint of everything deletes them.
            let used = |name: &str| new.farms.iter().any(|f| f.policies.iter().any(|p| p == name));
            let gone: Vec<String> = new
                .policies
                .iter()
                .filter(|p| !existing.contains(&p.name) && !used(&p.name))
                .map(|p| p.name.clone())
                .collect();
            new.policies.retain(|p| !gone.contains(&p.name));
        }
        touched.sort_unstable();
        touched.dedup();
        (new, touched)
    }
}

/// Builds a checkpoint of `config` covering `names` (empty: every farm).
pub fn create(
    config: &Config,
    id: u32,
    names: &[String],
    timeout: u32,
    flags: u32,
    now_ms: u64,
) -> Result<Checkpoint, ServiceError> {
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Invalid::one(
            "flags",
            format!("{flags:#x} has unknown bits; known: 0x1 destroy-all, 0x2 delete-new-farms, 0x8 allow-overlapping"),
        )
        .into());
    }
    let mut missing = Vec::new();
    for n in names {
        if config.farm(n).is_none() {
            missing.push(n.as_str());
        }
    }
    if !missing.is_empty() {
        return Err(ServiceError::NotFound(format!(
            "farms: no farm is named {}",
            missing.join(", ")
        )));
    }
    let farms = config
        .farms
        .iter()
        .filter(|f| names.is_empty() || names.contains(&f.name))
        .cloned()
        .collect::<Vec<Farm>>();
    let referred = |name: &str| farms.iter().any(|f| f.policies.iter().any(|p| p == name));
    let policies = config
        .policies
        .iter()
        .filter(|p| names.is_empty() || referred(&p.name))
        .cloned()
        .collect();
    let mut c = Checkpoint {
        id,
        all: names.is_empty(),
        farms,
        existing: config.farms.iter().map(|f| f.name.clone()).collect(),
        policies,
        existing_policies: Some(config.policies.iter().map(|p| p.name.clone()).collect()),
        flags,
        created: now_ms / 1000,
        rollback_timeout: 0,
        deadline_ms: 0,
    };
    c.arm(timeout, now_ms);
    Ok(c)
}

/// The refusal of a checkpoint that overlaps `existing` ones.
pub fn overlap_refusal(new: &Checkpoint, existing: &[Checkpoint]) -> Option<ServiceError> {
    let ids: Vec<String> = existing
        .iter()
        .filter(|c| c.overlaps(new))
        .map(|c| c.id.to_string())
        .collect();
    (!ids.is_empty()).then(|| {
        ServiceError::Exists(format!(
            "farms: checkpoint {} already covers some of these farms (flag 0x8 allow-overlapping \
             allows it, 0x1 destroy-all destroys the others)",
            ids.join(", ")
        ))
    })
}

/// The rollback's result code for a refusal.
pub fn refusal_code(e: &ServiceError) -> u32 {
    match e {
        ServiceError::Invalid(_) | ServiceError::NotFound(_) | ServiceError::Exists(_) => REFUSED_INVALID,
        ServiceError::State(_) => REFUSED_STATE,
        _ => REFUSED_KERNEL,
    }
}

/// Milliseconds since the epoch, by the wall clock (deadlines survive a restart).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The saved checkpoints, and the next id to give.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Saved {
    pub next_id: u32,
    pub checkpoints: Vec<Checkpoint>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: not a valid checkpoints file: {reason}")]
    Format { path: String, reason: String },
}

/// Reads `dir/checkpoints.json`; none saved when it is missing.
pub fn load(dir: &Path) -> Result<Saved, FileError> {
    let path = dir.join(CHECKPOINTS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Saved::default()),
        Err(source) => {
            return Err(FileError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    serde_json::from_str(&text).map_err(|e| FileError::Format {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Replaces `dir/checkpoints.json` atomically (temporary file, fsync, rename, fsync the
/// directory): on disk before the caller is answered.
pub fn save(dir: &Path, saved: &Saved) -> Result<(), FileError> {
    crate::state::replace_with(&dir.join(CHECKPOINTS_FILE), |f| {
        serde_json::to_writer(&mut *f, saved)?;
        f.write_all(b"\n")
    })
    .map_err(|e| FileError::Io {
        path: e.path.display().to_string(),
        source: e.source,
    })
}
