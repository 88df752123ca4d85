//! `/healthz` (process alive), `/readyz` (source loaded, store reachable and
//! writable), `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::ApiState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Failed reconcile passes in a row after which `/readyz` answers 503.
pub const FAILED_PASSES_NOT_READY: i64 = 3;

/// Ready once the source is loaded, the store answers and the last
/// [`FAILED_PASSES_NOT_READY`] reconcile passes did not all fail (a store
/// that answers reads but refuses writes — a full disk, a read-only file —
/// fails every pass) — on a
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
    let failed = state.metrics.failed_passes.get();
    if failed >= FAILED_PASSES_NOT_READY {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the state store cannot be written: the last {failed} reconcile passes failed (revocations are still published to agents; see the log)\n"
            ),
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
