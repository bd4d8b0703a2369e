//! The journal through the service: what a stream of changes leaves on disk replays to the same
//! configuration and allocation, records stay the size of the change, compaction and damage.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::engine::{Allocation, MemoryControl, MemoryEngine};
use crate::model::parse_config;
use crate::state::{Limits, StateError};

struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("nftlbd-journal-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn journal(&self) -> PathBuf {
        self.0.join(state::JOURNAL_FILE)
    }

    fn journal_bytes(&self) -> Vec<u8> {
        std::fs::read(self.journal()).unwrap_or_default()
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.journal_bytes())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(dir: &Dir) -> Options {
    Options {
        state_dir: dir.0.clone(),
        watch: false,
        farms_dir: None,
    }
}

/// Starts a service on a fresh in-memory engine, waiting for a stopped one to let go of the
/// directory's lock (its writer thread ends a moment after the last handle is dropped).
fn start_limited(dir: &Dir, limits: Limits) -> Result<(Service, MemoryControl), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let engine = MemoryEngine::new();
        let control = engine.control();
        match Service::start_with_limits(Box::new(engine), options(dir), limits) {
            Err(e) if e.contains("locked") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => return r.map(|s| (s, control)),
        }
    }
}

/// Waits (at most 5 s) until no service holds the directory's lock: a dropped service's writer
/// lets it go on its own thread.
fn released(dir: &Dir) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while state::lock(&dir.0).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(dir: &Dir) -> (Service, MemoryControl) {
    start_limited(dir, Limits::default()).unwrap()
}

async fn engine_state(svc: &Service) -> (Config, Allocation) {
    svc.query(|e| Ok((e.config().clone(), e.allocation().clone())))
        .await
        .unwrap()
}

/// A farm of `backends` backends (IPv4); `web` serves IPv6 too.
fn farm(name: &str, vip: &str, backends: usize) -> crate::model::Farm {
    let vips = if name == "web" {
        json!([vip, "2001:db8::10"])
    } else {
        json!([vip])
    };
    let family = if name == "web" { "dual" } else { "ipv4" };
    let b: Vec<_> = (0..backends)
        .map(|i| json!({"name": format!("b{i}"), "ip-addr": format!("10.{}.{}.{}", i / 62500, (i / 250) % 250, i % 250 + 1)}))
        .collect();
    let doc = json!({"farms": [{"name": name, "family": family, "virtual-addresses": vips, "virtual-ports": "80",
        "scheduler": "weight", "persistence": ["srcip"],
        "sessions": [{"client": "198.51.100.7", "backend": "b0"}], "backends": b}]});
    parse_config(&doc.to_string()).unwrap().farms.remove(0)
}

fn edit(
    f: impl FnOnce(&mut Config) + Send + 'static,
) -> impl FnOnce(&super::index::ConfigIndex) -> Result<super::edit::Edited, ServiceError> + Send + 'static {
    move |c: &super::index::ConfigIndex| {
        let mut c = (*c.config).clone();
        f(&mut c);
        Ok(c.into())
    }
}

fn backend_mut<'a>(c: &'a mut Config, farm: &str, backend: &str) -> &'a mut crate::model::Backend {
    let f = c.farms.iter_mut().find(|f| f.name == farm).unwrap();
    f.backends.iter_mut().find(|b| b.name == backend).unwrap()
}

