//! The snapshot, `state.json`: read whole, and replaced atomically (write to a temporary file,
//! fsync, rename, fsync the directory) so a crash at any point leaves the old or the new file,
//! never a torn one.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use super::{FORMAT_VERSION, STATE_FILE, State, StateError, io_err};
use crate::engine::Allocation;
use crate::model::{self, Config};

/// What `save` writes, borrowed: compaction saves the engine's state without copying it.
#[derive(Serialize)]
struct StateRef<'a> {
    version: u32,
    sequence: u64,
    config: &'a Config,
    allocation: &'a Allocation,
}

/// Reads `dir/state.json`; `None` when there is none yet.
pub(super) fn load(dir: &Path) -> Result<Option<State>, StateError> {
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

/// Replaces `dir/state.json` atomically with `state`.
pub fn save(dir: &Path, state: &State) -> Result<(), StateError> {
    save_parts(dir, state.sequence, &state.config, &state.allocation)
}

/// Replaces `dir/state.json` atomically with a state that includes journal records up to
/// `sequence`.
pub(super) fn save_parts(
    dir: &Path,
    sequence: u64,
    config: &Config,
    allocation: &Allocation,
) -> Result<(), StateError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let state = StateRef {
        version: FORMAT_VERSION,
        sequence,
        config,
        allocation,
    };
    // Streamed to the file: at 60,000 backends the text is about 10 MiB, which would otherwise be
    // held whole in memory beside the configuration it describes.
    super::replace_with(&dir.join(STATE_FILE), |f| {
        let mut out = io::BufWriter::with_capacity(256 << 10, f);
        serde_json::to_writer_pretty(&mut out, &state)?;
        out.write_all(b"\n")?;
        out.flush()
    })
    .map_err(|e| StateError::Io {
        path: e.path,
        source: e.source,
    })
}
