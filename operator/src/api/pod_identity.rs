//! The node of a request signed with an agent pod's ServiceAccount token
//! (Kubernetes mode): the answer of [`TokenReviewer::review`] as an HTTP
//! result. Refusals are logged with their reason and the pod or user they
//! name, never with the token.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::node_tokens::review::TokenReviewer;

/// The node `token` is bound to; 401/403 when it identifies no agent, 503
/// when the API server cannot be asked.
pub async fn node_of(reviewer: &TokenReviewer, token: &str) -> Result<String, Response> {
    match reviewer.review(token).await {
        Ok(Ok(agent)) => {
            tracing::debug!(node = %agent.node, pod = %agent.pod, pod_uid = %agent.pod_uid, "agent pod token accepted");
            Ok(agent.node)
        }
        Ok(Err(refusal)) => {
            tracing::info!(reason = %refusal, "agent pod token refused");
            let status = if refusal.is_forbidden() {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            Err(error(status, &refusal.to_string()))
        }
        Err(failed) => {
            tracing::warn!(error = %failed, hint = "the operator needs `create tokenreviews` (manifests/rbac.yaml)", "could not review an agent pod token");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the operator could not check the token with the Kubernetes API server; try again",
            ))
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
