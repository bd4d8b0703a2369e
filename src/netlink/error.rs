//! Errors of the netlink layer.

use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket itself failed (creation, send, receive).
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel refused a request; for a batch nothing of it was applied.
    #[error("kernel refused {what}: {}{}", io::Error::from_raw_os_error(*.errno), detail_suffix(.detail))]
    Kernel {
        /// The refused object, e.g. `add rule ip nftlbd filter-web (message 3 of 12)`.
        what: String,
        /// Positive errno.
        errno: i32,
        /// The kernel's extended-ack message and the offending attribute, when it gave them.
        detail: Option<String>,
    },
    /// This kernel lacks a feature (found by probing).
    #[error("unsupported by this kernel: {0}")]
    Unsupported(String),
    /// A message from the kernel could not be decoded.
    #[error("malformed netlink data: {0}")]
    Decode(String),
    /// A request built by the caller cannot be encoded (e.g. a name too long).
    #[error("invalid request: {0}")]
    Invalid(String),
}

fn detail_suffix(d: &Option<String>) -> String {
    d.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
}

impl Error {
    pub(crate) fn decode(msg: impl Into<String>) -> Self {
        Error::Decode(msg.into())
    }

    /// The kernel's errno, if this is a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}
