//! Policy elements: `"192.0.2.7"`, `"192.0.2.0/24"`, `"10.0.0.1-10.0.0.9"`. Parsed once when the
//! document is read, so a renderer never meets text it cannot read (for a blacklist, skipping an
//! element would let its addresses through). The policy's family is checked by validation.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One element, in the form it was written. Two elements are the same element when their
/// canonical texts are equal: `10.0.0.1` and `10.0.0.1/32` cover the same address but are two
/// elements (removing one does not remove the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyElement {
    Address(IpAddr),
    /// A prefix with its host bits cleared (`192.0.2.77/24` is kept as `192.0.2.0/24`).
    Prefix {
        network: IpAddr,
        len: u8,
    },
    /// An inclusive range of one family, `first <= last`.
    Range {
        first: IpAddr,
        last: IpAddr,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyElementError {
    #[error("{text:?} is not an IP address")]
    NotAnAddress { text: String },
    #[error("{element:?}: prefix length must be 0-{max}")]
    PrefixLength { element: String, max: u8 },
    #[error("range {element:?} runs backwards")]
    Backwards { element: String },
    #[error("range {element:?} mixes IPv4 and IPv6")]
    MixedFamilies { element: String },
}

fn address(text: &str) -> Result<IpAddr, PolicyElementError> {
    text.trim()
        .parse()
        .map_err(|_| PolicyElementError::NotAnAddress { text: text.into() })
}

/// `addr` with all but its first `len` bits cleared; `len` is at most the family's width.
fn network(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(v) & mask).into())
        }
        IpAddr::V6(v) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(v) & mask).into())
        }
    }
}

impl PolicyElement {
    /// True for an IPv4 element (a range is of one family).
    pub fn is_ipv4(&self) -> bool {
        match self {
            PolicyElement::Address(a) => a.is_ipv4(),
            PolicyElement::Prefix { network, .. } => network.is_ipv4(),
            PolicyElement::Range { first, .. } => first.is_ipv4(),
        }
    }

    /// The first and last address it covers.
    pub fn bounds(&self) -> (IpAddr, IpAddr) {
        match *self {
            PolicyElement::Address(a) => (a, a),
            PolicyElement::Prefix { network, len } => {
                let last = match network {
                    IpAddr::V4(v) => {
                        let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                        IpAddr::V4((u32::from(v) | host).into())
                    }
                    IpAddr::V6(v) => {
                        let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                        IpAddr::V6((u128::from(v) | host).into())
                    }
                };
                (network, last)
            }
            PolicyElement::Range { first, last } => (first, last),
        }
    }
}

impl FromStr for PolicyElement {
    type Err = PolicyElementError;

    fn from_str(s: &str) -> Result<PolicyElement, PolicyElementError> {
        if let Some((a, b)) = s.split_once('-') {
            let (first, last) = (address(a)?, address(b)?);
            if first.is_ipv4() != last.is_ipv4() {
                return Err(PolicyElementError::MixedFamilies { element: s.into() });
            }
            if first > last {
                return Err(PolicyElementError::Backwards { element: s.into() });
            }
            return Ok(PolicyElement::Range { first, last });
        }
        if let Some((a, len)) = s.split_once('/') {
            let addr = address(a)?;
            let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
            // Only plain decimal digits: no signs, no spaces.
            let len = match len.parse::<u8>() {
                Ok(l) if l <= max && len.bytes().all(|b| b.is_ascii_digit()) => l,
                _ => {
                    return Err(PolicyElementError::PrefixLength {
                        element: s.into(),
                        max,
                    });
                }
            };
            return Ok(PolicyElement::Prefix {
                network: network(addr, len),
                len,
            });
        }
        address(s).map(PolicyElement::Address)
    }
}

impl fmt::Display for PolicyElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyElement::Address(a) => write!(f, "{a}"),
            PolicyElement::Prefix { network, len } => write!(f, "{network}/{len}"),
            PolicyElement::Range { first, last } => write!(f, "{first}-{last}"),
        }
    }
}

