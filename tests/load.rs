//! The two-transport load test (issue 12): eight clients, four on D-Bus and four on varlink, make
//! mixed changes against one running daemon on the testbed's system bus while two readers (one
//! per transport) read the whole configuration throughout. Then: every acknowledged change is
//! replayed on a fresh in-memory service and the result must equal the daemon's configuration;
//! the generation moved by exactly the number of acknowledged changes; every read came back within
//! its bound; the daemon's RSS stayed flat after warm-up.
//!
//! `NFTLBD_LOAD_SECS` sets how long the clients run (20 s by default, so the suite stays fast).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::bus::{Daemon, in_testbed, tempdir};
use common::rss_kib;
use serde_json::{Value, json};

#[path = "load/client.rs"]
mod client;
#[path = "load/plan.rs"]
mod plan;
#[path = "load/replay.rs"]
mod replay;

use client::{Transport, Varlink};
use plan::{Edit, Plan};

const CLIENTS: usize = 8;
/// A read slower than this fails the test: the writer must never starve readers.
const READ_BOUND: Duration = Duration::from_secs(2);
/// RSS is judged from this long after the start: the first calls grow the allocator's arenas,
/// zbus's and tokio's buffers and the journal's file to their working size.
const WARM_UP: Duration = Duration::from_secs(5);
/// How much the last RSS sample may exceed the first after warm-up. The configuration itself is
/// bounded (each client holds at most one farm of 10 backends and one of 2), so growth beyond
/// the allocator's slack is a leak; the slack is the glibc arenas (two, `M_ARENA_MAX=2`) keeping
/// freed chunks below their top, and the journal's compaction writing a snapshot on its own
/// thread, which together moved RSS by up to a few MiB between samples in trial runs.
const RSS_MARGIN_KIB: u64 = 8 << 10;

