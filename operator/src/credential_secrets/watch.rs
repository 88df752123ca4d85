//! The credentials Secrets in the cluster: one watch of Secrets labelled
//! `app.kubernetes.io/managed-by=veil` (in `--namespace` only, when given),
//! kept as [`Observed`].
//!
//! - `listed` turns true once the first list is complete; a re-list (after
//!   `410 Gone`) is buffered and swapped in whole, so entries never vanish
//!   while the API server is listed again;
//! - receivers are woken only by changes of the operator's fields (or a
//!   completed list); an event that only moves the resourceVersion (the
//!   echo of the operator's own write, an edit of a field that is not the
//!   operator's) updates the entry silently;
//! - Secrets of other types (agent tokens, …) are skipped, and no value is
//!   ever logged.

use std::collections::HashMap;
use std::pin::pin;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use super::convert::{ObservedSecret, observe};
use super::{MANAGED_BY, MANAGED_BY_LABEL, Observed, SecretName};

/// Watches until every receiver of `tx` is gone.
pub(super) async fn run(
    client: kube::Client,
    namespace: Option<String>,
    tx: watch::Sender<Observed>,
) {
    let api: Api<Secret> = match &namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    };
    let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
    let config = watcher::Config::default().labels(&selector);
    let mut stream = pin!(watcher::watcher(api, config).default_backoff());
    let mut relist: Option<HashMap<SecretName, ObservedSecret>> = None;
    let mut failing = false;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = tx.closed() => return,
        };
        let Some(item) = item else { return };
        let event = match item {
            Ok(event) => {
                if failing {
                    tracing::info!("watch of credentials Secrets recovered");
                    failing = false;
                }
                event
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "watch of credentials Secrets failed; retrying with backoff (RBAC: list/watch secrets)");
                }
                failing = true;
                continue;
            }
        };
        match event {
            Event::Init => relist = Some(HashMap::new()),
            Event::InitApply(secret) => {
                if let Some((name, observed)) = observe(&secret) {
                    relist.get_or_insert_default().insert(name, observed);
                }
            }
            Event::InitDone => {
                let listed = relist.take().unwrap_or_default();
                tx.send_modify(|state| {
                    state.secrets = listed;
                    state.listed = true;
                    state.version += 1;
                });
            }
            Event::Apply(secret) => {
                if let Some((name, observed)) = observe(&secret) {
                    tx.send_if_modified(|state| apply(state, name, observed));
                }
            }
            Event::Delete(secret) => {
                if let Some((name, _)) = observe(&secret) {
                    tx.send_if_modified(|state| {
                        let removed = state.secrets.remove(&name).is_some();
                        state.version += u64::from(removed);
                        removed
                    });
                }
            }
        }
    }
}

/// Records `observed`; returns whether the operator's fields changed (only
/// then are receivers woken).
pub(super) fn apply(state: &mut Observed, name: SecretName, observed: ObservedSecret) -> bool {
    let changed = state
        .secrets
        .get(&name)
        .is_none_or(|old| old.content != observed.content);
    state.secrets.insert(name, observed);
    state.version += u64::from(changed);
    changed
}
