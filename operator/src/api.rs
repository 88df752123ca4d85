//! The operator's HTTP API: health, metrics, the read API behind
//! `veil-operator get`, VLESS credentials for `veil-operator link`, and the
//! agents' endpoints under `/v1/agent/`.
//!
//! `/healthz`, `/readyz` and `/metrics` are open, as Kubernetes probes and
//! Prometheus expect; everything under `/v1/` needs the admin token.
//!
//! In Kubernetes mode a follower serves `/v1/` by handing each request to
//! the leader ([`forward`]).

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::sync::watch;

use crate::agents::Agents;
use crate::metrics::Metrics;
use crate::node_tokens::NodeTokens;
use crate::runs::RunBook;
use crate::store::Store;
use crate::traffic::TrafficBook;
use crate::view::View;

pub mod agent;
mod auth;
mod credentials;
pub mod forward;
pub mod guard;
mod health;
mod logs;
mod objects;
mod pod_identity;
mod probes;

/// The largest request body any route accepts (a bigger one is 413), the
/// same on the leader and on a forwarding follower. Agents keep reports
/// far smaller.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Shared state of every handler.
#[derive(Clone)]
pub struct ApiState {
    pub view: watch::Receiver<Arc<View>>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// SHA-256 of the admin token.
    pub admin_token_hash: Arc<str>,
    pub agents: Arc<Agents>,
    pub runs: Arc<RunBook>,
    /// Traffic counters, fed by reports.
    pub traffic: Arc<TrafficBook>,
    /// Agent tokens from node-token Secrets (Kubernetes mode; off in dir mode).
    pub node_tokens: NodeTokens,
    /// Heartbeat interval agents are told to keep.
    pub heartbeat_interval_seconds: u32,
    /// Cancelled when the operator stops: open long-polls answer at once
    /// instead of holding the graceful shutdown for up to 30 s.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Kubernetes mode: hands `/v1/` requests to the leader while this
    /// replica follows. `None` (dir mode): every request is served here.
    pub forwarder: Option<Arc<forward::Forwarder>>,
    /// Failed authentications per client address.
    pub failed_auth: Arc<guard::FailedAuthLimit>,
    /// The store's node tokens in memory.
    pub store_tokens: Arc<guard::StoreTokenCache>,
    /// Which probe rounds are in the store already.
    pub probe_history: Arc<crate::probe_history::ProbeHistory>,
}

// A follower passes reports on to the leader: its limit must not be the smaller one.
const _: () = assert!(forward::MAX_BODY_BYTES >= veil_crds::wire::MAX_REPORT_BODY_BYTES);

/// The whole router.
pub fn router(state: ApiState) -> Router {
    let admin = Router::new()
        .route("/v1/objects/{kind}", get(objects::list))
        .route("/v1/errors", get(objects::errors))
        .route(
            "/v1/logs/taskruns/{namespace}/{name}",
            get(logs::task_run_log),
        )
        .route(
            "/v1/probes/strategies/{namespace}/{name}",
            get(probes::strategy_rounds),
        )
        .route(
            "/v1/credentials/vlesskeys/{namespace}/{name}",
            get(credentials::vless_key),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    let agent = Router::new()
        .route("/v1/agent/register", axum::routing::post(agent::register))
        .route("/v1/agent/assignment", get(agent::assignment))
        .route(
            "/v1/agent/report",
            axum::routing::post(agent::report).layer(axum::extract::DefaultBodyLimit::max(
                veil_crds::wire::MAX_REPORT_BODY_BYTES,
            )),
        );
    let forwarder = state.forwarder.clone();
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(admin)
        .merge(agent)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    match forwarder {
        // Outermost: a follower passes `/v1/` on before any token check.
        Some(forwarder) => router.layer(axum::middleware::from_fn_with_state(
            forwarder,
            forward::forward,
        )),
        None => router,
    }
}

#[cfg(test)]
mod tests;
