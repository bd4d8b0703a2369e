//! A time in seconds as the canonical JSON writes it (`0.5`, `2`, `30`), kept in whole milliseconds so
//! that two equal settings compare and hash equal (identical health checks are made once).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest time a setting may take: a day. Longer waits are mistakes, not configurations.
pub const MAX_SECONDS: f64 = 86_400.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seconds {
    millis: u64,
}

impl Seconds {
    pub const ZERO: Seconds = Seconds { millis: 0 };

    pub const fn from_millis(millis: u64) -> Seconds {
        Seconds { millis }
    }

    pub const fn millis(self) -> u64 {
        self.millis
    }

    pub fn duration(self) -> Duration {
        Duration::from_millis(self.millis)
    }

    /// Seconds from a JSON number: finite, not negative, at most a day, and not finer than a
    /// millisecond (a value that would round to another is refused rather than silently changed).
    pub fn from_secs_f64(secs: f64) -> Result<Seconds, String> {
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("{secs} is not a number of seconds (0 or more)"));
        }
        if secs > MAX_SECONDS {
            return Err(format!("{secs} is more than {MAX_SECONDS} seconds (a day)"));
        }
        let millis = secs * 1000.0;
        let rounded = millis.round();
        if (millis - rounded).abs() > 1e-6 {
            return Err(format!("{secs} is finer than a millisecond"));
        }
        // In range and whole: the cast is exact.
        Ok(Seconds {
            millis: rounded as u64,
        })
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.millis / 1000;
        let frac = self.millis % 1000;
        if frac == 0 {
            write!(f, "{whole}s")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{whole}.{}s", digits.trim_end_matches('0'))
        }
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.millis % 1000 == 0 {
            s.serialize_u64(self.millis / 1000)
        } else {
            s.serialize_f64(self.millis as f64 / 1000.0)
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = f64::deserialize(d)?;
        Seconds::from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_are_kept_to_the_millisecond_and_written_back_as_given() {
        let s: Seconds = serde_json::from_str("0.5").unwrap();
        assert_eq!(s.millis(), 500);
        assert_eq!(serde_json::to_string(&s).unwrap(), "0.5");
        let s: Seconds = serde_json::from_str("2").unwrap();
        assert_eq!(s.millis(), 2000);
        assert_eq!(serde_json::to_string(&s).unwrap(), "2");
        let s: Seconds = serde_json::from_str("1.25").unwrap();
        assert_eq!(s.to_string(), "1.25s");
        assert_eq!(Seconds::from_millis(3000).to_string(), "3s");
    }

    #[test]
    fn negative_huge_and_too_fine_times_are_refused() {
        let e = serde_json::from_str::<Seconds>("-1").unwrap_err().to_string();
        assert!(e.starts_with("-1 is not a number of seconds"), "{e}");
        let e = serde_json::from_str::<Seconds>("86401").unwrap_err().to_string();
        assert!(e.starts_with("86401 is more than 86400 seconds"), "{e}");
        let e = serde_json::from_str::<Seconds>("0.0005").unwrap_err().to_string();
        assert!(e.starts_with("0.0005 is finer than a millisecond"), "{e}");
        assert!(serde_json::from_str::<Seconds>("\"1\"").is_err());
    }
}
