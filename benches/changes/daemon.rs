//! The daemon under test: `nftlbd run --no-bus --varlink PATH` in a fresh network namespace of its
//! own, a plain varlink client to it, and its resident memory. Dropping a [`Daemon`] kills it and
//! removes its namespace and state directory, whatever path the bench left by.
//!
//! Its resident size is read once it is at rest ([`Daemon::rss_at_rest`]): the writer gives freed
//! memory back when its queue empties, just after the reply went out, so a read straight after
//! the reply raced that trim. The bench waits [`REST`] (300 ms), then reads until two reads
//! [`SETTLE`] apart agree within [`SETTLED_KIB`]; VmHWM, the peak, is read as it is.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::{BenchError, Result};

/// The varlink error a daemon without the called method answers.
pub const METHOD_NOT_FOUND: &str = "org.varlink.service.MethodNotFound";

/// How long one call may take before the bench gives up (a load of 60,000 backends included).
const CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The pause after the last reply before the daemon's memory is read.
const REST: Duration = Duration::from_millis(300);
/// The interval between two reads that must agree.
const SETTLE: Duration = Duration::from_millis(100);
/// How far two reads may differ and still agree (a page table or a few buffers).
const SETTLED_KIB: u64 = 256;
/// Reads of the settled size before the bench takes the last one as it is.
const SETTLE_TRIES: usize = 20;

/// Runs `ip` with `args` and checks its exit status.
fn ip(args: &[&str]) -> Result<()> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(BenchError::io(command.clone()))?;
    if !out.status.success() {
        return Err(BenchError::Command {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// A named network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn add(name: String) -> Result<Self> {
        ip(&["netns", "add", &name])?;
        Ok(Self(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.0]) {
            eprintln!("changes bench: {e}");
        }
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Memory of the daemon's process, from /proc/PID/status, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    pub now_kib: u64,
    pub peak_kib: u64,
}

pub struct Daemon {
    // Field order is drop order: the client, the process, then its namespace and directory.
    client: Option<BufReader<UnixStream>>,
    child: Child,
    ns: Netns,
    _dir: TempDir,
}

impl Daemon {
    /// Starts a daemon with an empty state in a new namespace and connects to it once it says
    /// READY.
    pub fn start(tag: &str) -> Result<Self> {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("nftlbd-changes-bench-{pid}-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(BenchError::io(format!("create {}", dir.display())))?;
        let dir = TempDir(dir);
        let ns = Netns::add(format!("chgbench{pid}-{tag}"))?;
        let sock = dir.0.join("varlink");
        let log_path = dir.0.join("daemon.log");
        let log = std::fs::File::create(&log_path)
            .map_err(BenchError::io(format!("create {}", log_path.display())))?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                env!("CARGO_BIN_EXE_nftlbd"),
                "--state-dir",
            ])
            .arg(dir.0.join("state"))
            .args(["--no-bus", "--varlink"])
            .arg(&sock)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(BenchError::io("start nftlbd"))?;
        let mut daemon = Self {
            client: None,
            child,
            ns,
            _dir: dir,
        };
        let ready = daemon.child.stdout.take().map(|out| {
            let mut line = String::new();
            BufReader::new(out).read_line(&mut line).map(|_| line)
        });
        match ready {
            Some(Ok(line)) if line.trim() == "READY" => {}
            other => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(BenchError::Daemon(format!(
                    "no READY line ({other:?}); its messages:\n{log}"
                )));
            }
        }
        // `ip netns exec` execs the daemon in place, so the child's pid is the daemon's: check
        // it, as the memory figures are read from it.
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", daemon.child.id()))
            .map_err(BenchError::io("read the daemon's /proc/PID/comm"))?;
        if comm.trim() != "nftlbd" {
            return Err(BenchError::Daemon(format!(
                "process {} is {comm:?}, not nftlbd",
                daemon.child.id()
            )));
        }
        let stream =
            UnixStream::connect(&sock).map_err(BenchError::io(format!("connect to {}", sock.display())))?;
        stream
            .set_read_timeout(Some(CALL_TIMEOUT))
            .map_err(BenchError::io("set the socket's timeout"))?;
        daemon.client = Some(BufReader::new(stream));
        Ok(daemon)
    }

    /// Calls `org.nftlbd1.METHOD` and returns its reply's parameters and how long it took from
    /// the first byte sent to the last byte received.
    pub fn call(&mut self, method: &str, parameters: Value) -> Result<(Value, Duration)> {
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| BenchError::Daemon("not connected".into()))?;
        let method = format!("org.nftlbd1.{method}");
        let mut msg = json!({"method": method, "parameters": parameters})
            .to_string()
            .into_bytes();
        msg.push(0);
        let t = Instant::now();
        client
            .get_mut()
            .write_all(&msg)
            .map_err(BenchError::io(format!("send {method}")))?;
        let mut buf = Vec::new();
        client
            .read_until(0, &mut buf)
            .map_err(BenchError::io(format!("read the reply to {method}")))?;
        let took = t.elapsed();
        if buf.pop() != Some(0) {
            return Err(BenchError::Daemon(format!(
                "closed the connection during {method}"
            )));
        }
        let mut reply: Value = serde_json::from_slice(&buf)
            .map_err(|e| BenchError::Daemon(format!("{method}: a reply that is not JSON: {e}")))?;
        let parameters = reply.get_mut("parameters").map(Value::take).unwrap_or_default();
        if let Some(error) = reply.get("error") {
            return Err(BenchError::Varlink {
                method,
                error: error.as_str().unwrap_or_default().to_string(),
                parameters,
            });
        }
        Ok((parameters, took))
    }

    /// A call whose reply does not matter, only its time.
    pub fn timed(&mut self, method: &str, parameters: Value) -> Result<Duration> {
        self.call(method, parameters).map(|(_, took)| took)
    }

    /// The memory the daemon holds once it is idle after the last reply (see the module's
    /// comment), not in the middle of giving memory back.
    pub fn rss_at_rest(&self) -> Result<Rss> {
        std::thread::sleep(REST);
        let mut last = self.rss()?;
        for _ in 0..SETTLE_TRIES {
            std::thread::sleep(SETTLE);
            let now = self.rss()?;
            if now.now_kib.abs_diff(last.now_kib) <= SETTLED_KIB {
                return Ok(now);
            }
            last = now;
        }
        Ok(last)
    }

    /// Starts the peak (VmHWM) again from the size now, to see the peak of one call alone.
    pub fn reset_peak(&self) -> Result<()> {
        let path = format!("/proc/{}/clear_refs", self.child.id());
        // "5": reset the peak resident set size (proc(5)).
        std::fs::write(&path, "5").map_err(BenchError::io(format!("write {path}")))
    }

    pub fn rss(&self) -> Result<Rss> {
        let path = format!("/proc/{}/status", self.child.id());
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(BenchError::io(format!("read {path}")))?;
        let field = |name: &str| -> Result<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| BenchError::Daemon(format!("no {name} in {path}")))
        };
        Ok(Rss {
            now_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.client = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Emptied here, while the bench waits, rather than torn down by the kernel in the
        // background of the next measurement.
        if let Err(e) = ip(&["netns", "exec", &self.ns.0, "nft", "flush", "ruleset"]) {
            eprintln!("changes bench: {e}");
        }
    }
}
