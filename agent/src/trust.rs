//! Whom a Veil client trusts when it talks to the operator, and the HTTP
//! client built from that: the agent, `veil-operator get/logs/link` and the
//! follower→leader forwarder all go through [`Trust::http_client`].
//!
//! - [`Trust::Pinned`]: the SHA-256 of the operator's CA certificate (as
//!   `kubeadm join --discovery-token-ca-cert-hash` does). The server must
//!   present that CA in its chain and the leaf must verify against it and
//!   name the host ([`PinnedCa`]).
//! - [`Trust::CaFile`]: a PEM file of CA certificates; the usual chain
//!   verification against exactly those roots (never the system's).
//! - [`Trust::Plaintext`]: `http://`, only to a loopback address unless the
//!   user said `--insecure-plaintext` ([`check_url`]).
//!
//! Every client ignores proxy variables (`no_proxy`): a proxy on the path is
//! exactly what pinning guards against, and a bearer token must not be
//! handed to one.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// Prefix of a CA pin: `sha256:` and 64 hex digits.
pub const PIN_PREFIX: &str = "sha256:";

/// Why a trust setting or an operator URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "`{0}` is not a CA certificate hash: write `sha256:` and 64 hex digits (the value `veil-operator token create` prints in the join value)"
    )]
    Pin(String),
    #[error("cannot read the CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("the CA file {0} holds no PEM certificate")]
    EmptyCaFile(PathBuf),
    #[error("`{url}` is not a usable operator URL: {reason}")]
    Url { url: String, reason: String },
    #[error(
        "refusing plain http:// to {host}: node and admin tokens would cross the network in clear. Use https:// with --join/--ca-cert-hash/--ca-file, or pass --insecure-plaintext if this network is trusted"
    )]
    PlaintextNotLoopback { host: String },
    #[error(
        "https://{host} needs to know which operator to trust: pass --join (the value `veil-operator token create` prints), --ca-cert-hash sha256:HEX or --ca-file PATH"
    )]
    NoTrustAnchor { host: String },
    #[error("cannot build the TLS client: {0}")]
    Tls(String),
}

/// SHA-256 of a CA certificate's DER: the pin.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaPin([u8; 32]);

impl CaPin {
    /// Parses `sha256:HEX` (64 hex digits, either case; the prefix is required).
    pub fn parse(text: &str) -> Result<CaPin, TrustError> {
        let bad = || TrustError::Pin(text.to_owned());
        let hex_digits = text.trim().strip_prefix(PIN_PREFIX).ok_or_else(bad)?;
        let bytes = hex::decode(hex_digits).map_err(|_| bad())?;
        let array: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(CaPin(array))
    }

    /// The pin of a DER certificate.
    pub fn of_der(der: &[u8]) -> CaPin {
        CaPin(Sha256::digest(der).into())
    }
}

impl std::fmt::Display for CaPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PIN_PREFIX}{}", hex::encode(self.0))
    }
}

impl std::fmt::Debug for CaPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaPin({self})")
    }
}

impl std::str::FromStr for CaPin {
    type Err = TrustError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CaPin::parse(s)
    }
}

