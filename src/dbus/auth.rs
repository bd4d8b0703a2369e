//! Who calls over D-Bus: the caller's bus name (polkit's `system-bus-name` subject) and user, and
//! whether its message allows interactive authentication. Deciding is the service's, from the
//! operation table.

use zbus::Connection;
use zbus::message::{Flags, Header};
use zbus::names::BusName;

use super::error::Error;
use crate::polkit::Subject;
use crate::service::{Caller, Operation, Output, Service};

const HOW_TO_ASK: &str = "allow interactive authorization, e.g. busctl --allow-interactive-authorization=yes, with an agent running";

/// The caller of the message `hdr`.
pub async fn caller(conn: &Connection, hdr: &Header<'_>) -> Result<Caller, Error> {
    let sender = hdr
        .sender()
        .ok_or_else(|| Error::NotAuthorized("the call has no sender".into()))?
        .to_owned();
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let uid = dbus
        .get_connection_unix_user(BusName::Unique(sender.clone()))
        .await
        .map_err(|e| Error::NotAuthorized(format!("cannot tell who the caller is: {e}")))?;
    Ok(Caller {
        subject: Subject::BusName(sender.to_string()),
        uid,
        interactive: hdr.primary().flags().contains(Flags::AllowInteractiveAuth),
        how_to_ask: HOW_TO_ASK,
    })
}

/// Runs `op` for the caller of `hdr`: the one way the D-Bus objects reach the service.
pub async fn execute(
    service: &Service,
    conn: &Connection,
    hdr: &Header<'_>,
    op: Operation,
) -> Result<Output, Error> {
    // Open reads need nobody's name: asking the bus who calls would only slow them.
    let who = if op.authorizations().is_empty() && !matches!(op, Operation::GetPermissions) {
        Caller::nobody()
    } else {
        caller(conn, hdr).await?
    };
    Ok(service.execute(&who, op).await?)
}

/// An output of another shape than the operation promises: a defect, reported as such.
pub fn unexpected(out: Output) -> Error {
    Error::Kernel(format!("internal error: unexpected answer {out:?}"))
}
