//! The HTTP/1.1 of the `http` check: one request with `Connection: close`, and a response read
//! far enough to judge its status and body.

use std::net::{IpAddr, SocketAddr};

use crate::model::HealthCheck;

/// The most of a response read: a health page is small, and a check must not buffer a download.
pub const MAX_RESPONSE: usize = 64 * 1024;

pub fn build_request(check: &HealthCheck, addr: IpAddr, port: u16) -> Vec<u8> {
    let path = check.path.as_deref().unwrap_or("/");
    let host = match &check.host {
        Some(h) => h.clone(),
        None => SocketAddr::new(addr, port).to_string(),
    };
    let mut r = format!(
        "{} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: nftlbd-health-check\r\nConnection: close\r\n",
        check.method
    );
    for (name, value) in &check.headers {
        r.push_str(&format!("{name}: {value}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The response in `buf`; `Ok(None)` while more is needed (before `eof`). A response cut at
/// `MAX_RESPONSE` is judged on what arrived.
pub fn parse_response(buf: &[u8], eof: bool, head: bool) -> Result<Option<Response>, String> {
    let full = eof || buf.len() >= MAX_RESPONSE;
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if full {
            Err(if buf.is_empty() {
                "http connection closed without a response".into()
            } else {
                "http response without a complete header".into()
            })
        } else {
            Ok(None)
        };
    };
    let header = String::from_utf8_lossy(&buf[..end]);
    let mut lines = header.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("not an http status line: {:?}", truncate(status_line)))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let raw = &buf[end + 4..];
    let bodiless = head || status == 204 || status == 304 || (100..200).contains(&status);
    if bodiless {
        return Ok(Some(Response {
            status,
            body: Vec::new(),
        }));
    }
    if chunked {
        let (body, done) = dechunk(raw);
        return Ok((done || full).then_some(Response { status, body }));
    }
    match length {
        Some(n) if raw.len() >= n => Ok(Some(Response {
            status,
            body: raw[..n].to_vec(),
        })),
        _ if full => Ok(Some(Response {
            status,
            body: raw.to_vec(),
        })),
        _ => Ok(None),
    }
}

/// The body of a chunked transfer, and whether its last chunk arrived. Malformed framing ends
/// the body where it breaks.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(raw, b"\r\n") else {
            return (body, false);
        };
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            return (body, true);
        };
        if size == 0 {
            return (body, true);
        }
        let data = &raw[eol + 2..];
        if data.len() < size {
            body.extend_from_slice(data);
            return (body, false);
        }
        body.extend_from_slice(&data[..size]);
        raw = data.get(size + 2..).unwrap_or_default();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_has_the_method_path_host_and_headers() {
        let check: HealthCheck = serde_json::from_value(serde_json::json!({"type": "http",
            "method": "HEAD", "path": "/health", "headers": {"X-B": "2", "X-A": "1"}}))
        .unwrap();
        let r = build_request(&check, "10.0.0.1".parse().unwrap(), 8080);
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "HEAD /health HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nUser-Agent: nftlbd-health-check\r\n\
             Connection: close\r\nX-A: 1\r\nX-B: 2\r\n\r\n"
        );
        let mut check = check;
        check.host = Some("www.example.com".into());
        let r = String::from_utf8(build_request(&check, "2001:db8::1".parse().unwrap(), 80)).unwrap();
        assert!(r.contains("\r\nHost: www.example.com\r\n"), "{r}");
        check.host = None;
        let r = String::from_utf8(build_request(&check, "2001:db8::1".parse().unwrap(), 80)).unwrap();
        assert!(r.contains("\r\nHost: [2001:db8::1]:80\r\n"), "{r}");
    }

    #[test]
    fn responses_are_complete_by_length_by_chunks_or_by_the_end() {
        let ok = |status, body: &str| {
            Ok(Some(Response {
                status,
                body: body.as_bytes().to_vec(),
            }))
        };
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more";
        assert_eq!(parse_response(r, false, false), ok(200, "hello"));
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello";
        assert_eq!(parse_response(r, false, false), Ok(None));
        assert_eq!(parse_response(r, true, false), ok(200, "hello"));
        let r = b"HTTP/1.0 503 Service Unavailable\r\n\r\ndown";
        assert_eq!(parse_response(r, false, false), Ok(None));
        assert_eq!(parse_response(r, true, false), ok(503, "down"));
        let r = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        assert_eq!(parse_response(r, false, false), ok(200, "hello world"));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
        assert_eq!(parse_response(r, false, false), Ok(None));
        let r = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(r, false, false), ok(204, ""));
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
        assert_eq!(parse_response(r, false, true), ok(200, ""));
    }

    #[test]
    fn what_is_not_http_is_named() {
        assert_eq!(
            parse_response(b"", true, false),
            Err("http connection closed without a response".into())
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n", true, false),
            Err("http response without a complete header".into())
        );
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n", false, false), Ok(None));
        assert_eq!(
            parse_response(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", true, false),
            Err("not an http status line: \"SSH-2.0-OpenSSH_9.2\"".into())
        );
    }
}