/// A stream of every kind of change; returns how many were committed.
async fn changes(svc: &Service) -> u64 {
    let g0 = svc.generation();
    let api = Origin::api;
    svc.change_indexed(api(), edit(|c| c.farms.push(farm("web", "192.0.2.10", 6))))
        .await
        .unwrap();
    svc.change_indexed(api(), edit(|c| c.farms.push(farm("db", "192.0.2.11", 3))))
        .await
        .unwrap();
    svc.change_indexed(
        api(),
        edit(|c| backend_mut(c, "web", "b1").state = crate::model::BackendState::Drain),
    )
    .await
    .unwrap();
    svc.change_indexed(api(), edit(|c| backend_mut(c, "web", "b2").weight = 4))
        .await
        .unwrap();
    // A priority tier: b5 alone in tier 2, brought in when a tier-1 backend goes down.
    svc.change_indexed(api(), edit(|c| backend_mut(c, "web", "b5").priority = 2))
        .await
        .unwrap();
    svc.change_indexed(
        api(),
        edit(|c| backend_mut(c, "web", "b3").state = crate::model::BackendState::Down),
    )
    .await
    .unwrap();
    svc.change_indexed(api(), ops::remove_backend("web".into(), "b4".into()))
        .await
        .unwrap();
    let add = json!({"name": "n1", "ip-addr": "2001:db8::7", "weight": 2});
    svc.change_indexed(
        api(),
        ops::add_backend("web".into(), add.as_object().unwrap().clone()),
    )
    .await
    .unwrap();
    // A backend put in the middle of the list.
    svc.change_indexed(
        api(),
        edit(|c| {
            let f = c.farms.iter_mut().find(|f| f.name == "web").unwrap();
            let mut b = f.backends[0].clone();
            b.name = "mid".into();
            b.ip_addr = "10.9.0.9".parse().unwrap();
            f.backends.insert(2, b);
        }),
    )
    .await
    .unwrap();
    svc.change_indexed(
        api(),
        edit(|c| {
            c.farms.iter_mut().find(|f| f.name == "web").unwrap().scheduler = crate::model::Scheduler::Hash
        }),
    )
    .await
    .unwrap();
    svc.change_indexed(
        api(),
        edit(|c| {
            let p = parse_config(r#"{"policies":[{"name":"bad","elements":["10.8.0.2"]}]}"#).unwrap();
            c.policies.extend(p.policies);
            c.farms[1].policies.push("bad".into());
        }),
    )
    .await
    .unwrap();
    svc.change_indexed(api(), edit(|c| c.farms.retain(|f| f.name != "db")))
        .await
        .unwrap();
    svc.change_indexed(api(), edit(|c| c.policies.clear()))
        .await
        .unwrap();
    svc.change_indexed(api(), edit(|c| c.farms.push(farm("db2", "192.0.2.12", 2))))
        .await
        .unwrap();
    // A rename keeps the farm where it is.
    svc.change_indexed(api(), edit(|c| c.farms[0].name = "www".into()))
        .await
        .unwrap();
    // Reordered farms: the whole state.
    svc.change_indexed(api(), edit(|c| c.farms = c.farms.iter().rev().cloned().collect()))
        .await
        .unwrap();
    // Backend changes after it build on it.
    svc.change_indexed(api(), edit(|c| backend_mut(c, "www", "b0").weight = 3))
        .await
        .unwrap();
    svc.change_indexed(api(), ops::remove_backend("www".into(), "b1".into()))
        .await
        .unwrap();
    svc.change_indexed(
        api(),
        edit(|c| backend_mut(c, "www", "n1").state = crate::model::BackendState::Off),
    )
    .await
    .unwrap();
    // An engine operation: a static session leaves the configuration.
    svc.operate(api(), |e| e.delete_session("www", "198.51.100.7").map(|_| ()))
        .await
        .unwrap();
    svc.generation() - g0
}

#[tokio::test]
async fn replaying_the_journal_gives_what_the_changes_produced() {
    let dir = Dir::new();
    let (svc, _) = start(&dir);
    let n = changes(&svc).await;
    assert_eq!(n, 20);
    let committed = engine_state(&svc).await;
    assert_eq!(dir.lines().len(), 20, "one record per change");

    // Straight from the files, before any engine sees them.
    let r = state::recover(&dir.0).unwrap();
    assert_eq!((r.replayed, r.torn.clone()), (20, None));
    let s = r.state.unwrap();
    assert_eq!(
        (s.sequence, &s.config, &s.allocation),
        (20, &committed.0, &committed.1)
    );

    drop(svc);
    let (svc, control) = start(&dir);
    assert_eq!(engine_state(&svc).await, committed);
    assert_eq!(*svc.config(), committed.0);
    assert_eq!(control.transactions(), 1, "the recovered state, once");
    // The start compacted: one snapshot with every record, an empty journal.
    assert!(dir.journal_bytes().is_empty());
    let s = state::recover(&dir.0).unwrap().state.unwrap();
    assert_eq!(
        (s.sequence, s.config, s.allocation),
        (20, committed.0.clone(), committed.1.clone())
    );

    // Records go on after the snapshot's number, and replay again.
    svc.change_indexed(Origin::api(), edit(|c| backend_mut(c, "www", "b0").weight = 6))
        .await
        .unwrap();
    assert!(dir.lines()[0].starts_with("{\"seq\":21,"), "{}", dir.lines()[0]);
    let committed = engine_state(&svc).await;
    drop(svc);
    let (svc, _) = start(&dir);
    assert_eq!(engine_state(&svc).await, committed);
}

#[tokio::test]
async fn a_backend_change_writes_a_record_of_the_change_not_of_the_farm() {
    let dir = Dir::new();
    let (svc, _) = start(&dir);
    svc.change_indexed(
        Origin::api(),
        edit(|c| c.farms.push(farm("big", "192.0.2.20", 10_000))),
    )
    .await
    .unwrap();
    let snapshot_size = dir.journal_bytes().len();
    assert!(
        snapshot_size > 500_000,
        "the farm's own record is the farm: {snapshot_size}"
    );
    let mut sizes = Vec::new();
    let mut grew = |what: &str, before: usize, after: usize| sizes.push((what.to_string(), after - before));
    let steps: Vec<(&str, Edit)> = vec![
        (
            "state",
            Box::new(edit(|c| {
                backend_mut(c, "big", "b5000").state = crate::model::BackendState::Drain
            })),
        ),
        (
            "weight",
            Box::new(edit(|c| backend_mut(c, "big", "b20").weight = 5)),
        ),
        (
            "priority",
            Box::new(edit(|c| backend_mut(c, "big", "b21").priority = 3)),
        ),
        ("remove", Box::new(ops::remove_backend("big".into(), "b3".into()))),
        (
            "add",
            Box::new(ops::add_backend(
                "big".into(),
                json!({"name": "new", "ip-addr": "10.200.0.1", "weight": 2})
                    .as_object()
                    .unwrap()
                    .clone(),
            )),
        ),
    ];
    for (what, e) in steps {
        let before = dir.journal_bytes().len();
        svc.change_indexed(Origin::api(), e).await.unwrap();
        grew(what, before, dir.journal_bytes().len());
    }
    for (what, size) in &sizes {
        assert!(
            *size < 1024,
            "{what}: {size} bytes for one backend of 10,000: {sizes:?}"
        );
    }
    // And it replays to what the engine has.
    let committed = engine_state(&svc).await;
    let s = state::recover(&dir.0).unwrap().state.unwrap();
    assert_eq!((s.config, s.allocation), committed);
}

#[tokio::test]
async fn a_torn_last_record_is_dropped_and_said() {
    let dir = Dir::new();
    let (svc, _) = start(&dir);
    let n = changes(&svc).await;
    let committed = engine_state(&svc).await;
    drop(svc);
    // A last write cut short: half a record, no end of line.
    let mut bytes = dir.journal_bytes();
    let extra = state::records::encode(n + 1, &state::records::Change::default()).unwrap();
    bytes.extend_from_slice(&extra.as_bytes()[..extra.len() / 2]);
    std::fs::write(dir.journal(), &bytes).unwrap();

    let r = state::recover(&dir.0).unwrap();
    let torn = r.torn.clone().expect("a torn record");
    assert_eq!((torn.line, torn.recovered, r.replayed), (21, 20, 20));
    assert_eq!(
        torn.to_string(),
        format!(
            "{}: line 21: incomplete record (no end of line): dropped the last record, a change \
             that was never acknowledged; 20 record(s) recovered",
            dir.journal().display()
        )
    );
    let (svc, _) = start(&dir);
    assert_eq!(engine_state(&svc).await, committed);
    assert!(dir.journal_bytes().is_empty(), "compacted at start");

    // Zeros after a damaged last line (a lost write) are torn too; the next record goes
    // where the damage was.
    svc.change_indexed(Origin::api(), edit(|c| backend_mut(c, "www", "b0").weight = 7))
        .await
        .unwrap();
    let good = dir.journal_bytes();
    let mut bytes = good.clone();
    bytes.extend_from_slice(b"{\"seq\":19,\"crc\":\"0000\n\0\0\0\0");
    std::fs::write(dir.journal(), &bytes).unwrap();
    let r = state::recover(&dir.0).unwrap();
    assert_eq!((r.replayed, r.torn.map(|t| t.line)), (1, Some(2)));
}

#[tokio::test]
async fn damage_before_good_records_refuses_to_start_and_sends_nothing() {
    let dir = Dir::new();
    let (svc, _) = start(&dir);
    changes(&svc).await;
    drop(svc);
    let good = dir.journal_bytes();
    let mut lines = dir.lines();
    lines[3] = lines[3].replacen("\"web\"", "\"wex\"", 1);
    std::fs::write(dir.journal(), lines.join("\n") + "\n").unwrap();
    let e = state::recover(&dir.0).unwrap_err();
    assert!(
        matches!(
            e,
            StateError::Journal {
                line: 4,
                recovered: 3,
                ..
            }
        ),
        "{e:?}"
    );
    let want = format!(
        "{}: line 4: damaged record (checksum mismatch), followed by more records; the snapshot \
         and 3 journal record(s) before it were recovered, and nothing was changed",
        dir.journal().display()
    );
    assert_eq!(e.to_string(), want);
    released(&dir);
    let engine = MemoryEngine::new();
    let control = engine.control();
    let r = Service::start_with(Box::new(engine), options(&dir));
    assert_eq!(r.err(), Some(want));
    assert_eq!(control.transactions(), 0, "the kernel is not touched");
    assert_eq!(dir.lines(), lines, "the journal is left for the operator");

    // A record intact but impossible here (a backend that is not there) is refused the same way.
    std::fs::write(dir.journal(), &good).unwrap();
    let mut lines = dir.lines();
    let change = state::records::Change {
        ops: vec![state::records::Op::DeleteBackend {
            farm: "web".into(),
            index: 0,
            name: "ghost".into(),
        }],
        next_farm_id: None,
    };
    lines[1] = state::records::encode(2, &change).unwrap().trim_end().to_string();
    std::fs::write(dir.journal(), lines.join("\n") + "\n").unwrap();
    let e = state::recover(&dir.0).unwrap_err().to_string();
    assert!(
        e.contains("line 2: record 2 does not apply: farm \"web\", backend \"ghost\" is not there; the snapshot and 1 journal"),
        "{e}"
    );

    // A gap in the numbers is damage too.
    std::fs::write(dir.journal(), &good).unwrap();
    let mut lines = dir.lines();
    lines.remove(5);
    std::fs::write(dir.journal(), lines.join("\n") + "\n").unwrap();
    let e = state::recover(&dir.0).unwrap_err().to_string();
    assert!(e.contains("line 6: record 7 follows record 5"), "{e}");

    // And a snapshot that does not parse names itself.
    std::fs::write(dir.journal(), &good).unwrap();
    std::fs::write(dir.0.join(state::STATE_FILE), "{\"version\": 1,").unwrap();
    let e = state::recover(&dir.0).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}: not a valid state file",
            dir.0.join(state::STATE_FILE).display()
        )),
        "{e}"
    );
}

