//! The TLS of the `https` check: a client handshake over the probe's TCP connection, with the
//! backend's certificate checked against the system's CA store (`tls-verify`) or taken as it is,
//! and a failed handshake told in an operator's words.

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, ConfigBuilder, DigitallySignedStruct, RootCertStore,
    SignatureScheme, WantsVerifier,
};

use super::probe::describe_io;
use crate::model::HealthCheck;

/// The handshake of `check` over `tcp`, to the backend at `addr`.
pub async fn connect(check: &HealthCheck, tcp: TcpStream, addr: IpAddr) -> io::Result<TlsStream<TcpStream>> {
    let config = if check.tls_verify {
        verified().await
    } else {
        unverified()
    };
    connect_with(config, check, tcp, addr).await
}

/// [`connect`] with the client configuration given, so tests can trust a CA of their own.
pub(super) async fn connect_with(
    config: Arc<ClientConfig>,
    check: &HealthCheck,
    tcp: TcpStream,
    addr: IpAddr,
) -> io::Result<TlsStream<TcpStream>> {
    let name = server_name(check, addr)?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("tls handshake: {}", describe(&e))))
}

/// The name the certificate must hold: the check's `host` without a port, else the backend's
/// address. rustls sends a DNS name as SNI and never an address.
fn server_name(check: &HealthCheck, addr: IpAddr) -> io::Result<ServerName<'static>> {
    match check.server_name() {
        None => Ok(ServerName::IpAddress(addr.into())),
        Some(name) => ServerName::try_from(name.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("host {name:?} is not a tls server name"),
            )
        }),
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(ring::default_provider()))
        .clone()
}

/// A client of TLS 1.2 and 1.3 with ring's cipher suites, its certificate check to be chosen.
fn builder() -> ConfigBuilder<ClientConfig, WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        // Refused only for a provider without suites for these versions; ring has them all.
        .expect("ring's default provider supports TLS 1.2 and 1.3")
}

/// A client trusting `roots`, checking chain and name.
pub(super) fn config_with_roots(roots: RootCertStore) -> Arc<ClientConfig> {
    Arc::new(builder().with_root_certificates(roots).with_no_client_auth())
}

/// The client of `tls-verify: true`. The system's store is read once, off the runtime's threads,
/// when the first https check runs: a CA added later counts after a restart.
async fn verified() -> Arc<ClientConfig> {
    static VERIFIED: OnceCell<Arc<ClientConfig>> = OnceCell::const_new();
    VERIFIED
        .get_or_init(|| async {
            // A reader that panicked leaves no CA: every verified check fails, none passes unchecked.
            let roots = tokio::task::spawn_blocking(system_roots)
                .await
                .unwrap_or_else(|_| RootCertStore::empty());
            config_with_roots(roots)
        })
        .await
        .clone()
}

fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!("https checks: reading the system's CA certificates: {e}");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "https checks: the system's CA store has no certificate; checks with tls-verify fail (unknown issuer)"
        );
    } else if ignored > 0 {
        tracing::warn!("https checks: {ignored} of the system's CA certificates could not be read");
    }
    roots
}

/// The client of `tls-verify: false`: any certificate, the handshake still signed by its key.
fn unverified() -> Arc<ClientConfig> {
    static UNVERIFIED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    UNVERIFIED
        .get_or_init(|| {
            let verifier = Arc::new(AnyCertificate {
                algorithms: provider().signature_verification_algorithms,
            });
            Arc::new(
                builder()
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// Takes any certificate, as `tls-verify: false` asks; the handshake's signatures are still
/// checked, so the peer holds the key of the certificate it shows.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A failed handshake in an operator's words: "certificate not valid for name web.example",
/// "unknown issuer", "connection closed by the server".
fn describe(e: &io::Error) -> String {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => "connection closed by the server".into(),
            _ => describe_io(e),
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => describe_certificate(c),
        // The first bytes back were no TLS record: a plain http server, or another protocol.
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            "the server does not speak TLS".into()
        }
        rustls::Error::AlertReceived(alert) => {
            format!("the server sent alert {}", words(&format!("{alert:?}")))
        }
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => "tls error".into(),
            }
        }
    }
}

/// The most names of a certificate a reason lists.
const SHOWN_NAMES: usize = 3;

fn describe_certificate(c: &CertificateError) -> String {
    match c {
        CertificateError::NotValidForNameContext { expected, presented } => {
            // A few names tell the mistake; a reason stays one short line.
            let mut names = presented
                .iter()
                .take(SHOWN_NAMES)
                .map(|n| unwrap_name(n))
                .collect::<Vec<_>>()
                .join(", ");
            if presented.is_empty() {
                names = "no name".into();
            } else if presented.len() > SHOWN_NAMES {
                names += &format!(" and {} more", presented.len() - SHOWN_NAMES);
            }
            format!(
                "certificate not valid for name {} (it names {names})",
                expected.to_str()
            )
        }
        CertificateError::NotValidForName => "certificate not valid for name".into(),
        CertificateError::UnknownIssuer => "unknown issuer".into(),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "certificate expired".into(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate not valid yet".into()
        }
        CertificateError::Revoked => "certificate revoked".into(),
        CertificateError::BadSignature => "certificate badly signed".into(),
        CertificateError::BadEncoding => "certificate badly encoded".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "certificate not for a server".into()
        }
        other => format!("certificate {}", words(&format!("{other:?}"))),
    }
}

/// `DnsName("web.example")` → `web.example`, `IpAddress(10.0.0.1)` → `10.0.0.1`: the names a
/// certificate presents, as its verifier lists them, without their kind.
fn unwrap_name(presented: &str) -> &str {
    presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map(|inner| inner.trim_matches('"'))
        .unwrap_or(presented)
}

/// `HandshakeFailure` → "handshake failure": a Debug name as words.
fn words(camel: &str) -> String {
    let name = camel.split(['(', ' ', '{']).next().unwrap_or(camel);
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(ch.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_read_as_words() {
        assert_eq!(words("HandshakeFailure"), "handshake failure");
        assert_eq!(words("Unknown(42)"), "unknown");
        assert_eq!(words("BadCertificate"), "bad certificate");
    }

    #[test]
    fn certificate_problems_are_named() {
        let name = ServerName::try_from("web.example").unwrap().to_owned();
        assert_eq!(
            describe_certificate(&CertificateError::NotValidForNameContext {
                expected: name,
                presented: vec!["DnsName(\"other.example\")".into(), "IpAddress(10.0.0.1)".into()]
            }),
            "certificate not valid for name web.example (it names other.example, 10.0.0.1)"
        );
        let many = CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("web.example").unwrap().to_owned(),
            presented: (1..=5).map(|i| format!("DnsName(\"n{i}.example\")")).collect(),
        };
        assert_eq!(
            describe_certificate(&many),
            "certificate not valid for name web.example (it names n1.example, n2.example, n3.example and 2 more)"
        );
        assert_eq!(
            describe_certificate(&CertificateError::UnknownIssuer),
            "unknown issuer"
        );
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::Expired),
        );
        assert_eq!(describe(&e), "certificate expired");
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(describe(&eof), "connection closed by the server");
    }
}
