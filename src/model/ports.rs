//! `virtual-ports`: `"80,443,8000-8010"`, empty for all ports. Kept as merged, sorted ranges so the
//! datapath stores intervals, not one element per port.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("item {index} ({item:?}) is not a port number 1-65535")]
    NotAPort { index: usize, item: String },
    #[error("item {index} ({item:?}) is an empty list item")]
    Empty { index: usize, item: String },
    #[error("item {index} ({item:?}) runs backwards: {first} > {last}")]
    Backwards {
        index: usize,
        item: String,
        first: u16,
        last: u16,
    },
}

fn port(index: usize, item: &str, s: &str) -> Result<u16, PortError> {
    let s = s.trim();
    // Only plain decimal digits: no signs, no hex, no spaces inside.
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortError::NotAPort {
            index,
            item: item.into(),
        });
    }
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(PortError::NotAPort {
            index,
            item: item.into(),
        }),
    }
}

/// Parses a port list; an empty or blank string means "all ports" and gives no ranges.
/// Overlapping and adjacent ranges are merged (`80,81,82-90` → `80-90`).
fn parse_ports(s: &str) -> Result<Vec<PortRange>, PortError> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut ranges = Vec::new();
    for (index, item) in s.split(',').enumerate() {
        if item.trim().is_empty() {
            return Err(PortError::Empty {
                index,
                item: item.into(),
            });
        }
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (port(index, item, a)?, port(index, item, b)?),
            None => {
                let p = port(index, item, item)?;
                (p, p)
            }
        };
        if first > last {
            return Err(PortError::Backwards {
                index,
                item: item.into(),
                first,
                last,
            });
        }
        ranges.push(PortRange { first, last });
    }
    ranges.sort();
    let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(m) if u32::from(r.first) <= u32::from(m.last) + 1 => m.last = m.last.max(r.last),
            _ => merged.push(r),
        }
    }
    Ok(merged)
}

/// A farm's ports, parsed once when the document is read: merged, sorted ranges; none means
/// every port. It cannot hold an unparsable list, so the datapath never has to guess what one
/// would have meant. In JSON it is the canonical string (`"80,443,8000-8010"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Ports(Vec<PortRange>);

impl Ports {
    /// The ranges, sorted and merged; empty for every port.
    pub fn as_slice(&self) -> &[PortRange] {
        &self.0
    }

    /// True when the farm takes every port.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for Ports {
    type Err = PortError;

    fn from_str(s: &str) -> Result<Ports, PortError> {
        parse_ports(s).map(Ports)
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.first == r.last {
                write!(f, "{}", r.first)?;
            } else {
                write!(f, "{}-{}", r.first, r.last)?;
            }
        }
        Ok(())
    }
}

impl Serialize for Ports {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ports, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn parses_lists_and_ranges_and_merges() {
        assert_eq!(parse_ports("").unwrap(), vec![]);
        assert_eq!(parse_ports("  ").unwrap(), vec![]);
        assert_eq!(parse_ports("80").unwrap(), vec![r(80, 80)]);
        assert_eq!(
            parse_ports("443, 80,8000-8010").unwrap(),
            vec![r(80, 80), r(443, 443), r(8000, 8010)]
        );
        assert_eq!(parse_ports("80,81,82-90,85").unwrap(), vec![r(80, 90)]);
        assert_eq!(parse_ports("1-65535").unwrap(), vec![r(1, 65535)]);
        assert_eq!(parse_ports("10-20,15-30,31").unwrap(), vec![r(10, 31)]);
    }

    #[test]
    fn each_bad_input_names_the_item_and_reason() {
        assert_eq!(
            parse_ports("80,,90"),
            Err(PortError::Empty {
                index: 1,
                item: "".into()
            })
        );
        assert_eq!(
            parse_ports("0"),
            Err(PortError::NotAPort {
                index: 0,
                item: "0".into()
            })
        );
        assert_eq!(
            parse_ports("80,65536"),
            Err(PortError::NotAPort {
                index: 1,
                item: "65536".into()
            })
        );
        assert_eq!(
            parse_ports("http"),
            Err(PortError::NotAPort {
                index: 0,
                item: "http".into()
            })
        );
        assert_eq!(
            parse_ports("+80"),
            Err(PortError::NotAPort {
                index: 0,
                item: "+80".into()
            })
        );
        assert_eq!(
            parse_ports("80-"),
            Err(PortError::NotAPort {
                index: 0,
                item: "80-".into()
            })
        );
        assert_eq!(
            parse_ports("1-2-3"),
            Err(PortError::NotAPort {
                index: 0,
                item: "1-2-3".into()
            })
        );
        assert_eq!(
            parse_ports("90-80"),
            Err(PortError::Backwards {
                index: 0,
                item: "90-80".into(),
                first: 90,
                last: 80
            })
        );
        assert_eq!(
            parse_ports("80,99999999999").unwrap_err().to_string(),
            "item 1 (\"99999999999\") is not a port number 1-65535"
        );
    }

    #[test]
    fn json_is_the_canonical_string_both_ways() {
        let p: Ports = serde_json::from_str(r#""443, 80,8000-8010,81""#).unwrap();
        assert_eq!(p.as_slice(), [r(80, 81), r(443, 443), r(8000, 8010)]);
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""80-81,443,8000-8010""#);
        let canonical = r#""80,443,8000-8010""#;
        let p: Ports = serde_json::from_str(canonical).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), canonical);
        let all: Ports = serde_json::from_str(r#""""#).unwrap();
        assert!(all.is_empty());
        assert_eq!(serde_json::to_string(&all).unwrap(), r#""""#);
    }

    #[test]
    fn json_refuses_what_the_parser_refuses() {
        let e = serde_json::from_value::<Ports>(serde_json::json!("80,0")).unwrap_err();
        assert_eq!(e.to_string(), "item 1 (\"0\") is not a port number 1-65535");
        let e = serde_json::from_value::<Ports>(serde_json::json!(80)).unwrap_err();
        assert_eq!(e.to_string(), "invalid type: integer `80`, expected a string");
    }
}
