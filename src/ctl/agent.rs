//! polkit's text agent (pkttyagent) for this process, started when a person is at the terminal
//! (as systemctl does): if polkit wants the administrator's password for a call, it asks here.

use std::io::{IsTerminal, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};

/// The running agent; it stops with this value.
pub struct Agent(Child);

impl Agent {
    /// Starts the agent for this process when standard input is a terminal, and waits until it
    /// is registered. `None` when there is no terminal or no agent.
    pub fn start() -> Option<Agent> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ok()?;
        let notify = wr.as_raw_fd();
        let mut cmd = Command::new("pkttyagent");
        cmd.args([
            "--process",
            &std::process::id().to_string(),
            "--notify-fd",
            &notify.to_string(),
        ])
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::null());
        // The agent tells us through the pipe when it is registered: it must inherit the
        // writing end, which is close-on-exec here so that no other child keeps the pipe open.
        // The hook owns that end, so it is closed here when `cmd` goes.
        // SAFETY: the hook runs in the child between fork and exec, where only
        // async-signal-safe work is allowed: it makes one fcntl(2) call on a descriptor it owns
        // and allocates nothing (an errno becomes an io::Error without allocating).
        unsafe {
            cmd.pre_exec(move || {
                fcntl(&wr, FcntlArg::F_SETFD(FdFlag::empty()))?;
                Ok(())
            });
        }
        let child = cmd.spawn().ok()?;
        drop(cmd);
        // Registered (it closes the pipe), or gone: either way, go on.
        let mut buf = [0u8; 16];
        let _ = std::fs::File::from(rd).read(&mut buf);
        Some(Agent(child))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
