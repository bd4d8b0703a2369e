//! `nftlbd run` against a bus that never answers: the start fails within its bound naming the
//! step the bus left unanswered, and SIGTERM ends the daemon cleanly while it waits. The fake
//! buses are Unix sockets served by the test: one that accepts and says nothing (the
//! authentication hangs), and a peer-to-peer D-Bus server that answers the authentication and
//! then either never answers `Hello` or answers it and never answers `RequestName`. Needs root.

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::topo::Topo;

/// How long the daemon waits for the bus when it leaves it.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// Slack over the asked bound: process start, the kernel reconciliation of an empty state.
const SLACK: Duration = Duration::from_secs(2);

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nftlbd-startup-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `nftlbd run` in the balancer's namespace on the bus at `socket`, with `extra` options.
fn start(t: &Topo, dir: &Path, socket: &Path, extra: &[&str]) -> Child {
    common::nftlbd_in(&t.lb, &dir.join("state"))
        .arg("--bus")
        .arg(format!("unix:path={}", socket.display()))
        .args(["--no-varlink", "--no-checks"])
        .args(extra)
        .arg("run")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NFTLBD_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nftlbd run")
}

/// Waits for `child` at most `bound`: its status and everything it wrote to stderr. Killed (and
/// the test failed) when it outlives the bound.
fn wait_within(mut child: Child, bound: Duration) -> (ExitStatus, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status, err);
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nftlbd still running after {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A bus that accepts connections, keeps them open and never says a word; each accepted
/// connection is reported on the channel.
fn silent_bus(path: &Path) -> mpsc::Receiver<()> {
    let listener = UnixListener::bind(path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            held.push(stream);
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    rx
}

/// The bus daemon's side of a connection, as far as the test needs it.
struct FakeBus {
    answer_hello: bool,
    /// Whether `RequestName` is answered (then `ReleaseName` never is).
    answer_name: bool,
    /// Told when a call arrives that will never be answered.
    hung: mpsc::Sender<&'static str>,
}

#[zbus::interface(name = "org.freedesktop.DBus")]
impl FakeBus {
    async fn hello(&self) -> String {
        if !self.answer_hello {
            let _ = self.hung.send("Hello");
            std::future::pending::<()>().await;
        }
        ":1.1".to_string()
    }

    /// zbus subscribes to the name's signals before it asks for the name.
    async fn add_match(&self, _rule: String) {}

    async fn remove_match(&self, _rule: String) {}

    async fn request_name(&self, _name: String, _flags: u32) -> u32 {
        if !self.answer_name {
            let _ = self.hung.send("RequestName");
            std::future::pending::<()>().await;
        }
        1 // DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER
    }

    async fn release_name(&self, _name: String) -> u32 {
        let _ = self.hung.send("ReleaseName");
        std::future::pending::<u32>().await
    }
}

/// A bus that authenticates its clients (peer to peer) and then leaves hanging `Hello`, or
/// `RequestName`, or (answering both) `ReleaseName`; the call it leaves hanging is reported on
/// the channel.
fn mute_bus(path: &Path, answer_hello: bool, answer_name: bool) -> mpsc::Receiver<&'static str> {
    let listener = UnixListener::bind(path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::UnixListener::from_std(listener).unwrap();
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                let bus = FakeBus {
                    answer_hello,
                    answer_name,
                    hung: tx.clone(),
                };
                let conn = zbus::connection::Builder::unix_stream(stream)
                    .server(zbus::Guid::generate())
                    .unwrap()
                    .p2p()
                    .serve_at("/org/freedesktop/DBus", bus)
                    .unwrap()
                    .build()
                    .await;
                if let Ok(conn) = conn {
                    held.push(conn);
                }
            }
        });
    });
    rx
}

