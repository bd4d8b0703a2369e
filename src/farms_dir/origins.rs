//! Which file owns which farm and policy name. Saved beside the state file (which stays as it
//! is) whenever a load changes it, so a restart knows the farms of a file removed meanwhile.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{FilesError, io_err, write::replace_file};

/// The file in the state directory.
pub const ORIGINS_FILE: &str = "origins.json";

/// The origin of a farm or policy no file declares.
pub const RUNTIME: &str = "runtime";

/// Names owned by files, and the file of each. A name not here was made at runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Origins {
    #[serde(default)]
    pub farms: BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub policies: BTreeMap<String, PathBuf>,
}

impl Origins {
    /// The file that owns farm `name`, if one does.
    pub fn farm(&self, name: &str) -> Option<&Path> {
        self.farms.get(name).map(PathBuf::as_path)
    }

    /// A farm's origin as the front ends show it: its file's path, or `runtime`.
    pub fn farm_origin(&self, name: &str) -> String {
        describe(self.farms.get(name))
    }

    /// A policy's origin: its file's path, or `runtime`.
    pub fn policy_origin(&self, name: &str) -> String {
        describe(self.policies.get(name))
    }

    /// Reads `dir/origins.json`; none (every name a runtime one) when there is no such file.
    pub fn load(dir: &Path) -> Result<Origins, FilesError> {
        let path = dir.join(ORIGINS_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Origins::default()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        serde_json::from_str(&text).map_err(|e| FilesError::Format {
            path,
            reason: e.to_string(),
        })
    }

    /// Replaces `dir/origins.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), FilesError> {
        let path = dir.join(ORIGINS_FILE);
        let mut text = serde_json::to_vec_pretty(self).map_err(|e| FilesError::Format {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        text.push(b'\n');
        replace_file(&path, &text)
    }
}

fn describe(path: Option<&PathBuf>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => RUNTIME.to_string(),
    }
}
