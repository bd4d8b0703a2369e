//! The enumerations and small value types of the canonical JSON (docs/json.md): each unknown value is a
//! deserialization error that names the accepted ones, never a silent default (nftlb's flaw).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Address families a farm serves. `dual` is one farm with IPv4 and IPv6 virtual addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FarmFamily {
    #[default]
    Ipv4,
    Ipv6,
    Dual,
}

/// A policy is a list of one family's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyFamily {
    #[default]
    Ipv4,
    Ipv6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
    /// tcp, udp and sctp.
    All,
}

impl Protocol {
    /// The IP protocol numbers this setting matches.
    pub fn numbers(self) -> &'static [u8] {
        match self {
            Protocol::Tcp => &[6],
            Protocol::Udp => &[17],
            Protocol::Sctp => &[132],
            Protocol::All => &[6, 17, 132],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Destination NAT to the backend and source NAT (masquerade or `source-addr`) so replies
    /// come back through the balancer.
    #[default]
    Snat,
    /// Destination NAT only: backends route their replies through the balancer.
    Dnat,
    /// Direct server return (layer 2, netdev ingress).
    Dsr,
    /// Stateless destination NAT (layer 2, netdev ingress, no conntrack).
    Stlsdnat,
    /// The virtual service is served by a local process; no destination NAT.
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduler {
    /// Round robin (weighted: each backend gets `weight` consecutive turns).
    #[default]
    Rr,
    /// Random, in proportion to the weights.
    Weight,
    /// A hash of `sched-param`: one client (key) always reaches the same backend.
    Hash,
    /// A hash that is the same in both directions.
    Symhash,
}

/// The packet fields a hash or a persistence key is made of. Order in a key is always this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyField {
    Srcip,
    Dstip,
    Srcport,
    Dstport,
    Srcmac,
    Dstmac,
}

impl KeyField {
    pub const ALL: [KeyField; 6] = [
        KeyField::Srcip,
        KeyField::Dstip,
        KeyField::Srcport,
        KeyField::Dstport,
        KeyField::Srcmac,
        KeyField::Dstmac,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyField::Srcip => "srcip",
            KeyField::Dstip => "dstip",
            KeyField::Srcport => "srcport",
            KeyField::Dstport => "dstport",
            KeyField::Srcmac => "srcmac",
            KeyField::Dstmac => "dstmac",
        }
    }
}

/// Farm state. `down`/`off` farms keep their configuration but take no traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FarmState {
    #[default]
    Up,
    Down,
    Off,
}

/// Backend states (docs/json.md): `drain` takes no new flows but keeps established flows and persistent
/// clients; `down` is failed (no new flows, persistence moves away); `off` is administratively out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendState {
    #[default]
    Up,
    Drain,
    Down,
    Off,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Drain => "drain",
            BackendState::Down => "down",
            BackendState::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Helper {
    #[default]
    None,
    Ftp,
    Pptp,
    Sip,
    Snmp,
    Tftp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogPoint {
    Input,
    Forward,
    Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictAction {
    Log,
    Drop,
    Accept,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyType {
    #[default]
    Blacklist,
    Whitelist,
}

/// A JSON value that may be written as a number or as a string (marks, rates).
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    N(u64),
    S(String),
}

/// A packet/connection mark: a JSON number, or a string in hex (`"0x1f"`) or decimal. Printed
/// back as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mark(pub u32);

impl Serialize for Mark {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Mark {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bad =
            || serde::de::Error::custom("a mark is a number 1-4294967295 or a hex string like \"0x1f\"");
        let v = match Raw::deserialize(d).map_err(|_| bad())? {
            Raw::N(n) => n,
            Raw::S(s) => {
                let t = s.trim();
                match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    Some(h) => u64::from_str_radix(h, 16).map_err(|_| bad())?,
                    None => t.parse().map_err(|_| bad())?,
                }
            }
        };
        match u32::try_from(v) {
            Ok(m) if m != 0 => Ok(Mark(m)),
            _ => Err(bad()),
        }
    }
}

/// Rate units of `*-rtlimit` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RateUnit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
}

/// A rate limit: JSON number (per second) or `"N/unit"`. Printed as `"N/unit"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub unit: RateUnit,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = match self.unit {
            RateUnit::Second => "second",
            RateUnit::Minute => "minute",
            RateUnit::Hour => "hour",
            RateUnit::Day => "day",
            RateUnit::Week => "week",
        };
        write!(f, "{}/{u}", self.count)
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (n, unit) = s.split_once('/').unwrap_or((s, "second"));
        let count = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a rate like \"10/second\""))?;
        let unit = match unit.trim() {
            "second" => RateUnit::Second,
            "minute" => RateUnit::Minute,
            "hour" => RateUnit::Hour,
            "day" => RateUnit::Day,
            "week" => RateUnit::Week,
            u => {
                return Err(format!(
                    "unknown rate unit {u:?}: expected second, minute, hour, day or week"
                ));
            }
        };
        Ok(Rate { count, unit })
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("a rate is a number (per second) or \"N/unit\""))?
        {
            Raw::N(count) => Ok(Rate {
                count,
                unit: RateUnit::Second,
            }),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A MAC address `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EtherAddr(pub [u8; 6]);

impl fmt::Display for EtherAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for EtherAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a MAC address like \"02:00:00:00:00:01\"");
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(EtherAddr(out))
    }
}

impl Serialize for EtherAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EtherAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_accept_numbers_and_hex_and_refuse_zero_and_overflow() {
        let m: Mark = serde_json::from_str("31").unwrap();
        assert_eq!(m, Mark(31));
        let m: Mark = serde_json::from_str("\"0x1F\"").unwrap();
        assert_eq!(m, Mark(31));
        assert!(serde_json::from_str::<Mark>("0").is_err());
        assert!(serde_json::from_str::<Mark>("4294967296").is_err());
        assert!(serde_json::from_str::<Mark>("\"0xzz\"").is_err());
        assert_eq!(serde_json::to_string(&Mark(31)).unwrap(), "31");
    }

    #[test]
    fn rates_parse_units_and_refuse_unknown_ones() {
        let r: Rate = serde_json::from_str("\"2/hour\"").unwrap();
        assert_eq!(
            r,
            Rate {
                count: 2,
                unit: RateUnit::Hour
            }
        );
        let r: Rate = serde_json::from_str("10").unwrap();
        assert_eq!(r.to_string(), "10/second");
        let e = serde_json::from_str::<Rate>("\"2/fortnight\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown rate unit \"fortnight\""), "{e}");
    }

    #[test]
    fn enums_refuse_unknown_values_by_name() {
        let e = serde_json::from_str::<Scheduler>("\"leastconn\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown variant `leastconn`") && e.contains("`rr`"),
            "{e}"
        );
        assert!(serde_json::from_str::<FarmFamily>("\"inet\"").is_err());
    }

    #[test]
    fn ether_addresses_round_trip() {
        let e: EtherAddr = "02:aB:00:00:00:01".parse().unwrap();
        assert_eq!(e.to_string(), "02:ab:00:00:00:01");
        assert!("02:ab:00:00:00".parse::<EtherAddr>().is_err());
        assert!("02:ab:00:00:00:01:07".parse::<EtherAddr>().is_err());
        assert!("2:ab:00:00:00:01".parse::<EtherAddr>().is_err());
    }
}
