//! Who calls over D-Bus: the caller's bus name (polkit's `system-bus-name` subject) and user, or
//! on a peer-to-peer connection the peer process (`unix-process`), and whether its message allows
//! interactive authentication. Deciding is the service's, from the
//! operation table.

use zbus::Connection;
use zbus::message::{Flags, Header};
use zbus::names::BusName;

use super::error::Error;
use super::limits;
use crate::polkit::Subject;
use crate::service::{Caller, Operation, Output, Service};

const HOW_TO_ASK: &str = "allow interactive authorization, e.g. busctl --allow-interactive-authorization=yes, with an agent running";

/// The caller of the message `hdr`. On a bus, the bus vouches for the sender's name and user; on
/// a peer-to-peer connection nobody does (the peer may write any sender it likes), so the caller
/// is the process at the other end of the socket, as the kernel tells it.
pub async fn caller(conn: &Connection, hdr: &Header<'_>) -> Result<Caller, Error> {
    let interactive = hdr.primary().flags().contains(Flags::AllowInteractiveAuth);
    if !conn.is_bus() {
        return peer(conn, interactive).await;
    }
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
        interactive,
        how_to_ask: HOW_TO_ASK,
    })
}

/// The process at the other end of a peer-to-peer connection (polkit's `unix-process`).
async fn peer(conn: &Connection, interactive: bool) -> Result<Caller, Error> {
    let creds = conn
        .peer_creds()
        .await
        .map_err(|e| Error::NotAuthorized(format!("cannot tell who the peer is: {e}")))?;
    let (Some(uid), Some(pid)) = (creds.unix_user_id(), creds.process_id()) else {
        return Err(Error::NotAuthorized(
            "the peer's socket credentials name no user or process".into(),
        ));
    };
    Ok(Caller {
        subject: Subject::Process { pid, uid },
        uid,
        interactive,
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
    // Admitted before anything is awaited, so a refused call costs nothing but its answer. On a
    // peer-to-peer connection the peer may write any sender: its calls count as one sender.
    let sender = match hdr.sender() {
        Some(s) if conn.is_bus() => s.as_str(),
        _ => "peer-to-peer",
    };
    let _in_flight = limits::daemon().admit(sender)?;
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
