//! The operator's own certificate authority and serving certificate, kept
//! in `DATA_DIR/tls/` (directory 0700, files 0600):
//!
//! - `ca.crt`, `ca.key`: a self-signed CA (ECDSA P-256, valid 20 years),
//!   created on first start and never replaced unless asked
//!   (`--rotate-tls-ca`): its SHA-256 is the pin every agent holds.
//! - `tls.crt` (leaf then CA), `tls.key`: the serving certificate signed by
//!   that CA, valid one year, for the names in [`subject_names`].
//! - `tls.meta`: what the serving certificate was made for (CA pin, names,
//!   expiry); the certificate is made again at start when the names or the
//!   CA changed or less than 30 days are left.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use veil_agent::trust::CaPin;

use super::TlsError;

/// Subdirectory of the data dir.
pub const TLS_DIR: &str = "tls";
/// The CA certificate (PEM) in [`TLS_DIR`]: what `--ca-file` takes.
pub const CA_CERT_FILE: &str = "ca.crt";
const CA_KEY_FILE: &str = "ca.key";
const CERT_FILE: &str = "tls.crt";
const KEY_FILE: &str = "tls.key";
const META_FILE: &str = "tls.meta";

const CA_DAYS: i64 = 20 * 365;
const SERVING_DAYS: i64 = 365;
const RENEW_DAYS: i64 = 30;

/// Where the generated material lives for `data_dir`.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(TLS_DIR)
}

/// The generated CA certificate's path for `data_dir`.
pub fn ca_cert_path(data_dir: &Path) -> PathBuf {
    tls_dir(data_dir).join(CA_CERT_FILE)
}

/// The CA certificate the operator last served under, for the CLI's
/// defaults: `DATA_DIR/tls-secret/ca.crt` (Kubernetes, `--tls-secret`)
/// when present, else the generated `DATA_DIR/tls/ca.crt`.
pub fn served_ca_path(data_dir: &Path) -> PathBuf {
    let from_secret = data_dir.join(SECRET_DIR).join(CA_CERT_FILE);
    if from_secret.exists() {
        from_secret
    } else {
        ca_cert_path(data_dir)
    }
}

/// Subdirectory of the data dir holding the files of `--tls-secret`.
pub const SECRET_DIR: &str = "tls-secret";

/// PEM files the server loads.
#[derive(Clone, Debug)]
pub struct ServingFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA certificate, when known (its pin goes into join values).
    pub ca: Option<PathBuf>,
}

/// What the serving certificate was made for.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    ca: String,
    names: Vec<String>,
    not_after_unix: i64,
}

/// Creates (first start) or reuses the CA and the serving certificate in
/// `DATA_DIR/tls`; a new CA only when `rotate_ca`.
pub fn ensure(
    data_dir: &Path,
    names: &[String],
    rotate_ca: bool,
) -> Result<ServingFiles, TlsError> {
    let dir = tls_dir(data_dir);
    create_private_dir(&dir)?;
    let ca_cert = dir.join(CA_CERT_FILE);
    let ca_key = dir.join(CA_KEY_FILE);
    let (ca_pem, ca_key_pem) = if !rotate_ca && ca_cert.exists() && ca_key.exists() {
        (read(&ca_cert)?, read(&ca_key)?)
    } else {
        let (cert, key) = new_ca()?;
        write(&ca_key, &key)?;
        write(&ca_cert, &cert)?;
        tracing::info!(path = %ca_cert.display(), "created the operator's CA (agents pin its SHA-256)");
        (cert, key)
    };
    let ca_der = pem_der(&ca_pem, &ca_cert)?;
    let pin = CaPin::of_der(&ca_der).to_string();
    let cert = dir.join(CERT_FILE);
    let key = dir.join(KEY_FILE);
    let meta_path = dir.join(META_FILE);
    let now = time::OffsetDateTime::now_utc();
    let current = std::fs::read(&meta_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Meta>(&bytes).ok());
    let fresh = current.as_ref().is_some_and(|meta| {
        meta.ca == pin
            && meta.names == names
            && meta.not_after_unix - now.unix_timestamp() > RENEW_DAYS * 86_400
    });
    if !fresh || !cert.exists() || !key.exists() {
        let not_after = now + time::Duration::days(SERVING_DAYS);
        let (chain_pem, leaf_key_pem) = sign_serving(&ca_pem, &ca_key_pem, names, not_after)?;
        write(&key, &leaf_key_pem)?;
        write(&cert, &chain_pem)?;
        let meta = Meta {
            ca: pin,
            names: names.to_vec(),
            not_after_unix: not_after.unix_timestamp(),
        };
        let json = serde_json::to_string(&meta).unwrap_or_default();
        write(&meta_path, &json)?;
        tracing::info!(names = ?names, "created the serving certificate");
    }
    Ok(ServingFiles {
        cert,
        key,
        ca: Some(ca_cert),
    })
}

