//! The varlink front end: interface `org.nftlbd1` (varlink/org.nftlbd1.varlink) on a unix
//! socket, for scripts. Like the D-Bus front end it only translates requests into the service's
//! changes and authorizes callers (polkit, for the calling process); `methods` does both.
//!
//! The protocol: JSON objects, each ended by a NUL byte. A call is `{"method": "iface.Name",
//! "parameters": {...}, "more": bool, "oneway": bool}`; a reply `{"parameters": {...}}` or
//! `{"error": "iface.Error", "parameters": {...}}`, with `"continues": true` while more follow.

mod farm_reply;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub(crate) mod methods;
#[cfg(test)]
mod tests;
mod wire;

use std::io;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{SockType, getsockopt, sockopt};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::service::Service;
use limits::{Limits, Timeouts};
use wire::{Read, exceeded, send};

/// Where the daemon listens unless told otherwise.
pub use crate::schema::VARLINK_SOCKET as DEFAULT_SOCKET;
/// The socket: the one systemd passed (socket activation), or a new one at `path` that anyone
/// may connect to (polkit decides what they may do).
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    if let Some(l) = activated()? {
        return Ok(l);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    Ok(l)
}

/// Whether fd 3 has been taken: it may be owned once only.
static ACTIVATION_TAKEN: AtomicBool = AtomicBool::new(false);

/// The listening socket systemd passed as fd 3 (`LISTEN_PID`, `LISTEN_FDS`), if any. The
/// variables are left in the environment: other threads run by now, and changing the environment
/// under them is unsound; a child cannot mistake them for its own, since `LISTEN_PID` names this
/// process.
fn activated() -> io::Result<Option<UnixListener>> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    if !ours || count == 0 || ACTIVATION_TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    // SAFETY: LISTEN_PID names this process, so systemd started it with its sockets open from
    // fd 3 on, and nothing in nftlbd opens or closes fd 3 otherwise; ACTIVATION_TAKEN makes this
    // the only owner. What kind of socket it is gets checked right below.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(3) };
    let listening = getsockopt(&std_listener, sockopt::AcceptConn)?;
    let stream = getsockopt(&std_listener, sockopt::SockType)? == SockType::Stream;
    if !listening || !stream {
        return Err(io::Error::other(
            "the socket passed by systemd (fd 3) is not a listening stream socket",
        ));
    }
    // systemd passes it inheritable; nftlbd's children have no use for it.
    fcntl(&std_listener, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    std_listener.set_nonblocking(true)?;
    UnixListener::from_std(std_listener).map(Some)
}

/// Serves connections until the runtime stops.
pub async fn serve(service: Service, listener: UnixListener) {
    serve_with(service, listener, Timeouts::DAEMON).await
}

