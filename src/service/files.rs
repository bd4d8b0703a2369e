//! The farm files in the service: read at start and at each Reload and committed with the state
//! file in one transaction, and a farm written back to its file (`RuntimeToPersistent`).

use std::path::Path;
use std::sync::Arc;

use super::{Service, ServiceError};
use crate::engine::{EngineError, check_supported};
use crate::farms_dir::{self, Origins};
use crate::model::{Config, FieldError, Invalid, validate};
use crate::netlink::KernelFeatures;

/// What a Reload did: the generation it committed, and the files it refused (`PATH: field`,
/// reason), whose farms and policies stayed as they were.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloaded {
    pub generation: u64,
    pub refused: Vec<FieldError>,
}

/// `current` with the files of `dir` put over it (owners in `owned`); refusals are logged here.
/// A directory that cannot be read is an error: which farms its files still declare is unknown.
pub(super) fn load(
    dir: &Path,
    current: &Config,
    owned: &Origins,
    features: &KernelFeatures,
) -> Result<farms_dir::Loaded, ServiceError> {
    let files = farms_dir::read_dir(dir).map_err(|e| ServiceError::State(e.to_string()))?;
    let count = files.len();
    let loaded = farms_dir::merge(current, owned, files, |c| acceptable(c, features));
    for e in &loaded.refused {
        tracing::error!(field = %e.field, reason = %e.reason, "farm file refused: {e}");
    }
    tracing::info!(
        "read {count} farm file(s) in {}: {} farm(s) and {} policy(ies) declared",
        dir.display(),
        loaded.origins.farms.len(),
        loaded.origins.policies.len()
    );
    Ok(loaded)
}

/// Whether `config` is valid and this daemon can run it, as the engine will check.
fn acceptable(config: &Config, features: &KernelFeatures) -> Result<(), Invalid> {
    validate(config)?;
    check_supported(config, features).map_err(|e| match e {
        EngineError::Unsupported { field, reason } => Invalid::one(field, reason),
        EngineError::Invalid(i) => i,
        other => Invalid::one("farms", other.to_string()),
    })
}

impl Service {
    /// Which file owns each farm and policy (names not there were made at runtime).
    pub fn origins(&self) -> Arc<Origins> {
        match self.shared.origins.read() {
            Ok(o) => o.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Writes farm `name` as committed into the file that declares it; when it was deleted at
    /// runtime, its entry leaves the file. Refused for a farm no file declares.
    pub(super) async fn persist(&self, name: String) -> Result<u64, ServiceError> {
        let origins = self.origins();
        let Some(path) = origins.farm(&name).map(Path::to_path_buf) else {
            return Err(match self.index().farm(&name) {
                Some(_) => ServiceError::Invalid(Invalid::one(
                    format!("farms[{name}]"),
                    "was made at runtime: no file declares it (export it into a file of the farms directory)",
                )),
                None => ServiceError::NotFound(format!("no farm is named {name:?}")),
            });
        };
        let shared = self.shared.clone();
        let generation = self.generation();
        tokio::task::spawn_blocking(move || {
            // One write-back at a time: each rewrites a whole file from what it read.
            let _one = match shared.writing.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let index = match shared.index.read() {
                Ok(c) => c.clone(),
                Err(p) => p.into_inner().clone(),
            };
            farms_dir::write::write_farm(&path, &name, index.farm(&name))
                .map_err(|e| ServiceError::State(e.to_string()))?;
            tracing::info!(farm = %name, file = %path.display(), "farm written back to its file");
            Ok(generation)
        })
        .await
        .map_err(|_| ServiceError::Stopped)?
    }
}

/// Refuses renaming a farm a file declares: its file would bring the old name back at the next
/// Reload beside the renamed one.
pub(super) fn refuse_rename(origins: &Origins, farm: &str) -> Result<(), ServiceError> {
    match origins.farm(farm) {
        Some(p) => Err(ServiceError::Invalid(Invalid::one(
            format!("farms[{farm}].name"),
            format!("declared by {}: rename it there and Reload", p.display()),
        ))),
        None => Ok(()),
    }
}
