//! TLS flags of `run` and `up`, and what they resolve to at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use veil_agent::trust::Trust;

use crate::tls::pki::{self, ServingFiles};
use crate::tls::serve::ServeOptions;
use crate::tls::{ServerTls, TlsError};

/// File in the data dir holding the URL agents should use (written at
/// start; `token create` puts it into join values).
pub const URL_FILE: &str = "operator.url";

/// How the API is served.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Serve this certificate chain (PEM, leaf first) instead of the
    /// generated one, e.g. cert-manager's `tls.crt`.
    #[arg(long, env = "VEIL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM), e.g. `tls.key`.
    #[arg(long, env = "VEIL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate that signed --tls-cert (PEM), e.g. `ca.crt`: its
    /// SHA-256 goes into join values and followers verify the leader with
    /// it. Default: the last certificate of --tls-cert.
    #[arg(long, env = "VEIL_TLS_CA", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Kubernetes mode: serve the certificate of this Secret of the
    /// operator's namespace (`tls.crt`, `tls.key`, `ca.crt`, as
    /// cert-manager writes it); when it does not exist, the first replica
    /// creates it with a new CA for the Service's names.
    #[arg(long, env = "VEIL_TLS_SECRET", conflicts_with_all = ["tls_cert", "insecure_plaintext"])]
    pub tls_secret: Option<String>,
    /// Kubernetes mode: the operator's Service, whose names
    /// (`SERVICE.NAMESPACE.svc`, …) a generated --tls-secret certificate
    /// carries.
    #[arg(long, env = "VEIL_TLS_SERVICE", default_value = "veil-operator")]
    pub tls_service: String,
    /// Kubernetes mode: the name a follower expects on the leader's
    /// certificate, whatever address it dials. Default with --tls-secret:
    /// `SERVICE.NAMESPACE.svc`; else the dialled address.
    #[arg(long, env = "VEIL_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Extra name or IP address for the generated serving certificate
    /// (repeatable), e.g. the public address agents use when listening on
    /// 0.0.0.0.
    #[arg(long = "tls-san", env = "VEIL_TLS_SANS", value_delimiter = ',')]
    pub tls_sans: Vec<String>,
    /// Make a new CA in DATA_DIR/tls (every agent needs a new join value).
    #[arg(long)]
    pub rotate_tls_ca: bool,
    /// Serve plain HTTP: node and admin tokens, keys and tasks cross the
    /// network in clear. Logs a warning on every start.
    #[arg(long, env = "VEIL_INSECURE_PLAINTEXT", conflicts_with_all = ["tls_cert", "rotate_tls_ca"])]
    pub insecure_plaintext: bool,
    /// A client must send a request's headers within this time after
    /// connecting or after its previous request (slowloris, idle clients).
    #[arg(long, default_value = "10s")]
    pub header_read_timeout: veil_crds::validate::Duration,
    /// Most connections served at once; more wait to be accepted.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
}

impl Default for TlsArgs {
    fn default() -> Self {
        TlsArgs {
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_secret: None,
            tls_service: "veil-operator".to_owned(),
            tls_server_name: None,
            tls_sans: Vec::new(),
            rotate_tls_ca: false,
            insecure_plaintext: false,
            header_read_timeout: veil_crds::validate::Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

impl TlsArgs {
    /// The certificate to serve: the user's files, else the generated ones
    /// in DATA_DIR/tls for `listen`, `advertise` and this host's name.
    pub fn resolve(
        &self,
        data_dir: &Path,
        listen: SocketAddr,
        advertise: Option<&reqwest::Url>,
    ) -> Result<ServerTls, TlsError> {
        if self.insecure_plaintext {
            tracing::warn!(
                "serving plain HTTP (--insecure-plaintext): node and admin tokens, VLESS keys and tasks cross the network unencrypted"
            );
            return Ok(ServerTls::plaintext());
        }
        let files = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => ServingFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: Some(self.tls_ca.clone().unwrap_or_else(|| cert.clone())),
            },
            _ => {
                let host = pki::host_name();
                let names = pki::subject_names(listen, advertise, host.as_deref(), &self.tls_sans);
                pki::ensure(data_dir, &names, self.rotate_tls_ca)?
            }
        };
        let tls = ServerTls::load(&files)?;
        Ok(tls)
    }

    /// The accept loop's bounds.
    pub fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout.as_std(),
            ..ServeOptions::default()
        }
    }
}

/// How this process's own clients (the in-process agent, the forwarder)
/// trust the API: the CA file (for `server_name` when given), else nothing
/// (plain HTTP).
pub fn own_trust(
    tls: &ServerTls,
    server_name: Option<&str>,
) -> Result<Trust, veil_agent::trust::TrustError> {
    let trust = match (&tls.config, &tls.ca) {
        (Some(_), Some((path, _))) => Trust::ca_file(path)?,
        _ => return Ok(Trust::Plaintext),
    };
    Ok(match (trust, server_name) {
        (Trust::CaFile(certs), Some(name)) => Trust::CaFileNamed(certs, name.to_owned()),
        (trust, _) => trust,
    })
}

/// The API's scheme.
pub fn scheme(tls: &ServerTls) -> &'static str {
    if tls.config.is_some() {
        "https"
    } else {
        "http"
    }
}

/// The URL for clients on this machine: the listen address, with loopback
/// for an unspecified one.
pub fn local_url(tls: &ServerTls, listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    format!("{}://{}", scheme(tls), SocketAddr::new(ip, listen.port()))
}
