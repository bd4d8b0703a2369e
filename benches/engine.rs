//! Engine bench: whole configurations and single changes through the engine (render, diff, one
//! netlink transaction), beside `nft -f` of the same ruleset or the same change, interleaved in
//! one run. Needs root: it moves itself into a fresh network namespace.
//!
//!   cargo bench --bench engine     full run: a farm of 10,000 backends, one backend added and
//!                                  removed in it, 10,000 farms of 2 backends; 5 reps
//!   cargo test --benches           smoke run (small sizes, 1 rep) so the bench cannot rot
//!
//! Figures go to stdout and to `target/nftlbd-bench/engine.md` (or $NFTLBD_BENCH_OUT_ENGINE).

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use nftlbd::engine::layout::{backend_id, farm_tag, shard_of, slot_base};
use nftlbd::engine::{Allocation, KernelEngine, Outcome};
use nftlbd::model::{Config, parse_config};
use serde_json::{Value, json};

fn backend(i: usize) -> Value {
    json!({"name": format!("b{i}"), "ip-addr": format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256)})
}

fn big_farm(n: usize, extra: bool, without: Option<usize>) -> Config {
    let mut b: Vec<Value> = (0..n).filter(|i| Some(*i) != without).map(backend).collect();
    if extra {
        b.push(json!({"name": "extra", "ip-addr": "10.200.0.1"}));
    }
    let f = json!({"farms": [{"name": "big", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80,443", "backends": b}]});
    parse_config(&f.to_string()).expect("valid")
}

fn many_farms(n: usize, grown: Option<usize>) -> Config {
    let farms: Vec<Value> = (0..n)
        .map(|i| {
            let mut b = vec![backend(2 * i), backend(2 * i + 1)];
            if grown == Some(i) {
                b.push(json!({"name": "extra", "ip-addr": "10.200.0.1"}));
            }
            json!({"name": format!("f{i}"), "virtual-addresses": [format!("172.{}.{}.{}", 16 + i / 65536, (i / 256) % 256, i % 256)],
                   "virtual-ports": "80", "backends": b})
        })
        .collect();
    parse_config(&json!({ "farms": farms }).to_string()).expect("valid")
}

fn nft(args: &[&str]) -> String {
    let out = Command::new("nft").args(args).output().expect("run nft");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft_file(path: &std::path::Path, text: &str) -> Duration {
    std::fs::write(path, text).expect("write nft file");
    let t = Instant::now();
    nft(&["-f", path.to_str().expect("utf-8 path")]);
    t.elapsed()
}

/// Times one engine call; the configuration is built before the clock starts.
fn timed(f: impl FnOnce() -> Outcome) -> (Duration, usize) {
    let t = Instant::now();
    let o = f();
    (t.elapsed(), o.messages)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A farm chain's rules, as `nft` writes them, for a round-robin farm with `slots` slots.
fn farm_rules(name: &str, id: u16, slots: usize) -> String {
    let (tag, base, shard) = (farm_tag(id), slot_base(id), shard_of(id));
    format!(
        "flush chain ip nftlbd farm-{name}\n\
         add rule ip nftlbd farm-{name} ct mark set 0x{tag:08x}\n\
         add rule ip nftlbd farm-{name} ct mark set numgen inc mod {slots} offset {base} jump pick-{shard}\n\
         add rule ip nftlbd farm-{name} goto to-backend\n\
         add rule ip nftlbd farm-{name} drop\n"
    )
}

/// The nft commands that add backend `extra` (member `member`, slot `slot`) to farm `id`.
fn nft_add_backend(name: &str, id: u16, member: u16, slot: usize, ip: &str) -> String {
    let bid = backend_id(id, member);
    format!(
        "add element ip nftlbd slots-{} {{ {} : 0x{bid:08x} }}\n\
         add element ip nftlbd targets-a {{ 0x{bid:08x} : {ip} }}\n\
         add element ip nftlbd masq {{ 0x{bid:08x} }}\n{}",
        shard_of(id),
        slot_base(id) as usize + slot,
        farm_rules(name, id, slot + 1)
    )
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("engine bench: needs root (network namespace + CAP_NET_ADMIN)");
        std::process::exit(if full { 1 } else { 0 });
    }
    // SAFETY: single-threaded here; moves this process into an empty network namespace.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
    let (n_big, n_farms, reps) = if full { (10_000, 10_000, 5) } else { (300, 100, 1) };
    let dir = std::env::temp_dir().join(format!("nftlbd-engine-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut rows: Vec<(String, Vec<Duration>, Vec<Duration>, usize)> = vec![
        (format!("load a farm of {n_big} backends"), vec![], vec![], 0),
        (
            format!("add 1 backend to it ({n_big} → {})", n_big + 1),
            vec![],
            vec![],
            0,
        ),
        (
            format!("remove 1 backend from it ({} → {n_big})", n_big + 1),
            vec![],
            vec![],
            0,
        ),
        (format!("load {n_farms} farms of 2 backends"), vec![], vec![], 0),
        (
            format!("add 1 backend to one of the {n_farms} farms"),
            vec![],
            vec![],
            0,
        ),
    ];
    let grown = n_farms / 2;
    let removed = n_big / 2;
    for _ in 0..reps {
        // --- ours ---
        let (c_big, c_add, c_del, c_many) = (
            big_farm(n_big, false, None),
            big_farm(n_big, true, None),
            big_farm(n_big, true, Some(removed)),
            many_farms(n_farms, None),
        );
        let c_grown = many_farms(n_farms, Some(grown));
        let mut e = KernelEngine::open().expect("engine");
        let (d, m) = timed(|| e.reconcile(c_big, Allocation::default()).expect("load"));
        rows[0].1.push(d);
        rows[0].3 = m;
        let listing_big = nft(&["list", "ruleset"]);
        let (d, m) = timed(|| e.apply(c_add).expect("add"));
        rows[1].1.push(d);
        rows[1].3 = m;
        let (d, m) = timed(|| e.apply(c_del).expect("remove"));
        rows[2].1.push(d);
        rows[2].3 = m;
        e.apply(Config::default()).expect("clear");
        let (d, m) = timed(|| e.apply(c_many).expect("many"));
        rows[3].1.push(d);
        rows[3].3 = m;
        let listing_many = nft(&["list", "ruleset"]);
        let (d, m) = timed(|| e.apply(c_grown).expect("grow one farm"));
        rows[4].1.push(d);
        rows[4].3 = m;
        e.apply(Config::default()).expect("clear");
        drop(e);

        // --- nft -f of the same ruleset and the same changes ---
        rows[0].2.push(nft_file(&dir.join("big.nft"), &listing_big));
        let base = slot_base(1) as usize;
        let extra = backend_id(1, n_big as u16 + 1);
        let add = nft_add_backend("big", 1, n_big as u16 + 1, n_big, "10.200.0.1");
        rows[1].2.push(nft_file(&dir.join("add.nft"), &add));
        let gone = backend_id(1, removed as u16 + 1);
        let del = format!(
            "delete element ip nftlbd slots-0 {{ {k} }}\n\
             add element ip nftlbd slots-0 {{ {k} : 0x{extra:08x} }}\n\
             delete element ip nftlbd slots-0 {{ {last} }}\n\
             delete element ip nftlbd targets-a {{ 0x{gone:08x} }}\n\
             delete element ip nftlbd masq {{ 0x{gone:08x} }}\n{}",
            farm_rules("big", 1, n_big),
            k = base + removed,
            last = base + n_big
        );
        rows[2].2.push(nft_file(&dir.join("del.nft"), &del));
        nft(&["delete", "table", "ip", "nftlbd"]);
        rows[3].2.push(nft_file(&dir.join("many.nft"), &listing_many));
        let grow = nft_add_backend(&format!("f{grown}"), grown as u16 + 1, 3, 2, "10.200.0.1");
        rows[4].2.push(nft_file(&dir.join("grow.nft"), &grow));
        nft(&["delete", "table", "ip", "nftlbd"]);
    }
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# engine bench ({} run, median of {reps}, interleaved with nft -f)\n",
        if full { "full" } else { "smoke" }
    );
    let _ = writeln!(
        report,
        "| operation | nftlbd engine | messages | nft -f, same ruleset or change | ratio (ours / nft) |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|");
    for (what, ours, theirs, m) in &mut rows {
        let (a, b) = (median(ours), median(theirs));
        let _ = writeln!(
            report,
            "| {what} | {} | {m} | {} | {:.2} |",
            ms(a),
            ms(b),
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
    let _ = writeln!(
        report,
        "\nnftlbd's times include rendering the objects and computing the difference; nft's include parsing.\n\
         The nft change files are the minimal equivalent commands (elements + the farm's rules), not a reload."
    );
    print!("{report}");
    let out = std::env::var_os("NFTLBD_BENCH_OUT_ENGINE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/nftlbd-bench/engine.md")
        });
    if let Some(p) = out.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    std::fs::write(&out, &report).expect("write report");
    let _ = std::fs::remove_dir_all(&dir);
}
