//! The varlink front end over its real socket and protocol (NUL-terminated JSON on a unix
//! socket), on the in-memory engine: what each method answers, that every change asks the
//! operation table's action and details for the calling process, and that refusals change
//! nothing.

use std::path::PathBuf;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::engine::Traffic;
use crate::polkit::{self, Details};
use crate::testkit::{Fixture, TempDir, is_this_process, within};

/// A varlink client on one connection.
struct Client {
    stream: BufReader<UnixStream>,
}

impl Client {
    async fn connect(path: &PathBuf) -> Client {
        let stream = within("connect", UnixStream::connect(path))
            .await
            .expect("the varlink socket accepts");
        Client {
            stream: BufReader::new(stream),
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        within("send", self.stream.get_mut().write_all(bytes))
            .await
            .expect("the socket takes a message");
    }

    /// The next message, whole (`parameters`, `error`, `continues`); `None` once the server
    /// hung up.
    async fn next(&mut self) -> Option<Value> {
        let mut buf = Vec::new();
        let n = within("a reply", self.stream.read_until(0, &mut buf))
            .await
            .expect("the socket reads");
        if n == 0 {
            return None;
        }
        assert_eq!(buf.pop(), Some(0), "a reply ends with NUL: {buf:?}");
        Some(serde_json::from_slice(&buf).expect("a reply is JSON"))
    }

    async fn send(&mut self, call: Value) {
        let mut bytes = serde_json::to_vec(&call).expect("a call encodes");
        bytes.push(0);
        self.send_raw(&bytes).await;
    }

    /// The whole reply to `method` with `parameters`.
    async fn call(&mut self, method: &str, parameters: Value) -> Value {
        self.send(json!({ "method": method, "parameters": parameters }))
            .await;
        self.next().await.expect("a reply before the server hangs up")
    }

    /// The reply parameters of a call that must succeed.
    async fn ok(&mut self, method: &str, parameters: Value) -> Value {
        let r = self.call(method, parameters).await;
        assert_eq!(r.get("error"), None, "{method}: {r}");
        assert_eq!(r.as_object().map(|o| o.len()), Some(1), "{method}: {r}");
        r["parameters"].clone()
    }

    /// The error name and parameters of a call that must fail.
    async fn err(&mut self, method: &str, parameters: Value) -> (String, Value) {
        let r = self.call(method, parameters).await;
        let name = r["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method}: no error: {r}"));
        (name.to_string(), r["parameters"].clone())
    }
}

/// A service on the in-memory engine serving varlink on a socket of its own.
struct Served {
    fx: Fixture,
    socket: PathBuf,
    _dir: TempDir,
}

