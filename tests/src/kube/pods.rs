//! Pods as the API server knows them, without a kubelet or a scheduler:
//! objects that real tokens and real ownership can be bound to.
//!
//! - [`TestCluster::agent_pod`]: a Node, a ServiceAccount and a Pod bound
//!   to that Node (`spec.nodeName`), as the agent DaemonSet would make one;
//!   [`TestCluster::pod_token`] then asks the TokenRequest API for a token
//!   bound to it, as the kubelet does for a projected volume.
//! - [`TestCluster::replica_pod`]: a Pod of a ReplicaSet with a given IP in
//!   its status, as an operator replica's Pod looks to its peers.
//!
//! Nothing runs these Pods; they exist for the API server's checks
//! (TokenReview looks the bound Pod up) and for the operator's reads.

use serde_json::json;

use super::TestCluster;

/// The image named in Pods that never run.
const NEVER_PULLED: &str = "registry.invalid/veil-test:never";

impl TestCluster {
    /// Applies `objects` (JSON values) with `kubectl apply`.
    fn apply_json(&self, objects: &[serde_json::Value]) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let file = tempfile::Builder::new()
            .suffix(".json")
            .tempfile_in(self.dir())
            .expect("temp file");
        std::fs::write(file.path(), list.to_string()).expect("writing objects");
        self.kubectl_ok(&["apply", "-f", &file.path().display().to_string()]);
    }

    /// Creates (or keeps) the Node `node`, the ServiceAccount
    /// `service_account` in `namespace`, and the Pod `pod` of that account
    /// bound to that Node. The namespace must exist.
    pub fn agent_pod(&self, namespace: &str, service_account: &str, pod: &str, node: &str) {
        self.apply_json(&[
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
            json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": service_account, "namespace": namespace},
                "automountServiceAccountToken": false,
            }),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": namespace, "labels": {"app.kubernetes.io/name": "veil-agent"}},
                "spec": {
                    "nodeName": node,
                    "serviceAccountName": service_account,
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "agent", "image": NEVER_PULLED}],
                },
            }),
        ]);
    }

    /// A token from the TokenRequest API for `service_account` in
    /// `namespace`, bound to the Pod `pod`, for `audience`, valid one hour.
    pub fn pod_token(
        &self,
        namespace: &str,
        service_account: &str,
        pod: &str,
        audience: &str,
    ) -> String {
        let token = self.kubectl_ok(&[
            "-n",
            namespace,
            "create",
            "token",
            service_account,
            "--audience",
            audience,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            pod,
            "--duration",
            "1h",
        ]);
        token.trim().to_owned()
    }

    /// Creates (or keeps) the ReplicaSet `replica_set` in `namespace`
    /// (`replicas` wanted) and the Pod `pod` it controls, with `ip` as the
    /// Pod's IP in its status. Nothing acts on the ReplicaSet: the tests
    /// have no controller for it.
    pub fn replica_pod(
        &self,
        namespace: &str,
        replica_set: &str,
        replicas: u32,
        pod: &str,
        ip: &str,
    ) {
        let labels =
            json!({"app.kubernetes.io/name": "veil-operator", "veil.dev/test-set": replica_set});
        self.apply_json(&[
            json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "veil-operator", "namespace": namespace},
                "automountServiceAccountToken": false,
            }),
            json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": replica_set, "namespace": namespace},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "operator", "image": NEVER_PULLED}]},
                    },
                },
            }),
        ]);
        let uid = self.kubectl_ok(&[
            "-n",
            namespace,
            "get",
            "replicaset",
            replica_set,
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        self.apply_json(&[json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": pod, "namespace": namespace, "labels": labels,
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replica_set,
                    "uid": uid.trim(), "controller": true, "blockOwnerDeletion": true,
                }],
            },
            "spec": {
                "serviceAccountName": "veil-operator",
                "automountServiceAccountToken": false,
                "containers": [{"name": "operator", "image": NEVER_PULLED}],
            },
        })]);
        let status = json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}});
        self.kubectl_ok(&[
            "-n",
            namespace,
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    }
}
