//! Many farms loaded at once: the whole configuration imported through a fresh daemon in one
//! call, beside `nft -f` of the hand-written ruleset of the same services into a fresh namespace,
//! taking turns round by round.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::daemon::{Daemon, Rss};
use crate::error::{BenchError, Result};
use crate::{farms, nft};

pub struct FarmsRun {
    pub farms: usize,
    pub daemon: Vec<Duration>,
    pub nft: Vec<Duration>,
    /// The daemon's memory right after each load.
    pub rss: Vec<Rss>,
}

pub fn farms(n: usize, rounds: usize, dir: &Path) -> Result<FarmsRun> {
    let file = dir.join(format!("farms-{n}.nft"));
    std::fs::write(&file, farms::ruleset(n)).map_err(BenchError::io(format!("write {}", file.display())))?;
    let file = file
        .to_str()
        .ok_or_else(|| BenchError::Daemon("a temporary path that is not UTF-8".into()))?;
    let import = json!({"config": farms::document(n), "mode": "replace"});
    let mut run = FarmsRun {
        farms: n,
        daemon: Vec::with_capacity(rounds),
        nft: Vec::with_capacity(rounds),
        rss: Vec::with_capacity(rounds),
    };
    for round in 0..rounds {
        let mut d = Daemon::start(&format!("farms{round}"))?;
        run.daemon.push(d.timed("ImportConfig", import.clone())?);
        run.rss.push(d.rss_at_rest()?);
        check(&mut d, n)?;
        drop(d);

        fresh_namespace()?;
        run.nft.push(nft::run(&["-f", file])?);
        nft::run(&["flush", "ruleset"])?;
    }
    Ok(run)
}

/// The daemon holds every farm it was given.
fn check(d: &mut Daemon, n: usize) -> Result<()> {
    let (got, _) = d.call("ListFarms", Value::Object(Default::default()))?;
    let listed = got["farms"].as_array().map_or(0, Vec::len);
    if listed != n {
        return Err(BenchError::Daemon(format!("{listed} farms loaded, not {n}")));
    }
    Ok(())
}

/// Moves the bench (and the `nft` it starts next) into a new, empty network namespace.
fn fresh_namespace() -> Result<()> {
    // SAFETY: unshare has no memory-safety preconditions; the bench starts no threads, so the
    // whole process moves.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(BenchError::io("unshare(CLONE_NEWNET)")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