impl Served {
    fn start() -> Served {
        let fx = Fixture::start("varlink");
        let dir = TempDir::new("varlink-socket");
        let socket = dir.path().join("org.nftlbd1");
        let listener = super::listen(&socket).expect("a listening socket");
        tokio::spawn(super::serve(fx.service.clone(), listener));
        Served {
            fx,
            socket,
            _dir: dir,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(&self.socket).await
    }
}

fn method(name: &str) -> String {
    format!("org.nftlbd1.{name}")
}

/// Farm `web` of the test configuration as canonical JSON, every key the model writes.
fn web() -> Value {
    json!({
        "name": "web", "family": "ipv4", "virtual-addresses": ["192.0.2.10"],
        "virtual-ports": "80", "protocol": "tcp", "mode": "snat", "scheduler": "rr",
        "persistence": ["srcip"], "state": "up",
        "sessions": [{"client": "198.51.100.7", "backend": "b"}],
        "backends": [
            {"name": "a", "ip-addr": "10.0.0.1", "weight": 1, "priority": 1, "state": "up"},
            {"name": "b", "ip-addr": "10.0.0.2", "weight": 1, "priority": 1, "state": "up"}
        ]
    })
}

fn bad() -> Value {
    json!({"name": "bad", "type": "blacklist", "family": "ipv4", "elements": ["10.8.0.2"]})
}

fn initial() -> Value {
    json!({ "farms": [web()], "policies": [bad()] })
}

#[tokio::test]
async fn reads_answer_as_documented() {
    let s = Served::start();
    let mut c = s.client().await;
    let control = &s.fx.control;

    let got = c.ok(&method("GetConfig"), json!({})).await;
    assert_eq!(got, json!({ "config": initial(), "generation": 1 }));
    let got = c.ok(&method("ListFarms"), json!({})).await;
    assert_eq!(got, json!({ "farms": ["web"] }));

    control.set_traffic("web", None, Traffic::new(9, 900, 5));
    control.set_traffic("web", Some("a"), Traffic::new(7, 700, 5));
    // What the checker last saw of b (a runtime fact, beside the counters).
    let last = crate::health::LastCheck {
        at_us: 1_700_000_000_000_042,
        duration_us: 1234,
        ok: true,
    };
    s.fx.service.observed().record([("web", "b")], last);
    let got = c.ok(&method("GetFarm"), json!({"name": "web"})).await;
    let status = json!({
        "effectivePriority": 1, "healthReady": true, "quorumMet": true, "packets": 9, "bytes": 900,
        "newConnections": 5,
        "origin": "runtime",
        "backends": [
            {"name": "a", "active": true, "effectiveWeight": 1, "packets": 7, "bytes": 700, "newConnections": 5,
             "lastCheck": 0, "lastCheckDuration": 0, "connections": 0},
            {"name": "b", "active": true, "effectiveWeight": 1, "packets": 0, "bytes": 0, "newConnections": 0,
             "lastCheck": 1_700_000_000_000_042u64, "lastCheckDuration": 1234, "connections": 0}
        ]
    });
    assert_eq!(got, json!({ "farm": web(), "status": status }));

    let got = c.ok(&method("GetPolicy"), json!({"name": "bad"})).await;
    assert_eq!(got, json!({ "policy": bad(), "origin": "runtime" }));

    control.learn_session("web", "198.51.100.8", "a", 5000);
    let got = c.ok(&method("ListSessions"), json!({"farm": "web"})).await;
    assert_eq!(
        got,
        json!({ "sessions": [
            {"client": "198.51.100.7", "backend": "b", "static": true, "expiresMs": 0},
            {"client": "198.51.100.8", "backend": "a", "static": false, "expiresMs": 5000}
        ]})
    );

    control.set_policy_counter("bad", "10.8.0.2", (2, 120));
    let got = c.ok(&method("GetPolicyCounters"), json!({"name": "bad"})).await;
    assert_eq!(
        got,
        json!({ "counters": [{"element": "10.8.0.2", "packets": 2, "bytes": 120}] })
    );
    // Sessions and policy counters reveal clients: they ask `info`, for this process.
    let asked = s.fx.gate.take();
    let questions: Vec<(&str, &Details)> = asked.iter().map(|a| (a.action.as_str(), &a.details)).collect();
    let sessions = Details {
        farm: "web".into(),
        verb: "list-sessions".into(),
        ..Details::default()
    };
    let counters = Details {
        policy: "bad".into(),
        verb: "get-policy-counters".into(),
        ..Details::default()
    };
    assert_eq!(questions, [(polkit::INFO, &sessions), (polkit::INFO, &counters)]);
    assert!(asked.iter().all(is_this_process), "{asked:?}");

    let got = c.ok(&method("GetPermissions"), json!({})).await;
    let every = |word: &str| -> Value { polkit::ALL.iter().map(|a| (a.to_string(), json!(word))).collect() };
    assert_eq!(got, json!({ "permissions": every("yes") }));
    s.fx.gate.refuse();
    let got = c.ok(&method("GetPermissions"), json!({})).await;
    assert_eq!(got, json!({ "permissions": every("no") }));
    let asked = s.fx.gate.take();
    assert_eq!(asked.len(), 2 * polkit::ALL.len());
    assert!(asked.iter().all(|a| a.details == Details::default()), "{asked:?}");

    // Open reads stay open to a refused caller; the protected ones do not.
    let got = c.ok(&method("ListFarms"), json!({})).await;
    assert_eq!(got, json!({ "farms": ["web"] }));
    let (name, _) = c.err(&method("ListSessions"), json!({"farm": "web"})).await;
    assert_eq!(name, "org.nftlbd1.NotAuthorized");

    let got = c.ok(&method("Monitor"), json!({})).await;
    assert_eq!(got, json!({ "generation": 1, "farms": [], "policies": [] }));
    let got = c
        .ok(
            "org.varlink.service.GetInterfaceDescription",
            json!({"interface": "org.nftlbd1"}),
        )
        .await;
    assert_eq!(
        got,
        json!({ "description": include_str!("../../varlink/org.nftlbd1.varlink") })
    );

    let (name, p) = c.err(&method("GetFarm"), json!({"name": "www"})).await;
    assert_eq!(name, "org.nftlbd1.NotFound", "{p}");
    let (name, p) = c.err(&method("GetFarm"), json!({})).await;
    assert_eq!(
        (name.as_str(), p),
        (
            "org.varlink.service.InvalidParameter",
            json!({"parameter": "name"})
        )
    );
    let (name, p) = c.err(&method("Frobnicate"), json!({})).await;
    assert_eq!(
        (name.as_str(), p),
        (
            "org.varlink.service.MethodNotFound",
            json!({"method": "org.nftlbd1.Frobnicate"})
        )
    );

    assert_eq!(control.transactions(), 1, "reads commit nothing");
    assert_eq!(s.fx.service.generation(), 1);
}

/// One change: its method and parameters, what it must ask, and what it does to the
/// configuration (as canonical JSON) when allowed.
struct Case {
    method: &'static str,
    params: Value,
    action: &'static str,
    details: Details,
    /// Run before the call when it is allowed, so that it has something to commit.
    prepare: fn(&Fixture),
    expect: fn(&mut Value),
    /// Whether it changes the configuration (a learnt session is the kernel's only).
    changes_config: bool,
}

fn details(pairs: &[(&str, &str)]) -> Details {
    let mut d = Details::default();
    for (k, v) in pairs {
        let slot = match *k {
            "farm" => &mut d.farm,
            "backend" => &mut d.backend,
            "policy" => &mut d.policy,
            "verb" => &mut d.verb,
            "keys" => &mut d.keys,
            "state" => &mut d.state,
            "mode" => &mut d.mode,
            other => panic!("no detail {other}"),
        };
        *slot = v.to_string();
    }
    d
}

fn nothing(_: &Fixture) {}

/// A farm `name` with one backend `x`, as canonical JSON.
fn small_farm(name: &str, addr: &str) -> Value {
    json!({
        "name": name, "family": "ipv4", "virtual-addresses": [addr], "virtual-ports": "443",
        "protocol": "tcp", "mode": "snat", "scheduler": "rr", "state": "up",
        "backends": [{"name": "x", "ip-addr": "10.0.1.1", "weight": 1, "priority": 1, "state": "up"}]
    })
}

/// Every change varlink offers, in an order in which each one, allowed, commits.
fn cases() -> Vec<Case> {
    vec![
        Case {
            method: "CreateFarm",
            params: json!({"farm": {"name": "api", "virtual-addresses": ["192.0.2.20"], "virtual-ports": "443",
                                    "backends": [{"name": "x", "ip-addr": "10.0.1.1"}]}}),
            action: polkit::FARM_MANAGE,
            details: details(&[("farm", "api"), ("verb", "create-farm")]),
            prepare: nothing,
            expect: |c| {
                c["farms"]
                    .as_array_mut()
                    .expect("farms")
                    .push(small_farm("api", "192.0.2.20"))
            },
            changes_config: true,
        },
        Case {
            method: "UpdateFarm",
            params: json!({"name": "web", "changes": {"scheduler": "hash", "persist-ttl": 120}}),
            action: polkit::FARM_MANAGE,
            details: details(&[
                ("farm", "web"),
                ("keys", "persist-ttl,scheduler"),
                ("verb", "update-farm"),
            ]),
            prepare: nothing,
            expect: |c| {
                c["farms"][0]["scheduler"] = json!("hash");
                c["farms"][0]["persist-ttl"] = json!(120);
            },
            changes_config: true,
        },
        Case {
            method: "RenameFarm",
            params: json!({"name": "api", "newName": "api2"}),
            action: polkit::FARM_MANAGE,
            details: details(&[("farm", "api"), ("verb", "rename-farm")]),
            prepare: nothing,
            expect: |c| c["farms"][1]["name"] = json!("api2"),
            changes_config: true,
        },
        Case {
            method: "AddBackend",
            params: json!({"farm": "web", "backend": {"name": "c", "ip-addr": "10.0.0.3"}}),
            action: polkit::BACKEND_MANAGE,
            details: details(&[("farm", "web"), ("backend", "c"), ("verb", "add-backend")]),
            prepare: nothing,
            expect: |c| {
                c["farms"][0]["backends"].as_array_mut().expect("backends").push(
                    json!({"name": "c", "ip-addr": "10.0.0.3", "weight": 1, "priority": 1, "state": "up"}),
                )
            },
            changes_config: true,
        },
        Case {
            method: "UpdateBackend",
            params: json!({"farm": "web", "backend": "c", "changes": {"weight": 3}}),
            action: polkit::BACKEND_MANAGE,
            details: details(&[
                ("farm", "web"),
                ("backend", "c"),
                ("keys", "weight"),
                ("verb", "update-backend"),
            ]),
            prepare: nothing,
            expect: |c| c["farms"][0]["backends"][2]["weight"] = json!(3),
            changes_config: true,
        },
        Case {
            method: "SetBackendState",
            // For a while: the next case ends it early.
            params: json!({"farm": "web", "backend": "a", "state": "drain", "for": 600}),
            action: polkit::BACKEND_SET_STATE,
            details: details(&[
                ("farm", "web"),
                ("backend", "a"),
                ("state", "drain"),
                ("verb", "set-backend-state"),
            ]),
            prepare: nothing,
            expect: |c| c["farms"][0]["backends"][0]["state"] = json!("drain"),
            changes_config: true,
        },
        Case {
            method: "CancelTimedChange",
            params: json!({"farm": "web", "backend": "a", "key": "state"}),
            action: polkit::BACKEND_SET_STATE,
            details: details(&[
                ("farm", "web"),
                ("backend", "a"),
                ("keys", "state"),
                ("verb", "cancel-timed-change"),
            ]),
            prepare: nothing,
            expect: |c| c["farms"][0]["backends"][0]["state"] = json!("up"),
            changes_config: true,
        },
        Case {
            method: "SetBackendHealth",
            params: json!({"farm": "web", "backend": "b", "health": "failing", "reason": "http: 503"}),
            action: polkit::BACKEND_SET_STATE,
            details: details(&[("farm", "web"), ("backend", "b"), ("verb", "set-backend-health")]),
            prepare: nothing,
            expect: |c| {
                c["farms"][0]["backends"][1]["health"] = json!("failing");
                c["farms"][0]["backends"][1]["health-reason"] = json!("http: 503");
            },
            changes_config: true,
        },
        Case {
            method: "SetBackends",
            params: json!({"changes": [{"farm": "web", "backend": "a", "state": "drain"},
                                       {"farm": "web", "backend": "b", "state": "down"}]}),
            action: polkit::BACKEND_SET_STATE,
            details: details(&[
                ("farm", "web"),
                ("keys", "state"),
                ("state", "drain,down"),
                ("verb", "set-backends"),
            ]),
            prepare: nothing,
            expect: |c| {
                c["farms"][0]["backends"][0]["state"] = json!("drain");
                c["farms"][0]["backends"][1]["state"] = json!("down");
            },
            changes_config: true,
        },
        Case {
            method: "RemoveBackend",
            params: json!({"farm": "web", "backend": "c"}),
            action: polkit::BACKEND_MANAGE,
            details: details(&[("farm", "web"), ("backend", "c"), ("verb", "remove-backend")]),
            prepare: nothing,
            expect: |c| {
                c["farms"][0]["backends"]
                    .as_array_mut()
                    .expect("backends")
                    .remove(2);
            },
            changes_config: true,
        },
        Case {
            method: "AddSession",
            params: json!({"farm": "web", "client": "198.51.100.9", "backend": "a"}),
            action: polkit::FARM_MANAGE,
            details: details(&[("farm", "web"), ("backend", "a"), ("verb", "add-session")]),
            prepare: nothing,
            expect: |c| {
                c["farms"][0]["sessions"]
                    .as_array_mut()
                    .expect("sessions")
                    .push(json!({"client": "198.51.100.9", "backend": "a"}))
            },
            changes_config: true,
        },
        Case {
            method: "DeleteSession",
            params: json!({"farm": "web", "client": "198.51.100.7"}),
            action: polkit::FARM_MANAGE,
            details: details(&[("farm", "web"), ("verb", "delete-session")]),
            prepare: nothing,
            expect: |c| {
                c["farms"][0]["sessions"]
                    .as_array_mut()
                    .expect("sessions")
                    .remove(0);
            },
            changes_config: true,
        },
        Case {
            method: "FlushSessions",
            params: json!({"farm": "web"}),
            action: polkit::FARM_MANAGE,
            details: details(&[("farm", "web"), ("verb", "flush-sessions")]),
            prepare: |fx| fx.control.learn_session("web", "198.51.100.8", "b", 5000),
            expect: |_| {},
            changes_config: false,
        },
        Case {
            method: "CreatePolicy",
            params: json!({"policy": {"name": "good", "type": "whitelist", "elements": ["10.9.0.0/16"]}}),
            action: polkit::POLICY_MANAGE,
            details: details(&[("policy", "good"), ("verb", "create-policy")]),
            prepare: nothing,
            expect: |c| {
                c["policies"].as_array_mut().expect("policies").push(
                    json!({"name": "good", "type": "whitelist", "family": "ipv4", "elements": ["10.9.0.0/16"]}),
                )
            },
            changes_config: true,
        },
        Case {
            method: "EditPolicyElements",
            params: json!({"name": "bad", "add": ["10.8.0.3"], "remove": ["10.8.0.2"]}),
            action: polkit::POLICY_MANAGE,
            details: details(&[("policy", "bad"), ("verb", "edit-policy-elements")]),
            prepare: nothing,
            expect: |c| c["policies"][0]["elements"] = json!(["10.8.0.3"]),
            changes_config: true,
        },
        Case {
            method: "DeletePolicy",
            params: json!({"name": "good"}),
            action: polkit::POLICY_MANAGE,
            details: details(&[("policy", "good"), ("verb", "delete-policy")]),
            prepare: nothing,
            expect: |c| {
                c["policies"].as_array_mut().expect("policies").remove(1);
            },
            changes_config: true,
        },
        Case {
            method: "ImportConfig",
            params: json!({"mode": "merge", "config": {"farms": [{"name": "db", "virtual-addresses": ["192.0.2.30"],
                "virtual-ports": "443", "backends": [{"name": "x", "ip-addr": "10.0.1.1"}]}]}}),
            action: polkit::CONFIG,
            details: details(&[("mode", "merge"), ("verb", "import-config")]),
            prepare: nothing,
            expect: |c| {
                c["farms"]
                    .as_array_mut()
                    .expect("farms")
                    .push(small_farm("db", "192.0.2.30"))
            },
            changes_config: true,
        },
        Case {
            method: "DeleteFarm",
            params: json!({"name": "api2"}),
            action: polkit::FARM_MANAGE,
            details: details(&[("farm", "api2"), ("verb", "delete-farm")]),
            prepare: nothing,
            expect: |c| {
                c["farms"].as_array_mut().expect("farms").remove(1);
            },
            changes_config: true,
        },
        Case {
            method: "Reload",
            params: json!({}),
            action: polkit::CONFIG,
            details: details(&[("verb", "reload")]),
            // An administrator edits the saved state by hand (the snapshot with the journal folded
            // in, as after a reload): backend b gets weight 4.
            prepare: |fx| {
                let mut st = crate::state::load(fx.dir.path())
                    .expect("a readable state")
                    .expect("a state");
                st.config.farms[0].backends[1].weight = 4;
                crate::state::save(fx.dir.path(), &st).expect("saved");
            },
            expect: |c| c["farms"][0]["backends"][1]["weight"] = json!(4),
            changes_config: true,
        },
        // Allowed, it is refused: no file declares web (the fixture reads no farm files).
        Case {
            method: "RuntimeToPersistent",
            params: json!({"name": "web"}),
            action: polkit::CONFIG,
            details: details(&[("farm", "web"), ("verb", "runtime-to-persistent")]),
            prepare: nothing,
            expect: |_| {},
            changes_config: false,
        },
    ]
}

/// The checkpoint methods (they commit nothing of their own but a rollback): method,
/// parameters, verb.
fn checkpoint_cases() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "CheckpointCreate",
            json!({"farms": ["web"], "rollbackTimeout": 60}),
            "checkpoint-create",
        ),
        (
            "CheckpointRollback",
            json!({"checkpoint": 1}),
            "checkpoint-rollback",
        ),
        (
            "CheckpointDestroy",
            json!({"checkpoint": 1}),
            "checkpoint-destroy",
        ),
        (
            "CheckpointAdjustRollbackTimeout",
            json!({"checkpoint": 1, "addTimeout": 5}),
            "checkpoint-adjust-rollback-timeout",
        ),
    ]
}

