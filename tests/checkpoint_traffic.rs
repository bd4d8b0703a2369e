//! Checkpoints against the real daemon and kernel, with traffic: a farm broken after a
//! checkpoint comes back by itself at the deadline (and not before), stays broken once
//! confirmed, comes back at once on demand; overlapping checkpoints need their flag; and a
//! deadline survives a daemon restart. Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::topo::*;
use serde_json::{Value, json};

/// An address in be1's subnet that nobody answers: connections to it time out.
const WRONG: &str = "10.1.2.99";

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nftlbd-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Daemon(Child);

impl Daemon {
    /// `nftlbd run` without a bus or health checks, serving varlink on `socket`; waits for READY.
    fn start(t: &Topo, state: &Path, socket: &Path) -> Daemon {
        // Farm files of its own (none): the machine's must not add farms here.
        let farms = state.join("farms.d");
        std::fs::create_dir_all(&farms).unwrap();
        let mut child = common::nftlbd_in(&t.lb, state)
            .arg("--farms-dir")
            .arg(&farms)
            .arg("--varlink")
            .arg(socket)
            .args(["--no-bus", "--no-checks", "run"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nftlbd run");
        let line = common::first_line_within(child.stdout.take().unwrap(), common::READY_WITHIN);
        assert_eq!(line.trim(), "READY");
        Daemon(child)
    }

    /// SIGTERM, and a clean exit within a bound.
    fn stop(mut self) {
        common::terminate(self.0.id()).expect("SIGTERM to our own child");
        let status = common::wait_within(&mut self.0, Duration::from_secs(30));
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One varlink call through `nftlbctl varlink`: its reply's parameters, or the error text.
fn try_call(socket: &Path, method: &str, params: Value) -> Result<Value, String> {
    let out = Command::new("timeout")
        .arg("20")
        .arg(env!("CARGO_BIN_EXE_nftlbctl"))
        .env("NFTLBD_VARLINK", socket)
        .args(["varlink", &format!("org.nftlbd1.{method}"), &params.to_string()])
        .output()
        .expect("run nftlbctl varlink");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_str(text.trim()).map_err(|e| format!("{e}: {text}"))
}

fn call(socket: &Path, method: &str, params: Value) -> Value {
    try_call(socket, method, params).unwrap_or_else(|e| panic!("{method}: {e}"))
}

/// The farm as configured (its status, with counters, left out).
fn farm_of(socket: &Path) -> Value {
    call(socket, "GetFarm", json!({"name": "web"}))["farm"].clone()
}

fn checkpoints(socket: &Path) -> Vec<Value> {
    let reply = call(socket, "ListCheckpoints", json!({}));
    reply["checkpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"))
        .clone()
}

fn create(socket: &Path, timeout: u32, flags: u32) -> Result<Value, String> {
    try_call(
        socket,
        "CheckpointCreate",
        json!({"farms": ["web"], "rollbackTimeout": timeout, "flags": flags}),
    )
}

fn break_be1(socket: &Path) {
    let changes = json!({"farm": "web", "backend": "be1", "changes": {"ip-addr": WRONG}});
    assert_eq!(call(socket, "UpdateBackend", changes), json!({}));
}

/// Four quick connections: (answered by be0, answered by be1, failed).
fn split(t: &Topo) -> (usize, usize, usize) {
    let got = t.tcp_tries(vip4(20), 80, 4);
    let failed = got.iter().filter(|a| a.starts_with("ERROR")).count();
    (count(&got, "be0"), count(&got, "be1"), failed)
}

/// Polls until the farm reads `want`; the moment it did. Fails past `limit`.
fn wait_farm(socket: &Path, want: &Value, limit: Instant) -> Instant {
    loop {
        let now = Instant::now();
        let got = farm_of(socket);
        if got == *want {
            return now;
        }
        assert!(now < limit, "the farm was not restored in time: {got}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The topology, a daemon and farm `web` (rr over be0 and be1), checked to split exactly.
fn setup(tag: &str) -> (Topo, PathBuf, PathBuf, Daemon, Value) {
    let t = Topo::new(2);
    let state = temp_dir(tag);
    let socket = state.join("varlink.sock");
    let daemon = Daemon::start(&t, &state, &socket);
    let web = json!({"name": "web", "virtual-addresses": [vip4(20)], "virtual-ports": "80",
        "scheduler": "rr", "backends": [{"name": "be0", "ip-addr": backend_ip(0, false)},
                                        {"name": "be1", "ip-addr": backend_ip(1, false)}]});
    assert_eq!(call(&socket, "CreateFarm", json!({ "farm": web })), json!({}));
    assert_eq!(split(&t), (2, 2, 0));
    let before = farm_of(&socket);
    (t, state, socket, daemon, before)
}

#[test]
fn an_unconfirmed_checkpoint_rolls_back_confirmed_stays_and_overlaps_need_the_flag() {
    let (t, state, socket, daemon, before) = setup("cp-traffic");

    // Not confirmed: back by itself, after the 2 s and within 1 s more.
    let asked = Instant::now();
    assert_eq!(create(&socket, 2, 0), Ok(json!({"checkpoint": 1})));
    let answered = Instant::now();
    let listed = checkpoints(&socket);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            &listed[0]["id"],
            &listed[0]["farms"],
            &listed[0]["rollbackTimeout"]
        ),
        (&json!(1), &json!(["web"]), &json!(2))
    );
    break_be1(&socket);
    assert_eq!(farm_of(&socket)["backends"][1]["ip-addr"], json!(WRONG));
    assert_eq!(split(&t), (2, 0, 2));
    let restored = wait_farm(&socket, &before, answered + Duration::from_secs(3));
    assert!(
        restored >= asked + Duration::from_secs(2),
        "rolled back early: {:?}",
        restored - asked
    );
    assert_eq!(checkpoints(&socket), Vec::<Value>::new());
    assert_eq!(split(&t), (2, 2, 0));

    // Confirmed (destroyed): the change stays past the timeout.
    assert_eq!(create(&socket, 2, 0), Ok(json!({"checkpoint": 2})));
    break_be1(&socket);
    let broken = farm_of(&socket);
    assert_eq!(
        call(&socket, "CheckpointDestroy", json!({"checkpoint": 2})),
        json!({})
    );
    assert_eq!(checkpoints(&socket), Vec::<Value>::new());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(farm_of(&socket), broken);
    assert_eq!(split(&t), (2, 0, 2));
    let fix = json!({"farm": "web", "backend": "be1", "changes": {"ip-addr": backend_ip(1, false)}});
    assert_eq!(call(&socket, "UpdateBackend", fix), json!({}));
    assert_eq!(farm_of(&socket), before);

    // Rolled back on demand, long before its deadline.
    assert_eq!(create(&socket, 30, 0), Ok(json!({"checkpoint": 3})));
    break_be1(&socket);
    assert_eq!(split(&t), (2, 0, 2));
    assert_eq!(
        call(&socket, "CheckpointRollback", json!({"checkpoint": 3})),
        json!({"results": {"web": 0}})
    );
    assert_eq!(farm_of(&socket), before);
    assert_eq!(checkpoints(&socket), Vec::<Value>::new());
    assert_eq!(split(&t), (2, 2, 0));

    // A second checkpoint of the same farm: refused without allow-overlapping, taken with it.
    assert_eq!(create(&socket, 30, 0), Ok(json!({"checkpoint": 4})));
    let refused = create(&socket, 30, 0).expect_err("an overlapping checkpoint");
    assert!(refused.contains("org.nftlbd1.Exists"), "{refused}");
    assert_eq!(checkpoints(&socket).len(), 1);
    assert_eq!(create(&socket, 30, 8), Ok(json!({"checkpoint": 5})));
    let ids: Vec<Value> = checkpoints(&socket).iter().map(|c| c["id"].clone()).collect();
    assert_eq!(ids, [json!(4), json!(5)]);
    for id in [4, 5] {
        assert_eq!(
            call(&socket, "CheckpointDestroy", json!({"checkpoint": id})),
            json!({})
        );
    }
    assert_eq!(checkpoints(&socket), Vec::<Value>::new());
    assert_eq!(farm_of(&socket), before);

    daemon.stop();
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn a_checkpoint_deadline_survives_a_daemon_restart() {
    let (t, state, socket, daemon, before) = setup("cp-restart");

    let asked = Instant::now();
    assert_eq!(create(&socket, 3, 0), Ok(json!({"checkpoint": 1})));
    let answered = Instant::now();
    break_be1(&socket);
    let listed = checkpoints(&socket);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let deadline = listed[0]["deadline"].as_u64().expect("a deadline");
    let now = unix_now();
    assert!(
        (now + 2..=now + 4).contains(&deadline),
        "deadline {deadline}, now {now}"
    );

    daemon.stop();
    let daemon = Daemon::start(&t, &state, &socket);
    // Unless the restart took the whole timeout, the checkpoint is back as it was saved.
    if Instant::now() < asked + Duration::from_millis(2500) {
        assert_eq!(checkpoints(&socket), listed);
        assert_eq!(farm_of(&socket)["backends"][1]["ip-addr"], json!(WRONG));
    }
    // Due 3 s after the daemon took it, which it did before answering; seen within 1 s more.
    let restored = wait_farm(&socket, &before, answered + Duration::from_secs(4));
    assert!(
        unix_now() <= deadline + 1,
        "restored at {}, deadline {deadline}",
        unix_now()
    );
    assert!(
        restored >= asked + Duration::from_secs(3),
        "rolled back early: {:?}",
        restored - asked
    );
    assert_eq!(checkpoints(&socket), Vec::<Value>::new());
    assert_eq!(split(&t), (2, 2, 0));

    daemon.stop();
    let _ = std::fs::remove_dir_all(&state);
}
