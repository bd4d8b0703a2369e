//! polkit: every mutating call asks `CheckAuthorization` for its caller (the `system-bus-name`
//! subject), with the details `farm`, `backend`, `policy` and `verb` so rules can delegate
//! narrowly. Interactive authentication is allowed when the caller's message says so.

use std::collections::HashMap;

use zbus::Connection;
use zbus::message::{Flags, Header};
use zbus::names::BusName;
use zbus::zvariant::Value;

use super::error::Error;

pub const INFO: &str = "org.nftlbd1.info";
pub const FARM_MANAGE: &str = "org.nftlbd1.farm.manage";
pub const BACKEND_MANAGE: &str = "org.nftlbd1.backend.manage";
pub const BACKEND_SET_STATE: &str = "org.nftlbd1.backend.set-state";
pub const POLICY_MANAGE: &str = "org.nftlbd1.policy.manage";
pub const CONFIG: &str = "org.nftlbd1.config";
pub const ALL: &[&str] = &[
    INFO,
    FARM_MANAGE,
    BACKEND_MANAGE,
    BACKEND_SET_STATE,
    POLICY_MANAGE,
    CONFIG,
];

/// What a check is about.
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub farm: String,
    pub backend: String,
    pub policy: String,
    pub verb: String,
}

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
}

/// polkit's answer for the caller of `hdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Yes,
    No,
    /// Yes after authentication.
    Auth,
}

/// Asks polkit; root is always allowed (as polkit itself would answer).
pub async fn check(
    conn: &Connection,
    hdr: &Header<'_>,
    action: &str,
    details: &Details,
) -> Result<Answer, Error> {
    let sender = hdr
        .sender()
        .ok_or_else(|| Error::NotAuthorized("the call has no sender".into()))?
        .to_owned();
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let uid = dbus
        .get_connection_unix_user(BusName::Unique(sender.clone()))
        .await
        .map_err(|e| Error::NotAuthorized(format!("cannot tell who the caller is: {e}")))?;
    if uid == 0 {
        return Ok(Answer::Yes);
    }
    let interactive = hdr.primary().flags().contains(Flags::AllowInteractiveAuth);
    let subject: (&str, HashMap<&str, Value<'_>>) = (
        "system-bus-name",
        HashMap::from([("name", Value::from(sender.as_str()))]),
    );
    let mut d: HashMap<&str, &str> = HashMap::new();
    for (k, v) in [
        ("farm", &details.farm),
        ("backend", &details.backend),
        ("policy", &details.policy),
        ("verb", &details.verb),
    ] {
        if !v.is_empty() {
            d.insert(k, v.as_str());
        }
    }
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
        .map_err(|e| Error::NotAuthorized(format!("polkit could not be asked: {e}")))?;
    let (authorized, challenge, _): (bool, bool, HashMap<String, String>) = reply.body().deserialize()?;
    Ok(match (authorized, challenge) {
        (true, _) => Answer::Yes,
        (false, true) => Answer::Auth,
        (false, false) => Answer::No,
    })
}

/// Refuses unless polkit says yes.
pub async fn require(
    conn: &Connection,
    hdr: &Header<'_>,
    action: &str,
    details: &Details,
) -> Result<(), Error> {
    match check(conn, hdr, action, details).await? {
        Answer::Yes => Ok(()),
        Answer::Auth if hdr.primary().flags().contains(Flags::AllowInteractiveAuth) => {
            Err(Error::NotAuthorized(format!(
                "{action} needs authentication as an administrator, and no authentication agent gave it"
            )))
        }
        Answer::Auth => Err(Error::NotAuthorized(format!(
            "{action} needs authentication (allow interactive authorization, e.g. busctl --allow-interactive-authorization=yes, with an agent running)"
        ))),
        Answer::No => Err(Error::NotAuthorized(format!(
            "{action} is not allowed for this caller"
        ))),
    }
}