#[test]
fn the_cases_cover_every_change_of_the_table() {
    let checkpoints = checkpoint_cases();
    let mut covered: Vec<&str> = cases()
        .iter()
        .map(|c| c.method)
        .chain(checkpoints.iter().map(|c| c.0))
        .collect();
    let mut changes: Vec<&str> = crate::service::operation::OPERATIONS
        .iter()
        .filter(|s| s.changes)
        .map(|s| s.name)
        .collect();
    covered.sort_unstable();
    changes.sort_unstable();
    assert_eq!(covered, changes);
}

#[tokio::test]
async fn refused_changes_answer_not_authorized_and_change_nothing() {
    let s = Served::start();
    let mut c = s.client().await;
    let before = c.ok(&method("GetConfig"), json!({})).await;
    let saved = s.fx.saved();
    s.fx.gate.refuse();
    for case in cases() {
        let (name, p) = c.err(&method(case.method), case.params.clone()).await;
        assert_eq!(name, "org.nftlbd1.NotAuthorized", "{}: {p}", case.method);
        assert_eq!(
            p,
            json!({"message": format!("{} is not allowed for this caller", case.action)}),
            "{}",
            case.method
        );
        let asked = s.fx.gate.take();
        assert_eq!(asked.len(), 1, "{}: {asked:?}", case.method);
        assert_eq!(
            (asked[0].action.as_str(), &asked[0].details),
            (case.action, &case.details),
            "{}",
            case.method
        );
        assert!(is_this_process(&asked[0]), "{:?}", asked[0]);
    }
    for (name, params, verb) in checkpoint_cases() {
        let (e, p) = c.err(&method(name), params).await;
        assert_eq!(e, "org.nftlbd1.NotAuthorized", "{name}: {p}");
        let asked = s.fx.gate.take();
        assert_eq!(asked.len(), 1, "{name}: {asked:?}");
        assert_eq!(
            (asked[0].action.as_str(), &asked[0].details),
            (polkit::CHECKPOINT, &details(&[("verb", verb)])),
        );
    }
    assert_eq!(
        c.ok(&method("ListCheckpoints"), json!({})).await,
        json!({"checkpoints": []})
    );
    assert_eq!(c.ok(&method("GetConfig"), json!({})).await, before);
    assert_eq!(s.fx.control.transactions(), 1, "only the start committed");
    assert_eq!(s.fx.saved(), saved);
}