/// [`serve`] with other time limits (tests).
pub(crate) async fn serve_with(service: Service, listener: UnixListener, t: Timeouts) {
    let ctx = Arc::new(methods::Ctx::new(service));
    let limits = Arc::new(Limits::default());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let uid = match stream.peer_cred() {
                    Ok(c) => c.uid(),
                    Err(e) => {
                        tracing::warn!("varlink: a connection without credentials: {e}");
                        continue;
                    }
                };
                let admitted = match limits.admit(uid) {
                    Ok(a) => a,
                    Err(limit) => {
                        refuse(&stream, uid, limit, &t);
                        continue;
                    }
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(ctx, stream, admitted, t).await {
                        tracing::debug!("varlink connection: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("varlink: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Says why a connection is refused, and closes it. A new connection's send buffer is empty, so
/// the short reply goes at once and the accept loop never waits for a client.
fn refuse(stream: &UnixStream, uid: u32, limit: limits::Limit, t: &Timeouts) {
    tracing::warn!(
        "varlink: refused a connection of user {uid}: {} ({})",
        limit.name(),
        limit.maximum(uid, t)
    );
    let _ = stream.try_write(&exceeded(limit, uid, t));
}

#[derive(Deserialize)]
struct Call {
    method: String,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    more: bool,
    #[serde(default)]
    oneway: bool,
}

/// A reply or an error, as varlink writes them.
pub enum Reply {
    Ok(Value),
    Err(String, Value),
    /// `GetFarm`'s parameters, written without a `Value` of the whole farm first.
    Farm(Box<farm_reply::FarmReply>),
}

/// A reply at least this long (a farm of some 10,000 backends) is followed by a trim.
const LARGE_REPLY: usize = 1 << 20;

/// A reply as varlink frames it. The fields are in the order of a JSON object's sorted keys, as
/// the replies were written before; borrowing the parameters spares a copy of them (the reply of
/// a farm of 60,000 backends is tens of MiB as a `Value`).
#[derive(serde::Serialize)]
struct Frame<'a> {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    continues: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    parameters: Parameters<'a>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Parameters<'a> {
    Value(&'a Value),
    Farm(&'a farm_reply::FarmReply),
}

fn encode(reply: &Reply, continues: bool) -> Vec<u8> {
    let (error, parameters) = match reply {
        Reply::Ok(p) => (None, Parameters::Value(p)),
        Reply::Err(name, p) => (Some(name.as_str()), Parameters::Value(p)),
        Reply::Farm(f) => (None, Parameters::Farm(f)),
    };
    let frame = Frame {
        continues,
        error,
        parameters,
    };
    let mut out = serde_json::to_vec(&frame).unwrap_or_default();
    out.push(0);
    out
}

/// A message as a call and its parameters (`{}` when it has none), or the error that answers
/// what is not a call.
fn decode_call(message: &[u8]) -> Result<(Call, Value), Reply> {
    let mut call: Call = serde_json::from_slice(message).map_err(|e| {
        Reply::Err(
            "org.varlink.service.InvalidParameter".into(),
            json!({ "parameter": format!("not a varlink call: {e}") }),
        )
    })?;
    let params = call.parameters.take().unwrap_or_else(|| json!({}));
    Ok((call, params))
}

async fn connection(
    ctx: Arc<methods::Ctx>,
    stream: UnixStream,
    admitted: limits::Connection,
    t: Timeouts,
) -> io::Result<()> {
    let cred = stream.peer_cred()?;
    let (uid, pid) = (cred.uid(), cred.pid().and_then(|p| u32::try_from(p).ok()));
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let (buf, held) = match wire::read_message(&mut rd, &admitted, &t).await? {
            Read::Message(m, held) => (m, held),
            Read::Closed => return Ok(()),
            Read::Idle => {
                tracing::debug!("varlink: closed an idle connection of user {uid}");
                return Ok(());
            }
            Read::Exceeded(limit) => {
                tracing::warn!(
                    "varlink: closed a connection of user {uid}: {} ({})",
                    limit.name(),
                    limit.maximum(uid, &t)
                );
                return send(&mut wr, &exceeded(limit, uid, &t), &t).await;
            }
        };
        let (call, params) = match decode_call(&buf) {
            Ok(c) => c,
            // Not a call at all: say so, then hang up (the stream cannot be trusted).
            Err(e) => return send(&mut wr, &encode(&e, false), &t).await,
        };
        drop(buf);
        if call.method == "org.nftlbd1.Monitor" && call.more {
            drop((params, held));
            return monitor(&ctx, &mut rd, &mut wr, &t).await;
        }
        let interactive = params
            .get("allowInteractiveAuthentication")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let caller = methods::caller(uid, pid, interactive);
        let reply = methods::call(&ctx, &caller, &call.method, params).await;
        if call.oneway {
            continue;
        }
        let bytes = encode(&reply, false);
        drop(reply);
        send(&mut wr, &bytes, &t).await?;
        // The call is answered: its bytes no longer count against the caller's budget.
        drop(held);
        if bytes.len() >= LARGE_REPLY {
            drop(bytes);
            // Building a large reply freed as much again as it sent, on this runtime thread:
            // give it back now, not at the writer's next change (a few ms, for a rare reply).
            crate::service::trim::release_free_memory();
        }
    }
}

/// `Monitor` with `more`: the generation now, then one reply per commit, for as long as the
/// client reads them. Never cut for being idle; anything the client sends meanwhile, or its
/// hang-up, ends it (a varlink client sends nothing more on a connection awaiting replies).
async fn monitor<R, W>(ctx: &methods::Ctx, rd: &mut BufReader<R>, wr: &mut W, t: &Timeouts) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut events = ctx.service.subscribe();
    send(wr, &encode(&methods::monitor_now(ctx), true), t).await?;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => send(wr, &encode(&methods::monitor_event(&ev), true), t).await?,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return Ok(()),
            },
            _ = rd.fill_buf() => return Ok(()),
        }
    }
}
