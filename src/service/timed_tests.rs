//! Timed changes on the in-memory engine, with times of a fraction of a second: restored by the
//! writer itself (one commit for those due together), overtaken by later changes, listed,
//! cancelled, saved across a restart, dropped with their backend.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::timed::{Arm, Key, Pending, TIMED_FILE, TimedEdit, micros};
use super::*;
use crate::engine::MemoryEngine;
use crate::model::BackendState;
use crate::testkit::{Fixture, TempDir};

const SHORT: Duration = Duration::from_millis(300);

fn arm(backend: &str, key: Key, set: Value, duration: Duration) -> Arm {
    Arm {
        farm: "web".into(),
        backend: backend.into(),
        key,
        set,
        duration,
    }
}

/// Drains `backend` of farm web for `d`, through the writer as the operation does.
async fn drain_for(svc: &Service, backend: &str, d: Duration) -> u64 {
    let t = TimedEdit {
        arm: vec![arm(backend, Key::State, json!("drain"), d)],
        disarm: vec![],
    };
    svc.change_timed(
        Origin::api(),
        t,
        ops::set_backend_state("web".into(), backend.into(), "drain".into()),
    )
    .await
    .unwrap()
}

fn state_of(svc: &Service, backend: &str) -> BackendState {
    let ix = svc.index();
    ix.backend("web", backend).unwrap().1.state
}

/// The next event, within 3 s.
async fn next_event(rx: &mut tokio::sync::broadcast::Receiver<Arc<Event>>) -> Arc<Event> {
    tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .expect("an event within 3 s")
        .unwrap()
}

/// What `timed.json` holds.
fn saved_timers(dir: &std::path::Path) -> Vec<Pending> {
    let text = std::fs::read_to_string(dir.join(TIMED_FILE)).unwrap();
    serde_json::from_value(serde_json::from_str::<Value>(&text).unwrap()["timed"].clone()).unwrap()
}

async fn run(f: &Fixture, op: Operation) -> Result<Output, ServiceError> {
    f.service.execute(&Caller::nobody(), op).await
}

fn set_state(backend: &str, state: &str, for_secs: Option<u32>) -> Operation {
    Operation::SetBackendState {
        farm: "web".into(),
        backend: backend.into(),
        state: state.into(),
        for_secs,
    }
}

