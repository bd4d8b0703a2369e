//! The measured window as a markdown table.

use std::fmt::Write;
use std::time::{Duration, Instant};

use crate::record::Arrival;

/// Buckets of a second the checks' arrival times are counted in.
const BUCKETS: usize = 10;

pub struct Run {
    pub backends: usize,
    /// Backends the first round reached, and how long after the load it took.
    pub first_seen: usize,
    pub first_round: Duration,
    /// The measured window: its length and start.
    pub wall: Duration,
    pub from: Instant,
    pub idle_share: f64,
    pub share: f64,
    pub arrivals: Vec<Arrival>,
    pub healthy: usize,
    /// Each backend's last check as the checker timed it, in microseconds.
    pub took_us: Vec<u64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Checks per 100 ms of the second (the window's start is 0), per second of the window.
fn buckets(r: &Run) -> [f64; BUCKETS] {
    let mut b = [0u64; BUCKETS];
    for (_, at) in &r.arrivals {
        let since = at.duration_since(r.from).as_micros() % 1_000_000;
        b[(since as usize * BUCKETS) / 1_000_000] += 1;
    }
    b.map(|c| c as f64 / r.wall.as_secs_f64())
}

/// Checks in each whole second of the window: (fewest, most).
fn per_second(r: &Run) -> (u64, u64) {
    let whole = r.wall.as_secs() as usize;
    let mut n = vec![0u64; whole.max(1)];
    for (_, at) in &r.arrivals {
        if let Some(c) = n.get_mut(at.duration_since(r.from).as_secs() as usize) {
            *c += 1;
        }
    }
    let lo = n.iter().copied().min().unwrap_or(0);
    (lo, n.iter().copied().max().unwrap_or(0))
}

/// The gaps between two checks of one backend, sorted, in seconds; the checks each backend had,
/// sorted; and the backends the window saw no check of.
fn gaps(r: &Run) -> (Vec<f64>, Vec<f64>, usize) {
    let mut by: Vec<Vec<Instant>> = vec![Vec::new(); r.backends];
    for (i, at) in &r.arrivals {
        by[*i].push(*at);
    }
    let unseen = by.iter().filter(|v| v.is_empty()).count();
    let mut counts: Vec<f64> = by.iter().map(|v| v.len() as f64).collect();
    counts.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = by
        .iter_mut()
        .flat_map(|v| {
            v.sort();
            v.windows(2)
                .map(|w| (w[1] - w[0]).as_secs_f64())
                .collect::<Vec<_>>()
        })
        .collect();
    gaps.sort_by(f64::total_cmp);
    (gaps, counts, unseen)
}

pub fn render(r: &Run) -> String {
    let secs = r.wall.as_secs_f64();
    let (gaps, counts, unseen) = gaps(r);
    let (fewest, most) = per_second(r);
    let b = buckets(r);
    let even = r.arrivals.len() as f64 / secs / BUCKETS as f64;
    let (lo, hi) = b
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    let mut took: Vec<f64> = r.took_us.iter().map(|u| *u as f64 / 1000.0).collect();
    took.sort_by(f64::total_cmp);
    let mut s = String::new();
    let mut row = |k: &str, v: String| {
        let _ = writeln!(s, "| {k} | {v} |");
    };
    row(
        "backends, tcp check every 1 s (jitter 0.1 s, timeout 0.5 s)",
        r.backends.to_string(),
    );
    row(
        "first round: backends checked, time after the load",
        format!("{} in {:.1} s", r.first_seen, r.first_round.as_secs_f64()),
    );
    row("measured window", format!("{secs:.1} s"));
    row(
        "daemon CPU share, checking / idle (`--no-checks`)",
        format!("{:.1} % / {:.1} %", r.share * 100.0, r.idle_share * 100.0),
    );
    row(
        "checker's CPU share (difference), of one core",
        format!("{:.1} %", (r.share - r.idle_share) * 100.0),
    );
    row(
        "checks per second (backends saw)",
        format!("{:.0}", r.arrivals.len() as f64 / secs),
    );
    row(
        "checks in one second of the window: fewest / most",
        format!("{fewest} / {most}"),
    );
    row(
        "checks of one backend in the window: min / p50 / max",
        format!(
            "{:.0} / {:.0} / {:.0}",
            counts.first().copied().unwrap_or(0.0),
            percentile(&counts, 0.5),
            counts.last().copied().unwrap_or(0.0)
        ),
    );
    row(
        "checks per 100 ms of the second, per second (0-100 ms … 900-1000 ms)",
        b.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" "),
    );
    row(
        "fullest / emptiest 100 ms, against an even spread",
        format!("{:.2} / {:.2}", hi / even, lo / even),
    );
    row(
        "gap between two checks of a backend: p50 / p99 / p99.9 / max",
        format!(
            "{:.3} / {:.3} / {:.3} / {:.3} s",
            percentile(&gaps, 0.5),
            percentile(&gaps, 0.99),
            percentile(&gaps, 0.999),
            gaps.last().copied().unwrap_or(f64::NAN)
        ),
    );
    row("backends not checked in the window", unseen.to_string());
    row(
        "one check as the checker timed it: p50 / p99",
        format!(
            "{:.2} / {:.2} ms",
            percentile(&took, 0.5),
            percentile(&took, 0.99)
        ),
    );
    row(
        "backends healthy at the end",
        format!("{} of {}", r.healthy, r.backends),
    );
    format!("| measure | value |\n|---|---|\n{s}")
}
