//! Writes credentials Secrets: server-side apply (field manager
//! `veil-operator`, forced) of the whole Secret the operator wants, in the
//! background.
//!
//! Contract of [`SecretWriter`]:
//! - [`SecretWriter::submit`] never blocks; the latest Secret submitted for
//!   a name wins, and one equal to the Secret in the cluster (as watched)
//!   is never written: the content is compared again right before the call;
//! - writes start only while the [`WriteGate`] is open; when it closes,
//!   everything not yet started is dropped (the next leader decides anew);
//! - `409`, `429`, `5xx`, `403`, timeouts and connection errors are retried
//!   per Secret with backoff (0.5 s doubling to 30 s); `404` (the namespace
//!   is gone) drops the write; `400`/`422` (e.g. a Secret of that name with
//!   another `type` exists) is logged and dropped;
//! - the Secret the API server returns is recorded as observed when the
//!   watch has seen nothing newer, so a pass before the watch's echo does
//!   not write the same Secret again;
//! - logs name the Secret and the API server's code and reason, never a
//!   value (nor the server's message, which could quote one).

use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::convert::{DesiredSecret, apply_body, observe};
use super::{Observed, SecretName};
use crate::backoff::Backoff;
use crate::sink::WriteGate;
use crate::sink::write_queue::WriteQueue;
use crate::source::kube::resources::FIELD_MANAGER;
use veil_agent::throttle::sleep_until_some;

/// Writes in flight at once (statuses, the bulk of the writes, get 32).
const MAX_IN_FLIGHT: usize = 8;
/// A write that takes longer is abandoned and retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of one Secret's write: 500 ms, doubling per failed attempt, at most 30 s.
const RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// A handle to the background writer; dropping it stops the writer.
pub(super) struct SecretWriter {
    updates: mpsc::UnboundedSender<DesiredSecret>,
    task: JoinHandle<()>,
}

impl SecretWriter {
    /// Starts the writer; `observed` is the watched state it compares with
    /// and records its writes in.
    pub fn spawn(client: kube::Client, gate: WriteGate, observed: watch::Sender<Observed>) -> Self {
        let (updates, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            client,
            gate,
            observed,
            queue: WriteQueue::new(),
            in_flight: FuturesUnordered::new(),
        };
        SecretWriter {
            updates,
            task: tokio::spawn(writer.run(rx)),
        }
    }

    /// Asks for `desired` to be in the cluster (see the module docs).
    pub fn submit(&self, desired: DesiredSecret) {
        // Fails only when the writer is gone (shutdown): nothing to do.
        let _ = self.updates.send(desired);
    }
}

impl Drop for SecretWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One finished write: the Secret, what was written, the resourceVersion
/// watched before the write, and the result.
type Written = (
    SecretName,
    DesiredSecret,
    Option<String>,
    Result<Secret, WriteFailure>,
);

#[derive(Debug)]
enum WriteFailure {
    Api(kube::Error),
    Timeout,
}

/// What to do after a failed write.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Retry,
    Drop,
    Refused,
}

fn outcome(failure: &WriteFailure) -> Outcome {
    match failure {
        WriteFailure::Api(kube::Error::Api(status)) => match status.code {
            404 => Outcome::Drop,
            400 | 422 => Outcome::Refused,
            _ => Outcome::Retry,
        },
        _ => Outcome::Retry,
    }
}

/// Code and reason of a failure: what a log may say.
fn describe(failure: &WriteFailure) -> String {
    match failure {
        WriteFailure::Api(kube::Error::Api(status)) => {
            format!("HTTP {} {}", status.code, status.reason)
        }
        WriteFailure::Api(_) => "the API server could not be reached".to_owned(),
        WriteFailure::Timeout => format!("no answer within {WRITE_TIMEOUT:?}"),
    }
}

struct Writer {
    client: kube::Client,
    gate: WriteGate,
    observed: watch::Sender<Observed>,
    /// Secrets to write: ready, waiting for a retry or in flight.
    queue: WriteQueue<SecretName, DesiredSecret>,
    in_flight: FuturesUnordered<BoxFuture<'static, Written>>,
}

