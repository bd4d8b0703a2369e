//! The daemon's signals: SIGTERM and SIGINT end it at any point, from the first step of its start
//! on (a step that never ends, such as a bus that never answers, must not make it take SIGKILL);
//! SIGHUP asks for a reload.

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// SIGTERM or SIGINT (named).
    Stop(&'static str),
    /// SIGHUP.
    Reload,
}

pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Catches the signals from now on; one that arrives before it is asked for is kept. Needs
    /// a runtime with its signal driver.
    pub fn catch() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGTERM or SIGINT; says which.
    pub async fn stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// Waits for any of them.
    pub async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.term.recv() => Asked::Stop("SIGTERM"),
            _ = self.int.recv() => Asked::Stop("SIGINT"),
            _ = self.hup.recv() => Asked::Reload,
        }
    }

    /// Runs `step` unless a stop signal comes first; then `step` is dropped, the stop is logged
    /// with `what` the daemon was doing, and the answer is `None`.
    pub async fn unless_stopped<T>(&mut self, what: &str, step: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            done = step => Some(done),
            sig = self.stop() => {
                tracing::info!("{sig} while {what}: stopping");
                None
            }
        }
    }
}
