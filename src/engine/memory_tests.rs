use super::*;
use crate::model::parse_config;
use serde_json::json;

/// Farm `web` (persistence on the client address, one static session on `b`) and policy `bad`.
fn config() -> Config {
    parse_config(
        &json!({
            "farms": [{
                "name": "web", "virtual-addresses": ["192.0.2.10"], "virtual-ports": "80",
                "persistence": ["srcip"], "persist-ttl": 60,
                "sessions": [{"client": "198.51.100.7", "backend": "b"}],
                "backends": [{"name": "a", "ip-addr": "10.0.0.1"}, {"name": "b", "ip-addr": "10.0.0.2"}]
            }],
            "policies": [{"name": "bad", "elements": ["192.0.2.0/24", "10.8.0.2"]}]
        })
        .to_string(),
    )
    .unwrap()
}

fn loaded() -> (MemoryEngine, MemoryControl) {
    let mut e = MemoryEngine::new();
    let control = e.control();
    e.apply(config()).unwrap();
    (e, control)
}

fn with_weight(c: &Config, backend: &str, weight: u32) -> Config {
    let mut c = c.clone();
    let f = c.farms.iter_mut().find(|f| f.name == "web").unwrap();
    f.backends.iter_mut().find(|b| b.name == backend).unwrap().weight = weight;
    c
}

fn kernel_refusal(e: EngineError) -> String {
    match e {
        EngineError::Kernel(k) => k.to_string(),
        other => panic!("wanted a kernel refusal, got {other:?}"),
    }
}

#[test]
fn commits_count_and_allocate_as_the_kernel_engine() {
    let (mut e, control) = loaded();
    assert_eq!((control.generation(), control.transactions()), (1, 1));
    assert_eq!(*e.config(), config());
    let mut want = Allocation::default();
    want.update(&config()).unwrap();
    assert_eq!(*e.allocation(), want);

    let o = e.apply(with_weight(&config(), "a", 3)).unwrap();
    assert_eq!(o.generation, Some(2));
    assert_eq!(o.changes, vec!["replace farm web".to_string()]);
    assert_eq!(
        e.allocation().farms["web"].slots(false).len(),
        4,
        "a has 3 slots, b one"
    );

    // The same configuration again sends nothing.
    assert_eq!(e.apply(e.config().clone()).unwrap(), Outcome::default());
    assert_eq!((control.generation(), control.transactions()), (2, 2));

    let o = e.apply(Config::default()).unwrap();
    assert_eq!(o.changes, vec!["delete farm web", "delete policy bad"]);
    assert!(e.allocation().farms.is_empty());
}

#[test]
fn reconcile_keeps_the_saved_allocation() {
    let (e, _) = loaded();
    let saved = e.allocation().clone();
    let mut fresh = MemoryEngine::new();
    fresh.reconcile(config(), saved.clone()).unwrap();
    assert_eq!(*fresh.allocation(), saved);
    assert_eq!(fresh.reconcile(config(), saved).unwrap(), Outcome::default());
}

#[test]
fn validates_before_sending() {
    let (mut e, control) = loaded();
    let mut bad = config();
    bad.farms[0].backends[1].name = "a".into();
    assert!(matches!(e.apply(bad), Err(EngineError::Invalid(_))));
    let mut queue = config();
    queue.farms[0].queue = 1;
    let mut e2 = MemoryEngine::with_features(KernelFeatures {
        queue: false,
        ..*e.features()
    });
    match e2.apply(queue) {
        Err(EngineError::Unsupported { field, .. }) => assert_eq!(field, "farms[web].queue"),
        other => panic!("wanted Unsupported, got {other:?}"),
    }
    assert_eq!(control.transactions(), 1, "refused configurations are never sent");
    assert_eq!(*e.config(), config());
}

#[test]
fn https_checks_and_slow_starts_are_taken() {
    let mut https = crate::model::HealthCheck::new(crate::model::CheckType::Https);
    https.path = Some("/".into());
    let mut farm_check = config();
    farm_check.farms[0].health_check = Some(https);
    let mut backend_check = config();
    backend_check.farms[0].health_check = Some(crate::model::HealthCheck::new(crate::model::CheckType::Tcp));
    backend_check.farms[0].backends[1].health_check =
        Some(serde_json::from_value(serde_json::json!({"type": "https", "path": "/"})).unwrap());
    // A slow start ramps the weight (the checks' `health-ramp`): taken, on the farm or a backend.
    let mut slow = crate::model::HealthCheck::new(crate::model::CheckType::Tcp);
    slow.slow_start = serde_json::from_value(serde_json::json!(30)).unwrap();
    let mut farm_slow = config();
    farm_slow.farms[0].health_check = Some(slow);
    let mut backend_slow = config();
    backend_slow.farms[0].health_check = Some(crate::model::HealthCheck::new(crate::model::CheckType::Tcp));
    backend_slow.farms[0].backends[1].health_check =
        Some(serde_json::from_value(serde_json::json!({"slow-start": 0.5})).unwrap());
    for c in [farm_check, backend_check, farm_slow, backend_slow] {
        let mut e = MemoryEngine::new();
        e.apply(c.clone()).unwrap();
        assert_eq!(*e.config(), c);
    }
}