/// Whom to trust as the operator.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The CA certificate with this SHA-256 (must be in the served chain).
    Pinned(CaPin),
    /// These CA certificates (from a PEM file).
    CaFile(Vec<CertificateDer<'static>>),
    /// These CA certificates, and the server's certificate must name this
    /// DNS name whatever address is dialled: replicas reached by pod IP
    /// that share one certificate for their Service's name.
    CaFileNamed(Vec<CertificateDer<'static>>, String),
    /// No TLS: `http://` only.
    Plaintext,
}

impl Trust {
    /// Reads a PEM file of CA certificates.
    pub fn ca_file(path: &Path) -> Result<Trust, TrustError> {
        let reason = |e: rustls::pki_types::pem::Error| TrustError::CaFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(reason)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(reason)?;
        if certs.is_empty() {
            return Err(TrustError::EmptyCaFile(path.to_path_buf()));
        }
        Ok(Trust::CaFile(certs))
    }

    /// A reqwest client that trusts only this (proxies ignored, no
    /// redirects). `builder` carries the caller's timeouts.
    pub fn http_client(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::Client, TrustError> {
        let builder = builder
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        let builder = match self {
            Trust::Plaintext => builder,
            Trust::Pinned(_) | Trust::CaFile(_) | Trust::CaFileNamed(..) => {
                builder.use_preconfigured_tls(self.rustls_config()?)
            }
        };
        builder.build().map_err(|e| TrustError::Tls(e.to_string()))
    }

    /// The rustls client configuration (ring provider; TLS 1.2 and 1.3).
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, TrustError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = |e: rustls::Error| TrustError::Tls(e.to_string());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls)?;
        let config = match self {
            Trust::Pinned(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCa {
                    pin: *pin,
                    provider,
                }))
                .with_no_client_auth(),
            Trust::CaFile(certs) => builder
                .with_root_certificates(roots(certs)?)
                .with_no_client_auth(),
            Trust::CaFileNamed(certs, name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| TrustError::Tls(format!("server name `{name}`: {e}")))?;
                let inner =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots(certs)?), provider)
                        .build()
                        .map_err(|e| TrustError::Tls(e.to_string()))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NamedCa { inner, name }))
                    .with_no_client_auth()
            }
            Trust::Plaintext => builder
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        };
        Ok(config)
    }
}

fn roots(certs: &[CertificateDer<'static>]) -> Result<RootCertStore, TrustError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert.clone())
            .map_err(|e| TrustError::Tls(format!("a CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// WebPKI verification against fixed roots for a fixed server name.
#[derive(Debug)]
struct NamedCa {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Checks an operator URL against the trust setting before anything is
/// sent: `https://` needs a pin or a CA file; `http://` is allowed only to
/// a loopback IP address or `localhost`, unless `insecure_plaintext`.
/// Returns whether the connection is plaintext (callers warn on every start).
pub fn check_url(url: &str, trust: &Trust, insecure_plaintext: bool) -> Result<bool, TrustError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| TrustError::Url {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    match parsed.scheme() {
        "https" => match trust {
            Trust::Pinned(_) | Trust::CaFile(_) | Trust::CaFileNamed(..) => Ok(false),
            Trust::Plaintext => Err(TrustError::NoTrustAnchor { host }),
        },
        "http" => {
            if insecure_plaintext || is_loopback(&parsed) {
                Ok(true)
            } else {
                Err(TrustError::PlaintextNotLoopback { host })
            }
        }
        other => Err(TrustError::Url {
            url: url.to_owned(),
            reason: format!("scheme `{other}`: write https:// (or http:// to a loopback address)"),
        }),
    }
}

/// Whether the URL's host is a loopback IP literal or `localhost`.
fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// A server certificate verifier that accepts only a chain containing the
/// CA certificate whose DER hashes to the pin, with a leaf that verifies
/// against that CA (signature, validity, server name) by the usual WebPKI
/// rules.
#[derive(Debug)]
pub struct PinnedCa {
    pin: CaPin,
    provider: Arc<CryptoProvider>,
}

/// The served chain does not contain the pinned CA.
#[derive(Debug, thiserror::Error)]
#[error(
    "operator certificate does not match the pinned CA {expected}; got {got} (the top of the presented chain). Someone may be intercepting the connection, or the operator's CA changed: check the join value"
)]
pub struct PinMismatch {
    pub expected: CaPin,
    pub got: CaPin,
}

impl PinnedCa {
    /// A verifier for `pin` with the ring provider.
    pub fn new(pin: CaPin) -> PinnedCa {
        PinnedCa {
            pin,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = || std::iter::once(end_entity).chain(intermediates);
        let Some(ca) = chain().find(|cert| CaPin::of_der(cert) == self.pin) else {
            let top = chain().last().unwrap_or(end_entity);
            let mismatch = PinMismatch {
                expected: self.pin,
                got: CaPin::of_der(top),
            };
            // `General`: rustls prints its message as is (a certificate
            // error's would be printed in its Debug form).
            return Err(rustls::Error::General(mismatch.to_string()));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The error chain of `error` on one line (`a: b: c`), so that a TLS
/// refusal's reason reaches the log instead of "error sending request".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