#[tokio::test]
async fn each_allowed_change_commits_one_transaction() {
    let s = Served::start();
    let mut c = s.client().await;
    let mut want = initial();
    let mut generation = 1;
    for (i, case) in cases().into_iter().enumerate() {
        (case.prepare)(&s.fx);
        if case.method == "RuntimeToPersistent" {
            let (name, p) = c.err(&method(case.method), case.params.clone()).await;
            assert_eq!(name, "org.nftlbd1.InvalidArgument", "{p}");
            assert_eq!(p["errors"][0]["field"], json!("farms[web]"), "{p}");
            assert_eq!(s.fx.gate.take().len(), 1);
            assert_eq!(s.fx.control.transactions(), 1 + i, "nothing committed");
            continue;
        }
        let got = c.ok(&method(case.method), case.params.clone()).await;
        let reply = match case.method {
            "Reload" => json!({"refused": []}),
            _ => json!({}),
        };
        assert_eq!(got, reply, "{}", case.method);
        let asked = s.fx.gate.take();
        assert_eq!(asked.len(), 1, "{}: {asked:?}", case.method);
        assert_eq!(
            (asked[0].action.as_str(), &asked[0].details),
            (case.action, &case.details),
            "{}",
            case.method
        );
        assert_eq!(
            s.fx.control.transactions(),
            2 + i,
            "{}: one transaction",
            case.method
        );
        (case.expect)(&mut want);
        if case.changes_config {
            generation += 1;
        }
        let got = c.ok(&method("GetConfig"), json!({})).await;
        assert_eq!(
            got,
            json!({"config": want, "generation": generation}),
            "{}",
            case.method
        );
    }
    let sessions = c.ok(&method("ListSessions"), json!({"farm": "web"})).await;
    assert_eq!(
        sessions,
        json!({"sessions": [{"client": "198.51.100.9", "backend": "a", "static": true, "expiresMs": 0}]}),
        "the flush forgot the learnt session"
    );
    assert_eq!(serde_json::to_value(s.fx.saved()).expect("JSON"), want);
}

