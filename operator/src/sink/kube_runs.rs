//! TaskRuns made by Schedules, as real objects in the cluster (Kubernetes
//! mode), the way the CronJob controller makes Jobs.
//!
//! The plan builds each run complete: named `<schedule>-<unix minutes>`
//! (from its scheduled time), labelled `veil.dev/schedule` and
//! `app.kubernetes.io/managed-by: veil`, with an ownerReference to its
//! Schedule (`controller: true`, `blockOwnerDeletion: true`) so that the
//! garbage collector removes runs with their Schedule. This module only
//! creates and deletes:
//! - create is idempotent: the deterministic name is the lock, and `409
//!   AlreadyExists` means the run exists (it is read back and adopted);
//! - delete of an object already gone (`404`) is success;
//! - both refuse while the [`WriteGate`] is closed; the caller retries later.
//!
//! It never changes a run's `spec` or `status`.

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, PostParams};
use serde_json::Value;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;

use super::WriteGate;
use crate::source::kube::resources::{self, FIELD_MANAGER};

/// A create or delete that takes longer is abandoned (and retried later).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a TaskRun was not created or deleted. All of them are transient
/// from the caller's view: it keeps the action and tries again.
#[derive(Debug, thiserror::Error)]
pub enum TaskRunWriteError {
    /// This replica may not write now (not the leader).
    #[error("this replica is not allowed to write to the cluster now")]
    GateClosed,
    /// The document is not an object (a bug in the plan).
    #[error("the TaskRun document is not a Kubernetes object: {0}")]
    Document(#[source] serde_json::Error),
    /// The API server answered with an error, or could not be reached.
    #[error("{0}")]
    Api(#[source] kube::Error),
    /// No answer in time.
    #[error("no answer from the API server within {CALL_TIMEOUT:?}")]
    Timeout,
}

/// Creates and deletes Schedule-made TaskRuns in the cluster.
#[derive(Clone)]
pub struct KubeTaskRuns {
    client: kube::Client,
    gate: WriteGate,
}

impl KubeTaskRuns {
    /// Uses `client`, writing only while `gate` is open.
    pub fn new(client: kube::Client, gate: WriteGate) -> KubeTaskRuns {
        KubeTaskRuns { client, gate }
    }

    /// Creates the TaskRun `document` and returns it as stored (with its
    /// uid), or the run already stored under its name.
    pub async fn create(&self, document: &Value) -> Result<Value, TaskRunWriteError> {
        if !self.gate.is_open() {
            return Err(TaskRunWriteError::GateClosed);
        }
        let object: DynamicObject =
            serde_json::from_value(document.clone()).map_err(TaskRunWriteError::Document)?;
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        let api = resources::api(self.client.clone(), Kind::TaskRun, Some(&namespace));
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let stored = match timed(api.create(&params, &object)).await? {
            Ok(created) => created,
            Err(kube::Error::Api(status)) if status.is_already_exists() => timed(api.get(&name))
                .await?
                .map_err(TaskRunWriteError::Api)?,
            Err(error) => return Err(TaskRunWriteError::Api(error)),
        };
        let mut value = serde_json::to_value(&stored).map_err(TaskRunWriteError::Document)?;
        if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
        }
        Ok(value)
    }

    /// Deletes the TaskRun `key`; one already gone counts as deleted.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), TaskRunWriteError> {
        if !self.gate.is_open() {
            return Err(TaskRunWriteError::GateClosed);
        }
        let api = resources::api(self.client.clone(), Kind::TaskRun, Some(&key.namespace));
        match timed(api.delete(&key.name, &DeleteParams::background())).await? {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(error) => Err(TaskRunWriteError::Api(error)),
        }
    }
}

async fn timed<T>(call: impl Future<Output = T>) -> Result<T, TaskRunWriteError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| TaskRunWriteError::Timeout)
}
