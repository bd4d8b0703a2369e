//! Checkpoints through the service on the in-memory engine: create, roll back, destroy, adjust,
//! overlap, expiry, and a restart in the middle.

use std::time::{Duration, Instant};

use serde_json::json;

use super::checkpoint::{self, ALLOW_OVERLAPPING, DELETE_NEW_FARMS, DESTROY_ALL};
use super::*;
use crate::engine::{Allocation, MemoryControl, MemoryEngine};
use crate::model::{Farm, parse_farm_value};
use crate::testkit::{TempDir, config};

pub(super) fn start(dir: &TempDir) -> (Service, MemoryControl) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let engine = MemoryEngine::new();
        let control = engine.control();
        let options = Options {
            state_dir: dir.path().to_path_buf(),
            watch: false,
            farms_dir: None,
        };
        match Service::start_with(Box::new(engine), options) {
            // A dropped service's writer lets the lock go on its own thread, a moment later.
            Err(e) if e.contains("locked") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => return (r.expect("the service starts"), control),
        }
    }
}

pub(super) fn fresh(what: &str) -> (TempDir, Service, MemoryControl) {
    let dir = TempDir::new(what);
    let mut alloc = Allocation::default();
    alloc.update(&config()).expect("ids");
    state::save(dir.path(), &state::State::new(config(), alloc)).expect("a saved state");
    let (s, c) = start(&dir);
    (dir, s, c)
}

fn root() -> Caller {
    Caller {
        uid: 0,
        ..Caller::nobody()
    }
}

pub(super) async fn run(s: &Service, op: Operation) -> Result<Output, ServiceError> {
    s.execute(&root(), op).await
}

pub(super) async fn create(
    s: &Service,
    farms: &[&str],
    timeout: u32,
    flags: u32,
) -> Result<u32, ServiceError> {
    let op = Operation::CheckpointCreate {
        farms: farms.iter().map(|f| f.to_string()).collect(),
        rollback_timeout: timeout,
        flags,
    };
    match run(s, op).await? {
        Output::Checkpoint(id) => Ok(id),
        other => panic!("{other:?}"),
    }
}

pub(super) async fn rollback(s: &Service, id: u32) -> Result<Vec<(String, u32)>, ServiceError> {
    match run(s, Operation::CheckpointRollback { checkpoint: id }).await? {
        Output::RolledBack(r) => Ok(r),
        other => panic!("{other:?}"),
    }
}

pub(super) fn farm(name: &str, addr: &str) -> Farm {
    let v = json!({"name": name, "virtual-addresses": [addr], "virtual-ports": "80",
                   "backends": [{"name": "x", "ip-addr": "10.0.9.1"}]});
    parse_farm_value(&v, "farm").expect("a valid farm")
}

/// Breaks farm `web` every way a rollback must undo: a weight, a state, then deletes it; and
/// creates farm `new`.
async fn break_web(s: &Service) {
    let weight = Operation::UpdateBackend {
        farm: "web".into(),
        backend: "a".into(),
        patch: Patch::one("weight", Some(json!(7))),
        for_secs: None,
    };
    run(s, weight).await.expect("weight");
    let state = Operation::SetBackendState {
        farm: "web".into(),
        backend: "b".into(),
        state: "drain".into(),
        for_secs: None,
    };
    run(s, state).await.expect("state");
    run(s, Operation::DeleteFarm { farm: "web".into() })
        .await
        .expect("deleted");
    let new = Operation::CreateFarm {
        farm: Box::new(farm("new", "192.0.2.99")),
    };
    run(s, new).await.expect("created");
}

pub(super) fn names(s: &Service) -> Vec<String> {
    s.config().farms.iter().map(|f| f.name.clone()).collect()
}

fn saved_ids(dir: &TempDir) -> Vec<u32> {
    checkpoint::load(dir.path())
        .expect("a readable file")
        .checkpoints
        .iter()
        .map(|c| c.id)
        .collect()
}

#[tokio::test]
async fn a_rollback_restores_the_farm_in_one_transaction_and_new_farms_stay() {
    let (dir, s, control) = fresh("checkpoint-rollback");
    let before = s.config().farm("web").cloned().expect("web");
    let id = create(&s, &[], 0, 0).await.expect("created");
    assert_eq!(id, 1);
    assert_eq!(saved_ids(&dir), [1], "on disk before the reply");
    break_web(&s).await;
    let (transactions, generation) = (control.transactions(), s.generation());
    let results = rollback(&s, id).await.expect("rolled back");
    assert_eq!(results, [("web".to_string(), checkpoint::RESTORED)]);
    assert_eq!(control.transactions(), transactions + 1, "one transaction");
    assert_eq!(s.generation(), generation + 1, "one commit");
    assert_eq!(s.config().farm("web"), Some(&before));
    assert_eq!(
        names(&s),
        ["new", "web"],
        "without delete-new-farms, new farms stay"
    );
    assert!(s.checkpoints().is_empty());
    assert!(saved_ids(&dir).is_empty());
    assert!(matches!(rollback(&s, id).await, Err(ServiceError::NotFound(_))));
}

