//! The bench's errors: what it was doing and why that failed.

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("the daemon: {0}")]
    Daemon(String),
    #[error("{method}: error {error} {parameters}")]
    Varlink {
        method: String,
        error: String,
        parameters: serde_json::Value,
    },
}

impl BenchError {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

pub type Result<T> = std::result::Result<T, BenchError>;
