//! The forwarding middleware between real HTTP servers on loopback: a
//! "leader" upstream that echoes what it got, and a "follower" whose
//! leader state each test sets.
#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::{any, get};
use serde_json::{Value, json};

use super::*;
use crate::api::agent::LONG_POLL_SECONDS;

/// Serves `app` on a free loopback port; its base URL.
async fn serve(app: Router) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The leader: `/v1/echo` answers 201 with what it received (method,
/// path and query, headers, body) and headers of its own; `/v1/slow`
/// answers 204 after the long-poll limit plus one second.
async fn upstream(calls: Arc<AtomicUsize>) -> Url {
    let echo = move |request: Request| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let headers: serde_json::Map<String, Value> = parts
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        Value::String(value.to_str().unwrap().to_owned()),
                    )
                })
                .collect();
            (
                StatusCode::CREATED,
                [("x-upstream", "leader"), ("connection", "keep-alive")],
                Json(json!({
                    "method": parts.method.as_str(),
                    "uri": parts.uri.to_string(),
                    "headers": headers,
                    "body": String::from_utf8(body.to_vec()).unwrap(),
                })),
            )
        }
    };
    let slow = || async {
        tokio::time::sleep(Duration::from_secs(u64::from(LONG_POLL_SECONDS) + 1)).await;
        StatusCode::NO_CONTENT
    };
    serve(
        Router::new()
            .route("/v1/echo", any(echo))
            .route("/v1/slow", get(slow)),
    )
    .await
}

struct Follower {
    url: Url,
    leader: watch::Sender<LeaderState>,
    metrics: Arc<Metrics>,
}

/// A replica whose every own route answers `local`, behind the forwarder.
async fn follower(state: LeaderState) -> Follower {
    let (leader, rx) = watch::channel(state);
    let metrics = Arc::new(Metrics::new());
    let forwarder = Forwarder::new(
        rx,
        "veil-b",
        &veil_agent::trust::Trust::Plaintext,
        metrics.clone(),
        CancellationToken::new(),
    )
    .unwrap();
    let app = Router::new()
        .route("/v1/echo", any(|| async { "local" }))
        .route("/healthz", get(|| async { "local" }))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(forwarder),
            forward,
        ));
    Follower {
        url: serve(app).await,
        leader,
        metrics,
    }
}

fn following(endpoint: Option<Url>) -> LeaderState {
    LeaderState::Follower {
        holder: "veil-a".into(),
        endpoint,
    }
}

fn counted(metrics: &Metrics, result: &str) -> u64 {
    metrics
        .forwarded_requests_total
        .get_or_create(&crate::metrics::ResultLabel {
            result: result.into(),
        })
        .get()
}

/// `GET url` with a token, as every `/v1/` client sends (the follower
/// answers a request without one 401 itself).
async fn authed_get(url: Url) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .get(url)
        .bearer_auth("veil_node_secret")
        .send()
        .await
}

async fn assert_unavailable(response: reqwest::Response, says: &str) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers().get(header::RETRY_AFTER).unwrap(),
        RETRY_AFTER_SECONDS
    );
    let body: Value = response.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

