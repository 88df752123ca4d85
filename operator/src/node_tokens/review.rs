//! Agents in Kubernetes authenticate with their pod's projected
//! ServiceAccount token; this module checks such a token with a
//! `TokenReview` and says which node it belongs to.
//!
//! Contract of [`TokenReviewer::review`]:
//! - the token is sent to the API server in a `TokenReview` whose
//!   `spec.audiences` is Veil's own ([`ReviewConfig::audience`], by default
//!   [`DEFAULT_AGENT_AUDIENCE`]); it is accepted only when the API server
//!   says it is authenticated *and* lists that audience in
//!   `status.audiences` (a token for the API server itself, or for anything
//!   else, is refused);
//! - the user must be the agent ServiceAccount
//!   (`system:serviceaccount:NS:NAME`, [`ReviewConfig::service_account`]):
//!   a token of any other ServiceAccount is refused, even a valid one;
//! - the node is the one the token is bound to: the API server's
//!   `status.user.extra[authentication.kubernetes.io/node-name]`, which it
//!   takes from the Pod the token was issued for (`spec.nodeName`). A token
//!   not bound to a Pod on a node is refused. Nothing the agent says
//!   chooses the node;
//! - answers are cached by the SHA-256 of the token, accepted ones for at
//!   most [`ACCEPTED_TTL`] and never past the token's own `exp`, refused
//!   ones for [`REFUSED_TTL`], at most [`CACHE_ENTRIES`] of them; an API
//!   error is not cached;
//! - the token is never logged and never part of an error.
//!
//! Needs `create` on `tokenreviews.authentication.k8s.io` (cluster-wide;
//! the API has no namespaced form).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;

use crate::admin::hash_token;

/// The audience agent tokens are requested for, unless configured otherwise.
pub const DEFAULT_AGENT_AUDIENCE: &str = "veil.dev/agent";
/// The agent ServiceAccount's name in the operator's namespace, unless
/// configured otherwise (manifests/agent.yaml, the chart).
pub const DEFAULT_AGENT_SERVICE_ACCOUNT: &str = "veil-agent";
/// `status.user.extra` key naming the node of the Pod a token is bound to.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
/// `status.user.extra` key naming the Pod a token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// `status.user.extra` key holding that Pod's uid.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// How long an accepted token is trusted without asking again: short, so a
/// deleted Pod's token stops working soon after.
pub const ACCEPTED_TTL: Duration = Duration::from_secs(10);
/// How long a refusal is remembered (so a retrying agent or a flood of one
/// token does not reach the API server each time).
pub const REFUSED_TTL: Duration = Duration::from_secs(10);
/// Most cached answers; beyond it expired ones are dropped, then all.
pub const CACHE_ENTRIES: usize = 10_000;
/// One TokenReview longer than this fails (503, the agent retries).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A ServiceAccount, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccountRef {
    /// The user name the API server gives this account's tokens.
    pub fn user_name(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    /// `NAMESPACE:NAME`, or `NAME` in `default_namespace`.
    pub fn parse(text: &str, default_namespace: &str) -> ServiceAccountRef {
        match text.split_once(':') {
            Some((namespace, name)) => ServiceAccountRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            None => ServiceAccountRef {
                namespace: default_namespace.to_owned(),
                name: text.to_owned(),
            },
        }
    }
}

/// What a token must be to identify an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewConfig {
    /// The audience the token must carry.
    pub audience: String,
    /// The only ServiceAccount whose tokens identify agents.
    pub service_account: ServiceAccountRef,
}

/// The agent a token belongs to, as the API server vouches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentPod {
    /// The node the Pod is bound to: the agent's node name.
    pub node: String,
    /// The Pod the token was issued for.
    pub pod: String,
    /// That Pod's uid.
    pub pod_uid: String,
}

/// Why a token that the API server answered for identifies no agent.
/// Never carries the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The API server does not accept the token (expired, its Pod deleted,
    /// signed by someone else…).
    #[error("the ServiceAccount token is not valid: {reason}")]
    NotAuthenticated { reason: String },
    /// Valid, but not for Veil.
    #[error(
        "the ServiceAccount token is not for audience `{audience}` (project it with `audience: {audience}`)"
    )]
    WrongAudience { audience: String },
    /// Valid, but of another ServiceAccount.
    #[error("`{user}` is not the agent ServiceAccount `{expected}`")]
    NotTheAgentAccount { user: String, expected: String },
    /// Valid, but not bound to a Pod on a node.
    #[error(
        "the token of `{user}` is not bound to a Pod on a node (use the projected serviceAccountToken volume of the agent DaemonSet)"
    )]
    NotBoundToNode { user: String },
}

