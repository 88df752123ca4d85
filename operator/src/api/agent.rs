//! The agent protocol (design §5): `POST /v1/agent/register`,
//! `GET /v1/agent/assignment?after=REV[&delta=true]`, `POST /v1/agent/report`.
//!
//! Every request carries a node token. A missing, unknown or revoked token
//! is 401; a token used for another node's data is 403. Tokens are compared
//! by hash and never logged. In Kubernetes mode an agent pod's projected
//! ServiceAccount token is checked by a TokenReview and names the node its
//! Pod runs on ([`crate::node_tokens::review`]). A node token is valid when the store holds it
//! (`veil-operator token create`) or, in Kubernetes mode, a node-token
//! Secret does ([`crate::node_tokens`]); until those Secrets are first
//! listed, a token the store does not know is answered 503 (retry), not 401.

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use veil_crds::wire::{
    Assignment, AssignmentDelta, NodeReport, RegisterRequest, RegisterResponse, ReportAck,
};

use super::{ApiState, guard};
use crate::admin::hash_token;
use crate::agents::AssignmentAnswer;
use crate::metrics::EncodingLabel;
use crate::node_tokens::Lookup;
use crate::node_tokens::review::looks_like_jwt;
use crate::report_scope;

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
        let ip = guard::client_ip(&parts.extensions);
        let Some(token) = bearer(parts) else {
            return Err(failed(
                state,
                ip,
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer <node token>`",
            ));
        };
        if let Some(reviewer) = state.node_tokens.reviewer()
            && looks_like_jwt(token)
        {
            return super::pod_identity::node_of(reviewer, token)
                .await
                .map(NodeIdentity);
        }
        node_for_token(state, ip, &hash_token(token))
            .await
            .map(NodeIdentity)
    }
}

/// The bearer token of a request, if any.
fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The node a token (by hash) belongs to. Known tokens (node-token Secrets,
/// the store's tokens cached in memory) are never rate limited; an unknown
/// one is answered 429 while its address is over its failed-authentication
/// limit, before any store query ([`guard`]).
async fn node_for_token(state: &ApiState, ip: IpAddr, hash: &str) -> Result<String, Response> {
    // Secrets first (in memory); the store's tokens keep working too.
    let from_secrets = state.node_tokens.lookup(hash);
    if let Lookup::Node(node) = from_secrets {
        return Ok(node);
    }
    let known = state.store_tokens.cached(hash).is_some();
    if !known && !state.failed_auth.allows(ip) {
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed authentications from this address; slow down",
        ));
    }
    let found = if known {
        // Confirmed in the store: a revoked token stops at once.
        let found = state.store.node_for_token_hash(hash).await;
        if matches!(found, Ok(None)) {
            state.store_tokens.forget(hash);
        }
        found
    } else {
        state.store_tokens.find(&state.store, hash).await
    };
    match found {
        Ok(Some(node)) => Ok(node),
        Ok(None) if from_secrets == Lookup::NotListed => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the operator has not listed its node-token Secrets yet; try again",
        )),
        Ok(None) => Err(failed(
            state,
            ip,
            StatusCode::UNAUTHORIZED,
            "unknown or revoked node token (create one with `veil-operator token create --node NAME`, with `--kube` in Kubernetes mode)",
        )),
        Err(e) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("state store: {e}"),
        )),
    }
}

/// A failed authentication: counted against `ip`, logged once when the
/// address reaches its limit (the token is never logged).
fn failed(state: &ApiState, ip: IpAddr, status: StatusCode, message: &str) -> Response {
    if state.failed_auth.failed(ip) {
        tracing::warn!(%ip, "too many failed authentications from this address; answering 429 until it slows down");
    }
    error(status, message)
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
    /// Answer with an `AssignmentUpdate` (deltas where possible) instead
    /// of the plain whole assignment older agents expect.
    #[serde(default)]
    pub delta: bool,
}

/// The wire form of `veil_crds::wire::AssignmentUpdate`, borrowing what
/// [`Agents::answer`](crate::agents::Agents::answer) shares.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum UpdateBody<'a> {
    Full(&'a Assignment),
    Deltas(Vec<&'a AssignmentDelta>),
}

/// `GET assignment?after=REV`: the node's whole assignment as soon as its
/// revision is newer than `after`; 204 after the long-poll limit. With
/// `delta=true`, the deltas from `after` when the operator kept them.
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
        Ok(Ok(_)) if query.delta => match state.agents.answer(&node, query.after) {
            AssignmentAnswer::Full(full) => json_body(&state, "full", &UpdateBody::Full(&full)),
            AssignmentAnswer::Deltas(deltas) => json_body(
                &state,
                "delta",
                &UpdateBody::Deltas(deltas.iter().map(|d| &**d).collect()),
            ),
        },
        Ok(Ok(assignment)) => {
            let assignment = assignment.clone();
            json_body(&state, "full", &*assignment)
        }
        Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, "operator shutting down"),
        Err(_) => StatusCode::NO_CONTENT.into_response(),
    }
}

/// `body` as a JSON response, its size counted in `assignment_bytes_total`.
fn json_body(state: &ApiState, encoding: &str, body: &impl Serialize) -> Response {
    let bytes = match serde_json::to_vec(body) {
        Ok(bytes) => bytes,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("encoding the assignment: {e}"),
            );
        }
    };
    state
        .metrics
        .assignment_bytes_total
        .get_or_create(&EncodingLabel {
            encoding: encoding.to_owned(),
        })
        .inc_by(bytes.len() as u64);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response()
}

/// Refuses the whole report when any entry is not the node's own
/// ([`report_scope`]): 403 for another node's run or a server or user not
/// assigned to it, 422 for a counter out of bounds; 503 while no
/// assignment was published since the operator started (the scope is not
/// known yet; the agent retries).
fn check_scope(state: &ApiState, node: &str, report: &NodeReport) -> Result<(), Box<Response>> {
    let scope = match state.agents.report_scope(node) {
        Some(scope) => scope,
        None if report.traffic.is_empty() && report.logs.is_empty() => Default::default(),
        None => {
            return Err(Box::new(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the operator is computing assignments after its start; try again",
            )));
        }
    };
    let traffic = state.traffic.snapshot();
    report_scope::check(
        node,
        report,
        |uid| state.runs.placement(uid),
        &scope,
        &traffic,
    )
    .map_err(|refusal| {
        tracing::warn!(%node, seq = report.seq, reason = %refusal, "report refused; nothing of it was written");
        let status = if refusal.is_foreign() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        Box::new(error(
            status,
            &format!("report refused, nothing of it was written: {refusal}"),
        ))
    })
}

/// Keeps the report's new probe rounds (of Strategies assigned to `node`).
/// A store failure costs no report: the next one repeats the rounds.
async fn record_probe_rounds(
    state: &ApiState,
    node: &str,
    report: &NodeReport,
    now: chrono::DateTime<Utc>,
) {
    let Some(scope) = state.agents.report_scope(node) else {
        return;
    };
    if let Err(error) = state
        .probe_history
        .record(&state.store, node, &report.strategies, &scope, now)
        .await
    {
        tracing::warn!(%node, %error, "probe rounds not stored; the next report brings them again");
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
    if let Err(response) = check_scope(&state, &node, &report) {
        return *response;
    }
    let applied = async {
        state.traffic.apply_report(&node, &report, now).await?;
        state.runs.report(&node, &report, now).await
    };
    match applied.await {
        Ok(()) => {
            record_probe_rounds(&state, &node, &report, now).await;
            state
                .agents
                .set_strategies(&node, report.seq, report.strategies);
            state
                .agents
                .set_servers(&node, report.seq, report.servers, now);
            state.agents.set_journal_fault(&node, report.journal_fault);
            state.agents.notify_changed();
            Json(ReportAck { seq: report.seq }).into_response()
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("state store: {e}"),
        ),
    }
}
