//! Probes and the checker against real servers started on the loopback by each test.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use super::*;
use crate::model::{CheckType, Health, HealthCheck, Seconds};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn check(v: serde_json::Value) -> HealthCheck {
    serde_json::from_value(v).unwrap()
}

/// A port nothing listens on: bound, then closed.
fn closed_port() -> u16 {
    TcpListener::bind((LO, 0)).unwrap().local_addr().unwrap().port()
}

/// A TCP server that answers every connection with `reply` after reading the request head.
fn serve(reply: &'static [u8]) -> u16 {
    let listener = TcpListener::bind((LO, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(reply);
        }
    });
    port
}

/// A TCP server that writes `line` on connect (an agent).
fn agent(line: &'static [u8]) -> u16 {
    let listener = TcpListener::bind((LO, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(line);
        }
    });
    port
}

/// A UDP server answering each datagram with `f(datagram)`, none for silence.
fn udp_server(f: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static) -> u16 {
    let socket = UdpSocket::bind((LO, 0)).unwrap();
    let port = socket.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if let Some(reply) = f(&buf[..n]) {
                let _ = socket.send_to(&reply, from);
            }
        }
    });
    port
}

async fn probe(c: serde_json::Value, port: u16) -> Outcome {
    let c = check(c);
    tokio::time::timeout(c.timeout.duration(), run(&c, LO, port))
        .await
        .unwrap_or_else(|_| Outcome::fail("timed out"))
}

#[tokio::test]
async fn tcp_connects_or_is_refused() {
    let listener = TcpListener::bind((LO, 0)).unwrap();
    let open = listener.local_addr().unwrap().port();
    assert_eq!(
        probe(json!({"type": "tcp"}), open).await,
        Outcome::ok("tcp connected")
    );
    assert_eq!(
        probe(json!({"type": "tcp"}), closed_port()).await,
        Outcome::fail("connection refused")
    );
    // The check closes with a reset (no TIME_WAIT): the backend's read fails instead of
    // seeing the end of the stream.
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let read = std::io::Read::read(&mut conn, &mut [0u8; 1]);
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    let v6 = json!({"type": "tcp", "source-addr": "::1"});
    assert_eq!(
        probe(v6, open).await,
        Outcome::fail("source-addr ::1 cannot reach 127.0.0.1")
    );
    assert_eq!(
        probe(json!({"type": "tcp", "source-addr": "127.0.0.2"}), open).await,
        Outcome::ok("tcp connected")
    );
}

#[tokio::test]
async fn http_judges_status_and_body() {
    let ok = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}");
    let down = serve(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown");
    let chunked =
        serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nmaint: \r\n3\r\nyes\r\n0\r\n\r\n");
    let http = |extra: serde_json::Value| {
        let mut v = json!({"type": "http", "path": "/health"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    assert_eq!(probe(http(json!({})), ok).await, Outcome::ok("http 200"));
    assert_eq!(probe(http(json!({})), down).await, Outcome::fail("http 503"));
    assert_eq!(
        probe(http(json!({"expect-status": "200-299,503"})), down).await,
        Outcome::ok("http 503")
    );
    assert_eq!(
        probe(http(json!({"expect-body": "\"status\":\"ok\""})), ok).await,
        Outcome::ok("http 200")
    );
    assert_eq!(
        probe(http(json!({"expect-body": "\"status\":\"(up|ready)\""})), ok).await,
        Outcome::fail("http 200, body lacks \"\\\"status\\\":\\\"(up|ready)\\\"\"")
    );
    assert_eq!(
        probe(
            http(json!({"expect-body": "maint: yes", "expect-body-absent": true})),
            chunked
        )
        .await,
        Outcome::fail("http 200, body has \"maint: yes\"")
    );
    assert_eq!(
        probe(
            http(json!({"expect-body": "maint: no", "expect-body-absent": true})),
            chunked
        )
        .await,
        Outcome::ok("http 200")
    );
    let ssh = serve(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
    assert_eq!(
        probe(http(json!({})), ssh).await,
        Outcome::fail("not an http status line: \"SSH-2.0-OpenSSH_9.2\"")
    );
    assert_eq!(
        probe(http(json!({})), closed_port()).await,
        Outcome::fail("connection refused")
    );
}

#[tokio::test]
async fn http_sends_the_configured_request() {
    let listener = TcpListener::bind((LO, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            head.extend_from_slice(&buf[..n]);
        }
        conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        String::from_utf8(head).unwrap()
    });
    let c = json!({"type": "http", "path": "/ready", "method": "HEAD", "host": "web.example",
        "headers": {"X-Check": "1"}});
    assert_eq!(probe(c, port).await, Outcome::ok("http 204"));
    assert_eq!(
        server.join().unwrap(),
        "HEAD /ready HTTP/1.1\r\nHost: web.example\r\nUser-Agent: nftlbd-health-check\r\n\
         Connection: close\r\nX-Check: 1\r\n\r\n"
    );
}

#[tokio::test]
async fn udp_expects_a_reply_matching_the_pattern() {
    let echo = udp_server(|d| Some(d.to_vec()));
    let silent = udp_server(|_| None);
    let c = json!({"type": "udp", "send": "ping", "expect": "^ping$", "timeout": 0.3, "interval": 1});
    assert_eq!(probe(c.clone(), echo).await, Outcome::ok("udp reply of 4 bytes"));
    let other = json!({"type": "udp", "send": "ping", "expect": "^pong$"});
    assert_eq!(
        probe(other, echo).await,
        Outcome::fail("udp reply lacks \"^pong$\"")
    );
    assert_eq!(probe(c.clone(), silent).await, Outcome::fail("timed out"));
    // ICMP port unreachable comes back to a connected socket as a refusal.
    let nobody = UdpSocket::bind((LO, 0)).unwrap().local_addr().unwrap().port();
    assert_eq!(probe(c, nobody).await, Outcome::fail("connection refused"));
}

/// A DNS responder: answers with `rcode`, after one stray reply with a wrong id.
fn dns_server(rcode: u8) -> u16 {
    let socket = UdpSocket::bind((LO, 0)).unwrap();
    let port = socket.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80;
            reply[3] = 0x80 | rcode;
            let mut stray = reply.clone();
            stray[0] ^= 0xff;
            let _ = socket.send_to(&stray, from);
            let _ = socket.send_to(&reply, from);
        }
    });
    port
}

