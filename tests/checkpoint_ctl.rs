//! `nftlbctl checkpoint ...` and `nftlbctl apply FILE --confirm SECONDS` against the daemon on
//! the testbed's system bus (tools/testbed.sh), with real traffic: a checkpoint listed and rolled
//! back on demand; an apply nobody confirms rolls back and fails, in bounded time. Needs root.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bus::*;
use common::topo::{Topo, backend_ip, count, vip4};

/// nftlbctl as root: (exit status, stdout, stderr), killed if it hangs.
fn ctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg("nftlbctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nftlbctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn done(args: &[&str]) -> String {
    let (code, out, err) = ctl(args);
    assert_eq!(code, 0, "nftlbctl {args:?}: {out}{err}");
    out
}

/// The farm names `nftlbctl list` shows.
fn farms() -> Vec<String> {
    done(&["list"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The rows of `nftlbctl checkpoint list` under its header, split at tabs.
fn checkpoint_rows() -> Vec<Vec<String>> {
    let out = done(&["checkpoint", "list"]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("ID\tFARMS\tCREATED\tTIMEOUT\tDEADLINE"),
        "{out}"
    );
    lines
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn nftlbctl_checkpoints_and_apply_with_confirmation() {
    if !in_testbed("nftlbctl_checkpoints_and_apply_with_confirmation") {
        return;
    }
    let t = Topo::new(2);
    let dir = tempdir();
    let daemon = Daemon::start(&t, &dir, false);
    let (vip, api_vip) = (vip4(30), vip4(31));
    let (b0, b1) = (backend_ip(0, false).to_string(), backend_ip(1, false).to_string());
    done(&[
        "create",
        "web",
        &format!("virtual-addresses={vip}"),
        "virtual-ports=80",
        "scheduler=rr",
        "--backend",
        "be0",
        &format!("ip-addr={b0}"),
        "--backend",
        "be1",
        &format!("ip-addr={b1}"),
    ]);
    let split = || {
        let got = t.tcp_n(vip, 80, 4);
        (count(&got, "be0"), count(&got, "be1"))
    };
    assert_eq!(split(), (2, 2));
    // The configuration as a whole (no counters), to compare after each rollback.
    let config = done(&["export"]);
    assert!(config.contains("\"be1\""), "{config}");

    // Created: its number, then listed with its farm, timeout and deadline.
    let before = unix_now();
    assert_eq!(done(&["checkpoint", "create", "--timeout", "30", "web"]), "1\n");
    let after = unix_now();
    let rows = checkpoint_rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (&rows[0][0], &rows[0][1], &rows[0][3]),
        (&"1".into(), &"web".into(), &"30".into())
    );
    let created: u64 = rows[0][2].parse().unwrap();
    let deadline: u64 = rows[0][4].parse().unwrap();
    assert!((before..=after).contains(&created), "{rows:?}");
    assert!((created + 30..=created + 31).contains(&deadline), "{rows:?}");

    // Changed, then rolled back on demand: restored, and the checkpoint gone.
    done(&["state", "web", "be1", "down"]);
    assert_eq!(split(), (4, 0));
    assert_eq!(done(&["checkpoint", "rollback", "1"]), "web\t0\trestored\n");
    assert_eq!(split(), (2, 2));
    assert_eq!(done(&["export"]), config);
    assert_eq!(checkpoint_rows(), Vec::<Vec<String>>::new());
    let (code, out, err) = ctl(&["checkpoint", "rollback", "1"]);
    assert!(code != 0 && err.contains("no checkpoint 1"), "{code} {out}{err}");

    // apply: web down to be0 only, and a new farm api; nobody answers.
    let file = dir.join("change.json");
    let doc = serde_json::json!({"farms": [
        {"name": "web", "virtual-addresses": [vip], "virtual-ports": "80", "scheduler": "rr",
         "backends": [{"name": "be0", "ip-addr": b0}]},
        {"name": "api", "virtual-addresses": [api_vip], "virtual-ports": "80",
         "backends": [{"name": "be1", "ip-addr": b1}]}]});
    std::fs::write(&file, doc.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let restored = "api\t0\trestored\nweb\t0\trestored\n";

    // stdin closed: rolled back at once.
    let started = Instant::now();
    let (code, out, err) = ctl(&["apply", file, "--confirm", "1"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("applied under checkpoint 2"), "{err}");
    assert!(err.contains("not confirmed: rolled back"), "{err}");
    assert_eq!(out, restored);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(farms(), ["web"]);
    assert_eq!(split(), (2, 2));
    assert_eq!(checkpoint_rows(), Vec::<Vec<String>>::new());

    // stdin open but silent (not a terminal, nobody types): the daemon rolls back at the
    // deadline and nftlbctl fails soon after.
    let started = Instant::now();
    let mut child = Command::new("nftlbctl")
        .args(["apply", file, "--confirm", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nftlbctl apply");
    let stdin = child.stdin.take();
    let status = common::wait_within(&mut child, Duration::from_secs(5));
    let took = started.elapsed();
    drop(stdin);
    let out = child.wait_with_output().expect("nftlbctl's output");
    let (out, err) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("applied under checkpoint 3"), "{err}");
    assert!(
        err.contains("not confirmed within 1 s: checkpoint 3 rolled back"),
        "{err}"
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert_eq!(farms(), ["web"]);
    assert_eq!(split(), (2, 2));
    assert_eq!(done(&["export"]), config);
    assert_eq!(checkpoint_rows(), Vec::<Vec<String>>::new());

    daemon.stop();
}
