//! Timed changes (as firewalld's timeouts): a backend's state, weight or priority set for a
//! while, then put back by the writer itself.
//!
//! The rules, in one place:
//! - A timed change remembers the value the key had before it; when its time is up, the writer
//!   restores that value in its own commit (reason `timed`), all restores due together in one.
//! - A later change of that key by anyone else wins: the pending restore is dropped (also when the
//!   later change sets the same value explicitly, so `state drain` after `state drain --for 600`
//!   makes the drain permanent). A second timed change of the same key replaces the first and
//!   keeps the first one's value to restore. A timed change to the value the key already has,
//!   with nothing pending, has nothing to put back and starts nothing.
//! - Deleting the backend or its farm (renaming the farm too) drops its pending changes.
//! - Cancelling one restores its value now (an explicit change of the key keeps the new value
//!   instead).
//! - Pending changes are saved in the state directory (`timed.json`, fsynced) before a timed
//!   change is acknowledged; at start those whose time passed are restored at once. Deadlines are
//!   wall-clock times, so they survive a restart; a clock step moves them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ServiceError;
use super::operation::{BackendUpdate, Patch};
use crate::model::{Backend, BackendState, FieldError, Invalid};

/// Where the pending timed changes are saved, in the state directory.
pub const TIMED_FILE: &str = "timed.json";

/// The longest a timed change may last (a year): a longer one is a permanent change.
pub const MAX_SECONDS: u32 = 366 * 24 * 3600;

/// The keys a timed change may set: those an operator changes for a while at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Key {
    State,
    Weight,
    Priority,
}

impl Key {
    pub fn word(self) -> &'static str {
        match self {
            Key::State => "state",
            Key::Weight => "weight",
            Key::Priority => "priority",
        }
    }

    pub fn parse(word: &str) -> Option<Key> {
        match word {
            "state" => Some(Key::State),
            "weight" => Some(Key::Weight),
            "priority" => Some(Key::Priority),
            _ => None,
        }
    }

    /// The backend's value of this key, as canonical JSON.
    pub fn value(self, b: &Backend) -> Value {
        match self {
            Key::State => serde_json::to_value(b.state).unwrap_or(Value::Null),
            Key::Weight => Value::from(b.weight),
            Key::Priority => Value::from(b.priority),
        }
    }

    /// Sets the backend's key to `v`; false when `v` is not a value of this key.
    pub fn set(self, b: &mut Backend, v: &Value) -> bool {
        match self {
            Key::State => match serde_json::from_value::<BackendState>(v.clone()) {
                Ok(s) => {
                    b.state = s;
                    true
                }
                Err(_) => false,
            },
            Key::Weight | Key::Priority => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => {
                    if self == Key::Weight {
                        b.weight = n;
                    } else {
                        b.priority = n;
                    }
                    true
                }
                None => false,
            },
        }
    }
}

/// Which key of which backend.
pub type Target = (String, String, Key);

/// A pending timed change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Pending {
    pub farm: String,
    pub backend: String,
    pub key: Key,
    /// What the key goes back to.
    pub restore: Value,
    /// What the timed change set: while the key still has it, nobody changed it since.
    pub set: Value,
    /// When, in microseconds since the Unix epoch.
    pub deadline: u64,
}

impl Pending {
    pub fn target(&self) -> Target {
        (self.farm.clone(), self.backend.clone(), self.key)
    }
}

/// A timed change to start with an edit: the key is set to `set` by that edit, for `duration`.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    pub farm: String,
    pub backend: String,
    pub key: Key,
    pub set: Value,
    pub duration: Duration,
}

/// What an edit does to the pending timed changes besides its own effect: the keys it sets
/// explicitly (their pending restores are dropped) and those it sets for a while.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimedEdit {
    pub arm: Vec<Arm>,
    pub disarm: Vec<Target>,
}

impl TimedEdit {
    pub fn is_empty(&self) -> bool {
        self.arm.is_empty() && self.disarm.is_empty()
    }
}

/// Microseconds since the Unix epoch of `t`.
pub fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum TimedFileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a valid list of timed changes: {reason}")]
    Format { path: PathBuf, reason: String },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimedDoc {
    timed: Vec<Pending>,
}

/// The pending timed changes: by target, and in deadline order (the writer's one queue).
#[derive(Debug, Clone, Default)]
pub struct Timers {
    by_target: BTreeMap<Target, Pending>,
    queue: BTreeSet<(u64, Target)>,
}

impl Timers {
    pub fn is_empty(&self) -> bool {
        self.by_target.is_empty()
    }

    pub fn get(&self, t: &Target) -> Option<&Pending> {
        self.by_target.get(t)
    }

    pub fn insert(&mut self, p: Pending) {
        let t = p.target();
        self.remove(&t);
        self.queue.insert((p.deadline, t.clone()));
        self.by_target.insert(t, p);
    }

