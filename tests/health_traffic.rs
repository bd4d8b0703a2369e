//! The daemon's own health checks against real traffic, in the testbed (tools/testbed.sh): a
//! backend whose server stops is found failing and gets no new connections, comes back when it
//! serves again, stays drained while an operator drains it whatever its health, and an http
//! check turns a backend answering 503 failing, as an https check does over TLS; an agent's drain
//! and percentage move new connections, and a recovering backend ramps up over slow-start; below
//! a farm's quorum its sorry backend takes every new connection until the failed one is back.
//! Health is read back over varlink (GetFarm).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::bus::*;
use common::clients::varlink;
use common::topo::{Topo, backend_ip, count, in_ns, vip4, who};
use serde_json::{Value, json};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{ServerConfig, ServerConnection, StreamOwned};

/// Where the switchable servers listen in each backend's namespace: greetings for traffic and
/// the tcp check, HTTP for the http check, HTTP over TLS for the https check.
const TRAFFIC: u16 = 9000;
const HTTP: u16 = 9001;
const HTTPS: u16 = 9002;

/// The longest a verdict may take to show (a few intervals of 0.2 s, and the commit).
const VERDICT: Duration = Duration::from_secs(5);

const SERVE: u8 = 0;
/// Both listeners closed: connections are refused.
const STOPPED: u8 = 1;
/// Serving, but the HTTP server answers 503.
const UNAVAILABLE: u8 = 2;
/// Serving, the HTTP server answers 200 with a maintenance page.
const MAINTENANCE: u8 = 3;

/// A backend's servers, switched by the test.
#[derive(Clone)]
struct Switch(Arc<AtomicU8>);

impl Switch {
    fn set(&self, mode: u8) {
        self.0.store(mode, Ordering::SeqCst);
    }
}

/// Starts the greeting and HTTP servers of backend `name` in namespace `ns`.
/// be0 and be1 of a two-backend topology as a farm's backends, on `port`.
fn two_backends(port: u16) -> Vec<Value> {
    (0..2)
        .map(|i| json!({"name": format!("be{i}"), "ip-addr": backend_ip(i, false), "port": port}))
        .collect()
}

/// Backends be0 and be1 of a two-backend topology, each serving until switched.
fn both_switchable(t: &Topo) -> [Switch; 2] {
    [
        switchable(&t.backends[0], "be0"),
        switchable(&t.backends[1], "be1"),
    ]
}

fn switchable(ns: &str, name: &str) -> Switch {
    let mode = Switch(Arc::new(AtomicU8::new(SERVE)));
    for port in [TRAFFIC, HTTP, HTTPS] {
        let (m, name) = (mode.clone(), name.to_string());
        // The loop never ends: the thread goes with the test process.
        drop(in_ns(ns, move || listen(port, &m, &name)));
    }
    mode
}