impl Writer {
    async fn run(mut self, mut updates: mpsc::UnboundedReceiver<DesiredSecret>) {
        loop {
            self.start_writes();
            let next_retry = self.queue.next_retry();
            tokio::select! {
                update = updates.recv() => match update {
                    Some(desired) => self.queue.submit(desired.name.clone(), desired),
                    None => return,
                },
                Some(written) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.finish(written);
                }
                () = sleep_until_some(next_retry) => self.queue.promote_due(),
                () = self.gate.changed() => {
                    if !self.gate.is_open() {
                        self.queue.clear();
                    }
                }
            }
        }
    }

    fn start_writes(&mut self) {
        while self.gate.is_open() && self.in_flight.len() < MAX_IN_FLIGHT {
            let Some((name, desired)) = self.queue.pop_ready() else {
                return;
            };
            let before = {
                let observed = self.observed.borrow();
                match observed.secrets.get(&name) {
                    Some(seen) if seen.content == desired.content => None,
                    seen => Some(seen.and_then(|s| s.resource_version.clone())),
                }
            };
            let Some(before) = before else {
                // Already as wanted: nothing to write.
                self.queue.remove(&name);
                continue;
            };
            self.in_flight
                .push(Box::pin(write(self.client.clone(), desired, before)));
        }
    }

    fn finish(&mut self, (name, written, before, result): Written) {
        let Some(current) = self.queue.get(&name) else {
            return;
        };
        let replaced = *current != written;
        match result {
            Ok(stored) => {
                tracing::info!(namespace = %name.0, secret = %name.1, "wrote a credentials Secret");
                record(&self.observed, &name, before.as_deref(), &stored);
                self.queue.written(name, replaced);
            }
            Err(failure) => match outcome(&failure) {
                Outcome::Retry => {
                    let (namespace, secret) = name.clone();
                    let delay = self.queue.retry(name, |failures| RETRY.delay(failures));
                    tracing::warn!(%namespace, %secret, error = %describe(&failure), retry_in = ?delay.unwrap_or_default(), "writing a credentials Secret failed; retrying");
                }
                Outcome::Drop => {
                    tracing::debug!(namespace = %name.0, secret = %name.1, "namespace gone; the Secret is not written");
                    self.queue.remove(&name);
                }
                Outcome::Refused => {
                    tracing::error!(namespace = %name.0, secret = %name.1, error = %describe(&failure), "the API server refused a credentials Secret; if a Secret of this name that Veil does not own exists, rename or delete it");
                    self.queue.remove(&name);
                }
            },
        }
    }
}

/// Records `stored` (the API server's answer) as observed, unless the
/// watch has already moved past the version seen before the write.
fn record(
    observed: &watch::Sender<Observed>,
    name: &SecretName,
    before: Option<&str>,
    stored: &Secret,
) {
    observed.send_if_modified(|state| {
        let current = state
            .secrets
            .get(name)
            .and_then(|s| s.resource_version.as_deref());
        if current == before
            && let Some((stored_name, seen)) = observe(stored)
            && stored_name == *name
        {
            state.secrets.insert(stored_name, seen);
        }
        // Our own write: nothing for the controller to react to.
        false
    });
}

async fn write(client: kube::Client, desired: DesiredSecret, before: Option<String>) -> Written {
    let name = desired.name.clone();
    let api: Api<Secret> = Api::namespaced(client, &name.0);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let body = apply_body(&desired);
    let result = match tokio::time::timeout(
        WRITE_TIMEOUT,
        api.patch(&name.1, &params, &Patch::Apply(&body)),
    )
    .await
    {
        Ok(Ok(stored)) => Ok(stored),
        Ok(Err(error)) => Err(WriteFailure::Api(error)),
        Err(_) => Err(WriteFailure::Timeout),
    };
    (name, desired, before, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> WriteFailure {
        WriteFailure::Api(kube::Error::Api(Box::new(
            kube::core::Status::failure("a message that may quote a value", "Reason")
                .with_code(code),
        )))
    }

    #[test]
    fn transient_failures_are_retried_refusals_dropped_and_messages_never_logged() {
        for code in [403, 409, 429, 500, 503] {
            assert_eq!(outcome(&api_error(code)), Outcome::Retry, "{code}");
        }
        assert_eq!(outcome(&WriteFailure::Timeout), Outcome::Retry);
        assert_eq!(outcome(&api_error(404)), Outcome::Drop);
        assert_eq!(outcome(&api_error(422)), Outcome::Refused);
        assert_eq!(describe(&api_error(422)), "HTTP 422 Reason");
    }

    #[test]
    fn retries_back_off_to_half_a_minute() {
        assert_eq!(RETRY.delay(1), Duration::from_millis(500));
        assert_eq!(RETRY.delay(3), Duration::from_secs(2));
        assert_eq!(RETRY.delay(60), Duration::from_secs(30));
    }
}