#[tokio::test]
async fn checkpoints_roll_back_confirm_and_refuse_overlaps() {
    let s = Served::start();
    let mut c = s.client().await;
    let created = c
        .ok(
            &method("CheckpointCreate"),
            json!({"farms": ["web"], "rollbackTimeout": 60}),
        )
        .await;
    assert_eq!(created, json!({"checkpoint": 1}));
    let list = c.ok(&method("ListCheckpoints"), json!({})).await;
    let one = &list["checkpoints"][0];
    let (at, deadline) = (
        one["created"].as_u64().unwrap(),
        one["deadline"].as_u64().unwrap(),
    );
    assert!(deadline == at + 60 || deadline == at + 61, "{list}");
    assert_eq!(
        list,
        json!({"checkpoints": [{"id": 1, "farms": ["web"], "created": at, "rollbackTimeout": 60,
                                "deadline": deadline}]})
    );
    c.ok(
        &method("UpdateFarm"),
        json!({"name": "web", "changes": {"scheduler": "hash"}}),
    )
    .await;
    let rolled = c
        .ok(&method("CheckpointRollback"), json!({"checkpoint": 1}))
        .await;
    assert_eq!(rolled, json!({"results": {"web": 0}}));
    assert_eq!(
        c.ok(&method("GetConfig"), json!({})).await,
        json!({"config": initial(), "generation": 3})
    );
    assert_eq!(s.fx.control.transactions(), 3, "start, update, rollback");
    let again = c.ok(&method("CheckpointCreate"), json!({})).await;
    assert_eq!(again, json!({"checkpoint": 2}));
    let (name, p) = c
        .err(&method("CheckpointCreate"), json!({"farms": ["web"]}))
        .await;
    assert_eq!(name, "org.nftlbd1.Exists", "{p}");
    let with_flag = c
        .ok(&method("CheckpointCreate"), json!({"farms": ["web"], "flags": 8}))
        .await;
    assert_eq!(with_flag, json!({"checkpoint": 3}));
    let adjusted = json!({"checkpoint": 2, "addTimeout": 0});
    assert_eq!(
        c.ok(&method("CheckpointAdjustRollbackTimeout"), adjusted).await,
        json!({})
    );
    for id in [2, 3] {
        let destroyed = c
            .ok(&method("CheckpointDestroy"), json!({"checkpoint": id}))
            .await;
        assert_eq!(destroyed, json!({}));
    }
    let (name, _) = c
        .err(&method("CheckpointDestroy"), json!({"checkpoint": 2}))
        .await;
    assert_eq!(name, "org.nftlbd1.NotFound");
    assert_eq!(
        c.ok(&method("ListCheckpoints"), json!({})).await,
        json!({"checkpoints": []})
    );
    let asked: Vec<String> = s.fx.gate.take().into_iter().map(|a| a.details.verb).collect();
    assert!(
        asked.iter().filter(|v| v.starts_with("checkpoint-")).count() == 9,
        "{asked:?}"
    );
}