#[tokio::test]
async fn the_journal_is_compacted_at_its_limit() {
    let dir = Dir::new();
    let svc = web_compacted_every(&dir, 4).await;
    for w in 2..=4 {
        assert!(!dir.journal_bytes().is_empty());
        svc.change_indexed(
            Origin::api(),
            edit(move |c| backend_mut(c, "web", "b0").weight = w),
        )
        .await
        .unwrap();
    }
    // The fourth record reached the limit: everything is in the snapshot once the snapshot,
    // written by another thread, is done (the writer looks every 100 ms when idle).
    emptied(&dir).await;
    let snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.0.join(state::STATE_FILE)).unwrap()).unwrap();
    assert_eq!(snapshot["sequence"], 4);
    assert_eq!(snapshot["config"]["farms"][0]["backends"][0]["weight"], 4);
    svc.change_indexed(Origin::api(), edit(|c| backend_mut(c, "web", "b1").weight = 9))
        .await
        .unwrap();
    assert_eq!(dir.lines().len(), 1);
    assert!(dir.lines()[0].starts_with("{\"seq\":5,"));
    let committed = engine_state(&svc).await;
    let s = state::recover(&dir.0).unwrap().state.unwrap();
    assert_eq!(
        (s.sequence, s.config, s.allocation),
        (5, committed.0, committed.1)
    );

    // Byte limit: one big record is enough.
    let dir = Dir::new();
    let limits = Limits {
        bytes: 2000,
        records: 1000,
    };
    let (svc, _) = start_limited(&dir, limits).unwrap();
    svc.change_indexed(Origin::api(), edit(|c| c.farms.push(farm("a", "192.0.2.10", 1))))
        .await
        .unwrap();
    assert_eq!(dir.lines().len(), 1);
    svc.change_indexed(Origin::api(), edit(|c| c.farms.push(farm("b", "192.0.2.11", 40))))
        .await
        .unwrap();
    emptied(&dir).await;
}

