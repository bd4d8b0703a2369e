//! polkit's text agent (pkttyagent) for this process, started when a person is at the terminal
//! (as systemctl does): if polkit wants the administrator's password for a call, it asks here.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};

/// The running agent; it stops with this value.
pub struct Agent(Child);

impl Agent {
    /// Starts the agent for this process when standard input is a terminal, and waits until it
    /// is registered. `None` when there is no terminal or no agent.
    pub fn start() -> Option<Agent> {
        // SAFETY: isatty only looks at the descriptor.
        if unsafe { libc::isatty(0) } != 1 {
            return None;
        }
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return None;
        }
        // SAFETY: both descriptors were just created and are owned here only.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
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
        // writing end, which is close-on-exec here.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                let flags = libc::fcntl(notify, libc::F_GETFD);
                libc::fcntl(notify, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                Ok(())
            });
        }
        let child = cmd.spawn().ok()?;
        drop(wr);
        // Registered (it closes the pipe), or gone: either way, go on.
        let mut buf = [0u8; 16];
        // SAFETY: reading into a buffer we own from a descriptor we own.
        let _ = unsafe { libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        Some(Agent(child))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
