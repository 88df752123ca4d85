//! Which Pods are replicas of this operator, so that a follower never hands
//! requests (with agents' and the admin's tokens) to an address someone
//! merely wrote on the Lease, and so that a replica on a per-pod store
//! knows whether it is alone.
//!
//! A *replica set* here is the Deployment that owns a Pod's ReplicaSet (so
//! the old and new Pods of a rolling update belong to the same one), or
//! that ReplicaSet itself when no Deployment owns it. Both are read
//! through `ownerReferences` with `controller: true`, which only the
//! workload controllers (or someone allowed to create Pods in the
//! operator's namespace, who could run the operator's ServiceAccount
//! anyway) can set.
//!
//! Contract of [`ReplicaSets::trusted_endpoint`]: an advertised endpoint is
//! used only when its host is an IP address listed in `status.podIPs` of
//! the Pod named by the Lease's holder, in the Lease's namespace, and that
//! Pod belongs to the same replica set as this replica's own Pod
//! (`POD_NAME`). When this replica's own Pod cannot be found, no endpoint
//! is trusted. Never logs headers or tokens. Needs `get` on `pods` and on
//! `replicasets` in that namespace.

use std::net::IpAddr;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use reqwest::Url;

/// Why an endpoint is not trusted, or the replica count cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("the endpoint's host `{host}` is not an IP address (a leader advertises its Pod IP)")]
    NotAnIp { host: String },
    #[error("Pod {namespace}/{pod} does not exist")]
    NoPod { namespace: String, pod: String },
    #[error("Pod {namespace}/{pod} has IP(s) [{ips}], not {ip}")]
    OtherIp {
        namespace: String,
        pod: String,
        ips: String,
        ip: IpAddr,
    },
    #[error("Pod {namespace}/{pod} is not managed by a ReplicaSet")]
    NoReplicaSet { namespace: String, pod: String },
    #[error("Pod {namespace}/{pod} belongs to {theirs}, this replica to {ours}")]
    OtherSet {
        namespace: String,
        pod: String,
        theirs: String,
        ours: String,
    },
    #[error("reading {what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// Reads Pods and ReplicaSets of the operator's namespace.
pub struct ReplicaSets {
    namespace: String,
    own_pod: String,
    pods: Api<Pod>,
    replica_sets: Api<ReplicaSet>,
}

