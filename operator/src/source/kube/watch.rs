//! Keeping a [`SourceState`] current: one watcher task per kind and per
//! referenced Secret, one task that applies their events, debounces and
//! publishes.
//!
//! Watchers recover on their own (resume from the last resourceVersion, or
//! re-list after `410 Gone`); errors are logged and retried with the
//! watcher's default backoff. This module never decides what a snapshot
//! holds (that is [`SourceState`]'s job).

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{mpsc, watch as channel};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use veil_agent::throttle::sleep_until_some;
use veil_crds::kind::Kind;

use super::KubeOptions;
use super::resources;
use super::state::{SourceState, WatchId};
use crate::source::SourceSnapshot;

/// A continuous stream of events still publishes after this many debounce
/// periods, so constant writes cannot starve the snapshot.
const MAX_DEBOUNCE_PERIODS: u32 = 8;
/// Events queued between the watchers and the state; a full queue makes
/// the watchers wait (back-pressure), it loses nothing.
const EVENT_QUEUE: usize = 1024;

/// What a watcher task reports.
struct Message {
    id: WatchId,
    event: Event<DynamicObject>,
}

/// The running watches. Dropping it stops them all.
pub struct KubeSourceHandle {
    task: JoinHandle<()>,
}

impl KubeSourceHandle {
    /// Whether the source has stopped (every receiver of its snapshots dropped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for KubeSourceHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// See [`super::KubeSource::spawn`].
pub(super) fn spawn(
    client: kube::Client,
    options: KubeOptions,
    tx: channel::Sender<Arc<SourceSnapshot>>,
) -> KubeSourceHandle {
    let task = tokio::spawn(async move {
        let mut aggregator = Aggregator::new(client, options, tx);
        aggregator.run().await;
    });
    KubeSourceHandle { task }
}

/// A watcher task that is aborted when dropped.
struct WatchTask {
    task: JoinHandle<()>,
    started: Instant,
}

impl Drop for WatchTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Aggregator {
    client: kube::Client,
    options: KubeOptions,
    tx: channel::Sender<Arc<SourceSnapshot>>,
    state: SourceState,
    events_tx: mpsc::Sender<Message>,
    events: mpsc::Receiver<Message>,
    tasks: BTreeMap<WatchId, WatchTask>,
}

impl Aggregator {
    fn new(
        client: kube::Client,
        options: KubeOptions,
        tx: channel::Sender<Arc<SourceSnapshot>>,
    ) -> Aggregator {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        Aggregator {
            client,
            options,
            tx,
            state: SourceState::default(),
            events_tx,
            events,
            tasks: BTreeMap::new(),
        }
    }

    async fn run(&mut self) {
        for kind in Kind::VEIL {
            self.start_watch(WatchId::Kind(kind));
        }
        tracing::info!(
            namespace = self.options.namespace.as_deref().unwrap_or("<all>"),
            "watching Veil's kinds on the API server"
        );
        // Publish when quiet for one debounce period, or at the latest
        // MAX_DEBOUNCE_PERIODS after the first event of a burst.
        let mut publish_at: Option<Instant> = None;
        let mut burst_started: Option<Instant> = None;
        loop {
            let wake = publish_at;
            tokio::select! {
                message = self.events.recv() => {
                    let Some(Message { id, event }) = message else { return };
                    self.state.apply(&id, event);
                    let now = Instant::now();
                    let first = *burst_started.get_or_insert(now);
                    let latest = first + self.options.debounce * MAX_DEBOUNCE_PERIODS;
                    publish_at = Some((now + self.options.debounce).min(latest));
                }
                () = sleep_until_some(wake) => {
                    publish_at = None;
                    burst_started = None;
                    self.sync_secret_watches();
                    match self.publish() {
                        Publish::Stopped => return,
                        Publish::RetryAt(at) => publish_at = Some(at),
                        Publish::Done => {}
                    }
                }
                () = self.tx.closed() => return,
            }
        }
    }

    /// Starts watching Secrets newly referenced and stops watching those no
    /// longer referenced.
    fn sync_secret_watches(&mut self) {
        let wanted = self.state.referenced_secrets();
        let stale: Vec<WatchId> = self
            .state
            .watch_ids()
            .filter(|id| matches!(id, WatchId::Secret(name) if !wanted.contains(name)))
            .cloned()
            .collect();
        for id in stale {
            self.state.remove_watch(&id);
            self.tasks.remove(&id);
        }
        for name in wanted {
            let id = WatchId::Secret(name);
            if !self.tasks.contains_key(&id) {
                self.start_watch(id);
            }
        }
    }

