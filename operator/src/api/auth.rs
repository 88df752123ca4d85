//! Bearer-token check for the admin API: compared in constant time, failed
//! attempts limited per client address ([`guard`]). The token itself is never logged.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiState, guard};
use crate::admin::{hash_token, hashes_equal};

/// Rejects requests without the admin token with 401 and a hint.
pub async fn require_admin(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if let Some(token) = presented
        && hashes_equal(&hash_token(token), &state.admin_token_hash)
    {
        return next.run(request).await;
    }
    let ip = guard::client_ip(request.extensions());
    if !state.failed_auth.allows(ip) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(serde_json::json!({
                "error": "too many failed authentications from this address; slow down"
            })),
        )
            .into_response();
    }
    if state.failed_auth.failed(ip) {
        tracing::warn!(%ip, "too many failed admin authentications from this address; answering 429 until it slows down");
    }
    match presented {
        Some(_) => unauthorized("the admin token is wrong (see admin.token in the data dir)"),
        None => unauthorized("missing `Authorization: Bearer <admin token>`"),
    }
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}
