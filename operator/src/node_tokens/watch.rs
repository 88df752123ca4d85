//! Keeps [`NodeTokens`] current from the node-token Secrets of one
//! namespace: one watcher, field selector `type=veil.dev/node-token`, so
//! the operator never lists or is woken by other Secrets there.
//!
//! - Each event rebuilds the index, which replaces the old one at once: a
//!   removed key or Secret is revoked for the next request.
//! - A re-list (start, `410 Gone`, API server restart) keeps the last
//!   index in effect until the new list is complete.
//! - Errors are logged and retried with the watcher's backoff (0.8 s
//!   doubling to 30 s); never a busy loop.
//!
//! Needs `get`, `list` and `watch` on `secrets` in that namespace. Never
//! writes, never logs a token.

use std::collections::BTreeMap;
use std::pin::pin;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::task::JoinHandle;

use super::{NODE_TOKEN_SECRET_TYPE, NodeTokens, SecretTokens, TokenIndex, parse_secret};

/// Starts watching node-token Secrets in `namespace`, feeding `tokens`;
/// the task runs until aborted.
pub fn spawn(client: kube::Client, namespace: String, tokens: NodeTokens) -> JoinHandle<()> {
    tokio::spawn(run(client, namespace, tokens))
}

async fn run(client: kube::Client, namespace: String, tokens: NodeTokens) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("type={NODE_TOKEN_SECRET_TYPE}"));
    let mut stream = pin!(watcher::watcher(api, config).default_backoff());
    let mut book = SecretBook::default();
    let mut failing = false;
    tracing::info!(%namespace, secret_type = NODE_TOKEN_SECRET_TYPE, "watching agent token Secrets");
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                if failing {
                    tracing::info!(%namespace, "agent token Secrets: watch recovered");
                    failing = false;
                }
                if book.apply(&namespace, event) {
                    publish(&namespace, &book.secrets, &tokens);
                }
            }
            Err(error) => {
                failing = true;
                tracing::warn!(%namespace, %error, hint = "the operator needs get/list/watch on secrets in its namespace (manifests/rbac.yaml)", "agent token Secrets: watch failed; retrying with backoff, the last listed tokens stay in effect");
            }
        }
    }
}

/// The node-token Secrets as last listed and watched.
#[derive(Default)]
struct SecretBook {
    secrets: BTreeMap<String, SecretTokens>,
    /// A re-list in progress: replaces `secrets` once complete.
    relisting: Option<BTreeMap<String, SecretTokens>>,
}

impl SecretBook {
    /// Applies one watch event; true when the index must be rebuilt.
    fn apply(&mut self, namespace: &str, event: Event<Secret>) -> bool {
        match event {
            Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            Event::InitApply(secret) => {
                let (name, tokens) = read(namespace, &secret);
                self.relisting
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name, tokens);
                false
            }
            Event::InitDone => {
                self.secrets = self.relisting.take().unwrap_or_default();
                true
            }
            Event::Apply(secret) => {
                let (name, tokens) = read(namespace, &secret);
                self.secrets.insert(name, tokens);
                true
            }
            Event::Delete(secret) => {
                let name = secret.metadata.name.unwrap_or_default();
                tracing::info!(%namespace, secret = %name, "agent token Secret deleted; its tokens are revoked");
                self.secrets.remove(&name).is_some()
            }
        }
    }
}

/// A Secret's name and tokens; skipped keys are logged (by key only).
fn read(namespace: &str, secret: &Secret) -> (String, SecretTokens) {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let tokens = parse_secret(secret.data.as_ref());
    for skipped in &tokens.skipped {
        tracing::warn!(%namespace, secret = %name, reason = %skipped, "agent token Secret: key skipped");
    }
    (name, tokens)
}

fn publish(namespace: &str, secrets: &BTreeMap<String, SecretTokens>, tokens: &NodeTokens) {
    let (index, ambiguous) = TokenIndex::build(secrets);
    for token in &ambiguous {
        let holders: Vec<String> = token
            .holders
            .iter()
            .map(|(secret, node)| format!("{secret}[{node}]"))
            .collect();
        tracing::warn!(%namespace, holders = %holders.join(", "), "agent token Secrets: one token is given to several nodes; it is accepted for none of them");
    }
    tracing::info!(%namespace, secrets = secrets.len(), tokens = index.len(), "agent tokens from Secrets updated");
    tokens.replace(index);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::admin::hash_token;
    use crate::node_tokens::Lookup;

    fn secret(name: &str, pairs: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn after(book: &mut SecretBook, tokens: &NodeTokens, events: Vec<Event<Secret>>) {
        for event in events {
            if book.apply("ns", event) {
                publish("ns", &book.secrets, tokens);
            }
        }
    }

    #[test]
    fn a_relist_keeps_the_old_tokens_until_it_is_complete() {
        let tokens = NodeTokens::listing();
        let mut book = SecretBook::default();
        let a = hash_token("a");
        let b = hash_token("b");
        after(
            &mut book,
            &tokens,
            vec![
                Event::Init,
                Event::InitApply(secret("s", &[("edge-1", "a")])),
            ],
        );
        assert_eq!(tokens.lookup(&a), Lookup::NotListed);
        after(&mut book, &tokens, vec![Event::InitDone]);
        assert_eq!(tokens.lookup(&a), Lookup::Node("edge-1".into()));

        // Re-list: the old tokens hold until InitDone, then only the new.
        after(
            &mut book,
            &tokens,
            vec![
                Event::Init,
                Event::InitApply(secret("s", &[("edge-1", "b")])),
            ],
        );
        assert_eq!(tokens.lookup(&a), Lookup::Node("edge-1".into()));
        after(&mut book, &tokens, vec![Event::InitDone]);
        assert_eq!(tokens.lookup(&a), Lookup::Unknown);
        assert_eq!(tokens.lookup(&b), Lookup::Node("edge-1".into()));

        // Deleting the Secret revokes its tokens.
        after(&mut book, &tokens, vec![Event::Delete(secret("s", &[]))]);
        assert_eq!(tokens.lookup(&b), Lookup::Unknown);
    }
}
