//! The daemon under test: `nftlbd run --no-bus --varlink PATH` in the daemon's namespace, a plain
//! varlink client to it, and the CPU time it has used. Dropping a [`Daemon`] kills it and removes
//! its state directory.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{BenchError, Result};

/// A load of 10,000 backends, with its snapshot, takes seconds here.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Daemon {
    // Field order is drop order: the client, then the process, then its directory.
    client: BufReader<UnixStream>,
    child: Child,
    dir: PathBuf,
}

impl Daemon {
    /// Starts a daemon with an empty state in namespace `ns` (with its own checker, or with
    /// `--no-checks`) and connects once it says READY.
    pub fn start(ns: &str, checks: bool) -> Result<Self> {
        let tag = if checks { "checks" } else { "idle" };
        let dir = std::env::temp_dir().join(format!("nftlbd-health-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(BenchError::io(format!("create {}", dir.display())))?;
        let sock = dir.join("varlink");
        let log_path = dir.join("daemon.log");
        let log = std::fs::File::create(&log_path)
            .map_err(BenchError::io(format!("create {}", log_path.display())))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_nftlbd"), "--state-dir"])
            .arg(dir.join("state"))
            .args(["--no-bus", "--varlink"])
            .arg(&sock)
            .arg("run");
        if !checks {
            cmd.arg("--no-checks");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(BenchError::io("start nftlbd"))?;
        let ready = child.stdout.take().map(|out| {
            let mut line = String::new();
            BufReader::new(out).read_line(&mut line).map(|_| line)
        });
        if !matches!(&ready, Some(Ok(line)) if line.trim() == "READY") {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(BenchError::Daemon(format!(
                "no READY line ({ready:?}); its messages:\n{log}"
            )));
        }
        // `ip netns exec` execs the daemon in place: the child's pid is the daemon's, whose CPU
        // time is read.
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap_or_default();
        let stream = UnixStream::connect(&sock);
        let client = match (comm.trim() == "nftlbd", stream) {
            (true, Ok(s)) => s,
            (named, stream) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(BenchError::Daemon(format!(
                    "process {} is {comm:?} (nftlbd: {named}); connect: {:?}",
                    child.id(),
                    stream.err()
                )));
            }
        };
        client
            .set_read_timeout(Some(CALL_TIMEOUT))
            .map_err(BenchError::io("set the socket's timeout"))?;
        Ok(Daemon {
            client: BufReader::new(client),
            child,
            dir,
        })
    }

    /// Calls `org.nftlbd1.METHOD`; its reply's parameters.
    pub fn call(&mut self, method: &str, parameters: Value) -> Result<Value> {
        let method = format!("org.nftlbd1.{method}");
        let mut msg = json!({"method": method, "parameters": parameters})
            .to_string()
            .into_bytes();
        msg.push(0);
        self.client
            .get_mut()
            .write_all(&msg)
            .map_err(BenchError::io(format!("send {method}")))?;
        let mut buf = Vec::new();
        self.client
            .read_until(0, &mut buf)
            .map_err(BenchError::io(format!("read the reply to {method}")))?;
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
        Ok(parameters)
    }

    /// User and system CPU time the daemon (all its threads) has used, from /proc/PID/stat.
    pub fn cpu(&self) -> Result<Duration> {
        let path = format!("/proc/{}/stat", self.child.id());
        let text = std::fs::read_to_string(&path).map_err(BenchError::io(format!("read {path}")))?;
        // The command name, in parentheses, may hold spaces: fields are counted after it.
        let rest = text
            .rfind(')')
            .map(|i| &text[i + 1..])
            .ok_or_else(|| BenchError::Daemon(format!("{path}: no command name")))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after the name.
        let tick = |i: usize| -> Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| BenchError::Daemon(format!("{path}: no field {}", i + 3)))
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100);
        Ok(Duration::from_micros((tick(11)? + tick(12)?) * 1_000_000 / hz))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
