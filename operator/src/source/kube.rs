//! The Kubernetes source (`--source kube`): Veil's custom resources and the
//! Secrets they reference, watched on an API server and turned into the
//! same [`SourceSnapshot`]s the directory source publishes.
//!
//! How it works:
//! - one `kube::runtime` watcher per kind (the seven `veil.dev` kinds; the
//!   namespaced ones limited to `--namespace` when given) feeds one task
//!   that keeps every object converted and validated ([`convert`]) — the
//!   same parser and validation as a file, so an object the API server
//!   accepted but Veil refuses becomes a [`SourceError`](super::SourceError)
//!   naming the object and the field path, and other objects go on;
//! - Secrets are watched **by name**, one watch per Secret some object
//!   references ([`refs`]): the operator never lists, caches or is woken
//!   by the other Secrets of a namespace (Helm release data,
//!   service-account tokens, other applications' credentials). A label
//!   selector would have been cheaper (one watch) but every Secret a user
//!   writes would then need a Veil label, and one forgotten label shows up
//!   as a confusing "Secret not found" far from its cause. The price is one
//!   watch connection per referenced Secret, a handful in practice;
//! - bursts of events are coalesced (quiet for [`KubeOptions::debounce`],
//!   at most 8 periods) into one whole snapshot ([`state`]).
//!
//! Guarantees (the same as the directory source's):
//! - nothing is published before every kind has been listed once, and the
//!   Secrets the first objects reference (waited for at most
//!   [`KubeOptions::secret_grace`]): version 1 is a complete view;
//! - a snapshot is always whole: during a re-list (after `410 Gone`, an API
//!   server restart) the last listed objects stay in effect until the new
//!   list is complete; watch errors are retried with the watcher's
//!   exponential backoff (0.8 s doubling to 30 s), never in a busy loop;
//! - an object whose new version is refused keeps its last good version in
//!   effect, with the error beside it;
//! - a change of `status` alone (the operator's own writes) does not
//!   publish a new snapshot.
//!
//! This module never writes to the cluster (see [`crate::sink`]).

mod convert;
mod refs;
pub mod resources;
mod state;
mod watch;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch as channel;

use super::SourceSnapshot;

pub use self::watch::KubeSourceHandle;

/// Default quiet period that coalesces a burst of watch events into one
/// snapshot (a `kubectl apply -f dir/` arrives as one event per object).
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(25);
/// How long a snapshot waits for a newly referenced Secret's first list:
/// long enough for a healthy API server, short enough that a Secret the
/// operator may not read (RBAC) does not hold back every other change.
pub const DEFAULT_SECRET_GRACE: Duration = Duration::from_secs(5);

/// How a [`KubeSource`] watches the cluster.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Watch namespaced kinds in this namespace only; all namespaces when
    /// `None`. `VeilNode` is cluster-scoped and always watched whole.
    pub namespace: Option<String>,
    /// Quiet period after an event before publishing (default 25 ms).
    pub debounce: Duration,
    /// Longest wait for a newly referenced Secret's first list (default 5 s).
    pub secret_grace: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            namespace: None,
            debounce: DEFAULT_DEBOUNCE,
            secret_grace: DEFAULT_SECRET_GRACE,
        }
    }
}

/// Why no client for the API server could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `--kubeconfig FILE` could not be read or parsed.
    #[error("cannot read the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor the in-cluster service account was usable.
    #[error(
        "no Kubernetes configuration found (KUBECONFIG, ~/.kube/config or the in-cluster service account): {0}"
    )]
    Infer(#[source] kube::config::InferConfigError),
    /// The configuration was read but no client could be built from it
    /// (e.g. an unsupported auth plugin, a bad certificate).
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client for the API server: from `kubeconfig` when given (its current
/// context), otherwise inferred like `kubectl` does (`KUBECONFIG`,
/// `~/.kube/config`, then the in-cluster service account).
pub async fn connect(kubeconfig: Option<&Path>) -> Result<kube::Client, ConnectError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                ConnectError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| ConnectError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(ConnectError::Infer)?,
    };
    kube::Client::try_from(config).map_err(ConnectError::Client)
}

/// Veil's objects on one API server, not yet watched.
pub struct KubeSource {
    client: kube::Client,
    options: KubeOptions,
}

impl KubeSource {
    /// A source reading through `client`. Makes no request.
    pub fn new(client: kube::Client, options: KubeOptions) -> KubeSource {
        KubeSource { client, options }
    }

    /// Starts the watches on the current tokio runtime and returns at once.
    ///
    /// The first snapshot (version 1) is published once every kind has been
    /// listed (see the module docs); wait with `rx.wait_for(|s| s.version >
    /// 0)`. Without an API server, or without the CRDs installed, nothing
    /// is published and the errors are logged while the watches retry.
    ///
    /// Dropping the handle, or every receiver of `tx`, stops every watch.
    pub fn spawn(self, tx: channel::Sender<Arc<SourceSnapshot>>) -> KubeSourceHandle {
        watch::spawn(self.client, self.options, tx)
    }
}
