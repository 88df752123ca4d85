//! `protocol: vless` ProtocolServers as planning sees them: their Reality
//! keys (or why there are none) and the nodes that run them.
//!
//! Placement: a server runs on every node its `nodeSelector` picks, Ready
//! or not (a node that comes back keeps serving without a restart). A
//! cordoned node gets nothing new: it keeps a server it already runs (its
//! agent reports it) and its user set stays in step, so revocation still
//! works there, but a server it does not run is not placed on it.

use std::collections::BTreeMap;

use veil_crds::common::{SecretKeyRef, WorkloadPhase};
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::protocol_server::{Protocol, ProtocolServer, VlessServer};
use veil_crds::reality;
use veil_crds::wire::{ServerId, ServerReport};

use super::inputs::GeneratedSecrets;
use crate::plan::tasks::{NodeView, secret_value};
use crate::world::World;

/// A `protocol: vless` ProtocolServer, resolved.
pub struct Server<'a> {
    pub key: &'a ObjectKey,
    pub object: &'a ProtocolServer,
    pub vless: &'a VlessServer,
    /// `namespace/name`, as agents and traffic counters name it.
    pub id: ServerId,
    /// The key pair, or why the server cannot run.
    pub reality: Result<RealityKeys, Problem>,
    /// Nodes that run the server, by name.
    pub nodes: Vec<String>,
    /// Nodes the selector picks that are cordoned and do not run it.
    pub cordoned: Vec<String>,
}

/// A server's Reality key pair.
pub struct RealityKeys {
    /// Base64url without padding, as xray reads it. A credential.
    pub private: String,
    /// Base64url without padding; not secret.
    pub public: String,
}

/// Why something cannot be applied (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// CamelCase condition reason.
    pub reason: &'static str,
    /// What is wrong and what to do; never contains a secret.
    pub message: String,
    /// A person must change something (kstatus `Stalled`); otherwise the
    /// operator is still working on it (`Reconciling`).
    pub stalled: bool,
}

/// Every `protocol: vless` server of the world, by key.
pub fn resolve<'a>(
    world: &'a World,
    views: &BTreeMap<&str, NodeView<'_>>,
    secrets: &GeneratedSecrets,
) -> BTreeMap<&'a ObjectKey, Server<'a>> {
    world
        .of_kind(Kind::ProtocolServer)
        .filter_map(|(key, object)| match &*object.object {
            Object::ProtocolServer(server) if server.spec.protocol == Protocol::Vless => {
                let vless = server.spec.vless.as_ref()?;
                let id = ServerId {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                };
                let (nodes, cordoned) = placement(views, server, &id);
                let reality = reality_keys(world, key, server, vless, secrets);
                Some((
                    key,
                    Server {
                        key,
                        object: server,
                        vless,
                        id,
                        reality,
                        nodes,
                        cordoned,
                    },
                ))
            }
            _ => None,
        })
        .collect()
}

/// The nodes that run the server, and the selected cordoned ones that do not.
fn placement(
    views: &BTreeMap<&str, NodeView<'_>>,
    server: &ProtocolServer,
    id: &ServerId,
) -> (Vec<String>, Vec<String>) {
    let mut nodes = Vec::new();
    let mut cordoned = Vec::new();
    for view in views.values() {
        if !server.spec.node_selector.matches(&view.labels) {
            continue;
        }
        if view.cordoned && report(view, id).is_none_or(|r| r.phase == WorkloadPhase::Stopped) {
            cordoned.push(view.name.to_owned());
        } else {
            nodes.push(view.name.to_owned());
        }
    }
    (nodes, cordoned)
}

/// The latest report of server `id` from a node's agent.
pub fn report<'v>(view: &'v NodeView<'_>, id: &ServerId) -> Option<&'v ServerReport> {
    view.observation?.servers.iter().find(|s| s.server == *id)
}

fn reality_keys(
    world: &World,
    key: &ObjectKey,
    server: &ProtocolServer,
    vless: &VlessServer,
    secrets: &GeneratedSecrets,
) -> Result<RealityKeys, Problem> {
    let private = match &vless.reality.private_key_secret_ref {
        Some(reference) => referenced_private_key(world, key, reference)?,
        None => {
            let uid = server.metadata.uid.as_deref().unwrap_or_default();
            secrets
                .reality_keys
                .get(uid)
                .cloned()
                .ok_or_else(|| Problem {
                    reason: "KeyPending",
                    message: "waiting for the operator to generate the Reality key pair".to_owned(),
                    stalled: false,
                })?
        }
    };
    let invalid = |error: reality::RealityKeyError| {
        stalled_by(
            "InvalidPrivateKey",
            format!("the Reality private key of this server is unusable: {error}"),
        )
    };
    Ok(RealityKeys {
        public: reality::public_key(&private).map_err(invalid)?,
        private: reality::canonical_private_key(&private).map_err(invalid)?,
    })
}

/// A problem that stalls the server until its spec or a Secret changes.
fn stalled_by(reason: &'static str, message: String) -> Problem {
    Problem {
        reason,
        message,
        stalled: true,
    }
}

/// The private key in the Secret `privateKeySecretRef` names.
fn referenced_private_key(
    world: &World,
    key: &ObjectKey,
    reference: &SecretKeyRef,
) -> Result<String, Problem> {
    let name = reference.name.as_str();
    let secret = ObjectKey::new(Kind::Secret, &key.namespace, name);
    let where_ = format!(
        "Secret {}/{name} (spec.vless.reality.privateKeySecretRef)",
        key.namespace
    );
    if !world.objects.contains_key(&secret) {
        return Err(stalled_by(
            "SecretNotFound",
            format!(
                "{where_} does not exist; create it with key `{}` holding an x25519 private key (`xray x25519`), or remove privateKeySecretRef to have a key pair generated",
                reference.key
            ),
        ));
    }
    secret_value(world, &key.namespace, name, &reference.key).ok_or_else(|| {
        stalled_by(
            "SecretKeyNotFound",
            format!(
                "{where_} has no key `{}`; add it with the x25519 private key (`xray x25519`)",
                reference.key
            ),
        )
    })
}
