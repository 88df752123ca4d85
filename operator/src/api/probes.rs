//! `GET /v1/probes/strategies/{namespace}/{name}?rounds=N`: the stored
//! probe rounds of a Strategy, the newest `N` (default 1) of each node,
//! for `veil-operator get strategy NAME -o wide`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::SecondsFormat;
use serde::Deserialize;
use serde_json::json;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;

use super::ApiState;
use crate::probe_history::ROUNDS_KEPT;

/// Query of a probe-round read.
#[derive(Debug, Deserialize)]
pub struct RoundParams {
    /// Rounds per node, newest first (1 to the rounds kept).
    pub rounds: Option<u32>,
}

/// `{"rounds": [{node, finishedAt, score, samples}]}`, by node, newest first.
pub async fn strategy_rounds(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
    Query(params): Query<RoundParams>,
) -> Response {
    let key = ObjectKey::new(Kind::Strategy, &namespace, &name);
    if !state.view.borrow().world.objects.contains_key(&key) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("strategy \"{name}\" not found in namespace {namespace}") })),
        )
            .into_response();
    }
    let per_node = params.rounds.unwrap_or(1).clamp(1, ROUNDS_KEPT) as usize;
    match state.store.probe_rounds(&namespace, &name, per_node).await {
        Ok(rounds) => {
            let rounds: Vec<_> = rounds
                .into_iter()
                .map(|r| {
                    json!({
                        "node": r.node,
                        "finishedAt": r.finished_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                        "score": r.score,
                        "samples": r.samples,
                    })
                })
                .collect();
            Json(json!({ "rounds": rounds })).into_response()
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": format!("state store: {error}") })),
        )
            .into_response(),
    }
}
