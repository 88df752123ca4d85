//! Protocol servers in assignments and reports.
//!
//! A [`ServerAssignment`] is the whole desired state of one server on one
//! node, users included (level-triggered). Its secrets (the Reality private
//! key, user ids) travel only inside [`SecretValue`]s.
//!
//! [`ServerReport`] is a state (latest wins); [`UserTraffic`] entries are
//! deltas, counted once per report `seq`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{SecretValue, Users};
use crate::common::WorkloadPhase;
use crate::protocol_server::{VlessFlow, XrayPolicy};
use crate::validate::Cidr;

/// The traffic stream name under which a node's report deltas are counted
/// exactly once: the store keeps the last applied report `seq` per
/// `(node, stream)`.
pub fn traffic_stream() -> &'static str {
    "reports"
}

/// Which server: a `ProtocolServer` by namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerId {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServerId {
    /// `namespace/name`: also the server key of traffic counters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One protocol server this node must run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerAssignment {
    pub server: ServerId,
    /// Listen address (an IP address).
    pub listen: String,
    /// TCP port.
    pub port: u16,
    /// `spec.allowCidrs`: fenced destinations the users may reach anyway
    /// (see [`crate::protocol_server::fence`]); everything else fenced is blocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_cidrs: Vec<Cidr>,
    /// `protocol: vless` settings and users.
    pub vless: VlessAssignment,
}

/// xray VLESS+Reality settings with the whole user set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VlessAssignment {
    /// Reality x25519 private key, base64url without padding.
    pub private_key: SecretValue,
    /// Reality `dest` (`host:port`).
    pub dest: String,
    pub server_names: Vec<String>,
    pub short_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<XrayPolicy>,
    /// Every user that must be able to connect; anyone else must not.
    #[serde(default)]
    pub users: Users,
    /// Fingerprint of `users` (emails, ids, flows): the agent reports the
    /// fingerprint of the set it has applied, so the operator knows every
    /// user of this assignment is active without listing them back.
    pub users_hash: String,
}

/// One VLESS user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VlessUser {
    /// The key xray knows the user by; unique per server.
    pub email: String,
    /// The user's UUID (a credential).
    pub id: SecretValue,
    pub flow: VlessFlow,
}

/// What the agent observes of one server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerReport {
    pub server: ServerId,
    pub phase: WorkloadPhase,
    /// Why the server is in this phase (xray's own error for a refused config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// xray version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Users present in the running xray.
    #[serde(default)]
    pub users: u32,
    /// Open client connections.
    #[serde(default)]
    pub connections: u32,
    /// Restarts of the server process since the agent started it.
    #[serde(default)]
    pub restarts: u32,
    /// `users_hash` of the assignment whose user set is fully applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_users_hash: Option<String>,
    /// Users xray refused, with its message (emails are not secret).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_users: Vec<FailedUser>,
}

/// A user the server refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedUser {
    pub email: String,
    pub message: String,
}

/// Bytes one user moved since the previous report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserTraffic {
    pub server: ServerId,
    pub email: String,
    /// Bytes from the client.
    pub uplink: u64,
    /// Bytes to the client.
    pub downlink: u64,
}