#[tokio::test]
async fn an_engine_failure_answers_kernel_and_changes_nothing() {
    let s = Served::start();
    let mut c = s.client().await;
    let before = c.ok(&method("GetConfig"), json!({})).await;
    s.fx.control.fail_next(1);
    let params = json!({"farm": "web", "backend": "a", "state": "drain"});
    let (name, p) = c.err(&method("SetBackendState"), params.clone()).await;
    assert_eq!(name, "org.nftlbd1.Kernel", "{p}");
    let message = p["message"].as_str().expect("a message");
    assert!(message.contains("replace farm web"), "{message}");
    assert_eq!(c.ok(&method("GetConfig"), json!({})).await, before);
    assert_eq!(s.fx.control.generation(), 1, "the kernel kept what it had");
    assert_eq!(s.fx.control.transactions(), 2, "the start, and the refused one");
    assert_eq!(s.fx.saved(), crate::testkit::config());
    // The same change then goes through.
    assert_eq!(c.ok(&method("SetBackendState"), params).await, json!({}));
    assert_eq!(s.fx.control.generation(), 2);
}

#[tokio::test]
async fn monitor_sends_the_generation_then_each_change() {
    let s = Served::start();
    let mut watcher = s.client().await;
    let mut c = s.client().await;
    watcher
        .send(json!({"method": method("Monitor"), "parameters": {}, "more": true}))
        .await;
    let first = watcher.next().await.expect("the first reply");
    assert_eq!(
        first,
        json!({"parameters": {"generation": 1, "farms": [], "policies": []}, "continues": true})
    );

    let drain = json!({"farm": "web", "backend": "a", "state": "drain"});
    assert_eq!(c.ok(&method("SetBackendState"), drain).await, json!({}));
    let got = watcher.next().await.expect("a reply per change");
    let changes = json!({
        "farms": [{
            "name": "web", "what": "changed",
            "backends": [{
                "name": "a", "what": "changed",
                "keys": [{"key": "state", "old": "up", "new": "drain"}],
                "active": false,
                "state": {"old": "up", "new": "drain", "reason": "api"}
            }],
            // A backend of the active tier that takes no new flows brings in the next tier.
            "effectivePriority": 2
        }],
        "policies": []
    });
    assert_eq!(
        got,
        json!({"parameters": {"generation": 2, "farms": ["web"], "policies": [], "changes": changes},
               "continues": true})
    );

    let add = json!({"name": "bad", "add": ["10.8.0.3"]});
    assert_eq!(c.ok(&method("EditPolicyElements"), add).await, json!({}));
    let got = watcher.next().await.expect("a reply per change");
    let changes = json!({
        "farms": [],
        "policies": [{"name": "bad", "what": "changed",
                      "keys": [{"key": "elements", "old": ["10.8.0.2"], "new": ["10.8.0.2", "10.8.0.3"]}]}]
    });
    assert_eq!(
        got,
        json!({"parameters": {"generation": 3, "farms": [], "policies": ["bad"], "changes": changes},
               "continues": true})
    );

    // A refused change is no change: the next reply is the next commit's.
    s.fx.gate.refuse();
    let (name, _) = c.err(&method("DeletePolicy"), json!({"name": "bad"})).await;
    assert_eq!(name, "org.nftlbd1.NotAuthorized");
    s.fx.gate.allow();
    let up = json!({"farm": "web", "backend": "a", "state": "up"});
    assert_eq!(c.ok(&method("SetBackendState"), up).await, json!({}));
    let got = watcher.next().await.expect("a reply per change");
    assert_eq!(got["parameters"]["generation"], json!(4), "{got}");
    assert_eq!(got["parameters"]["farms"], json!(["web"]), "{got}");
}

