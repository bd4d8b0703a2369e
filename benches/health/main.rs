//! Health-check bench: 10,000 backends checked every second over tcp by the daemon's own checker
//! (`nftlbd run --no-bus --varlink`), for 30 s. Reports the daemon's CPU share beside an idle
//! daemon with the same farm and `--no-checks`, how evenly the checks spread over each second
//! (as the backends saw them arrive), the gaps between two checks of one backend, and whether
//! every backend stayed healthy. Needs root (network namespaces, nf_tables).
//!
//!   cargo bench --bench health     the run (about a minute and a half)
//!
//! Not part of the test suite: without `--bench` (as `cargo test --benches` runs it) it only says
//! so. $NFTLBD_BENCH_HEALTH_BACKENDS and $NFTLBD_BENCH_HEALTH_SECONDS replace the number of
//! backends (10,000) and the measured window (30 s). The table goes to stdout and to
//! `target/nftlbd-bench/health.md`.

mod daemon;
mod error;
mod net;
mod record;
mod report;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use daemon::Daemon;
use error::{BenchError, Result};
use record::Recorder;

/// How long the idle daemon's CPU time is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// The longest the first round of checks may take to reach every backend.
const FIRST_ROUND: Duration = Duration::from_secs(20);
/// After the first round: the verdicts committed and saved before the window opens.
const SETTLE: Duration = Duration::from_secs(3);
const FARM: &str = "hc";

fn env_number(name: &str, default: u64, max: u64) -> Result<u64> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(BenchError::Daemon(format!(
                "{name}: {v:?} is not a number in 1..={max}"
            ))),
        },
    }
}

/// One farm of `n` backends, each checked over tcp every second.
fn farm(n: usize) -> Value {
    let backends: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("b{i}"), "ip-addr": net::backend(i).to_string(), "port": net::BACKEND_PORT}))
        .collect();
    json!({"name": FARM, "virtual-addresses": ["192.0.2.10"], "virtual-ports": "80",
           "health-check": {"type": "tcp", "interval": 1, "timeout": 0.5},
           "backends": backends})
}

/// The daemon's CPU share over `window`: CPU time used over wall time.
fn cpu_share(d: &Daemon, window: Duration) -> Result<(f64, Duration)> {
    let (c0, t0) = (d.cpu()?, Instant::now());
    std::thread::sleep(window);
    let (c1, wall) = (d.cpu()?, t0.elapsed());
    Ok(((c1 - c0).as_secs_f64() / wall.as_secs_f64(), wall))
}

/// Raises this process's open-file limit to its hard limit; the daemon, started by it, inherits
/// it (10,000 checks may be in flight at once).
fn raise_nofile() -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(BenchError::io("getrlimit")(std::io::Error::last_os_error()));
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit read just above; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(BenchError::io("setrlimit")(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn run(n: usize, window: Duration) -> Result<String> {
    raise_nofile()?;
    let ns = net::build(format!("hcbench{}", std::process::id()))?;
    let recorder = Recorder::start(net::listener()?, n);
    let farm = farm(n);

    eprintln!("health bench: idle daemon (--no-checks), {n} backends");
    let idle = {
        let mut d = Daemon::start(&ns.0, false)?;
        d.call("CreateFarm", json!({ "farm": farm }))?;
        std::thread::sleep(SETTLE);
        cpu_share(&d, IDLE_WINDOW)?.0
    };
    net::run("ip", &["netns", "exec", &ns.0, "nft", "flush", "ruleset"])?;

    eprintln!("health bench: daemon checking {n} backends every second");
    let mut d = Daemon::start(&ns.0, true)?;
    let loaded = Instant::now();
    d.call("CreateFarm", json!({ "farm": farm }))?;
    // The first round: every backend checked once.
    let mut seen = vec![false; n];
    let mut count = 0;
    while count < n && loaded.elapsed() < FIRST_ROUND {
        std::thread::sleep(Duration::from_millis(100));
        for (i, _) in recorder.take_since(loaded) {
            if !std::mem::replace(&mut seen[i], true) {
                count += 1;
            }
        }
    }
    let first_round = loaded.elapsed();
    std::thread::sleep(SETTLE);
    let _ = recorder.take_since(Instant::now());
    let from = Instant::now();
    let (share, wall) = cpu_share(&d, window)?;
    let arrivals = recorder.take_since(from);
    let status = d.call("GetFarm", json!({ "name": FARM }))?;
    drop(d);
    drop(recorder);
    let healthy = status["farm"]["backends"]
        .as_array()
        .map_or(0, |bs| bs.iter().filter(|b| b["health"] == "healthy").count());
    let took: Vec<u64> = status["status"]["backends"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .filter_map(|b| b["lastCheckDuration"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    Ok(report::render(&report::Run {
        backends: n,
        first_seen: count,
        first_round,
        wall,
        from,
        idle_share: idle,
        share,
        arrivals,
        healthy,
        took_us: took,
    }))
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("health bench: not a test; run it with `cargo bench --bench health`");
        return ExitCode::SUCCESS;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("health bench: needs root (network namespaces + CAP_NET_ADMIN)");
        return ExitCode::FAILURE;
    }
    let sizes = env_number("NFTLBD_BENCH_HEALTH_BACKENDS", 10_000, 60_000)
        .and_then(|n| Ok((n as usize, env_number("NFTLBD_BENCH_HEALTH_SECONDS", 30, 3600)?)));
    let report = sizes.and_then(|(n, secs)| run(n, Duration::from_secs(secs)));
    match report {
        Ok(text) => {
            print!("{text}");
            let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nftlbd-bench/health.md");
            if let Some(dir) = out.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = std::fs::write(&out, text) {
                eprintln!("health bench: write {}: {e}", out.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("health bench: {e}");
            ExitCode::FAILURE
        }
    }
}
