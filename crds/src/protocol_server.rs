//! `ProtocolServer`: a listening server (xray VLESS+Reality, or the built-in
//! `somnytoo` protocol server) on every node its `nodeSelector` picks.
//!
//! The spec is a discriminated union: `protocol` names the server, and the
//! block of the same name (`vless:` or `somnytoo:`) holds its settings; the
//! other block must be absent. `validate()` enforces that.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, LabelSelector, WorkloadPhase, impl_object_status};
use crate::validate::{Cidr, FieldError, FieldErrors, Port, Rfc3339};

pub mod fence;
mod somnytoo;
mod vless;

pub use somnytoo::{AimdCongestion, IpReputation, RateLimit, SomnytooServer};
pub use vless::{Fingerprint, Reality, VlessFlow, VlessServer, XrayPolicy};

/// A protocol server on selected nodes.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "veil.dev",
    version = "v1alpha1",
    kind = "ProtocolServer",
    doc = "A listening server on the nodes its nodeSelector picks: xray with a VLESS+Reality inbound (protocol: vless; users are VlessKeys) or the built-in somnytoo protocol server.",
    plural = "protocolservers",
    shortname = "ps",
    category = "veil",
    namespaced,
    status = "ProtocolServerStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtocolServerSpec {
    /// Which `VeilNode`s run the server. Default: every node.
    #[serde(default, skip_serializing_if = "LabelSelector::is_empty")]
    pub node_selector: LabelSelector,
    /// The server to run: `vless` (xray with one VLESS+Reality inbound) or
    /// `somnytoo` (Veil's built-in secure binary protocol). The block of the
    /// same name holds its settings.
    pub protocol: Protocol,
    /// Address to listen on. Default: `0.0.0.0` (all IPv4 addresses); `::` for all IPv6.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// TCP port to listen on, 1–65535 (e.g. `443`).
    pub port: Port,
    /// Destinations the server's users may reach although they are fenced
    /// off (loopback, private, link-local, CGNAT, ULA, multicast): address
    /// ranges like `127.0.0.2/32` or `10.1.0.0/16`. Default: none; users
    /// reach public addresses only. Also covers a Reality `dest` in those
    /// ranges. Open as little as possible: a range is open to every user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_cidrs: Vec<Cidr>,
    /// Settings for `protocol: vless`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vless: Option<VlessServer>,
    /// Settings for `protocol: somnytoo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub somnytoo: Option<SomnytooServer>,
}

fn default_listen() -> String {
    "0.0.0.0".into()
}

/// The kind of server a `ProtocolServer` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// xray with one VLESS inbound secured by Reality; users are `VlessKey`s.
    Vless,
    /// The built-in secure binary TCP protocol server (X25519+PSK handshake, AES-256-GCM).
    Somnytoo,
}

/// Most `spec.allowCidrs` entries (each becomes routing rules on the node).
pub const MAX_ALLOW_CIDRS: usize = 64;

impl ProtocolServerSpec {
    /// Cross-field checks: the settings block matches `protocol`, `listen` is an IP address.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = FieldErrors::default();
        self.node_selector
            .validate("spec.nodeSelector", &mut errors);
        if self.listen.parse::<std::net::IpAddr>().is_err() {
            errors.push(
                "spec.listen",
                format!(
                    "`{}` is not an IP address; write e.g. `0.0.0.0`, `::` or `127.0.0.1`",
                    self.listen
                ),
            );
        }
        if self.allow_cidrs.len() > MAX_ALLOW_CIDRS {
            errors.push(
                "spec.allowCidrs",
                format!(
                    "{} ranges is more than {MAX_ALLOW_CIDRS}; merge them into wider ranges (e.g. `10.1.0.0/16`)",
                    self.allow_cidrs.len()
                ),
            );
        }
        match self.protocol {
            Protocol::Vless => {
                match &self.vless {
                    Some(vless) => vless.validate("spec.vless", &self.allow_cidrs, &mut errors),
                    None => errors.push(
                        "spec.vless",
                        "`protocol: vless` needs a `vless:` block with at least `reality: {dest, serverNames}`",
                    ),
                }
                if self.somnytoo.is_some() {
                    errors.push(
                        "spec.somnytoo",
                        "`somnytoo` settings are set but `protocol` is `vless`; remove the block or change `protocol`",
                    );
                }
            }
            Protocol::Somnytoo => {
                match &self.somnytoo {
                    Some(s) => s.validate("spec.somnytoo", &mut errors),
                    None => errors.push(
                        "spec.somnytoo",
                        "`protocol: somnytoo` needs a `somnytoo:` block with at least `pskSecretRef`",
                    ),
                }
                if self.vless.is_some() {
                    errors.push(
                        "spec.vless",
                        "`vless` settings are set but `protocol` is `somnytoo`; remove the block or change `protocol`",
                    );
                }
            }
        }
        errors.into_result()
    }
}

/// Observed state of the server across its nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolServerStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions (`Ready`: running on every selected node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Nodes the selector picks.
    #[serde(default)]
    pub desired_nodes: u32,
    /// Nodes where the server is `Running`.
    #[serde(default)]
    pub ready_nodes: u32,
    /// Users (enabled `VlessKey`s) configured on the server.
    #[serde(default)]
    pub users: u32,
    /// Reality public key (x25519, base64url) clients need; not a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Per-node state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<ServerNodeStatus>,
}

impl_object_status!(ProtocolServerStatus);

/// The server on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerNodeStatus {
    /// Name of the `VeilNode`.
    #[serde(default)]
    pub node: String,
    /// `Pending`, `Starting`, `Running`, `Failed` or `Stopped`.
    #[serde(default)]
    pub phase: WorkloadPhase,
    /// Why the server is in this phase (e.g. xray's own `-test` error when a config was refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Process id of the server process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Server version (e.g. xray `25.3.6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `host:port` clients connect to on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Users configured in the running server.
    #[serde(default)]
    pub users: u32,
    /// Open client connections.
    #[serde(default)]
    pub connections: u32,
    /// Restarts of the server process since it was first started.
    #[serde(default)]
    pub restarts: u32,
    /// When the agent last reported on this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Rfc3339>,
}
