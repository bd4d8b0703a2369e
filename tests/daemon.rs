//! The `nftlbd` command: one-shot `apply`/`check`, and `run` surviving SIGKILL without a traffic
//! gap, and repairing foreign changes to its tables. Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::topo::*;
use serde_json::json;

fn state_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nftlbd-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_config(dir: &Path, name: &str, farms: serde_json::Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, json!({ "farms": farms }).to_string()).unwrap();
    p.display().to_string()
}

fn web(n: usize) -> serde_json::Value {
    let b: Vec<_> = (0..n)
        .map(|i| json!({"name": format!("be{i}"), "ip-addr": backend_ip(i, false)}))
        .collect();
    json!([{"name": "web", "virtual-addresses": [vip4(10)], "virtual-ports": "80", "persistence": ["srcip"], "backends": b}])
}

/// The ruleset without sessions learnt by the datapath (they carry their expiry).
/// The ruleset without runtime state (learnt sessions, counter values).
fn configured(t: &Topo) -> String {
    t.nft(&["list", "ruleset"])
        .lines()
        .filter(|l| !l.contains(" expires "))
        .map(without_counts)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `counter packets 12 bytes 960` → `counter`.
fn without_counts(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("counter packets ") {
        out.push_str(&rest[..i + "counter".len()]);
        let after = &rest[i + "counter packets ".len()..];
        let after = after.trim_start_matches(|c: char| c.is_ascii_digit());
        let after = after.strip_prefix(" bytes ").unwrap_or(after);
        rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

fn generation(t: &Topo) -> u32 {
    run_in(&t.lb, || {
        nftlbd::netlink::Connection::new().unwrap().generation().unwrap()
    })
}

/// A running `nftlbd run`, killed if the test fails before it stops it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `nftlbd run` in the balancer and waits until it says READY.
fn start(t: &Topo, dir: &Path) -> Daemon {
    let mut child = common::nftlbd_in(&t.lb, dir)
        .args(["--no-bus", "--no-varlink", "run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nftlbd run");
    let line = common::first_line_within(child.stdout.take().unwrap(), common::READY_WITHIN);
    assert_eq!(line.trim(), "READY");
    Daemon(child)
}

#[test]
fn restart_after_sigkill_changes_nothing_and_traffic_never_stops() {
    let t = Topo::new(2);
    let dir = state_dir("restart");
    let cfg = write_config(&dir, "config.json", web(2));
    let out = t.nftlbd(&["--state-dir", dir.to_str().unwrap(), "apply", &cfg]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("state.json").exists());
    let ruleset = configured(&t);
    let gen0 = generation(&t);

    let mut daemon = start(&t, &dir);
    let (stop, answers) = load(&t, vip4(10), 80);
    std::thread::sleep(Duration::from_millis(300));
    daemon.0.kill().unwrap(); // SIGKILL
    daemon.0.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut daemon = start(&t, &dir);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    assert_all_answered(&answers.join().unwrap());

    assert_eq!(
        generation(&t),
        gen0,
        "neither the crash nor the restart committed anything"
    );
    assert_eq!(configured(&t), ruleset);
    // The client's session, learnt before the crash, is still there.
    assert!(
        t.nft(&["list", "map", "ip", "nftlbd", "persist-srcip"])
            .contains(". 10.8.0.2 timeout 1m expires")
    );
    // SIGTERM: a clean exit, and the tables stay.
    common::terminate(daemon.0.id()).expect("SIGTERM to our own child");
    assert!(common::wait_within(&mut daemon.0, std::time::Duration::from_secs(30)).success());
    assert_eq!(configured(&t), ruleset);
    assert!(!who(&t.tcp(vip4(10), 80)).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_daemon_repairs_foreign_changes_to_its_tables() {
    let t = Topo::new(2);
    let dir = state_dir("repair");
    let cfg = write_config(&dir, "config.json", web(2));
    assert!(
        t.nftlbd(&["--state-dir", dir.to_str().unwrap(), "apply", &cfg])
            .status
            .success()
    );
    let ruleset = t.nft(&["list", "ruleset"]);
    let daemon = start(&t, &dir);
    // One writer: while the daemon runs, a one-shot apply is refused and changes nothing.
    let out = t.nftlbd(&["--state-dir", dir.to_str().unwrap(), "apply", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked by a running nftlbd"),
        "{out:?}"
    );
    t.nft(&["flush", "chain", "ip", "nftlbd", "farm-web"]);
    t.nft(&["delete", "element", "ip", "nftlbd", "masq", "{ 0x00010001 }"]);
    t.nft(&["add", "chain", "ip", "nftlbd", "intruder"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.nft(&["list", "ruleset"]) != ruleset {
        assert!(
            Instant::now() < deadline,
            "not repaired:\n{}",
            t.nft(&["list", "ruleset"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!t.tcp(vip4(10), 80).starts_with("ERROR"));
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_and_apply_report_errors_by_field_and_change_nothing() {
    let t = Topo::new(1);
    let dir = state_dir("cli");
    let d = dir.to_str().unwrap().to_string();
    let good = write_config(&dir, "good.json", web(1));
    let out = t.nftlbd(&["check", &good]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid: 1 farm(s), 1 backend(s)"));
    assert!(t.nftlbd(&["--state-dir", &d, "apply", &good]).status.success());
    let ruleset = t.nft(&["list", "ruleset"]);
    let state = std::fs::read_to_string(dir.join("state.json")).unwrap();

    let mut bad = web(1);
    bad[0]["backends"][0]["weight"] = json!(0);
    bad[0]["scheduler"] = json!("leastconn");
    let badf = write_config(&dir, "bad.json", bad);
    for cmd in ["check", "apply"] {
        let out = t.nftlbd(&["--state-dir", &d, cmd, &badf]);
        assert_eq!(out.status.code(), Some(65), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("farms[0].scheduler: unknown variant `leastconn`"),
            "{err}"
        );
    }
    let mut unsupported = web(1);
    unsupported[0]["queue"] = json!(3);
    let uf = write_config(&dir, "queue.json", unsupported);
    let out = t.nftlbd(&["--state-dir", &d, "apply", &uf]);
    assert_eq!(out.status.code(), Some(69));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("farms[web].queue: this kernel has no nf_tables queue support")
    );
    assert_eq!(
        t.nft(&["list", "ruleset"]),
        ruleset,
        "refused requests change nothing"
    );
    assert_eq!(std::fs::read_to_string(dir.join("state.json")).unwrap(), state);
    let again = t.nftlbd(&["--state-dir", &d, "apply", &good]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing changed"),
        "{again:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