/// Accepts while the switch says serve; closed (refusing) while it says stopped.
fn listen(port: u16, mode: &Switch, name: &str) {
    let mut listener: Option<TcpListener> = None;
    loop {
        let now = mode.0.load(Ordering::SeqCst);
        if now == STOPPED {
            listener = None;
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let l = listener.get_or_insert_with(|| {
            let l = TcpListener::bind(("0.0.0.0", port)).expect("bind the switchable server");
            l.set_nonblocking(true).expect("a nonblocking listener");
            l
        });
        match l.accept() {
            Ok((s, peer)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                match port {
                    TRAFFIC => {
                        let _ = writeln!(&s, "{name}@{port} {}", peer.ip());
                    }
                    HTTPS => answer_https(s, now == UNAVAILABLE),
                    _ => answer_http(s, now),
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn answer_http<S: Read + Write>(mut s: S, mode: u8) {
    let mut r = BufReader::new(&mut s);
    let mut line = String::new();
    // The request's head, up to the empty line.
    while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n" {
        line.clear();
    }
    drop(r);
    let (status, body) = match mode {
        UNAVAILABLE => ("503 Service Unavailable", ""),
        MAINTENANCE => ("200 OK", "down for maintenance\n"),
        _ => ("200 OK", "all good\n"),
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}

/// The backends' certificate, for web.example, and the CA that signed it.
struct Pki {
    ca_pem: String,
    server: Arc<ServerConfig>,
}

/// Made once per test process, so every backend shows the same certificate.
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["web.example".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        }
    })
}

/// [`answer_http`] over TLS. A client refusing the certificate ends the exchange in the
/// handshake: nothing is answered.
fn answer_https(s: TcpStream, unavailable: bool) {
    let Ok(conn) = ServerConnection::new(pki().server.clone()) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, s);
    answer_http(&mut tls, if unavailable { UNAVAILABLE } else { SERVE });
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

fn ok(method: &str, params: Value) -> Value {
    let out = varlink(None, method, &params.to_string());
    assert!(out.ok(), "{method} {params}: {}", out.text);
    serde_json::from_str(out.text.trim()).unwrap_or_else(|e| panic!("{method}: {e}: {}", out.text))
}

/// (health, health-reason, state) of backend `b` of farm web.
fn health(b: &str) -> (String, String, String) {
    let farm = ok("GetFarm", json!({"name": "web"}));
    let be = farm["farm"]["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|x| x["name"] == b))
        .cloned()
        .unwrap_or_else(|| panic!("no backend {b} in {farm}"));
    let word = |k: &str, default: &str| be[k].as_str().unwrap_or(default).to_string();
    (
        word("health", "unknown"),
        word("health-reason", ""),
        word("state", "up"),
    )
}

/// Waits until backend `b` has `health` for `reason`; its state then.
fn wait_health(b: &str, health_now: &str, reason: &str) -> String {
    let started = Instant::now();
    loop {
        let (h, r, state) = health(b);
        if (h.as_str(), r.as_str()) == (health_now, reason) {
            return state;
        }
        assert!(
            started.elapsed() < VERDICT,
            "{b} is not {health_now} ({reason}) within {VERDICT:?}: {h} ({r}), {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the answers alternate between the two backends, one each in turn.
fn alternates(got: &[String]) -> bool {
    got.windows(2).all(|w| who(&w[0]) != who(&w[1]))
}

#[test]
fn health_checks_take_failing_backends_out_of_traffic_and_back() {
    if !in_testbed("health_checks_take_failing_backends_out_of_traffic_and_back") {
        return;
    }
    let t = Topo::new(2);
    let switches = both_switchable(&t);
    let dir = tempdir();
    let _daemon = Daemon::start(&t, &dir, false);
    let vip = vip4(12);
    let backends = two_backends(TRAFFIC);
    ok(
        "CreateFarm",
        json!({"farm": {"name": "web", "mode": "snat", "scheduler": "rr",
            "virtual-addresses": [vip], "virtual-ports": "80",
            "health-check": {"type": "tcp", "interval": 0.2, "timeout": 0.1, "fall": 2, "rise": 2},
            "backends": backends}}),
    );
    wait_health("be0", "healthy", "tcp connected");
    wait_health("be1", "healthy", "tcp connected");
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (5, 5), "{got:?}");
    assert!(alternates(&got), "{got:?}");

    // be1's server stops: failing for the refusal, and out of the traffic; on the bus, be1's
    // StateChanged says so with the check's reason.
    let monitor = Monitor::start(&dir);
    switches[1].set(STOPPED);
    let state = wait_health("be1", "failing", "connection refused, 2 failures");
    assert_eq!(state, "up");
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!(count(&got, "be0"), 10, "{got:?}");
    let turned = |m: &str| {
        m.contains("Member=StateChanged")
            && m.contains("/org/nftlbd1/farm/web/backend/be1")
            && [
                "\"up\"",
                "\"down\"",
                "\"health-check: connection refused, 2 failures\"",
            ]
            .iter()
            .all(|w| m.contains(w))
    };
    let seen = monitor.wait_signal(turned);
    assert!(signals(&seen).iter().any(|m| turned(m)), "{seen}");

    // Back: healthy after two successes, and the split is exact again.
    switches[1].set(SERVE);
    wait_health("be1", "healthy", "tcp connected, 2 successes");
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (5, 5), "{got:?}");
    assert!(alternates(&got), "{got:?}");

    // Drained by the operator: its health flaps, it stays drained and gets no new flows.
    ok(
        "SetBackendState",
        json!({"farm": "web", "backend": "be1", "state": "drain"}),
    );
    assert_eq!(count(&t.tcp_n(vip, 80, 10), "be0"), 10);
    switches[1].set(STOPPED);
    let state = wait_health("be1", "failing", "connection refused, 2 failures");
    assert_eq!(state, "drain");
    assert_eq!(count(&t.tcp_n(vip, 80, 10), "be0"), 10);
    switches[1].set(SERVE);
    let state = wait_health("be1", "healthy", "tcp connected, 2 successes");
    assert_eq!(state, "drain");
    assert_eq!(count(&t.tcp_n(vip, 80, 10), "be0"), 10);
    ok(
        "SetBackendState",
        json!({"farm": "web", "backend": "be1", "state": "up"}),
    );
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (5, 5), "{got:?}");

    // An http check: be0 answering 503 turns failing, and be1 takes every connection.
    ok(
        "UpdateFarm",
        json!({"name": "web", "changes": {"health-check": {"type": "http", "port": HTTP, "path": "/health",
            "interval": 0.2, "timeout": 0.1, "fall": 2, "rise": 2}}}),
    );
    wait_health("be0", "healthy", "http 200");
    switches[0].set(UNAVAILABLE);
    wait_health("be0", "failing", "http 503, 2 failures");
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!(count(&got, "be1"), 10, "{got:?}");
}

/// (quorumMet, effectivePriority) of farm web, from GetFarm's status.
fn quorum_status() -> (Value, Value) {
    let status = &ok("GetFarm", json!({"name": "web"}))["status"];
    (status["quorumMet"].clone(), status["effectivePriority"].clone())
}

#[test]
fn below_the_quorum_the_sorry_backend_takes_every_connection_and_gives_them_back() {
    if !in_testbed("below_the_quorum_the_sorry_backend_takes_every_connection_and_gives_them_back") {
        return;
    }
    let t = Topo::new(3);
    let switches = both_switchable(&t);
    let dir = tempdir();
    let _daemon = Daemon::start(&t, &dir, false);
    let vip = vip4(16);
    let mut backends = two_backends(TRAFFIC);
    // be2 answers on the topology's own port 80, unchecked: the sorry server.
    backends.push(
        json!({"name": "be2", "ip-addr": backend_ip(2, false), "port": 80, "sorry": true,
        "health-check": {"enabled": false}}),
    );
    ok(
        "CreateFarm",
        json!({"farm": {"name": "web", "mode": "snat", "scheduler": "rr",
            "virtual-addresses": [vip], "virtual-ports": "80", "quorum": 2,
            "health-check": {"type": "tcp", "interval": 0.2, "timeout": 0.1, "fall": 2, "rise": 2},
            "backends": backends}}),
    );
    wait_health("be0", "healthy", "tcp connected");
    wait_health("be1", "healthy", "tcp connected");
    assert_eq!(quorum_status(), (json!(true), json!(1)));
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!(
        (count(&got, "be0"), count(&got, "be1"), count(&got, "be2")),
        (5, 5, 0),
        "{got:?}"
    );

    // be1's server stops: one regular backend left, below the quorum of two. The sorry backend
    // takes every new connection, be0 (still healthy) none; QuorumMet flips on the bus.
    let monitor = Monitor::start(&dir);
    switches[1].set(STOPPED);
    wait_health("be1", "failing", "connection refused, 2 failures");
    assert_eq!(quorum_status(), (json!(false), json!(0)));
    let got = t.tcp_n(vip, 80, 12);
    assert_eq!(count(&got, "be2"), 12, "{got:?}");
    let flipped = |m: &str| {
        m.contains("Member=PropertiesChanged")
            && m.contains("/org/nftlbd1/farm/web")
            && m.contains("\"QuorumMet\"")
    };
    let seen = monitor.wait_signal(flipped);
    assert!(signals(&seen).iter().any(|m| flipped(m)), "{seen}");

    // Back after two successes: the regular backends take the traffic back, split exactly.
    switches[1].set(SERVE);
    wait_health("be1", "healthy", "tcp connected, 2 successes");
    assert_eq!(quorum_status(), (json!(true), json!(1)));
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!(
        (count(&got, "be0"), count(&got, "be1"), count(&got, "be2")),
        (5, 5, 0),
        "{got:?}"
    );
    assert!(alternates(&got), "{got:?}");
}

#[test]
fn an_https_check_turns_a_backend_failing_and_healthy_again() {
    if !in_testbed("an_https_check_turns_a_backend_failing_and_healthy_again") {
        return;
    }
    let t = Topo::new(2);
    let switches = both_switchable(&t);
    let dir = tempdir();
    // The daemon trusts the test's CA as the system's store (SSL_CERT_FILE is how an
    // operator points it at another bundle, too).
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki().ca_pem).unwrap();
    let _daemon = Daemon::start_with(&t, &dir, false, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let vip = vip4(16);
    let https = |host: &str| {
        json!({"type": "https", "port": HTTPS, "path": "/health", "host": host,
            "interval": 0.4, "timeout": 0.3, "fall": 2, "rise": 2})
    };
    ok(
        "CreateFarm",
        json!({"farm": {"name": "web", "mode": "snat", "scheduler": "rr",
            "virtual-addresses": [vip], "virtual-ports": "80",
            "health-check": https("web.example"), "backends": two_backends(TRAFFIC)}}),
    );
    wait_health("be0", "healthy", "http 200");
    wait_health("be1", "healthy", "http 200");
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (5, 5), "{got:?}");

    // be0 answers 503 over TLS: failing, and be1 takes every connection; then back.
    switches[0].set(UNAVAILABLE);
    wait_health("be0", "failing", "http 503, 2 failures");
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!(count(&got, "be1"), 10, "{got:?}");
    switches[0].set(SERVE);
    wait_health("be0", "healthy", "http 200, 2 successes");
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (5, 5), "{got:?}");
    assert!(alternates(&got), "{got:?}");

    // A certificate that does not name the host fails the handshake, and says so.
    ok(
        "UpdateFarm",
        json!({"name": "web", "changes": {"health-check": https("api.example")}}),
    );
    let wrong = "tls handshake: certificate not valid for name api.example (it names web.example)";
    wait_health("be0", "failing", wrong);
    wait_health("be1", "failing", wrong);
}

#[test]
fn the_nagios_example_tells_the_daemon_a_critical_plugin_s_verdict() {
    if !in_testbed("the_nagios_example_tells_the_daemon_a_critical_plugin_s_verdict") {
        return;
    }
    let dir = tempdir();
    let _daemon = Daemon::start_here(&dir);
    ok(
        "CreateFarm",
        json!({"farm": {"name": "web", "virtual-addresses": [vip4(13)], "virtual-ports": "80",
            "backends": [{"name": "be0", "ip-addr": backend_ip(0, false)},
                         {"name": "be1", "ip-addr": backend_ip(1, false)}]}}),
    );
    // A plugin that finds be0 critical and be1 fine, and says what it was asked.
    let plugin = dir.join("check_fake");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\nif [ \"$1\" = {} ]; then echo \"CRITICAL - $1 port $2\"; exit 2; fi\necho \"OK - $1\"\n",
            backend_ip(0, false)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nagios-health.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .args([
            "--once".to_string(),
            "web".into(),
            format!("be0={}:8080", backend_ip(0, false)),
            format!("be1={}", backend_ip(1, false)),
            "--".into(),
        ])
        .arg(&plugin)
        .args(["HOST", "PORT"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        health("be0"),
        (
            "failing".to_string(),
            format!("CRITICAL - {} port 8080", backend_ip(0, false)),
            "up".to_string()
        )
    );
    assert_eq!(
        health("be1"),
        (
            "healthy".to_string(),
            format!("OK - {}", backend_ip(1, false)),
            "up".to_string()
        )
    );
}

#[test]
fn a_restart_keeps_the_saved_verdicts_until_the_checks_say_otherwise() {
    if !in_testbed("a_restart_keeps_the_saved_verdicts_until_the_checks_say_otherwise") {
        return;
    }
    let t = Topo::new(2);
    let switches = both_switchable(&t);
    switches[1].set(STOPPED);
    let dir = tempdir();
    let daemon = Daemon::start(&t, &dir, false);
    let vip = vip4(13);
    let backends = two_backends(TRAFFIC);
    ok(
        "CreateFarm",
        json!({"farm": {"name": "web", "mode": "snat", "scheduler": "rr",
            "virtual-addresses": [vip], "virtual-ports": "80", "health-start": "pessimistic",
            "health-check": {"type": "tcp", "interval": 0.2, "timeout": 0.1, "fall": 2, "rise": 2},
            "backends": backends}}),
    );
    wait_health("be0", "healthy", "tcp connected");
    wait_health("be1", "failing", "connection refused");
    assert_eq!(
        ok("GetFarm", json!({"name": "web"}))["status"]["healthReady"],
        true
    );
    daemon.stop();

    // The saved verdicts hold from the first moment: be1 never turns healthy nor unknown on
    // the way, the farm is ready at once, and be0 takes every connection throughout.
    let _daemon = Daemon::start(&t, &dir, false);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let farm = ok("GetFarm", json!({"name": "web"}));
        assert_eq!(farm["status"]["healthReady"], true, "{farm}");
        assert_eq!(health("be1").0, "failing");
        assert_eq!(health("be0").0, "healthy");
        let got = t.tcp_n(vip, 80, 2);
        assert_eq!(count(&got, "be0"), 2, "{got:?}");
    }
    // And the checks still decide: be1 serves again, and comes back.
    switches[1].set(SERVE);
    wait_health("be1", "healthy", "tcp connected, 2 successes");
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (5, 5), "{got:?}");
}

/// (lastCheck, lastCheckDuration) of backend `b` of farm web in GetFarm's status.
fn last_check(b: &str) -> (u64, u64) {
    let farm = ok("GetFarm", json!({"name": "web"}));
    let st = farm["status"]["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|x| x["name"] == b))
        .cloned()
        .unwrap_or_else(|| panic!("no status of {b} in {farm}"));
    let n = |k: &str| st[k].as_u64().unwrap_or_else(|| panic!("{k} of {b}: {st}"));
    (n("lastCheck"), n("lastCheckDuration"))
}

/// A backend property of type `t` over D-Bus, as busctl prints it ("t 123").
fn dbus_u64(b: &str, name: &str) -> u64 {
    let path = format!("/org/nftlbd1/farm/web/backend/{b}");
    let (good, out) = busctl(None, &["get-property", DEST, &path, "org.nftlbd1.Backend", name]);
    assert!(good, "{name} of {b}: {out}");
    let v = out
        .trim()
        .strip_prefix("t ")
        .unwrap_or_else(|| panic!("{name}: {out}"));
    v.parse().unwrap_or_else(|e| panic!("{name}: {e}: {out}"))
}

fn epoch_us() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(d.as_micros()).unwrap()
}

#[test]
fn the_last_check_and_its_duration_show_on_varlink_and_dbus_and_nowhere_in_the_config() {
    if !in_testbed("the_last_check_and_its_duration_show_on_varlink_and_dbus_and_nowhere_in_the_config") {
        return;
    }
    let t = Topo::new(2);
    let _switch = switchable(&t.backends[0], "be0");
    let dir = tempdir();
    let _daemon = Daemon::start(&t, &dir, false);
    let before = epoch_us();
    ok(
        "CreateFarm",
        json!({"farm": {"name": "web", "virtual-addresses": [vip4(14)], "virtual-ports": "80",
            "health-check": {"type": "tcp", "interval": 0.2, "timeout": 0.1, "fall": 2, "rise": 2},
            "backends": [{"name": "be0", "ip-addr": backend_ip(0, false), "port": TRAFFIC},
                         {"name": "be1", "ip-addr": backend_ip(1, false), "port": TRAFFIC,
                          "health-check": {"enabled": false}}]}}),
    );
    wait_health("be0", "healthy", "tcp connected");
    let (at, took) = last_check("be0");
    assert!(
        at >= before && at <= epoch_us(),
        "lastCheck {at} not since {before}"
    );
    assert!(
        took > 0 && took < 100_000,
        "a connect on the testbed's veth took {took} µs"
    );
    // The unchecked backend: never checked, zeros.
    assert_eq!(last_check("be1"), (0, 0));
    assert_eq!(
        (dbus_u64("be1", "LastCheck"), dbus_u64("be1", "LastCheckDuration")),
        (0, 0)
    );

    // Checked every 0.2 s: a later read sees a later check, on both fronts.
    std::thread::sleep(Duration::from_millis(600));
    let (later, _) = last_check("be0");
    assert!(later > at, "no check since {at}: {later}");
    let on_bus = dbus_u64("be0", "LastCheck");
    assert!(
        on_bus >= later && on_bus <= epoch_us(),
        "D-Bus LastCheck {on_bus}, varlink {later}"
    );
    let took = dbus_u64("be0", "LastCheckDuration");
    assert!(took > 0 && took < 100_000, "LastCheckDuration {took}");

    // Runtime facts: not in the farm's JSON, not in the saved configuration.
    let farm = ok("GetFarm", json!({"name": "web"}));
    let text = farm["farm"].to_string() + &export();
    let mentions = |t: &str| {
        ["lastcheck", "last-check", "last_check"]
            .iter()
            .any(|k| t.to_lowercase().contains(k))
    };
    assert!(!mentions(&text), "{text}");
    let saved: String = std::fs::read_dir(&*dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect();
    assert!(!saved.is_empty() && !mentions(&saved), "{saved}");
}

/// Where the holding servers listen: a greeting, then every line echoed, for as long as the
/// client keeps the connection.
const HOLD: u16 = 9004;

fn hold(ns: &str, name: &str) {
    let name = name.to_string();
    drop(in_ns(ns, move || {
        let l = TcpListener::bind(("0.0.0.0", HOLD)).expect("bind the holding server");
        for s in l.incoming().flatten() {
            let name = name.clone();
            std::thread::spawn(move || {
                let _ = writeln!(&s, "{name}@{HOLD}");
                let mut lines = BufReader::new(&s);
                let mut line = String::new();
                while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
                    let _ = (&s).write_all(line.as_bytes());
                    line.clear();
                }
            });
        }
    }));
}

/// A long-lived connection through the farm: the backend's name (greeting) and the stream.
fn connect(t: &Topo, vip: std::net::IpAddr) -> (String, TcpStream) {
    in_ns(&t.client, move || {
        let s = TcpStream::connect((vip, 80)).expect("connect through the farm");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut greeting = String::new();
        BufReader::new(&s).read_line(&mut greeting).unwrap();
        (greeting.trim().to_string(), s)
    })
    .join()
    .unwrap()
}

/// Whether the connection still carries a line both ways.
fn still_carries(s: &TcpStream) -> bool {
    if (&*s).write_all(b"ping\n").is_err() {
        return false;
    }
    let mut line = String::new();
    matches!(BufReader::new(s).read_line(&mut line), Ok(n) if n > 0) && line == "ping\n"
}

fn established_now(b: &str) -> u64 {
    let farm = ok("GetFarm", json!({"name": "web"}));
    let st = farm["status"]["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|x| x["name"] == b))
        .cloned()
        .unwrap_or_else(|| panic!("no status of {b} in {farm}"));
    let n = st["connections"].as_u64().unwrap_or_else(|| panic!("{st}"));
    // D-Bus counts the same in one call for the whole farm (what `nftlbctl show` prints).
    let (good, out) = busctl(
        None,
        &[
            "--json=short",
            "call",
            DEST,
            "/org/nftlbd1/farm/web",
            "org.nftlbd1.Farm",
            "GetBackendConnections",
        ],
    );
    assert!(good, "GetBackendConnections: {out}");
    let reply: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let on_bus = reply["data"][0]
        .as_array()
        .and_then(|bs| bs.iter().find(|x| x[0] == b))
        .and_then(|x| x[1].as_u64())
        .unwrap_or_else(|| panic!("no count of {b} in {out}"));
    assert_eq!(on_bus, n, "{b}: D-Bus and varlink differ");
    n
}

#[test]
fn a_failing_backend_s_connections_are_cut_with_cut_and_kept_with_stop_new() {
    if !in_testbed("a_failing_backend_s_connections_are_cut_with_cut_and_kept_with_stop_new") {
        return;
    }
    let t = Topo::new(2);
    let switches = both_switchable(&t);
    hold(&t.backends[0], "be0");
    hold(&t.backends[1], "be1");
    let dir = tempdir();
    let _daemon = Daemon::start(&t, &dir, false);
    let vip = vip4(15);
    for on_failure in ["stop-new", "cut"] {
        let backends: Vec<Value> = (0..2)
            .map(|i| json!({"name": format!("be{i}"), "ip-addr": backend_ip(i, false), "port": HOLD}))
            .collect();
        ok(
            "CreateFarm",
            json!({"farm": {"name": "web", "mode": "snat", "scheduler": "rr",
                "virtual-addresses": [vip], "virtual-ports": "80",
                "health-check": {"type": "tcp", "port": TRAFFIC, "interval": 0.2, "timeout": 0.1,
                    "fall": 2, "rise": 2, "on-failure": on_failure},
                "backends": backends}}),
        );
        wait_health("be0", "healthy", "tcp connected");
        wait_health("be1", "healthy", "tcp connected");
        let (greeting, stream) = connect(&t, vip);
        let name = greeting.split('@').next().unwrap().to_string();
        let i: usize = name.trim_start_matches("be").parse().unwrap();
        assert!(still_carries(&stream), "{on_failure}");
        assert_eq!(established_now(&name), 1, "{on_failure}");
        assert_eq!(established_now(&format!("be{}", 1 - i)), 0, "{on_failure}");

        switches[i].set(STOPPED);
        wait_health(&name, "failing", "connection refused, 2 failures");
        // The verdict is committed before the connections are cut: give the cut its turn.
        std::thread::sleep(Duration::from_millis(300));
        if on_failure == "cut" {
            assert!(!still_carries(&stream), "the connection to {name} survived a cut");
            assert_eq!(established_now(&name), 0);
        } else {
            assert!(still_carries(&stream), "stop-new closed the connection to {name}");
            assert_eq!(established_now(&name), 1);
        }
        drop(stream);
        switches[i].set(SERVE);
        ok("DeleteFarm", json!({"name": "web"}));
    }
}

/// Where the agents listen: one line (what the test last told it to say) per connection.
const AGENT: u16 = 9003;

#[derive(Clone)]
struct Agent(Arc<std::sync::Mutex<String>>);

impl Agent {
    fn say(&self, line: &str) {
        *self.0.lock().unwrap() = line.to_string();
    }
}

/// An agent in namespace `ns`, saying `up` until told otherwise.
fn agent(ns: &str) -> Agent {
    let said = Agent(Arc::new(std::sync::Mutex::new("up".into())));
    let s = said.clone();
    // The loop never ends: the thread goes with the test process.
    drop(in_ns(ns, move || {
        let l = TcpListener::bind(("0.0.0.0", AGENT)).expect("bind the agent");
        for c in l.incoming().flatten() {
            let line = s.0.lock().map(|l| l.clone()).unwrap_or_default();
            let _ = writeln!(&c, "{line}");
        }
    }));
    said
}

/// Backend `b` of farm web: its canonical JSON and its status, from one GetFarm.
fn backend_now(b: &str) -> (Value, Value) {
    let farm = ok("GetFarm", json!({"name": "web"}));
    let find = |list: &Value| {
        list.as_array()
            .and_then(|bs| bs.iter().find(|x| x["name"] == b))
            .cloned()
            .unwrap_or_else(|| panic!("no backend {b} in {farm}"))
    };
    (find(&farm["farm"]["backends"]), find(&farm["status"]["backends"]))
}

/// The weight the scheduler uses for `b`, from varlink's status.
fn effective_weight(b: &str) -> u64 {
    let (_, st) = backend_now(b);
    st["effectiveWeight"].as_u64().unwrap_or_else(|| panic!("{st}"))
}

/// A backend property over D-Bus as busctl prints it ("u 2", "b true").
fn dbus_prop(b: &str, name: &str) -> String {
    let path = format!("/org/nftlbd1/farm/web/backend/{b}");
    let (good, out) = busctl(None, &["get-property", DEST, &path, "org.nftlbd1.Backend", name]);
    assert!(good, "{name} of {b}: {out}");
    out.trim().to_string()
}

#[test]
fn an_agent_s_drain_and_percentage_move_new_connections_and_an_operator_s_state_wins() {
    if !in_testbed("an_agent_s_drain_and_percentage_move_new_connections_and_an_operator_s_state_wins") {
        return;
    }
    let t = Topo::new(2);
    let _switches = both_switchable(&t);
    let agents = [agent(&t.backends[0]), agent(&t.backends[1])];
    let dir = tempdir();
    let _daemon = Daemon::start(&t, &dir, false);
    let vip = vip4(16);
    let backends: Vec<Value> = (0..2)
        .map(|i| json!({"name": format!("be{i}"), "ip-addr": backend_ip(i, false), "port": TRAFFIC, "weight": 4}))
        .collect();
    // rr with weights: a strict rotation over the slots (each backend's weight of them), so
    // any run of connections as long as a turn of the slots splits exactly.
    ok(
        "CreateFarm",
        json!({"farm": {"name": "web", "mode": "snat", "scheduler": "rr",
            "virtual-addresses": [vip], "virtual-ports": "80",
            "health-check": {"type": "agent", "agent-port": AGENT, "interval": 0.2, "timeout": 0.1,
                "fall": 2, "rise": 2},
            "backends": backends}}),
    );
    wait_health("be0", "healthy", "agent up");
    wait_health("be1", "healthy", "agent up");
    let got = t.tcp_n(vip, 80, 16);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (8, 8), "{got:?}");

    // Drain: every new connection goes to be0; be1's state stays the operator's.
    agents[1].say("drain");
    assert_eq!(wait_health("be1", "healthy", "agent drain"), "up");
    let (b, st) = backend_now("be1");
    assert_eq!(
        (&b["health-drain"], &st["active"]),
        (&json!(true), &json!(false)),
        "{b} {st}"
    );
    let got = t.tcp_n(vip, 80, 12);
    assert_eq!(count(&got, "be0"), 12, "{got:?}");

    // 50 %: be1's 4 is 2 to be0's 4, exactly a third of the connections.
    agents[1].say("up 50%");
    wait_health("be1", "healthy", "agent up 50%");
    let (b, st) = backend_now("be1");
    assert_eq!(
        (
            b.get("health-drain"),
            &b["health-weight"],
            &b["weight"],
            &st["effectiveWeight"]
        ),
        (None, &json!(50), &json!(4), &json!(2)),
        "{b} {st}"
    );
    assert_eq!(dbus_prop("be1", "EffectiveWeight"), "u 2");
    assert_eq!(dbus_prop("be1", "Weight"), "u 4");
    let got = t.tcp_n(vip, 80, 12);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (8, 4), "{got:?}");
    // The saved configuration keeps the operator's weight.
    let saved = ok("GetConfig", json!({}));
    assert_eq!(saved["config"]["farms"][0]["backends"][1]["weight"], 4, "{saved}");

    // 0 %: no new connections.
    agents[1].say("up 0%");
    wait_health("be1", "healthy", "agent up 0%");
    assert_eq!(effective_weight("be1"), 0);
    assert_eq!(count(&t.tcp_n(vip, 80, 12), "be0"), 12);

    // The operator's drain wins over an agent saying up.
    ok(
        "SetBackendState",
        json!({"farm": "web", "backend": "be1", "state": "drain"}),
    );
    agents[1].say("up");
    assert_eq!(wait_health("be1", "healthy", "agent up"), "drain");
    assert_eq!(count(&t.tcp_n(vip, 80, 12), "be0"), 12);
    ok(
        "SetBackendState",
        json!({"farm": "web", "backend": "be1", "state": "up"}),
    );
    let got = t.tcp_n(vip, 80, 16);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (8, 8), "{got:?}");

    // Down is failing.
    agents[0].say("down");
    wait_health("be0", "failing", "agent down, 2 failures");
    assert_eq!(count(&t.tcp_n(vip, 80, 12), "be1"), 12);
}

