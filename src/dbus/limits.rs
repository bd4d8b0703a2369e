//! How many D-Bus calls may be in flight at once: zbus starts a task per method call, and each
//! holds its message (up to the bus's 128 MiB) and whatever it awaits (polkit, an agent's
//! password prompt, the writer) until answered. Without a bound, a caller that never lets its
//! calls finish — an agent that never answers, say — grows the daemon until systemd's
//! `MemoryMax` kills it. Past a bound the call is refused at once with
//! `org.nftlbd1.Error.LimitExceeded` and the daemon goes on serving everyone else.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Calls one sender may have in flight. A person waiting on an agent has one call pending,
/// `nftlbctl` a few; a script that fires more at once gains nothing, as the writer runs changes
/// one at a time anyway.
pub const PER_SENDER: usize = 16;
/// Calls in flight in all: sixteen senders at their bound. An ordinary call holds a few KiB (its
/// message, a task, a polkit request), so this many are small beside the unit's `MemoryMax`,
/// while a flood from many senders still meets a bound.
pub const TOTAL: usize = 256;

/// Which bound a call went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error(
        "this caller already has {PER_SENDER} calls in flight (at most {PER_SENDER}); retry when one is answered"
    )]
    Sender,
    #[error("the service already has {TOTAL} calls in flight (at most {TOTAL}); retry later")]
    Total,
}

#[derive(Default)]
struct Tally {
    total: usize,
    by_sender: BTreeMap<String, usize>,
}

/// The calls in flight, by sender: one per daemon, as the bounds are the daemon's.
pub struct InFlight {
    tally: Mutex<Tally>,
    per_sender: usize,
    total: usize,
}

static DAEMON: InFlight = InFlight::new(PER_SENDER, TOTAL);

/// The daemon's tally of calls in flight.
pub fn daemon() -> &'static InFlight {
    &DAEMON
}

impl InFlight {
    pub const fn new(per_sender: usize, total: usize) -> InFlight {
        InFlight {
            tally: Mutex::new(Tally {
                total: 0,
                by_sender: BTreeMap::new(),
            }),
            per_sender,
            total,
        }
    }

    /// A place for one more call of `sender`, held until the permit is dropped.
    pub fn admit(&self, sender: &str) -> Result<Permit<'_>, Exceeded> {
        let mut t = self.lock();
        let mine = t.by_sender.get(sender).copied().unwrap_or(0);
        if mine >= self.per_sender {
            return Err(Exceeded::Sender);
        }
        if t.total >= self.total {
            return Err(Exceeded::Total);
        }
        t.total += 1;
        t.by_sender.insert(sender.to_string(), mine + 1);
        Ok(Permit {
            of: self,
            sender: sender.to_string(),
        })
    }

    /// (calls in flight in all, senders with any).
    pub fn counts(&self) -> (usize, usize) {
        let t = self.lock();
        (t.total, t.by_sender.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        // The tally is updated in a few lines that cannot panic midway: a poisoned lock still
        // holds consistent counts.
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One call in flight; dropping it (the call answered, or its task dropped) frees its place.
pub struct Permit<'a> {
    of: &'a InFlight,
    sender: String,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut t = self.of.lock();
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.by_sender.get_mut(&self.sender) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Unique names are never reused: an idle sender's entry would only pile up.
                t.by_sender.remove(&self.sender);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_past_its_bound_is_refused_and_others_are_not() {
        let f = InFlight::new(2, 3);
        let a1 = f.admit(":1.1").unwrap();
        let _a2 = f.admit(":1.1").unwrap();
        assert_eq!(f.admit(":1.1").err(), Some(Exceeded::Sender));
        let _b1 = f.admit(":1.2").unwrap();
        assert_eq!(f.admit(":1.3").err(), Some(Exceeded::Total));
        assert_eq!(f.counts(), (3, 2));
        drop(a1);
        assert_eq!(f.counts(), (2, 2));
        let _c1 = f.admit(":1.3").unwrap();
        assert_eq!(f.admit(":1.1").err(), Some(Exceeded::Total));
    }

    #[test]
    fn answered_calls_leave_nothing_behind() {
        let f = InFlight::new(16, 256);
        let permits: Vec<_> = (0..16).map(|_| f.admit(":1.9").unwrap()).collect();
        assert_eq!(f.counts(), (16, 1));
        drop(permits);
        assert_eq!(f.counts(), (0, 0));
    }

    #[test]
    fn the_refusals_name_the_bound() {
        assert_eq!(
            Exceeded::Sender.to_string(),
            "this caller already has 16 calls in flight (at most 16); retry when one is answered"
        );
        assert_eq!(
            Exceeded::Total.to_string(),
            "the service already has 256 calls in flight (at most 256); retry later"
        );
    }
}
