//! The `exec` check: a command (a Nagios plugin, say) that exits 0 when the backend is healthy.
//! It runs in its own process group, with a clean environment, as an unprivileged user when
//! nftlbd is root; when the scheduler drops a run at its timeout the whole group is killed.

use std::net::IpAddr;
use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User, geteuid};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::probe::{Outcome, describe_io};
use crate::model::HealthCheck;

/// The user commands run as when none is given and nftlbd is root.
pub const DEFAULT_USER: &str = "nobody";

/// The most of a command's output read: its first line is the reason.
const MAX_OUTPUT: u64 = 4096;

/// The arguments with `HOST` and `PORT` (whole arguments) replaced, as farmguardian does.
pub fn arguments(command: &[String], addr: IpAddr, port: u16) -> Vec<String> {
    command
        .iter()
        .map(|a| match a.as_str() {
            "HOST" => addr.to_string(),
            "PORT" => port.to_string(),
            _ => a.clone(),
        })
        .collect()
}

/// Kills the child's process group unless it was reaped: a run dropped at its timeout leaves no
/// plugin (nor anything it started) behind. The group id is the child's pid, which stays ours
/// until the child is reaped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

pub async fn run(check: &HealthCheck, addr: IpAddr, port: u16) -> Outcome {
    let args = arguments(&check.command, addr, port);
    let Some((program, rest)) = args.split_first() else {
        return Outcome::fail("exec without a command");
    };
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("NFTLBD_HOST", addr.to_string())
        .env("NFTLBD_PORT", port.to_string())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if geteuid().is_root() {
        let name = check.user.clone().unwrap_or_else(|| DEFAULT_USER.into());
        // The user database may be remote (NSS): looked up off the scheduler's threads.
        let lookup = tokio::task::spawn_blocking({
            let name = name.clone();
            move || User::from_name(&name)
        })
        .await;
        match lookup {
            Ok(Ok(Some(user))) => {
                // std drops the supplementary groups too when root sets a uid.
                cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            }
            Ok(Ok(None)) => return Outcome::fail(format!("exec: no user {name}")),
            Ok(Err(e)) => return Outcome::fail(format!("exec: user {name}: {e}")),
            Err(e) => return Outcome::fail(format!("exec: user {name}: {e}")),
        }
    }
    let spawned = if geteuid().is_root() {
        // The uid and gid are set in the child: it needs them effective when it is forked.
        match crate::privileges::SwitchUser::raise() {
            Ok(_raised) => cmd.spawn(),
            Err(e) => return Outcome::fail(format!("exec {program}: {e}")),
        }
    } else {
        cmd.spawn()
    };
    let child = match spawned {
        Ok(child) => child,
        Err(e) => return Outcome::fail(format!("exec {program}: {}", describe_io(&e))),
    };
    let mut group = Group(child);
    let mut output = Vec::new();
    if let Some(stdout) = group.0.stdout.take() {
        // Output is only the reason: a failure to read it leaves the reason shorter, nothing else.
        let _ = stdout.take(MAX_OUTPUT).read_to_end(&mut output).await;
    }
    let status = match group.0.wait().await {
        Ok(status) => status,
        Err(e) => return Outcome::fail(format!("exec {program}: {}", describe_io(&e))),
    };
    let text = String::from_utf8_lossy(&output);
    let first = text.lines().next().unwrap_or_default().trim();
    let said = if first.is_empty() {
        String::new()
    } else {
        format!(": {}", first.chars().take(200).collect::<String>())
    };
    match status.code() {
        Some(0) => Outcome::ok(format!("exec exit 0{said}")),
        Some(code) => Outcome::fail(format!("exec exit {code}{said}")),
        None => {
            use std::os::unix::process::ExitStatusExt;
            let signal = status.signal().unwrap_or_default();
            Outcome::fail(format!("exec killed by signal {signal}{said}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_arguments_are_replaced_whole() {
        let cmd: Vec<String> = [
            "/usr/lib/nagios/plugins/check_http",
            "-H",
            "HOST",
            "-p",
            "PORT",
            "-u",
            "/HOST",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            arguments(&cmd, "2001:db8::7".parse().unwrap(), 8080),
            [
                "/usr/lib/nagios/plugins/check_http",
                "-H",
                "2001:db8::7",
                "-p",
                "8080",
                "-u",
                "/HOST"
            ]
        );
    }
}