#[tokio::test]
async fn a_timed_state_is_restored_by_itself_in_one_commit() {
    let f = Fixture::start("timed-restore");
    let svc = &f.service;
    let mut rx = svc.subscribe();
    let g0 = svc.generation();
    let started = Instant::now();
    drain_for(svc, "a", SHORT).await;
    assert_eq!(state_of(svc, "a"), BackendState::Drain);
    let ev = next_event(&mut rx).await;
    assert_eq!(ev.origin.reason, "api");

    let ev = next_event(&mut rx).await;
    let waited = started.elapsed();
    assert!(waited >= SHORT && waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(ev.origin.reason, "timed");
    let t: Vec<(&str, &str, BackendState, BackendState, &str)> = ev
        .diff
        .transitions()
        .map(|(f, b, t)| (f, b, t.old, t.new, t.reason.as_str()))
        .collect();
    assert_eq!(
        t,
        vec![("web", "a", BackendState::Drain, BackendState::Up, "timed")]
    );
    assert_eq!(state_of(svc, "a"), BackendState::Up);
    assert_eq!(
        svc.generation(),
        g0 + 2,
        "the change and its restore, nothing else"
    );
    assert!(svc.timed_changes().is_empty());
    assert!(saved_timers(f.dir.path()).is_empty());
    assert_eq!(f.saved().farm("web").unwrap().backends[0].state, BackendState::Up);
}

#[tokio::test]
async fn restores_due_together_are_one_commit() {
    let f = Fixture::start("timed-batch");
    let svc = &f.service;
    let t = TimedEdit {
        arm: vec![
            arm("a", Key::State, json!("off"), SHORT),
            arm("b", Key::Weight, json!(7), SHORT),
        ],
        disarm: vec![],
    };
    let u = |b: &str, state: Option<&str>, weight: Option<u32>| BackendUpdate {
        farm: "web".into(),
        backend: b.into(),
        state: state.map(str::to_string),
        weight,
        priority: None,
    };
    svc.change_timed(
        Origin::api(),
        t,
        ops::set_backends(vec![u("a", Some("off"), None), u("b", None, Some(7))]),
    )
    .await
    .unwrap();
    let mut rx = svc.subscribe();
    let g = svc.generation();
    let ev = next_event(&mut rx).await;
    assert_eq!((ev.generation, ev.origin.reason.as_str()), (g + 1, "timed"));
    let web = ev.new.farm("web").unwrap();
    assert_eq!(
        (web.backends[0].state, web.backends[1].weight),
        (BackendState::Up, 1)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(svc.generation(), g + 1, "one commit for both");
}

#[tokio::test]
async fn a_later_explicit_change_wins() {
    let f = Fixture::start("timed-overtaken");
    let svc = &f.service;
    // Another value: the restore is dropped at that commit.
    drain_for(svc, "a", SHORT).await;
    run(&f, set_state("a", "off", None)).await.unwrap();
    assert!(svc.timed_changes().is_empty());
    // The same value, set again without a time: the drain stays for good.
    drain_for(svc, "b", SHORT).await;
    let g = svc.generation();
    run(&f, set_state("b", "drain", None)).await.unwrap();
    assert_eq!(svc.generation(), g, "nothing to commit");
    assert!(svc.timed_changes().is_empty());
    assert!(saved_timers(f.dir.path()).is_empty());
    // A change by any other path (a whole edit) overtakes it too.
    let t = TimedEdit {
        arm: vec![arm("b", Key::Weight, json!(4), SHORT)],
        disarm: vec![],
    };
    svc.change_timed(
        Origin::api(),
        t,
        ops::update_backend("web".into(), "b".into(), Patch::one("weight", Some(json!(4)))),
    )
    .await
    .unwrap();
    assert_eq!(svc.timed_changes().len(), 1);
    svc.change(Origin::api(), |c| {
        let mut c = c.clone();
        c.farms[0].backends[1].weight = 9;
        Ok(c)
    })
    .await
    .unwrap();
    assert!(svc.timed_changes().is_empty());

    let g = svc.generation();
    tokio::time::sleep(SHORT * 2).await;
    assert_eq!(svc.generation(), g, "no restore ran");
    let web = svc.config().farm("web").unwrap().clone();
    assert_eq!(
        (
            web.backends[0].state,
            web.backends[1].state,
            web.backends[1].weight
        ),
        (BackendState::Off, BackendState::Drain, 9)
    );
}

#[tokio::test]
async fn pending_changes_are_listed_and_saved_and_a_second_keeps_the_first_value() {
    let f = Fixture::start("timed-list");
    let before = micros(SystemTime::now());
    run(&f, set_state("a", "drain", Some(600))).await.unwrap();
    let after = micros(SystemTime::now());
    let asked = f.gate.take();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        (asked[0].action.as_str(), asked[0].details.state.as_str()),
        (crate::polkit::BACKEND_SET_STATE, "drain")
    );
    // Over a pending one: the value to restore stays the one before the first.
    run(&f, set_state("a", "off", Some(900))).await.unwrap();
    let Output::TimedChanges(list) = run(&f, Operation::ListTimedChanges).await.unwrap() else {
        panic!("a list of timed changes");
    };
    assert_eq!(list.len(), 1);
    let p = &list[0];
    assert_eq!(
        (p.farm.as_str(), p.backend.as_str(), p.key, &p.restore, &p.set),
        ("web", "a", Key::State, &json!("up"), &json!("off"))
    );
    assert!(p.deadline >= before + 900_000_000 && p.deadline <= after + 901_000_000);
    assert_eq!(saved_timers(f.dir.path()), *list);
}

#[tokio::test]
async fn a_cancel_restores_now_and_is_checked_as_the_untimed_change() {
    let f = Fixture::start("timed-cancel");
    let svc = &f.service;
    run(&f, set_state("a", "drain", Some(600))).await.unwrap();
    let patch = Patch::one("weight", Some(json!(5)));
    let op = Operation::UpdateBackend {
        farm: "web".into(),
        backend: "b".into(),
        patch,
        for_secs: Some(600),
    };
    run(&f, op).await.unwrap();
    assert_eq!(svc.timed_changes().len(), 2);
    f.gate.take();

    let mut rx = svc.subscribe();
    let cancel = |b: &str, key: &str| Operation::CancelTimedChange {
        farm: "web".into(),
        backend: b.into(),
        key: key.into(),
    };
    run(&f, cancel("a", "state")).await.unwrap();
    let ev = next_event(&mut rx).await;
    assert_eq!(ev.origin.reason, "timed");
    assert_eq!(state_of(svc, "a"), BackendState::Up);
    run(&f, cancel("b", "weight")).await.unwrap();
    assert_eq!(svc.index().backend("web", "b").unwrap().1.weight, 1);
    let asked: Vec<(String, String)> = f
        .gate
        .take()
        .into_iter()
        .map(|a| (a.action, a.details.keys))
        .collect();
    assert_eq!(
        asked,
        vec![
            (crate::polkit::BACKEND_SET_STATE.to_string(), "state".to_string()),
            (crate::polkit::BACKEND_MANAGE.to_string(), "weight".to_string()),
        ]
    );
    assert!(svc.timed_changes().is_empty());
    assert!(saved_timers(f.dir.path()).is_empty());
    assert!(matches!(
        run(&f, cancel("a", "state")).await,
        Err(ServiceError::NotFound(_))
    ));
    assert!(matches!(
        run(&f, cancel("a", "port")).await,
        Err(ServiceError::Invalid(_))
    ));
    // Refused by polkit: nothing restored.
    run(&f, set_state("a", "drain", Some(600))).await.unwrap();
    f.gate.refuse();
    assert!(matches!(
        run(&f, cancel("a", "state")).await,
        Err(ServiceError::NotAuthorized(_))
    ));
    assert_eq!(state_of(svc, "a"), BackendState::Drain);
    assert_eq!(svc.timed_changes().len(), 1);
}

#[tokio::test]
async fn plain_changes_write_no_timer_file_and_a_timed_no_change_starts_nothing() {
    let f = Fixture::start("timed-plain");
    run(&f, set_state("a", "drain", None)).await.unwrap();
    assert!(!f.dir.path().join(TIMED_FILE).exists());
    run(&f, set_state("a", "drain", Some(600))).await.unwrap();
    assert!(f.service.timed_changes().is_empty());
    assert!(!f.dir.path().join(TIMED_FILE).exists());
}

#[tokio::test]
async fn bad_times_and_keys_are_refused_and_change_nothing() {
    let f = Fixture::start("timed-invalid");
    let g = f.service.generation();
    let e = run(&f, set_state("a", "drain", Some(0))).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "farms[web].backends[a].for: 0 is not between 1 and 31622400 seconds"
    );
    let op = Operation::UpdateBackend {
        farm: "web".into(),
        backend: "a".into(),
        patch: Patch::one("port", Some(json!(8080))),
        for_secs: Some(10),
    };
    let e = run(&f, op).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("farms[web].backends[a].port: only weight and priority"),
        "{e}"
    );
    // A refused edit takes its timer back.
    assert!(matches!(
        run(&f, set_state("a", "sideways", Some(10))).await,
        Err(ServiceError::Invalid(_))
    ));
    assert!(matches!(
        run(&f, set_state("zz", "drain", Some(10))).await,
        Err(ServiceError::NotFound(_))
    ));
    assert_eq!(f.service.generation(), g);
    assert!(f.service.timed_changes().is_empty());
    assert!(saved_timers(f.dir.path()).is_empty());
}

