//! The agent protocol (design §5): `POST /v1/agent/register`,
//! `GET /v1/agent/assignment?after=REV`, `POST /v1/agent/report`.
//!
//! Every request carries a node token. A missing, unknown or revoked token
//! is 401; a token used for another node's data is 403. Tokens are compared
//! by hash and never logged. In Kubernetes mode an agent pod's projected
//! ServiceAccount token is checked by a TokenReview and names the node its
//! Pod runs on ([`crate::node_tokens::review`]). A node token is valid when the store holds it
//! (`veil-operator token create`) or, in Kubernetes mode, a node-token
//! Secret does ([`crate::node_tokens`]); until those Secrets are first
//! listed, a token the store does not know is answered 503 (retry), not 401.

use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use veil_crds::wire::{NodeReport, RegisterRequest, RegisterResponse, ReportAck};

use super::ApiState;
use crate::admin::hash_token;
use crate::node_tokens::Lookup;
use crate::node_tokens::review::looks_like_jwt;

/// How often agents report when nothing happens, unless `--heartbeat-interval` says
/// otherwise; 3 missed intervals make a node NotReady.
pub const HEARTBEAT_INTERVAL_SECONDS: u32 = 10;
/// How long an assignment long-poll waits before answering 204.
pub const LONG_POLL_SECONDS: u32 = 30;

/// The node a request's token is bound to.
pub struct NodeIdentity(pub String);

impl FromRequestParts<ApiState> for NodeIdentity {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Response> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                error(
                    StatusCode::UNAUTHORIZED,
                    "missing `Authorization: Bearer <node token>`",
                )
            })?;
        if let Some(reviewer) = state.node_tokens.reviewer()
            && looks_like_jwt(token)
        {
            return super::pod_identity::node_of(reviewer, token)
                .await
                .map(NodeIdentity);
        }
        let hash = hash_token(token);
        // Secrets first (in memory); the store's tokens keep working too.
        let from_secrets = state.node_tokens.lookup(&hash);
        if let Lookup::Node(node) = from_secrets {
            return Ok(NodeIdentity(node));
        }
        match state.store.node_for_token_hash(&hash).await {
            Ok(Some(node)) => Ok(NodeIdentity(node)),
            Ok(None) if from_secrets == Lookup::NotListed => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the operator has not listed its node-token Secrets yet; try again",
            )),
            Ok(None) => Err(error(
                StatusCode::UNAUTHORIZED,
                "unknown or revoked node token (create one with `veil-operator token create --node NAME`, with `--kube` in Kubernetes mode)",
            )),
            Err(e) => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("state store: {e}"),
            )),
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn forbidden(token_node: &str, asked: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        &format!("this token belongs to node `{token_node}`, not `{asked}`"),
    )
}

/// `POST register`.
pub async fn register(
    State(state): State<ApiState>,
    NodeIdentity(node): NodeIdentity,
    Json(request): Json<RegisterRequest>,
) -> Response {
    if request.node != node {
        return forbidden(&node, &request.node);
    }
    let now = Utc::now();
    let last_report_seq = match state.runs.register(&request, now).await {
        Ok(seq) => seq,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("state store: {e}"),
            );
        }
    };
    tracing::info!(%node, os = %request.os, arch = %request.arch, version = %request.agent_version, "agent registered");
    state.agents.register(request, now);
    Json(RegisterResponse {
        node,
        heartbeat_interval_seconds: state.heartbeat_interval_seconds,
        long_poll_seconds: LONG_POLL_SECONDS,
        last_report_seq,
    })
    .into_response()
}

/// Query of `GET assignment`.
#[derive(Debug, Deserialize)]
pub struct AssignmentQuery {
    /// The revision the agent has; the answer waits until a newer one exists.
    #[serde(default)]
    pub after: u64,
    /// The node asked for (defaults to the token's node).
    pub node: Option<String>,
    /// Long-poll limit in seconds (at most [`LONG_POLL_SECONDS`]).
    pub wait: Option<u32>,
}

/// `GET assignment?after=REV`: the node's whole assignment as soon as its
/// revision is newer than `after`; 204 after the long-poll limit.
pub async fn assignment(
    State(state): State<ApiState>,
    NodeIdentity(node): NodeIdentity,
    Query(query): Query<AssignmentQuery>,
) -> Response {
    if let Some(asked) = &query.node
        && asked != &node
    {
        return forbidden(&node, asked);
    }
    if !state.agents.seen(&node, Utc::now(), None) {
        return error(
            StatusCode::CONFLICT,
            "register before polling for assignments",
        );
    }
    let wait = Duration::from_secs(
        query
            .wait
            .unwrap_or(LONG_POLL_SECONDS)
            .min(LONG_POLL_SECONDS)
            .into(),
    );
    let mut rx = state.agents.subscribe(&node);
    let newer = tokio::select! {
        newer = tokio::time::timeout(wait, rx.wait_for(|a| a.revision > query.after)) => newer,
        _ = state.shutdown.cancelled() => return error(StatusCode::SERVICE_UNAVAILABLE, "operator shutting down"),
    };
    match newer {
        Ok(Ok(assignment)) => Json((**assignment).clone()).into_response(),
        Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, "operator shutting down"),
        Err(_) => StatusCode::NO_CONTENT.into_response(),
    }
}

/// `POST report`: applied once per `seq`; a retried report is acknowledged without effect.
///
/// Traffic is applied first: the run book records the report's seq, which
/// a re-registering agent is told so it drops what was applied; traffic
/// must be in the store by then.
pub async fn report(
    State(state): State<ApiState>,
    NodeIdentity(node): NodeIdentity,
    Json(report): Json<NodeReport>,
) -> Response {
    if report.node != node {
        return forbidden(&node, &report.node);
    }
    let now = Utc::now();
    if !state.agents.seen(&node, now, Some(report.applied_revision)) {
        return error(StatusCode::CONFLICT, "register before reporting");
    }
    let applied = async {
        state.traffic.apply_report(&node, &report, now).await?;
        state.runs.report(&node, &report, now).await
    };
    match applied.await {
        Ok(()) => {
            state
                .agents
                .set_strategies(&node, report.seq, report.strategies);
            state
                .agents
                .set_servers(&node, report.seq, report.servers, now);
            state.agents.notify_changed();
            Json(ReportAck { seq: report.seq }).into_response()
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("state store: {e}"),
        ),
    }
}
