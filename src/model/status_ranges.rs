//! HTTP status ranges as a health check expects them: `"200-299,302"`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-empty list of inclusive status ranges, each within 100-599.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatusRanges(Vec<(u16, u16)>);

impl StatusRanges {
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

impl Default for StatusRanges {
    /// Success and redirection, as most load balancers take them.
    fn default() -> Self {
        StatusRanges(vec![(200, 399)])
    }
}

fn status(s: &str) -> Result<u16, String> {
    let n: u16 = s
        .trim()
        .parse()
        .map_err(|_| format!("{:?} is not an HTTP status", s.trim()))?;
    if !(100..=599).contains(&n) {
        return Err(format!("{n} is not an HTTP status (100-599)"));
    }
    Ok(n)
}

impl FromStr for StatusRanges {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let range = match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (status(lo)?, status(hi)?);
                    if lo > hi {
                        return Err(format!("{lo}-{hi} is an empty range"));
                    }
                    (lo, hi)
                }
                None => {
                    let n = status(part)?;
                    (n, n)
                }
            };
            ranges.push(range);
        }
        Ok(StatusRanges(ranges))
    }
}

impl fmt::Display for StatusRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for StatusRanges {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StatusRanges {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_single_statuses_parse_and_match() {
        let r: StatusRanges = "200-299,302".parse().unwrap();
        assert_eq!(r, StatusRanges(vec![(200, 299), (302, 302)]));
        assert!(r.contains(200) && r.contains(299) && r.contains(302));
        assert!(!r.contains(300) && !r.contains(301) && !r.contains(503));
        assert_eq!(r.to_string(), "200-299,302");
        assert_eq!(
            " 204 , 301-302".parse::<StatusRanges>().unwrap().to_string(),
            "204,301-302"
        );
        assert!(StatusRanges::default().contains(399) && !StatusRanges::default().contains(400));
    }

    #[test]
    fn malformed_ranges_are_refused_with_the_reason() {
        let e = |s: &str| s.parse::<StatusRanges>().unwrap_err();
        assert_eq!(e(""), "\"\" is not an HTTP status");
        assert_eq!(e("200-"), "\"\" is not an HTTP status");
        assert_eq!(e("200,,302"), "\"\" is not an HTTP status");
        assert_eq!(e("2xx"), "\"2xx\" is not an HTTP status");
        assert_eq!(e("99"), "99 is not an HTTP status (100-599)");
        assert_eq!(e("200-600"), "600 is not an HTTP status (100-599)");
        assert_eq!(e("299-200"), "299-200 is an empty range");
        assert_eq!(e("200-250-299"), "\"250-299\" is not an HTTP status");
    }
}