impl Serialize for PolicyElement {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PolicyElement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PolicyElement, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PolicyElement, PolicyElementError> {
        s.parse()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_each_form_and_prints_it_canonically() {
        let cases = [
            ("192.0.2.7", PolicyElement::Address(ip("192.0.2.7")), "192.0.2.7"),
            (
                " 192.0.2.7 ",
                PolicyElement::Address(ip("192.0.2.7")),
                "192.0.2.7",
            ),
            (
                "2001:DB8:0::1",
                PolicyElement::Address(ip("2001:db8::1")),
                "2001:db8::1",
            ),
            (
                "192.0.2.77/24",
                PolicyElement::Prefix {
                    network: ip("192.0.2.0"),
                    len: 24,
                },
                "192.0.2.0/24",
            ),
            (
                "10.0.0.1/32",
                PolicyElement::Prefix {
                    network: ip("10.0.0.1"),
                    len: 32,
                },
                "10.0.0.1/32",
            ),
            (
                "10.1.2.3/0",
                PolicyElement::Prefix {
                    network: ip("0.0.0.0"),
                    len: 0,
                },
                "0.0.0.0/0",
            ),
            (
                "2001:db8::1:2/112",
                PolicyElement::Prefix {
                    network: ip("2001:db8::1:0"),
                    len: 112,
                },
                "2001:db8::1:0/112",
            ),
            (
                "10.0.0.1 - 10.0.0.9",
                PolicyElement::Range {
                    first: ip("10.0.0.1"),
                    last: ip("10.0.0.9"),
                },
                "10.0.0.1-10.0.0.9",
            ),
        ];
        for (text, want, canonical) in cases {
            let e = parse(text).unwrap();
            assert_eq!(e, want, "{text}");
            assert_eq!(e.to_string(), canonical, "{text}");
            assert_eq!(parse(canonical).unwrap(), e, "{canonical}");
        }
    }

    #[test]
    fn bounds_cover_what_the_element_means() {
        assert_eq!(
            parse("192.0.2.77/24").unwrap().bounds(),
            (ip("192.0.2.0"), ip("192.0.2.255"))
        );
        assert_eq!(
            parse("10.0.0.0/0").unwrap().bounds(),
            (ip("0.0.0.0"), ip("255.255.255.255"))
        );
        assert_eq!(
            parse("10.0.0.1/32").unwrap().bounds(),
            (ip("10.0.0.1"), ip("10.0.0.1"))
        );
        assert_eq!(
            parse("2001:db8::/127").unwrap().bounds(),
            (ip("2001:db8::"), ip("2001:db8::1"))
        );
        assert_eq!(
            parse("::/0").unwrap().bounds().1,
            ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
        );
        assert_eq!(
            parse("10.0.0.1-10.0.0.9").unwrap().bounds(),
            (ip("10.0.0.1"), ip("10.0.0.9"))
        );
        assert!(parse("10.0.0.1").unwrap().is_ipv4());
        assert!(!parse("2001:db8::/32").unwrap().is_ipv4());
    }

    #[test]
    fn each_refusal_names_the_text_and_the_reason() {
        let refused = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(refused("10.0.0.300"), "\"10.0.0.300\" is not an IP address");
        assert_eq!(refused(""), "\"\" is not an IP address");
        assert_eq!(refused("10.0.0.1-"), "\"\" is not an IP address");
        assert_eq!(
            refused("10.0.0.0/33"),
            "\"10.0.0.0/33\": prefix length must be 0-32"
        );
        assert_eq!(
            refused("2001:db8::/129"),
            "\"2001:db8::/129\": prefix length must be 0-128"
        );
        assert_eq!(
            refused("10.0.0.0/+8"),
            "\"10.0.0.0/+8\": prefix length must be 0-32"
        );
        assert_eq!(refused("10.0.0.0/"), "\"10.0.0.0/\": prefix length must be 0-32");
        assert_eq!(
            refused("10.0.0.9-10.0.0.1"),
            "range \"10.0.0.9-10.0.0.1\" runs backwards"
        );
        assert_eq!(
            refused("10.0.0.1-2001:db8::1"),
            "range \"10.0.0.1-2001:db8::1\" mixes IPv4 and IPv6"
        );
    }

    #[test]
    fn json_is_the_canonical_string_both_ways() {
        let list: Vec<PolicyElement> =
            serde_json::from_str(r#"["192.0.2.0/24","10.0.0.1-10.0.0.9","2001:db8::1"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            r#"["192.0.2.0/24","10.0.0.1-10.0.0.9","2001:db8::1"]"#
        );
        let e = serde_json::from_value::<PolicyElement>(serde_json::json!("10.0.0.9-10.0.0.1")).unwrap_err();
        assert_eq!(e.to_string(), "range \"10.0.0.9-10.0.0.1\" runs backwards");
        let e = serde_json::from_value::<PolicyElement>(serde_json::json!(7)).unwrap_err();
        assert_eq!(e.to_string(), "invalid type: integer `7`, expected a string");
    }
}
