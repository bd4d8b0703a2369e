//! A slow start's steps (`slow-start` of a health check): after a backend recovers, the share of
//! its weight it is given (`health-ramp`) goes up in steps every max(slow-start / 10, 1 s), from
//! a small share to all of it once slow-start has passed. Whole seconds at least: each step is a
//! commit, and a ramp finer than that would be a stream of transactions for no visible effect.
//!
//! With `n` steps the share after `k` of them is `100 × (k + 1) / (n + 1)` (rounded down, at
//! least 1): slow-start 30 s is 10 steps of 3 s, 9 % at recovery, then 18 %, 27 %, … 90 %, and
//! 100 % after 30 s; slow-start 4 s is 4 steps of 1 s: 20 %, 40 %, 60 %, 80 %, 100 %.

use std::time::Duration;

use super::seconds::Seconds;

/// The most steps a ramp takes.
const MAX_STEPS: u64 = 10;
/// The shortest step.
const MIN_STEP_MILLIS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ramp {
    /// Steps after the first share, until all of it.
    steps: u32,
    step: Duration,
}

impl Ramp {
    /// The ramp of `slow_start`; none for 0 (a recovered backend gets its whole weight at once).
    pub fn of(slow_start: Seconds) -> Option<Ramp> {
        let total = slow_start.millis();
        if total == 0 {
            return None;
        }
        let step = (total / MAX_STEPS).max(MIN_STEP_MILLIS);
        // At most MAX_STEPS (step ≥ total / MAX_STEPS), at least 1.
        let steps = total.div_ceil(step).clamp(1, MAX_STEPS) as u32;
        Some(Ramp {
            steps,
            step: Duration::from_millis(step),
        })
    }

    /// The time between two steps.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// The share (percent) after `k` steps: 100 from the last step on.
    pub fn share(&self, k: u32) -> u8 {
        let k = u64::from(k.min(self.steps));
        let n = u64::from(self.steps);
        // At most 100: k ≤ n.
        (100 * (k + 1) / (n + 1)).max(1) as u8
    }

    /// The share at recovery.
    pub fn first(&self) -> u8 {
        self.share(0)
    }

    /// The steps taken `elapsed` after recovery.
    pub fn steps_at(&self, elapsed: Duration) -> u32 {
        let k = elapsed.as_millis() / self.step.as_millis().max(1);
        u32::try_from(k).unwrap_or(u32::MAX).min(self.steps)
    }

    /// The steps a ramp at `share` has taken (to resume one, after a restart): the first step
    /// whose share is at least it.
    pub fn steps_of(&self, share: u8) -> u32 {
        (0..=self.steps)
            .find(|k| self.share(*k) >= share)
            .unwrap_or(self.steps)
    }

    /// How long after recovery the ramp reaches step `k`.
    pub fn time_of(&self, k: u32) -> Duration {
        self.step.saturating_mul(k.min(self.steps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(millis: u64) -> Ramp {
        Ramp::of(Seconds::from_millis(millis)).unwrap()
    }

    fn shares(r: &Ramp) -> Vec<u8> {
        (0..=r.steps).map(|k| r.share(k)).collect()
    }

    #[test]
    fn a_ramp_is_ten_steps_at_most_and_a_second_each_at_least() {
        assert_eq!(Ramp::of(Seconds::ZERO), None);
        let r = ramp(30_000);
        assert_eq!((r.steps, r.step()), (10, Duration::from_secs(3)));
        assert_eq!(shares(&r), [9, 18, 27, 36, 45, 54, 63, 72, 81, 90, 100]);
        let r = ramp(4_000);
        assert_eq!((r.steps, r.step()), (4, Duration::from_secs(1)));
        assert_eq!(shares(&r), [20, 40, 60, 80, 100]);
        // Under a second: one step of a second.
        let r = ramp(500);
        assert_eq!((r.steps, r.step()), (1, Duration::from_secs(1)));
        assert_eq!(shares(&r), [50, 100]);
        // 2.5 s: steps of a second, the last one past slow-start.
        let r = ramp(2_500);
        assert_eq!((r.steps, r.step()), (3, Duration::from_secs(1)));
        assert_eq!(r.time_of(3), Duration::from_secs(3));
        // A day: ten steps of 2.4 hours.
        let r = ramp(86_400_000);
        assert_eq!((r.steps, r.step()), (10, Duration::from_secs(8640)));
    }

    #[test]
    fn time_gives_the_steps_and_a_share_gives_them_back() {
        let r = ramp(10_000);
        assert_eq!(r.steps_at(Duration::ZERO), 0);
        assert_eq!(r.steps_at(Duration::from_millis(999)), 0);
        assert_eq!(r.steps_at(Duration::from_millis(1000)), 1);
        assert_eq!(r.steps_at(Duration::from_secs(10)), 10);
        assert_eq!(r.steps_at(Duration::from_secs(3600)), 10);
        for k in 0..=10 {
            assert_eq!(r.steps_of(r.share(k)), k);
        }
        // A share between steps resumes at the next one up.
        assert_eq!(r.steps_of(10), 1);
        assert_eq!(r.steps_of(1), 0);
        assert_eq!(r.time_of(4), Duration::from_secs(4));
        assert_eq!(r.time_of(99), Duration::from_secs(10));
    }
}
