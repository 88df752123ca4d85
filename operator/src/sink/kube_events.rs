//! Kubernetes Events for transitions a person should see in `kubectl
//! describe`: a node lost (and back), a task run failed, a key disabled,
//! expired or over its traffic limit, a strategy switched on a node.
//!
//! Contract of [`KubeEvents`]:
//! - transitions come from the status diff of a pass (old status → new
//!   status, [`transitions::transitions`]), never from re-reading the
//!   cluster, so a starting operator or a new leader — which adopts the
//!   statuses already in the cluster as its old ones — reports nothing
//!   that happened before it;
//! - only while the [`WriteGate`] is open (the leader): the caller checks it
//!   when it diffs, and the publisher again before each Event; a follower's
//!   transitions are dropped, not queued;
//! - at most one new Event per object and reason per [`EVENT_WINDOW`];
//!   repeats within the window are dropped and counted (see [`limiter`]),
//!   and the next one after it is published with that count in its note.
//!   The `kube` Recorder turns a repeat it still remembers (6 minutes) into
//!   a patch of the existing Event's series — `kubectl describe` shows
//!   `(x2 over …)` and the first note — rather than a new object;
//! - Events are events.k8s.io/v1 objects in the object's namespace
//!   (`default` for cluster-scoped VeilNodes), reporting controller
//!   `veil-operator`, instance = the leader-election identity;
//! - best effort: a full queue or a refused write (e.g. no RBAC permission
//!   in that namespace) drops the Event with a log line; nothing retries,
//!   and statuses — the source of truth — are unaffected;
//! - notes hold status fields only, which never contain secrets.

pub mod limiter;
pub mod transitions;

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use veil_crds::object::ObjectKey;

use self::limiter::{Admission, EventLimiter};
use self::transitions::{Severity, Transition};
use super::WriteGate;

/// One new Event per object and reason at most this often.
pub const EVENT_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Transitions waiting to be published; more are dropped (a flood of
/// transitions in one pass, e.g. every node lost at once while the API
/// server is slow, must not hold memory).
const QUEUE: usize = 1024;
/// A publish that takes longer is abandoned.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// The Events' reporting controller.
const CONTROLLER: &str = "veil-operator";

/// The object an Event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Regarding {
    pub key: ObjectKey,
    /// `metadata.uid`; `kubectl describe` finds Events by it.
    pub uid: Option<String>,
}

/// A handle to the background publisher; dropping it stops the publisher.
pub struct KubeEvents {
    queue: mpsc::Sender<(Regarding, Transition)>,
    gate: WriteGate,
    task: JoinHandle<()>,
}

impl KubeEvents {
    /// Starts the publisher on the current tokio runtime; `instance` names
    /// this replica in the Events (its leader-election identity).
    pub fn spawn(client: kube::Client, gate: WriteGate, instance: String) -> KubeEvents {
        let (queue, rx) = mpsc::channel(QUEUE);
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: CONTROLLER.to_owned(),
                instance: Some(instance),
            },
        );
        let publisher = Publisher {
            recorder,
            gate: gate.clone(),
            limiter: EventLimiter::new(EVENT_WINDOW),
        };
        let task = tokio::spawn(publisher.run(rx));
        KubeEvents { queue, gate, task }
    }

    /// Whether Events may be published now (this replica leads).
    pub fn is_open(&self) -> bool {
        self.gate.is_open()
    }

    /// Queues the Events of `transitions` of `regarding`; never blocks.
    pub fn submit(&self, regarding: &Regarding, transitions: Vec<Transition>) {
        for transition in transitions {
            if let Err(error) = self.queue.try_send((regarding.clone(), transition)) {
                let (regarding, transition) = match error {
                    mpsc::error::TrySendError::Full(item)
                    | mpsc::error::TrySendError::Closed(item) => item,
                };
                tracing::debug!(object = %regarding.key, reason = transition.reason, "event queue full; event dropped");
            }
        }
    }
}

impl Drop for KubeEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Publisher {
    recorder: Recorder,
    gate: WriteGate,
    limiter: EventLimiter<(Regarding, &'static str)>,
}

impl Publisher {
    async fn run(mut self, mut rx: mpsc::Receiver<(Regarding, Transition)>) {
        while let Some((regarding, transition)) = rx.recv().await {
            if !self.gate.is_open() {
                tracing::debug!(object = %regarding.key, reason = transition.reason, "not the leader; event dropped");
                continue;
            }
            let key = (regarding.clone(), transition.reason);
            match self.limiter.admit(key, std::time::Instant::now()) {
                Admission::Drop => {
                    tracing::debug!(object = %regarding.key, reason = transition.reason, window = ?self.limiter.window(), "event rate-limited");
                }
                Admission::Publish { dropped } => {
                    self.publish(&regarding, transition, dropped).await;
                }
            }
        }
    }

    async fn publish(&self, regarding: &Regarding, transition: Transition, dropped: u32) {
        let mut note = transition.note;
        if dropped > 0 {
            note = transitions::bounded(&format!(
                "{note} ({dropped} more in the previous {} min, not reported)",
                EVENT_WINDOW.as_secs() / 60
            ));
        }
        let event = Event {
            type_: match transition.severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: transition.reason.to_owned(),
            note: Some(note),
            action: transition.action.to_owned(),
            secondary: None,
        };
        let reference = object_reference(regarding);
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.recorder.publish(&event, &reference)).await
        {
            Ok(Ok(())) => {
                tracing::debug!(object = %regarding.key, reason = transition.reason, "event published");
            }
            Ok(Err(error)) => {
                tracing::warn!(object = %regarding.key, reason = transition.reason, %error, "could not publish an event (needs create and patch on events.k8s.io events in the object's namespace); dropped");
            }
            Err(_) => {
                tracing::warn!(object = %regarding.key, reason = transition.reason, timeout = ?PUBLISH_TIMEOUT, "publishing an event timed out; dropped");
            }
        }
    }
}

/// The `regarding` reference of an Event about `regarding`.
fn object_reference(regarding: &Regarding) -> ObjectReference {
    let key = &regarding.key;
    ObjectReference {
        api_version: Some(key.kind.api_version().to_owned()),
        kind: Some(key.kind.as_str().to_owned()),
        name: Some(key.name.clone()),
        namespace: (!key.namespace.is_empty()).then(|| key.namespace.clone()),
        uid: regarding.uid.clone(),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use veil_crds::kind::Kind;

    use super::*;

    #[test]
    fn a_reference_names_kind_version_namespace_and_uid() {
        let regarding = Regarding {
            key: ObjectKey::new(Kind::TaskRun, "ops", "nightly-1"),
            uid: Some("u-1".into()),
        };
        let reference = object_reference(&regarding);
        assert_eq!(reference.api_version.as_deref(), Some("veil.dev/v1alpha1"));
        assert_eq!(reference.kind.as_deref(), Some("TaskRun"));
        assert_eq!(reference.namespace.as_deref(), Some("ops"));
        assert_eq!(reference.uid.as_deref(), Some("u-1"));
        // Cluster-scoped: no namespace (the Recorder files it in `default`).
        let node = object_reference(&Regarding {
            key: ObjectKey::new(Kind::VeilNode, "", "edge-1"),
            uid: None,
        });
        assert_eq!(node.namespace, None);
    }
}
