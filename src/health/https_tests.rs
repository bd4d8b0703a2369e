//! The https probe against TLS servers started on the loopback by each test, with certificates
//! made by the test.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use super::probe::{Outcome, run};
use super::tls;
use crate::model::HealthCheck;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn check(v: serde_json::Value) -> HealthCheck {
    serde_json::from_value(v).unwrap()
}

async fn probe(c: serde_json::Value, port: u16) -> Outcome {
    let c = check(c);
    tokio::time::timeout(c.timeout.duration(), run(&c, LO, port))
        .await
        .unwrap_or_else(|_| Outcome::fail("timed out"))
}

struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// A self-signed certificate for `names`.
fn self_signed(names: &[&str]) -> Identity {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names).unwrap();
    Identity {
        chain: vec![made.cert.der().clone()],
        key: key_der(&made.signing_key),
    }
}

/// A CA, and a certificate it signed for `names`.
fn signed(names: &[&str]) -> (CertificateDer<'static>, Identity) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(params, ca_key);
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (
        ca.der().clone(),
        Identity {
            chain: vec![leaf.der().clone()],
            key: key_der(&key),
        },
    )
}

/// What the server saw of one exchange: the SNI name and the request head.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    sni: Option<String>,
    request: String,
}

/// A TLS server answering every request with `reply`. With `close_notify` false it drops the
/// connection after the reply without TLS's closing alert, as many servers do.
async fn tls_server(
    id: Identity,
    reply: &'static [u8],
    close_notify: bool,
) -> (u16, mpsc::UnboundedReceiver<Seen>) {
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(id.chain, id.key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((LO, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                // A client refusing the certificate ends the handshake: nothing to record.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(reply).await;
                if close_notify {
                    let _ = tls.shutdown().await;
                } else {
                    let _ = tls.flush().await;
                }
                let _ = tx.send(Seen {
                    sni,
                    request: String::from_utf8_lossy(&head).into_owned(),
                });
            });
        }
    });
    (port, rx)
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";
const DOWN: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown";

#[tokio::test]
async fn https_judges_status_and_body_over_tls() {
    let (ok, mut seen) = tls_server(self_signed(&["web.example"]), OK, true).await;
    let c = json!({"type": "https", "path": "/health", "tls-verify": false,
        "expect-body": "\"status\":\"ok\""});
    assert_eq!(probe(c, ok).await, Outcome::ok("http 200"));
    assert_eq!(
        seen.recv().await.unwrap().request,
        format!(
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{ok}\r\nUser-Agent: nftlbd-health-check\r\n\
             Connection: close\r\n\r\n"
        )
    );
    let c = json!({"type": "https", "path": "/health", "tls-verify": false,
        "expect-body": "\"status\":\"up\""});
    assert_eq!(
        probe(c, ok).await,
        Outcome::fail("http 200, body lacks \"\\\"status\\\":\\\"up\\\"\"")
    );
    // This server closes without TLS's closing alert: the response is still judged.
    let (down, _) = tls_server(self_signed(&["web.example"]), DOWN, false).await;
    let c = json!({"type": "https", "path": "/health", "tls-verify": false});
    assert_eq!(probe(c.clone(), down).await, Outcome::fail("http 503"));
    let c = json!({"type": "https", "path": "/health", "tls-verify": false, "expect-status": "503"});
    assert_eq!(probe(c, down).await, Outcome::ok("http 503"));
}

#[tokio::test]
async fn a_certificate_no_trusted_ca_signed_fails_unless_tls_verify_is_off() {
    let (port, mut seen) = tls_server(self_signed(&["web.example"]), OK, true).await;
    let verified = json!({"type": "https", "path": "/", "host": "web.example"});
    assert_eq!(
        probe(verified, port).await,
        Outcome::fail("tls handshake: unknown issuer")
    );
    let unverified = json!({"type": "https", "path": "/", "host": "web.example", "tls-verify": false});
    assert_eq!(probe(unverified, port).await, Outcome::ok("http 200"));
    // Only the second client finished the handshake and sent a request.
    assert_eq!(seen.recv().await.unwrap().sni.as_deref(), Some("web.example"));
    assert!(seen.try_recv().is_err());
}

#[tokio::test]
async fn host_is_the_server_name_and_the_host_header() {
    let (port, mut seen) = tls_server(self_signed(&["web.example"]), OK, true).await;
    let c = json!({"type": "https", "path": "/", "host": "web.example:8443", "tls-verify": false});
    assert_eq!(probe(c, port).await, Outcome::ok("http 200"));
    let s = seen.recv().await.unwrap();
    assert_eq!(s.sni.as_deref(), Some("web.example"));
    assert!(
        s.request.contains("\r\nHost: web.example:8443\r\n"),
        "{}",
        s.request
    );
    // Without host the address is the name: in the Host header, never as SNI.
    let c = json!({"type": "https", "path": "/", "tls-verify": false});
    assert_eq!(probe(c, port).await, Outcome::ok("http 200"));
    let s = seen.recv().await.unwrap();
    assert_eq!(s.sni, None);
    assert!(
        s.request.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
        "{}",
        s.request
    );
}

#[tokio::test]
async fn a_trusted_certificate_must_name_the_host() {
    let (ca, id) = signed(&["web.example"]);
    let (port, mut seen) = tls_server(id, OK, true).await;
    let mut roots = RootCertStore::empty();
    roots.add(ca).unwrap();
    let config = tls::config_with_roots(roots);
    let handshake = |c: serde_json::Value| {
        let config = config.clone();
        async move {
            let tcp = TcpStream::connect((LO, port)).await.unwrap();
            tls::connect_with(config, &check(c), tcp, LO)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    assert_eq!(
        handshake(json!({"type": "https", "path": "/", "host": "web.example"})).await,
        Ok(())
    );
    assert_eq!(
        handshake(json!({"type": "https", "path": "/", "host": "other.example"})).await,
        Err("tls handshake: certificate not valid for name other.example (it names web.example)".into())
    );
    assert_eq!(
        handshake(json!({"type": "https", "path": "/"})).await,
        Err("tls handshake: certificate not valid for name 127.0.0.1 (it names web.example)".into())
    );
    // The handshake that passed closed without a request; the refused ones never completed.
    assert_eq!(
        seen.recv().await.unwrap(),
        Seen {
            sni: Some("web.example".into()),
            request: String::new()
        }
    );
}

#[tokio::test]
async fn a_server_that_never_answers_the_handshake_times_out() {
    let listener = TcpListener::bind((LO, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds the connections, saying nothing.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let started = Instant::now();
    let c = json!({"type": "https", "path": "/", "tls-verify": false, "timeout": 0.3});
    assert_eq!(probe(c, port).await, Outcome::fail("timed out"));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn what_is_not_a_tls_server_is_named() {
    let closed = std::net::TcpListener::bind((LO, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = json!({"type": "https", "path": "/", "tls-verify": false});
    assert_eq!(
        probe(c.clone(), closed).await,
        Outcome::fail("connection refused")
    );
    // A plain http server answers the ClientHello with text, and closes.
    let listener = TcpListener::bind((LO, 0)).await.unwrap();
    let plain = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    assert_eq!(
        probe(c, plain).await,
        Outcome::fail("tls handshake: the server does not speak TLS")
    );
}
