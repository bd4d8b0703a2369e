//! The bytes of a persistence key: the farm tag, then each field padded to 4 bytes, as the
//! datapath concatenates them (pure; the renderers write static sessions with it, the session
//! reader decodes what the kernel learnt).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{EtherAddr, KeyField, KeyValue};
use crate::netlink::types::concat;

use super::family::IpFamily;
use super::layout::farm_tag;

fn field_len(fam: IpFamily, f: KeyField) -> usize {
    match f {
        KeyField::Srcip | KeyField::Dstip if fam == IpFamily::V6 => 16,
        KeyField::Srcip | KeyField::Dstip => 4,
        KeyField::Srcport | KeyField::Dstport => 2,
        KeyField::Srcmac | KeyField::Dstmac => 6,
    }
}

/// Splits a persistence key (`tag . fields…`, each padded to 4 bytes) into the farm tag and values.
pub fn decode_key(fam: IpFamily, fields: &[KeyField], key: &[u8]) -> Option<(u32, Vec<KeyValue>)> {
    let tag = u32::from_ne_bytes(key.get(0..4)?.try_into().ok()?);
    let mut at = 4;
    let mut values = Vec::new();
    for f in fields {
        let len = field_len(fam, *f);
        let b = key.get(at..at + len)?;
        values.push(match f {
            KeyField::Srcip | KeyField::Dstip if len == 16 => {
                KeyValue::Ip(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?)))
            }
            KeyField::Srcip | KeyField::Dstip => {
                KeyValue::Ip(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?)))
            }
            KeyField::Srcport | KeyField::Dstport => KeyValue::Port(u16::from_be_bytes([b[0], b[1]])),
            KeyField::Srcmac | KeyField::Dstmac => KeyValue::Mac(EtherAddr(<[u8; 6]>::try_from(b).ok()?)),
        });
        at += len.div_ceil(4) * 4;
    }
    Some((tag, values))
}

/// The key bytes of a client of farm `id`.
pub fn encode_key(id: u16, values: &[KeyValue]) -> Vec<u8> {
    let mut parts: Vec<Vec<u8>> = vec![farm_tag(id).to_ne_bytes().to_vec()];
    for v in values {
        parts.push(match v {
            KeyValue::Ip(IpAddr::V4(a)) => a.octets().to_vec(),
            KeyValue::Ip(IpAddr::V6(a)) => a.octets().to_vec(),
            KeyValue::Port(p) => p.to_be_bytes().to_vec(),
            KeyValue::Mac(m) => m.0.to_vec(),
        });
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    concat(&refs)
}

pub fn format_client(values: &[KeyValue]) -> String {
    let parts: Vec<String> = values
        .iter()
        .map(|v| match v {
            KeyValue::Ip(ip) => ip.to_string(),
            KeyValue::Port(p) => p.to_string(),
            KeyValue::Mac(m) => m.to_string(),
        })
        .collect();
    parts.join(" . ")
}

/// A client a caller names for deletion: its key values, and, when it has a static session, the
/// configuration without it (static sessions live in the configuration; learnt ones only in the
/// kernel). Both engines delete sessions through this.
pub fn unpin(
    config: &crate::model::Config,
    farm: &crate::model::Farm,
    client: &str,
) -> Result<(Vec<KeyValue>, Option<crate::model::Config>), crate::model::Invalid> {
    let values = crate::model::parse_session_client(&farm.persistence, client)
        .map_err(|e| crate::model::Invalid::one(format!("farms[{}].sessions.client", farm.name), e))?;
    let Some(i) = farm
        .sessions
        .iter()
        .position(|s| s.client.values() == values.as_slice())
    else {
        return Ok((values, None));
    };
    let mut without = config.clone();
    if let Some(f) = without.farms.iter_mut().find(|x| x.name == farm.name) {
        f.sessions.remove(i);
    }
    Ok((values, Some(without)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let v = vec![
            KeyValue::Ip("2001:db8::7".parse().unwrap()),
            KeyValue::Port(4000),
            KeyValue::Mac("02:00:00:00:00:01".parse().unwrap()),
        ];
        let fields = [KeyField::Srcip, KeyField::Srcport, KeyField::Srcmac];
        let key = encode_key(9, &v);
        assert_eq!(key.len(), 4 + 16 + 4 + 8);
        assert_eq!(
            decode_key(IpFamily::V6, &fields, &key),
            Some((farm_tag(9), v.clone()))
        );
        assert_eq!(format_client(&v), "2001:db8::7 . 4000 . 02:00:00:00:00:01");
        assert_eq!(decode_key(IpFamily::V6, &fields, &key[..20]), None);
    }
}
