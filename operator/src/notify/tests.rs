//! Delivery against a real HTTP server on 127.0.0.1.

use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::json;
use veil_crds::task_run::{TaskRunPhase, TaskRunStatus};
use veil_crds::validate::Rfc3339;

use super::*;

/// What the test server saw.
#[derive(Default)]
struct Seen {
    attempts: AtomicUsize,
    bodies: Mutex<Vec<Value>>,
}

/// How the test server answers the n-th request (0-based); `None` never answers.
type Script = fn(usize) -> Option<StatusCode>;

async fn hook(
    State((seen, script)): State<(Arc<Seen>, Script)>,
    Json(body): Json<Value>,
) -> StatusCode {
    let n = seen.attempts.fetch_add(1, Ordering::SeqCst);
    match script(n) {
        Some(status) => {
            if status.is_success() {
                seen.bodies.lock().unwrap().push(body);
            }
            status
        }
        None => std::future::pending().await,
    }
}

/// Serves `script` on a free loopback port; returns the webhook URL.
async fn serve(script: Script) -> (Url, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state((Arc::clone(&seen), script));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (
        Url::parse(&format!("http://127.0.0.1:{port}/hook?token=s3cret")).unwrap(),
        seen,
    )
}

/// Fast retries; loopback webhooks allowed (the test servers listen on
/// 127.0.0.1, as `--allow-private-webhooks` allows).
fn fast(options: NotifierOptions) -> NotifierOptions {
    NotifierOptions {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        allow_private: true,
        ..options
    }
}

/// Waits (up to 10 s) until `done` holds.
async fn until(done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn delivers_the_payload() {
    let (url, seen) = serve(|_| Some(StatusCode::NO_CONTENT)).await;
    let notifier = Notifier::spawn(reqwest::Client::new(), fast(NotifierOptions::default()));
    notifier.notify(url, json!({"run": "backup-1"}));
    until(|| notifier.sent() == 1).await;
    assert_eq!(*seen.bodies.lock().unwrap(), [json!({"run": "backup-1"})]);
    assert_eq!((notifier.failed(), notifier.dropped()), (0, 0));
}

#[tokio::test]
async fn server_error_is_retried_and_delivered_once() {
    let (url, seen) = serve(|n| {
        Some(if n == 0 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        })
    })
    .await;
    let notifier = Notifier::spawn(reqwest::Client::new(), fast(NotifierOptions::default()));
    notifier.notify(url, json!({"n": 1}));
    until(|| notifier.sent() == 1).await;
    assert_eq!(seen.attempts.load(Ordering::SeqCst), 2);
    assert_eq!(seen.bodies.lock().unwrap().len(), 1);
    assert_eq!(notifier.failed(), 0);
}

#[tokio::test]
async fn client_error_is_not_retried() {
    let (url, seen) = serve(|_| Some(StatusCode::BAD_REQUEST)).await;
    let notifier = Notifier::spawn(reqwest::Client::new(), fast(NotifierOptions::default()));
    notifier.notify(url, json!({}));
    until(|| notifier.failed() == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(notifier.sent(), 0);
}

#[tokio::test]
async fn silent_server_times_out_after_bounded_attempts_and_never_blocks_the_caller() {
    let (url, seen) = serve(|_| None).await;
    let options = NotifierOptions {
        queue_capacity: 2,
        max_in_flight: 1,
        timeout: Duration::from_millis(150),
        ..fast(NotifierOptions::default())
    };
    let notifier = Notifier::spawn(reqwest::Client::new(), options);
    let start = Instant::now();
    for _ in 0..50 {
        notifier.notify(url.clone(), json!({}));
    }
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "notify blocked for {:?}",
        start.elapsed()
    );
    let accepted = 50 - notifier.dropped();
    assert!(
        (1..=3).contains(&accepted),
        "queue bound: {accepted} accepted"
    );
    until(|| notifier.failed() == accepted).await;
    let expected_attempts = usize::try_from(accepted * 3).unwrap();
    assert_eq!(seen.attempts.load(Ordering::SeqCst), expected_attempts);
    assert_eq!(notifier.sent(), 0);
}

#[test]
fn redact_keeps_only_scheme_host_and_port() {
    let url =
        Url::parse("https://user:pw@hooks.example.com:8443/services/T/B/secret?token=x#f").unwrap();
    assert_eq!(redact(&url), "https://hooks.example.com:8443");
    assert_eq!(
        redact(&Url::parse("http://example.com/a?b").unwrap()),
        "http://example.com"
    );
}

