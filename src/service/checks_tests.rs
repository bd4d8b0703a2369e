//! The daemon's checks: which backends are targets and how a commit moves them, and the runner
//! on a service (in-memory engine) with real probes of local listeners.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::Arc;

use serde_json::{Value, json};

use super::check_targets::{Moves, all, moves};
use super::diff::Diff;
use super::ops_health::{HealthUpdate, set_healths};
use super::*;
use crate::engine::MemoryEngine;
use crate::health::Target;
use crate::model::{BackendState, CheckType, Health, HealthCheck, parse_config};
use crate::testkit::{TempDir, within};

fn web(backends: Value) -> Config {
    parse_config(
        &json!({"farms": [{
            "name": "web", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80",
            "health-check": {"type": "tcp"},
            "backends": backends
        }, {
            "name": "plain", "virtual-addresses": ["192.0.2.2"], "virtual-ports": "80",
            "backends": [{"name": "x", "ip-addr": "10.0.1.1", "health": "failing"}]
        }]})
        .to_string(),
    )
    .unwrap()
}

fn three() -> Config {
    web(json!([
        {"name": "a", "ip-addr": "10.0.0.1", "port": 8080, "health": "failing"},
        {"name": "b", "ip-addr": "10.0.0.2", "health-check": {"enabled": false}},
        {"name": "c", "ip-addr": "10.0.0.3"}
    ]))
}

fn tcp(farm: &str, backend: &str, last: u8, port: u16) -> Target {
    Target {
        farm: farm.into(),
        backend: backend.into(),
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
        port,
        check: HealthCheck::new(CheckType::Tcp),
    }
}

fn name(farm: &str, backend: &str) -> (String, String) {
    (farm.into(), backend.into())
}

/// The moves of editing `old` with `edit` (a function of the farm `web`'s JSON).
fn moved(old: &Config, edit: impl FnOnce(&mut Value)) -> Moves {
    let mut v = serde_json::to_value(old).unwrap();
    edit(&mut v["farms"][0]);
    let new = parse_config(&v.to_string()).unwrap();
    moves(old, &new, &Diff::between(old, &new, "api"))
}

#[test]
fn targets_are_the_backends_with_an_effective_check_on_the_port_it_probes() {
    assert_eq!(all(&three()), [tcp("web", "a", 1, 8080), tcp("web", "c", 3, 80)]);
}

#[test]
fn a_commit_moves_only_the_targets_it_changed() {
    let old = three();
    // Keys no probe is made of: nothing moves.
    assert_eq!(
        moved(&old, |f| f["backends"][0]["weight"] = json!(5)),
        Moves::default()
    );
    assert_eq!(
        moved(&old, |f| f["backends"][2]["state"] = json!("drain")),
        Moves::default()
    );
    let healed = set_healths(vec![HealthUpdate {
        farm: "web".into(),
        backend: "a".into(),
        health: Health::Healthy,
        reason: "tcp connected".into(),
        ..HealthUpdate::default()
    }])(&index::ConfigIndex::build(Arc::new(old.clone())))
    .unwrap();
    assert!(moves(&old, &healed, &Diff::between(&old, &healed, "health-check")).is_empty());

    // One backend's port or address: that target again (the checker keeps it if equal).
    assert_eq!(
        moved(&old, |f| f["backends"][0]["port"] = json!(9090)),
        Moves {
            added: vec![tcp("web", "a", 1, 9090)],
            ..Moves::default()
        }
    );
    assert_eq!(
        moved(&old, |f| f["backends"][1]["health-check"] = Value::Null),
        Moves {
            added: vec![tcp("web", "b", 2, 80)],
            ..Moves::default()
        }
    );
    // Checks turned off: the target goes, and the last verdict with it.
    assert_eq!(
        moved(&old, |f| f["backends"][0]["health-check"] =
            json!({"enabled": false})),
        Moves {
            removed: vec![name("web", "a")],
            stale: vec![name("web", "a")],
            ..Moves::default()
        }
    );
    assert_eq!(
        moved(&old, |f| f["health-check"] = Value::Null),
        Moves {
            removed: vec![name("web", "a"), name("web", "b"), name("web", "c")],
            stale: vec![name("web", "a")],
            ..Moves::default()
        }
    );
    // The farm's port: every backend probed on it.
    assert_eq!(
        moved(&old, |f| f["virtual-ports"] = json!("81")),
        Moves {
            added: vec![tcp("web", "a", 1, 8080), tcp("web", "c", 3, 81)],
            removed: vec![name("web", "b")],
            ..Moves::default()
        }
    );
    // Added and removed backends.
    assert_eq!(
        moved(&old, |f| f["backends"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "d", "ip-addr": "10.0.0.4"}))),
        Moves {
            added: vec![tcp("web", "d", 4, 80)],
            ..Moves::default()
        }
    );
    assert_eq!(
        moved(&old, |f| {
            f["backends"].as_array_mut().unwrap().remove(2);
        }),
        Moves {
            removed: vec![name("web", "c")],
            ..Moves::default()
        }
    );
}

