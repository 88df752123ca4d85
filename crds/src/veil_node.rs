//! `VeilNode`: one machine running `veil-agent` (cluster-scoped).
//!
//! Created or updated when an agent registers; people change only `spec`
//! (extra labels, cordon). Everything the agent reports lives in `status`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, impl_object_status, is_false};
use crate::validate::{FieldError, LabelKey, LabelValue, Rfc3339};

/// A machine running `veil-agent`. Node selectors in other kinds pick nodes by
/// the union of `metadata.labels` and `spec.labels` (the latter win), never
/// by the labels the agent reports (those are shown in `status.reportedLabels`).
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "veil.dev",
    version = "v1alpha1",
    kind = "VeilNode",
    doc = "A machine running veil-agent, created when the agent registers. Node selectors match metadata.labels and spec.labels only; spec also holds the cordon switch; status what the agent reports (os, arch, version, tools, labels, heartbeat).",
    plural = "veilnodes",
    shortname = "vn",
    category = "veil",
    status = "VeilNodeStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VeilNodeSpec {
    /// Labels for node selection, added to `metadata.labels` (these win)
    /// (e.g. `{region: eu-west, role: edge}`). The only labels selectors
    /// match besides `metadata.labels`: what the agent reports with
    /// `--label` is never matched. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<LabelKey, LabelValue>,
    /// When `true`, no new work is placed on this node and its long-running
    /// workloads are stopped; running tasks finish. Default: `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cordoned: bool,
}

impl VeilNodeSpec {
    /// Cross-field checks (none needed: every field is valid on its own).
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        Ok(())
    }
}

/// What the agent on the node reported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VeilNodeStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions. `Ready` is `True` while heartbeats arrive within 3 intervals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Operating system (`linux`, `windows`, `macos`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// CPU architecture (`x86_64`, `aarch64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Version of `veil-agent` on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Address the agent connected from (or advertised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// When the last heartbeat arrived (RFC 3339); refreshed at most every
    /// 5 minutes while nothing else changes (`Ready` uses the latest one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Rfc3339>,
    /// Labels the agent registered with (`--label`). Shown only: node
    /// selectors never match them (set `spec.labels` to select the node).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reported_labels: BTreeMap<String, String>,
    /// Tools found on the node: xray, sing-box, winws, nfqws, ansible-playbook, terraform, git, sh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<Capability>,
    /// How much work is assigned to the node.
    #[serde(default)]
    pub workloads: WorkloadCounts,
}

impl_object_status!(VeilNodeStatus);

/// One tool the agent found on its node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capability {
    /// Tool name (`xray`, `sing-box`, `nfqws`, `winws`, `ansible-playbook`, `terraform`, `git`, `sh`).
    #[serde(default)]
    pub name: String,
    /// Version the tool reported, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Absolute path of the executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Counts of work assigned to one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadCounts {
    /// Protocol servers assigned to the node.
    #[serde(default)]
    pub protocol_servers: u32,
    /// VLESS users across those servers.
    #[serde(default)]
    pub vless_users: u32,
    /// Strategies assigned to the node.
    #[serde(default)]
    pub strategies: u32,
    /// Task runs executing on the node now.
    #[serde(default)]
    pub running_tasks: u32,
}
