//! `token create|revoke --kube`: node tokens in the Secret
//! [`DEFAULT_TOKEN_SECRET`] (type `veil.dev/node-token`) of the operator's
//! namespace, which every replica watches and the agent DaemonSet mounts.
//!
//! Each change is a read-modify-write of that one Secret: `get`, then
//! `create` (when absent) or `replace` carrying the `resourceVersion` it
//! read, so two concurrent changes never lose each other's key — the
//! loser gets `409 Conflict` and starts over from a fresh read (up to
//! [`ATTEMPTS`] times). Needs get/create/update on Secrets in that
//! namespace: it runs with the caller's credentials, not the operator's.

use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;

use super::TokenError;
use crate::node_tokens::{DEFAULT_TOKEN_SECRET, NODE_TOKEN_SECRET_TYPE, with_token, without_token};

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

/// Sets `node`'s token to `token` in [`DEFAULT_TOKEN_SECRET`], creating
/// the Secret when absent.
pub async fn put_token(
    api: &Api<Secret>,
    namespace: &str,
    node: &str,
    token: &str,
) -> Result<Changed, TokenError> {
    for _ in 0..ATTEMPTS {
        let existing = api
            .get_opt(DEFAULT_TOKEN_SECRET)
            .await
            .map_err(|e| api_error(namespace, e))?;
        if let Some(secret) = &existing {
            check_type(namespace, secret)?;
        }
        let creating = existing.is_none();
        let (secret, replaced) = with_token(existing, namespace, node, token);
        let written = if creating {
            api.create(&PostParams::default(), &secret).await
        } else {
            api.replace(DEFAULT_TOKEN_SECRET, &PostParams::default(), &secret)
                .await
        };
        match written {
            Ok(_) if replaced => return Ok(Changed::Replaced),
            Ok(_) => return Ok(Changed::Added),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(api_error(namespace, error)),
        }
    }
    Err(TokenError::Conflicts(namespace.to_owned()))
}

/// Removes `node`'s key from [`DEFAULT_TOKEN_SECRET`].
pub async fn remove_token(
    api: &Api<Secret>,
    namespace: &str,
    node: &str,
) -> Result<Changed, TokenError> {
    let not_found = || TokenError::NoClusterToken {
        node: node.to_owned(),
        namespace: namespace.to_owned(),
    };
    for _ in 0..ATTEMPTS {
        let Some(secret) = api
            .get_opt(DEFAULT_TOKEN_SECRET)
            .await
            .map_err(|e| api_error(namespace, e))?
        else {
            return Err(not_found());
        };
        check_type(namespace, &secret)?;
        let Some(secret) = without_token(secret, node) else {
            return Err(not_found());
        };
        match api
            .replace(DEFAULT_TOKEN_SECRET, &PostParams::default(), &secret)
            .await
        {
            Ok(_) => return Ok(Changed::Removed),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(api_error(namespace, error)),
        }
    }
    Err(TokenError::Conflicts(namespace.to_owned()))
}

/// The operator reads only Secrets of the node-token type, and a Secret's
/// type cannot change: refuse to write keys it would never see.
fn check_type(namespace: &str, secret: &Secret) -> Result<(), TokenError> {
    let found = secret.type_.as_deref().unwrap_or("Opaque");
    if found == NODE_TOKEN_SECRET_TYPE {
        return Ok(());
    }
    Err(TokenError::WrongSecretType {
        namespace: namespace.to_owned(),
        found: found.to_owned(),
    })
}

fn api_error(namespace: &str, source: kube::Error) -> TokenError {
    TokenError::Kube {
        namespace: namespace.to_owned(),
        source,
    }
}