#[tokio::test]
async fn with_delete_new_farms_the_farms_created_since_go() {
    let (_dir, s, _) = fresh("checkpoint-delete-new");
    let id = create(&s, &[], 0, DELETE_NEW_FARMS).await.expect("created");
    break_web(&s).await;
    let results = rollback(&s, id).await.expect("rolled back");
    assert_eq!(
        results,
        [("new".to_string(), 0), ("web".to_string(), 0)],
        "both touched"
    );
    assert_eq!(names(&s), ["web"]);
    assert_eq!(*s.config(), config());
}

#[tokio::test]
async fn destroy_confirms_the_changes() {
    let (dir, s, _) = fresh("checkpoint-destroy");
    let id = create(&s, &["web"], 60, 0).await.expect("created");
    break_web(&s).await;
    let after = s.config();
    run(&s, Operation::CheckpointDestroy { checkpoint: id })
        .await
        .expect("destroyed");
    assert_eq!(s.config(), after);
    assert!(s.checkpoints().is_empty());
    assert!(saved_ids(&dir).is_empty());
    let again = run(&s, Operation::CheckpointDestroy { checkpoint: id }).await;
    assert!(matches!(again, Err(ServiceError::NotFound(m)) if m == "no checkpoint 1"));
}

#[tokio::test]
async fn overlap_is_refused_unless_allowed_and_destroy_all_clears_the_others() {
    let (_dir, s, _) = fresh("checkpoint-overlap");
    run(
        &s,
        Operation::CreateFarm {
            farm: Box::new(farm("db", "192.0.2.50")),
        },
    )
    .await
    .expect("db");
    assert_eq!(create(&s, &["web"], 0, 0).await.expect("web"), 1);
    assert_eq!(create(&s, &["db"], 0, 0).await.expect("db: no overlap"), 2);
    let refused = create(&s, &["web"], 0, 0).await;
    assert!(
        matches!(&refused, Err(ServiceError::Exists(m)) if m.starts_with("farms: checkpoint 1 already")),
        "{refused:?}"
    );
    let every = create(&s, &[], 0, 0).await;
    assert!(
        matches!(&every, Err(ServiceError::Exists(m)) if m.starts_with("farms: checkpoint 1, 2 already")),
        "{every:?}"
    );
    assert_eq!(
        create(&s, &["web"], 0, ALLOW_OVERLAPPING).await.expect("allowed"),
        3
    );
    assert_eq!(create(&s, &[], 0, DESTROY_ALL).await.expect("all"), 4);
    let ids: Vec<u32> = s.checkpoints().iter().map(|c| c.id).collect();
    assert_eq!(ids, [4]);
    assert_eq!(s.checkpoints()[0].farms, ["web", "db"]);
}

#[tokio::test]
async fn bad_flags_and_unknown_farms_are_refused() {
    let (_dir, s, _) = fresh("checkpoint-refused");
    let e = create(&s, &[], 0, 0x4).await.expect_err("unknown flag");
    assert_eq!(
        e.to_string(),
        "flags: 0x4 has unknown bits; known: 0x1 destroy-all, 0x2 delete-new-farms, 0x8 allow-overlapping"
    );
    let e = create(&s, &["web", "nope"], 0, 0)
        .await
        .expect_err("unknown farm");
    assert_eq!(e.to_string(), "farms: no farm is named nope");
    assert!(s.checkpoints().is_empty());
}

