//! The bound on D-Bus calls in flight, on the testbed's real bus (tools/testbed.sh): one
//! connection firing more concurrent slow calls than it may have in flight gets
//! `org.nftlbd1.Error.LimitExceeded` for the rest, at once, while everyone else is served.
//!
//! A call is made slow by stopping polkitd: a call of a user other than root waits on polkit's
//! answer, holding its place, until polkitd is continued.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::bus::{Daemon, Lines, busctl, call, in_testbed, tempdir};
use nftlbd::dbus::limits::PER_SENDER;

/// How many calls the client fires at once: four past the bound.
const FIRED: usize = PER_SENDER + 4;
const BACKEND: &str = "/org/nftlbd1/farm/web/backend/a";

#[test]
fn calls_in_flight_past_the_bound_are_refused_and_others_served() {
    if !in_testbed("calls_in_flight_past_the_bound_are_refused_and_others_served") {
        return;
    }
    let dir = tempdir();
    let daemon = Daemon::start_here_unchecked(&dir);
    call(
        "/org/nftlbd1",
        "org.nftlbd1.Manager",
        "CreateFarm",
        &[
            "sa{sv}",
            "web",
            "3",
            "VirtualAddresses",
            "as",
            "1",
            "192.0.2.10",
            "VirtualPorts",
            "s",
            "80",
            "Backends",
            "aa{sv}",
            "1",
            "2",
            "Name",
            "s",
            "a",
            "IpAddr",
            "s",
            "10.0.0.1",
        ],
    );
    let polkitd = Stopped::bus_name("org.freedesktop.PolicyKit1");

    // opsalice (webops: may set states of farm web) fires them all on one connection.
    let client = Client::start("opsalice");
    for _ in 0..FIRED - PER_SENDER {
        assert_eq!(
            client.answer(),
            format!(
                "org.nftlbd1.Error.LimitExceeded: this caller already has {PER_SENDER} calls in \
                 flight (at most {PER_SENDER}); retry when one is answered"
            )
        );
    }
    // The others are still waiting on polkit: nothing more has come.
    assert_eq!(client.answer_within(Duration::from_millis(500)), None);

    // Another caller is served meanwhile: a read by bob, a change by root (root asks no polkit).
    let bob_reads = |state: &str| {
        let (good, out) = busctl(
            Some("bob"),
            &[
                "get-property",
                "org.nftlbd1",
                BACKEND,
                "org.nftlbd1.Backend",
                "State",
            ],
        );
        assert!(good, "{out}");
        assert_eq!(out.trim(), format!("s \"{state}\""));
    };
    bob_reads("up");
    call(BACKEND, "org.nftlbd1.Backend", "SetState", &["s", "drain"]);
    bob_reads("drain");

    // polkit answers: every call that held a place is done, and allowed.
    drop(polkitd);
    for _ in 0..PER_SENDER {
        assert_eq!(client.answer(), "ok");
    }
    client.finish();
    // The places were given back: the same user is served again.
    let (good, out) = busctl(
        Some("opsalice"),
        &[
            "call",
            "org.nftlbd1",
            BACKEND,
            "org.nftlbd1.Backend",
            "SetState",
            "s",
            "up",
        ],
    );
    assert!(good, "{out}");
    daemon.stop();
}

/// The client: this test binary again, as `user`, running [`fire_calls_on_one_connection`].
struct Client {
    child: Child,
    lines: Lines,
}

impl Client {
    fn start(user: &str) -> Client {
        let mut child = Command::new("setpriv")
            .args([
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--init-groups",
                "--",
            ])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "fire_calls_on_one_connection",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "--quiet",
            ])
            .env("NFTLBD_FIRE_CALLS", FIRED.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = Lines::of(child.stdout.take().unwrap());
        Client { child, lines }
    }

    /// The next answer (10 s at most), past the test harness's own lines.
    fn answer(&self) -> String {
        self.answer_within(Duration::from_secs(10))
            .expect("no answer within 10 s")
    }

    fn answer_within(&self, limit: Duration) -> Option<String> {
        let end = Instant::now() + limit;
        loop {
            let line = self.lines.within(end.saturating_duration_since(Instant::now()))?;
            if let Some(a) = line.strip_prefix("answer: ") {
                return Some(a.to_string());
            }
        }
    }

    /// Waits (10 s at most) for the client to end, and asserts it ended well.
    fn finish(mut self) {
        let end = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < end, "the client did not end");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process stopped (SIGSTOP) until dropped (SIGCONT), found by the bus name it owns.
struct Stopped(nix::unistd::Pid);

impl Stopped {
    fn bus_name(name: &str) -> Stopped {
        let out = call_bus("GetConnectionUnixProcessID", name);
        let pid: i32 = out
            .trim()
            .strip_prefix("u ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid for {name}: {out}"));
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

fn call_bus(method: &str, arg: &str) -> String {
    let (good, out) = busctl(
        None,
        &[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            method,
            "s",
            arg,
        ],
    );
    assert!(good, "{out}");
    out
}

/// Run by [`Client`] as another user: `NFTLBD_FIRE_CALLS` SetState calls at once on one
/// connection, one line per answer as it comes: `answer: ok` or `answer: ERROR-NAME: message`.
#[test]
#[ignore = "the client of calls_in_flight_past_the_bound_are_refused_and_others_served"]
fn fire_calls_on_one_connection() {
    let n: usize = std::env::var("NFTLBD_FIRE_CALLS").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let conn = zbus::Connection::system().await.unwrap();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..n {
            let conn = conn.clone();
            calls.spawn(async move {
                conn.call_method(
                    Some("org.nftlbd1"),
                    BACKEND,
                    Some("org.nftlbd1.Backend"),
                    "SetState",
                    &("up",),
                )
                .await
            });
        }
        while let Some(answer) = calls.join_next().await {
            match answer.unwrap() {
                Ok(_) => println!("answer: ok"),
                Err(zbus::Error::MethodError(name, message, _)) => {
                    println!("answer: {name}: {}", message.unwrap_or_default())
                }
                Err(e) => println!("answer: unexpected {e}"),
            }
        }
    });
}