#[tokio::test]
async fn removing_elements_is_all_or_nothing() {
    let s = Served::start();
    let mut c = s.client().await;
    let (name, p) = c
        .err(
            &method("EditPolicyElements"),
            json!({"name": "bad", "remove": ["10.8.0.2", "10.9.9.9"]}),
        )
        .await;
    assert_eq!(
        (name.as_str(), p),
        (
            "org.nftlbd1.InvalidArgument",
            json!({"errors": [{"field": "policies[bad].elements", "reason": "\"10.9.9.9\" is not an element"}]})
        )
    );
    assert_eq!(s.fx.control.transactions(), 1);
    let got = c.ok(&method("GetPolicy"), json!({"name": "bad"})).await;
    assert_eq!(got, json!({"policy": bad(), "origin": "runtime"}));

    // The same element twice is removed once.
    let twice = json!({"name": "bad", "remove": ["10.8.0.2", "10.8.0.2"]});
    assert_eq!(c.ok(&method("EditPolicyElements"), twice).await, json!({}));
    let got = c.ok(&method("GetPolicy"), json!({"name": "bad"})).await;
    assert_eq!(got["policy"]["elements"], json!([]));
    assert_eq!(s.fx.control.transactions(), 2);
}

#[tokio::test]
async fn update_backend_leaves_health_to_set_backend_health() {
    let s = Served::start();
    let mut c = s.client().await;
    let refused = |key: &str| {
        json!({"field": format!("farms[web].backends[a].{key}"),
               "reason": "is not changed by an update: use SetBackendHealth"})
    };
    let set = json!({"farm": "web", "backend": "a",
        "changes": {"weight": 2, "health": "failing", "health-reason": "down for the count"}});
    let (name, p) = c.err(&method("UpdateBackend"), set).await;
    assert_eq!(
        (name.as_str(), p),
        (
            "org.nftlbd1.InvalidArgument",
            json!({"errors": [refused("health"), refused("health-reason")]})
        )
    );
    let reset = json!({"farm": "web", "backend": "a", "changes": {"health-reason": null}});
    let (name, p) = c.err(&method("UpdateBackend"), reset).await;
    assert_eq!(
        (name.as_str(), p),
        (
            "org.nftlbd1.InvalidArgument",
            json!({"errors": [refused("health-reason")]})
        )
    );
    assert_eq!(s.fx.control.transactions(), 1);

    // A whole backend carries them as saved.
    let carried =
        json!({"name": "c", "ip-addr": "10.0.0.3", "health": "failing", "health-reason": "imported"});
    let add = json!({"farm": "web", "backend": carried});
    assert_eq!(c.ok(&method("AddBackend"), add).await, json!({}));
    let got = c.ok(&method("GetFarm"), json!({"name": "web"})).await;
    let added = &got["farm"]["backends"][2];
    assert_eq!(
        (&added["health"], &added["health-reason"]),
        (&json!("failing"), &json!("imported"))
    );
}