/// Waits (at most `within`) until the service's configuration is `want` and no checkpoint is
/// left (the configuration is published first, the checkpoints a moment later).
async fn until_rolled_back(s: &Service, want: &Config, within: Duration) {
    let started = Instant::now();
    while *s.config() != *want || !s.checkpoints().is_empty() {
        assert!(started.elapsed() < within, "not rolled back within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_unconfirmed_checkpoint_rolls_back_at_its_deadline() {
    let (_dir, s, _) = fresh("checkpoint-expiry");
    let created = Instant::now();
    let id = create(&s, &["web"], 1, 0).await.expect("created");
    let info = s.checkpoints()[0].clone();
    assert_eq!((info.id, info.rollback_timeout), (id, 1));
    assert!(
        info.deadline == info.created + 1 || info.deadline == info.created + 2,
        "{info:?}"
    );
    run(&s, Operation::DeleteFarm { farm: "web".into() })
        .await
        .expect("deleted");
    until_rolled_back(&s, &config(), Duration::from_secs(3)).await;
    assert!(
        created.elapsed() >= Duration::from_millis(900),
        "not before its time"
    );
    assert!(s.checkpoints().is_empty());
}

#[tokio::test]
async fn adjusting_to_zero_disarms_and_to_seconds_rearms() {
    let (_dir, s, _) = fresh("checkpoint-adjust");
    let id = create(&s, &["web"], 1, 0).await.expect("created");
    let adjust = |t| Operation::CheckpointAdjustRollbackTimeout {
        checkpoint: id,
        add_timeout: t,
    };
    run(&s, adjust(0)).await.expect("adjusted");
    assert_eq!(
        (s.checkpoints()[0].rollback_timeout, s.checkpoints()[0].deadline),
        (0, 0)
    );
    run(&s, Operation::DeleteFarm { farm: "web".into() })
        .await
        .expect("deleted");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(names(&s), Vec::<String>::new(), "disarmed: no rollback");
    run(&s, adjust(1)).await.expect("rearmed");
    until_rolled_back(&s, &config(), Duration::from_secs(3)).await;
}

#[tokio::test]
async fn a_refused_rollback_keeps_the_checkpoint_disarmed() {
    let (_dir, s, control) = fresh("checkpoint-refused-rollback");
    let id = create(&s, &["web"], 30, 0).await.expect("created");
    run(&s, Operation::DeleteFarm { farm: "web".into() })
        .await
        .expect("deleted");
    control.fail_next(1);
    let results = rollback(&s, id).await.expect("answered");
    assert_eq!(results, [("web".to_string(), checkpoint::REFUSED_KERNEL)]);
    assert!(s.config().farm("web").is_none());
    let info = s.checkpoints()[0].clone();
    assert_eq!((info.id, info.deadline), (id, 0));
    assert_eq!(rollback(&s, id).await.expect("again"), [("web".to_string(), 0)]);
    assert_eq!(*s.config(), config());
}

/// A rollback whose checkpoint cannot leave checkpoints.json is refused whole: committed first, a
/// restart would find the checkpoint armed and restore its farms over every later change.
#[tokio::test]
async fn a_rollback_that_cannot_save_the_checkpoints_changes_nothing() {
    let (dir, s, control) = fresh("checkpoint-unsaved-rollback");
    let id = create(&s, &["web"], 30, 0).await.expect("created");
    run(&s, Operation::DeleteFarm { farm: "web".into() })
        .await
        .expect("deleted");
    let (broken, transactions) = (s.config(), control.transactions());
    // The temporary file's path taken by a directory: the save fails, even for root.
    let blocker = dir.path().join(".checkpoints.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let results = rollback(&s, id).await.expect("answered");
    assert_eq!(results, [("web".to_string(), checkpoint::REFUSED_STATE)]);
    assert_eq!((s.config(), control.transactions()), (broken, transactions));
    assert_eq!(saved_ids(&dir), [id]);
    let info = s.checkpoints()[0].clone();
    assert_eq!((info.id, info.deadline), (id, 0));
    std::fs::remove_dir(&blocker).unwrap();
    assert_eq!(rollback(&s, id).await.expect("again"), [("web".to_string(), 0)]);
    assert_eq!(*s.config(), config());
    assert_eq!(saved_ids(&dir), Vec::<u32>::new());
}

#[tokio::test]
async fn a_restart_keeps_the_deadline_and_an_expired_checkpoint_rolls_back_at_start() {
    let (dir, s, _) = fresh("checkpoint-restart");
    let id = create(&s, &["web"], 100, 0).await.expect("created");
    let info = s.checkpoints()[0].clone();
    drop(s);
    let (s, _) = start(&dir);
    assert_eq!(
        *s.checkpoints(),
        [info],
        "the same deadline, not 100 s from the restart"
    );
    run(&s, Operation::CheckpointDestroy { checkpoint: id })
        .await
        .expect("destroyed");

    let id = create(&s, &["web"], 1, 0).await.expect("created");
    assert_eq!(id, 2, "ids are not given twice");
    run(&s, Operation::DeleteFarm { farm: "web".into() })
        .await
        .expect("deleted");
    drop(s);
    // The daemon is down when the deadline passes.
    std::thread::sleep(Duration::from_millis(1200));
    let (s, _) = start(&dir);
    until_rolled_back(&s, &config(), Duration::from_millis(500)).await;
    assert!(s.checkpoints().is_empty());
    assert!(saved_ids(&dir).is_empty());
}