    fn start_watch(&mut self, id: WatchId) {
        self.state.add_watch(id.clone());
        let (api, config) = match &id {
            WatchId::Kind(kind) => (
                resources::api(
                    self.client.clone(),
                    *kind,
                    self.options.namespace.as_deref(),
                ),
                watcher::Config::default(),
            ),
            WatchId::Secret((namespace, name)) => (
                resources::api(self.client.clone(), Kind::Secret, Some(namespace)),
                watcher::Config::default().fields(&format!("metadata.name={name}")),
            ),
        };
        let task = tokio::spawn(watch_one(id.clone(), api, config, self.events_tx.clone()));
        self.tasks.insert(
            id,
            WatchTask {
                task,
                started: Instant::now(),
            },
        );
    }

    /// Publishes a snapshot when the source is complete and something changed.
    fn publish(&mut self) -> Publish {
        if !self.state.kinds_listed() {
            return Publish::Done; // the first list's InitDone will wake us
        }
        // A Secret being listed for the first time holds the snapshot back
        // (an object would otherwise flash "Secret missing"), but only for
        // the grace period.
        let grace = self.options.secret_grace;
        let waiting = self
            .tasks
            .iter()
            .filter(|(id, task)| {
                matches!(id, WatchId::Secret(_))
                    && !self.state.listed(id)
                    && task.started.elapsed() < grace
            })
            .map(|(_, task)| task.started + grace)
            .min();
        if let Some(at) = waiting {
            return Publish::RetryAt(at);
        }
        if let Some(snapshot) = self.state.take_snapshot() {
            tracing::debug!(
                version = snapshot.version,
                objects = snapshot.objects.len(),
                errors = snapshot.errors.len(),
                "publishing a snapshot of the cluster"
            );
            if self.tx.send(Arc::new(snapshot)).is_err() {
                return Publish::Stopped;
            }
        }
        Publish::Done
    }
}

enum Publish {
    Done,
    RetryAt(Instant),
    Stopped,
}

/// Runs one watcher until the aggregator is gone, forwarding its events.
async fn watch_one(
    id: WatchId,
    api: kube::Api<DynamicObject>,
    config: watcher::Config,
    tx: mpsc::Sender<Message>,
) {
    let what = match &id {
        WatchId::Kind(kind) => kind.plural().to_owned(),
        WatchId::Secret((namespace, name)) => format!("secret {namespace}/{name}"),
    };
    let mut stream = pin!(watcher::watcher(api, config).default_backoff());
    let mut failing = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                if failing {
                    tracing::info!(watch = %what, "watch recovered");
                    failing = false;
                }
                if tx
                    .send(Message {
                        id: id.clone(),
                        event,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                failing = true;
                // The stream waits (backoff) before its next attempt.
                if expired(&error) {
                    // Routine after a long disconnect: the watcher lists again.
                    tracing::info!(watch = %what, "watch expired (410 Gone); listing again");
                } else {
                    tracing::warn!(watch = %what, error = %error, hint = hint(&error), "watch failed; retrying with backoff, the last listed objects stay in effect");
                }
            }
        }
    }
}

/// The HTTP status of a watch error from the API server; 0 for others.
fn status_code(error: &watcher::Error) -> u16 {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code,
        watcher::Error::WatchError(status) => status.code,
        _ => 0,
    }
}

/// Whether the watch's resourceVersion is too old (`410 Gone`).
fn expired(error: &watcher::Error) -> bool {
    status_code(error) == 410
}

/// What a person can do about a watch error, when it is a common one.
fn hint(error: &watcher::Error) -> &'static str {
    match status_code(error) {
        404 => "the CRDs are not installed: kubectl apply -f manifests/crds/",
        401 | 403 => "the operator's credentials may not list/watch this resource (RBAC)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_usual_fixes() {
        let gone = kube::core::Status::failure("gone", "NotFound").with_code(404);
        let error = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(gone)));
        assert!(hint(&error).contains("manifests/crds"));
        let gone =
            kube::core::Status::failure("too old resource version", "Expired").with_code(410);
        assert!(expired(&watcher::Error::WatchError(Box::new(gone))));
    }
}