#[tokio::test]
async fn deleting_the_backend_or_its_farm_drops_its_timed_changes() {
    let f = Fixture::start("timed-deleted");
    let svc = &f.service;
    run(&f, set_state("a", "drain", Some(600))).await.unwrap();
    run(&f, set_state("b", "drain", Some(600))).await.unwrap();
    let remove = Operation::RemoveBackend {
        farm: "web".into(),
        backend: "a".into(),
    };
    run(&f, remove).await.unwrap();
    let left: Vec<String> = svc.timed_changes().iter().map(|p| p.backend.clone()).collect();
    assert_eq!(left, vec!["b".to_string()]);
    assert_eq!(saved_timers(f.dir.path()).len(), 1);
    run(&f, Operation::DeleteFarm { farm: "web".into() })
        .await
        .unwrap();
    assert!(svc.timed_changes().is_empty());
    assert!(saved_timers(f.dir.path()).is_empty());
}

#[tokio::test]
async fn pending_changes_survive_a_restart_and_expired_ones_are_restored_at_once() {
    let f = Fixture::start("timed-restart");
    let Fixture { service, dir, .. } = f;
    drain_for(&service, "a", SHORT).await;
    let t = TimedEdit {
        arm: vec![arm("b", Key::Weight, json!(5), Duration::from_secs(600))],
        disarm: vec![],
    };
    service
        .change_timed(
            Origin::api(),
            t,
            ops::update_backend("web".into(), "b".into(), Patch::one("weight", Some(json!(5)))),
        )
        .await
        .unwrap();
    let pending = service.timed_changes();
    drop(service);
    tokio::time::sleep(SHORT + Duration::from_millis(200)).await;

    let restarted = start_again(&dir);
    let deadline = Instant::now() + Duration::from_secs(3);
    while state_of(&restarted, "a") != BackendState::Up {
        assert!(Instant::now() < deadline, "a was not restored at start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let web = restarted.config().farm("web").unwrap().clone();
    assert_eq!(web.backends[1].weight, 5, "still in its time");
    let left = restarted.timed_changes();
    assert_eq!(*left, vec![pending[1].clone()]);
    assert_eq!(saved_timers(dir.path()), *left);
}

#[tokio::test]
async fn a_timer_overtaken_while_stopped_is_dropped_at_start() {
    let f = Fixture::start("timed-stale");
    let Fixture { service, dir, .. } = f;
    drain_for(&service, "a", Duration::from_secs(600)).await;
    drop(service);
    // The list says a was drained; the files now say off (as if the record came after).
    let mut timers = super::timed::Timers::load(dir.path()).unwrap();
    let mut p = timers.list()[0].clone();
    timers.remove(&p.target());
    p.set = json!("off");
    timers.insert(p);
    timers.save(dir.path()).unwrap();
    let restarted = start_again(&dir);
    assert!(restarted.timed_changes().is_empty());
    assert!(saved_timers(dir.path()).is_empty());
    assert_eq!(state_of(&restarted, "a"), BackendState::Drain);
}

/// A new service on the same state directory (it waits for the old writer's lock).
fn start_again(dir: &TempDir) -> Service {
    let options = Options {
        state_dir: dir.path().to_path_buf(),
        watch: false,
        farms_dir: None,
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match Service::start_with(Box::new(MemoryEngine::new()), options_clone(&options)) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the service does not start again: {e}"),
        }
    }
}

fn options_clone(o: &Options) -> Options {
    Options {
        state_dir: o.state_dir.clone(),
        watch: o.watch,
        farms_dir: o.farms_dir.clone(),
    }
}