#[test]
fn an_outside_checker_s_verdict_on_an_unchecked_backend_is_not_reset() {
    let old = three();
    let mut v = serde_json::to_value(&old).unwrap();
    v["farms"][1]["virtual-ports"] = json!("81");
    v["farms"][1]["backends"][0]["ip-addr"] = json!("10.0.1.2");
    let new = parse_config(&v.to_string()).unwrap();
    let m = moves(&old, &new, &Diff::between(&old, &new, "api"));
    assert_eq!(
        m,
        Moves {
            removed: vec![name("plain", "x")],
            ..Moves::default()
        }
    );
    // A farm deleted or added whole.
    let mut v = serde_json::to_value(&old).unwrap();
    v["farms"].as_array_mut().unwrap().remove(0);
    let new = parse_config(&v.to_string()).unwrap();
    assert_eq!(
        moves(&old, &new, &Diff::between(&old, &new, "api")),
        Moves {
            removed: vec![name("web", "a"), name("web", "b"), name("web", "c")],
            ..Moves::default()
        }
    );
    assert_eq!(
        moves(&new, &old, &Diff::between(&new, &old, "api")),
        Moves {
            added: vec![tcp("web", "a", 1, 8080), tcp("web", "c", 3, 80)],
            ..Moves::default()
        }
    );
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The next committed change made by the checker.
async fn next_check(events: &mut tokio::sync::broadcast::Receiver<Arc<Event>>) -> Arc<Event> {
    within("a health-check commit", async {
        loop {
            let e = events.recv().await.unwrap();
            if e.origin.reason == checks::ORIGIN {
                return e;
            }
        }
    })
    .await
}

fn healths(c: &Config) -> Vec<(String, Health, String)> {
    c.farms[0]
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.health, b.health_reason.clone()))
        .collect()
}

