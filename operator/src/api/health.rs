//! `/healthz` (process alive), `/readyz` (source loaded, store reachable), `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::ApiState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once the source is loaded and the store answers — on a
/// Kubernetes-mode follower too ("leader or ready follower"): a follower
/// keeps its world current and takes over when the leader goes.
pub async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    let loaded = state.view.borrow().loaded;
    if !loaded {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "source not loaded yet\n".to_owned(),
        );
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("state store unreachable: {error}\n"),
        ),
    }
}

pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