#[tokio::test]
async fn dns_checks_the_response_code() {
    let c = json!({"type": "dns", "query-name": "example.com", "query-type": "AAAA"});
    assert_eq!(probe(c.clone(), dns_server(0)).await, Outcome::ok("dns noerror"));
    assert_eq!(
        probe(c.clone(), dns_server(2)).await,
        Outcome::fail("dns servfail, expected noerror")
    );
    let nx = json!({"type": "dns", "query-name": "gone.example.com", "expect-rcode": "nxdomain"});
    assert_eq!(probe(nx, dns_server(3)).await, Outcome::ok("dns nxdomain"));
    assert_eq!(probe(c, dns_server(9)).await, Outcome::fail("dns rcode 9"));
}

#[tokio::test]
async fn agents_say_up_down_drain_or_a_weight() {
    let c = |port: u16| json!({"type": "agent", "agent-port": port});
    let up = probe(c(agent(b"up\n")), 1).await;
    assert_eq!(
        up,
        Outcome {
            ok: true,
            reason: "agent up".into(),
            advice: Some(Advice::default())
        }
    );
    let drain = probe(c(agent(b"drain 50%\n")), 1).await;
    let want = Advice {
        drain: true,
        weight_percent: Some(50),
    };
    assert_eq!(
        drain,
        Outcome {
            ok: true,
            reason: "agent drain 50%".into(),
            advice: Some(want)
        }
    );
    assert_eq!(probe(c(agent(b"down\n")), 1).await, Outcome::fail("agent down"));
    assert_eq!(
        probe(c(agent(b"what?\n")), 1).await,
        Outcome::fail("agent said \"what?\"")
    );
    assert_eq!(probe(c(agent(b"")), 1).await, Outcome::fail("agent said nothing"));
    // Without agent-port the probed port is asked.
    assert_eq!(
        probe(json!({"type": "agent"}), agent(b"75%")).await.reason,
        "agent up 75%"
    );
}

