//! `notify`: webhook notifications about finished runs, delivered in the
//! background.
//!
//! This module owns the delivery queue, the per-request timeout, retries with
//! exponential backoff and the payload shape ([`finish_payload`]). It must
//! never block or slow its caller (the reconcile loop): [`Notifier::notify`]
//! only tries to enqueue, and a full queue drops the notification and counts
//! it. It never logs a webhook's path, query string or credentials — only
//! `scheme://host:port` ([`redact`]) — because webhook URLs usually carry
//! their secret (Slack and Discord put it in the path).
//!
//! Delivery: `POST` with a JSON body; 2xx is success; network errors
//! (including the timeout), 5xx and 429 are retried up to
//! [`NotifierOptions::max_attempts`] tries in all, waiting
//! `initial_backoff × 2ⁿ` (capped at `max_backoff`; a 429's `Retry-After` in
//! seconds is honoured up to the same cap) between tries; any other status
//! (4xx, a 3xx: redirects are never followed) gives up at once. Loopback
//! and private destinations are refused unless allowed ([`destination`]). Notifications are at most once
//! per call and are lost on shutdown: they are a courtesy, run state lives in
//! the TaskRun.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

mod deliver;
pub mod destination;
mod payload;
#[cfg(test)]
mod tests;

pub use payload::{finish_payload, webhooks_for};

/// How deliveries behave. [`Default`] gives the documented values.
#[derive(Clone, Debug)]
pub struct NotifierOptions {
    /// Notifications waiting for delivery before new ones are dropped. Default 1024.
    pub queue_capacity: usize,
    /// Deliveries in progress at once (a slow endpoint must not hold up the
    /// others). Default 8.
    pub max_in_flight: usize,
    /// Time limit of one request, connect to response headers. Default 5 s.
    pub timeout: Duration,
    /// Tries per notification, the first included. Default 3.
    pub max_attempts: u32,
    /// Wait before the second try; doubles for each further try. Default 1 s.
    pub initial_backoff: Duration,
    /// Longest wait between tries. Default 30 s.
    pub max_backoff: Duration,
    /// Whether webhooks may go to loopback and private addresses
    /// (`--allow-private-webhooks`). Default `false`: such a notification
    /// is refused without a request ([`destination`]).
    pub allow_private: bool,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            queue_capacity: 1024,
            max_in_flight: 8,
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            allow_private: false,
        }
    }
}

/// Why one delivery failed (logged with the redacted URL, then counted).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No response: connection refused, DNS, TLS or the per-request timeout.
    /// The error carries no URL.
    #[error("request failed: {0}")]
    Transport(#[source] reqwest::Error),
    /// The endpoint answered with a status worth retrying (5xx, 429).
    #[error("endpoint answered {0} (retryable)")]
    Retryable(StatusCode),
    /// The endpoint refused the notification (4xx other than 429, or 3xx).
    #[error("endpoint refused the notification with {0}")]
    Rejected(StatusCode),
    /// The URL names a loopback or private address, which is not allowed.
    #[error(
        "the webhook address {0} is loopback or private (allowed with --allow-private-webhooks)"
    )]
    PrivateDestination(std::net::IpAddr),
}

/// One queued notification.
struct Job {
    url: Url,
    payload: Value,
}

/// Delivery counters (monotonic).
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// Handle to the background delivery task; cheap to clone. The task ends
/// once every handle is dropped and the queue is drained.
#[derive(Clone, Debug)]
pub struct Notifier {
    queue: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

impl Notifier {
    /// Starts the delivery task on the current Tokio runtime (panics outside
    /// one, like `tokio::spawn`). `client` should not carry a global timeout
    /// shorter than `options.timeout`.
    pub fn spawn(client: reqwest::Client, options: NotifierOptions) -> Notifier {
        let (queue, mut jobs) = mpsc::channel::<Job>(options.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let in_flight = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
        let options = Arc::new(options);
        let shared = Arc::clone(&counters);
        tokio::spawn(async move {
            // Take a slot first, so waiting jobs stay in the bounded queue.
            while let Ok(slot) = Arc::clone(&in_flight).acquire_owned().await {
                let Some(job) = jobs.recv().await else { break };
                let (client, options, counters) =
                    (client.clone(), Arc::clone(&options), Arc::clone(&shared));
                tokio::spawn(async move {
                    deliver::deliver(&client, &options, &counters, job).await;
                    drop(slot);
                });
            }
        });
        Notifier { queue, counters }
    }

    /// Queues a `POST` of `payload` to `webhook`. Returns at once: when the
    /// queue is full (or the delivery task is gone) the notification is
    /// dropped, counted in [`Notifier::dropped`] and logged without the URL's
    /// secrets.
    pub fn notify(&self, webhook: Url, payload: Value) {
        if let Err(error) = self.queue.try_send(Job {
            url: webhook,
            payload,
        }) {
            let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let (why, job) = match &error {
                mpsc::error::TrySendError::Full(job) => ("queue full", job),
                mpsc::error::TrySendError::Closed(job) => ("notifier stopped", job),
            };
            tracing::warn!(webhook = %redact(&job.url), dropped, "webhook notification dropped: {why}");
        }
    }

    /// Notifications delivered (a 2xx answer).
    pub fn sent(&self) -> u64 {
        self.counters.sent.load(Ordering::Relaxed)
    }

    /// Notifications given up on after a refusal or the last try.
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// Notifications dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }
}

/// `scheme://host[:port]` of a webhook: safe to log (no user info, path,
/// query or fragment).
pub fn redact(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}
