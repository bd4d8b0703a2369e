//! Reading and writing one connection's messages within the limits (`limits`): a message is read
//! only as far as its user's byte budget allows and only while it keeps arriving; a reply is
//! written only while the client reads it.

use std::io;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use super::limits::{Bytes, Connection, Limit, MAX_MESSAGE, Timeouts};
use super::{Reply, encode};

/// What reading a message gave.
pub enum Read {
    /// A whole message without its NUL, and the budget its bytes hold until it is answered.
    Message(Vec<u8>, Bytes),
    /// The client hung up between messages, or in the middle of one.
    Closed,
    /// Nothing came for [`Timeouts::idle`].
    Idle,
    /// The message went past a limit; the connection is to be closed.
    Exceeded(Limit),
}

/// The next message on `rd`, for connection `conn`.
pub async fn read_message<R>(rd: &mut BufReader<R>, conn: &Connection, t: &Timeouts) -> io::Result<Read>
where
    R: tokio::io::AsyncRead + Unpin,
{
    match tokio::time::timeout(t.idle, rd.fill_buf()).await {
        Err(_) => return Ok(Read::Idle),
        Ok(r) => {
            if r?.is_empty() {
                return Ok(Read::Closed);
            }
        }
    }
    let whole_by = Instant::now() + t.message;
    let mut bytes = conn.bytes();
    let mut msg = Vec::new();
    let mut room_by = None;
    loop {
        let now = Instant::now();
        let next_by = (now + t.stall).min(whole_by);
        let (take, done) = match tokio::time::timeout_at(next_by, rd.fill_buf()).await {
            Err(_) if next_by == whole_by => return Ok(Read::Exceeded(Limit::MessageTime)),
            Err(_) => return Ok(Read::Exceeded(Limit::Stall)),
            Ok(r) => {
                let avail = r?;
                if avail.is_empty() {
                    return Ok(Read::Closed);
                }
                match avail.iter().position(|&b| b == 0) {
                    Some(i) => (i + 1, true),
                    None => (avail.len(), false),
                }
            }
        };
        if msg.len() + take > MAX_MESSAGE {
            return Ok(Read::Exceeded(Limit::MessageSize));
        }
        // Room first, bytes after: while it waits, the rest stays in the kernel's socket buffer
        // and the client's writes block there, not in this process. A message waits for room
        // for `stall` in all, not anew after each piece that found some: otherwise a flood of
        // waiting messages would trickle on as each closed one frees a little.
        if bytes.grow(take, Instant::now()).await.is_err() {
            let by = *room_by.get_or_insert(Instant::now() + t.stall);
            if let Err(limit) = bytes.grow(take, by.min(next_by)).await {
                return Ok(Read::Exceeded(limit));
            }
        }
        // The same bytes fill_buf returned above: nothing was consumed since.
        let avail = rd.fill_buf().await?;
        msg.extend_from_slice(&avail[..take]);
        rd.consume(take);
        if done {
            msg.pop();
            return Ok(Read::Message(msg, bytes));
        }
    }
}

/// Writes `bytes`, or fails once the client has not taken them for [`Timeouts::write`].
pub async fn send<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8], t: &Timeouts) -> io::Result<()> {
    match tokio::time::timeout(t.write, wr.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client took no reply for {} s", t.write.as_secs()),
        )),
    }
}

/// `org.nftlbd1.LimitExceeded` for `limit`, as a caller of user `uid` meets it.
pub fn exceeded(limit: Limit, uid: u32, t: &Timeouts) -> Vec<u8> {
    let maximum = limit.maximum(uid, t);
    let message = match limit {
        Limit::Connections => format!("the daemon has {maximum} varlink connections open; try again later"),
        Limit::ConnectionsPerUser => {
            format!("user {uid} has {maximum} varlink connections open, the most one user may")
        }
        Limit::MessageSize => format!("a message may be {maximum} bytes at most"),
        Limit::Buffer => format!(
            "the message waited too long for room: callers' unanswered messages may hold {maximum} bytes"
        ),
        Limit::Stall => format!("nothing more of the message came for {maximum} s"),
        Limit::MessageTime => format!("the message was not whole within {maximum} s"),
    };
    let reply = Reply::Err(
        "org.nftlbd1.LimitExceeded".into(),
        json!({ "limit": limit.name(), "maximum": maximum, "message": message }),
    );
    encode(&reply, false)
}
