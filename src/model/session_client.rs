//! A static session's client: the persistence key's values joined with `" . "`
//! (`"192.0.2.7 . 40000"`). Parsed once when the document is read into typed values; whether they
//! fit the farm's persistence fields (count and kinds) is validation's, which knows the farm.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::values::{EtherAddr, KeyField};

/// A persistence key value, in the order of the persistence fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyValue {
    Ip(IpAddr),
    Port(u16),
    Mac(EtherAddr),
}

impl KeyValue {
    /// True when this value can stand for `field`.
    pub fn fits(&self, field: KeyField) -> bool {
        matches!(
            (self, field),
            (KeyValue::Ip(_), KeyField::Srcip | KeyField::Dstip)
                | (KeyValue::Port(_), KeyField::Srcport | KeyField::Dstport)
                | (KeyValue::Mac(_), KeyField::Srcmac | KeyField::Dstmac)
        )
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValue::Ip(ip) => write!(f, "{ip}"),
            KeyValue::Port(p) => write!(f, "{p}"),
            KeyValue::Mac(m) => write!(f, "{m}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("{part:?} is not a port 1-65535")]
    NotAPort { part: String },
    #[error("{part:?} is not an IP address, a port 1-65535 or a MAC address")]
    Unknown { part: String },
}

/// One part: the three kinds cannot be mistaken for each other (a MAC has six groups, an IPv6
/// address eight or a `::`; a port is digits only).
fn key_value(part: &str) -> Result<KeyValue, ClientError> {
    let p = part.trim();
    if let Ok(ip) = p.parse() {
        return Ok(KeyValue::Ip(ip));
    }
    if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
        return match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(KeyValue::Port(n)),
            _ => Err(ClientError::NotAPort { part: p.into() }),
        };
    }
    p.parse()
        .map(KeyValue::Mac)
        .map_err(|_| ClientError::Unknown { part: p.into() })
}

/// A client key: one value per persistence field. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionClient(Vec<KeyValue>);

impl SessionClient {
    pub fn values(&self) -> &[KeyValue] {
        &self.0
    }

    /// Why these values are not a key of `fields` (count, then each kind), or `None` when they are.
    pub fn mismatch(&self, fields: &[KeyField]) -> Option<String> {
        if self.0.len() != fields.len() {
            let want: Vec<&str> = fields.iter().map(|f| f.as_str()).collect();
            return Some(format!(
                "{:?} has {} part(s) but the persistence key is {} ({}), joined with \" . \"",
                self.to_string(),
                self.0.len(),
                fields.len(),
                want.join(" . ")
            ));
        }
        let (v, f) = self.0.iter().zip(fields).find(|(v, f)| !v.fits(**f))?;
        let kind = match f {
            KeyField::Srcip | KeyField::Dstip => "an IP address",
            KeyField::Srcport | KeyField::Dstport => "a port 1-65535",
            KeyField::Srcmac | KeyField::Dstmac => "a MAC address",
        };
        Some(format!("\"{v}\" is not {kind} ({})", f.as_str()))
    }
}

impl From<Vec<KeyValue>> for SessionClient {
    fn from(values: Vec<KeyValue>) -> SessionClient {
        SessionClient(values)
    }
}

impl FromStr for SessionClient {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<SessionClient, ClientError> {
        s.split(" . ")
            .map(key_value)
            .collect::<Result<_, _>>()
            .map(SessionClient)
    }
}

impl fmt::Display for SessionClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" . ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl Serialize for SessionClient {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionClient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SessionClient, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a client given by a front end (`"192.0.2.7 . 40000"`) as a key of `fields`.
pub fn parse_session_client(fields: &[KeyField], client: &str) -> Result<Vec<KeyValue>, String> {
    let c: SessionClient = client.parse().map_err(|e: ClientError| e.to_string())?;
    match c.mismatch(fields) {
        Some(why) => Err(why),
        None => Ok(c.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SessionClient, ClientError> {
        s.parse()
    }

    #[test]
    fn parses_each_kind_and_prints_the_canonical_text() {
        let c = parse("2001:DB8::7 . 4000 . 02:AB:00:00:00:01").unwrap();
        assert_eq!(
            c.values(),
            [
                KeyValue::Ip("2001:db8::7".parse().unwrap()),
                KeyValue::Port(4000),
                KeyValue::Mac(EtherAddr([2, 0xab, 0, 0, 0, 1])),
            ]
        );
        assert_eq!(c.to_string(), "2001:db8::7 . 4000 . 02:ab:00:00:00:01");
        for canonical in [
            "192.0.2.7 . 40000",
            "192.0.2.7",
            "::1 . 1",
            "02:00:00:00:00:01 . 65535",
        ] {
            assert_eq!(parse(canonical).unwrap().to_string(), canonical);
        }
    }

    #[test]
    fn each_refusal_names_the_part() {
        let refused = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(refused("192.0.2.7 . 0"), "\"0\" is not a port 1-65535");
        assert_eq!(refused("192.0.2.7 . 65536"), "\"65536\" is not a port 1-65535");
        assert_eq!(
            refused("192.0.2.7 . x"),
            "\"x\" is not an IP address, a port 1-65535 or a MAC address"
        );
        assert_eq!(
            refused(""),
            "\"\" is not an IP address, a port 1-65535 or a MAC address"
        );
        assert_eq!(
            refused("192.0.2.7 . -1"),
            "\"-1\" is not an IP address, a port 1-65535 or a MAC address"
        );
        // Without the spaces it is one part, and not a value.
        assert_eq!(
            refused("192.0.2.7.4000"),
            "\"192.0.2.7.4000\" is not an IP address, a port 1-65535 or a MAC address"
        );
    }

    #[test]
    fn a_key_must_match_the_persistence_fields() {
        let fields = [KeyField::Srcip, KeyField::Srcport];
        assert_eq!(parse("192.0.2.7 . 4000").unwrap().mismatch(&fields), None);
        assert_eq!(
            parse("192.0.2.7").unwrap().mismatch(&fields).unwrap(),
            "\"192.0.2.7\" has 1 part(s) but the persistence key is 2 (srcip . srcport), joined with \" . \""
        );
        assert_eq!(
            parse("4000 . 192.0.2.7").unwrap().mismatch(&fields).unwrap(),
            "\"4000\" is not an IP address (srcip)"
        );
        assert_eq!(
            parse("192.0.2.7 . 02:00:00:00:00:01")
                .unwrap()
                .mismatch(&fields)
                .unwrap(),
            "\"02:00:00:00:00:01\" is not a port 1-65535 (srcport)"
        );
        assert_eq!(
            parse("192.0.2.7 . 4000")
                .unwrap()
                .mismatch(&[KeyField::Srcip, KeyField::Dstmac])
                .unwrap(),
            "\"4000\" is not a MAC address (dstmac)"
        );
        assert_eq!(
            parse_session_client(&fields, "192.0.2.7 . 4000").unwrap(),
            vec![KeyValue::Ip("192.0.2.7".parse().unwrap()), KeyValue::Port(4000)]
        );
        assert_eq!(
            parse_session_client(&fields, "192.0.2.7 . 0").unwrap_err(),
            "\"0\" is not a port 1-65535"
        );
    }

    #[test]
    fn json_is_the_canonical_string_both_ways() {
        let c: SessionClient = serde_json::from_str(r#""192.0.2.7 . 40000""#).unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), r#""192.0.2.7 . 40000""#);
        let e = serde_json::from_value::<SessionClient>(serde_json::json!("192.0.2.7 . 0")).unwrap_err();
        assert_eq!(e.to_string(), "\"0\" is not a port 1-65535");
    }
}
