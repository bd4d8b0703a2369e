//! The slow starts under way: which backends ramp, since when, and the steps each tick commits.
//! A tick costs the backends ramping, never a pass over the configuration; the shares themselves
//! live in the configuration (`health-ramp`), so a restart resumes a ramp where it was.

use std::collections::HashMap;

use tokio::time::Instant;

use super::ops_health::RampStep;
use crate::health::TargetName;
use crate::model::Ramp;

struct Active {
    ramp: Ramp,
    since: Instant,
    /// The steps committed so far.
    steps: u32,
}

#[derive(Default)]
pub struct Ramps {
    active: HashMap<TargetName, Active>,
    /// When the next step of any ramp is due (a ramp stopped meanwhile makes a tick find nothing).
    next: Option<Instant>,
}

impl Ramps {
    /// A ramp starting now at its first share (committed with the recovery).
    pub fn start(&mut self, name: TargetName, ramp: Ramp, now: Instant) {
        self.insert(name, ramp, now, 0);
    }

    /// A ramp found at `share` (after a restart): it goes on from the step that share is.
    pub fn resume(&mut self, name: TargetName, ramp: Ramp, share: u8, now: Instant) {
        let k = ramp.steps_of(share);
        let since = now.checked_sub(ramp.time_of(k)).unwrap_or(now);
        self.insert(name, ramp, since, k);
    }

    fn insert(&mut self, name: TargetName, ramp: Ramp, since: Instant, steps: u32) {
        let due = since + ramp.time_of(steps + 1);
        self.next = Some(self.next.map_or(due, |n| n.min(due)));
        self.active.insert(name, Active { ramp, since, steps });
    }

    /// The backend's ramp ends (it failed, lost its check, or went away).
    pub fn stop(&mut self, name: &TargetName) {
        self.active.remove(name);
        if self.active.is_empty() {
            self.next = None;
        }
    }

    /// When [`Ramps::tick`] has something to do.
    pub fn next_due(&self) -> Option<Instant> {
        self.next
    }

    /// The steps due at `now`, one per backend (its share now); a ramp that reached all of its
    /// weight ends.
    pub fn tick(&mut self, now: Instant) -> Vec<RampStep> {
        let mut out = Vec::new();
        let mut next: Option<Instant> = None;
        self.active.retain(|(farm, backend), a| {
            let k = a.ramp.steps_at(now.saturating_duration_since(a.since));
            if k > a.steps {
                a.steps = k;
                out.push(RampStep {
                    farm: farm.clone(),
                    backend: backend.clone(),
                    share: a.ramp.share(k),
                });
            }
            let done = a.ramp.share(a.steps) == 100;
            if !done {
                let due = a.since + a.ramp.time_of(a.steps + 1);
                next = Some(next.map_or(due, |n| n.min(due)));
            }
            !done
        });
        self.next = next;
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.active.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::Seconds;

    fn name(b: &str) -> TargetName {
        ("web".into(), b.into())
    }

    fn shares(steps: &[RampStep]) -> Vec<(&str, u8)> {
        let mut v: Vec<(&str, u8)> = steps.iter().map(|s| (s.backend.as_str(), s.share)).collect();
        v.sort();
        v
    }

    #[test]
    fn each_tick_steps_the_ramps_due_and_ends_those_at_their_whole_weight() {
        let t0 = Instant::now();
        let secs = |s: u64| t0 + Duration::from_secs(s);
        let four = Ramp::of(Seconds::from_millis(4_000)).unwrap();
        let two = Ramp::of(Seconds::from_millis(2_000)).unwrap();
        let mut r = Ramps::default();
        assert_eq!(r.next_due(), None);
        r.start(name("a"), four, t0);
        r.start(name("b"), two, t0);
        assert_eq!(r.next_due(), Some(secs(1)));
        assert!(r.tick(t0 + Duration::from_millis(999)).is_empty());
        assert_eq!(shares(&r.tick(secs(1))), [("a", 40), ("b", 66)]);
        assert_eq!(r.next_due(), Some(secs(2)));
        // A late tick takes the step due now, not each one it missed.
        assert_eq!(shares(&r.tick(secs(3))), [("a", 80), ("b", 100)]);
        assert_eq!((r.len(), r.next_due()), (1, Some(secs(4))));
        assert_eq!(shares(&r.tick(secs(4))), [("a", 100)]);
        assert_eq!((r.len(), r.next_due()), (0, None));
    }

    #[test]
    fn a_stopped_ramp_steps_no_more_and_a_resumed_one_goes_on_from_its_share() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let four = Ramp::of(Seconds::from_millis(4_000)).unwrap();
        let mut r = Ramps::default();
        r.start(name("a"), four, t0);
        r.stop(&name("a"));
        assert_eq!(r.next_due(), None);
        assert!(r.tick(t0 + Duration::from_secs(5)).is_empty());
        // At 60 %: two steps taken, the third (80 %) a second from now.
        r.resume(name("b"), four, 60, t0);
        assert_eq!(r.next_due(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(shares(&r.tick(t0 + Duration::from_secs(1))), [("b", 80)]);
    }
}