impl Refusal {
    /// 401 when the token proves no identity; 403 when it proves one that
    /// is not an agent's.
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            Refusal::NotTheAgentAccount { .. } | Refusal::NotBoundToNode { .. }
        )
    }
}

/// Why the API server gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("TokenReview: {0}")]
    Api(#[source] kube::Error),
    #[error("TokenReview: no answer within {REQUEST_TIMEOUT:?}")]
    Timeout,
}

/// Whether `token` has the shape of a JWT (three base64url parts, a JSON
/// header): only those are sent for review; Veil's own node tokens
/// (`veil_node_…`) never are.
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && token.starts_with("eyJ")
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The agent `status` vouches for under `config` (see the module contract).
pub fn judge(status: &TokenReviewStatus, config: &ReviewConfig) -> Result<AgentPod, Refusal> {
    if status.authenticated != Some(true) {
        let reason = status
            .error
            .clone()
            .filter(|error| !error.is_empty())
            .unwrap_or_else(|| "not authenticated".to_owned());
        return Err(Refusal::NotAuthenticated { reason });
    }
    if !status
        .audiences
        .iter()
        .flatten()
        .any(|audience| *audience == config.audience)
    {
        return Err(Refusal::WrongAudience {
            audience: config.audience.clone(),
        });
    }
    let user = status.user.clone().unwrap_or_default();
    let name = user.username.unwrap_or_default();
    let expected = config.service_account.user_name();
    if name != expected {
        return Err(Refusal::NotTheAgentAccount {
            user: name,
            expected,
        });
    }
    let extra = user.extra.unwrap_or_default();
    let one = |key: &str| first_value(&extra, key);
    match (one(NODE_NAME_EXTRA), one(POD_NAME_EXTRA)) {
        (Some(node), Some(pod)) => Ok(AgentPod {
            node,
            pod,
            pod_uid: one(POD_UID_EXTRA).unwrap_or_default(),
        }),
        _ => Err(Refusal::NotBoundToNode { user: name }),
    }
}

fn first_value(extra: &BTreeMap<String, Vec<String>>, key: &str) -> Option<String> {
    extra
        .get(key)?
        .first()
        .filter(|value| !value.is_empty())
        .cloned()
}

/// When the token says it expires (`exp`, read without checking the
/// signature: the API server has just checked it), as seconds since the
/// epoch.
pub fn expires_at(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_i64()
}

/// One answer, until when it holds.
#[derive(Clone, Debug)]
struct Cached {
    answer: Result<AgentPod, Refusal>,
    until: Instant,
}

/// Reviews agent tokens with the API server; one per operator replica.
pub struct TokenReviewer {
    api: Api<TokenReview>,
    config: ReviewConfig,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// A reviewer asking the API server of `client`.
    pub fn new(client: kube::Client, config: ReviewConfig) -> TokenReviewer {
        TokenReviewer {
            api: Api::all(client),
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// What it checks.
    pub fn config(&self) -> &ReviewConfig {
        &self.config
    }

    /// The agent `token` belongs to, or why it is refused; an error when
    /// the API server cannot be asked (see the module contract).
    pub async fn review(&self, token: &str) -> Result<Result<AgentPod, Refusal>, ReviewError> {
        let hash = hash_token(token);
        let now = Instant::now();
        if let Some(cached) = self.lock().get(&hash).filter(|c| c.until > now) {
            return Ok(cached.answer.clone());
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.config.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let created = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| ReviewError::Timeout)?
        .map_err(ReviewError::Api)?;
        let answer = judge(&created.status.unwrap_or_default(), &self.config);
        let ttl = match &answer {
            Ok(_) => accepted_ttl(expires_at(token), chrono::Utc::now().timestamp()),
            Err(_) => REFUSED_TTL,
        };
        self.remember(hash, answer.clone(), Instant::now() + ttl);
        Ok(answer)
    }

    fn remember(&self, hash: String, answer: Result<AgentPod, Refusal>, until: Instant) {
        let mut cache = self.lock();
        if cache.len() >= CACHE_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, cached| cached.until > now);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(hash, Cached { answer, until });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How long an accepted token is cached: [`ACCEPTED_TTL`], cut short by
/// its expiry `exp` (seconds since the epoch) as seen at `now`.
fn accepted_ttl(exp: Option<i64>, now: i64) -> Duration {
    match exp {
        Some(exp) => {
            let left = u64::try_from(exp.saturating_sub(now)).unwrap_or(0);
            ACCEPTED_TTL.min(Duration::from_secs(left))
        }
        None => ACCEPTED_TTL,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
