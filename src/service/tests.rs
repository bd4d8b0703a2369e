//! The service on the in-memory engine: the writer's promises (one transaction per change, saved,
//! published once, in order; refusals change nothing) without a kernel, a bus or privileges.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;

use serde_json::json;
use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::engine::Allocation;
use crate::engine::{MemoryControl, MemoryEngine, SessionInfo, Traffic};
use crate::state::State;

/// A fresh state directory, removed at the end of the test.
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> StateDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("nftlbd-service-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        StateDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join(state::STATE_FILE)
    }

    fn saved(&self) -> State {
        state::load(&self.0).unwrap().expect("a state file")
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(self.file()).unwrap()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

use crate::testkit::config;

fn start(dir: &StateDir) -> (Service, MemoryControl) {
    let engine = MemoryEngine::new();
    let control = engine.control();
    let options = Options {
        state_dir: dir.0.clone(),
        watch: true,
        farms_dir: None,
    };
    (Service::start_with(Box::new(engine), options).unwrap(), control)
}

/// A service whose state directory held `config()` when it started.
fn start_loaded(dir: &StateDir) -> (Service, MemoryControl) {
    let mut alloc = Allocation::default();
    alloc.update(&config()).unwrap();
    state::save(&dir.0, &State::new(config(), alloc)).unwrap();
    start(dir)
}

fn set_weight(backend: &'static str, weight: u32) -> impl FnOnce(&Config) -> Result<Config, ServiceError> {
    move |c: &Config| {
        let mut c = c.clone();
        let f = c.farms.iter_mut().find(|f| f.name == "web").unwrap();
        f.backends.iter_mut().find(|b| b.name == backend).unwrap().weight = weight;
        Ok(c)
    }
}

async fn engine_state(svc: &Service) -> (Config, Allocation) {
    svc.query(|e| Ok((e.config().clone(), e.allocation().clone())))
        .await
        .unwrap()
}

#[tokio::test]
async fn starting_commits_the_saved_state() {
    let dir = StateDir::new();
    let (svc, control) = start_loaded(&dir);
    assert_eq!(*svc.config(), config());
    assert_eq!(svc.generation(), 1);
    assert_eq!(control.generation(), 1, "one transaction");
    assert_eq!(engine_state(&svc).await.0, config());
    // An empty directory starts empty, and sends nothing.
    let empty = StateDir::new();
    let (svc, control) = start(&empty);
    assert_eq!(*svc.config(), Config::default());
    assert_eq!(control.transactions(), 0);
    assert_eq!(empty.saved().config, Config::default());
}

#[tokio::test]
async fn a_change_commits_once_saves_and_publishes_once() {
    let dir = StateDir::new();
    let (svc, control) = start_loaded(&dir);
    let mut events = svc.subscribe();
    let generation = svc.change(Origin::api(), set_weight("a", 3)).await.unwrap();
    assert_eq!(generation, 2);
    assert_eq!(svc.generation(), 2);
    assert_eq!(control.generation(), 2, "one transaction more");

    let want = set_weight("a", 3)(&config()).unwrap();
    assert_eq!(*svc.config(), want);
    let (engine_config, engine_alloc) = engine_state(&svc).await;
    assert_eq!(engine_config, want);
    let saved = dir.saved();
    assert_eq!((saved.config, saved.allocation), (want.clone(), engine_alloc));

    let ev = events.try_recv().unwrap();
    assert_eq!(ev.generation, 2);
    assert_eq!((*ev.old).clone(), config());
    assert_eq!((*ev.new).clone(), want);
    assert_eq!(ev.origin.reason, "api");
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));

    // The same configuration again is no change: nothing sent, saved or published.
    let again = svc.change(Origin::api(), set_weight("a", 3)).await.unwrap();
    assert_eq!(again, 2);
    assert_eq!(control.transactions(), 2);
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
}