impl ReplicaSets {
    /// For the replica whose Pod is `own_pod` in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, own_pod: &str) -> ReplicaSets {
        ReplicaSets {
            namespace: namespace.to_owned(),
            own_pod: own_pod.to_owned(),
            pods: Api::namespaced(client.clone(), namespace),
            replica_sets: Api::namespaced(client, namespace),
        }
    }

    /// `endpoint` when the Pod `holder` is a replica of this set serving
    /// at its host (see the module contract), else why not.
    pub async fn trusted_endpoint(
        &self,
        holder: &str,
        endpoint: &Url,
    ) -> Result<Url, ReplicaError> {
        let host = endpoint.host_str().unwrap_or_default();
        let ip: IpAddr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| ReplicaError::NotAnIp {
                host: host.to_owned(),
            })?;
        let leader = self.pod(holder).await?;
        let ips = pod_ips(&leader);
        if !ips.contains(&ip) {
            return Err(ReplicaError::OtherIp {
                namespace: self.namespace.clone(),
                pod: holder.to_owned(),
                ips: ips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                ip,
            });
        }
        let theirs = self.set_of(holder, &leader.metadata).await?;
        let own = self.pod(&self.own_pod).await?;
        let ours = self.set_of(&self.own_pod, &own.metadata).await?;
        if theirs != ours {
            return Err(ReplicaError::OtherSet {
                namespace: self.namespace.clone(),
                pod: holder.to_owned(),
                theirs,
                ours,
            });
        }
        Ok(endpoint.clone())
    }

    /// `spec.replicas` of this replica's own ReplicaSet; `None` when this
    /// process is not a Pod of a ReplicaSet (outside a cluster, or a bare
    /// Pod).
    pub async fn own_replicas(&self) -> Result<Option<i32>, ReplicaError> {
        let Some(own) = self.find_pod(&self.own_pod).await? else {
            return Ok(None);
        };
        let Some(owner) = controller(&own.metadata, "ReplicaSet") else {
            return Ok(None);
        };
        let set = self.replica_set(&owner.name).await?;
        Ok(set.spec.and_then(|spec| spec.replicas).or(Some(1)))
    }

    /// The replica set `pod` belongs to, as `Kind/name (uid)`.
    async fn set_of(&self, pod: &str, meta: &ObjectMeta) -> Result<String, ReplicaError> {
        let owner = controller(meta, "ReplicaSet").ok_or_else(|| ReplicaError::NoReplicaSet {
            namespace: self.namespace.clone(),
            pod: pod.to_owned(),
        })?;
        let set = self.replica_set(&owner.name).await?;
        if set.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
            return Err(ReplicaError::NoReplicaSet {
                namespace: self.namespace.clone(),
                pod: pod.to_owned(),
            });
        }
        Ok(match controller(&set.metadata, "Deployment") {
            Some(deployment) => format!("Deployment/{} ({})", deployment.name, deployment.uid),
            None => format!("ReplicaSet/{} ({})", owner.name, owner.uid),
        })
    }

    async fn pod(&self, name: &str) -> Result<Pod, ReplicaError> {
        self.find_pod(name)
            .await?
            .ok_or_else(|| ReplicaError::NoPod {
                namespace: self.namespace.clone(),
                pod: name.to_owned(),
            })
    }

    async fn find_pod(&self, name: &str) -> Result<Option<Pod>, ReplicaError> {
        self.pods
            .get_opt(name)
            .await
            .map_err(|source| ReplicaError::Api {
                what: format!("Pod {}/{name}", self.namespace),
                source,
            })
    }

    async fn replica_set(&self, name: &str) -> Result<ReplicaSet, ReplicaError> {
        self.replica_sets
            .get(name)
            .await
            .map_err(|source| ReplicaError::Api {
                what: format!("ReplicaSet {}/{name}", self.namespace),
                source,
            })
    }
}

/// The controller owner of `meta` when it is of `kind`.
fn controller<'a>(meta: &'a ObjectMeta, kind: &str) -> Option<&'a OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true) && owner.kind == kind)
}

/// Every IP in the Pod's status.
fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    ips
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use k8s_openapi::api::core::v1::{PodIP, PodStatus};

    use super::*;

    fn owner(kind: &str, name: &str, is_controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller: Some(is_controller),
            ..OwnerReference::default()
        }
    }

    #[test]
    fn only_the_controller_owner_of_the_kind_counts() {
        let meta = ObjectMeta {
            owner_references: Some(vec![
                owner("ReplicaSet", "not-controller", false),
                owner("Deployment", "d", true),
                owner("ReplicaSet", "rs", true),
            ]),
            ..ObjectMeta::default()
        };
        assert_eq!(controller(&meta, "ReplicaSet").unwrap().name, "rs");
        assert_eq!(controller(&meta, "Deployment").unwrap().name, "d");
        assert!(controller(&ObjectMeta::default(), "ReplicaSet").is_none());
    }

    #[test]
    fn a_pods_ips_come_from_pod_ips_and_pod_ip() {
        let pod = Pod {
            status: Some(PodStatus {
                pod_ip: Some("10.0.0.7".into()),
                pod_ips: Some(vec![
                    PodIP {
                        ip: "10.0.0.7".into(),
                    },
                    PodIP {
                        ip: "fd00::7".into(),
                    },
                ]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let ips: Vec<String> = pod_ips(&pod).iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.0.0.7", "fd00::7"]);
        assert!(pod_ips(&Pod::default()).is_empty());
    }
}
