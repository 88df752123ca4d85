//! `GET /v1/objects/{kind}` and `GET /v1/errors`: what `veil-operator get` reads.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use veil_crds::kind::Kind;

use super::ApiState;
use crate::view;

/// Query string of a list: `namespace` (absent = all) and `name`.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// Lists objects of a kind (any name people use for it) with their statuses.
pub async fn list(
    State(state): State<ApiState>,
    Path(kind): Path<String>,
    Query(params): Query<ListParams>,
) -> Response {
    let Some(kind) = Kind::from_cli_name(&kind) else {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        return (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": format!("unknown kind `{kind}`; known kinds: {}", known.join(", "))
            })),
        )
            .into_response();
    };
    let snapshot = state.view.borrow().clone();
    let body = snapshot.list_json(&view::Query {
        kind,
        namespace: params.namespace.as_deref(),
        name: params.name.as_deref(),
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The source's current load errors (file, line, column, object, field, message).
pub async fn errors(State(state): State<ApiState>) -> Response {
    match state.store.load_errors().await {
        Ok(errors) => Json(json!({ "errors": errors })).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": format!("state store: {error}") })),
        )
            .into_response(),
    }
}