fn script(name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("nftlbd-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn exec_takes_exit_zero_as_healthy_and_is_killed_at_its_timeout() {
    let s = script("check.sh", "echo \"OK - $1:$2 as $(id -un)\"; exit ${3:-0}");
    let c = |code: &str| json!({"type": "exec", "command": [&s, "HOST", "PORT", code]});
    let who = if nix::unistd::geteuid().is_root() {
        "nobody".to_string()
    } else {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name
    };
    assert_eq!(
        probe(c("0"), 8080).await,
        Outcome::ok(format!("exec exit 0: OK - 127.0.0.1:8080 as {who}"))
    );
    assert_eq!(
        probe(c("2"), 80).await,
        Outcome::fail(format!("exec exit 2: OK - 127.0.0.1:80 as {who}"))
    );

    // A hung command and what it started are gone once the run is dropped at its timeout.
    let marker = std::env::temp_dir().join(format!("nftlbd-health-{}/survived", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let hang = script(
        "hang.sh",
        &format!("(sleep 1; touch {}) & sleep 30", marker.display()),
    );
    let started = std::time::Instant::now();
    let c = json!({"type": "exec", "command": [hang], "timeout": 0.3, "user": "nobody"});
    let c = if nix::unistd::geteuid().is_root() {
        c
    } else {
        json!({"type": "exec", "command": c["command"], "timeout": 0.3})
    };
    assert_eq!(probe(c, 1).await, Outcome::fail("timed out"));
    assert!(started.elapsed() < Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!marker.exists(), "a child of the hung command outlived the check");

    let missing = json!({"type": "exec", "command": ["/nonexistent/check"]});
    assert_eq!(
        probe(missing, 1).await,
        Outcome::fail("exec /nonexistent/check: no such file or directory")
    );
}

/// The next report, or a panic after `secs`.
async fn next(rx: &mut mpsc::Receiver<Transition>, secs: u64) -> Transition {
    tokio::time::timeout(Duration::from_secs(secs), rx.recv())
        .await
        .expect("no report in time")
        .expect("the checker stopped")
}

fn target(farm: &str, backend: &str, port: u16, c: &HealthCheck) -> Target {
    Target {
        farm: farm.into(),
        backend: backend.into(),
        addr: LO,
        port,
        check: c.clone(),
    }
}

#[tokio::test]
async fn the_checker_reports_turns_after_fall_and_rise_for_every_target_of_a_shared_probe() {
    let listener = std::net::TcpListener::bind((LO, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let c =
        check(json!({"type": "tcp", "interval": 0.1, "timeout": 0.05, "rise": 2, "fall": 3, "jitter": 0}));
    let (tx, mut rx) = mpsc::channel(16);
    let checker = Checker::start(tx);
    checker
        .set_targets(vec![target("web", "a", port, &c), target("api", "x", port, &c)])
        .unwrap();
    let mut first = vec![next(&mut rx, 2).await, next(&mut rx, 2).await];
    first.sort_by(|a, b| a.farm.cmp(&b.farm));
    let healthy = |farm: &str, backend: &str, reason: &str| Transition {
        farm: farm.into(),
        backend: backend.into(),
        check: CheckType::Tcp,
        health: Health::Healthy,
        reason: reason.into(),
        advice: None,
        recovered: false,
        slow_start: Seconds::ZERO,
    };
    assert_eq!(
        first,
        [
            healthy("api", "x", "tcp connected"),
            healthy("web", "a", "tcp connected")
        ]
    );

    // The server goes: three failures in a row, about 0.3 s, then one report per target.
    drop(listener);
    let started = std::time::Instant::now();
    let down = next(&mut rx, 3).await;
    assert_eq!(down.health, Health::Failing);
    assert_eq!(down.reason, "connection refused, 3 failures");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(next(&mut rx, 1).await.health, Health::Failing);

    // A target joining a probe that knows its health is told at once.
    checker
        .set_targets(vec![
            target("web", "a", port, &c),
            target("api", "x", port, &c),
            target("db", "d", port, &c),
        ])
        .unwrap();
    let joined = next(&mut rx, 1).await;
    assert_eq!(
        (joined.farm.as_str(), joined.health, joined.recovered),
        ("db", Health::Failing, false)
    );
    assert_eq!(joined.reason, "connection refused, 3 failures");

    // Back: after two successes.
    let _listener = std::net::TcpListener::bind((LO, port)).unwrap();
    let up = next(&mut rx, 3).await;
    // From failing: a recovery (what starts a slow start).
    assert_eq!(
        (up.health, up.reason.as_str(), up.recovered),
        (Health::Healthy, "tcp connected, 2 successes", true)
    );
}

#[tokio::test]
async fn a_hung_probe_delays_no_other() {
    // A listener that never accepts still completes connects (the backlog), so hang with http.
    let hung = TcpListener::bind((LO, 0)).unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    let ok = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let slow = check(json!({"type": "http", "path": "/", "interval": 5, "timeout": 4, "jitter": 0}));
    let fast = check(json!({"type": "http", "path": "/", "interval": 0.1, "timeout": 0.05, "jitter": 0}));
    let (tx, mut rx) = mpsc::channel(16);
    let checker = Checker::with_limit(tx, 2);
    checker
        .set_targets(vec![
            target("f", "hung", hung_port, &slow),
            target("f", "ok", ok, &fast),
        ])
        .unwrap();
    let started = std::time::Instant::now();
    let t = next(&mut rx, 2).await;
    assert_eq!(
        (t.backend.as_str(), t.health, t.reason.as_str()),
        ("ok", Health::Healthy, "http 200")
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(hung);
}

#[tokio::test]
async fn updates_move_single_targets_between_probes_and_end_probes_left_without_any() {
    let listener = std::net::TcpListener::bind((LO, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let refused = closed_port();
    let c =
        check(json!({"type": "tcp", "interval": 0.1, "timeout": 0.05, "rise": 1, "fall": 1, "jitter": 0}));
    let (tx, mut rx) = mpsc::channel(16);
    let checker = Checker::start(tx);
    checker
        .update(vec![target("web", "a", port, &c)], vec![])
        .unwrap();
    let a = next(&mut rx, 2).await;
    assert_eq!((a.backend.as_str(), a.health), ("a", Health::Healthy));
    // b joins the probe a has: told at once; a named again, unchanged, is left as it is.
    checker
        .update(
            vec![target("web", "b", port, &c), target("web", "a", port, &c)],
            vec![],
        )
        .unwrap();
    let b = next(&mut rx, 1).await;
    assert_eq!(
        (b.backend.as_str(), b.check, b.health, b.reason.as_str()),
        ("b", CheckType::Tcp, Health::Healthy, "tcp connected")
    );
    // a moves to a port nothing listens on: its own verdict, b's probe goes on.
    checker
        .update(vec![target("web", "a", refused, &c)], vec![])
        .unwrap();
    let a = next(&mut rx, 2).await;
    assert_eq!(
        (a.backend.as_str(), a.health, a.reason.as_str()),
        ("a", Health::Failing, "connection refused")
    );
    // b leaves: its probe ends, so the listener going away is nobody's turn.
    checker.update(vec![], vec![("web".into(), "b".into())]).unwrap();
    drop(listener);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn agent_advice_changes_are_reported_while_healthy() {
    use std::sync::{Arc, Mutex};
    let said: Arc<Mutex<&'static [u8]>> = Arc::new(Mutex::new(b"up\n"));
    let listener = TcpListener::bind((LO, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let line = said.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let now: &[u8] = *line.lock().unwrap();
            let _ = conn.write_all(now);
        }
    });
    let c = check(json!({"type": "agent", "interval": 0.1, "timeout": 0.05, "jitter": 0}));
    let (tx, mut rx) = mpsc::channel(16);
    let checker = Checker::start(tx);
    checker.set_targets(vec![target("web", "a", port, &c)]).unwrap();
    let t = next(&mut rx, 2).await;
    assert_eq!((t.health, t.advice), (Health::Healthy, Some(Advice::default())));
    *said.lock().unwrap() = b"drain\n";
    let t = next(&mut rx, 2).await;
    assert_eq!((t.health, t.reason.as_str()), (Health::Healthy, "agent drain"));
    assert_eq!(
        t.advice,
        Some(Advice {
            drain: true,
            weight_percent: None
        })
    );
    *said.lock().unwrap() = b"up 50%\n";
    let t = next(&mut rx, 2).await;
    assert_eq!(
        t.advice,
        Some(Advice {
            drain: false,
            weight_percent: Some(50)
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_targets_are_checked_in_one_round() {
    // Distinct addresses make distinct probes; nothing listens, so each ends with a refusal.
    let port = closed_port();
    let c = check(json!({"type": "tcp", "interval": 5, "timeout": 1, "jitter": 0.5}));
    let targets: Vec<Target> = (0..10_000u32)
        .map(|i| Target {
            farm: format!("f{}", i / 100),
            backend: format!("b{}", i % 100),
            addr: IpAddr::V4(Ipv4Addr::new(127, 1, (i >> 8) as u8, i as u8)),
            port,
            check: c.clone(),
        })
        .collect();
    let (tx, mut rx) = mpsc::channel(1024);
    let checker = Checker::start(tx);
    let started = std::time::Instant::now();
    checker.set_targets(targets).unwrap();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 10_000 {
        let t = next(&mut rx, 10).await;
        assert_eq!(
            (t.health, t.reason.as_str()),
            (Health::Failing, "connection refused")
        );
        seen.insert((t.farm, t.backend));
    }
    // Jitter spreads the first round over half a second; the round itself must not take long.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The next round is five seconds away: nothing more is reported now.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err()
    );
}