#[test]
fn refusals_name_the_object_and_change_nothing() {
    let (mut e, control) = loaded();
    let before = (e.config().clone(), e.allocation().clone());
    control.fail_next(1);
    let err = kernel_refusal(e.apply(with_weight(&config(), "a", 5)).unwrap_err());
    assert!(err.contains("replace farm web (message 1 of 1)"), "{err}");
    assert_eq!((e.config().clone(), e.allocation().clone()), before);
    assert_eq!((control.generation(), control.transactions()), (1, 2));
    // Only the next one failed.
    assert_eq!(
        e.apply(with_weight(&config(), "a", 5)).unwrap().generation,
        Some(2)
    );

    control.fail_when(|change| change == "add farm www");
    let mut two = e.config().clone();
    let mut www = two.farms[0].clone();
    www.name = "www".into();
    www.virtual_addresses = vec!["192.0.2.11".parse().unwrap()];
    two.farms.push(www);
    let mut policy_only = e.config().clone();
    policy_only.policies[0].elements.pop();
    let err = kernel_refusal(e.apply(two.clone()).unwrap_err());
    assert!(err.contains("add farm www (message 1 of 1)"), "{err}");
    assert!(e.config().farm("www").is_none());
    assert!(!e.allocation().farms.contains_key("www"));
    e.apply(policy_only).unwrap();
    control.stop_failing();
    e.apply(two).unwrap();
    assert!(e.config().farm("www").is_some());
}

#[test]
fn counters_are_what_the_test_set() {
    let (mut e, control) = loaded();
    control.set_traffic("web", None, Traffic::new(10, 1000, 2));
    control.set_traffic("web", Some("b"), Traffic::new(4, 400, 2));
    control.set_policy_counter("bad", "10.8.0.2", (3, 180));
    assert_eq!(e.traffic("web", None).unwrap(), Traffic::new(10, 1000, 2));
    assert_eq!(e.traffic("web", Some("a")).unwrap(), Traffic::default());
    assert!(matches!(
        e.traffic("web", Some("z")),
        Err(EngineError::NotFound(_))
    ));
    assert!(matches!(e.traffic("nope", None), Err(EngineError::NotFound(_))));
    assert_eq!(
        e.farm_traffic("web").unwrap(),
        (
            Traffic::new(10, 1000, 2),
            vec![
                ("a".into(), Traffic::default()),
                ("b".into(), Traffic::new(4, 400, 2))
            ]
        )
    );
    assert_eq!(
        e.policy_counters("bad").unwrap(),
        vec![("192.0.2.0/24".into(), 0, 0), ("10.8.0.2".into(), 3, 180)]
    );
    assert!(matches!(e.policy_counters("good"), Err(EngineError::NotFound(_))));
}

#[test]
fn sessions_static_and_learnt() {
    let (mut e, control) = loaded();
    control.learn_session("web", "198.51.100.8", "a", 5000);
    control.learn_session("web", "198.51.100.9", "gone", 7000);
    let s = |client: &str, backend: Option<&str>, expires_ms| SessionInfo {
        client: client.into(),
        backend: backend.map(str::to_string),
        expires_ms,
    };
    assert_eq!(
        e.sessions("web").unwrap(),
        vec![
            s("198.51.100.7", Some("b"), None),
            s("198.51.100.8", Some("a"), Some(5000)),
            s("198.51.100.9", None, Some(7000)),
        ]
    );

    // A learnt session leaves the ruleset in a transaction; the configuration stays.
    let o = e.delete_session("web", "198.51.100.8").unwrap();
    assert_eq!(o.changes, vec!["delete session web 198.51.100.8"]);
    assert_eq!(*e.config(), config());
    assert!(matches!(
        e.delete_session("web", "198.51.100.8"),
        Err(EngineError::NotFound(_))
    ));
    assert!(matches!(
        e.delete_session("web", "not an address"),
        Err(EngineError::Invalid(_))
    ));

    // A static one leaves the configuration.
    e.delete_session("web", "198.51.100.7").unwrap();
    assert!(e.config().farms[0].sessions.is_empty());

    // A refused flush keeps the sessions; a flush forgets the learnt ones.
    control.fail_next(1);
    kernel_refusal(e.flush_sessions("web").unwrap_err());
    assert_eq!(e.sessions("web").unwrap().len(), 1);
    assert_eq!(e.flush_sessions("web").unwrap().messages, 1);
    assert!(e.sessions("web").unwrap().is_empty());
    assert_eq!(e.flush_sessions("web").unwrap(), Outcome::default());
}

#[test]
fn learnt_sessions_go_with_their_farm() {
    let (mut e, control) = loaded();
    control.learn_session("web", "198.51.100.8", "a", 5000);
    let mut without = config();
    without.farms[0].persistence.clear();
    without.farms[0].sessions.clear();
    e.apply(without).unwrap();
    assert!(e.sessions("web").unwrap().is_empty());
    e.apply(config()).unwrap();
    assert_eq!(e.sessions("web").unwrap().len(), 1, "only the static session");
}

#[test]
fn nothing_to_watch() {
    let (mut e, _) = loaded();
    assert_eq!(e.portid(), None);
    assert_eq!(e.refresh_l2().unwrap(), Outcome::default());
}
