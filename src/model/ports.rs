//! `virtual-ports`: `"80,443,8000-8010"`, empty for all ports. Kept as merged, sorted ranges so the
//! datapath stores intervals, not one element per port.

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
pub fn parse_ports(s: &str) -> Result<Vec<PortRange>, PortError> {
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
}
