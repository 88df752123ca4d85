//! VeilNodes for registered agents (Kubernetes mode): when an agent
//! registers and no VeilNode of its name exists, the leader creates one,
//! so `kubectl get veilnodes` lists the node and its status is written
//! like any other's.
//!
//! The object is minimal: cluster-scoped, `spec: {}`, labelled
//! `app.kubernetes.io/managed-by: veil`, no owner (a node outlives every
//! other object). The agent's reported labels are NOT copied into it (they
//! would let a node pick its own work); people add `spec.labels` or
//! `spec.cordoned` afterwards.
//!
//! - create is idempotent: `409 AlreadyExists` means the node exists;
//! - it refuses while the [`WriteGate`] is closed (not the leader);
//! - it never changes or deletes a VeilNode.

use std::time::Duration;

use kube::api::{DynamicObject, PostParams};
use serde_json::json;
use veil_crds::kind::Kind;

use super::WriteGate;
use crate::source::kube::resources::{self, FIELD_MANAGER};

/// A create that takes longer is abandoned (and retried later).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a VeilNode was not created. All are transient for the caller.
#[derive(Debug, thiserror::Error)]
pub enum NodeWriteError {
    /// This replica may not write now (not the leader).
    #[error("this replica is not allowed to write to the cluster now")]
    GateClosed,
    /// The object could not be built (a bug).
    #[error("the VeilNode document is not a Kubernetes object: {0}")]
    Document(#[source] serde_json::Error),
    /// The API server answered with an error, or could not be reached.
    #[error("{0}")]
    Api(#[source] kube::Error),
    /// No answer in time.
    #[error("no answer from the API server within {CALL_TIMEOUT:?}")]
    Timeout,
}

/// What a create did.
#[derive(Debug, PartialEq, Eq)]
pub enum NodeCreated {
    /// The VeilNode was created now.
    Created,
    /// A VeilNode of that name already existed.
    Existed,
}

/// Creates VeilNodes in the cluster.
#[derive(Clone)]
pub struct KubeVeilNodes {
    client: kube::Client,
    gate: WriteGate,
}

impl KubeVeilNodes {
    /// Uses `client`, writing only while `gate` is open.
    pub fn new(client: kube::Client, gate: WriteGate) -> KubeVeilNodes {
        KubeVeilNodes { client, gate }
    }

    /// Whether creates are allowed now.
    pub fn may_write(&self) -> bool {
        self.gate.is_open()
    }

    /// Creates the VeilNode `name` unless it exists.
    pub async fn create(&self, name: &str) -> Result<NodeCreated, NodeWriteError> {
        if !self.gate.is_open() {
            return Err(NodeWriteError::GateClosed);
        }
        let object: DynamicObject =
            serde_json::from_value(node_document(name)).map_err(NodeWriteError::Document)?;
        let api = resources::api(self.client.clone(), Kind::VeilNode, None);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match tokio::time::timeout(CALL_TIMEOUT, api.create(&params, &object)).await {
            Err(_) => Err(NodeWriteError::Timeout),
            Ok(Ok(_)) => Ok(NodeCreated::Created),
            Ok(Err(kube::Error::Api(status))) if status.is_already_exists() => {
                Ok(NodeCreated::Existed)
            }
            Ok(Err(error)) => Err(NodeWriteError::Api(error)),
        }
    }
}

/// The VeilNode made for a registered agent.
fn node_document(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": veil_crds::API_VERSION,
        "kind": Kind::VeilNode.as_str(),
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "veil"},
        },
        "spec": {},
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn the_created_node_is_a_valid_veil_node() {
        let document = node_document("edge-1");
        let node: veil_crds::veil_node::VeilNode = serde_json::from_value(document).unwrap();
        assert_eq!(node.metadata.name.as_deref(), Some("edge-1"));
        assert_eq!(node.spec, Default::default());
        assert_eq!(
            node.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
            "veil"
        );
    }
}