#[test]
fn a_recovering_backend_ramps_up_over_slow_start() {
    if !in_testbed("a_recovering_backend_ramps_up_over_slow_start") {
        return;
    }
    let t = Topo::new(2);
    let switches = both_switchable(&t);
    let dir = tempdir();
    let _daemon = Daemon::start(&t, &dir, false);
    let vip = vip4(17);
    let backends: Vec<Value> = (0..2)
        .map(|i| json!({"name": format!("be{i}"), "ip-addr": backend_ip(i, false), "port": TRAFFIC, "weight": 10}))
        .collect();
    // slow-start 4 s: steps of 1 s, 20 % at recovery, then 40, 60, 80, 100 %.
    ok(
        "CreateFarm",
        json!({"farm": {"name": "web", "mode": "snat", "scheduler": "rr",
            "virtual-addresses": [vip], "virtual-ports": "80",
            "health-check": {"type": "tcp", "interval": 0.2, "timeout": 0.1, "fall": 2, "rise": 2,
                "slow-start": 4},
            "backends": backends}}),
    );
    // Unknown to healthy is no recovery: the whole weight at once.
    wait_health("be0", "healthy", "tcp connected");
    wait_health("be1", "healthy", "tcp connected");
    assert_eq!(backend_now("be1").0.get("health-ramp"), None);
    let got = t.tcp_n(vip, 80, 20);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (10, 10), "{got:?}");

    switches[1].set(STOPPED);
    wait_health("be1", "failing", "connection refused, 2 failures");
    switches[1].set(SERVE);
    wait_health("be1", "healthy", "tcp connected, 2 successes");
    let recovered = Instant::now();
    // Right after recovery: below its full share, and exact for the weight it has. A round
    // of 10 + w connections is one turn of the slots (be1 has w of them).
    let mut measured = false;
    for _ in 0..3 {
        let w = effective_weight("be1");
        let n = 10 + usize::try_from(w).unwrap();
        let got = t.tcp_n(vip, 80, n);
        if effective_weight("be1") != w {
            continue; // a step came in between: measure again
        }
        assert!(w < 10, "be1 at its whole weight {w} right after recovery");
        assert_eq!(
            count(&got, "be1"),
            usize::try_from(w).unwrap(),
            "weight {w}: {got:?}"
        );
        measured = true;
        break;
    }
    assert!(measured, "the ramp stepped during every measure");
    // Each step is one commit: the weights seen go up through 2, 4, 6, 8 to 10.
    let mut seen: Vec<u64> = Vec::new();
    loop {
        let w = effective_weight("be1");
        if seen.last() != Some(&w) {
            seen.push(w);
        }
        if w == 10 {
            break;
        }
        assert!(
            recovered.elapsed() < Duration::from_secs(8),
            "no whole weight 8 s after recovery: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = recovered.elapsed();
    assert!(
        took >= Duration::from_millis(3500),
        "whole weight after {took:?}, slow-start is 4 s: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]) && seen.iter().all(|w| [2, 4, 6, 8, 10].contains(w)),
        "{seen:?}"
    );
    assert!(seen.len() >= 4, "steps missed: {seen:?}");
    assert_eq!(backend_now("be1").0.get("health-ramp"), None);
    let got = t.tcp_n(vip, 80, 20);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (10, 10), "{got:?}");
}

