//! Joining and leaving the bus within a deadline: a bus that accepts the connection and then
//! never answers (the authentication, `Hello`, `RequestName`) would otherwise hold the daemon's
//! start, or its exit, forever. Each step is named, so a failure says which one.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// A step of joining or leaving the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The socket, the authentication and `Hello` (zbus does them as one).
    Connect,
    /// The object tree, exported before the name is taken.
    Publish,
    RequestName,
    ReleaseName,
    Close,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Connect => "connecting to the bus (authentication, Hello)",
            Step::Publish => "publishing the objects",
            Step::RequestName => "taking the name org.nftlbd1 (RequestName)",
            Step::ReleaseName => "releasing the name org.nftlbd1 (ReleaseName)",
            Step::Close => "closing the bus connection",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{step}: {source}")]
    Failed {
        step: Step,
        #[source]
        source: zbus::Error,
    },
    #[error("{step}: the bus did not answer within {}", secs(*.within))]
    NoAnswer { step: Step, within: Duration },
}

impl JoinError {
    pub fn step(&self) -> Step {
        match self {
            JoinError::Failed { step, .. } | JoinError::NoAnswer { step, .. } => *step,
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// The time every step of a join shares: the join as a whole ends by `deadline`.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    within: Duration,
}

impl Deadline {
    pub fn after(within: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + within,
            within,
        }
    }

    /// Runs `step` until the deadline; past it, the step is dropped (its socket with it) and
    /// named in the error.
    pub async fn run<T>(&self, step: Step, f: impl Future<Output = zbus::Result<T>>) -> Result<T, JoinError> {
        match tokio::time::timeout_at(self.at, f).await {
            Ok(r) => r.map_err(|source| JoinError::Failed { step, source }),
            Err(_) => Err(JoinError::NoAnswer {
                step,
                within: self.within,
            }),
        }
    }
}
