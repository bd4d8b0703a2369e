//! polkit for D-Bus callers: every mutating call asks `CheckAuthorization` for its caller (the
//! `system-bus-name` subject). Interactive authentication is allowed when the caller's message
//! says so.

use zbus::Connection;
use zbus::message::{Flags, Header};
use zbus::names::BusName;

use super::error::Error;
pub use crate::polkit::{
    ALL, Answer, BACKEND_MANAGE, BACKEND_SET_STATE, CONFIG, Details, FARM_MANAGE, INFO, POLICY_MANAGE,
};
use crate::polkit::{Subject, refusal};

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
    let subject = Subject::BusName(sender.to_string());
    crate::polkit::check(conn, &subject, action, details, interactive)
        .await
        .map_err(Error::NotAuthorized)
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
        a => {
            let interactive = hdr.primary().flags().contains(Flags::AllowInteractiveAuth);
            let how = "allow interactive authorization, e.g. busctl --allow-interactive-authorization=yes, with an agent running";
            Err(Error::NotAuthorized(refusal(action, a, interactive, how)))
        }
    }
}
