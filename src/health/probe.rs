//! One run of a check against one address and port. A run never waits for more than the check's
//! timeout: the scheduler drops it at the deadline (an exec child is killed with its group).

use std::ffi::OsString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;

use nix::sys::socket::{setsockopt, sockopt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use super::agent::{Advice, MAX_AGENT_LINE, describe, parse_agent_line};
use super::{dns, exec, http, tls};
use crate::model::{CheckType, HealthCheck, Pattern};

/// What one run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// "http 200", "connection refused", "agent drain 50%".
    pub reason: String,
    /// What an agent asked for; none for other checks.
    pub advice: Option<Advice>,
}

impl Outcome {
    pub fn ok(reason: impl Into<String>) -> Outcome {
        Outcome {
            ok: true,
            reason: reason.into(),
            advice: None,
        }
    }

    pub fn fail(reason: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            reason: reason.into(),
            advice: None,
        }
    }
}

/// Runs `check` once against `addr`:`port`. Not bounded here: the caller applies the timeout.
pub async fn run(check: &HealthCheck, addr: IpAddr, port: u16) -> Outcome {
    let result = match check.kind {
        CheckType::Tcp => tcp_connect(check, addr, port).await.map(|stream| {
            abort(&stream);
            Outcome::ok("tcp connected")
        }),
        CheckType::Http => http_probe(check, addr, port).await,
        CheckType::Https => https_probe(check, addr, port).await,
        CheckType::Udp => udp_probe(check, addr, port).await,
        CheckType::Dns => dns_probe(check, addr, port).await,
        CheckType::Exec => return exec::run(check, addr, port).await,
        CheckType::Agent => agent_probe(check, addr, check.agent_port.unwrap_or(port)).await,
    };
    result.unwrap_or_else(|e| Outcome::fail(describe_io(&e)))
}

/// An I/O error as a reason: "connection refused", without the OS error number.
pub fn describe_io(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "i/o error".into(),
    }
}

/// Applies the check's source address, interface and mark, so probes take the traffic's path.
fn prepare<S: AsFd>(check: &HealthCheck, socket: &S) -> io::Result<()> {
    if let Some(iface) = &check.iface {
        setsockopt(socket, sockopt::BindToDevice, &OsString::from(iface)).map_err(io::Error::from)?;
    }
    if let Some(mark) = check.mark {
        setsockopt(socket, sockopt::Mark, &mark).map_err(io::Error::from)?;
    }
    Ok(())
}

fn source(check: &HealthCheck, addr: IpAddr) -> io::Result<SocketAddr> {
    let ip = match (check.source_addr, addr) {
        (Some(src), dst) if src.is_ipv4() == dst.is_ipv4() => src,
        (Some(src), dst) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("source-addr {src} cannot reach {dst}"),
            ));
        }
        (None, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    Ok(SocketAddr::new(ip, 0))
}

