//! Datapath bench: the cost of a new TCP connection through nftlbd farms of very different sizes,
//! measured as the README's datapath bench describes: one client, one backend namespace with
//! a whole /16 of local addresses, and one balancer namespace per design, all at once; a single
//! thread makes blocking connect + RST-close round robin over the designs, so drift hits all
//! alike, and the figure is the median per design and its ratio to plain forwarding.
//!
//!   cargo bench --bench datapath    full run (3 blocks of 3,000 connections per design)
//!   cargo test --benches            smoke run (1 block of 100) so the bench cannot rot
//!
//! Designs: `base` (forwarding only, no nftables), `1 backend`, `10,000 backends` (one farm),
//! `10,000 farms` (2 backends each, every connection to a random farm), and the same with a port
//! range per farm (dispatched by the interval map). Writes
//! `target/nftlbd-bench/datapath.md` (or $NFTLBD_BENCH_OUT_DATAPATH).

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use nftlbd::engine::{Allocation, KernelEngine};
use nftlbd::model::parse_config;
use serde_json::{Value, json};

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let f0 = File::open(&path).expect("netns");
        // SAFETY: setns changes only this thread's network namespace.
        assert_eq!(
            unsafe { libc::setns(f0.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        f()
    })
}

fn backend_ip(i: usize) -> String {
    format!("10.91.{}.{}", i / 250, 1 + i % 250)
}

fn farm(name: &str, vip: &str, ports: &str, backends: impl Iterator<Item = usize>) -> Value {
    let b: Vec<Value> = backends
        .map(|i| json!({"name": format!("b{i}"), "ip-addr": backend_ip(i)}))
        .collect();
    json!({"name": name, "virtual-addresses": [vip], "virtual-ports": ports, "backends": b})
}

/// `n` farms of 2 backends on 10.<net>.x.y, ports `ports`.
fn farms(net: usize, n: usize, ports: &str) -> Value {
    let vip = |f: usize| format!("10.{net}.{}.{}", f / 250, 1 + f % 250);
    Value::Array(
        (0..n)
            .map(|f| farm(&format!("f{f}"), &vip(f), ports, (2 * f)..(2 * f + 2)))
            .collect(),
    )
}

struct Design {
    name: String,
    /// Destinations, one per connection in turn.
    targets: Vec<SocketAddr>,
    samples: Vec<Duration>,
}

