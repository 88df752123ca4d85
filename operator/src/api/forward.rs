//! Kubernetes mode with several replicas: a follower hands every request
//! under `/v1/` (the agent protocol and the admin read API) to the leader,
//! so agents and `veil-operator get` work through whichever replica a
//! Service picks.
//!
//! Contract of [`forward`] (a middleware in front of every route):
//! - paths outside `/v1/` (`/healthz`, `/readyz`, `/metrics`) and every
//!   request on the leader are served here, as without forwarding;
//! - on a follower whose leader advertises an endpoint, the request goes
//!   there: method, path and query, the body (buffered, at most
//!   [`MAX_BODY_BYTES`], else 413), and its end-to-end headers
//!   (`Authorization` included, hop-by-hop ones dropped), plus
//!   [`FORWARDED_HEADER`] naming this replica; the leader's status, headers
//!   and body (streamed) come back. A request may take [`TIMEOUT`], longer
//!   than the assignment long-poll;
//! - a request that already carries [`FORWARDED_HEADER`] is never
//!   forwarded again: it is served on the leader, and answered 503
//!   anywhere else (no loops);
//! - no known leader, no advertised endpoint, or a leader that cannot be
//!   reached: 503 with `Retry-After: 2` and a JSON `{"error": …}` (agents
//!   retry 5xx with backoff). While the leader is not known yet (just
//!   started, or the Lease was lost) the answer waits up to
//!   [`UNKNOWN_WAIT`] for it first;
//! - this replica checks no token: the leader does; but a request without
//!   `Authorization` is answered 401 here, before its body is read.
//!   Headers (tokens) are never logged.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use reqwest::Url;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderState;
use crate::metrics::Metrics;

/// Marks a forwarded request; its value is the forwarding replica's name.
pub const FORWARDED_HEADER: &str = "x-veil-forwarded";
/// Largest request body passed on: the same limit the leader's own
/// routes apply ([`super::MAX_BODY_BYTES`]).
pub const MAX_BODY_BYTES: usize = super::MAX_BODY_BYTES;
/// Upper bound of one forwarded request: the 30 s assignment long-poll
/// plus room.
pub const TIMEOUT: Duration = Duration::from_secs(45);
/// How long a request waits for the leader to become known.
pub const UNKNOWN_WAIT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// What 503 answers tell clients to wait, in seconds.
const RETRY_AFTER_SECONDS: &str = "2";

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1),
/// plus those the client sets anew.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Why a forwarder could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("HTTP client for forwarding to the leader: {0}")]
    Client(#[source] veil_agent::trust::TrustError),
}

/// Hands requests to the leader; one per replica in Kubernetes mode.
pub struct Forwarder {
    leader: watch::Receiver<LeaderState>,
    /// This replica's name, sent in [`FORWARDED_HEADER`].
    identity: HeaderValue,
    http: reqwest::Client,
    metrics: std::sync::Arc<Metrics>,
    shutdown: CancellationToken,
}