fn load_secs() -> u64 {
    std::env::var("NFTLBD_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// What one client did: each acknowledged edit in the order it made them, and how long each
/// call took; an error ends the client and fails the test.
struct Record {
    transport: &'static str,
    acked: Vec<Edit>,
    latencies: Vec<Duration>,
    /// Calls that found an acknowledged change's D-Bus object not there yet.
    late_objects: usize,
    error: Option<String>,
}

fn run_client(id: usize, until: Instant) -> Record {
    let on_dbus = id < CLIENTS / 2;
    let transport = if on_dbus { "dbus" } else { "varlink" };
    let mut record = Record {
        transport,
        acked: Vec::new(),
        latencies: Vec::new(),
        late_objects: 0,
        error: None,
    };
    let mut t: Box<dyn Transport> = match client::connect(on_dbus) {
        Ok(t) => t,
        Err(e) => {
            record.error = Some(format!("client {id}: connect: {e}"));
            return record;
        }
    };
    let mut plan = Plan::new(id);
    let mut edit = plan.start();
    loop {
        let began = Instant::now();
        let applied = t.apply(&edit);
        record.late_objects = t.late_objects();
        if let Err(e) = applied {
            record.error = Some(format!("client {id} ({transport}) {edit:?}: {e}"));
            return record;
        }
        record.latencies.push(began.elapsed());
        plan.acknowledged(&edit);
        record.acked.push(edit);
        if Instant::now() >= until {
            return record;
        }
        edit = plan.next();
    }
}

/// What a reader saw: how many reads, the slowest, and the first failure.
struct Reads {
    transport: &'static str,
    count: usize,
    slowest: Duration,
    error: Option<String>,
}

fn run_reader(on_dbus: bool, stop: Arc<AtomicBool>) -> Reads {
    let transport = if on_dbus { "dbus" } else { "varlink" };
    let mut reads = Reads {
        transport,
        count: 0,
        slowest: Duration::ZERO,
        error: None,
    };
    let mut t: Box<dyn Transport> = match client::connect(on_dbus) {
        Ok(t) => t,
        Err(e) => {
            reads.error = Some(format!("{transport} reader: connect: {e}"));
            return reads;
        }
    };
    while !stop.load(Ordering::SeqCst) {
        let began = Instant::now();
        // Alternates the whole configuration with a property read (D-Bus) or a farm list.
        let read = if reads.count % 2 == 0 {
            t.read_config().map(|_| ())
        } else {
            t.read_small()
        };
        let took = began.elapsed();
        if let Err(e) = read {
            reads.error = Some(format!("{transport} read {}: {e}", reads.count));
            return reads;
        }
        reads.count += 1;
        reads.slowest = reads.slowest.max(took);
        std::thread::sleep(Duration::from_millis(20));
    }
    reads
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Farms by name: the daemon lists farms in the order their creations committed, which the
/// clients, running side by side, cannot tell (the front ends answer a change without its
/// generation); within a farm the order is its one owner's and is compared as it is.
fn farms_by_name(config: &Value) -> Value {
    let mut c = config.clone();
    if let Some(farms) = c.get_mut("farms").and_then(Value::as_array_mut) {
        farms.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    }
    c
}

#[test]
fn eight_clients_on_two_transports_lose_nothing_and_stay_flat() {
    if !in_testbed("eight_clients_on_two_transports_lose_nothing_and_stay_flat") {
        return;
    }
    let secs = load_secs();
    let dir = tempdir();
    let daemon = Daemon::start_here_unchecked(&dir);
    let pid = daemon.pid();
    let mut probe = Varlink::connect().expect("connect to the varlink socket");
    let (empty, gen0) = probe.read_config().expect("GetConfig before the load");
    assert_eq!(empty["farms"], json!([]), "{empty}");

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = [true, false]
        .into_iter()
        .map(|on_dbus| {
            let stop = stop.clone();
            std::thread::spawn(move || run_reader(on_dbus, stop))
        })
        .collect();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let began = Instant::now();
            let mut samples = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                samples.push((began.elapsed(), rss_kib(pid)));
                std::thread::sleep(Duration::from_secs(1));
            }
            samples.push((began.elapsed(), rss_kib(pid)));
            samples
        })
    };
    let began = Instant::now();
    let until = began + Duration::from_secs(secs);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| std::thread::spawn(move || run_client(id, until)))
        .collect();
    let records: Vec<Record> = clients
        .into_iter()
        .map(|c| c.join().expect("a client thread"))
        .collect();
    let elapsed = began.elapsed();
    stop.store(true, Ordering::SeqCst);
    let reads: Vec<Reads> = readers
        .into_iter()
        .map(|r| r.join().expect("a reader thread"))
        .collect();
    let samples = sampler.join().expect("the sampler thread");

    // The report.
    println!("load: {CLIENTS} clients for {:.1} s", elapsed.as_secs_f64());
    for transport in ["dbus", "varlink"] {
        let mut lat: Vec<Duration> = records
            .iter()
            .filter(|r| r.transport == transport)
            .flat_map(|r| r.latencies.iter().copied())
            .collect();
        lat.sort();
        println!(
            "  {transport}: {} changes, {:.1}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            lat.len(),
            lat.len() as f64 / elapsed.as_secs_f64(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            ms(lat.last().copied().unwrap_or_default()),
        );
    }
    for r in &reads {
        println!(
            "  {} reader: {} reads, slowest {:.2} ms",
            r.transport,
            r.count,
            ms(r.slowest)
        );
    }
    // About twenty samples, whatever the duration, and always the last.
    let stride = samples.len().div_ceil(20).max(1);
    let rss: Vec<String> = samples
        .iter()
        .enumerate()
        .filter(|(i, _)| i % stride == 0 || *i == samples.len() - 1)
        .map(|(_, s)| s)
        .map(|(at, kib)| format!("{}s:{:.1}", at.as_secs(), *kib as f64 / 1024.0))
        .collect();
    let late: usize = records.iter().map(|r| r.late_objects).sum();
    println!("  D-Bus calls that met an acknowledged change's object not yet exported: {late}");
    println!("  RSS MiB: {}", rss.join(" "));

    let by_kind =
        records
            .iter()
            .flat_map(|r| r.acked.iter())
            .fold(HashMap::new(), |mut m: HashMap<&str, usize>, e| {
                *m.entry(e.kind()).or_default() += 1;
                m
            });
    println!("  changes by kind: {by_kind:?}");

    // Every client and reader ran without an error.
    for r in &records {
        assert_eq!(r.error, None);
    }
    for r in &reads {
        assert_eq!(r.error, None);
        assert!(r.count > 0, "the {} reader read nothing", r.transport);
        assert!(
            r.slowest <= READ_BOUND,
            "a {} read took {:?} (bound {READ_BOUND:?})",
            r.transport,
            r.slowest
        );
    }

    // None lost, none applied twice: the daemon's configuration is the replay's, and each
    // acknowledged change committed exactly once.
    let (config, gen1) = probe.read_config().expect("GetConfig after the load");
    let acked: usize = records.iter().map(|r| r.acked.len()).sum();
    assert_eq!(
        gen1 - gen0,
        acked as u64,
        "generations committed against changes acknowledged"
    );
    let edits: Vec<&[Edit]> = records.iter().map(|r| r.acked.as_slice()).collect();
    let replayed = replay::replay(&edits);
    assert_eq!(farms_by_name(&config), farms_by_name(&replayed));
    let farms = config["farms"].as_array().map(Vec::len).unwrap_or_default();
    assert!(farms >= CLIENTS, "each client's own farm is there: {farms}");

    // The daemon's memory stayed flat after warm-up.
    let after: Vec<u64> = samples
        .iter()
        .filter(|(at, _)| *at >= WARM_UP)
        .map(|(_, kib)| *kib)
        .collect();
    assert!(after.len() >= 2, "too few RSS samples after warm-up: {samples:?}");
    let (first, last) = (after[0], after[after.len() - 1]);
    println!(
        "  RSS after warm-up: first {first} KiB, last {last} KiB, peak {} KiB (margin {RSS_MARGIN_KIB} KiB)",
        after.iter().max().copied().unwrap_or_default()
    );
    assert!(
        last <= first + RSS_MARGIN_KIB,
        "RSS grew from {first} KiB to {last} KiB (margin {RSS_MARGIN_KIB} KiB): {samples:?}"
    );
    daemon.stop();
}