async fn tcp_connect(check: &HealthCheck, addr: IpAddr, port: u16) -> io::Result<TcpStream> {
    let socket = match addr {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    prepare(check, &socket)?;
    if check.source_addr.is_some() {
        socket.bind(source(check, addr)?)?;
    }
    socket.connect(SocketAddr::new(addr, port)).await
}

/// Makes closing `stream` send a reset instead of a FIN: a tcp check's connection then leaves
/// no TIME_WAIT, in the socket table nor in conntrack, where the balancer's own tables keep a
/// closed connection's entry 120 s (10 s after a reset). 10,000 backends checked every second
/// filled conntrack's 262,144 entries within 30 s and its drops stalled the checks
/// (benches/health). Set before the exchange: http, https and agent checks close once they have
/// their answer (or on timeout), and the backend has nothing more to say to them.
fn abort(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // Failing leaves the FIN close: the check's verdict stands either way.
    let _ = setsockopt(stream, sockopt::Linger, &linger);
}

async fn http_probe(check: &HealthCheck, addr: IpAddr, port: u16) -> io::Result<Outcome> {
    let stream = tcp_connect(check, addr, port).await?;
    abort(&stream);
    http_exchange(check, stream, addr, port).await
}

async fn https_probe(check: &HealthCheck, addr: IpAddr, port: u16) -> io::Result<Outcome> {
    let stream = tcp_connect(check, addr, port).await?;
    abort(&stream);
    let stream = tls::connect(check, stream, addr).await?;
    http_exchange(check, stream, addr, port).await
}

/// The request of an http or https check over `stream`, and the verdict on its response.
async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    check: &HealthCheck,
    mut stream: S,
    addr: IpAddr,
    port: u16,
) -> io::Result<Outcome> {
    stream.write_all(&http::build_request(check, addr, port)).await?;
    stream.flush().await?;
    let head = check.method == "HEAD";
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let response = loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS server that closes without close_notify: the response is judged on what
            // arrived, as over plain TCP (a health page is no payment to be truncated).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n.min(http::MAX_RESPONSE - buf.len())]);
        match http::parse_response(&buf, n == 0, head) {
            Ok(Some(r)) => break r,
            Ok(None) => continue,
            Err(reason) => return Ok(Outcome::fail(reason)),
        }
    };
    let status = response.status;
    if !check.expect_status.contains(status) {
        return Ok(Outcome::fail(format!("http {status}")));
    }
    if let Some(source) = &check.expect_body {
        let pattern = Pattern::new(source).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let found = pattern.is_match(&response.body);
        if found == check.expect_body_absent {
            let what = if found { "has" } else { "lacks" };
            return Ok(Outcome::fail(format!("http {status}, body {what} {source:?}")));
        }
    }
    Ok(Outcome::ok(format!("http {status}")))
}

async fn udp_socket(check: &HealthCheck, addr: IpAddr, port: u16) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(source(check, addr)?).await?;
    prepare(check, &socket)?;
    socket.connect(SocketAddr::new(addr, port)).await?;
    Ok(socket)
}

async fn udp_probe(check: &HealthCheck, addr: IpAddr, port: u16) -> io::Result<Outcome> {
    let socket = udp_socket(check, addr, port).await?;
    socket
        .send(check.send.as_deref().unwrap_or_default().as_bytes())
        .await?;
    let mut buf = vec![0u8; 2048];
    let n = socket.recv(&mut buf).await?;
    let reply = &buf[..n];
    if let Some(source) = &check.expect {
        let pattern = Pattern::new(source).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if !pattern.is_match(reply) {
            return Ok(Outcome::fail(format!("udp reply lacks {source:?}")));
        }
    }
    Ok(Outcome::ok(format!("udp reply of {n} bytes")))
}

async fn dns_probe(check: &HealthCheck, addr: IpAddr, port: u16) -> io::Result<Outcome> {
    let socket = udp_socket(check, addr, port).await?;
    let id = super::random::u16();
    let name = check.query_name.as_deref().unwrap_or(".");
    socket.send(&dns::build_query(id, name, check.query_type)).await?;
    let mut buf = vec![0u8; 1500];
    // Strays (late replies to an earlier query) are skipped; the timeout bounds the wait.
    loop {
        let n = socket.recv(&mut buf).await?;
        match dns::parse_reply(id, &buf[..n]) {
            Err(_) => continue,
            Ok(Ok(rcode)) if rcode == check.expect_rcode => {
                return Ok(Outcome::ok(format!("dns {}", rcode.as_str())));
            }
            Ok(Ok(rcode)) => {
                return Ok(Outcome::fail(format!(
                    "dns {}, expected {}",
                    rcode.as_str(),
                    check.expect_rcode.as_str()
                )));
            }
            Ok(Err(code)) => return Ok(Outcome::fail(format!("dns rcode {code}"))),
        }
    }
}

async fn agent_probe(check: &HealthCheck, addr: IpAddr, port: u16) -> io::Result<Outcome> {
    let mut stream = tcp_connect(check, addr, port).await?;
    abort(&stream);
    let mut line = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    while !line.contains(&b'\n') && line.len() < MAX_AGENT_LINE {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&chunk[..n]);
    }
    let end = line
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(line.len())
        .min(MAX_AGENT_LINE);
    let text = String::from_utf8_lossy(&line[..end]);
    Ok(match parse_agent_line(&text) {
        Ok(reply) => Outcome {
            ok: !reply.down,
            reason: describe(&reply),
            advice: (!reply.down).then_some(reply.advice),
        },
        Err(reason) => Outcome::fail(reason),
    })
}
