//! Service bench: a change through the running daemon (varlink call → one writer → engine → one
//! transaction → state file saved → events) beside the same change applied to an engine directly,
//! interleaved in one run. Needs root: the daemon and the direct engine each get a fresh network
//! namespace.
//!
//!   cargo bench --bench service    full run: a farm of 10,000 backends; 30 reps per change
//!   cargo test --benches           smoke run (300 backends, 3 reps) so the bench cannot rot
//!
//! Figures go to stdout and to `target/nftlbd-bench/service.md` (or $NFTLBD_BENCH_OUT_SERVICE).

#[path = "../examples/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nftlbd::engine::{Allocation, KernelEngine};
use nftlbd::model::{Config, parse_config};
use serde_json::{Value, json};

fn farm_json(n: usize) -> Value {
    let b: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("b{i}"), "ip-addr": format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256)}))
        .collect();
    json!({"name": "big", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80,443", "backends": b})
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

struct Daemon(Child, String);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.1]).status();
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("service bench: needs root (network namespaces + CAP_NET_ADMIN)");
        std::process::exit(if full { 1 } else { 0 });
    }
    let (n, reps) = if full { (10_000, 30) } else { (300, 3) };
    let dir = std::env::temp_dir().join(format!("nftlbd-service-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sock = dir.join("varlink");
    let ns = format!("svcbench{}", std::process::id());
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .expect("ip")
            .success()
    );
    let child = Command::new("ip")
        .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_nftlbd"), "--state-dir"])
        .arg(dir.join("state"))
        .args(["--no-bus", "--varlink"])
        .arg(&sock)
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nftlbd");
    let mut daemon = Daemon(child, ns);
    let mut ready = String::new();
    BufReader::new(daemon.0.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("READY");
    assert_eq!(ready.trim(), "READY");
    let mut vl = BufReader::new(UnixStream::connect(&sock).expect("connect"));
    // SAFETY: single-threaded here; moves this process into an empty network namespace, where
    // the direct engine works.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
    let mut engine = KernelEngine::open().expect("engine");

    let farm = farm_json(n);
    let doc = |f: &Value| -> Config { parse_config(&json!({"farms": [f]}).to_string()).expect("valid") };
    let t = Instant::now();
    common::call(&mut vl, "CreateFarm", json!({"farm": farm}));
    let load_service = t.elapsed();
    let t = Instant::now();
    engine.reconcile(doc(&farm), Allocation::default()).expect("load");
    let load_engine = t.elapsed();

    let mut rows: Vec<(&str, Vec<Duration>, Vec<Duration>)> = vec![
        ("set one backend's state (drain, then up)", vec![], vec![]),
        ("add one backend", vec![], vec![]),
        ("remove one backend", vec![], vec![]),
    ];
    let mut current = farm.clone();
    for r in 0..reps {
        let b = format!("b{}", (r * 7919) % n);
        for state in ["drain", "up"] {
            let t = Instant::now();
            common::call(
                &mut vl,
                "SetBackendState",
                json!({"farm": "big", "backend": b, "state": state}),
            );
            rows[0].1.push(t.elapsed());
            let i = current["backends"]
                .as_array()
                .and_then(|l| l.iter().position(|x| x["name"] == b))
                .expect("backend");
            current["backends"][i]["state"] = json!(state);
            let t = Instant::now();
            engine.apply(doc(&current)).expect("apply");
            rows[0].2.push(t.elapsed());
        }
        let extra = json!({"name": "extra", "ip-addr": "10.200.0.1"});
        let t = Instant::now();
        common::call(&mut vl, "AddBackend", json!({"farm": "big", "backend": extra}));
        rows[1].1.push(t.elapsed());
        current["backends"].as_array_mut().expect("list").push(extra);
        let t = Instant::now();
        engine.apply(doc(&current)).expect("apply");
        rows[1].2.push(t.elapsed());
        let t = Instant::now();
        common::call(
            &mut vl,
            "RemoveBackend",
            json!({"farm": "big", "backend": "extra"}),
        );
        rows[2].1.push(t.elapsed());
        current["backends"].as_array_mut().expect("list").pop();
        let t = Instant::now();
        engine.apply(doc(&current)).expect("apply");
        rows[2].2.push(t.elapsed());
    }
    let t = Instant::now();
    let got = common::call(&mut vl, "GetFarm", json!({"name": "big"}));
    let read = t.elapsed();
    assert_eq!(got["status"]["backends"].as_array().map(Vec::len), Some(n));

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# service bench ({} run): a farm of {n} backends, medians of {} changes each ({} for states)\n",
        if full { "full" } else { "smoke" },
        reps,
        2 * reps
    );
    let _ = writeln!(
        out,
        "| operation | through the daemon (varlink) | engine directly | ratio |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let _ = writeln!(
        out,
        "| load the farm | {:.1} ms | {:.1} ms | {:.2} |",
        ms(load_service),
        ms(load_engine),
        ms(load_service) / ms(load_engine)
    );
    for (name, mut svc, mut eng) in rows {
        let (s, e) = (median(&mut svc), median(&mut eng));
        let _ = writeln!(
            out,
            "| {name} | {:.2} ms | {:.2} ms | {:.2} |",
            ms(s),
            ms(e),
            ms(s) / ms(e)
        );
    }
    let _ = writeln!(
        out,
        "| read the farm with every backend's counters (GetFarm) | {:.1} ms | | |",
        ms(read)
    );
    let _ = writeln!(
        out,
        "\nThe daemon's figure includes the call, polkit's shortcut for root, the writer's queue, the state\n\
         file written and fsynced, and the events; the engine's is render, diff and the transaction.\n\
         Ratios are what to compare; absolute times drift on this machine."
    );
    print!("{out}");
    drop(vl);
    drop(daemon);
    let path = std::env::var_os("NFTLBD_BENCH_OUT_SERVICE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/nftlbd-bench/service.md")
        });
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::write(&path, out);
    let _ = std::fs::remove_dir_all(&dir);
}
