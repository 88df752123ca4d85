//! Where the controller's results go: statuses, and the TaskRuns Schedules
//! make. Dir mode keeps both in the store; Kubernetes mode writes them to
//! the cluster (design §3). `cli/run.rs` chooses, the controller only
//! calls [`StatusSink::write`] and the TaskRun operations.
//!
//! Writes to the cluster pass a [`WriteGate`]: the seam where leader
//! election ([`crate::leader`]) decides whether this replica may write at
//! all; in Kubernetes mode it is open only while this replica holds the
//! Lease.
//!
//! - [`kube_status`]: statuses through the status subresource (server-side
//!   apply, field manager `veil-operator`), retried until written;
//! - [`kube_runs`]: Schedule-made TaskRuns as cluster objects owned by
//!   their Schedule;
//! - [`kube_events`]: Events for the transitions of statuses a person
//!   should see (node lost, task failed, …), rate-limited;
//! - [`kube_nodes`]: VeilNodes for registered agents that have none.

pub mod kube_events;
pub mod kube_nodes;
pub mod kube_runs;
pub mod kube_status;
#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod schema_tests;
pub mod write_queue;

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::watch;
use veil_crds::object::ObjectKey;

use crate::store::{Store, StoreError};
use crate::world::object_ref;

pub use self::kube_events::KubeEvents;
pub use self::kube_nodes::{KubeVeilNodes, NodeCreated, NodeWriteError};
pub use self::kube_runs::{KubeTaskRuns, TaskRunWriteError};
pub use self::kube_status::KubeStatusWriter;

/// One status to write (`Some`) or forget (`None`: the object is gone).
pub type StatusChange = (ObjectKey, Option<Arc<RawValue>>);

/// Whether this replica may write to the cluster now.
///
/// Cloned freely; every clone follows the same switch. A gate whose
/// switch was dropped keeps its last position.
#[derive(Clone, Debug)]
pub struct WriteGate {
    open: watch::Receiver<bool>,
}

impl WriteGate {
    /// A gate that is always open (a single replica, no leader election).
    pub fn always_open() -> WriteGate {
        let (_switch, open) = watch::channel(true);
        WriteGate { open }
    }

    /// A gate that follows `open` (e.g. "this replica holds the Lease").
    pub fn new(open: watch::Receiver<bool>) -> WriteGate {
        WriteGate { open }
    }

    /// Whether writes are allowed now.
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Resolves when the gate flips; never, once its switch is gone.
    pub async fn changed(&mut self) {
        if self.open.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Where statuses go.
pub enum StatusSink {
    /// The store's status table (dir mode), read back by `veil-operator get`
    /// after a restart.
    Store(Store),
    /// The objects' status subresource (Kubernetes mode).
    Kube(KubeStatusWriter),
}

impl StatusSink {
    /// Writes `changes`; returns how many were written now (the store
    /// writes synchronously, the cluster writer in the background — it
    /// counts its own writes in `veil_status_writes_total`).
    ///
    /// The cluster writer gets only `Some` changes, for objects that exist
    /// in the cluster: the caller filters; a deleted object's status
    /// leaves with it.
    pub async fn write(&self, changes: &[StatusChange]) -> Result<usize, StoreError> {
        match self {
            StatusSink::Store(store) => {
                let rows: Vec<_> = changes
                    .iter()
                    .map(|(key, status)| (object_ref(key), status.clone()))
                    .collect();
                if !rows.is_empty() {
                    store.write_statuses(&rows).await?;
                }
                Ok(rows.len())
            }
            StatusSink::Kube(writer) => {
                for (key, status) in changes {
                    if let Some(status) = status {
                        writer.submit(key.clone(), status.clone());
                    }
                }
                Ok(0)
            }
        }
    }

    /// Whether statuses go to the cluster.
    pub fn is_kube(&self) -> bool {
        matches!(self, StatusSink::Kube(_))
    }
}
