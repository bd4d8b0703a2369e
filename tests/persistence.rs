//! The daemon's promise about its state files, against the real kernel: an acknowledged change
//! survives SIGKILL at any moment; a change the state directory cannot take (full, read-only) is
//! refused and changes nothing; damaged files at start are named, with what was recovered. Needs
//! root: each test runs in its own network and mount namespaces.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::mount::{MsFlags, mount, umount};
use serde_json::{Value, json};

/// Runs `f` on a thread in new network and mount namespaces (mounts made there stay there).
fn in_namespaces<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    assert!(
        nix::unistd::geteuid().is_root(),
        "persistence tests need root (namespaces, mounts, nf_tables); run them as root"
    );
    std::thread::spawn(move || {
        use nix::sched::CloneFlags;
        nix::sched::unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS).expect("unshare");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make mounts private");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

struct Dirs {
    base: PathBuf,
    state: PathBuf,
    sock: PathBuf,
}

impl Dirs {
    fn new(tag: &str) -> Dirs {
        let base = std::env::temp_dir().join(format!("nftlbd-persist-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let state = base.join("state");
        std::fs::create_dir_all(&state).unwrap();
        Dirs {
            sock: base.join("varlink"),
            base,
            state,
        }
    }

    fn journal(&self) -> PathBuf {
        self.state.join("journal.jsonl")
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.state.join(name)).unwrap_or_default()
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = umount(&self.state);
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// `nftlbd run` without a bus, serving varlink at the test's socket.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn spawn(d: &Dirs) -> Child {
        let _ = std::fs::remove_file(&d.sock);
        Command::new(env!("CARGO_BIN_EXE_nftlbd"))
            .arg("--state-dir")
            .arg(&d.state)
            .args(["--no-bus", "--varlink"])
            .arg(&d.sock)
            .arg("run")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nftlbd run")
    }

    /// Starts the daemon and waits for READY; its log goes to the test's stderr.
    fn start(d: &Dirs) -> Daemon {
        let mut child = Daemon::spawn(d);
        let mut err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut err, &mut std::io::stderr());
        });
        let line = common::first_line_within(child.stdout.take().expect("stdout"), common::READY_WITHIN);
        assert_eq!(line.trim(), "READY");
        Daemon { child }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }

    fn stop(mut self) {
        common::terminate(self.child.id()).expect("SIGTERM");
        let status = common::wait_within(&mut self.child, std::time::Duration::from_secs(30));
        assert!(status.success(), "{status}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the daemon where it must refuse to: its exit status and everything it wrote.
fn refused_start(d: &Dirs) -> String {
    let out = Daemon::spawn(d).wait_with_output().expect("wait");
    assert!(!out.status.success(), "the daemon started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One varlink call: the reply's parameters, or the error (name and parameters), or `None`
/// when the connection ended before a reply (the daemon was killed).
fn call(s: &mut BufReader<UnixStream>, method: &str, params: Value) -> Option<Result<Value, Value>> {
    let mut msg =
        serde_json::to_vec(&json!({"method": format!("org.nftlbd1.{method}"), "parameters": params}))
            .expect("encode");
    msg.push(0);
    s.get_mut().write_all(&msg).ok()?;
    let mut buf = Vec::new();
    match s.read_until(0, &mut buf) {
        Ok(n) if n > 0 && buf.last() == Some(&0) => {}
        _ => return None,
    }
    buf.pop();
    let reply: Value = serde_json::from_slice(&buf).expect("json reply");
    Some(match reply.get("error") {
        Some(_) => Err(reply),
        None => Ok(reply["parameters"].clone()),
    })
}

fn connect(d: &Dirs) -> BufReader<UnixStream> {
    connect_to(&d.sock)
}

fn connect_to(sock: &Path) -> BufReader<UnixStream> {
    BufReader::new(UnixStream::connect(sock).expect("connect"))
}

fn ok(s: &mut BufReader<UnixStream>, method: &str, params: Value) -> Value {
    match call(s, method, params.clone()) {
        Some(Ok(v)) => v,
        other => panic!("{method} {params}: {other:?}"),
    }
}

fn get_config(d: &Dirs) -> (Value, u64) {
    let r = ok(&mut connect(d), "GetConfig", json!({}));
    (r["config"].clone(), r["generation"].as_u64().expect("generation"))
}

/// nf_tables' generation in this network namespace: bumps with every committed transaction.
fn kernel_generation() -> u32 {
    nftlbd::netlink::Connection::new()
        .expect("netlink")
        .generation()
        .expect("generation")
}

fn nft_table() -> String {
    common::nft(&["list", "table", "ip", "nftlbd"])
}

fn farm(backends: usize) -> Value {
    let b: Vec<Value> = (0..backends)
        .map(|i| json!({"name": format!("b{i}"), "ip-addr": format!("10.0.{}.{}", i / 250, i % 250 + 1)}))
        .collect();
    json!({"name": "web", "virtual-addresses": ["192.0.2.10"], "virtual-ports": "80", "backends": b})
}

/// Backend name → state, as the daemon says (`up` is the default, left out of the JSON).
fn backends(config: &Value) -> std::collections::BTreeMap<String, String> {
    config["farms"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            let state = b.get("state").and_then(Value::as_str).unwrap_or("up");
            (b["name"].as_str().expect("name").to_string(), state.to_string())
        })
        .collect()
}

/// xorshift64: reproducible "random" moments from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

type Model = std::collections::BTreeMap<String, String>;

/// Sends changes until the daemon dies: the model after the acknowledged ones, and the change
/// in flight when it died (backend, state after it; `None`: removed).
fn stream(
    sock: &Path,
    mut model: Model,
    mut rng: Rng,
    round: usize,
) -> (Model, Option<(String, Option<String>)>, usize) {
    let mut s = connect_to(sock);
    let mut acked = 0;
    for i in 0.. {
        let added: Vec<String> = model.keys().filter(|k| k.starts_with('x')).cloned().collect();
        let (method, params, key, value) = match rng.next(10) {
            0 | 1 => {
                let name = format!("x{round}-{i}");
                let ip = format!("10.1.{}.{}", round, i % 250 + 1);
                let p = json!({"farm": "web", "backend": {"name": name, "ip-addr": ip}});
                ("AddBackend", p, name, Some("up".to_string()))
            }
            2 if !added.is_empty() => {
                let name = added[rng.next(added.len() as u64) as usize].clone();
                (
                    "RemoveBackend",
                    json!({"farm": "web", "backend": name}),
                    name,
                    None,
                )
            }
            _ => {
                let name = format!("b{}", rng.next(20));
                let state = ["up", "drain", "down", "off"][rng.next(4) as usize];
                let p = json!({"farm": "web", "backend": name, "state": state});
                ("SetBackendState", p, name, Some(state.to_string()))
            }
        };
        match call(&mut s, method, params.clone()) {
            Some(Ok(_)) => {
                acked += 1;
                match value {
                    Some(v) => model.insert(key, v),
                    None => model.remove(&key),
                };
            }
            Some(Err(e)) => panic!("{method} {params} refused: {e}"),
            None => return (model, Some((key, value)), acked),
        }
    }
    unreachable!()
}

#[test]
fn every_acknowledged_change_survives_sigkill_at_any_moment() {
    in_namespaces(|| {
        let d = Dirs::new("sigkill");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let seed = u64::from(std::process::id()) << 32 | u64::from(now.subsec_nanos() | 1);
        eprintln!("seed {seed}");
        let mut rng = Rng(seed);
        let daemon = Daemon::start(&d);
        ok(&mut connect(&d), "CreateFarm", json!({"farm": farm(20)}));
        let mut model = backends(&get_config(&d).0);
        daemon.kill();
        let mut total = 0;
        for round in 0..8 {
            let daemon = Daemon::start(&d);
            let (sock, m, r) = (d.sock.clone(), model.clone(), Rng(rng.next(u64::MAX) | 1));
            let client = std::thread::spawn(move || stream(&sock, m, r, round));
            std::thread::sleep(Duration::from_millis(20 + rng.next(250)));
            daemon.kill();
            let (acked_model, pending, acked) = client.join().unwrap();
            total += acked;
            eprintln!("round {round}: {acked} acknowledged; in flight when killed: {pending:?}");

            let daemon = Daemon::start(&d);
            let (config, _) = get_config(&d);
            let now = backends(&config);
            let keys: std::collections::BTreeSet<&String> = now.keys().chain(acked_model.keys()).collect();
            for k in keys {
                let (want, have) = (acked_model.get(k), now.get(k));
                let in_flight = pending
                    .as_ref()
                    .is_some_and(|(pk, pv)| pk == k && pv.as_ref() == have);
                assert!(
                    want == have || in_flight,
                    "round {round}, backend {k}: acknowledged {want:?}, recovered {have:?} (in flight: {pending:?})"
                );
            }
            model = now;
            // The kernel now matches the files: a restart on them commits nothing.
            let g = kernel_generation();
            daemon.stop();
            let daemon = Daemon::start(&d);
            assert_eq!(
                kernel_generation(),
                g,
                "round {round}: the restart changed the kernel"
            );
            assert_eq!(backends(&get_config(&d).0), model);
            daemon.kill();
        }
        assert!(total >= 12, "only {total} changes were acknowledged in 8 rounds");
    });
}

/// The daemon on a state directory prepared by `nftlbd apply`; the journal is empty.
fn prepared(d: &Dirs) -> Daemon {
    let file = d.base.join("farms.json");
    std::fs::write(&file, json!({"farms": [farm(200)]}).to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nftlbd"))
        .arg("--state-dir")
        .arg(&d.state)
        .arg("apply")
        .arg(&file)
        .output()
        .expect("nftlbd apply");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Daemon::start(d)
}

/// What must not change when a change is refused.
fn everything(d: &Dirs) -> (Value, u64, String, Vec<u8>, Vec<u8>) {
    let (config, generation) = get_config(d);
    (
        config,
        generation,
        nft_table(),
        d.read("state.json"),
        d.read("journal.jsonl"),
    )
}

fn assert_refused(d: &Dirs, why: &str) {
    let before = everything(d);
    let r = call(
        &mut connect(d),
        "SetBackendState",
        json!({"farm": "web", "backend": "b7", "state": "drain"}),
    );
    let e = match r {
        Some(Err(e)) => e,
        other => panic!("{why}: the change was not refused: {other:?}"),
    };
    assert_eq!(e["error"], "org.nftlbd1.Kernel", "{e}");
    let message = e["parameters"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&d.journal().display().to_string()) && message.contains(why),
        "{message}"
    );
    let after = everything(d);
    assert!(after.0 == before.0, "{why}: the configuration changed");
    assert_eq!(after.1, before.1, "{why}: the generation changed");
    assert_eq!(after.2, before.2, "{why}: the kernel changed");
    assert!(after.3 == before.3, "{why}: state.json changed");
    assert!(after.4 == before.4, "{why}: the journal changed");
}

#[test]
fn a_full_state_directory_refuses_the_change_and_changes_nothing() {
    in_namespaces(|| {
        let d = Dirs::new("full");
        mount(
            Some("tmpfs"),
            &d.state,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mount tmpfs");
        let daemon = prepared(&d);
        assert!(d.read("journal.jsonl").is_empty());
        // Fill the file system to the last block.
        let filler = d.state.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        drop(f);
        assert_refused(&d, "No space left on device");
        // With room again, the same change lands and is saved.
        std::fs::remove_file(&filler).unwrap();
        ok(
            &mut connect(&d),
            "SetBackendState",
            json!({"farm": "web", "backend": "b7", "state": "drain"}),
        );
        assert_eq!(backends(&get_config(&d).0)["b7"], "drain");
        assert_eq!(
            String::from_utf8(d.read("journal.jsonl"))
                .unwrap()
                .lines()
                .count(),
            1
        );
        daemon.kill();
        let daemon = Daemon::start(&d);
        assert_eq!(backends(&get_config(&d).0)["b7"], "drain");
        daemon.stop();
    });
}

#[test]
fn a_read_only_state_directory_refuses_the_change_and_changes_nothing() {
    in_namespaces(|| {
        let d = Dirs::new("ro");
        let daemon = prepared(&d);
        // Made read-only under the running daemon (root ignores permission bits, not this).
        mount(
            Some(&d.state),
            &d.state,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind");
        let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        mount(None::<&str>, &d.state, None::<&str>, ro, None::<&str>).expect("remount read-only");
        assert_refused(&d, "Read-only file system");
        let rw = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
        mount(None::<&str>, &d.state, None::<&str>, rw, None::<&str>).expect("remount read-write");
        ok(
            &mut connect(&d),
            "SetBackendState",
            json!({"farm": "web", "backend": "b7", "state": "drain"}),
        );
        daemon.kill();
        let daemon = Daemon::start(&d);
        assert_eq!(backends(&get_config(&d).0)["b7"], "drain");
        daemon.stop();
    });
}

#[test]
fn damaged_files_at_start_are_named_with_what_was_recovered() {
    in_namespaces(|| {
        let d = Dirs::new("damaged");
        let daemon = prepared(&d);
        let mut s = connect(&d);
        for (b, st) in [("b1", "drain"), ("b2", "down"), ("b3", "off")] {
            ok(
                &mut s,
                "SetBackendState",
                json!({"farm": "web", "backend": b, "state": st}),
            );
        }
        let (config, _) = get_config(&d);
        daemon.kill();
        let journal = d.read("journal.jsonl");
        let text = String::from_utf8(journal.clone()).unwrap();
        assert_eq!(text.lines().count(), 3);
        let g = kernel_generation();

        // A damaged record before good ones: refused, naming the file and the line.
        let damaged = text.replacen("\"b2\"", "\"b9\"", 1);
        std::fs::write(d.journal(), &damaged).unwrap();
        let err = refused_start(&d);
        let want = format!(
            "{}: line 2: damaged record (checksum mismatch), followed by more records; the snapshot \
             and 1 journal record(s) before it were recovered, and nothing was changed",
            d.journal().display()
        );
        assert!(err.contains(&want), "{err}");
        assert_eq!(kernel_generation(), g, "the kernel was touched");
        assert_eq!(
            d.read("journal.jsonl"),
            damaged.as_bytes(),
            "the journal was rewritten"
        );

        // A state file that does not parse: refused, naming it.
        std::fs::write(d.journal(), &journal).unwrap();
        let snapshot = d.read("state.json");
        std::fs::write(d.state.join("state.json"), &snapshot[..snapshot.len() / 2]).unwrap();
        let err = refused_start(&d);
        let want = format!("{}: not a valid state file", d.state.join("state.json").display());
        assert!(err.contains(&want), "{err}");
        assert_eq!(kernel_generation(), g);
        std::fs::write(d.state.join("state.json"), &snapshot).unwrap();

        // A torn last record: dropped with a warning, the others recovered.
        let mut torn = journal.clone();
        let cut = text.lines().next().unwrap().len() / 2;
        torn.extend_from_slice(&text.as_bytes()[..cut]);
        std::fs::write(d.journal(), &torn).unwrap();
        let mut child = Daemon::spawn(&d);
        let line = common::first_line_within(child.stdout.take().unwrap(), common::READY_WITHIN);
        assert_eq!(line.trim(), "READY");
        let daemon = Daemon { child };
        assert_eq!(get_config(&d).0, config);
        let mut err_pipe = daemon_stderr(daemon);
        let mut log = String::new();
        err_pipe.read_to_string(&mut log).unwrap();
        let want = format!(
            "{}: line 4: incomplete record (no end of line): dropped the last record, a change that \
             was never acknowledged; 3 record(s) recovered",
            d.journal().display()
        );
        assert!(log.contains(&want), "{log}");
        assert!(d.read("journal.jsonl").is_empty(), "compacted at start");
    });
}

/// Stops the daemon and hands back its stderr, to read what it logged.
fn daemon_stderr(mut daemon: Daemon) -> std::process::ChildStderr {
    let err = daemon.child.stderr.take().expect("stderr");
    common::terminate(daemon.child.id()).expect("SIGTERM");
    let status = common::wait_within(&mut daemon.child, std::time::Duration::from_secs(30));
    assert!(status.success(), "{status}");
    err
}
