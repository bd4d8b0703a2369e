//! Reading the directory: each file parsed on its own (its shape only; values and references
//! are validated when the files are put together).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{FilesError, io_err};
use crate::model::{Config, Invalid, parse_document};

/// One farm file: its path and its document, or why it cannot be read (fields not yet prefixed
/// with the path).
#[derive(Debug, Clone)]
pub struct File {
    pub path: PathBuf,
    pub doc: Result<Config, Invalid>,
}

/// The files `*.json` of `dir`, in the order of their names; none when `dir` does not exist.
/// Hidden files are skipped: a write-back's temporary file is one.
pub fn read_dir(dir: &Path) -> Result<Vec<File>, FilesError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        paths.push(entry.path());
    }
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|path| {
            let doc = match fs::read_to_string(&path) {
                Ok(text) => parse_document(&text),
                Err(e) => Err(Invalid::one("file", e.to_string())),
            };
            File { path, doc }
        })
        .collect())
}