    pub fn remove(&mut self, t: &Target) -> Option<Pending> {
        let p = self.by_target.remove(t)?;
        self.queue.remove(&(p.deadline, t.clone()));
        Some(p)
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<u64> {
        self.queue.first().map(|(d, _)| *d)
    }

    /// Takes out every change due at `now` (microseconds), earliest first.
    pub fn take_due(&mut self, now: u64) -> Vec<Pending> {
        let mut due = Vec::new();
        while let Some((d, _)) = self.queue.first()
            && *d <= now
        {
            if let Some((_, t)) = self.queue.pop_first()
                && let Some(p) = self.by_target.remove(&t)
            {
                due.push(p);
            }
        }
        due
    }

    /// The pending changes of one farm.
    pub fn of_farm<'a>(&'a self, farm: &'a str) -> impl Iterator<Item = &'a Pending> + 'a {
        self.by_target
            .range((farm.to_string(), String::new(), Key::State)..)
            .take_while(move |(t, _)| t.0 == farm)
            .map(|(_, p)| p)
    }

    /// Every pending change, by farm, backend and key.
    pub fn list(&self) -> Vec<Pending> {
        self.by_target.values().cloned().collect()
    }

    /// Reads `dir/timed.json`; none when there is no such file.
    pub fn load(dir: &Path) -> Result<Timers, TimedFileError> {
        let path = dir.join(TIMED_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Timers::default()),
            Err(source) => return Err(TimedFileError::Io { path, source }),
        };
        let f: TimedDoc = serde_json::from_str(&text).map_err(|e| TimedFileError::Format {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut t = Timers::default();
        for p in f.timed {
            t.insert(p);
        }
        Ok(t)
    }

    /// Replaces `dir/timed.json` atomically (temporary file, fsync, rename, fsync the
    /// directory): a crash leaves the old list or the new one.
    pub fn save(&self, dir: &Path) -> Result<(), TimedFileError> {
        let path = dir.join(TIMED_FILE);
        let text = serde_json::to_vec_pretty(&TimedDoc { timed: self.list() }).map_err(|e| {
            TimedFileError::Format {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
        crate::state::replace_with(&path, |f| {
            f.write_all(&text)?;
            f.write_all(b"\n")
        })
        .map_err(|e| TimedFileError::Io {
            path: e.path,
            source: e.source,
        })
    }
}

fn duration(field: &str, secs: u32) -> Result<Duration, ServiceError> {
    if secs == 0 || secs > MAX_SECONDS {
        return Err(ServiceError::Invalid(Invalid::one(
            field,
            format!("{secs} is not between 1 and {MAX_SECONDS} seconds"),
        )));
    }
    Ok(Duration::from_secs(u64::from(secs)))
}

/// A backend's state set for `for_secs` (none: for good, ending a pending timed change).
pub fn state_edit(
    farm: &str,
    backend: &str,
    state: &str,
    for_secs: Option<u32>,
) -> Result<TimedEdit, ServiceError> {
    let target = (farm.to_string(), backend.to_string(), Key::State);
    Ok(match for_secs {
        None => TimedEdit {
            disarm: vec![target],
            ..TimedEdit::default()
        },
        Some(s) => TimedEdit {
            arm: vec![Arm {
                farm: target.0,
                backend: target.1,
                key: Key::State,
                set: Value::String(state.to_string()),
                duration: duration(&format!("farms[{farm}].backends[{backend}].for"), s)?,
            }],
            disarm: Vec::new(),
        },
    })
}

/// A backend's keys set for `for_secs`: only weight and priority may be, and not reset.
/// Without a time, the timed keys it sets end their pending changes.
pub fn update_edit(
    farm: &str,
    backend: &str,
    patch: &Patch,
    for_secs: Option<u32>,
) -> Result<TimedEdit, ServiceError> {
    let at = format!("farms[{farm}].backends[{backend}]");
    let Some(secs) = for_secs else {
        let disarm = patch
            .keys()
            .into_iter()
            .filter_map(Key::parse)
            .map(|k| (farm.to_string(), backend.to_string(), k))
            .collect();
        return Ok(TimedEdit {
            disarm,
            ..TimedEdit::default()
        });
    };
    let d = duration(&format!("{at}.for"), secs)?;
    let mut errors = Vec::new();
    let mut arm = Vec::new();
    for k in &patch.removed {
        errors.push(FieldError {
            field: format!("{at}.{k}"),
            reason: "a timed change sets a value; it cannot reset one".into(),
        });
    }
    for (k, v) in &patch.set {
        match Key::parse(k) {
            Some(key) if key != Key::State => arm.push(Arm {
                farm: farm.to_string(),
                backend: backend.to_string(),
                key,
                set: v.clone(),
                duration: d,
            }),
            _ => errors.push(FieldError {
                field: format!("{at}.{k}"),
                reason: "only weight and priority can be changed for a time (the state: SetBackendState)"
                    .into(),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ServiceError::Invalid(Invalid(errors)));
    }
    Ok(TimedEdit {
        arm,
        disarm: Vec::new(),
    })
}

/// A batch's explicit changes end the pending timed changes of the keys they set.
pub fn batch_edit(changes: &[BackendUpdate]) -> TimedEdit {
    let disarm = changes
        .iter()
        .flat_map(|u| {
            u.keys()
                .filter_map(Key::parse)
                .map(|k| (u.farm.clone(), u.backend.clone(), k))
        })
        .collect();
    TimedEdit {
        disarm,
        ..TimedEdit::default()
    }
}

/// The target a cancel names, its key checked.
pub fn target(farm: String, backend: String, key: &str) -> Result<Target, ServiceError> {
    let k = Key::parse(key).ok_or_else(|| {
        ServiceError::Invalid(Invalid::one(
            "key",
            format!("{key:?} is not one of state, weight, priority"),
        ))
    })?;
    Ok((farm, backend, k))
}