#[tokio::test]
async fn garbage_is_refused_and_the_connection_closed() {
    let s = Served::start();
    let mut c = s.client().await;
    c.send_raw(b"{\"method\": 17}\0").await;
    let got = c.next().await.expect("an answer before hanging up");
    assert_eq!(
        got["error"],
        json!("org.varlink.service.InvalidParameter"),
        "{got}"
    );
    let parameter = got["parameters"]["parameter"].as_str().expect("a reason");
    assert!(parameter.starts_with("not a varlink call: "), "{parameter}");
    assert_eq!(c.next().await, None, "the server hung up");
    // Other connections are served as before.
    let mut other = s.client().await;
    let got = other.ok(&method("ListFarms"), json!({})).await;
    assert_eq!(got, json!({"farms": ["web"]}));
}

/// The frames are byte for byte what a JSON object of the same keys gives (sorted keys), with the
/// parameters written once and not copied first.
#[test]
fn frames_are_the_json_objects_of_their_keys() {
    let p = json!({"farm": {"name": "web", "backends": [{"name": "a"}]}});
    let framed = |r: &super::Reply, continues| {
        let mut bytes = super::encode(r, continues);
        assert_eq!(bytes.pop(), Some(0), "a frame ends with NUL");
        String::from_utf8(bytes).unwrap()
    };
    assert_eq!(
        framed(&super::Reply::Ok(p.clone()), false),
        r#"{"parameters":{"farm":{"backends":[{"name":"a"}],"name":"web"}}}"#
    );
    assert_eq!(
        framed(&super::Reply::Ok(p.clone()), true),
        r#"{"continues":true,"parameters":{"farm":{"backends":[{"name":"a"}],"name":"web"}}}"#
    );
    assert_eq!(
        framed(
            &super::Reply::Err("org.nftlbd1.NotFound".into(), json!({"what": "x"})),
            false
        ),
        r#"{"error":"org.nftlbd1.NotFound","parameters":{"what":"x"}}"#
    );
}
