//! A change to one backend stays O(change) in the service: no pass over the farm's backends
//! (priority tiers counted whole, positions or lookups rebuilt, backends compared one by one).
//! Counted, not timed, so it cannot be flaky: the writer thread counts its whole-farm passes.

use serde_json::json;

use super::*;
use crate::engine::MemoryEngine;
use crate::model::{parse_config, whole_farm_passes};

/// How many whole-farm passes the service's writer thread made so far.
async fn passes(svc: &Service) -> usize {
    svc.query(|_| Ok(whole_farm_passes())).await.unwrap()
}

/// A service on the in-memory engine in a fresh state directory, allowing every caller.
fn allowed_service(tag: &str) -> (std::path::PathBuf, Service) {
    let dir = std::env::temp_dir().join(format!("nftlbd-guard-{tag}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let options = Options {
        state_dir: dir.clone(),
        watch: false,
        farms_dir: None,
    };
    let svc = Service::start_with(Box::new(MemoryEngine::new()), options)
        .unwrap()
        .with_authority(std::sync::Arc::new(authority::Rule(
            |_: &Caller, _: &str, _: &_| crate::polkit::Answer::Yes,
        )));
    (dir, svc)
}

#[tokio::test]
async fn one_backend_changes_make_no_pass_over_the_farm() {
    let (dir, svc) = allowed_service("");
    let backends: Vec<serde_json::Value> = (0..2_000)
        .map(|i| json!({"name": format!("b{i}"), "ip-addr": format!("10.0.{}.{}", i / 250, i % 250 + 1)}))
        .collect();
    let doc = json!({"farms": [{"name": "big", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80",
        "scheduler": "weight", "backends": backends}]});
    let config = parse_config(&doc.to_string()).unwrap();
    svc.change(Origin::api(), move |_| Ok(config)).await.unwrap();
    let patch = |key: &str, v: serde_json::Value| Patch {
        set: json!({ key: v }).as_object().unwrap().clone(),
        removed: Vec::new(),
    };
    let ops: Vec<(&str, Operation)> = vec![
        (
            "state",
            Operation::SetBackendState {
                farm: "big".into(),
                backend: "b700".into(),
                state: "drain".into(),
                for_secs: None,
            },
        ),
        (
            "weight",
            Operation::UpdateBackend {
                farm: "big".into(),
                backend: "b701".into(),
                patch: patch("weight", json!(5)),
                for_secs: None,
            },
        ),
        (
            "add",
            Operation::AddBackend {
                farm: "big".into(),
                backend: json!({"name": "new", "ip-addr": "10.9.0.1"})
                    .as_object()
                    .unwrap()
                    .clone(),
            },
        ),
        (
            "remove",
            Operation::RemoveBackend {
                farm: "big".into(),
                backend: "b3".into(),
            },
        ),
        (
            "state back",
            Operation::SetBackendState {
                farm: "big".into(),
                backend: "b700".into(),
                state: "up".into(),
                for_secs: None,
            },
        ),
    ];
    let caller = Caller::nobody();
    for (what, op) in ops {
        let before = passes(&svc).await;
        let generation = svc.generation();
        svc.execute(&caller, op).await.unwrap();
        assert_eq!(svc.generation(), generation + 1, "{what}: committed");
        assert_eq!(passes(&svc).await - before, 0, "{what}: a pass over the farm");
    }
    // What was kept per change is what the configuration says.
    let ix = svc.index();
    assert_eq!(
        ix.backend("big", "new").map(|(_, b)| b.name.as_str()),
        Some("new")
    );
    assert_eq!(ix.backend("big", "b4").map(|(_, b)| b.weight), Some(1));
    assert!(ix.backend("big", "b3").is_none());
    let (_, b) = ix.backend("big", "b701").unwrap();
    assert_eq!(b.weight, 5);
    assert_eq!(
        ix.config.farms[0].backends.iter().position(|b| b.name == "b4"),
        Some(3)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_batch_across_farms_makes_no_pass_over_the_farms() {
    let (dir, svc) = allowed_service("batch-");
    let farm = |name: &str, vip: &str, net: u32| {
        let backends: Vec<serde_json::Value> = (0..2_000)
            .map(|i| json!({"name": format!("b{i}"), "ip-addr": format!("10.{net}.{}.{}", i / 250, i % 250 + 1)}))
            .collect();
        json!({"name": name, "virtual-addresses": [vip], "virtual-ports": "80",
            "scheduler": "weight", "backends": backends})
    };
    let doc = json!({"farms": [farm("a", "192.0.2.1", 1), farm("b", "192.0.2.2", 2)]});
    let config = parse_config(&doc.to_string()).unwrap();
    svc.change(Origin::api(), move |_| Ok(config)).await.unwrap();
    let caller = Caller::nobody();
    let update = |farm: &str, i: usize, state: Option<&str>, weight: Option<u32>| BackendUpdate {
        farm: farm.into(),
        backend: format!("b{i}"),
        state: state.map(str::to_string),
        weight,
        priority: None,
    };
    let batch: Vec<BackendUpdate> = (0..100)
        .map(|i| update("a", i * 13, Some("drain"), None))
        .chain((0..100).map(|i| update("b", i * 17 + 1, None, Some(3))))
        .collect();
    let before = passes(&svc).await;
    let generation = svc.generation();
    svc.execute(&caller, Operation::SetBackends { changes: batch })
        .await
        .unwrap();
    assert_eq!(svc.generation(), generation + 1, "one commit");
    assert_eq!(passes(&svc).await - before, 0, "a pass over a farm");
    let ix = svc.index();
    assert_eq!(
        ix.backend("a", "b13").map(|(_, b)| b.state),
        Some(crate::model::BackendState::Drain)
    );
    assert_eq!(
        ix.backend("a", "b14").map(|(_, b)| b.state),
        Some(crate::model::BackendState::Up)
    );
    assert_eq!(ix.backend("b", "b18").map(|(_, b)| b.weight), Some(3));
    assert_eq!(ix.backend("b", "b19").map(|(_, b)| b.weight), Some(1));
    // One bad entry: nothing changes, not the configuration, the index nor the state files.
    let files = |d: &std::path::Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.path().is_file())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let (saved, config, generation) = (files(&dir), svc.config(), svc.generation());
    let bad: Vec<BackendUpdate> = (0..50)
        .map(|i| update("a", i * 7 + 1, Some("down"), None))
        .chain([update("b", 5, None, Some(0))])
        .collect();
    let e = svc
        .execute(&caller, Operation::SetBackends { changes: bad })
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "farms[b].backends[b5].weight: 0 is not 1-10000");
    assert_eq!(svc.generation(), generation);
    assert!(Arc::ptr_eq(&svc.config(), &config));
    assert_eq!(
        svc.index().backend("a", "b1").map(|(_, b)| b.state),
        Some(crate::model::BackendState::Up)
    );
    assert_eq!(files(&dir), saved);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_health_change_that_does_not_cross_the_quorum_makes_no_pass_over_the_farm() {
    let (dir, svc) = allowed_service("quorum-");
    let mut backends: Vec<serde_json::Value> = (0..2_000)
        .map(|i| json!({"name": format!("b{i}"), "ip-addr": format!("10.0.{}.{}", i / 250, i % 250 + 1)}))
        .collect();
    backends.push(json!({"name": "sorry", "ip-addr": "10.9.0.1", "sorry": true,
        "health-check": {"enabled": false}}));
    let doc = json!({"farms": [{"name": "big", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80",
        "scheduler": "weight", "quorum": 1_999, "health-check": {"type": "tcp"}, "backends": backends}]});
    let config = parse_config(&doc.to_string()).unwrap();
    svc.change(Origin::api(), move |_| Ok(config)).await.unwrap();
    let caller = Caller::nobody();
    let health = |backend: &str, health: &str| Operation::SetBackendHealth {
        farm: "big".into(),
        backend: backend.into(),
        health: health.into(),
        reason: String::new(),
    };
    let quorum_met = |svc: &Service| {
        let ix = svc.index();
        ix.names().tiers("big").map(|t| t.quorum_met())
    };
    // 2,000 serve, 1,999 needed: one failing leaves the quorum met, and so does its return.
    for (what, op) in [
        ("failing", health("b700", "failing")),
        ("healthy", health("b700", "healthy")),
    ] {
        let before = passes(&svc).await;
        svc.execute(&caller, op).await.unwrap();
        assert_eq!(passes(&svc).await - before, 0, "{what}: a pass over the farm");
        assert_eq!(quorum_met(&svc), Some(true), "{what}");
    }
    // Two failing cross it: the farm-level switch may pass over the farm, and the sorry backend
    // alone is active.
    svc.execute(&caller, health("b1", "failing")).await.unwrap();
    svc.execute(&caller, health("b2", "failing")).await.unwrap();
    assert_eq!(quorum_met(&svc), Some(false));
    let ix = svc.index();
    assert_eq!(ix.effective_priority("big"), Some(crate::model::SORRY_TIER));
    // Below it, a change that does not cross it back is O(1) again.
    let before = passes(&svc).await;
    svc.execute(&caller, health("b3", "failing")).await.unwrap();
    assert_eq!(
        passes(&svc).await - before,
        0,
        "below the quorum: a pass over the farm"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn agent_advice_and_slow_start_steps_make_no_pass_over_the_farms() {
    use crate::health::Advice;
    use crate::model::{Health, Ramp, Seconds, effective_weight};
    use ops_health::{HealthUpdate, RampStep, set_healths, step_ramps};

    let (dir, svc) = allowed_service("ramp-");
    let farm = |name: &str, vip: &str, net: u32| {
        let backends: Vec<serde_json::Value> = (0..2_000)
            .map(|i| {
                json!({"name": format!("b{i}"), "ip-addr": format!("10.{net}.{}.{}", i / 250, i % 250 + 1),
                "weight": 10, "health": "failing"})
            })
            .collect();
        json!({"name": name, "virtual-addresses": [vip], "virtual-ports": "80",
            "scheduler": "weight", "backends": backends})
    };
    let doc = json!({"farms": [farm("a", "192.0.2.1", 1), farm("b", "192.0.2.2", 2)]});
    let config = parse_config(&doc.to_string()).unwrap();
    svc.change(Origin::api(), move |_| Ok(config)).await.unwrap();
    let ramp = Ramp::of(Seconds::from_millis(10_000)).unwrap();
    let names: Vec<(&str, String)> = (0..100)
        .map(|i| ("a", format!("b{}", i * 13)))
        .chain((0..100).map(|i| ("b", format!("b{}", i * 17 + 1))))
        .collect();
    // Recoveries under slow start, and an agent's 50 % on one of them: one commit.
    let verdicts: Vec<HealthUpdate> = names
        .iter()
        .map(|(f, b)| HealthUpdate {
            farm: f.to_string(),
            backend: b.clone(),
            health: Health::Healthy,
            advice: (b == "b13").then_some(Advice {
                drain: false,
                weight_percent: Some(50),
            }),
            ramp: Some(ramp),
            ..HealthUpdate::default()
        })
        .collect();
    let steps: Vec<RampStep> = names
        .iter()
        .map(|(f, b)| RampStep {
            farm: f.to_string(),
            backend: b.clone(),
            share: 54,
        })
        .collect();
    for what in ["verdicts", "steps"] {
        let before = passes(&svc).await;
        let generation = svc.generation();
        let done = if what == "verdicts" {
            svc.change_indexed(Origin::api(), set_healths(verdicts.clone()))
                .await
        } else {
            svc.change_indexed(Origin::api(), step_ramps(steps.clone())).await
        };
        done.unwrap();
        assert_eq!(svc.generation(), generation + 1, "{what}: one commit");
        assert_eq!(passes(&svc).await - before, 0, "{what}: a pass over a farm");
    }
    let ix = svc.index();
    let (_, b) = ix.backend("a", "b13").unwrap();
    assert_eq!(
        (b.weight, b.health_weight, b.health_ramp, effective_weight(b)),
        (10, Some(50), Some(54), 3)
    );
    let (_, b) = ix.backend("b", "b18").unwrap();
    assert_eq!((b.health_ramp, effective_weight(b)), (Some(54), 5));
    // Not among them: still failing, no ramp.
    let (_, b) = ix.backend("b", "b19").unwrap();
    assert_eq!(
        (b.health, b.health_ramp, effective_weight(b)),
        (Health::Failing, None, 10)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
