//! One notification's delivery: tries, backoff, the final count and log line.
//!
//! Never logs a URL other than through [`super::redact`], and never lets a
//! `reqwest::Error` (whose text holds the URL) out without stripping it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use super::{Counters, DeliveryError, Job, NotifierOptions, redact};

/// What one try asks for next.
enum Outcome {
    Delivered,
    Retry(DeliveryError, Option<Duration>),
    GiveUp(DeliveryError),
}

/// Delivers `job`, retrying as the module documents, and counts the result.
pub(super) async fn deliver(
    client: &reqwest::Client,
    options: &NotifierOptions,
    counters: &Counters,
    job: Job,
) {
    let attempts = options.max_attempts.max(1);
    let mut backoff = options.initial_backoff;
    for attempt in 1..=attempts {
        match attempt_once(client, options, &job).await {
            Outcome::Delivered => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Outcome::Retry(error, retry_after) if attempt < attempts => {
                let wait = retry_after.unwrap_or(backoff).min(options.max_backoff);
                tracing::debug!(webhook = %redact(&job.url), attempt, ?wait, %error, "webhook delivery failed; retrying");
                tokio::time::sleep(wait).await;
                backoff = backoff.saturating_mul(2).min(options.max_backoff);
            }
            Outcome::Retry(error, _) | Outcome::GiveUp(error) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(webhook = %redact(&job.url), attempts = attempt, %error, "webhook notification not delivered");
                return;
            }
        }
    }
}

/// One `POST`, classified.
async fn attempt_once(client: &reqwest::Client, options: &NotifierOptions, job: &Job) -> Outcome {
    if !options.allow_private
        && let Some(ip) = super::destination::refused_literal(&job.url)
    {
        return Outcome::GiveUp(DeliveryError::PrivateDestination(ip));
    }
    let response = client
        .post(job.url.clone())
        .timeout(options.timeout)
        .json(&job.payload)
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(error) => return Outcome::Retry(DeliveryError::Transport(error.without_url()), None),
    };
    let status = response.status();
    if status.is_success() {
        Outcome::Delivered
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Outcome::Retry(DeliveryError::Retryable(status), retry_after)
    } else {
        Outcome::GiveUp(DeliveryError::Rejected(status))
    }
}
