//! One farm size: a daemon of its own, the farm loaded through it and by `nft -f`, then every
//! change through the daemon alternating with its `nft` counterpart (this machine's speed drifts,
//! so the two sides take turns rather than running one after the other).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::{Daemon, METHOD_NOT_FOUND, Rss};
use crate::error::{BenchError, Result};
use crate::{farm, nft};

/// The largest batch of state changes the bench sends in one call.
pub const BATCH: usize = 1000;

pub struct Plan {
    /// Rounds of changes (each: two state changes, two weight changes, an add, a remove, two
    /// batches), unless `budget` runs out first.
    pub reps: usize,
    pub min_reps: usize,
    pub budget: Duration,
    /// Loads of the whole farm through the daemon and by `nft -f` (the first one included).
    pub loads: usize,
}

#[derive(Default)]
pub struct Samples {
    pub state: Vec<Duration>,
    pub weight: Vec<Duration>,
    pub add: Vec<Duration>,
    pub remove: Vec<Duration>,
    pub batch: Vec<Duration>,
    pub load: Vec<Duration>,
    pub nft_add: Vec<Duration>,
    pub nft_file: Vec<Duration>,
    pub nft_delete: Vec<Duration>,
    pub nft_load: Vec<Duration>,
}

pub struct SizeRun {
    pub backends: usize,
    pub slots: usize,
    pub batch_size: usize,
    pub reps: usize,
    /// The daemon answered MethodNotFound to SetBackends.
    pub batch_missing: bool,
    pub samples: Samples,
    pub rss_loaded: Rss,
    /// VmHWM over the load and the changes (reset before GetFarm, so the larger of the two).
    pub rss_changed: Rss,
    /// VmHWM during GetFarm alone, from the size at rest after the load.
    pub get_farm_peak_kib: u64,
}

pub fn size(n: usize, plan: &Plan, dir: &Path) -> Result<SizeRun> {
    let files = nft::Files::write(dir, n)?;
    let mut d = Daemon::start(&n.to_string())?;
    let mut s = Samples::default();
    let create = json!({"farm": farm::json(n)});
    s.load.push(d.timed("CreateFarm", create.clone())?);
    s.nft_load.push(nft::load(&files)?);
    // The load's peak, then GetFarm's alone: it writes the whole farm, so it should need little
    // beyond what the daemon holds.
    let load_peak_kib = d.rss_at_rest()?.peak_kib;
    d.reset_peak()?;
    let (got, _) = d.call("GetFarm", json!({"name": farm::FARM}))?;
    let listed = got["status"]["backends"].as_array().map_or(0, Vec::len);
    if listed != n {
        return Err(BenchError::Daemon(format!(
            "the farm has {listed} backends, not {n}"
        )));
    }
    let rss_loaded = d.rss_at_rest()?;
    let get_farm_peak_kib = rss_loaded.peak_kib;

    let batch_size = n.min(BATCH);
    let batch_members: Vec<String> = (0..batch_size)
        .map(|j| farm::name(j * (n / batch_size)))
        .collect();
    let mut batch_missing = false;
    let started = Instant::now();
    let mut reps = 0;
    while reps < plan.reps && (reps < plan.min_reps || started.elapsed() < plan.budget) {
        let i = (reps * 7919 + 1) % n;
        let b = farm::name(i);
        for state in ["drain", "up"] {
            s.state.push(d.timed(
                "SetBackendState",
                json!({"farm": farm::FARM, "backend": b, "state": state}),
            )?);
            s.nft_add.push(nft::add_element(n)?);
            s.nft_delete.push(nft::delete_element(n)?);
        }
        for w in [farm::other_weight(i), farm::weight(i)] {
            s.weight.push(d.timed(
                "UpdateBackend",
                json!({"farm": farm::FARM, "backend": b, "changes": {"weight": w}}),
            )?);
            s.nft_file.push(nft::add_element_file(&files)?);
            s.nft_delete.push(nft::delete_element(n)?);
        }
        s.add.push(d.timed(
            "AddBackend",
            json!({"farm": farm::FARM, "backend": {"name": farm::EXTRA, "ip-addr": farm::EXTRA_IP}}),
        )?);
        s.nft_add.push(nft::add_element(n)?);
        s.remove.push(d.timed(
            "RemoveBackend",
            json!({"farm": farm::FARM, "backend": farm::EXTRA}),
        )?);
        s.nft_delete.push(nft::delete_element(n)?);
        for state in ["drain", "up"] {
            if batch_missing {
                break;
            }
            match d.timed("SetBackends", batch(&batch_members, state)) {
                Ok(t) => s.batch.push(t),
                Err(BenchError::Varlink { error, .. }) if error == METHOD_NOT_FOUND => {
                    batch_missing = true;
                    break;
                }
                Err(e) => return Err(e),
            }
            s.nft_file.push(nft::add_element_file(&files)?);
            s.nft_delete.push(nft::delete_element(n)?);
        }
        reps += 1;
    }
    let mut rss_changed = d.rss_at_rest()?;
    rss_changed.peak_kib = rss_changed.peak_kib.max(load_peak_kib);

    for _ in 1..plan.loads {
        d.timed("DeleteFarm", json!({"name": farm::FARM}))?;
        s.load.push(d.timed("CreateFarm", create.clone())?);
        s.nft_load.push(nft::load(&files)?);
    }
    drop(d);
    nft::run(&["flush", "ruleset"])?;
    Ok(SizeRun {
        backends: n,
        slots: farm::slots(n),
        batch_size,
        reps,
        batch_missing,
        samples: s,
        rss_loaded,
        rss_changed,
        get_farm_peak_kib,
    })
}

fn batch(members: &[String], state: &str) -> Value {
    let changes: Vec<Value> = members
        .iter()
        .map(|b| json!({"farm": farm::FARM, "backend": b, "state": state}))
        .collect();
    json!({ "changes": changes })
}