/// A service whose journal is compacted every `records` records, with farm `web` (record 1).
async fn web_compacted_every(dir: &Dir, records: usize) -> Service {
    let limits = Limits {
        bytes: u64::MAX,
        records,
    };
    let (svc, _) = start_limited(dir, limits).unwrap();
    svc.change_indexed(
        Origin::api(),
        edit(|c| c.farms.push(farm("web", "192.0.2.10", 6))),
    )
    .await
    .unwrap();
    svc
}

/// Sets web's b0 to each weight in turn, one change each.
async fn set_weights(svc: &Service, weights: std::ops::RangeInclusive<u32>) {
    for w in weights {
        svc.change_indexed(
            Origin::api(),
            edit(move |c| backend_mut(c, "web", "b0").weight = w),
        )
        .await
        .unwrap();
    }
}

/// Waits (at most 5 s) for the journal to be emptied by a compaction.
async fn emptied(dir: &Dir) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !dir.journal_bytes().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the journal was not compacted within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn changes_go_on_while_a_snapshot_is_written_and_the_journal_keeps_them() {
    let dir = Dir::new();
    let svc = web_compacted_every(&dir, 3).await;
    // Records 2 and 3 reach the limit; 4 to 8 follow at once, while the snapshot may still be
    // being written: none is lost, and the journal ends with no record the snapshot has.
    set_weights(&svc, 2..=8).await;
    let committed = engine_state(&svc).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let snapshot: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.0.join(state::STATE_FILE)).unwrap()).unwrap();
        let base = snapshot["sequence"].as_u64().unwrap();
        let first = dir.lines().first().map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        });
        if base >= 3 && first.is_none_or(|f| f == base + 1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "snapshot {base}, journal from {first:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = state::recover(&dir.0).unwrap();
    let s = r.state.unwrap();
    assert_eq!(
        (s.sequence, s.config, s.allocation),
        (8, committed.0, committed.1)
    );
    // A clean stop finishes the snapshot under way.
    drop(svc);
}