#[test]
fn finish_payload_has_the_documented_shape() {
    let status = TaskRunStatus {
        phase: TaskRunPhase::Failed,
        reason: Some("NonZeroExit".into()),
        exit_code: Some(2),
        started_at: Some(Rfc3339::parse("2026-01-01T00:00:01Z").unwrap()),
        finished_at: Some(Rfc3339::parse("2026-01-01T00:00:09Z").unwrap()),
        node: Some("edge-1".into()),
        log_tail: vec!["password=hunter2".into()],
        ..TaskRunStatus::default()
    };
    assert_eq!(
        finish_payload("ops", "backup", "backup-29453760", &status),
        json!({
            "schedule": "ops/backup", "run": "backup-29453760", "phase": "Failed",
            "reason": "NonZeroExit", "exitCode": 2,
            "startedAt": "2026-01-01T00:00:01Z", "finishedAt": "2026-01-01T00:00:09Z",
            "node": "edge-1"
        })
    );
    let pending = finish_payload("ops", "backup", "r", &TaskRunStatus::default());
    assert_eq!(pending["exitCode"], Value::Null);
    assert_eq!(pending["node"], Value::Null);
}

#[test]
fn webhooks_are_chosen_by_result() {
    let notify: veil_crds::schedule::Notify = serde_yaml_ng::from_str(
        "webhooks:\n- url: https://a.example/x\n- url: https://b.example/y\n  on: [Succeeded, Failed]",
    )
    .unwrap();
    let urls = |phase| {
        webhooks_for(Some(&notify), phase)
            .map(|u| u.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        urls(TaskRunPhase::Failed),
        ["https://a.example/x", "https://b.example/y"]
    );
    assert_eq!(urls(TaskRunPhase::Succeeded), ["https://b.example/y"]);
    assert!(urls(TaskRunPhase::Cancelled).is_empty());
    assert_eq!(webhooks_for(None, TaskRunPhase::Failed).count(), 0);
}

#[tokio::test]
async fn loopback_webhooks_are_refused_unless_allowed() {
    let (url, seen) = serve(|_| Some(StatusCode::OK)).await;
    let strict = NotifierOptions {
        allow_private: false,
        ..fast(NotifierOptions::default())
    };
    let client = destination::webhook_client(false).unwrap();
    let notifier = Notifier::spawn(client, strict.clone());
    // An IP literal, and a name that resolves to loopback.
    notifier.notify(url.clone(), json!({}));
    let mut by_name = url.clone();
    by_name.set_host(Some("localhost")).unwrap();
    notifier.notify(by_name, json!({}));
    until(|| notifier.failed() == 2).await;
    assert_eq!(
        seen.attempts.load(Ordering::SeqCst),
        0,
        "no request reached the loopback server"
    );
    assert_eq!(notifier.sent(), 0);

    // The same webhook with the flag: delivered.
    let allowed = Notifier::spawn(
        destination::webhook_client(true).unwrap(),
        fast(NotifierOptions::default()),
    );
    allowed.notify(url, json!({}));
    until(|| allowed.sent() == 1).await;
    assert_eq!(seen.attempts.load(Ordering::SeqCst), 1);
}

#[test]
fn private_addresses_are_recognised() {
    for private in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
    ] {
        assert!(
            destination::is_private(private.parse().unwrap()),
            "{private}"
        );
    }
    for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "100.128.0.1"] {
        assert!(
            !destination::is_private(public.parse().unwrap()),
            "{public}"
        );
    }
}

async fn redirect_to(State(target): State<String>) -> axum::response::Response {
    axum::response::IntoResponse::into_response((
        StatusCode::TEMPORARY_REDIRECT,
        [(axum::http::header::LOCATION, target)],
    ))
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let (target, seen) = serve(|_| Some(StatusCode::OK)).await;
    let app = Router::new()
        .route("/hook", post(redirect_to))
        .with_state(target.to_string());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let redirecting = Url::parse(&format!("http://127.0.0.1:{port}/hook")).unwrap();
    let notifier = Notifier::spawn(
        destination::webhook_client(true).unwrap(),
        fast(NotifierOptions::default()),
    );
    notifier.notify(redirecting, json!({}));
    until(|| notifier.failed() == 1).await;
    assert_eq!(
        seen.attempts.load(Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );
}
