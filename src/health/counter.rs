//! The rise/fall state machine of one probe: pure, so every turn is tested without a clock.

use crate::model::{Health, HealthCheck, Seconds};

/// A probe's health and how many results in a row have disagreed with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    health: Health,
    streak: u32,
}

impl Counter {
    pub fn health(&self) -> Health {
        self.health
    }

    /// Counts one result; the new health when it turns. The first result decides at once, so that a
    /// restart knows every backend after one round of checks; after that `fall` failures in a row
    /// make a healthy probe failing, and `rise` successes a failing one healthy.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Health> {
        let (agrees, needed, other) = match self.health {
            Health::Unknown => {
                self.health = if ok { Health::Healthy } else { Health::Failing };
                self.streak = 0;
                return Some(self.health);
            }
            Health::Healthy => (ok, fall, Health::Failing),
            Health::Failing => (!ok, rise, Health::Healthy),
        };
        if agrees {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak < needed {
            return None;
        }
        self.health = other;
        self.streak = 0;
        Some(other)
    }

    /// The wait before the next check: `fast-interval` while unknown or turning, `down-interval`
    /// while failing, else `interval`.
    pub fn wait(&self, check: &HealthCheck) -> Seconds {
        match (self.health, self.streak) {
            (Health::Unknown, _) | (_, 1..) => check.fast_interval(),
            (Health::Failing, 0) => check.down_interval(),
            (Health::Healthy, 0) => check.interval,
        }
    }

    /// The reason a turn is reported with: the last probe's, and the count that made the turn
    /// when it took more than one ("http 503, 3 failures").
    pub fn reason(turned_to: Health, last: &str, rise: u32, fall: u32, first: bool) -> String {
        match turned_to {
            Health::Failing if !first && fall > 1 => format!("{last}, {fall} failures"),
            Health::Healthy if !first && rise > 1 => format!("{last}, {rise} successes"),
            _ => last.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CheckType;

    #[test]
    fn the_first_result_decides_then_rise_and_fall_count_in_a_row() {
        let mut c = Counter::default();
        assert_eq!(c.health(), Health::Unknown);
        assert_eq!(c.record(true, 2, 3), Some(Health::Healthy));
        assert_eq!(c.record(false, 2, 3), None);
        assert_eq!(c.record(false, 2, 3), None);
        // A success in between starts the count again.
        assert_eq!(c.record(true, 2, 3), None);
        assert_eq!(c.record(false, 2, 3), None);
        assert_eq!(c.record(false, 2, 3), None);
        assert_eq!(c.record(false, 2, 3), Some(Health::Failing));
        assert_eq!(c.record(false, 2, 3), None);
        assert_eq!(c.record(true, 2, 3), None);
        assert_eq!(c.record(false, 2, 3), None);
        assert_eq!(c.record(true, 2, 3), None);
        assert_eq!(c.record(true, 2, 3), Some(Health::Healthy));
        assert_eq!(c.health(), Health::Healthy);

        let mut c = Counter::default();
        assert_eq!(c.record(false, 1, 1), Some(Health::Failing));
        assert_eq!(c.record(true, 1, 1), Some(Health::Healthy));
        assert_eq!(c.record(false, 1, 1), Some(Health::Failing));
    }

    #[test]
    fn the_wait_follows_the_phase() {
        let check: HealthCheck = serde_json::from_value(serde_json::json!({"type": "tcp",
            "interval": 1, "fast-interval": 0.2, "down-interval": 5, "timeout": 0.1}))
        .unwrap();
        let mut c = Counter::default();
        assert_eq!(c.wait(&check).millis(), 200);
        c.record(true, 2, 2);
        assert_eq!(c.wait(&check).millis(), 1000);
        c.record(false, 2, 2);
        assert_eq!(c.wait(&check).millis(), 200);
        c.record(false, 2, 2);
        assert_eq!(c.health(), Health::Failing);
        assert_eq!(c.wait(&check).millis(), 5000);
        c.record(true, 2, 2);
        assert_eq!(c.wait(&check).millis(), 200);
        let plain = HealthCheck::new(CheckType::Tcp);
        assert_eq!(Counter::default().wait(&plain).millis(), 2000);
    }

    #[test]
    fn reasons_name_the_count_that_made_the_turn() {
        assert_eq!(
            Counter::reason(Health::Failing, "http 503", 2, 3, false),
            "http 503, 3 failures"
        );
        assert_eq!(
            Counter::reason(Health::Healthy, "http 200", 2, 3, false),
            "http 200, 2 successes"
        );
        assert_eq!(
            Counter::reason(Health::Failing, "connection refused", 2, 3, true),
            "connection refused"
        );
        assert_eq!(
            Counter::reason(Health::Failing, "connection refused", 2, 1, false),
            "connection refused"
        );
    }
}
