//! The operator's HTTP API: health, metrics, and the read API behind
//! `veil-operator get` (agents' endpoints join later under `/v1/agent/`).
//!
//! `/healthz`, `/readyz` and `/metrics` are open, as Kubernetes probes and
//! Prometheus expect; everything under `/v1/` needs the admin token.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::store::Store;
use crate::view::View;

mod auth;
mod health;
mod objects;

/// Shared state of every handler.
#[derive(Clone)]
pub struct ApiState {
    pub view: watch::Receiver<Arc<View>>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// SHA-256 of the admin token.
    pub admin_token_hash: Arc<str>,
}

/// The whole router.
pub fn router(state: ApiState) -> Router {
    let admin = Router::new()
        .route("/v1/objects/{kind}", get(objects::list))
        .route("/v1/errors", get(objects::errors))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(admin)
        .with_state(state)
}
