//! The Markdown report: medians per size, the ratios to `nft`, and the four targets, each ok or
//! missed. Targets are reported, never asserted: this is a measurement.

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::FarmsRun;
use crate::measure::{BATCH, SizeRun};

/// A single change through the daemon may cost at most this share of `nft add element`.
const NFT_SHARE: f64 = 0.25;
/// A single change at the largest size may cost at most this multiple of the smallest size's.
const GROWTH: f64 = 1.5;
/// A batch of [`BATCH`] state changes must cost less than this many single ones.
const SINGLES: f64 = 20.0;
const RSS_LIMIT_MIB: f64 = 64.0;
/// Loading many farms through the daemon must cost less than this share of `nft -f`.
const LOAD_SHARE: f64 = 0.10;

fn median(v: &[Duration]) -> Option<Duration> {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied()
}

/// 60000 as "60,000".
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn cell(v: &[Duration]) -> String {
    median(v).map_or_else(|| "n/a".into(), |d| format!("{:.2} ms", ms(d)))
}

fn ratio(a: &[Duration], b: &[Duration]) -> Option<f64> {
    Some(ms(median(a)?) / ms(median(b)?))
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".into(), |r| format!("{r:.2}"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "missed" }
}

/// The single changes, by name, as the rows' samples.
fn singles(r: &SizeRun) -> [(&'static str, &[Duration]); 4] {
    let s = &r.samples;
    [
        ("state", &s.state),
        ("weight", &s.weight),
        ("add", &s.add),
        ("remove", &s.remove),
    ]
}

fn batch_cell(r: &SizeRun) -> String {
    if r.batch_missing {
        return "n/a (SetBackends missing)".into();
    }
    let c = cell(&r.samples.batch);
    if r.batch_size == BATCH {
        c
    } else {
        format!("{c} ({} states)", thousands(r.batch_size))
    }
}

pub fn render(runs: &[SizeRun], many: Option<&FarmsRun>, full: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# changes bench ({} run): the daemon (varlink) beside `nft`\n",
        if full { "full" } else { "smoke" }
    );
    if !runs.is_empty() {
        sizes(&mut o, runs);
    }
    if let Some(m) = many {
        farms(&mut o, m);
    }
    o
}

fn farms(o: &mut String, m: &FarmsRun) {
    let _ = writeln!(
        o,
        "## {} farms of {} backends loaded at once\n",
        thousands(m.farms),
        crate::farms::BACKENDS
    );
    let _ = writeln!(
        o,
        "Medians of {} rounds, taking turns. Daemon: a fresh `nftlbd run --no-bus --varlink PATH` in \
         a fresh namespace, the whole configuration in one `ImportConfig` call (mode replace), from \
         the call's first byte to the reply's last. nft: `nft -f` into a fresh namespace of the same \
         services written by hand with one map per farm (a dispatch `ip daddr . tcp dport vmap` to a \
         chain per farm, `dnat to numgen inc mod 2 map {{ 0 : …, 1 : … }}` in it, masquerade), \
         process start included. RSS: the daemon's VmRSS once at rest after the load (300 ms on, then steady) and its VmHWM.\n",
        m.daemon.len()
    );
    let _ = writeln!(
        o,
        "| farms (backends) | daemon `ImportConfig` | `nft -f` one map per farm | ratio | RSS after the load / peak |"
    );
    let _ = writeln!(o, "|{}", "---|".repeat(5));
    let rss = m.rss.iter().map(|r| r.now_kib).max().unwrap_or_default();
    let peak = m.rss.iter().map(|r| r.peak_kib).max().unwrap_or_default();
    let r = ratio(&m.daemon, &m.nft);
    let _ = writeln!(
        o,
        "| {} ({}) | {} | {} | {} | {:.0} / {:.0} MiB |\n",
        thousands(m.farms),
        thousands(m.farms * crate::farms::BACKENDS),
        cell(&m.daemon),
        cell(&m.nft),
        ratio_cell(r),
        mib(rss),
        mib(peak),
    );
    let _ = writeln!(
        o,
        "- the load under {LOAD_SHARE:.2} of `nft -f`'s time: **{}** ({}; RSS the largest of the rounds)\n",
        verdict(r.is_some_and(|r| r < LOAD_SHARE)),
        ratio_cell(r)
    );
}

