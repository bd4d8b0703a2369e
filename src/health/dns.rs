//! A minimal DNS client for the `dns` check: one question over UDP, and the response code of the
//! answer (RFC 1035 4.1).

use crate::model::{QueryType, Rcode};

/// The query for `name` with `id`, recursion desired.
pub fn build_query(id: u16, name: &str, qtype: QueryType) -> Vec<u8> {
    let mut m = Vec::with_capacity(18 + name.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question, no records
    for label in name.split('.').filter(|l| !l.is_empty()) {
        // Validation keeps labels within 63 bytes, so the length fits its byte.
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.code().to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes()); // IN
    m
}

/// The response code of a reply to query `id`; an error says why the datagram is no such reply.
pub fn parse_reply(id: u16, reply: &[u8]) -> Result<Result<Rcode, u8>, String> {
    if reply.len() < 12 {
        return Err(format!("dns reply of {} bytes", reply.len()));
    }
    if u16::from_be_bytes([reply[0], reply[1]]) != id {
        return Err("dns reply to another query".into());
    }
    if reply[2] & 0x80 == 0 {
        return Err("dns query instead of a reply".into());
    }
    let code = reply[3] & 0x0f;
    Ok(Rcode::from_code(code).ok_or(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_laid_out_as_rfc_1035_says() {
        let q = build_query(0xbeef, "www.example.com.", QueryType::Aaaa);
        let want: Vec<u8> = [
            &[0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0][..],
            &[3],
            b"www",
            &[7],
            b"example",
            &[3],
            b"com",
            &[0, 0, 28, 0, 1],
        ]
        .concat();
        assert_eq!(q, want);
        // The root: no labels at all.
        assert_eq!(build_query(1, ".", QueryType::Ns)[12..], [0, 0, 2, 0, 1]);
    }

    #[test]
    fn replies_give_their_rcode_and_strangers_are_refused() {
        let mut r = build_query(7, "example.com", QueryType::A);
        r[2] |= 0x80;
        r[3] = 0x83;
        assert_eq!(parse_reply(7, &r), Ok(Ok(Rcode::Nxdomain)));
        r[3] = 0x80;
        assert_eq!(parse_reply(7, &r), Ok(Ok(Rcode::Noerror)));
        r[3] = 0x89;
        assert_eq!(parse_reply(7, &r), Ok(Err(9)));
        assert_eq!(parse_reply(8, &r), Err("dns reply to another query".into()));
        assert_eq!(parse_reply(7, &r[..11]), Err("dns reply of 11 bytes".into()));
        let q = build_query(7, "example.com", QueryType::A);
        assert_eq!(parse_reply(7, &q), Err("dns query instead of a reply".into()));
    }
}
