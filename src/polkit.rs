//! polkit: whether a caller may do something. Every check names the caller (a D-Bus connection,
//! or a process for varlink), the action, and the details `farm`, `backend`, `policy` and `verb`
//! so rules can delegate narrowly. Root is always allowed (as polkit itself would answer).

use std::collections::HashMap;

use zbus::Connection;
use zbus::zvariant::Value;

pub const INFO: &str = "org.nftlbd1.info";
pub const FARM_MANAGE: &str = "org.nftlbd1.farm.manage";
pub const BACKEND_MANAGE: &str = "org.nftlbd1.backend.manage";
pub const BACKEND_SET_STATE: &str = "org.nftlbd1.backend.set-state";
pub const POLICY_MANAGE: &str = "org.nftlbd1.policy.manage";
pub const CONFIG: &str = "org.nftlbd1.config";
pub const CHECKPOINT: &str = "org.nftlbd1.checkpoint";
pub const ALL: &[&str] = &[
    INFO,
    FARM_MANAGE,
    BACKEND_MANAGE,
    BACKEND_SET_STATE,
    POLICY_MANAGE,
    CONFIG,
    CHECKPOINT,
];

/// What a check is about: the details polkit rules see (`action.lookup("farm")`). Empty ones
/// are not passed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Details {
    pub farm: String,
    pub backend: String,
    pub policy: String,
    /// The operation, in kebab-case (`set-backend-state`).
    pub verb: String,
    /// The canonical keys an update sets or resets, sorted, joined with commas.
    pub keys: String,
    /// The state `set-backend-state` asks for.
    pub state: String,
    /// `merge` or `replace`, for `import-config`.
    pub mode: String,
}

/// Every detail polkit may be passed, in the order [`Details::pairs`] gives them.
pub const DETAILS: &[&str] = &["farm", "backend", "policy", "verb", "keys", "state", "mode"];

impl Details {
    pub fn farm(farm: &str, verb: &str) -> Details {
        Details {
            farm: farm.into(),
            verb: verb.into(),
            ..Details::default()
        }
    }

    pub fn verb(verb: &str) -> Details {
        Details {
            verb: verb.into(),
            ..Details::default()
        }
    }

    pub fn backend(farm: &str, backend: &str, verb: &str) -> Details {
        Details {
            backend: backend.into(),
            ..Details::farm(farm, verb)
        }
    }

    /// The details that are set, as (name, value).
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            &self.farm,
            &self.backend,
            &self.policy,
            &self.verb,
            &self.keys,
            &self.state,
            &self.mode,
        ]
        .into_iter()
        .zip(DETAILS.iter().copied())
        .filter(|(v, _)| !v.is_empty())
        .map(|(v, n)| (n, v.as_str()))
        .collect()
    }
}

/// polkit's answer for the caller of `hdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Yes,
    No,
    /// Yes after authentication.
    Auth,
}

impl Answer {
    /// As `GetPermissions` words it.
    pub fn word(self) -> &'static str {
        match self {
            Answer::Yes => "yes",
            Answer::No => "no",
            Answer::Auth => "auth",
        }
    }
}

/// Who asks.
#[derive(Debug, Clone)]
pub enum Subject {
    /// A connection on the system bus (its unique name).
    BusName(String),
    /// A local process (varlink's caller, from the socket's credentials).
    Process { pid: u32, uid: u32 },
}

/// polkit's answer for `subject`; `interactive` lets polkit ask the subject's agent.
pub async fn check(
    conn: &Connection,
    subject: &Subject,
    action: &str,
    details: &Details,
    interactive: bool,
) -> Result<Answer, String> {
    let subject: (&str, HashMap<&str, Value<'_>>) = match subject {
        Subject::BusName(name) => (
            "system-bus-name",
            HashMap::from([("name", Value::from(name.as_str()))]),
        ),
        Subject::Process { pid, uid } => {
            // The start time pins the process (a recycled pid is another subject). Where this
            // process cannot see the caller's /proc entry (systemd's ProtectProc=invisible), 0
            // lets polkitd look it up itself. The identity checked is `uid` either way, which
            // the kernel gave with the connection.
            let start = process_start_time(*pid).unwrap_or(0);
            (
                "unix-process",
                HashMap::from([
                    ("pid", Value::from(*pid)),
                    ("start-time", Value::from(start)),
                    ("uid", Value::from(i32::try_from(*uid).unwrap_or(-1))),
                ]),
            )
        }
    };
    let d: HashMap<&str, &str> = details.pairs().into_iter().collect();
    let flags: u32 = if interactive { 1 } else { 0 };
    let reply = conn
        .call_method(
            Some("org.freedesktop.PolicyKit1"),
            "/org/freedesktop/PolicyKit1/Authority",
            Some("org.freedesktop.PolicyKit1.Authority"),
            "CheckAuthorization",
            &(subject, action, d, flags, ""),
        )
        .await
        .map_err(|e| format!("polkit could not be asked: {e}"))?;
    let (authorized, challenge, _): (bool, bool, HashMap<String, String>) = reply
        .body()
        .deserialize()
        .map_err(|e| format!("polkit's answer: {e}"))?;
    Ok(match (authorized, challenge) {
        (true, _) => Answer::Yes,
        (false, true) => Answer::Auth,
        (false, false) => Answer::No,
    })
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat`, field 22), as polkit
/// identifies processes.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The message for a refusal; `how_to_ask` says how a caller of this transport allows polkit
/// to ask for a password.
pub fn refusal(action: &str, answer: Answer, interactive: bool, how_to_ask: &str) -> String {
    match answer {
        Answer::Yes => String::new(),
        Answer::Auth if interactive => {
            format!("{action} needs authentication as an administrator, and no authentication agent gave it")
        }
        Answer::Auth => format!("{action} needs authentication ({how_to_ask})"),
        Answer::No => format!("{action} is not allowed for this caller"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_has_a_start_time() {
        let me = process_start_time(std::process::id()).unwrap();
        assert!(me > 0);
        assert_eq!(process_start_time(std::process::id()), Some(me));
        assert_eq!(process_start_time(u32::MAX), None);
    }
}
