//! The files a test control plane needs, written into its directory: a CA
//! and a serving certificate for 127.0.0.1, the service-account key pair, a
//! static token file with one admin token, and a kubeconfig for `kubectl`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// The admin user of the token file; in `system:masters`, so RBAC allows it everything.
pub const ADMIN_USER: &str = "veil-admin";

/// Paths of everything [`write_all`] wrote.
#[derive(Clone, Debug)]
pub struct ClusterFiles {
    /// The CA that signed the serving certificate (PEM).
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// Service-account token keys: public (SPKI PEM) to verify, private (PKCS#8 PEM) to sign.
    pub sa_public_key: PathBuf,
    pub sa_private_key: PathBuf,
    /// `--token-auth-file`: `token,user,uid,"groups"`.
    pub token_file: PathBuf,
    pub kubeconfig: PathBuf,
    /// The admin's bearer token.
    pub token: String,
}

/// Generates fresh keys and writes every file into `dir`; the kubeconfig
/// points at `server_url` and authenticates with the admin token.
pub fn write_all(dir: &Path, server_url: &str) -> Result<ClusterFiles> {
    let files = ClusterFiles {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        sa_public_key: dir.join("sa.pub"),
        sa_private_key: dir.join("sa.key"),
        token_file: dir.join("tokens.csv"),
        kubeconfig: dir.join("kubeconfig"),
        token: random_hex(24)?,
    };
    write_certificates(&files)?;
    let sa_key = KeyPair::generate().context("generating the service-account key")?;
    write(&files.sa_public_key, &sa_key.public_key_pem())?;
    write(&files.sa_private_key, &sa_key.serialize_pem())?;
    write(
        &files.token_file,
        &format!(
            "{},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n",
            files.token
        ),
    )?;
    write(&files.kubeconfig, &kubeconfig(&files, server_url))?;
    Ok(files)
}

/// A CA, and a serving certificate it signed for `127.0.0.1`, `localhost`
/// and the in-cluster names of the `kubernetes` Service.
fn write_certificates(files: &ClusterFiles) -> Result<()> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "veil-test-ca");
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("self-signing the CA")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let names = [
        "127.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    ];
    let mut serving_params = CertificateParams::new(names.map(String::from).to_vec())?;
    serving_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let serving_key = KeyPair::generate().context("generating the serving key")?;
    let serving_cert = serving_params
        .signed_by(&serving_key, &issuer)
        .context("signing the serving certificate")?;

    write(&files.ca_cert, &ca_cert.pem())?;
    write(&files.serving_cert, &serving_cert.pem())?;
    write(&files.serving_key, &serving_key.serialize_pem())?;
    Ok(())
}

/// A kubeconfig with one cluster, one user (the admin token) and one context.
fn kubeconfig(files: &ClusterFiles, server_url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: veil-test
  cluster:
    server: {server_url}
    certificate-authority: {ca}
users:
- name: {ADMIN_USER}
  user:
    token: {token}
contexts:
- name: veil-test
  context:
    cluster: veil-test
    user: {ADMIN_USER}
    namespace: default
current-context: veil-test
",
        ca = files.ca_cert.display(),
        token = files.token,
    )
}

/// `bytes` random bytes from the OS, hex-encoded.
fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut buffer))
        .context("reading /dev/urandom")?;
    Ok(buffer.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Writes `text` to `path`, readable by the owner only (keys and tokens).
fn write(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}