/// Saves the state the files hold now as the snapshot, as a compaction does before it empties
/// the journal.
fn snapshot_now(dir: &Path) -> state::State {
    let s = state::recover(dir).unwrap().state.unwrap();
    state::save(dir, &s).unwrap();
    s
}

#[tokio::test]
async fn a_crash_between_the_snapshot_and_emptying_the_journal_is_harmless() {
    let dir = Dir::new();
    let (svc, _) = start(&dir);
    svc.change_indexed(
        Origin::api(),
        edit(|c| c.farms.push(farm("web", "192.0.2.10", 6))),
    )
    .await
    .unwrap();
    for w in 2..=3 {
        svc.change_indexed(
            Origin::api(),
            edit(move |c| backend_mut(c, "web", "b0").weight = w),
        )
        .await
        .unwrap();
    }
    // Records 1-3 in the snapshot, and still in the journal with 4 and 5 after them.
    let at3 = snapshot_now(&dir.0);
    assert_eq!(at3.sequence, 3);
    let snapshot3 = std::fs::read(dir.0.join(state::STATE_FILE)).unwrap();
    set_weights(&svc, 4..=5).await;
    let committed = engine_state(&svc).await;
    drop(svc);
    assert_eq!(dir.lines().len(), 5);
    let r = state::recover(&dir.0).unwrap();
    assert_eq!(r.replayed, 2, "only the records above the snapshot's");
    let s = r.state.unwrap();
    assert_eq!(
        (s.sequence, &s.config, &s.allocation),
        (5, &committed.0, &committed.1)
    );

    // The snapshot has everything (the crash came just before the journal was emptied).
    snapshot_now(&dir.0);
    let r = state::recover(&dir.0).unwrap();
    assert_eq!(r.replayed, 0);
    assert_eq!(r.state.map(|s| (s.config, s.allocation)), Some(committed.clone()));
    let (svc, control) = start(&dir);
    assert_eq!(engine_state(&svc).await, committed);
    assert_eq!(control.transactions(), 1);
    drop(svc);

    // A snapshot older than the journal's first record: records are missing.
    let (svc, _) = start(&dir);
    for w in 6..=7 {
        svc.change_indexed(
            Origin::api(),
            edit(move |c| backend_mut(c, "web", "b0").weight = w),
        )
        .await
        .unwrap();
    }
    drop(svc);
    std::fs::write(dir.0.join(state::STATE_FILE), &snapshot3).unwrap();
    let e = state::recover(&dir.0).unwrap_err().to_string();
    assert!(
        e.contains("line 1: record 6 follows the snapshot's record 3: records are missing"),
        "{e}"
    );
}
