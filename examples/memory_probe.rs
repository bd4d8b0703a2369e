//! Where the daemon's memory goes with one large weighted farm: counts live heap bytes with a
//! global allocator and prints them, with VmRSS, after each step (configuration parsed, farm
//! loaded through the service on the kernel engine, lookups built, changes made). Run as root in
//! a network namespace of its own:
//!
//!   cargo build --release --example memory_probe && unshare -n target/release/examples/memory_probe 60000

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use nftlbd::model::Config;
use nftlbd::service::{Options, Origin, Service};
use serde_json::json;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` was allocated by `System` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn rss_kib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn report(step: &str, base: isize) {
    let (rss, hwm) = rss_kib();
    let heap = LIVE.load(Ordering::Relaxed) - base;
    println!(
        "{step:<40} heap {:>8.1} MiB   rss {:>6.1} MiB   peak {:>6.1} MiB",
        heap as f64 / 1048576.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60000);
    let dir = std::env::temp_dir().join(format!("nftlbd-memory-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let base = LIVE.load(Ordering::Relaxed);
    report("start", base);
    let config: Config =
        serde_json::from_value(json!({"farms": [common::weighted_farm("web", n)]})).expect("farm parses");
    report("config parsed (one copy)", base);
    let service = Service::start(Options {
        state_dir: dir.clone(),
        watch: false,
        farms_dir: None,
    })
    .expect("start");
    report("service started (empty)", base);
    let farm = config.farms[0].clone();
    drop(config);
    report("config dropped, farm kept", base);
    rt.block_on(service.change(Origin::api(), move |c| {
        let mut c = c.clone();
        c.farms.push(farm);
        Ok(c)
    }))
    .expect("load");
    report("farm loaded", base);
    let t = std::time::Instant::now();
    nftlbd::service::trim::release_free_memory();
    println!("  trim took {:?}", t.elapsed());
    report("farm loaded, trimmed", base);
    let ix = service.index();
    report("index built", base);
    drop(ix);
    for i in (0..n).step_by((n / 8).max(1)) {
        let b = format!("b{i}");
        rt.block_on(service.change(Origin::api(), move |c| {
            let mut c = c.clone();
            if let Some(f) = c.farms.iter_mut().find(|f| f.name == "web")
                && let Some(be) = f.backends.iter_mut().find(|x| x.name == b)
            {
                be.weight = be.weight % 3 + 1;
            }
            Ok(c)
        }))
        .expect("change");
    }
    report("after 8 weight changes", base);
    let t = std::time::Instant::now();
    nftlbd::service::trim::release_free_memory();
    println!("  trim took {:?}", t.elapsed());
    report("after malloc_trim", base);
    let alloc = rt
        .block_on(service.query(|e| Ok(e.allocation().clone())))
        .expect("alloc");
    let before = LIVE.load(Ordering::Relaxed);
    drop(alloc);
    println!(
        "  allocation: {:.1} MiB",
        (before - LIVE.load(Ordering::Relaxed)) as f64 / 1048576.0
    );
    let cfg = rt
        .block_on(service.query(|e| Ok(e.config().clone())))
        .expect("config");
    let before = LIVE.load(Ordering::Relaxed);
    drop(cfg);
    println!(
        "  one configuration: {:.1} MiB",
        (before - LIVE.load(Ordering::Relaxed)) as f64 / 1048576.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
