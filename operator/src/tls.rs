//! TLS on the operator's API (rustls, ring): the certificate it serves and
//! the accept loop.
//!
//! - By default the operator makes its own CA and serving certificate in
//!   the data dir ([`pki`]); agents pin the CA's SHA-256, which the join
//!   value of `veil-operator token create` carries.
//! - `--tls-cert`/`--tls-key` (and `--tls-ca`, the CA that signed them)
//!   serve a certificate from elsewhere: cert-manager's `tls.crt`/`tls.key`/
//!   `ca.crt`, a public CA.
//! - `--insecure-plaintext` serves plain HTTP and says so on every start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use veil_agent::trust::CaPin;

pub mod pki;
pub mod secret;
pub mod serve;

/// Why the TLS material cannot be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating {what}: {reason}")]
    Generate { what: &'static str, reason: String },
    #[error("Secret {secret}: {reason}")]
    Kube { secret: String, reason: String },
    #[error("Secret {secret} has no `{key}`: a TLS Secret holds tls.crt, tls.key and ca.crt")]
    SecretKey { secret: String, key: &'static str },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("the certificate {cert} and the key {key} do not make a usable TLS server: {reason}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// What the API serves: its rustls config (`None`: plain HTTP) and the CA
/// clients should trust.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub config: Option<Arc<rustls::ServerConfig>>,
    /// The CA certificate's file and pin, when known.
    pub ca: Option<(PathBuf, CaPin)>,
}

impl ServerTls {
    /// Plain HTTP.
    pub fn plaintext() -> ServerTls {
        ServerTls {
            config: None,
            ca: None,
        }
    }

    /// Loads the files (chain leaf first, key, optional CA certificate).
    pub fn load(files: &pki::ServingFiles) -> Result<ServerTls, TlsError> {
        let chain = read_certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Read {
            path: files.key.clone(),
            reason: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|e| TlsError::Config {
                cert: files.cert.clone(),
                key: files.key.clone(),
                reason: e.to_string(),
            })?;
        let ca = match &files.ca {
            Some(path) => {
                // The last certificate: the root when the file is a chain.
                let top = read_certs(path)?.pop();
                top.map(|der| (path.clone(), CaPin::of_der(&der)))
            }
            None => None,
        };
        Ok(ServerTls {
            config: Some(Arc::new(config)),
            ca,
        })
    }
}

/// Every certificate in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |e: rustls::pki_types::pem::Error| TlsError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}