/// The names the serving certificate is for: `localhost`, 127.0.0.1 and
/// ::1 (the CLI and `up`'s agent), the `--listen` address unless it is
/// unspecified, the `--advertise-url` host, this machine's host name, and
/// the extra `--tls-san` names; sorted, without duplicates.
pub fn subject_names(
    listen: std::net::SocketAddr,
    advertise: Option<&reqwest::Url>,
    host_name: Option<&str>,
    extra: &[String],
) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    if let Some(host) = advertise.and_then(reqwest::Url::host_str) {
        names.push(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        );
    }
    if let Some(host) = host_name.map(str::trim).filter(|h| !h.is_empty()) {
        names.push(host.to_owned());
    }
    names.extend(
        extra
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty()),
    );
    names.sort();
    names.dedup();
    names
}

/// This machine's host name, from the kernel.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// A serving certificate for `names` signed by the CA (PEM certificate and
/// key), valid until `not_after`: (chain PEM leaf then CA, key PEM).
pub fn sign_serving(
    ca_pem: &str,
    ca_key_pem: &str,
    names: &[String],
    not_after: time::OffsetDateTime,
) -> Result<(String, String), TlsError> {
    let ca_key_pair = KeyPair::from_pem(ca_key_pem).map_err(|e| TlsError::Generate {
        what: "reading the CA key",
        reason: e.to_string(),
    })?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key_pair).map_err(|e| TlsError::Generate {
        what: "reading the CA certificate",
        reason: e.to_string(),
    })?;
    let now = time::OffsetDateTime::now_utc();
    let (leaf_pem, key_pem) = new_serving(names, &issuer, now, not_after)?;
    Ok((
        format!("{}\n{}\n", leaf_pem.trim_end(), ca_pem.trim_end()),
        key_pem,
    ))
}

/// A new self-signed CA: (certificate PEM, key PEM).
pub fn new_ca() -> Result<(String, String), TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate {
        what: "the CA",
        reason: e.to_string(),
    };
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    let id: String = veil_random_suffix();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Veil operator CA {id}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(CA_DAYS);
    let cert = params.self_signed(&key).map_err(generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn new_serving(
    names: &[String],
    issuer: &Issuer<'_, KeyPair>,
    now: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<(String, String), TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate {
        what: "the serving certificate",
        reason: e.to_string(),
    };
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(generate)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "veil-operator");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = not_after;
    let cert = params.signed_by(&key, issuer).map_err(generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Eight random hex digits, so that two operators' CAs differ in name too.
fn veil_random_suffix() -> String {
    crate::admin::generate_token("")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect()
}

/// The first certificate's DER in a PEM text.
pub fn pem_der(pem: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|der| der.to_vec())
        .map_err(|e| TlsError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Writes `dir/file` (0600) in a 0700 `dir`.
pub fn write_private(dir: &Path, file: &str, content: &str) -> Result<(), TlsError> {
    create_private_dir(dir)?;
    write(&dir.join(file), content)
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let failed = |source: std::io::Error| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn write(path: &Path, content: &str) -> Result<(), TlsError> {
    crate::admin::write_secret_file(path, content.trim_end()).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