fn sizes(o: &mut String, runs: &[SizeRun]) {
    let _ = writeln!(o, "## One weighted farm per size: backend changes\n");
    let _ = writeln!(
        o,
        "Medians. Daemon: `nftlbd run --no-bus --varlink PATH` in a fresh namespace per size, a plain \
         varlink client, the time from the call's first byte to the reply's last. nft: a fresh namespace \
         holding the hand-written table (one map per farm, slot → backend address, one element per \
         slot), `nft` started as an operator would, process start included; each daemon change is \
         followed by its nft counterpart. Weights are 1, 2, 3, … so slots ≈ 2 × backends.\n"
    );
    let _ = writeln!(
        o,
        "| backends (slots) | rounds, loads | state | weight | add backend | remove backend | batch of {batch} states (1 call) | load farm | `nft add element` | `nft -f` 1 element | `nft delete element` | `nft -f` ruleset | RSS loaded / after changes / peak | peak during GetFarm |",
        batch = thousands(BATCH)
    );
    let _ = writeln!(o, "|{}", "---|".repeat(14));
    for r in runs {
        let s = &r.samples;
        let _ = writeln!(
            o,
            "| {} ({}) | {}, {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} / {:.0} MiB | {:.0} MiB |",
            thousands(r.backends),
            thousands(r.slots),
            r.reps,
            s.load.len(),
            cell(&s.state),
            cell(&s.weight),
            cell(&s.add),
            cell(&s.remove),
            batch_cell(r),
            cell(&s.load),
            cell(&s.nft_add),
            cell(&s.nft_file),
            cell(&s.nft_delete),
            cell(&s.nft_load),
            mib(r.rss_loaded.now_kib),
            mib(r.rss_changed.now_kib),
            mib(r.rss_changed.peak_kib),
            mib(r.get_farm_peak_kib),
        );
    }
    let _ = writeln!(
        o,
        "\nA round is 2 state changes (drain, up), 2 weight changes, 1 add, 1 remove and 2 batches, \
         each followed by one nft command; a load is the farm deleted and created again through the \
         daemon, then the ruleset flushed and loaded by `nft -f`. RSS is the daemon's VmRSS at rest \
         (300 ms after the last reply, then steady) after the first load and a GetFarm, and after \
         the rounds; the peak is its VmHWM over the load and the rounds. GetFarm's peak is its VmHWM \
         during that one call, counted from the size at rest after the load.\n"
    );
    let _ = writeln!(
        o,
        "| backends | state ÷ `nft add element` | weight ÷ | add ÷ | remove ÷ | remove ÷ `nft delete element` | batch ÷ ({SINGLES:.0} × state) | load ÷ `nft -f` ruleset |"
    );
    let _ = writeln!(o, "|{}", "---|".repeat(8));
    for r in runs {
        let s = &r.samples;
        let nft = &s.nft_add;
        let batch = ratio(&s.batch, &s.state).map(|x| x / SINGLES);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            thousands(r.backends),
            ratio_cell(ratio(&s.state, nft)),
            ratio_cell(ratio(&s.weight, nft)),
            ratio_cell(ratio(&s.add, nft)),
            ratio_cell(ratio(&s.remove, nft)),
            ratio_cell(ratio(&s.remove, &s.nft_delete)),
            ratio_cell(batch),
            ratio_cell(ratio(&s.load, &s.nft_load)),
        );
    }
    let _ = writeln!(
        o,
        "\n`nft delete element` is the nft counterpart of removing a backend, so it is shown beside the \
         removal too; the targets compare every single change with `nft add element`.\n"
    );
    let _ = writeln!(o, "Targets (from this one run; reported, not asserted):\n");
    targets(o, runs);
    let _ = writeln!(o);
}

