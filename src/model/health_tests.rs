use serde_json::json;

use super::*;

fn check(v: serde_json::Value) -> HealthCheck {
    serde_json::from_value(v).unwrap()
}

fn errors(v: serde_json::Value) -> Vec<String> {
    validate_health_check(&check(v), "farms[web].health-check")
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

fn over(v: serde_json::Value) -> HealthCheckOverride {
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_type_alone_takes_every_default_and_writes_back_alone() {
    let c = check(json!({"type": "tcp"}));
    assert_eq!(c, HealthCheck::new(CheckType::Tcp));
    assert_eq!(c.interval, Seconds::from_millis(2000));
    assert_eq!(c.fast_interval(), Seconds::from_millis(2000));
    assert_eq!(c.down_interval(), Seconds::from_millis(2000));
    assert_eq!(c.timeout, Seconds::from_millis(1000));
    assert_eq!(c.jitter(), Seconds::from_millis(200));
    assert_eq!((c.rise, c.fall), (2, 3));
    assert_eq!(c.on_failure, OnFailure::StopNew);
    assert_eq!(c.method, "GET");
    assert!(c.tls_verify);
    assert_eq!(c.expect_status.to_string(), "200-399");
    assert_eq!(serde_json::to_value(&c).unwrap(), json!({"type": "tcp"}));
    assert!(validate_health_check(&c, "x").is_empty());
}

#[test]
fn a_full_http_check_round_trips_with_fractions_of_seconds() {
    let v = json!({"type": "http", "port": 8080, "interval": 0.5, "fast-interval": 0.25,
        "down-interval": 5, "timeout": 0.2, "rise": 1, "fall": 2, "jitter": 0.1, "slow-start": 30,
        "on-failure": "cut", "source-addr": "10.0.0.254", "iface": "eth1", "mark": 7,
        "method": "HEAD", "path": "/health?full=1", "host": "www.example.com",
        "headers": {"X-Check": "nftlbd"}, "expect-status": "200-299,302",
        "expect-body": "\"status\":\\s*\"ok\"", "expect-body-absent": true});
    let c = check(v.clone());
    assert_eq!(c.interval.millis(), 500);
    assert_eq!(c.timeout.millis(), 200);
    assert_eq!(c.on_failure, OnFailure::Cut);
    assert!(c.expect_status.contains(302) && !c.expect_status.contains(301));
    assert_eq!(serde_json::to_value(&c).unwrap(), v);
    assert_eq!(errors(v), Vec::<String>::new());
}

#[test]
fn unknown_types_keys_and_values_are_refused_by_name() {
    let e = |v| serde_json::from_value::<HealthCheck>(v).unwrap_err().to_string();
    assert_eq!(
        e(json!({"type": "icmp"})),
        "unknown variant `icmp`, expected one of `tcp`, `http`, `https`, `udp`, `dns`, `exec`, `agent`"
    );
    assert!(e(json!({"type": "tcp", "retries": 3})).starts_with("unknown field `retries`"));
    assert_eq!(e(json!({"interval": 1})), "missing field `type`");
    assert_eq!(
        e(json!({"type": "http", "expect-status": "200-299,6xx"})),
        "\"6xx\" is not an HTTP status"
    );
    assert_eq!(
        e(json!({"type": "tcp", "on-failure": "kill"})),
        "unknown variant `kill`, expected `stop-new` or `cut`"
    );
    assert_eq!(
        e(json!({"type": "tcp", "timeout": -1})),
        "-1 is not a number of seconds (0 or more)"
    );
}

#[test]
fn bad_times_and_counts_are_refused_naming_the_field() {
    assert_eq!(
        errors(json!({"type": "tcp", "interval": 1, "timeout": 1})),
        ["farms[web].health-check.timeout: 1s is not below the interval (1s)"]
    );
    assert_eq!(
        errors(json!({"type": "tcp", "interval": 2, "fast-interval": 0.5, "timeout": 0.5})),
        ["farms[web].health-check.timeout: 0.5s is not below the fast-interval (0.5s)"]
    );
    assert_eq!(
        errors(json!({"type": "tcp", "interval": 0, "timeout": 0})),
        [
            "farms[web].health-check.interval: must be more than 0",
            "farms[web].health-check.timeout: must be more than 0"
        ]
    );
    assert_eq!(
        errors(json!({"type": "tcp", "rise": 0, "fall": 101})),
        [
            "farms[web].health-check.rise: 0 is not a count of checks (1-100)",
            "farms[web].health-check.fall: 101 is not a count of checks (1-100)"
        ]
    );
    assert_eq!(
        errors(json!({"type": "tcp", "jitter": 3, "port": 0, "mark": 0, "iface": "a/b"})),
        [
            "farms[web].health-check.jitter: 3s is more than the interval (2s)",
            "farms[web].health-check.port: 0 is not a port",
            "farms[web].health-check.mark: 0 is no mark: leave the key out",
            "farms[web].health-check.iface: \"a/b\" is not an interface name"
        ]
    );
}

#[test]
fn each_type_requires_its_keys_and_refuses_the_others() {
    assert_eq!(
        errors(json!({"type": "http"})),
        ["farms[web].health-check.path: required for an http check"]
    );
    assert_eq!(
        errors(json!({"type": "https", "path": "no-slash"})),
        [
            "farms[web].health-check.path: \"no-slash\" is not a request path (it starts with / and has no spaces)"
        ]
    );
    assert_eq!(
        errors(json!({"type": "exec"})),
        ["farms[web].health-check.command: required for an exec check (program and arguments)"]
    );
    assert_eq!(
        errors(json!({"type": "exec", "command": ["check_http", "-H", "HOST"], "user": "root"})),
        [
            "farms[web].health-check.command: \"check_http\" is not an absolute path (no search path is used)",
            "farms[web].health-check.user: checks run as an unprivileged user, not root"
        ]
    );
    assert_eq!(
        errors(json!({"type": "dns"})),
        ["farms[web].health-check.query-name: required for a dns check"]
    );
    assert_eq!(
        errors(json!({"type": "dns", "query-name": "bad..name"})),
        ["farms[web].health-check.query-name: \"bad..name\" is not a DNS name (label \"\")"]
    );
    assert_eq!(
        errors(json!({"type": "dns", "query-name": "example.com.", "query-type": "AAAA"})),
        Vec::<String>::new()
    );
    assert_eq!(
        errors(json!({"type": "udp", "expect": "(pong"})),
        [
            "farms[web].health-check.send: required for a udp check (the datagram sent)",
            "farms[web].health-check.expect: bad pattern: unclosed ( at offset 5"
        ]
    );
    assert_eq!(
        errors(json!({"type": "tcp", "path": "/", "command": ["/bin/true"], "agent-port": 9999})),
        [
            "farms[web].health-check.agent-port: not a key of a tcp check",
            "farms[web].health-check.command: not a key of a tcp check",
            "farms[web].health-check.path: not a key of a tcp check"
        ]
    );
    assert_eq!(
        errors(json!({"type": "http", "path": "/", "tls-verify": false})),
        ["farms[web].health-check.tls-verify: not a key of an http check"]
    );
}

#[test]
fn an_https_host_is_a_tls_server_name_without_its_port() {
    let name = |host: &str| {
        let c: HealthCheck =
            serde_json::from_value(json!({"type": "https", "path": "/", "host": host})).unwrap();
        c.server_name().map(str::to_string)
    };
    assert_eq!(name("web.example").as_deref(), Some("web.example"));
    assert_eq!(name("web.example:8443").as_deref(), Some("web.example"));
    assert_eq!(name("[2001:db8::1]:443").as_deref(), Some("2001:db8::1"));
    assert_eq!(name("2001:db8::1").as_deref(), Some("2001:db8::1"));
    assert_eq!(name("10.0.0.1:443").as_deref(), Some("10.0.0.1"));
    let none: HealthCheck = serde_json::from_value(json!({"type": "https", "path": "/"})).unwrap();
    assert_eq!(none.server_name(), None);
    assert_eq!(
        errors(json!({"type": "https", "path": "/", "host": "web.example:8443", "tls-verify": false})),
        Vec::<String>::new()
    );
    assert_eq!(
        errors(json!({"type": "https", "path": "/", "host": "bad..name:443"})),
        ["farms[web].health-check.host: \"bad..name\" is not a TLS server name (a DNS name or an address)"]
    );
    // An http check sends any Host it is given: there is no server name to check.
    assert_eq!(
        errors(json!({"type": "http", "path": "/", "host": "bad..name"})),
        Vec::<String>::new()
    );
}

#[test]
fn http_headers_methods_and_body_patterns_are_checked() {
    assert_eq!(
        errors(
            json!({"type": "http", "path": "/", "method": "get", "expect-body": "a**",
            "headers": {"Host": "x", "Bad Name": "v", "X-A": "one\r\ntwo"}})
        ),
        [
            "farms[web].health-check.method: \"get\" is not an HTTP method",
            "farms[web].health-check.headers: \"Bad Name\" is not a header name",
            "farms[web].health-check.headers: Host is written by nftlbd (use `host` for Host)",
            "farms[web].health-check.headers: the value of X-A has a line break",
            "farms[web].health-check.expect-body: bad pattern: repetition of a repetition at offset 2"
        ]
    );
    assert_eq!(
        errors(json!({"type": "http", "path": "/", "expect-body-absent": true})),
        ["farms[web].health-check.expect-body-absent: needs expect-body (the pattern that must be absent)"]
    );
}

#[test]
fn a_backend_override_replaces_the_farms_keys_one_by_one() {
    let farm = check(json!({"type": "http", "path": "/health", "interval": 5, "timeout": 2, "fall": 4}));
    assert_eq!(effective(Some(&farm), None).unwrap(), Some(farm.clone()));
    assert_eq!(effective(None, None).unwrap(), None);

    let merged = effective(Some(&farm), Some(&over(json!({"path": "/ready", "timeout": 1})))).unwrap();
    let want = check(json!({"type": "http", "path": "/ready", "interval": 5, "timeout": 1, "fall": 4}));
    assert_eq!(merged, Some(want));

    // Another type keeps the common keys but none of the farm's http keys.
    let merged = effective(Some(&farm), Some(&over(json!({"type": "tcp", "port": 22})))).unwrap();
    let want = check(json!({"type": "tcp", "port": 22, "interval": 5, "timeout": 2, "fall": 4}));
    assert_eq!(merged, Some(want));

    assert_eq!(
        effective(Some(&farm), Some(&over(json!({"enabled": false})))).unwrap(),
        None
    );
    let own = effective(None, Some(&over(json!({"type": "agent", "agent-port": 9999})))).unwrap();
    assert_eq!(
        own.map(|c| (c.kind, c.agent_port)),
        Some((CheckType::Agent, Some(9999)))
    );
    assert_eq!(
        serde_json::to_value(over(json!({"enabled": false, "timeout": 1}))).unwrap(),
        json!({"enabled": false, "timeout": 1})
    );
}

#[test]
fn a_bad_override_is_named_under_the_backend() {
    let at = "farms[web].backends[b].health-check";
    let farm = check(json!({"type": "http", "path": "/health"}));
    let e = |farm: Option<&HealthCheck>, v| -> Vec<String> {
        validate_backend_health_check(farm, Some(&over(v)), at)
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    };
    assert_eq!(
        e(None, json!({"timeout": 1})),
        ["farms[web].backends[b].health-check.type: required when the farm has no health-check"]
    );
    assert_eq!(
        e(Some(&farm), json!({"timeout": "1s"})),
        ["farms[web].backends[b].health-check.timeout: invalid type: string \"1s\", expected f64"]
    );
    assert_eq!(
        e(Some(&farm), json!({"timeout": 2})),
        ["farms[web].backends[b].health-check.timeout: 2s is not below the interval (2s)"]
    );
    assert_eq!(
        e(Some(&farm), json!({"type": "exec"})),
        ["farms[web].backends[b].health-check.command: required for an exec check (program and arguments)"]
    );
    let unknown = serde_json::from_value::<HealthCheckOverride>(json!({"retries": 1})).unwrap_err();
    assert_eq!(unknown.to_string(), "unknown field `retries`");
    let ok = validate_backend_health_check(Some(&farm), Some(&over(json!({"path": "/b"}))), at).unwrap();
    assert_eq!(ok.and_then(|c| c.path), Some("/b".to_string()));
}

#[test]
fn health_has_its_canonical_words() {
    for (h, word) in [
        (Health::Unknown, "unknown"),
        (Health::Healthy, "healthy"),
        (Health::Failing, "failing"),
    ] {
        assert_eq!(h.as_str(), word);
        assert_eq!(Health::parse(word), Some(h));
        assert_eq!(serde_json::to_value(h).unwrap(), json!(word));
    }
    assert_eq!(Health::parse("up"), None);
    assert_eq!(Health::default(), Health::Unknown);
}
