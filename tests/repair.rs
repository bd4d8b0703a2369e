//! The running daemon puts its tables back after any damage: a flushed ruleset, a deleted table,
//! a reboot (state on disk, an empty kernel), and changes it could not hear because its monitor
//! overflowed. Each ends with the tables listed exactly as before, within a second. Needs root.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::topo::*;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::json;

/// How long the daemon may take to repair, from the moment the damage is done.
const REPAIR_BOUND: Duration = Duration::from_secs(1);

fn state_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nftlbd-repair-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An IPv4 farm with persistence and an IPv6 one: both of the engine's tables, sets and maps.
fn farms() -> serde_json::Value {
    json!({"farms": [
        {"name": "web", "virtual-addresses": [vip4(10)], "virtual-ports": "80,443",
         "persistence": ["srcip"], "scheduler": "weight",
         "backends": [{"name": "be0", "ip-addr": backend_ip(0, false), "weight": 2},
                      {"name": "be1", "ip-addr": backend_ip(1, false)}]},
        {"name": "web6", "family": "ipv6", "virtual-addresses": [vip6(10)], "virtual-ports": "80",
         "backends": [{"name": "be0", "ip-addr": backend_ip(0, true)}]}
    ]})
}

/// Saves `farms()` as the state in `dir` (through `nftlbd apply` in `t`).
fn apply(t: &Topo, dir: &Path) {
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, farms().to_string()).unwrap();
    let out = t.nftlbd(&[
        "--state-dir",
        dir.to_str().unwrap(),
        "apply",
        cfg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `nft list table F nftlbd` for every family that has one, by family (`nft list tables`
/// lists them in creation order, and a repaired table is a new one).
fn our_tables(t: &Topo) -> String {
    let mut families: Vec<String> = t
        .nft(&["list", "tables"])
        .lines()
        .filter_map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["table", family, "nftlbd"] => Some(family.to_string()),
            _ => None,
        })
        .collect();
    families.sort();
    families
        .iter()
        .map(|f| t.nft(&["list", "table", f, "nftlbd"]))
        .collect()
}

/// A running `nftlbd run` and what it logged; killed if the test fails before it stops it.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `nftlbd run` in the balancer and waits until it says READY.
    fn start(t: &Topo, dir: &Path) -> Daemon {
        let mut child = common::nftlbd_in(&t.lb, dir)
            .args(["--no-bus", "--no-varlink", "--no-checks", "run"])
            .env_remove("JOURNAL_STREAM")
            .env_remove("NFTLBD_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nftlbd run");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let line = common::first_line_within(child.stdout.take().unwrap(), common::READY_WITHIN);
        assert_eq!(line.trim(), "READY", "{}", log.lock().unwrap());
        Daemon { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until our tables list exactly as `expected`, from `since` on, at most `REPAIR_BOUND`.
fn assert_repaired(t: &Topo, expected: &str, since: Instant, daemon: &Daemon) {
    loop {
        let now = our_tables(t);
        if now == expected {
            return;
        }
        assert!(
            since.elapsed() < REPAIR_BOUND,
            "not repaired within {REPAIR_BOUND:?}:\n{now}\nexpected:\n{expected}\ndaemon:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A daemon on the saved `farms()`, and its tables as listed.
fn running(t: &Topo, tag: &str) -> (PathBuf, Daemon, String) {
    let dir = state_dir(tag);
    apply(t, &dir);
    let daemon = Daemon::start(t, &dir);
    let tables = our_tables(t);
    assert!(tables.contains("table ip nftlbd {"), "{tables}");
    assert!(tables.contains("table ip6 nftlbd {"), "{tables}");
    (dir, daemon, tables)
}

#[test]
fn a_flushed_ruleset_is_put_back() {
    let t = Topo::new(2);
    let (dir, daemon, before) = running(&t, "flush");
    t.nft(&["flush", "ruleset"]);
    let done = Instant::now();
    assert_repaired(&t, &before, done, &daemon);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_deleted_table_is_put_back() {
    let t = Topo::new(2);
    let (dir, daemon, before) = running(&t, "delete");
    t.nft(&["delete", "table", "ip", "nftlbd"]);
    let done = Instant::now();
    assert_repaired(&t, &before, done, &daemon);
    t.nft(&["delete", "table", "ip6", "nftlbd"]);
    let done = Instant::now();
    assert_repaired(&t, &before, done, &daemon);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn after_a_reboot_the_saved_state_is_back() {
    let machine = Topo::new(2);
    let (dir, daemon, before) = running(&machine, "reboot");
    drop(daemon); // SIGKILL: the power goes
    drop(machine);
    // The same state directory on a machine whose kernel has no tables.
    let rebooted = Topo::new(2);
    assert_eq!(our_tables(&rebooted), "");
    let started = Instant::now();
    let daemon = Daemon::start(&rebooted, &dir);
    assert_repaired(&rebooted, &before, started, &daemon);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

fn signal(daemon: &Daemon, sig: Signal) {
    let pid = Pid::from_raw(i32::try_from(daemon.child.id()).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
}

/// A foreign transaction whose events overflow the monitor's receive buffer (one event per
/// element, hundreds of thousands of them) and which, last, flushes one of our chains: that
/// event is lost, and only the overflow tells the daemon something may have changed.
#[test]
fn changes_lost_to_a_monitor_overflow_are_repaired() {
    let t = Topo::new(2);
    let (dir, daemon, before) = running(&t, "overflow");
    let elements: Vec<String> = (0u32..300_000)
        .map(|i| format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255))
        .collect();
    let burst = format!(
        "add table ip noise\n\
         add set ip noise s {{ type ipv4_addr; size 1000000; }}\n\
         add element ip noise s {{ {} }}\n\
         flush chain ip nftlbd farm-web\n",
        elements.join(", ")
    );
    let file = dir.join("burst.nft");
    std::fs::write(&file, burst).unwrap();
    // Stopped, the daemon reads nothing while the burst is queued: the buffer surely overflows
    // (running, it may read part of it in time, and the test would depend on the scheduler).
    signal(&daemon, Signal::SIGSTOP);
    t.nft(&["-f", file.to_str().unwrap()]);
    signal(&daemon, Signal::SIGCONT);
    let done = Instant::now();
    // The noise is someone else's table: it stays, and ours are compared alone.
    assert_repaired(&t, &before, done, &daemon);
    assert!(
        daemon.log().contains("No buffer space available"),
        "the monitor did not overflow, so this test proves nothing:\n{}",
        daemon.log()
    );
    // The monitor still hears afterwards: a small foreign change is repaired as well.
    t.nft(&["flush", "chain", "ip", "nftlbd", "to-backend"]);
    let done = Instant::now();
    assert_repaired(&t, &before, done, &daemon);
    assert!(t.nft(&["list", "tables"]).contains("table ip noise"));
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
