//! Kubernetes mode (`--tls-secret NAME`): the serving certificate comes
//! from a Secret of the operator's namespace in the standard shape —
//! `tls.crt` (chain, leaf first), `tls.key`, `ca.crt` — as cert-manager
//! writes it. When the Secret does not exist, the first replica to start
//! makes a CA and a serving certificate for the Service's names and creates
//! the Secret (type `kubernetes.io/tls`, no CA key in it); a replica that
//! loses that race (409) reads the winner's. Every replica then serves the
//! same certificate, followers verify the leader against its `ca.crt` for
//! the Service's name ([`service_name`]), and agents mount only `ca.crt`.
//!
//! The files are copied to `DATA_DIR/tls-secret/` (0600) for the server to
//! load. A change of the Secret takes effect at the next start.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use super::TlsError;
use super::pki::{self, ServingFiles};

/// Years the generated serving certificate is valid: it is shared by
/// replicas and has no CA key to renew it with; delete the Secret and
/// restart the operator to rotate (agents read the new `ca.crt` from it).
const GENERATED_YEARS: i64 = 10;

/// The DNS name followers expect on the leader's certificate and that the
/// generated certificate carries: `SERVICE.NAMESPACE.svc`.
pub fn service_name(service: &str, namespace: &str) -> String {
    format!("{service}.{namespace}.svc")
}

/// Names of the generated certificate: the Service's short and full names,
/// loopback, and `extra` (`--tls-san`).
pub fn generated_names(service: &str, namespace: &str, extra: &[String]) -> Vec<String> {
    let mut names = vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        service_name(service, namespace),
        format!("{}.cluster.local", service_name(service, namespace)),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// Reads (or, when absent, creates) the Secret and writes its files into
/// `DATA_DIR/tls-secret/`.
pub async fn load_or_create(
    client: kube::Client,
    namespace: &str,
    name: &str,
    names: &[String],
    data_dir: &Path,
) -> Result<ServingFiles, TlsError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let kube_error = |source: kube::Error| TlsError::Kube {
        secret: format!("{namespace}/{name}"),
        reason: source.to_string(),
    };
    let secret = match api.get_opt(name).await.map_err(kube_error)? {
        Some(secret) => secret,
        None => {
            let created = generated(namespace, name, names)?;
            match api.create(&PostParams::default(), &created).await {
                Ok(secret) => {
                    tracing::info!(secret = %format!("{namespace}/{name}"), "created the TLS Secret with a new CA");
                    secret
                }
                // Another replica created it first: use theirs.
                Err(kube::Error::Api(status)) if status.is_already_exists() => {
                    api.get(name).await.map_err(kube_error)?
                }
                Err(error) => return Err(kube_error(error)),
            }
        }
    };
    write_files(&secret, &format!("{namespace}/{name}"), data_dir)
}

fn generated(namespace: &str, name: &str, names: &[String]) -> Result<Secret, TlsError> {
    let (ca_pem, ca_key_pem) = pki::new_ca()?;
    let not_after = time::OffsetDateTime::now_utc() + time::Duration::days(GENERATED_YEARS * 365);
    let (chain_pem, key_pem) = pki::sign_serving(&ca_pem, &ca_key_pem, names, not_after)?;
    let data = BTreeMap::from([
        ("tls.crt".to_owned(), ByteString(chain_pem.into_bytes())),
        ("tls.key".to_owned(), ByteString(key_pem.into_bytes())),
        ("ca.crt".to_owned(), ByteString(ca_pem.into_bytes())),
    ]);
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "veil".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

fn write_files(secret: &Secret, what: &str, data_dir: &Path) -> Result<ServingFiles, TlsError> {
    let data = secret.data.clone().unwrap_or_default();
    let key = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .filter(|v| !v.trim().is_empty())
    };
    let missing = |k: &'static str| TlsError::SecretKey {
        secret: what.to_owned(),
        key: k,
    };
    let dir = data_dir.join(pki::SECRET_DIR);
    let cert = key("tls.crt").ok_or_else(|| missing("tls.crt"))?;
    let private = key("tls.key").ok_or_else(|| missing("tls.key"))?;
    pki::write_private(&dir, "tls.crt", &cert)?;
    pki::write_private(&dir, "tls.key", &private)?;
    // Without ca.crt (a Secret from another issuer) the top of the chain stands for the CA.
    let ca = key("ca.crt").unwrap_or(cert);
    pki::write_private(&dir, "ca.crt", &ca)?;
    Ok(ServingFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        ca: Some(dir.join("ca.crt")),
    })
}
