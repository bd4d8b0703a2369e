//! The persisted state: the configuration and the engine's allocation.
//!
//! Two files in the state directory. `state.json` is the snapshot, a document an operator can
//! read, replaced atomically (write to a temporary file, fsync, rename, fsync the directory).
//! `journal.jsonl` beside it holds one self-checking record per change committed since that
//! snapshot, each fsynced before the change is acknowledged, so saving a change costs the size
//! of the change, not of the configuration. From time to time the journal is compacted into a
//! new snapshot, which names the last record it includes; replay skips records at or below it,
//! so a crash between writing the snapshot and emptying the journal loses and repeats nothing.

pub mod journal;
pub mod records;
mod replace;
mod snapshot;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::engine::Allocation;
use crate::model::{Config, Invalid};

pub use journal::{Journal, Limits, Recovery, Torn, recover};
pub use replace::{ReplaceError, replace_with};
pub use snapshot::save;

pub const STATE_FILE: &str = "state.json";
pub const JOURNAL_FILE: &str = "journal.jsonl";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nftlbd";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    /// The last journal record this state includes (0: none).
    #[serde(default)]
    pub sequence: u64,
    pub config: Config,
    pub allocation: Allocation,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a valid state file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: the saved configuration is invalid: {source}")]
    Invalid { path: PathBuf, source: Invalid },
    #[error(
        "{path}: line {line}: {reason}; the snapshot and {recovered} journal record(s) before it \
         were recovered, and nothing was changed"
    )]
    Journal {
        path: PathBuf,
        line: usize,
        reason: String,
        recovered: usize,
    },
    #[error("{path} is locked by a running nftlbd; change the configuration through it")]
    Busy { path: PathBuf },
}

/// The state directory's lock: one writer of the tables and the state files at a time.
pub struct StateLock {
    _lock: Flock<File>,
}

/// Takes the lock of `dir` (creating the directory), or says who holds it.
pub fn lock(dir: &Path) -> Result<StateLock, StateError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join("lock");
    if !path.exists() {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
    }
    // Held read-only: a descriptor open for writing would keep the directory's file system
    // from being made read-only under the daemon, and the lock needs no write access.
    let file = File::open(&path).map_err(io_err(&path))?;
    // flock, not fcntl locks: it belongs to this open file, so it is released when the daemon
    // exits however it exits, and no other descriptor of the process can drop it by closing.
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(StateLock { _lock: lock }),
        Err((_, Errno::EWOULDBLOCK)) => Err(StateError::Busy { path }),
        Err((_, e)) => Err(io_err(&path)(e.into())),
    }
}

impl State {
    pub fn new(config: Config, allocation: Allocation) -> State {
        State {
            version: FORMAT_VERSION,
            sequence: 0,
            config,
            allocation,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The saved state: the snapshot with the journal replayed over it; `None` when there is
/// neither. A torn last record (its write never completed, so its change was never
/// acknowledged) is dropped with a warning; any other damage is an error.
pub fn load(dir: &Path) -> Result<Option<State>, StateError> {
    let r = recover(dir)?;
    if let Some(t) = &r.torn {
        tracing::warn!("{t}");
    }
    Ok(r.state)
}

#[cfg(test)]
mod tests;
