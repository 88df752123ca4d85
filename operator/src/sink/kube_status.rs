//! Statuses written to the cluster: server-side apply on the `status`
//! subresource with field manager `veil-operator`, forced (the operator
//! owns `status`; nobody else should hold its fields).
//!
//! Contract of [`KubeStatusWriter`]:
//! - [`KubeStatusWriter::submit`] never blocks and never fails: the status
//!   becomes *dirty* and stays dirty until the API server accepted it, a
//!   newer status for the same object replaced it, or the object is gone;
//! - the latest submitted status wins; intermediate ones may be skipped;
//! - an apply body holds only `apiVersion`, `kind`, `metadata.name`
//!   (`namespace`) and `status`: `spec`, labels and other managers' fields
//!   are never touched, and fields the operator stopped setting are removed
//!   (server-side apply semantics);
//! - `409`, `429`, `5xx`, timeouts and connection errors are retried with
//!   exponential backoff (0.2 s doubling to 30 s, jittered) per object;
//!   `404` (object deleted) drops the write; `400`/`422` and a `500` that
//!   names a field the schema does not declare (a status the CRD refuses:
//!   a bug) are logged as errors and dropped;
//! - at most [`MAX_IN_FLIGHT`] writes at once, and only while the
//!   [`WriteGate`] is open; while it is closed, statuses stay dirty.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use kube::api::{Patch, PatchParams};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use veil_crds::object::ObjectKey;

use super::WriteGate;
use super::write_queue::WriteQueue;
use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::source::kube::resources::{self, FIELD_MANAGER};
use veil_agent::throttle::sleep_until_some;

/// Writes in flight at once: enough to write 10,000 statuses in seconds,
/// few enough not to be throttled by the API server's priority and fairness.
pub const MAX_IN_FLIGHT: usize = 32;
/// A write that takes longer is abandoned and retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of one object's write: 200 ms, doubling per failed attempt, at
/// most 30 s (the watcher's cap too), jittered.
const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30)).jittered();

/// A handle to the background writer; dropping it stops the writer
/// (statuses still dirty are then lost with the process, and written again
/// by the next one, which recomputes every status).
pub struct KubeStatusWriter {
    updates: mpsc::UnboundedSender<(ObjectKey, Arc<RawValue>)>,
    task: JoinHandle<()>,
}

impl KubeStatusWriter {
    /// Starts the writer on the current tokio runtime.
    pub fn spawn(client: kube::Client, gate: WriteGate, metrics: Arc<Metrics>) -> KubeStatusWriter {
        let (updates, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            client,
            gate,
            metrics,
            queue: WriteQueue::new(),
            in_flight: FuturesUnordered::new(),
            failing: false,
        };
        let task = tokio::spawn(writer.run(rx));
        KubeStatusWriter { updates, task }
    }

    /// Marks `status` as the one `key` should have (see the module docs).
    pub fn submit(&self, key: ObjectKey, status: Arc<RawValue>) {
        // Fails only when the writer task is gone (shutdown): nothing to do.
        let _ = self.updates.send((key, status));
    }
}

impl Drop for KubeStatusWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Written = (ObjectKey, Arc<RawValue>, Result<(), WriteFailure>);

struct Writer {
    client: kube::Client,
    gate: WriteGate,
    metrics: Arc<Metrics>,
    /// Dirty statuses: every queued key is ready, waiting for a retry or
    /// in flight.
    queue: WriteQueue<ObjectKey, Arc<RawValue>>,
    in_flight: FuturesUnordered<BoxFuture<'static, Written>>,
    /// Whether the last write failed (to log an outage once, not per object).
    failing: bool,
}

/// Why one write did not go through.
#[derive(Debug, thiserror::Error)]
enum WriteFailure {
    #[error("{0}")]
    Api(#[source] kube::Error),
    #[error("no answer within {WRITE_TIMEOUT:?}")]
    Timeout,
}

/// What to do after a failed write.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Retry,
    /// The object is gone.
    Drop,
    /// The API server refuses this status; retrying would not help.
    Refused,
}

fn outcome(failure: &WriteFailure) -> Outcome {
    match failure {
        WriteFailure::Api(kube::Error::Api(status)) => match status.code {
            404 => Outcome::Drop,
            400 | 422 => Outcome::Refused,
            // A field the CRD does not declare is answered with 500, but
            // no retry will make the schema accept it.
            500 if status
                .message
                .contains("failed to create typed patch object") =>
            {
                Outcome::Refused
            }
            _ => Outcome::Retry,
        },
        _ => Outcome::Retry,
    }
}

