//! What one varlink caller may hold in the daemon: connections, bytes of messages being read,
//! time. The socket is open to every local user (mode 0666, polkit judges each change), and the
//! daemon holds CAP_NET_ADMIN, so nothing a caller sends may grow it without bound. Every figure
//! is here, with why it is what it is; docs/varlink.md states them for callers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The largest message read, NUL included. The largest real request is an `ImportConfig` (or
/// `CreateFarm`) of a whole configuration: 60,000 backends, each with name, IPv6 address, port,
/// weight, priority, state, mark and connection limit, are 8.2 MiB of compact JSON (143 bytes a
/// backend, measured); 16 MiB leaves twice that. The model's own ceiling (65,535 farms of
/// 65,535 backends) would be terabytes: no single message could carry it anyway.
pub const MAX_MESSAGE: usize = 16 << 20;

/// Connections open at once, whoever holds them. Each costs a task and a read buffer (about
/// 16 KiB), so this bounds the daemon's per-connection memory at a few MiB.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one user other than root may hold: more than any script or `nftlbctl monitor`
/// needs, few enough that one user cannot take the socket from the others.
pub const MAX_CONNECTIONS_PER_USER: usize = 16;
/// Connections root may hold. They are kept free of other users: a user other than root is
/// refused once `MAX_CONNECTIONS - MAX_CONNECTIONS_ROOT` are open, so the administrator can
/// always connect, whatever the others do.
pub const MAX_CONNECTIONS_ROOT: usize = 64;

/// Bytes of unfinished or unanswered messages root's connections may hold together: two whole
/// configurations at once (an import while another script sends one).
pub const BUFFER_ROOT: usize = 2 * MAX_MESSAGE;
/// Bytes of unfinished or unanswered messages all other users' connections may hold together:
/// one largest message and half as much again. Separate from root's, so a flood by others never
/// makes the administrator wait; with `BUFFER_ROOT` it bounds what callers' messages hold in the
/// daemon at 56 MiB, whatever they send.
pub const BUFFER_OTHERS: usize = MAX_MESSAGE + MAX_MESSAGE / 2;
/// Bytes one user other than root may hold: one largest message, so a single user cannot take
/// the whole of `BUFFER_OTHERS`.
pub const BUFFER_PER_USER: usize = MAX_MESSAGE;

/// How long the time limits are. Unit tests shorten them; the daemon uses [`Timeouts::DAEMON`].
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Between two reads of an unfinished message. A client writing a message it has in memory
    /// never pauses this long; one that stalls holds its bytes no longer than this.
    pub stall: Duration,
    /// From a message's first byte to its last, however steadily it trickles in: 16 MiB over a
    /// unix socket take milliseconds, so only a client feeding a byte now and then is cut.
    pub message: Duration,
    /// A connection with nothing unfinished and nothing to answer: long enough for a script that
    /// keeps its connection between calls, short enough that forgotten ones go. `Monitor`
    /// subscriptions are not idle (they are answered at every change) and are never cut for it.
    pub idle: Duration,
    /// Writing one reply or one `Monitor` event: a client that does not read its replies is
    /// closed instead of holding them in the daemon.
    pub write: Duration,
}

impl Timeouts {
    pub const DAEMON: Timeouts = Timeouts {
        stall: Duration::from_secs(5),
        message: Duration::from_secs(30),
        idle: Duration::from_secs(600),
        write: Duration::from_secs(10),
    };
}

/// A limit a caller went past, as the `LimitExceeded` error names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Connections,
    ConnectionsPerUser,
    MessageSize,
    Buffer,
    Stall,
    MessageTime,
}

impl Limit {
    /// The name callers see (`limit` of `org.nftlbd1.LimitExceeded`).
    pub fn name(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::ConnectionsPerUser => "connections-per-user",
            Limit::MessageSize => "message-size",
            Limit::Buffer => "buffered-bytes",
            Limit::Stall => "stall-seconds",
            Limit::MessageTime => "message-seconds",
        }
    }

    /// The figure for a caller of user `uid` (`maximum` of the error).
    pub fn maximum(self, uid: u32, t: &Timeouts) -> u64 {
        let n = match self {
            Limit::Connections => MAX_CONNECTIONS,
            Limit::ConnectionsPerUser if uid == 0 => MAX_CONNECTIONS_ROOT,
            Limit::ConnectionsPerUser => MAX_CONNECTIONS_PER_USER,
            Limit::MessageSize => MAX_MESSAGE,
            Limit::Buffer if uid == 0 => BUFFER_ROOT,
            Limit::Buffer => BUFFER_PER_USER,
            Limit::Stall => return t.stall.as_secs(),
            Limit::MessageTime => return t.message.as_secs(),
        };
        n as u64
    }
}

