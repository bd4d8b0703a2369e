//! What the backends saw: each check's connection, accepted by the one listening socket, as the
//! backend it was for and when it arrived. Recording runs on a thread of its own; the bench reads
//! what arrived within a window.

use std::net::{IpAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::net;

/// One check: the backend's index and when its connection was accepted.
pub type Arrival = (usize, Instant);

pub struct Recorder {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Accepts on `listener` for backends `0..n` until dropped.
    pub fn start(listener: TcpListener, n: usize) -> Self {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (list, done) = (arrivals.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    continue;
                };
                let at = Instant::now();
                // The address the checker connected to is the backend it checked.
                if let Ok(local) = conn.local_addr()
                    && let IpAddr::V4(a) = local.ip()
                    && let Some(i) = net::index(a, n)
                    && let Ok(mut v) = list.lock()
                {
                    v.push((i, at));
                }
            }
        });
        Recorder {
            arrivals,
            stop,
            thread: Some(thread),
        }
    }

    /// The checks that arrived from `from` on, taken (later reads see only newer ones).
    pub fn take_since(&self, from: Instant) -> Vec<Arrival> {
        let mut v = match self.arrivals.lock() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        let all = std::mem::take(&mut *v);
        all.into_iter().filter(|(_, at)| *at >= from).collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // One connection of its own wakes the accept so the thread sees the flag.
        let _ = std::net::TcpStream::connect((net::backend(0), net::BACKEND_PORT));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