/// connect + close with SO_LINGER 0 (SYN, SYN-ACK, ACK, RST): one conntrack entry made and torn down.
fn connect_close(addr: SocketAddr) -> Option<Duration> {
    let t = Instant::now();
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
    drop(s);
    Some(t.elapsed())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("datapath bench: needs root (network namespaces)");
        std::process::exit(if full { 1 } else { 0 });
    }
    let (blocks, per_block, big, many) = if full {
        (3, 3000, 10_000, 10_000)
    } else {
        (1, 100, 300, 100)
    };
    let p = format!("dpb{}", std::process::id());
    let (client, backend) = (format!("{p}-c"), format!("{p}-be"));
    let designs = [
        "base",
        "1 backend",
        &format!("{big} backends"),
        &format!("{many} farms"),
        &format!("{many} farms, port ranges"),
        "1 backend, counting removed",
        &format!("{many} farms, counting removed"),
    ];
    let lbs: Vec<String> = (0..designs.len()).map(|i| format!("{p}-lb{i}")).collect();
    let all: Vec<String> = [client.clone(), backend.clone()]
        .into_iter()
        .chain(lbs.iter().cloned())
        .collect();
    /// Deletes the namespaces however the bench ends.
    struct Namespaces(Vec<String>);
    impl Drop for Namespaces {
        fn drop(&mut self) {
            for n in &self.0 {
                let _ = Command::new("ip").args(["netns", "del", n]).output();
            }
        }
    }
    let _namespaces = Namespaces(all.clone());
    for n in &all {
        sh(&["ip", "netns", "add", n]);
        sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
    }
    // The backend answers on every address of 10.91.0.0/16.
    sh(&[
        "ip",
        "-n",
        &backend,
        "route",
        "add",
        "local",
        "10.91.0.0/16",
        "dev",
        "lo",
    ]);
    for (i, lb) in lbs.iter().enumerate() {
        let (c, l) = (format!("10.90.{i}.2"), format!("10.90.{i}.1"));
        let (bl, bb) = (format!("10.89.{i}.1"), format!("10.89.{i}.2"));
        sh(&[
            "ip",
            "-n",
            lb,
            "link",
            "add",
            "toc",
            "type",
            "veth",
            "peer",
            "name",
            &format!("c{i}"),
            "netns",
            &client,
        ]);
        sh(&[
            "ip",
            "-n",
            lb,
            "link",
            "add",
            "tob",
            "type",
            "veth",
            "peer",
            "name",
            &format!("b{i}"),
            "netns",
            &backend,
        ]);
        for (ns, dev, a) in [
            (&client, format!("c{i}"), &c),
            (lb, "toc".into(), &l),
            (lb, "tob".into(), &bl),
            (&backend, format!("b{i}"), &bb),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", &format!("{a}/24"), "dev", &dev]);
            sh(&["ip", "-n", ns, "link", "set", &dev, "up"]);
        }
        sh(&[
            "ip",
            "netns",
            "exec",
            lb,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        sh(&["ip", "-n", lb, "route", "add", "10.91.0.0/16", "via", &bb]);
        sh(&[
            "ip",
            "-n",
            &backend,
            "route",
            "add",
            &format!("10.90.{i}.0/24"),
            "via",
            &bl,
        ]);
        // This design's destinations are routed through its balancer.
        let dst = if i == 0 {
            "10.91.0.0/16".to_string()
        } else {
            format!("10.{}.0.0/16", 100 + i)
        };
        sh(&["ip", "-n", &client, "route", "add", &dst, "via", &l]);
    }
    let _server = run_in(&backend, || {
        let l = TcpListener::bind("0.0.0.0:80").expect("bind");
        for s in l.incoming() {
            drop(s);
        }
    });
    let configs = [
        None,
        Some(json!([farm("one", "10.101.0.1", "80", 0..1)])),
        Some(json!([farm("big", "10.102.0.1", "80", 0..big)])),
        Some(farms(103, many, "80")),
        Some(farms(104, many, "80-81")),
        Some(json!([farm("one", "10.105.0.1", "80", 0..1)])),
        Some(farms(106, many, "80")),
    ];
    let mut engines = Vec::new();
    for (lb, c) in lbs.iter().zip(&configs) {
        if let Some(c) = c {
            let config = parse_config(&json!({ "farms": c }).to_string()).expect("valid");
            engines.push(
                run_in(lb, move || {
                    let mut e = KernelEngine::open().expect("engine");
                    e.reconcile(config, Allocation::default()).expect("load");
                    e
                })
                .join()
                .expect("engine thread"),
            );
        }
    }
    // The last two designs are "1 backend" and "many farms" without their counting chains: what
    // counting costs, side by side.
    let no_count = "flush chain ip nftlbd count\ndelete chain ip nftlbd count\n\
                    flush chain ip nftlbd count-out\ndelete chain ip nftlbd count-out\n";
    for lb in &lbs[5..] {
        let mut nft = Command::new("ip")
            .args(["netns", "exec", lb, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft");
        if let Some(mut stdin) = nft.stdin.take() {
            let _ = stdin.write_all(no_count.as_bytes());
        }
        assert!(nft.wait().expect("nft").success(), "counting chains removed");
    }
    let ip = |s: String| SocketAddr::V4(SocketAddrV4::new(s.parse::<Ipv4Addr>().expect("ip"), 80));
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut ds: Vec<Design> = designs
        .iter()
        .enumerate()
        .map(|(i, name)| Design {
            name: name.to_string(),
            targets: match i {
                0 => vec![ip(backend_ip(0))],
                1 => vec![ip("10.101.0.1".into())],
                2 => vec![ip("10.102.0.1".into())],
                5 => vec![ip("10.105.0.1".into())],
                _ => (0..4096)
                    .map(|_| {
                        let f = (next() % many as u64) as usize;
                        ip(format!("10.{}.{}.{}", 100 + i, f / 250, 1 + f % 250))
                    })
                    .collect(),
            },
            samples: Vec::new(),
        })
        .collect();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# datapath bench ({} run): new TCP connection (connect + RST close), median per design\n",
        if full { "full" } else { "smoke" }
    );
    let _ = writeln!(
        report,
        "| design | block | median µs | ratio to base | added µs | failed |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|---|");
    for block in 0..blocks {
        let mut failed = vec![0usize; ds.len()];
        let results = run_in(&client, {
            let targets: Vec<Vec<SocketAddr>> = ds.iter().map(|d| d.targets.clone()).collect();
            move || {
                let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
                let mut fails = vec![0usize; targets.len()];
                for round in 0..per_block {
                    for (i, t) in targets.iter().enumerate() {
                        match connect_close(t[round % t.len()]) {
                            Some(d) => samples[i].push(d),
                            None => fails[i] += 1,
                        }
                    }
                }
                (samples, fails)
            }
        })
        .join()
        .expect("client thread");
        for (i, (mut s, f)) in results.0.into_iter().zip(results.1).enumerate() {
            s.sort();
            ds[i].samples = s;
            failed[i] = f;
        }
        let med = |d: &Design| {
            d.samples
                .get(d.samples.len() / 2)
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e6
        };
        let base = med(&ds[0]);
        for (i, d) in ds.iter().enumerate() {
            let m = med(d);
            let _ = writeln!(
                report,
                "| {} | {} | {m:.1} | {:.2} | {:.1} | {} |",
                d.name,
                block + 1,
                m / base,
                m - base,
                failed[i]
            );
        }
    }
    let _ = writeln!(
        report,
        "\nOne thread on one client makes the connections, designs interleaved; each design has its own balancer\n\
         namespace. Only ratios inside a block are comparable; absolute µs drift on this machine."
    );
    print!("{report}");
    drop(engines);
    let out = std::env::var_os("NFTLBD_BENCH_OUT_DATAPATH")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/nftlbd-bench/datapath.md")
        });
    if let Some(p) = out.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    std::fs::write(&out, &report).expect("write report");
}
