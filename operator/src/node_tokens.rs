//! Agent tokens kept in Kubernetes Secrets (Kubernetes mode), for agents
//! that run *outside* the cluster (edge servers) and so have no pod
//! ServiceAccount token ([`review`] checks those): every replica of the
//! operator accepts the same tokens without sharing a store.
//!
//! The format (docs/kubernetes.md, "Agent tokens"):
//! - Secrets of `type: veil.dev/node-token` in the operator's namespace
//!   (`--lease-namespace`, else `POD_NAMESPACE`, else `veil-system`);
//! - **one node per Secret**: its one `data` key is the node name (a
//!   DNS-1123 name, the agent's `--node`), its value that node's token;
//!   surrounding whitespace is ignored, as the agent ignores it in its
//!   token file. A Secret holding keys of several nodes grants nothing
//!   (every key is skipped and logged): such a Secret, mounted anywhere,
//!   would let one agent act as every node;
//! - `veil-operator token create --kube` writes the Secret
//!   [`token_secret_name`] (`veil-node-token-NODE`); nothing in the
//!   shipped manifests mounts it — its token is handed to the one machine
//!   that runs that node's agent.
//!
//! Rules of the index ([`TokenIndex::build`]):
//! - a node may have tokens in several Secrets: each is accepted (so a
//!   token can be rotated by adding a new Secret, moving the agent over,
//!   then deleting the old one);
//! - one token value under two different node names is ambiguous and
//!   accepted for neither (logged with both keys);
//! - a key that is not a valid node name, or an empty value, is skipped
//!   and logged by Secret and key — a token value is never logged.
//!
//! This module owns the parsing and the in-memory index; [`watch`] keeps it
//! current, and `api/agent.rs` reads it through [`NodeTokens`]. Tokens are
//! held only as SHA-256 hashes, like the store holds them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use veil_crds::validate::DnsName;

use crate::admin::hash_token;

pub mod review;
pub mod watch;

use review::TokenReviewer;

/// The `type` of a Secret holding agent tokens.
pub const NODE_TOKEN_SECRET_TYPE: &str = "veil.dev/node-token";
/// Prefix of the Secret `veil-operator token create --kube` writes for a node.
pub const TOKEN_SECRET_PREFIX: &str = "veil-node-token-";
/// Label on the Secret the CLI writes.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "veil");
/// Label naming the node whose token a Secret holds.
pub const NODE_LABEL: &str = "veil.dev/node";

/// The Secret `veil-operator token create --kube` writes for `node`.
pub fn token_secret_name(node: &str) -> String {
    format!("{TOKEN_SECRET_PREFIX}{node}")
}

/// Why a key of a node-token Secret was skipped (never carries the value).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkippedKey {
    /// The key is not a node name.
    #[error("key `{key}` is not a valid node name: {problem}")]
    InvalidNodeName { key: String, problem: String },
    /// The value is empty (or only whitespace).
    #[error("key `{key}` holds an empty token")]
    Empty { key: String },
    /// The value is not UTF-8 text.
    #[error("key `{key}` holds a token that is not UTF-8 text")]
    NotText { key: String },
    /// The Secret holds tokens of several nodes.
    #[error(
        "key `{key}` is skipped with every other key: this Secret holds tokens of {nodes} nodes, and a node-token Secret may hold one node's token only; move each key to its own Secret (`veil-operator token create --kube --node NODE` writes `{TOKEN_SECRET_PREFIX}NODE`)"
    )]
    SeveralNodes { key: String, nodes: usize },
}

/// The tokens one Secret grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretTokens {
    /// Node name → SHA-256 (hex) of its token.
    pub nodes: BTreeMap<String, String>,
    /// Keys that grant nothing, and why.
    pub skipped: Vec<SkippedKey>,
}

/// Reads a node-token Secret's `data`: one token per node-name key.
pub fn parse_secret(data: Option<&BTreeMap<String, ByteString>>) -> SecretTokens {
    let mut tokens = SecretTokens::default();
    for (key, ByteString(value)) in data.into_iter().flatten() {
        if let Err(invalid) = DnsName::parse(key) {
            tokens.skipped.push(SkippedKey::InvalidNodeName {
                key: key.clone(),
                problem: invalid.problem,
            });
            continue;
        }
        let Ok(text) = std::str::from_utf8(value) else {
            tokens
                .skipped
                .push(SkippedKey::NotText { key: key.clone() });
            continue;
        };
        if text.trim().is_empty() {
            tokens.skipped.push(SkippedKey::Empty { key: key.clone() });
            continue;
        }
        tokens.nodes.insert(key.clone(), hash_token(text));
    }
    if tokens.nodes.len() > 1 {
        let nodes = tokens.nodes.len();
        let refused = std::mem::take(&mut tokens.nodes);
        tokens.skipped.extend(
            refused
                .into_keys()
                .map(|key| SkippedKey::SeveralNodes { key, nodes }),
        );
    }
    tokens
}