impl Forwarder {
    /// A forwarder that follows `leader`; `identity` names this replica;
    /// the leader's certificate must verify against `trust` (the CA every
    /// replica serves under).
    pub fn new(
        leader: watch::Receiver<LeaderState>,
        identity: &str,
        trust: &veil_agent::trust::Trust,
        metrics: std::sync::Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Forwarder, ForwardError> {
        let http = trust
            .http_client(
                reqwest::Client::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(TIMEOUT),
            )
            .map_err(ForwardError::Client)?;
        Ok(Forwarder {
            leader,
            identity: HeaderValue::from_str(identity)
                .unwrap_or_else(|_| HeaderValue::from_static("veil-operator")),
            http,
            metrics,
            shutdown,
        })
    }

    /// The leader as known now, after waiting up to [`UNKNOWN_WAIT`] while
    /// it is unknown.
    async fn current_leader(&self) -> LeaderState {
        let mut leader = self.leader.clone();
        let known = tokio::time::timeout(
            UNKNOWN_WAIT,
            leader.wait_for(|state| *state != LeaderState::Unknown),
        )
        .await;
        let state = match known {
            Ok(Ok(state)) => Some(state.clone()),
            _ => None,
        };
        state.unwrap_or_else(|| self.leader.borrow().clone())
    }

    async fn handle(&self, request: Request, next: Next) -> Response {
        let state = self.current_leader().await;
        let forwarded_by = request.headers().get(FORWARDED_HEADER).cloned();
        let endpoint = match (state, forwarded_by) {
            (LeaderState::Leader, _) => return next.run(request).await,
            (_, Some(by)) => {
                let by = String::from_utf8_lossy(by.as_bytes()).into_owned();
                return self.unavailable(&format!(
                    "forwarded by `{by}` to a replica that is not the leader (any more); not forwarding again"
                ));
            }
            (LeaderState::Unknown, None) => {
                return self.unavailable("the leader is not known yet");
            }
            (LeaderState::Follower { holder, endpoint }, None) => match endpoint {
                Some(endpoint) => endpoint,
                None if holder.is_empty() => {
                    return self.unavailable("the leader is not known yet");
                }
                None => {
                    return self.unavailable(&format!(
                        "the leader `{holder}` advertises no endpoint that is a Pod IP of this replica set (--advertise-url, or POD_IP; see this replica's log)"
                    ));
                }
            },
        };
        tokio::select! {
            response = self.pass_on(&endpoint, request) => response,
            () = self.shutdown.cancelled() => self.unavailable("operator shutting down"),
        }
    }

    async fn pass_on(&self, endpoint: &Url, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        // Refused before a byte of the body is buffered: every `/v1/`
        // route needs a token, and a declared size above the limit is 413.
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer <token>`",
            );
        }
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {MAX_BODY_BYTES} bytes"),
            );
        }
        let path = parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |p| p.as_str());
        let Ok(url) = Url::parse(&format!(
            "{}{path}",
            endpoint.as_str().trim_end_matches('/')
        )) else {
            return self.unavailable("the leader's endpoint does not form a URL");
        };
        let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {MAX_BODY_BYTES} bytes, or cut off"),
            );
        };
        let mut headers = end_to_end(&parts.headers);
        headers.insert(FORWARDED_HEADER, self.identity.clone());
        let sent = self
            .http
            .request(parts.method, url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let upstream = match sent {
            Ok(upstream) => upstream,
            Err(e) => {
                // reqwest's error names the URL (no secrets), never headers.
                tracing::warn!(leader = %endpoint, error = %e, "could not reach the leader");
                return self.unavailable(&format!("the leader at {endpoint} is unreachable"));
            }
        };
        self.count("forwarded");
        let mut response = Response::builder().status(upstream.status());
        if let Some(headers) = response.headers_mut() {
            *headers = end_to_end(upstream.headers());
            // The body is streamed; hyper frames it anew.
            headers.remove(header::CONTENT_LENGTH);
        }
        let chunks = futures::stream::try_unfold(upstream, |mut upstream| async move {
            Ok::<_, reqwest::Error>(upstream.chunk().await?.map(|chunk| (chunk, upstream)))
        });
        response
            .body(Body::from_stream(chunks))
            .unwrap_or_else(|_| self.unavailable("the leader's answer could not be passed on"))
    }

    fn unavailable(&self, message: &str) -> Response {
        self.count("unavailable");
        let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
        response
    }

    fn count(&self, result: &str) {
        self.metrics
            .forwarded_requests_total
            .get_or_create(&crate::metrics::ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }
}

/// The middleware: see the module's contract.
pub async fn forward(
    State(forwarder): State<std::sync::Arc<Forwarder>>,
    request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    forwarder.handle(request, next).await
}

/// `headers` without hop-by-hop headers, those named in `Connection`, and
/// `Content-Length` (set anew for the body that is sent).
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let mut kept = headers.clone();
    for name in HOP_BY_HOP.iter().copied() {
        kept.remove(name);
    }
    for name in &named {
        kept.remove(name);
    }
    kept.remove(header::CONTENT_LENGTH);
    kept
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests;