impl Writer {
    async fn run(mut self, mut updates: mpsc::UnboundedReceiver<(ObjectKey, Arc<RawValue>)>) {
        loop {
            self.start_writes();
            let next_retry = self.queue.next_retry();
            tokio::select! {
                update = updates.recv() => match update {
                    Some((key, status)) => self.queue.submit(key, status),
                    None => return,
                },
                Some(written) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.finish(written);
                }
                () = sleep_until_some(next_retry) => self.queue.promote_due(),
                () = self.gate.changed() => {}
            }
        }
    }

    fn start_writes(&mut self) {
        while self.gate.is_open() && self.in_flight.len() < MAX_IN_FLIGHT {
            let Some((key, status)) = self.queue.pop_ready() else {
                return;
            };
            self.in_flight
                .push(Box::pin(write(self.client.clone(), key, status)));
        }
    }

    fn finish(&mut self, (key, written, result): Written) {
        let outstanding = self.queue.len();
        let Some(current) = self.queue.get(&key) else {
            return;
        };
        let replaced = !Arc::ptr_eq(current, &written);
        match result {
            Ok(()) => {
                self.metrics.status_writes_total.inc();
                if self.failing {
                    tracing::info!(pending = outstanding, "status writes go through again");
                    self.failing = false;
                }
                self.queue.written(key, replaced);
            }
            Err(failure) => match outcome(&failure) {
                Outcome::Retry => {
                    let failing = self.failing;
                    self.failing = true;
                    let object = key.to_string();
                    let delay = self.queue.retry(key, |failures| RETRY.delay(failures));
                    if failing {
                        tracing::debug!(%object, error = %failure, delay = ?delay.unwrap_or_default(), "status write failed; retrying");
                    } else {
                        tracing::warn!(%object, error = %failure, pending = outstanding, "writing statuses to the cluster failed; retrying with backoff, nothing is lost");
                    }
                }
                Outcome::Drop => {
                    tracing::debug!(object = %key, "object gone; its status is not written");
                    self.queue.remove(&key);
                }
                Outcome::Refused => {
                    tracing::error!(object = %key, error = %failure, "the API server refused a status (a bug in Veil: please report it)");
                    self.queue.remove(&key);
                }
            },
        }
    }
}

/// A server-side apply body that owns `status` and nothing else.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusApply<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: ApplyMeta<'a>,
    status: &'a RawValue,
}

#[derive(Debug, Serialize)]
struct ApplyMeta<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
}

fn apply_body<'a>(key: &'a ObjectKey, status: &'a RawValue) -> StatusApply<'a> {
    StatusApply {
        api_version: key.kind.api_version(),
        kind: key.kind.as_str(),
        metadata: ApplyMeta {
            name: &key.name,
            namespace: (!key.namespace.is_empty()).then_some(key.namespace.as_str()),
        },
        status,
    }
}

async fn write(client: kube::Client, key: ObjectKey, status: Arc<RawValue>) -> Written {
    let api = resources::api(client, key.kind, Some(&key.namespace));
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let result = {
        let body = Patch::Apply(apply_body(&key, &status));
        let patch = api.patch_status(&key.name, &params, &body);
        match tokio::time::timeout(WRITE_TIMEOUT, patch).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(WriteFailure::Api(error)),
            Err(_) => Err(WriteFailure::Timeout),
        }
    };
    (key, status, result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use veil_crds::kind::Kind;

    use super::*;

    fn api_error(code: u16) -> WriteFailure {
        WriteFailure::Api(kube::Error::Api(Box::new(
            kube::core::Status::failure("x", "X").with_code(code),
        )))
    }

    #[test]
    fn conflicts_throttling_and_server_errors_are_retried_gone_objects_dropped() {
        for code in [409, 429, 500, 503, 403] {
            assert_eq!(outcome(&api_error(code)), Outcome::Retry, "{code}");
        }
        assert_eq!(outcome(&WriteFailure::Timeout), Outcome::Retry);
        assert_eq!(outcome(&api_error(404)), Outcome::Drop);
        assert_eq!(outcome(&api_error(422)), Outcome::Refused);
        let undeclared = kube::core::Status::failure(
            "failed to create typed patch object (ns/a; veil.dev/v1alpha1, Kind=Runner): .status.x: field not declared in schema",
            "",
        )
        .with_code(500);
        assert_eq!(
            outcome(&WriteFailure::Api(kube::Error::Api(Box::new(undeclared)))),
            Outcome::Refused
        );
    }

    #[test]
    fn apply_body_holds_only_identity_and_status() {
        let status = RawValue::from_string(r#"{"phase":"Active"}"#.to_owned()).unwrap();
        let key = ObjectKey::new(Kind::VlessKey, "team", "alice");
        let body = serde_json::to_string(&apply_body(&key, &status)).unwrap();
        assert_eq!(
            body,
            r#"{"apiVersion":"veil.dev/v1alpha1","kind":"VlessKey","metadata":{"name":"alice","namespace":"team"},"status":{"phase":"Active"}}"#
        );
        let node = ObjectKey::new(Kind::VeilNode, "", "edge-1");
        let body = serde_json::to_string(&apply_body(&node, &status)).unwrap();
        assert!(body.contains(r#""metadata":{"name":"edge-1"}"#), "{body}");
    }
}
