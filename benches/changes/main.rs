//! Changes bench: backend changes end to end through the daemon (varlink call → one writer →
//! engine → one kernel transaction → state file saved → events) at several farm sizes, beside
//! `nft add element` into a hand-written map of the same size, in the same run. Needs root: the
//! daemon gets a fresh network namespace per size, and the bench moves itself into another for
//! `nft`.
//!
//!   cargo bench --bench changes    full run: 10, 1,000, 10,000 and 60,000 backends; per size
//!                                  20 rounds of changes (at least 5, fewer if they take over 3
//!                                  minutes) and 5 loads
//!   cargo test --benches           smoke run (10 and 100 backends, 2 rounds) so it cannot rot
//!
//! Then many farms of 2 backends (10,000; smoke run 100) are loaded whole through a fresh daemon in
//! one `ImportConfig` call, beside `nft -f` of the same services written by hand with one map per
//! farm (5 rounds; smoke run 1).
//!
//! The daemon's memory (VmRSS) is read at rest: 300 ms after the last reply, then until two reads
//! 100 ms apart agree, so it is what the daemon holds rather than a race with the trim its writer
//! makes once idle; the peak (VmHWM) is read beside it.
//!
//! $NFTLBD_BENCH_CHANGES_SIZES (e.g. `10,1000`; empty: none) replaces the sizes,
//! $NFTLBD_BENCH_CHANGES_FARMS (0: skip) the number of farms. Figures go to stdout and to
//! `target/nftlbd-bench/changes.md` (or $NFTLBD_BENCH_OUT_CHANGES).

mod daemon;
mod error;
mod farm;
mod farms;
mod load;
mod measure;
mod nft;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use error::{BenchError, Result};
use measure::Plan;

fn plan(full: bool) -> Plan {
    if full {
        Plan {
            reps: 20,
            min_reps: 5,
            budget: Duration::from_secs(180),
            loads: 5,
        }
    } else {
        Plan {
            reps: 2,
            min_reps: 2,
            budget: Duration::MAX,
            loads: 1,
        }
    }
}

fn sizes(full: bool) -> Result<Vec<usize>> {
    let Ok(list) = std::env::var("NFTLBD_BENCH_CHANGES_SIZES") else {
        return Ok(if full {
            vec![10, 1_000, 10_000, 60_000]
        } else {
            vec![10, 100]
        });
    };
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| match s.trim().parse::<usize>() {
            Ok(n) if (1..=65_000).contains(&n) => Ok(n),
            _ => Err(BenchError::Daemon(format!(
                "NFTLBD_BENCH_CHANGES_SIZES: {s:?} is not a farm size (1-65000)"
            ))),
        })
        .collect()
}

fn farm_count(full: bool) -> Result<usize> {
    let Ok(n) = std::env::var("NFTLBD_BENCH_CHANGES_FARMS") else {
        return Ok(if full { 10_000 } else { 100 });
    };
    match n.trim().parse::<usize>() {
        // Farm ids are 16 bits in the daemon's marks.
        Ok(n) if n <= 65_000 => Ok(n),
        _ => Err(BenchError::Daemon(format!(
            "NFTLBD_BENCH_CHANGES_FARMS: {n:?} is not a number of farms (0-65000)"
        ))),
    }
}

fn run(full: bool) -> Result<()> {
    let sizes = sizes(full)?;
    let farms = farm_count(full)?;
    // SAFETY: called before any thread is started; moves this process (and the nft it starts)
    // into a new, empty network namespace. The daemons get namespaces of their own.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(BenchError::io("unshare(CLONE_NEWNET)")(
            std::io::Error::last_os_error(),
        ));
    }
    let dir = std::env::temp_dir().join(format!("nftlbd-changes-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(BenchError::io(format!("create {}", dir.display())))?;
    let runs: Result<Vec<_>> = sizes
        .iter()
        .map(|&n| {
            eprintln!("changes bench: {n} backends");
            measure::size(n, &plan(full), &dir)
        })
        .collect();
    let many = match runs {
        Ok(_) if farms > 0 => {
            eprintln!("changes bench: {farms} farms of {} backends", farms::BACKENDS);
            load::farms(farms, plan(full).loads, &dir).map(Some)
        }
        _ => Ok(None),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let report = report::render(&runs?, many?.as_ref(), full);
    print!("{report}");
    let out = std::env::var_os("NFTLBD_BENCH_OUT_CHANGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/nftlbd-bench/changes.md"));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(BenchError::io(format!("create {}", parent.display())))?;
    }
    std::fs::write(&out, report).map_err(BenchError::io(format!("write {}", out.display())))
}

fn main() -> ExitCode {
    let full = std::env::args().any(|a| a == "--bench");
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("changes bench: needs root (network namespaces + CAP_NET_ADMIN)");
        return if full {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    match run(full) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("changes bench: {e}");
            ExitCode::FAILURE
        }
    }
}