fn targets(o: &mut String, runs: &[SizeRun]) {
    let (Some(small), Some(big)) = (runs.first(), runs.last()) else {
        return;
    };
    // A single change at the largest size within GROWTH of the same change at the smallest.
    let growth: Vec<(&str, Option<f64>)> = singles(big)
        .iter()
        .zip(singles(small))
        .map(|((name, b), (_, s))| (*name, ratio(b, s)))
        .collect();
    let ok = growth.iter().all(|(_, g)| g.is_some_and(|g| g <= GROWTH));
    let detail: Vec<String> = growth
        .iter()
        .map(|(name, g)| format!("{name} {}×", ratio_cell(*g)))
        .collect();
    let _ = writeln!(
        o,
        "- a single change at {} within {GROWTH}× of the same change at {}: **{}** ({})",
        thousands(big.backends),
        thousands(small.backends),
        verdict(ok),
        detail.join(", ")
    );

    // Every single change at most NFT_SHARE of `nft add element`, at every size.
    let mut worst: Option<(f64, &str, usize)> = None;
    let mut complete = true;
    for r in runs {
        for (name, v) in singles(r) {
            match ratio(v, &r.samples.nft_add) {
                Some(x) if worst.is_none_or(|(w, _, _)| x > w) => worst = Some((x, name, r.backends)),
                Some(_) => {}
                None => complete = false,
            }
        }
    }
    let ok = complete && worst.is_some_and(|(w, _, _)| w <= NFT_SHARE);
    let detail = worst.map_or_else(
        || "no samples".into(),
        |(w, name, n)| format!("worst: {name} at {} backends, {w:.2} of nft's time", thousands(n)),
    );
    let _ = writeln!(
        o,
        "- every single change at most 1/{:.0} of `nft add element` at every size: **{}** ({detail})",
        1.0 / NFT_SHARE,
        verdict(ok)
    );

    // A batch cheaper than SINGLES single state changes, at every size.
    if runs.iter().any(|r| r.batch_missing) {
        let _ = writeln!(
            o,
            "- a batch of {} state changes cheaper than {SINGLES:.0} single ones: **n/a** (SetBackends missing)",
            thousands(BATCH)
        );
    } else {
        let per: Vec<(usize, usize, Option<f64>)> = runs
            .iter()
            .map(|r| {
                let b = median(&r.samples.batch).map(ms);
                let one = median(&r.samples.state).map(ms);
                (
                    r.backends,
                    r.batch_size,
                    b.zip(one).map(|(b, one)| b / (SINGLES * one)),
                )
            })
            .collect();
        let ok = per.iter().all(|(_, _, x)| x.is_some_and(|x| x < 1.0));
        let detail: Vec<String> = per
            .iter()
            .map(|(n, size, x)| {
                format!(
                    "{}: {} of {SINGLES:.0} singles ({} states)",
                    thousands(*n),
                    ratio_cell(*x),
                    thousands(*size)
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "- a batch of {} state changes cheaper than {SINGLES:.0} single ones: **{}** ({})",
            thousands(BATCH),
            verdict(ok),
            detail.join(", ")
        );
    }

    // At rest, both once the farm is loaded and after the changes: the larger must be under.
    let (loaded, changed) = (mib(big.rss_loaded.now_kib), mib(big.rss_changed.now_kib));
    let _ = writeln!(
        o,
        "- the daemon's RSS at rest under {RSS_LIMIT_MIB:.0} MiB at {} backends: **{}** ({loaded:.1} MiB loaded, {changed:.1} MiB after the changes, peak {:.1} MiB)",
        thousands(big.backends),
        verdict(loaded.max(changed) < RSS_LIMIT_MIB),
        mib(big.rss_changed.peak_kib)
    );
}