#[tokio::test]
async fn a_follower_passes_method_path_query_body_and_end_to_end_headers_both_ways() {
    let calls = Arc::new(AtomicUsize::new(0));
    let leader = upstream(calls.clone()).await;
    let f = follower(following(Some(leader))).await;

    let response = reqwest::Client::new()
        .post(f.url.join("/v1/echo?after=7&node=edge-1").unwrap())
        .bearer_auth("veil_node_secret")
        .header("x-custom", "kept")
        .header("connection", "x-per-hop")
        .header("x-per-hop", "dropped")
        .header("proxy-authorization", "Basic dropped")
        .body(r#"{"node":"edge-1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-upstream"], "leader");
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["uri"], "/v1/echo?after=7&node=edge-1");
    assert_eq!(echoed["body"], r#"{"node":"edge-1"}"#);
    let headers = &echoed["headers"];
    assert_eq!(headers["authorization"], "Bearer veil_node_secret");
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(headers[FORWARDED_HEADER], "veil-b");
    assert_eq!(headers["content-length"], "17");
    assert_eq!(headers.get("x-per-hop"), None);
    assert_eq!(headers.get("proxy-authorization"), None);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(counted(&f.metrics, "forwarded"), 1);

    // Outside /v1/ the follower answers itself.
    let health = reqwest::get(f.url.join("/healthz").unwrap()).await.unwrap();
    assert_eq!(health.text().await.unwrap(), "local");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_leader_serves_itself_even_a_forwarded_request() {
    let f = follower(LeaderState::Leader).await;
    let response = reqwest::Client::new()
        .get(f.url.join("/v1/echo").unwrap())
        .header(FORWARDED_HEADER, "veil-c")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "local");
    assert_eq!(counted(&f.metrics, "forwarded"), 0);
}

#[tokio::test]
async fn a_forwarded_request_reaching_a_follower_is_not_forwarded_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let leader = upstream(calls.clone()).await;
    let f = follower(following(Some(leader))).await;
    let response = reqwest::Client::new()
        .get(f.url.join("/v1/echo").unwrap())
        .header(FORWARDED_HEADER, "veil-c")
        .send()
        .await
        .unwrap();
    assert_unavailable(response, "not forwarding again").await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(counted(&f.metrics, "unavailable"), 1);
}

#[tokio::test]
async fn no_endpoint_an_unreachable_leader_or_no_leader_is_503_with_retry_after() {
    let f = follower(following(None)).await;
    let echo = f.url.join("/v1/echo").unwrap();
    let response = authed_get(echo.clone()).await.unwrap();
    assert_unavailable(response, "`veil-a` advertises no endpoint").await;

    // A port nobody listens on: bound, then released.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap()
    };
    f.leader.send_replace(following(Some(closed)));
    let response = authed_get(echo.clone()).await.unwrap();
    assert_unavailable(response, "unreachable").await;

    // Unknown: the answer waits for the leader to become known, then gives up.
    f.leader.send_replace(LeaderState::Unknown);
    let response = authed_get(echo).await.unwrap();
    assert_unavailable(response, "not known yet").await;
    assert_eq!(counted(&f.metrics, "unavailable"), 3);
    assert_eq!(counted(&f.metrics, "forwarded"), 0);
}

#[tokio::test]
async fn a_request_waiting_while_the_leader_is_unknown_goes_on_once_it_is_known() {
    let calls = Arc::new(AtomicUsize::new(0));
    let leader = upstream(calls.clone()).await;
    let f = follower(LeaderState::Unknown).await;
    let request = tokio::spawn(authed_get(f.url.join("/v1/echo").unwrap()));
    // Known a moment later: the waiting request goes to the leader.
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.leader.send_replace(following(Some(leader)));
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_long_poll_longer_than_thirty_seconds_passes_through() {
    let leader = upstream(Arc::new(AtomicUsize::new(0))).await;
    let f = follower(following(Some(leader))).await;
    let response = authed_get(f.url.join("/v1/slow").unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(TIMEOUT > Duration::from_secs(u64::from(LONG_POLL_SECONDS) + 5));
}

#[tokio::test]
async fn a_request_without_a_token_or_with_a_huge_body_is_refused_before_it_is_read() {
    let calls = Arc::new(AtomicUsize::new(0));
    let leader = upstream(calls.clone()).await;
    let f = follower(following(Some(leader))).await;
    let echo = f.url.join("/v1/echo").unwrap();
    let response = reqwest::Client::new()
        .post(echo.clone())
        .body(vec![0u8; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = reqwest::Client::new()
        .post(echo)
        .bearer_auth("veil_node_secret")
        .header(header::CONTENT_LENGTH, (MAX_BODY_BYTES + 1).to_string())
        .body(vec![0u8; MAX_BODY_BYTES + 1])
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "nothing reached the leader"
    );
}
