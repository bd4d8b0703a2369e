//! The varlink socket is open to every local user: a flood by users other than root (many
//! connections, some sending huge messages, some stalling half-way) must neither grow the daemon
//! nor keep root from being served. In the testbed, against the real daemon.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::bus::*;
use common::rss_kib;
use serde_json::{Value, json};

const SOCKET: &str = "/run/nftlbd/org.nftlbd1";
/// The figures of docs/varlink.md's Limits.
const MAX_MESSAGE: usize = 16 << 20;
const PER_USER: usize = 16;
/// Connections each flooding user opens: more than it may hold.
const OPENED: usize = 40;
/// Of each user's admitted connections, those sending a 48 MiB message, and those sending
/// 4 MiB of one and then nothing.
const HUGE: usize = 3;
const STALLING: usize = 3;
/// What the daemon may grow by during the flood.
const GROWTH_KIB: u64 = 64 << 10;

fn connect() -> UnixStream {
    let s = UnixStream::connect(SOCKET).expect("connect to the varlink socket");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Connections opened with `uid` as the effective user: the kernel records the credentials of
/// the process at connect(), and those are what the daemon counts.
fn connect_as(uid: u32, n: usize) -> Vec<UnixStream> {
    nix::unistd::seteuid(nix::unistd::Uid::from_raw(uid)).expect("seteuid to the flooding user");
    let streams: Vec<_> = (0..n).map(|_| connect()).collect();
    nix::unistd::seteuid(nix::unistd::Uid::from_raw(0)).expect("seteuid back to root");
    streams
}

fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .unwrap()
        .unwrap_or_else(|| panic!("the testbed has user {user}"))
        .uid
        .as_raw()
}

/// The next message, or `None` at end of stream or when the daemon reset the connection.
fn next_message(s: &mut UnixStream) -> Option<Value> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) => {
                assert!(buf.is_empty(), "a reply cut short: {buf:?}");
                return None;
            }
            Ok(_) if byte[0] == 0 => return Some(serde_json::from_slice(&buf).expect("a reply is JSON")),
            Ok(_) => buf.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a reply: {e}"),
        }
    }
}

fn call(s: &mut UnixStream, method: &str, params: Value) -> Value {
    let mut bytes = json!({"method": format!("org.nftlbd1.{method}"), "parameters": params})
        .to_string()
        .into_bytes();
    bytes.push(0);
    s.write_all(&bytes).expect("send a call");
    next_message(s).expect("a reply")
}

/// The error and parameters of the message that ends `s`; then the stream must end.
fn last_words(mut s: UnixStream) -> (String, Value) {
    let m = next_message(&mut s).expect("a reply before the connection closes");
    assert_eq!(next_message(&mut s), None, "the connection closes after {m}");
    (
        m["error"].as_str().unwrap_or_default().to_string(),
        m["parameters"].clone(),
    )
}

/// True while nothing has come on `s` and it is open.
/// Peeks, so that a reply waiting there is still read whole later.
fn silent_and_open(s: &UnixStream) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    let mut byte = [0u8; 1];
    let r = recv(
        std::os::fd::AsRawFd::as_raw_fd(s),
        &mut byte,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    );
    r == Err(nix::errno::Errno::EAGAIN)
}