#[test]
fn a_bus_that_never_answers_fails_the_start_within_the_bound() {
    let t = Topo::new(0);
    let dir = temp_dir("silent");
    let socket = dir.join("bus");
    let accepted = silent_bus(&socket);
    let started = Instant::now();
    let daemon = start(&t, &dir, &socket, &["--bus-timeout", "1"]);
    let (status, err) = wait_within(daemon, Duration::from_secs(1) + SLACK);
    let took = started.elapsed();
    accepted
        .recv_timeout(Duration::ZERO)
        .expect("the daemon connected to the fake bus");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "nftlbd: D-Bus: connecting to the bus (authentication, Hello): the bus did not answer \
             within 1s (use --no-bus to run without it)"
        ),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(1),
        "gave up after {took:?}, before its bound"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hello_never_answered_fails_the_start_within_the_bound() {
    let t = Topo::new(0);
    let dir = temp_dir("hello");
    let socket = dir.join("bus");
    let hung = mute_bus(&socket, false, false);
    let daemon = start(&t, &dir, &socket, &["--bus-timeout", "1.5"]);
    let (status, err) = wait_within(daemon, Duration::from_millis(1500) + SLACK);
    assert_eq!(hung.recv_timeout(Duration::ZERO), Ok("Hello"));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "nftlbd: D-Bus: connecting to the bus (authentication, Hello): the bus did not answer \
             within 1.5s"
        ),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn request_name_never_answered_fails_the_start_within_the_bound() {
    let t = Topo::new(0);
    let dir = temp_dir("name");
    let socket = dir.join("bus");
    let hung = mute_bus(&socket, true, false);
    let daemon = start(&t, &dir, &socket, &["--bus-timeout", "1"]);
    let (status, err) = wait_within(daemon, Duration::from_secs(1) + SLACK);
    assert_eq!(hung.recv_timeout(Duration::ZERO), Ok("RequestName"), "{err}");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "nftlbd: D-Bus: taking the name org.nftlbd1 (RequestName): the bus did not answer \
             within 1s"
        ),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM while the daemon waits for the bus (with the default, long bound): a clean exit at once.
#[test]
fn sigterm_while_waiting_for_the_bus_ends_the_daemon() {
    let t = Topo::new(0);
    for answer_hello in [false, true] {
        let dir = temp_dir(&format!("term-{answer_hello}"));
        let socket = dir.join("bus");
        let hung = mute_bus(&socket, answer_hello, false);
        let daemon = start(&t, &dir, &socket, &[]);
        let call = hung
            .recv_timeout(Duration::from_secs(10))
            .expect("the daemon reached the fake bus");
        assert_eq!(call, if answer_hello { "RequestName" } else { "Hello" });
        let asked = Instant::now();
        common::terminate(daemon.id()).unwrap();
        let (status, err) = wait_within(daemon, Duration::from_secs(1));
        assert!(asked.elapsed() < Duration::from_secs(1));
        assert!(status.success(), "{status:?}: {err}");
        assert!(
            err.contains("nftlbd: SIGTERM while joining the bus: stopping"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// SIGTERM while running, the bus having stopped answering: leaving it is bounded too.
#[test]
fn sigterm_while_running_is_not_held_by_a_mute_bus() {
    let t = Topo::new(0);
    let dir = temp_dir("stop");
    let socket = dir.join("bus");
    let hung = mute_bus(&socket, true, true);
    let mut daemon = start(&t, &dir, &socket, &[]);
    let line = common::first_line_within(daemon.stdout.take().unwrap(), common::READY_WITHIN);
    assert_eq!(line.trim(), "READY");
    let asked = Instant::now();
    common::terminate(daemon.id()).unwrap();
    let (status, err) = wait_within(daemon, STOP_BOUND + SLACK);
    assert!(asked.elapsed() >= STOP_BOUND, "{err}");
    assert_eq!(hung.recv_timeout(Duration::ZERO), Ok("ReleaseName"), "{err}");
    assert!(status.success(), "{status:?}: {err}");
    assert!(
        err.contains(&format!(
            "nftlbd: releasing the name org.nftlbd1 (ReleaseName): the bus did not answer within {}s",
            STOP_BOUND.as_secs()
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
