//! Control-plane bench of the netlink layer, beside `nft -f` in the same run (interleaved, so drift
//! hits both alike). Needs root: it moves itself into a fresh network namespace.
//!
//!   cargo bench --bench netlink            full run (10k and 100k elements, 5 reps)
//!   cargo test --benches                   smoke run (1k elements, 1 rep) so the bench cannot rot
//!
//! Figures go to stdout and to `target/nftlbd-bench/netlink.md` (or $NFTLBD_BENCH_OUT).

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use nftlbd::netlink::*;

const TABLE: &str = "bench";

fn elem(i: u32) -> SetElem {
    let ip = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
    SetElem::mapping(
        i.to_ne_bytes().to_vec(),
        Data::Value(concat(&[&ip, &8080u16.to_be_bytes()]).into()),
    )
}

fn map() -> Set {
    Set::map(
        Family::Ip,
        TABLE,
        "backends",
        TypeSpec::of(DataType::Mark),
        TypeSpec::concat(&[DataType::Ipv4Addr, DataType::InetService]),
    )
}

fn load_ours(conn: &mut Connection, n: u32) -> Duration {
    let t = Instant::now();
    let mut b = Batch::new();
    b.add_table(&Table::new(Family::Ip, TABLE)).expect("table");
    b.add_set(&map()).expect("set");
    let elems: Vec<SetElem> = (0..n).map(elem).collect();
    b.add_elems(Family::Ip, TABLE, "backends", &elems)
        .expect("elements");
    conn.commit(b).expect("commit");
    t.elapsed()
}

fn nft_text(n: u32) -> String {
    let mut s = String::with_capacity(n as usize * 32);
    s.push_str("table ip bench {\n map backends {\n  type mark : ipv4_addr . inet_service\n  elements = {\n");
    for i in 0..n {
        s.push_str(&format!(
            "   0x{:08x} : 10.{}.{}.{} . 8080,\n",
            i,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8
        ));
    }
    s.push_str("  }\n }\n}\n");
    s
}

fn run_nft(args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new("nft").args(args).output().expect("run nft");
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn drop_table(conn: &mut Connection) {
    let mut b = Batch::new();
    b.del_table(Family::Ip, TABLE).expect("del");
    conn.commit(b).expect("drop table");
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("netlink bench: needs root (network namespace + CAP_NET_ADMIN)");
        std::process::exit(if full { 1 } else { 0 });
    }
    // SAFETY: single-threaded here; moves this process into an empty network namespace.
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) },
        0,
        "unshare: {}",
        std::io::Error::last_os_error()
    );
    let sizes: &[u32] = if full { &[10_000, 100_000] } else { &[1_000] };
    let reps = if full { 5 } else { 1 };
    let single_reps = if full { 300 } else { 10 };
    let dir = std::env::temp_dir().join(format!("nftlbd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut conn = Connection::new().expect("netlink");
    let mut report = String::new();
    let mut line = |s: String| {
        println!("{s}");
        report.push_str(&s);
        report.push('\n');
    };
    line(format!(
        "# netlink bench ({} run, {} reps, interleaved with nft)\n",
        if full { "full" } else { "smoke" },
        reps
    ));
    line("| operation | nftlbd netlink | nft -f | ratio (ours / nft) |".into());
    line("|---|---|---|---|".into());

    for &n in sizes {
        let file = dir.join(format!("load-{n}.nft"));
        std::fs::write(&file, nft_text(n)).expect("write nft file");
        let f = file.to_str().expect("utf-8 path");
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            ours.push(load_ours(&mut conn, n));
            drop_table(&mut conn);
            theirs.push(run_nft(&["-f", f]));
            drop_table(&mut conn);
        }
        let (a, b) = (median(&mut ours), median(&mut theirs));
        line(format!(
            "| load a map of {n} elements (one transaction) | {} | {} | {:.2} |",
            ms(a),
            ms(b),
            a.as_secs_f64() / b.as_secs_f64()
        ));
    }

    // Single-element changes in a map of the largest size.
    let n = *sizes.last().expect("sizes");
    load_ours(&mut conn, n);
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for i in 0..single_reps {
        let e = [elem(n + i)];
        let t = Instant::now();
        let mut b = Batch::new();
        b.add_elems(Family::Ip, TABLE, "backends", &e).expect("add");
        conn.commit(b).expect("add one");
        add.push(t.elapsed());
        let t = Instant::now();
        let mut b = Batch::new();
        b.del_elems(Family::Ip, TABLE, "backends", &e).expect("del");
        conn.commit(b).expect("delete one");
        del.push(t.elapsed());
    }
    let mut nft_add = Vec::new();
    let mut nft_swap = Vec::new();
    let swap_file = dir.join("swap.nft");
    std::fs::write(
        &swap_file,
        format!("delete element ip bench backends {{ 0x{:08x} }}\nadd element ip bench backends {{ 0x{:08x} : 10.9.9.9 . 8080 }}\n", 7, 7),
    )
    .expect("write swap file");
    for i in 0..single_reps.min(30) {
        let k = format!("{{ 0x{:08x} : 10.9.9.9 . 8080 }}", n + 1_000_000 + i);
        nft_add.push(run_nft(&["add", "element", "ip", TABLE, "backends", &k]));
        nft_swap.push(run_nft(&["-f", swap_file.to_str().expect("utf-8")]));
    }
    let mut swap = Vec::new();
    for _ in 0..single_reps {
        let t = Instant::now();
        let mut b = Batch::new();
        b.del_elems(
            Family::Ip,
            TABLE,
            "backends",
            &[SetElem::key(7u32.to_ne_bytes().to_vec())],
        )
        .expect("del");
        b.add_elems(Family::Ip, TABLE, "backends", &[elem(7)])
            .expect("add");
        conn.commit(b).expect("swap");
        swap.push(t.elapsed());
    }
    let (a, b) = (median(&mut add), median(&mut nft_add));
    line(format!(
        "| add one element to a {n}-element map | {} (p99 {}) | {} (`nft add element`) | {:.3} |",
        ms(a),
        ms(pct(&mut add, 0.99)),
        ms(b),
        a.as_secs_f64() / b.as_secs_f64()
    ));
    line(format!(
        "| delete one element from a {n}-element map | {} (p99 {}) | | |",
        ms(median(&mut del)),
        ms(pct(&mut del, 0.99))
    ));
    let (a, b) = (median(&mut swap), median(&mut nft_swap));
    line(format!(
        "| replace one backend atomically (delete + add) | {} | {} | {:.3} |",
        ms(a),
        ms(b),
        a.as_secs_f64() / b.as_secs_f64()
    ));
    drop_table(&mut conn);
    let _ = std::fs::remove_dir_all(&dir);

    let out = std::env::var("NFTLBD_BENCH_OUT").unwrap_or_else(|_| "target/nftlbd-bench/netlink.md".into());
    if let Some(parent) = std::path::Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::File::create(&out).and_then(|mut f| f.write_all(report.as_bytes())) {
        Ok(()) => println!("\nwritten to {out}"),
        Err(e) => eprintln!("could not write {out}: {e}"),
    }
}
