//! Helpers for tests that need the real kernel: a fresh network namespace per test, and `nft`.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `f` on a thread that has moved into a new, empty network namespace (namespaces are per
/// thread; children it spawns, such as `nft`, inherit it). Needs root: a test that cannot reach
/// the kernel must fail, not pass silently.
pub fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    assert!(
        nix::unistd::geteuid().is_root(),
        "kernel tests need root (CAP_NET_ADMIN + CAP_SYS_ADMIN for unshare); run them as root"
    );
    std::thread::spawn(move || {
        // Only this thread's network namespace changes.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Asks a process the test started to stop (SIGTERM: a clean exit, unlike `Child::kill`).
pub fn terminate(pid: u32) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::Error::ESRCH)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
}

/// Runs nft with `args`; panics with its stderr if it fails.
pub fn nft(args: &[&str]) -> String {
    let out = Command::new("nft")
        .args(args)
        .output()
        .expect("run nft (is the nftables package installed?)");
    assert!(
        out.status.success(),
        "nft {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Feeds `input` to `nft <args> -f -`; returns stderr on failure.
pub fn nft_stdin(args: &[&str], input: &str) -> Result<String, String> {
    let mut child = Command::new("nft")
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write nft input");
    let out = child.wait_with_output().expect("wait nft");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// What nft prints, minus indentation and blank lines: easy to compare with expected text.
pub fn normalize(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole ruleset must survive `nft list ruleset | nft -c -f -` (operators dump and restore).
pub fn assert_nft_reparses() {
    assert_listing_reparses(&nft(&["list", "ruleset"]));
}

pub fn assert_listing_reparses(listing: &str) {
    if let Err(e) = nft_stdin(&["-c"], listing) {
        panic!("nft -c -f refused our ruleset:\n{e}\n--- ruleset ---\n{listing}");
    }
}

pub fn ip4(a: [u8; 4]) -> Vec<u8> {
    a.to_vec()
}

pub fn port(p: u16) -> Vec<u8> {
    p.to_be_bytes().to_vec()
}
pub mod bus;
pub mod clients;
pub mod introspect;
pub mod topo;

/// How long a started child may take to say READY: generous for a loaded CI machine, yet a
/// daemon that hangs fails its test instead of holding the whole run.
pub const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// The first line `out` gives within `limit` (read on a thread, which a hung writer keeps);
/// past it the test fails.
pub fn first_line_within(out: impl std::io::Read + Send + 'static, limit: std::time::Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
        let _ = tx.send(read.map(|_| line));
    });
    match rx.recv_timeout(limit) {
        Ok(read) => read.expect("read the child's output"),
        Err(_) => panic!("no line within {limit:?}"),
    }
}

/// Waits for `child` to end within `limit`; past it the child is killed and the test fails.
pub fn wait_within(child: &mut std::process::Child, limit: std::time::Duration) -> std::process::ExitStatus {
    let end = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if std::time::Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child (pid {}) did not end within {limit:?}", child.id());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A process's resident memory now (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon runs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// `nftlbd --state-dir STATE` in network namespace `ns`: options and the subcommand follow.
pub fn nftlbd_in(ns: &str, state: &std::path::Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_nftlbd"), "--state-dir"])
        .arg(state);
    c
}
