//! Declarative farm files: every `*.json` of a directory (`/etc/nftlbd/farms.d` by default) is a
//! canonical document (`{"farms": [...], "policies": [...]}`) whose farms and policies the file
//! owns. They are read at start and at each Reload and put over the saved configuration in one
//! commit ([`merge`]); a farm can be written back to its file ([`write`]). Which file owns which
//! name is kept in the state directory ([`origins`]), so that a farm whose file was removed while
//! the daemon was stopped is still known as the file's, and deleted.

pub mod merge;
pub mod origins;
pub mod read;
pub mod write;

pub use merge::{Loaded, merge};
pub use origins::{ORIGINS_FILE, Origins, RUNTIME};
pub use read::{File, read_dir};

/// Where `nftlbd run` reads farm files unless told otherwise.
pub const DEFAULT_FARMS_DIR: &str = "/etc/nftlbd/farms.d";

/// Why the farm files could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format {
        path: std::path::PathBuf,
        reason: String,
    },
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}