#[tokio::test]
async fn refused_edits_and_invalid_configurations_send_nothing() {
    let dir = StateDir::new();
    let (svc, control) = start_loaded(&dir);
    let before = dir.bytes();
    let web = config().farms[0].clone();
    let r = svc.change(Origin::api(), ops::create_farm(web)).await;
    assert!(matches!(r, Err(ServiceError::Exists(_))), "{r:?}");
    let r = svc.change(Origin::api(), set_weight("a", 0)).await;
    match r {
        Err(ServiceError::Invalid(i)) => assert_eq!(i.0[0].field, "farms[web].backends[a].weight"),
        other => panic!("wanted Invalid, got {other:?}"),
    }
    assert_eq!(control.transactions(), 1);
    assert_eq!((svc.generation(), dir.bytes()), (1, before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_all_land_in_order() {
    let dir = StateDir::new();
    let (svc, control) = start_loaded(&dir);
    let mut events = svc.subscribe();
    const TASKS: u8 = 4;
    const EACH: u8 = 5;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut generations = Vec::new();
            for i in 0..EACH {
                let name = format!("t{t}-{i}");
                let ip = format!("10.1.{t}.{}", i + 1);
                let backend = json!({"name": name, "ip-addr": ip}).as_object().unwrap().clone();
                let g = svc
                    .change_indexed(Origin::api(), ops::add_backend("web".into(), backend))
                    .await
                    .unwrap();
                generations.push(g);
            }
            generations
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let g = t.await.unwrap();
        assert!(
            g.windows(2).all(|w| w[0] < w[1]),
            "a task's changes land in order: {g:?}"
        );
        all.extend(g);
    }
    all.sort_unstable();
    let n = u64::from(TASKS * EACH);
    assert_eq!(all, (2..2 + n).collect::<Vec<_>>(), "one generation per change");
    assert_eq!(control.generation() as u64, 1 + n);

    let farm = svc.config().farm("web").unwrap().clone();
    assert_eq!(farm.backends.len(), 2 + usize::from(TASKS * EACH));
    for t in 0..TASKS {
        let mine: Vec<&str> = farm
            .backends
            .iter()
            .map(|b| b.name.as_str())
            .filter(|n| n.starts_with(&format!("t{t}-")))
            .collect();
        let want: Vec<String> = (0..EACH).map(|i| format!("t{t}-{i}")).collect();
        assert_eq!(mine, want);
    }
    assert_eq!(dir.saved().config, *svc.config());

    // Each event follows the one before it.
    let mut last = Arc::new(config());
    for g in 2..2 + n {
        let ev = events.try_recv().unwrap();
        assert_eq!(ev.generation, g);
        assert_eq!(ev.old, last);
        last = ev.new.clone();
    }
    assert_eq!(last, svc.config());
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
}

#[tokio::test]
async fn an_engine_refusal_changes_nothing() {
    let dir = StateDir::new();
    let (svc, control) = start_loaded(&dir);
    let mut events = svc.subscribe();
    let before = dir.bytes();
    control.fail_next(1);
    match svc.change(Origin::api(), set_weight("a", 3)).await {
        Err(ServiceError::Kernel(m)) => assert!(m.contains("replace farm web"), "{m}"),
        other => panic!("wanted Kernel, got {other:?}"),
    }
    assert_eq!(*svc.config(), config());
    assert_eq!(svc.generation(), 1);
    assert_eq!(dir.bytes(), before);
    assert_eq!(engine_state(&svc).await.0, config());
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
    // The next change goes through.
    assert_eq!(svc.change(Origin::api(), set_weight("a", 3)).await.unwrap(), 2);
}

#[tokio::test]
async fn an_unwritable_journal_refuses_the_change_and_puts_the_engine_back() {
    let dir = StateDir::new();
    let (svc, control) = start_loaded(&dir);
    let mut events = svc.subscribe();
    let (old_config, old_alloc) = engine_state(&svc).await;
    let snapshot = dir.bytes();
    // A directory where the journal goes: appending to it fails, even for root.
    let journal = dir.0.join(state::JOURNAL_FILE);
    std::fs::create_dir(&journal).unwrap();
    std::fs::write(journal.join("keep"), "").unwrap();
    let r = svc.change(Origin::api(), set_weight("a", 3)).await;
    match &r {
        Err(ServiceError::State(m)) => assert!(m.starts_with(&journal.display().to_string()), "{m}"),
        other => panic!("wanted State, got {other:?}"),
    }
    assert_eq!(engine_state(&svc).await, (old_config, old_alloc.clone()));
    assert_eq!(control.generation(), 3, "the change, then its undo");
    assert_eq!(*svc.config(), config());
    assert_eq!(svc.generation(), 1);
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
    assert_eq!(dir.bytes(), snapshot);
    // Draining `a` gives its slot to `b`; the undo gives back the very slots, not just the
    // configuration (applied again, `a` would get a slot after `b`'s).
    let drain = |c: &Config| {
        let mut c = c.clone();
        c.farms[0].backends[0].state = crate::model::BackendState::Drain;
        Ok(c)
    };
    let r = svc.change(Origin::api(), drain).await;
    assert!(matches!(r, Err(ServiceError::State(_))), "{r:?}");
    assert_eq!(engine_state(&svc).await.1.farms["web"].slots4, [1, 2]);
    assert_eq!(engine_state(&svc).await.1, old_alloc);

    // Once the journal can be written again, the same change lands, and what is saved is what
    // the engine has.
    std::fs::remove_dir_all(&journal).unwrap();
    assert_eq!(svc.change(Origin::api(), set_weight("a", 3)).await.unwrap(), 2);
    let saved = dir.saved();
    assert_eq!(saved.config, set_weight("a", 3)(&config()).unwrap());
    assert_eq!(saved.allocation, engine_state(&svc).await.1);
}

/// Replaces `"weight": 1` of backend `a` in the saved file by `weight`, as an editor would.
fn edit_weight(file: &Path, weight: i64) {
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    doc["config"]["farms"][0]["backends"][0]["weight"] = json!(weight);
    std::fs::write(file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

#[tokio::test]
async fn reload_takes_a_hand_edited_file() {
    let dir = StateDir::new();
    let (svc, control) = start_loaded(&dir);
    let mut events = svc.subscribe();
    edit_weight(&dir.file(), 4);
    assert_eq!(svc.reload().await.unwrap(), 2);
    let want = set_weight("a", 4)(&config()).unwrap();
    assert_eq!(*svc.config(), want);
    assert_eq!(engine_state(&svc).await.0, want);
    assert_eq!(control.generation(), 2);
    assert_eq!(events.try_recv().unwrap().generation, 2);
    // Reloading the same file changes nothing.
    assert_eq!(svc.reload().await.unwrap(), 2);
    assert_eq!(control.transactions(), 2);

    // An invalid edit is refused, naming the file and the field; nothing changes.
    edit_weight(&dir.file(), 0);
    match svc.reload().await {
        Err(ServiceError::Invalid(i)) => {
            let field = &i.0[0].field;
            assert!(field.starts_with(&dir.file().display().to_string()), "{field}");
            assert!(field.ends_with("farms[web].backends[a].weight"), "{field}");
        }
        other => panic!("wanted Invalid, got {other:?}"),
    }
    std::fs::write(dir.file(), "{\"version\": 1,").unwrap();
    assert!(matches!(svc.reload().await, Err(ServiceError::Invalid(_))));
    assert_eq!((*svc.config()).clone(), want);
    assert_eq!(svc.generation(), 2);
    assert_eq!(control.transactions(), 2);
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
}

#[tokio::test]
async fn sessions_are_deleted_and_flushed_through_operate() {
    let dir = StateDir::new();
    let (svc, control) = start_loaded(&dir);
    let mut events = svc.subscribe();
    control.learn_session("web", "198.51.100.8", "a", 5000);
    control.learn_session("web", "198.51.100.9", "a", 6000);
    let clients = |list: Vec<SessionInfo>| list.into_iter().map(|s| s.client).collect::<Vec<_>>();
    let list = svc.query(|e| e.sessions("web")).await.unwrap();
    assert_eq!(clients(list), ["198.51.100.7", "198.51.100.8", "198.51.100.9"]);

    // A learnt session: one transaction, the configuration (and so the generation) stays.
    let g = svc
        .operate(Origin::api(), |e| {
            e.delete_session("web", "198.51.100.8").map(|_| ())
        })
        .await;
    assert_eq!(g.unwrap(), 1);
    assert_eq!(control.generation(), 2);
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));

    // A static one is configuration: saved and published.
    let g = svc
        .operate(Origin::api(), |e| {
            e.delete_session("web", "198.51.100.7").map(|_| ())
        })
        .await;
    assert_eq!(g.unwrap(), 2);
    assert!(svc.config().farms[0].sessions.is_empty());
    assert!(dir.saved().config.farms[0].sessions.is_empty());
    assert_eq!(events.try_recv().unwrap().generation, 2);

    let r = svc
        .operate(Origin::api(), |e| {
            e.delete_session("web", "198.51.100.8").map(|_| ())
        })
        .await;
    assert!(matches!(r, Err(ServiceError::NotFound(_))), "{r:?}");

    // A refused flush keeps the sessions; the next one forgets them.
    control.fail_next(1);
    let r = svc
        .operate(Origin::api(), |e| e.flush_sessions("web").map(|_| ()))
        .await;
    assert!(matches!(r, Err(ServiceError::Kernel(_))), "{r:?}");
    let list = svc.query(|e| e.sessions("web")).await.unwrap();
    assert_eq!(clients(list), ["198.51.100.9"]);
    let r = svc
        .operate(Origin::api(), |e| e.flush_sessions("web").map(|_| ()))
        .await;
    assert_eq!(r.unwrap(), 2);
    assert!(svc.query(|e| e.sessions("web")).await.unwrap().is_empty());
}

#[tokio::test]
async fn queries_read_the_engine() {
    let dir = StateDir::new();
    let (svc, control) = start_loaded(&dir);
    control.set_traffic("web", None, Traffic::new(9, 900, 3));
    control.set_traffic("web", Some("a"), Traffic::new(7, 700, 3));
    control.set_policy_counter("bad", "10.8.0.2", (2, 120));
    assert_eq!(
        svc.query(|e| e.traffic("web", Some("a"))).await.unwrap(),
        Traffic::new(7, 700, 3)
    );
    assert_eq!(
        svc.query(|e| e.farm_traffic("web")).await.unwrap(),
        (
            Traffic::new(9, 900, 3),
            vec![
                ("a".into(), Traffic::new(7, 700, 3)),
                ("b".into(), Traffic::default())
            ]
        )
    );
    assert_eq!(
        svc.query(|e| e.policy_counters("bad")).await.unwrap(),
        vec![("10.8.0.2".into(), 2, 120)]
    );
    let r = svc.query(|e| e.traffic("www", None)).await;
    assert!(matches!(r, Err(ServiceError::NotFound(_))), "{r:?}");
    assert_eq!(svc.features(), MemoryEngine::new().features());
    assert_eq!(control.transactions(), 1, "reads send nothing");
}

#[tokio::test]
async fn one_writer_per_state_directory() {
    let dir = StateDir::new();
    let (_svc, _) = start(&dir);
    let second = Service::start_with(
        Box::new(MemoryEngine::new()),
        Options {
            state_dir: dir.0.clone(),
            watch: false,
            farms_dir: None,
        },
    );
    let e = second.err().expect("the directory is locked");
    assert!(e.contains("locked"), "{e}");
}

#[tokio::test]
async fn a_commit_lets_the_old_configuration_go() {
    let dir = StateDir::new();
    let (svc, _) = start_loaded(&dir);
    let old = svc.config();
    let ix = svc.index();
    assert!(Arc::ptr_eq(&ix.config, &old));
    drop(ix);
    svc.change(Origin::api(), set_weight("a", 7)).await.unwrap();
    // Nobody subscribed and the lookups were of the old configuration: only this test holds it.
    assert_eq!(Arc::strong_count(&old), 1);
    assert!(Arc::ptr_eq(&svc.index().config, &svc.config()));
}