/// One token value found under two node names (named by Secret and key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmbiguousToken {
    /// `(secret, node)` pairs holding the same token, sorted.
    pub holders: Vec<(String, String)>,
}

/// Token hash → node, over every node-token Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenIndex {
    by_hash: HashMap<String, String>,
}

impl TokenIndex {
    /// The index of `secrets` (Secret name → its tokens), and the tokens
    /// left out because they name more than one node.
    pub fn build(secrets: &BTreeMap<String, SecretTokens>) -> (TokenIndex, Vec<AmbiguousToken>) {
        let mut holders: HashMap<&str, Vec<(String, String)>> = HashMap::new();
        for (secret, tokens) in secrets {
            for (node, hash) in &tokens.nodes {
                holders
                    .entry(hash.as_str())
                    .or_default()
                    .push((secret.clone(), node.clone()));
            }
        }
        let mut by_hash = HashMap::new();
        let mut ambiguous = Vec::new();
        for (hash, mut holders) in holders {
            holders.sort();
            let first = holders[0].1.clone();
            if holders.iter().all(|(_, node)| *node == first) {
                by_hash.insert(hash.to_owned(), first);
            } else {
                ambiguous.push(AmbiguousToken { holders });
            }
        }
        ambiguous.sort_by(|a, b| a.holders.cmp(&b.holders));
        (TokenIndex { by_hash }, ambiguous)
    }

    /// The node a token hash is bound to.
    pub fn node_for(&self, hash: &str) -> Option<&str> {
        self.by_hash.get(hash).map(String::as_str)
    }

    /// How many distinct tokens are indexed.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether no token is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// What the Secrets say about one token.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The token is bound to this node.
    Node(String),
    /// No Secret holds it.
    Unknown,
    /// The Secrets have not been listed yet: no answer either way.
    NotListed,
}

#[derive(Debug)]
enum State {
    /// Dir mode: tokens live in the store only.
    Off,
    /// Kubernetes mode before the first complete list.
    Listing,
    Listed(TokenIndex),
}

/// The agent tokens from Secrets, shared between the watch (writer) and
/// the agent API (reader), and (Kubernetes mode) the reviewer of pod
/// ServiceAccount tokens. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeTokens {
    state: Arc<RwLock<State>>,
    reviewer: Option<Arc<TokenReviewer>>,
}

impl NodeTokens {
    /// No Secrets (dir mode): every lookup is [`Lookup::Unknown`].
    pub fn off() -> NodeTokens {
        NodeTokens {
            state: Arc::new(RwLock::new(State::Off)),
            reviewer: None,
        }
    }

    /// Secrets to be listed: lookups are [`Lookup::NotListed`] until the
    /// first [`NodeTokens::replace`].
    pub fn listing() -> NodeTokens {
        NodeTokens {
            state: Arc::new(RwLock::new(State::Listing)),
            reviewer: None,
        }
    }

    /// These tokens, plus pod ServiceAccount tokens checked by `reviewer`
    /// (Kubernetes mode).
    pub fn with_reviewer(self, reviewer: TokenReviewer) -> NodeTokens {
        NodeTokens {
            reviewer: Some(Arc::new(reviewer)),
            ..self
        }
    }

    /// The reviewer of pod ServiceAccount tokens, if agents may use them.
    pub fn reviewer(&self) -> Option<&TokenReviewer> {
        self.reviewer.as_deref()
    }

    /// Takes `index` as the whole truth (effective for the next lookup).
    pub fn replace(&self, index: TokenIndex) {
        *self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = State::Listed(index);
    }

    /// The node bound to the token whose hash is `hash`.
    pub fn lookup(&self, hash: &str) -> Lookup {
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*state {
            State::Off => Lookup::Unknown,
            State::Listing => Lookup::NotListed,
            State::Listed(index) => index
                .node_for(hash)
                .map_or(Lookup::Unknown, |node| Lookup::Node(node.to_owned())),
        }
    }
}

/// The Secret [`token_secret_name`] of `node`, of type
/// [`NODE_TOKEN_SECRET_TYPE`] in `namespace`, holding `token` as its only
/// key; `secret` is the one there now, if any (its labels and
/// `resourceVersion` are kept, other keys dropped). Returns whether a token
/// of the node was replaced.
pub fn with_token(
    secret: Option<Secret>,
    namespace: &str,
    node: &str,
    token: &str,
) -> (Secret, bool) {
    let mut secret = secret.unwrap_or_else(|| Secret {
        metadata: ObjectMeta {
            name: Some(token_secret_name(node)),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some(NODE_TOKEN_SECRET_TYPE.to_owned()),
        ..Secret::default()
    });
    let labels = secret.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned());
    labels.insert(NODE_LABEL.to_owned(), node.to_owned());
    let replaced = secret
        .data
        .as_ref()
        .is_some_and(|data| data.contains_key(node));
    secret.data = Some(BTreeMap::from([(
        node.to_owned(),
        ByteString(token.as_bytes().to_vec()),
    )]));
    (secret, replaced)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
