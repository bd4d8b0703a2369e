//! Replacing a file atomically, for every file the daemon rewrites whole (the snapshot,
//! checkpoints, timed changes, a farm file written back): a hidden temporary file beside it,
//! fsynced, renamed over it, then the directory fsynced. A crash at any point leaves the old file
//! or the new one, never a torn one; the leading dot keeps a directory load (farm files) from
//! taking the temporary file for one of its own.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Which step failed, on which path, and why.
#[derive(Debug)]
pub struct ReplaceError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Replaces `path` with what `write` writes into the temporary file. On error the temporary file
/// is removed (a full disk would otherwise keep its blocks) and `path` is as it was.
pub fn replace_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), ReplaceError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplaceError { path, source }
    };
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        write(&mut f)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(failed(&tmp)(e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(failed(path)(e));
    }
    // The rename is durable once the directory is.
    File::open(dir).and_then(|d| d.sync_all()).map_err(failed(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn replaces_whole_or_leaves_the_old_file() {
        let dir = crate::testkit::TempDir::new("replace-");
        let path = dir.path().join("x.json");
        replace_with(&path, |f| f.write_all(b"one\n")).unwrap();
        replace_with(&path, |f| f.write_all(b"two\n")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        let err = replace_with(&path, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.path, dir.path().join(".x.json.tmp"));
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("x.json")]);
    }
}
