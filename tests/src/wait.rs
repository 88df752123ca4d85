//! Polling for a condition in end-to-end tests.

use std::time::{Duration, Instant};

/// Calls `check` every `poll` until it returns `Some`, and returns that.
/// After `limit` it panics naming `what`, followed by `context()` (the
/// logs that explain why).
pub async fn wait_until<T>(
    what: &str,
    limit: Duration,
    poll: Duration,
    context: impl Fn() -> String,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(poll).await;
    }
}
