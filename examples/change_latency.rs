//! The latency of one small change through the running daemon: starts `nftlbd run --no-bus
//! --varlink` in a fresh network namespace, loads one weighted farm of N backends, and times
//! single `SetBackendState` calls (drain, then up, on spread backends). Prints the median, the
//! fastest and the slowest per N, and the time `nft add element` takes for one map element in
//! the same namespace, for comparison. Needs root.
//!
//!   cargo build --release --bin nftlbd && cargo run --release --example change_latency -- 10 1000 10000
//!
//! The daemon is the `nftlbd` next to this example's directory (target/release/nftlbd), or
//! $NFTLBD_BIN.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// Calls timed per size ($NFTLBD_CALLS, 20 unless told): more to profile the daemon.
fn calls() -> usize {
    std::env::var("NFTLBD_CALLS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|c| *c > 0)
        .unwrap_or(20)
}

struct Daemon {
    child: Child,
    ns: String,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn daemon_path() -> PathBuf {
    if let Some(p) = std::env::var_os("NFTLBD_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("nftlbd"))
        .expect("target directory")
}

fn start(n: usize) -> (Daemon, BufReader<UnixStream>) {
    let id = format!("{}-{n}", std::process::id());
    let dir = std::env::temp_dir().join(format!("nftlbd-latency-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ns = format!("latency{id}");
    let ok = Command::new("ip").args(["netns", "add", &ns]).status();
    assert!(ok.is_ok_and(|s| s.success()), "ip netns add");
    let sock = dir.join("varlink");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(daemon_path())
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--no-bus", "--varlink"])
        .arg(&sock)
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nftlbd");
    let mut d = Daemon { child, ns, dir };
    let mut ready = String::new();
    BufReader::new(d.child.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("READY");
    assert_eq!(ready.trim(), "READY");
    let vl = BufReader::new(UnixStream::connect(&sock).expect("connect"));
    (d, vl)
}

/// The CPU time all the daemon's threads have used (`ip netns exec` execs it: same pid). A
/// measure that other work on the machine disturbs less than wall-clock time.
fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .sum()
}

/// A pause between calls ($NFTLBD_GAP_MS, none unless told): the bench runs an `nft` process
/// between its calls, so the daemon meets each one cold.
fn gap() -> Option<Duration> {
    std::env::var("NFTLBD_GAP_MS")
        .ok()
        .and_then(|g| g.parse().ok())
        .map(Duration::from_millis)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One `nft add element` on a map of the namespace, as a floor for one change.
fn nft_add_element(ns: &str) -> Option<Duration> {
    let nft = |args: &str| {
        let t = Instant::now();
        let ok = Command::new("ip")
            .args(["netns", "exec", ns, "nft"])
            .args(args.split(' '))
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| t.elapsed())
    };
    nft("add table ip latency")?;
    nft("add map ip latency m { type ipv4_addr : mark ; }")?;
    let mut v: Vec<Duration> = (0..20)
        .filter_map(|i| nft(&format!("add element ip latency m {{ 10.9.0.{i} : {i} }}")))
        .collect();
    v.sort();
    v.get(v.len() / 2).copied()
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![10, 1_000, 10_000]
    } else {
        sizes
    };
    println!("| backends | load | SetBackendState median | min | max | daemon CPU per call |");
    println!("|---|---|---|---|---|---|");
    let mut ns_for_nft = None;
    for n in sizes {
        let (d, mut vl) = start(n);
        let t = Instant::now();
        common::call(
            &mut vl,
            "CreateFarm",
            json!({"farm": common::weighted_farm("big", n)}),
        );
        let load = t.elapsed();
        let calls = calls();
        let cpu = cpu_time(d.child.id());
        let mut times = Vec::with_capacity(calls);
        let op = std::env::var("NFTLBD_OP").unwrap_or_default();
        let adding = op == "add";
        for r in 0..calls {
            let b = format!("b{}", (r / 2 * 7919) % n);
            let state = if r % 2 == 0 { "drain" } else { "up" };
            if let Some(g) = gap() {
                std::thread::sleep(g);
            }
            let (method, params) = match (adding, r % 2) {
                // $NFTLBD_OP=batch: 1,000 states in one call, spread over the farm.
                _ if op == "batch" => (
                    "SetBackends",
                    json!({"changes": (0..1000).map(|k| json!({"farm": "big",
                        "backend": format!("b{}", (k * 7919 + r / 2) % n), "state": state})).collect::<Vec<_>>()}),
                ),
                // $NFTLBD_OP=add: add a backend, then remove it.
                (true, 0) => (
                    "AddBackend",
                    json!({"farm": "big", "backend": {"name": format!("new{r}"), "ip-addr": "10.200.0.1", "weight": 2}}),
                ),
                (true, _) => (
                    "RemoveBackend",
                    json!({"farm": "big", "backend": format!("new{}", r - 1)}),
                ),
                (false, _) => (
                    "SetBackendState",
                    json!({"farm": "big", "backend": b, "state": state}),
                ),
            };
            let t = Instant::now();
            common::call(&mut vl, method, params);
            times.push(t.elapsed());
        }
        let cpu = cpu_time(d.child.id()).saturating_sub(cpu) / calls as u32;
        times.sort();
        println!(
            "| {n} | {:.1} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            ms(load),
            ms(times[calls / 2]),
            ms(times[0]),
            ms(times[calls - 1]),
            ms(cpu)
        );
        if ns_for_nft.is_none() {
            ns_for_nft = nft_add_element(&d.ns);
        }
    }
    if let Some(t) = ns_for_nft {
        println!(
            "\n`nft add element` (one element, a whole nft process): median {:.2} ms",
            ms(t)
        );
    }
}
