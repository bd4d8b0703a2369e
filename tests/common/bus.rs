//! The bus testbed (tools/testbed.sh) from Rust tests: re-running a test inside it, busctl as
//! any user, the daemon, `busctl monitor`, polkit's agent in a terminal.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::topo::Topo;

/// True inside the testbed; outside, runs `name` there, asserts it passed, and returns false.
pub fn in_testbed(name: &str) -> bool {
    in_testbed_with_rules(name, &[])
}

/// [`in_testbed`], with polkit rules files (paths relative to the repository) installed before
/// polkitd starts: a rules file added while it runs takes effect only seconds later.
pub fn in_testbed_with_rules(name: &str, rules: &[&str]) -> bool {
    if std::env::var_os("NFTLBD_IN_TESTBED").is_some() {
        return true;
    }
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    let exe = std::env::current_exe().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules: Vec<String> = rules
        .iter()
        .map(|r| root.join(r).to_string_lossy().into_owned())
        .collect();
    let out = Command::new("tools/testbed.sh")
        .arg("--exec")
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("NFTLBD_IN_TESTBED", "1")
        .env("NFTLBD_TESTBED_RULES", rules.join(":"))
        .env("NFTLBD_BIN", env!("CARGO_BIN_EXE_nftlbd"))
        .env("NFTLBCTL_BIN", env!("CARGO_BIN_EXE_nftlbctl"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run tools/testbed.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success() && text.contains("test result: ok. 1 passed"),
        "in the testbed:\n{text}"
    );
    false
}

/// `busctl --system` as `user` (root when `None`): (success, stdout + stderr).
pub fn busctl(user: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut c = match user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--init-groups",
                "--",
                "busctl",
            ]);
            c
        }
        None => Command::new("busctl"),
    };
    let out = c.arg("--system").args(args).output().expect("run busctl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn ok(args: &[&str]) -> String {
    let (good, out) = busctl(None, args);
    assert!(good, "busctl {args:?}: {out}");
    out
}

pub const DEST: &str = "org.nftlbd1";
pub const MANAGER: &str = "org.nftlbd1.Manager";

pub fn call(path: &str, iface: &str, method: &str, sig_and_args: &[&str]) -> String {
    let mut a = vec!["call", DEST, path, iface, method];
    a.extend_from_slice(sig_and_args);
    ok(&a)
}

pub fn export() -> String {
    call("/org/nftlbd1", MANAGER, "ExportConfig", &[])
}

pub fn generation() -> u64 {
    let out = ok(&["get-property", DEST, "/org/nftlbd1", MANAGER, "Generation"]);
    out.trim().trim_start_matches("t ").parse().unwrap()
}

/// The daemon, in the balancer's namespace, on the system bus.
pub struct Daemon {
    child: Child,
}

impl Daemon {
    /// As root, or (`as_service`) as the user `nftlbd` with only CAP_NET_ADMIN, as the systemd
    /// unit runs it.
    pub fn start(t: &Topo, state: &std::path::Path, as_service: bool) -> Daemon {
        Daemon::start_with(t, state, as_service, &[])
    }

    pub fn start_with(t: &Topo, state: &std::path::Path, as_service: bool, env: &[(&str, &str)]) -> Daemon {
        let mut c = Command::new("ip");
        c.envs(env.iter().copied());
        c.args(["netns", "exec", &t.lb]);
        Daemon::spawn(c, state, as_service)
    }

    /// As root in the testbed's own network namespace, for tests that need no traffic (no
    /// topology to build).
    pub fn start_here(state: &std::path::Path) -> Daemon {
        Daemon::spawn(Command::new("env"), state, false)
    }

    /// [`start_here`](Self::start_here) without the daemon's own health checks: for tests that
    /// compare generations, which the checks' verdicts would bump at any moment.
    pub fn start_here_unchecked(state: &std::path::Path) -> Daemon {
        Daemon::spawn_with(Command::new("env"), state, false, &["--no-checks"])
    }

    /// `c` (a command prefix that runs what follows it) running the daemon; waits for READY.
    fn spawn(c: Command, state: &std::path::Path, as_service: bool) -> Daemon {
        Daemon::spawn_with(c, state, as_service, &[])
    }

    /// [`spawn`](Self::spawn) with more options for `nftlbd` (before its command).
    fn spawn_with(mut c: Command, state: &std::path::Path, as_service: bool, options: &[&str]) -> Daemon {
        if as_service {
            c.args([
                "setpriv",
                "--reuid=nftlbd",
                "--regid=nftlbd",
                "--init-groups",
                "--inh-caps=+net_admin",
                "--ambient-caps=+net_admin",
                "--bounding-set=-all,+net_admin",
                "--",
            ]);
        }
        let mut child = c
            .arg("/usr/local/sbin/nftlbd")
            .args(options)
            .arg("--state-dir")
            .arg(state)
            .arg("run")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nftlbd");
        let line = super::first_line_within(child.stdout.take().unwrap(), super::READY_WITHIN);
        assert_eq!(line.trim(), "READY");
        Daemon { child }
    }

