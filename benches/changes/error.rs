//! What can stop a bench run: a command that failed, the daemon refusing a call, or I/O.

use std::process::ExitStatus;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("{method} answered {error}: {parameters}")]
    Varlink {
        method: String,
        error: String,
        parameters: Value,
    },
    #[error("daemon: {0}")]
    Daemon(String),
}

impl BenchError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

pub type Result<T> = std::result::Result<T, BenchError>;
