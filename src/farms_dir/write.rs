//! Writing a farm back to its file (`RuntimeToPersistent`): that farm's entry is replaced, the
//! rest of the document kept as it was, and the file replaced atomically (a temporary file,
//! fsync, rename, fsync of the directory), so a reader sees the old file or the new, never half.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::Value;

use super::{FilesError, io_err};
use crate::model::{Backend, Farm, Health};

/// Puts `farm` in place of the entry of its name in the file at `path` (appended when the file no
/// longer has it); `None` removes that entry (the farm was deleted at runtime). What the health
/// checks found is runtime state, not configuration: it is not written.
pub fn write_farm(path: &Path, name: &str, farm: Option<&Farm>) -> Result<(), FilesError> {
    let format = |reason: String| FilesError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let mut doc: Value = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
    let Some(obj) = doc.as_object_mut() else {
        return Err(format("is not a JSON object".into()));
    };
    let farms = obj.entry("farms").or_insert_with(|| Value::Array(Vec::new()));
    let Some(list) = farms.as_array_mut() else {
        return Err(format("farms: is not a list".into()));
    };
    let at = list
        .iter()
        .position(|f| f.get("name").and_then(Value::as_str) == Some(name));
    match (farm, at) {
        (Some(f), at) => {
            let entry = serde_json::to_value(configuration_only(f)).map_err(|e| format(e.to_string()))?;
            match at {
                Some(i) => list[i] = entry,
                None => list.push(entry),
            }
        }
        (None, Some(i)) => {
            list.remove(i);
        }
        (None, None) => return Ok(()),
    }
    let mut out = serde_json::to_vec_pretty(&doc).map_err(|e| format(e.to_string()))?;
    out.push(b'\n');
    replace_file(path, &out)
}

/// The farm without what its backends' checks found.
fn configuration_only(farm: &Farm) -> Farm {
    let mut f = farm.clone();
    for b in f.backends.iter_mut() {
        forget_health(b);
    }
    f
}

fn forget_health(b: &mut Backend) {
    b.health = Health::default();
    b.health_reason.clear();
    b.health_drain = false;
    b.health_weight = None;
    b.health_ramp = None;
}

/// Replaces `path` with `bytes` atomically. The temporary file is hidden (a leading dot), so a
/// load of the directory meanwhile does not take it for a farm file.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), FilesError> {
    crate::state::replace_with(path, |f| f.write_all(bytes)).map_err(|e| io_err(&e.path)(e.source))
}
