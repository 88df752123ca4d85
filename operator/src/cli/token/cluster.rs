//! `token create|revoke --kube`: a node's token in its own Secret
//! [`token_secret_name`] (`veil-node-token-NODE`, type
//! `veil.dev/node-token`) of the operator's namespace, which every replica
//! watches. One Secret per node, so handing one node its token never hands
//! out another's.
//!
//! `create` is a read-modify-write: `get`, then `create` (when absent) or
//! `replace` carrying the `resourceVersion` it read — a concurrent change
//! makes it `409 Conflict` and start over from a fresh read (up to
//! [`ATTEMPTS`] times). `revoke` deletes the Secret. Needs get, create,
//! update and delete on Secrets in that namespace: it runs with the
//! caller's credentials, not the operator's.

use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

use super::TokenError;
use crate::node_tokens::{NODE_TOKEN_SECRET_TYPE, token_secret_name, with_token};

/// Read-modify-write attempts before giving up on conflicts.
const ATTEMPTS: usize = 5;

/// What a change of the Secret did.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    /// A node's token was added.
    Added,
    /// A node's previous token was replaced (revoked).
    Replaced,
    /// A node's key was removed.
    Removed,
}

/// The Secret's API in `namespace` through `kubeconfig` (or the usual
/// lookup: KUBECONFIG, ~/.kube/config, in-cluster).
pub async fn secrets(
    kubeconfig: Option<&Path>,
    namespace: &str,
) -> Result<Api<Secret>, TokenError> {
    let client = crate::source::kube::connect(kubeconfig).await?;
    Ok(Api::namespaced(client, namespace))
}

/// Sets `node`'s token to `token` in its Secret, creating it when absent.
pub async fn put_token(
    api: &Api<Secret>,
    namespace: &str,
    node: &str,
    token: &str,
) -> Result<Changed, TokenError> {
    let name = token_secret_name(node);
    for _ in 0..ATTEMPTS {
        let existing = api
            .get_opt(&name)
            .await
            .map_err(|e| api_error(namespace, &name, e))?;
        if let Some(secret) = &existing {
            check_type(namespace, &name, secret)?;
        }
        let creating = existing.is_none();
        let (secret, replaced) = with_token(existing, namespace, node, token);
        let written = if creating {
            api.create(&PostParams::default(), &secret).await
        } else {
            api.replace(&name, &PostParams::default(), &secret).await
        };
        match written {
            Ok(_) if replaced => return Ok(Changed::Replaced),
            Ok(_) => return Ok(Changed::Added),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(api_error(namespace, &name, error)),
        }
    }
    Err(TokenError::Conflicts {
        namespace: namespace.to_owned(),
        secret: name,
    })
}

/// Deletes `node`'s Secret (of the node-token type only).
pub async fn remove_token(
    api: &Api<Secret>,
    namespace: &str,
    node: &str,
) -> Result<Changed, TokenError> {
    let name = token_secret_name(node);
    let not_found = || TokenError::NoClusterToken {
        node: node.to_owned(),
        namespace: namespace.to_owned(),
        secret: name.clone(),
    };
    let Some(secret) = api
        .get_opt(&name)
        .await
        .map_err(|e| api_error(namespace, &name, e))?
    else {
        return Err(not_found());
    };
    check_type(namespace, &name, &secret)?;
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(Changed::Removed),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(not_found()),
        Err(error) => Err(api_error(namespace, &name, error)),
    }
}

/// The operator reads only Secrets of the node-token type, and a Secret's
/// type cannot change: refuse to write keys it would never see.
fn check_type(namespace: &str, name: &str, secret: &Secret) -> Result<(), TokenError> {
    let found = secret.type_.as_deref().unwrap_or("Opaque");
    if found == NODE_TOKEN_SECRET_TYPE {
        return Ok(());
    }
    Err(TokenError::WrongSecretType {
        namespace: namespace.to_owned(),
        secret: name.to_owned(),
        found: found.to_owned(),
    })
}

fn api_error(namespace: &str, name: &str, source: kube::Error) -> TokenError {
    TokenError::Kube {
        namespace: namespace.to_owned(),
        secret: name.to_owned(),
        source,
    }
}

/// The PEM `ca.crt` of the operator's TLS Secret `name` (what its agents
/// trust), `None` when the Secret or the key is absent.
pub async fn tls_ca(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
) -> Result<Option<Vec<u8>>, TokenError> {
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| api_error(namespace, name, e))?;
    Ok(secret
        .and_then(|secret| secret.data)
        .and_then(|mut data| data.remove("ca.crt"))
        .map(|bytes| bytes.0))
}