/// Sends `len` bytes of one message that never ends, then nothing, keeping the connection open
/// until the daemon closes it; gives back how the daemon ended it.
fn send_partial(mut s: UnixStream, len: usize) -> JoinHandle<(String, Value)> {
    std::thread::spawn(move || {
        let head = b"{\"method\": \"org.nftlbd1.GetConfig\", \"parameters\": {\"pad\": \"";
        s.write_all(head)
            .expect("the daemon takes the start of a message");
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = head.len();
        while sent < len {
            // Refused once the daemon stops reading and closes: that is the point.
            if s.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        last_words(s)
    })
}

#[test]
fn a_flood_of_users_neither_grows_the_daemon_nor_blocks_root() {
    if !in_testbed("a_flood_of_users_neither_grows_the_daemon_nor_blocks_root") {
        return;
    }
    let dir = tempdir();
    let daemon = Daemon::start_here_unchecked(&dir);
    let mut root = connect();
    let farm = json!({"name": "web", "virtual-addresses": ["192.0.2.10"], "virtual-ports": "80",
        "backends": [{"name": "a", "ip-addr": "10.0.0.1"}, {"name": "b", "ip-addr": "10.0.0.2"}]});
    let r = call(&mut root, "CreateFarm", json!({ "farm": farm }));
    assert!(r.get("error").is_none(), "{r}");
    let mut monitor = connect();
    monitor
        .write_all(b"{\"method\": \"org.nftlbd1.Monitor\", \"more\": true}\0")
        .unwrap();
    let now = next_message(&mut monitor).expect("Monitor answers at once");
    let generation = now["parameters"]["generation"].as_u64().expect("a generation");
    std::thread::sleep(Duration::from_millis(300));
    let rss0 = rss_kib(daemon.pid());

    // The daemon's size, sampled until the flood is over.
    let peak = Arc::new(AtomicU64::new(rss0));
    let over = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, over, pid) = (peak.clone(), over.clone(), daemon.pid());
        std::thread::spawn(move || {
            while !over.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Three users each open more connections than one user may: the extra ones are refused
    // with the limit named, the others stay open.
    let mut admitted = Vec::new();
    for user in ["bob", "carol", "opsalice"] {
        let mut streams = connect_as(uid_of(user), OPENED);
        std::thread::sleep(Duration::from_millis(500));
        let (open, refused): (Vec<_>, Vec<_>) = streams.drain(..).partition(silent_and_open);
        assert_eq!(
            (open.len(), refused.len()),
            (PER_USER, OPENED - PER_USER),
            "{user}"
        );
        for s in refused {
            let (error, params) = last_words(s);
            assert_eq!(error, "org.nftlbd1.LimitExceeded", "{params}");
            assert_eq!(params["limit"], "connections-per-user", "{params}");
            assert_eq!(params["maximum"], PER_USER, "{params}");
        }
        admitted.push(open);
    }

    // Some of each user's connections send a huge message, some half of one and then stall;
    // the rest stay idle.
    let started = Instant::now();
    let mut huge = Vec::new();
    let mut stalling = Vec::new();
    let mut idle = Vec::new();
    for mut streams in admitted {
        huge.extend(streams.drain(..HUGE).map(|s| send_partial(s, 48 << 20)));
        stalling.extend(streams.drain(..STALLING).map(|s| send_partial(s, 4 << 20)));
        idle.extend(streams);
    }

    // Meanwhile root is served at once: a read, a change, and the Monitor sees the change.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let config = call(&mut root, "GetConfig", json!({}));
    assert_eq!(
        config["parameters"]["config"]["farms"][0]["name"], "web",
        "{config}"
    );
    let r = call(
        &mut root,
        "SetBackendState",
        json!({"farm": "web", "backend": "b", "state": "drain"}),
    );
    assert!(r.get("error").is_none(), "{r}");
    let served = t.elapsed();
    assert!(
        served < Duration::from_secs(2),
        "root waited {served:?} during the flood"
    );
    let ev = next_message(&mut monitor).expect("the change, on the Monitor");
    assert_eq!(ev["parameters"]["generation"], generation + 1, "{ev}");
    assert_eq!(ev["parameters"]["farms"], json!(["web"]), "{ev}");

    // Every huge or stalled message is refused and its connection closed, within seconds.
    for h in huge {
        let (error, params) = h.join().unwrap();
        assert_eq!(error, "org.nftlbd1.LimitExceeded", "{params}");
        let limit = params["limit"].as_str().unwrap_or_default();
        assert!(
            ["message-size", "buffered-bytes", "stall-seconds"].contains(&limit),
            "{params}"
        );
    }
    for h in stalling {
        let (error, params) = h.join().unwrap();
        assert_eq!(error, "org.nftlbd1.LimitExceeded", "{params}");
        let limit = params["limit"].as_str().unwrap_or_default();
        assert!(["stall-seconds", "buffered-bytes"].contains(&limit), "{params}");
    }
    // A message waits for room 5 s in all, and stalls 5 s at most after its last piece.
    let flood = started.elapsed();
    assert!(flood < Duration::from_secs(20), "the flood held on for {flood:?}");
    over.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::SeqCst);
    println!("flood over in {flood:?}; the daemon: {rss0} KiB before, {peak} KiB at most");
    assert!(
        peak < rss0 + GROWTH_KIB,
        "the daemon grew from {rss0} KiB to {peak} KiB during the flood"
    );
    // Idle connections may stay (for minutes, not forever).
    assert!(idle.iter().all(silent_and_open));

    // Too long a message, even root's, is refused by name, and the daemon serves on.
    let mut s = connect();
    let mut big = b"{\"method\": \"org.nftlbd1.GetConfig\", \"parameters\": {\"pad\": \"".to_vec();
    big.resize(MAX_MESSAGE + 1, b'x');
    // The daemon closes once it has read past the limit: the rest of the write may fail.
    let _ = s.write_all(&big);
    let (error, params) = last_words(s);
    assert_eq!(error, "org.nftlbd1.LimitExceeded", "{params}");
    assert_eq!(params["limit"], "message-size", "{params}");
    assert_eq!(params["maximum"], MAX_MESSAGE, "{params}");
    let r = call(&mut root, "ListFarms", json!({}));
    assert_eq!(r["parameters"]["farms"], json!(["web"]), "{r}");
    drop((idle, root, monitor));
    daemon.stop();
}