#[derive(Default)]
struct Counts {
    connections: usize,
    connections_of: HashMap<u32, usize>,
    bytes_root: usize,
    bytes_others: usize,
    bytes_of: HashMap<u32, usize>,
}

/// The counts every connection shares.
#[derive(Default)]
pub struct Limits {
    counts: Mutex<Counts>,
    /// Woken when bytes are given back, for connections waiting for room.
    freed: Notify,
}

impl Limits {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts are plain integers, consistent after any panic: keep serving.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection for user `uid`, or the limit that refuses it.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Result<Connection, Limit> {
        let mut c = self.counts();
        let total = if uid == 0 {
            MAX_CONNECTIONS
        } else {
            MAX_CONNECTIONS - MAX_CONNECTIONS_ROOT
        };
        if c.connections >= total {
            return Err(Limit::Connections);
        }
        let per_user = if uid == 0 {
            MAX_CONNECTIONS_ROOT
        } else {
            MAX_CONNECTIONS_PER_USER
        };
        let mine = c.connections_of.entry(uid).or_default();
        if *mine >= per_user {
            return Err(Limit::ConnectionsPerUser);
        }
        *mine += 1;
        c.connections += 1;
        Ok(Connection {
            limits: self.clone(),
            uid,
        })
    }

    fn try_take(&self, uid: u32, n: usize) -> bool {
        let mut c = self.counts();
        if uid == 0 {
            if c.bytes_root + n > BUFFER_ROOT {
                return false;
            }
            c.bytes_root += n;
            return true;
        }
        let mine = c.bytes_of.get(&uid).copied().unwrap_or(0);
        if c.bytes_others + n > BUFFER_OTHERS || mine + n > BUFFER_PER_USER {
            return false;
        }
        c.bytes_others += n;
        *c.bytes_of.entry(uid).or_default() += n;
        true
    }

    fn give_back(&self, uid: u32, n: usize) {
        if n == 0 {
            return;
        }
        {
            let mut c = self.counts();
            if uid == 0 {
                c.bytes_root -= n;
            } else {
                c.bytes_others -= n;
                if let Some(mine) = c.bytes_of.get_mut(&uid) {
                    *mine -= n;
                    if *mine == 0 {
                        c.bytes_of.remove(&uid);
                    }
                }
            }
        }
        self.freed.notify_waiters();
    }

    /// (connections, bytes held) now: for tests and the log.
    pub fn usage(&self) -> (usize, usize) {
        let c = self.counts();
        (c.connections, c.bytes_root + c.bytes_others)
    }
}

/// One admitted connection; dropping it gives its place back.
pub struct Connection {
    limits: Arc<Limits>,
    uid: u32,
}

impl Connection {
    /// An empty claim on this connection's user's bytes.
    pub fn bytes(&self) -> Bytes {
        Bytes {
            limits: self.limits.clone(),
            uid: self.uid,
            held: 0,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut c = self.limits.counts();
        c.connections -= 1;
        if let Some(mine) = c.connections_of.get_mut(&self.uid) {
            *mine -= 1;
            if *mine == 0 {
                c.connections_of.remove(&self.uid);
            }
        }
    }
}

/// Bytes a connection holds of its user's budget; dropping it gives them back.
pub struct Bytes {
    limits: Arc<Limits>,
    uid: u32,
    held: usize,
}

impl Bytes {
    /// `n` bytes more, waiting until `deadline` for others to give some back.
    pub async fn grow(&mut self, n: usize, deadline: Instant) -> Result<(), Limit> {
        loop {
            // Registered before trying, so a release between the try and the wait is not missed.
            let freed = self.limits.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.limits.try_take(self.uid, n) {
                self.held += n;
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(Limit::Buffer);
            }
        }
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        self.limits.give_back(self.uid, self.held);
    }
}
