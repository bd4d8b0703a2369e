//! The persisted state: the configuration and the engine's allocation, saved after every commit
//! (write to a temporary file, fsync, rename, fsync the directory) so a crash at any point leaves
//! either the old or the new file, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::engine::Allocation;
use crate::model::{self, Config, Invalid};

pub const STATE_FILE: &str = "state.json";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nftlbd";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
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
    #[error("{path} is locked by a running nftlbd; change the configuration through it")]
    Busy { path: PathBuf },
}

/// The state directory's lock: one writer of the tables and the state file at a time.
pub struct StateLock {
    _lock: Flock<File>,
}

/// Takes the lock of `dir` (creating the directory), or says who holds it.
pub fn lock(dir: &Path) -> Result<StateLock, StateError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
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

/// Reads `dir/state.json`; `None` when there is none yet.
pub fn load(dir: &Path) -> Result<Option<State>, StateError> {
    let path = dir.join(STATE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    // Name the place of a bad value (the file may have been edited by hand).
    let de = &mut serde_json::Deserializer::from_str(&text);
    let state: State = serde_path_to_error::deserialize(de).map_err(|e| StateError::Format {
        path: path.clone(),
        reason: format!("{}: {}", e.path(), e.inner()),
    })?;
    if state.version != FORMAT_VERSION {
        return Err(StateError::Format {
            path,
            reason: format!("format version {} is not {FORMAT_VERSION}", state.version),
        });
    }
    model::validate(&state.config).map_err(|source| StateError::Invalid { path, source })?;
    Ok(Some(state))
}

/// Replaces `dir/state.json` atomically.
pub fn save(dir: &Path, state: &State) -> Result<(), StateError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(state).map_err(|e| StateError::Format {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(&text).map_err(io_err(&tmp))?;
    f.write_all(b"\n").map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_atomically() {
        let dir = std::env::temp_dir().join(format!("nftlbd-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert!(load(&dir).unwrap().is_none());
        let config = model::parse_config(
            r#"{"farms":[{"name":"web","virtual-addresses":["192.0.2.1"],
               "backends":[{"name":"a","ip-addr":"10.0.0.1"}]}]}"#,
        )
        .unwrap();
        let mut alloc = Allocation::default();
        alloc.update(&config).unwrap();
        let state = State::new(config, alloc);
        save(&dir, &state).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(state));
        assert!(!dir.join(".state.json.tmp").exists());
        let held = lock(&dir).unwrap();
        assert!(matches!(lock(&dir), Err(StateError::Busy { .. })));
        drop(held);
        lock(&dir).unwrap();
        fs::write(dir.join(STATE_FILE), "{\"version\":1,").unwrap();
        assert!(matches!(load(&dir), Err(StateError::Format { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