#[tokio::test]
async fn the_daemon_s_checks_follow_the_configuration_and_commit_verdicts_together() {
    let dir = TempDir::new("checks");
    let options = Options {
        state_dir: dir.path().to_path_buf(),
        watch: false,
        farms_dir: None,
    };
    let service = Service::start_with(Box::new(MemoryEngine::new()), options).unwrap();
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let (up_port, down_port) = (up.local_addr().unwrap().port(), closed_port());
    let mut events = service.subscribe();
    // A window far above the probes' spread, so that a loaded machine cannot split the batch.
    let _checks = checks::spawn_batching(service.clone(), std::time::Duration::from_millis(500));
    let farm = parse_config(
        &json!({"farms": [{
            "name": "web", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80",
            "health-check": {"type": "tcp", "interval": 0.2, "timeout": 0.1, "jitter": 0, "rise": 1, "fall": 1},
            "backends": [
                {"name": "a", "ip-addr": "127.0.0.1", "port": up_port},
                {"name": "b", "ip-addr": "127.0.0.1", "port": down_port},
                {"name": "c", "ip-addr": "127.0.0.1", "port": up_port, "health-check": {"enabled": false}}
            ]
        }]})
        .to_string(),
    )
    .unwrap();
    service.change(Origin::api(), move |_| Ok(farm)).await.unwrap();

    // Both first verdicts, at the same moment: one commit; b's is a transition up → down.
    let e = next_check(&mut events).await;
    assert_eq!(
        healths(&e.new),
        [
            ("a".into(), Health::Healthy, "tcp connected".into()),
            ("b".into(), Health::Failing, "connection refused".into()),
            ("c".into(), Health::Unknown, String::new()),
        ]
    );
    let transitions: Vec<_> = e
        .diff
        .transitions()
        .map(|(f, b, t)| (f.to_string(), b.to_string(), t.clone()))
        .collect();
    assert_eq!(
        transitions,
        [(
            "web".to_string(),
            "b".to_string(),
            diff::Transition {
                old: BackendState::Up,
                new: BackendState::Down,
                reason: "health-check: connection refused".into()
            }
        )]
    );

    // b now points at the listener: the target follows the one backend's change.
    service
        .change(Origin::api(), move |c| {
            let mut c = c.clone();
            c.farms[0].backends.get_mut(1).unwrap().port = Some(up_port);
            Ok(c)
        })
        .await
        .unwrap();
    let e = next_check(&mut events).await;
    assert_eq!(
        healths(&e.new)[1],
        ("b".into(), Health::Healthy, "tcp connected".into())
    );

    // The farm's check removed: the verdicts no check will renew go back to unknown.
    service
        .change(Origin::api(), |c| {
            let mut c = c.clone();
            c.farms[0].health_check = None;
            Ok(c)
        })
        .await
        .unwrap();
    let e = next_check(&mut events).await;
    assert_eq!(
        healths(&e.new),
        [
            ("a".into(), Health::Unknown, String::new()),
            ("b".into(), Health::Unknown, String::new()),
            ("c".into(), Health::Unknown, String::new()),
        ]
    );
    // And nothing probes them any more.
    drop(up);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    while let Ok(e) = events.try_recv() {
        assert_ne!(e.origin.reason, checks::ORIGIN, "{:?}", healths(&e.new));
    }
}

#[test]
fn a_restart_resumes_the_saved_ramps_and_ends_those_whose_check_lost_its_slow_start() {
    let config = parse_config(
        &json!({"farms": [{
            "name": "web", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80",
            "health-check": {"type": "tcp", "slow-start": 4},
            "backends": [
                {"name": "a", "ip-addr": "10.0.0.1", "health": "healthy", "health-ramp": 40},
                {"name": "b", "ip-addr": "10.0.0.2", "health": "healthy"},
                {"name": "c", "ip-addr": "10.0.0.3", "health": "failing", "health-ramp": 40},
                {"name": "d", "ip-addr": "10.0.0.4", "health": "healthy", "health-ramp": 40,
                 "health-check": {"slow-start": 0}}]
        }]})
        .to_string(),
    )
    .unwrap();
    let start = tokio::time::Instant::now();
    let mut ramps = checks::resumed(&config);
    let due = ramps.next_due().expect("ramps under way");
    assert!(due <= start + std::time::Duration::from_secs(1) + std::time::Duration::from_millis(200));
    // A second on: a goes on from 40 % to 60 % of slow-start 4 s; d, whose check no longer
    // has a slow start, ends; c (failing) and b (not ramping) are not there.
    let mut steps: Vec<(String, u8)> = ramps
        .tick(start + std::time::Duration::from_millis(1_300))
        .into_iter()
        .map(|s| (s.backend, s.share))
        .collect();
    steps.sort();
    assert_eq!(steps, [("a".to_string(), 60), ("d".to_string(), 100)]);
}