    /// The daemon's process id (the testbed runs it directly, not under a wrapper).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (user id, effective capabilities, bounding set) of the daemon.
    pub fn credentials(&self) -> (String, String, String) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        };
        (field("Uid:"), field("CapEff:"), field("CapBnd:"))
    }

    pub fn stop(mut self) {
        super::terminate(self.child.id()).expect("SIGTERM to our own child");
        let status = super::wait_within(&mut self.child, Duration::from_secs(30));
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything `busctl monitor` shows of the daemon, from now until `text()`.
pub struct Monitor {
    child: Child,
    file: PathBuf,
}

impl Monitor {
    pub fn start(dir: &std::path::Path) -> Monitor {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let file = dir.join(format!("monitor-{n}.txt"));
        let out = std::fs::File::create(&file).unwrap();
        let child = Command::new("busctl")
            .args(["--system", "monitor", DEST])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        Monitor { child, file }
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.file).unwrap_or_default()
    }

    /// Waits until one signal seen so far satisfies `matches` (its text: header and body).
    pub fn wait_signal(&self, matches: impl Fn(&str) -> bool) -> String {
        self.wait_until(|t| signals(t).iter().any(|m| matches(m)))
    }

    /// Waits until what the monitor has seen satisfies `done` (a message may be half written).
    pub fn wait_until(&self, done: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let t = self.text();
            if done(&t) || Instant::now() > end {
                return t;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// polkit said no, or yes only after authentication (which nobody here can give).
pub fn refused(out: &str) -> bool {
    out.contains("is not allowed for this caller") || out.contains("needs authentication")
}

/// A fresh directory (tests run in testbeds side by side, where process ids repeat), removed
/// at the end.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn tempdir() -> TempDir {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("nftlbd-bus-{nanos:x}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}
/// `busctl --allow-interactive-authorization=yes ARGS` as `user`, with polkit's text agent
/// (pkttyagent) registered for that very process, in a pseudo-terminal (see [`in_terminal`]).
pub fn busctl_with_agent(
    user: &str,
    password: &str,
    dir: &std::path::Path,
    args: &[&str],
    while_asked: impl FnOnce(),
) -> (bool, String) {
    let fifo = dir.join(format!("agent-{}", args.len()));
    let _ = std::fs::remove_file(&fifo);
    assert!(
        Command::new("mkfifo")
            .arg("-m666")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // The shell registers the agent for its own PID, waits until it is registered, and becomes
    // busctl (same process: polkit finds the agent for the caller).
    let inner = format!(
        "pkttyagent --process $$ --notify-fd 3 3>{f} & read -r _ <{f}; exec busctl --system \
         --allow-interactive-authorization=yes {a}",
        f = fifo.display(),
        a = args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
    );
    in_terminal(user, &inner, password, while_asked)
}

/// Runs the shell command `cmd` as `user` in a pseudo-terminal (script(1)), expecting polkit's
/// text agent to ask for the administrator's password there: when it does, `while_asked` runs
/// (the call is pending in the daemon), then `password` is typed. Returns (success, everything
/// the terminal showed).
pub fn in_terminal(user: &str, cmd: &str, password: &str, while_asked: impl FnOnce()) -> (bool, String) {
    use std::io::{Read, Write};
    let cmd = format!(
        "setpriv --reuid={user} --regid={user} --init-groups -- sh -c {}",
        quote(cmd)
    );
    let mut child = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run script");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains("Password:")
        && Instant::now() < end
        && child.try_wait().is_ok_and(|s| s.is_none())
    {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.extend(chunk);
        }
    }
    assert!(
        String::from_utf8_lossy(&seen).contains("Password:"),
        "the agent never asked: {}",
        String::from_utf8_lossy(&seen)
    );
    while_asked();
    // The agent prints its prompt before it turns echo off with TCSAFLUSH, which discards what
    // was typed in between: so the password is typed again while nothing happens.
    let mut stdin = child.stdin.take().unwrap();
    let mut typed = Instant::now() - Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "the command with the agent hangs");
        if typed.elapsed() > Duration::from_secs(4) {
            stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
            typed = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.extend(chunk);
    }
    (status.success(), String::from_utf8_lossy(&seen).into_owned())
}

/// A word for `sh -c`.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The signals in `busctl monitor` text, each with its body. (busctl starts each message with
/// `‣ Type=` in a UTF-8 locale, `> Type=` otherwise.)
pub fn signals(text: &str) -> Vec<&str> {
    text.split("> Type=")
        .flat_map(|m| m.split("‣ Type="))
        .filter(|m| m.starts_with("signal"))
        .collect()
}

/// The lines a child writes, read on a thread, so a test can wait for them with a limit.
pub struct Lines(std::sync::mpsc::Receiver<String>);

impl Lines {
    pub fn of(out: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The next line, or a failed test after 10 s.
    pub fn next(&self) -> String {
        self.0
            .recv_timeout(Duration::from_secs(10))
            .expect("no line within 10 s")
    }

    /// The next line if one comes within `limit`.
    pub fn within(&self, limit: Duration) -> Option<String> {
        self.0.recv_timeout(limit).ok()
    }
}