#[test]
fn an_http_check_reads_the_body_and_an_exec_check_runs_its_command() {
    if !in_testbed("an_http_check_reads_the_body_and_an_exec_check_runs_its_command") {
        return;
    }
    let t = Topo::new(2);
    let switches = both_switchable(&t);
    let dir = tempdir();
    let _daemon = Daemon::start(&t, &dir, false);
    let vip = vip4(19);
    ok(
        "CreateFarm",
        json!({"farm": {"name": "web", "mode": "snat", "scheduler": "rr",
            "virtual-addresses": [vip], "virtual-ports": "80",
            "health-check": {"type": "http", "port": HTTP, "path": "/health", "expect-body": "good",
                "interval": 0.2, "timeout": 0.1, "fall": 2, "rise": 2},
            "backends": two_backends(TRAFFIC)}}),
    );
    wait_health("be0", "healthy", "http 200");
    wait_health("be1", "healthy", "http 200");

    // A 200 whose page lacks the word fails, and its traffic moves.
    switches[1].set(MAINTENANCE);
    wait_health("be1", "failing", "http 200, body lacks \"good\", 2 failures");
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!(count(&got, "be0"), 10, "{got:?}");
    // Its absence asked for instead: the maintenance page is what fails, not the good one.
    ok(
        "UpdateFarm",
        json!({"name": "web", "changes": {"health-check": {"type": "http", "port": HTTP, "path": "/health",
            "expect-body": "maintenance", "expect-body-absent": true,
            "interval": 0.2, "timeout": 0.1, "fall": 2, "rise": 2}}}),
    );
    wait_health("be0", "healthy", "http 200");
    // Failing already: the new check's reason, without a count of turns.
    wait_health("be1", "failing", "http 200, body has \"maintenance\"");
    switches[1].set(SERVE);
    wait_health("be1", "healthy", "http 200, 2 successes");
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (5, 5), "{got:?}");

    // An exec check, as Nagios plugins are run, as an unprivileged user: healthy while the file
    // named after the backend's address (given in NFTLBD_HOST) exists. Its first line of output
    // joins the reason: the user id it ran as, nobody's.
    let flags = std::env::temp_dir().join(format!("nftlbd-exec-{}", std::process::id()));
    std::fs::create_dir_all(&flags).unwrap();
    std::fs::set_permissions(&flags, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let flag = |i: usize| flags.join(format!("{}.up", backend_ip(i, false)));
    for i in 0..2 {
        std::fs::write(flag(i), "").unwrap();
    }
    let probe = format!("id -u; test -e {}/$NFTLBD_HOST.up", flags.display());
    ok(
        "UpdateFarm",
        json!({"name": "web", "changes": {"health-check": {"type": "exec",
            "command": ["/bin/sh", "-c", probe],
            "interval": 0.2, "timeout": 0.15, "fall": 2, "rise": 2}}}),
    );
    wait_health("be0", "healthy", "exec exit 0: 65534");
    wait_health("be1", "healthy", "exec exit 0: 65534");
    std::fs::remove_file(flag(0)).unwrap();
    wait_health("be0", "failing", "exec exit 1: 65534, 2 failures");
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!(count(&got, "be1"), 10, "{got:?}");
    std::fs::write(flag(0), "").unwrap();
    wait_health("be0", "healthy", "exec exit 0: 65534, 2 successes");
    let got = t.tcp_n(vip, 80, 10);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (5, 5), "{got:?}");
    let _ = std::fs::remove_dir_all(&flags);
}
