//! `GET /v1/logs/taskruns/{namespace}/{name}?after=SEQ`: a run's full log,
//! chunk by chunk, for `veil-operator logs taskrun NAME [-f]`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;

use super::ApiState;
use crate::runs::{is_finished, log_ref};

/// Query of a log read.
#[derive(Debug, Deserialize)]
pub struct LogParams {
    /// Return chunks after this sequence number (0: from the start).
    #[serde(default)]
    pub after: i64,
}

/// The chunks after `after`, and whether the run has finished (no more will come).
pub async fn task_run_log(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
    Query(params): Query<LogParams>,
) -> Response {
    let key = ObjectKey::new(Kind::TaskRun, &namespace, &name);
    let uid = {
        let view = state.view.borrow();
        view.world
            .objects
            .get(&key)
            .and_then(|o| o.object.meta().uid.clone())
    };
    let Some(uid) = uid else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("taskrun \"{name}\" not found in namespace {namespace}") })),
        )
            .into_response();
    };
    let finished = state
        .runs
        .snapshot()
        .get(&uid)
        .is_some_and(|r| is_finished(&r.phase));
    match state
        .store
        .read_log(&log_ref(&namespace, &uid), params.after)
        .await
    {
        Ok(chunks) => {
            let chunks: Vec<_> = chunks
                .into_iter()
                .map(|(seq, text)| json!({ "seq": seq, "text": text }))
                .collect();
            Json(json!({ "chunks": chunks, "finished": finished })).into_response()
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": format!("state store: {error}") })),
        )
            .into_response(),
    }
}
