//! Strategies in assignments and reports.
//!
//! A [`StrategyGroup`] is one primary Strategy with its failover backups,
//! resolved for one node: every member's engine settings with hostlists and
//! files already read from ConfigMaps and Secrets. The agent composes the
//! active zapret members of all groups into one engine process.
//!
//! [`StrategyReport`] is a state (latest wins), one per member the node
//! was given, sent in full with every report.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::SecretValue;
use crate::strategy::{
    Failover, Probes, Scoring, StrategyPhase, VlessClient, ZapretImplementation, ZapretSyntax,
};

/// Which Strategy: namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyId {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for StrategyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A primary Strategy and its backups on one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyGroup {
    /// The Strategy that names the others in `failover.backups`.
    pub primary: StrategyId,
    /// Every member in failover order: the primary first, then the backups
    /// in `failover.backups` order. Only the primary is active until the
    /// agent's failover (part 2) chooses another.
    pub members: Vec<StrategyMember>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Probes>,
    #[serde(default)]
    pub scoring: Scoring,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    /// Fingerprint of the whole group (members' specs included): failover
    /// state on the agent is reset when it changes.
    pub spec_hash: String,
}

/// One member of a group with its resolved engine settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyMember {
    pub strategy: StrategyId,
    /// `metadata.generation` of the Strategy, echoed in reports.
    #[serde(default)]
    pub generation: i64,
    /// Set for `engine: zapret`; `None` for engines the agent does not run
    /// yet (the operator reports those itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zapret: Option<ZapretMember>,
    /// Set for `engine: vless`: the server's link, resolved by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vless: Option<VlessMember>,
}

/// A `vless` member: a local SOCKS5 port through a VLESS server, served by
/// a real client program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VlessMember {
    /// The server's `vless://` link (from the VlessKey, or the Secret of
    /// `urlSecretRef`). A credential: never logged or shown.
    pub link: SecretValue,
    pub client: VlessClient,
    /// `spec.vless.socksPort`; `None`: the agent takes a free port from
    /// 10800–10899 and reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socks_port: Option<u16>,
}

/// A zapret profile, ready to compose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZapretMember {
    /// The Strategy's `args`, placeholders (`{hostlist:NAME}`, `{file:NAME}`)
    /// not yet replaced: the agent knows where it writes the files.
    pub args: Vec<String>,
    pub syntax: ZapretSyntax,
    /// Profile order on the node (lower first; ties by namespace, name).
    pub priority: i32,
    pub implementation: ZapretImplementation,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostlists: Vec<ResolvedHostList>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ResolvedFile>,
}

/// A hostlist with its domains read from wherever the Strategy named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedHostList {
    pub name: String,
    /// One domain per entry, as listed (comments and blank lines dropped).
    pub domains: Vec<String>,
    /// Came from a Secret: written 0600.
    #[serde(default)]
    pub secret: bool,
}

/// A file with its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedFile {
    pub name: String,
    /// The bytes, base64 (standard alphabet, padded).
    pub data_base64: SecretValue,
    /// Came from a Secret: written 0600.
    #[serde(default)]
    pub secret: bool,
}

/// What the agent observes of one Strategy it was given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyReport {
    pub strategy: StrategyId,
    /// `Running` (its profile is in the running engine), `Standby` (a
    /// backup not chosen), `Testing` (being started or checked), `Failed`.
    pub phase: StrategyPhase,
    /// Why: the engine's own message for a refused profile, what to do for a
    /// WinDivert error, "hostlist `x` is empty", …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Machine-readable reason for `Failed` (`EmptyHostList`,
    /// `UnsupportedOption`, `DryRunFailed`, `EngineMissing`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The primary of the group this member belongs to.
    pub group: StrategyId,
    /// Whether this member is the group's active one on the node.
    #[serde(default)]
    pub active: bool,
    /// The engine running it: `nfqws v72.12`, `winws v72.12`, `builtin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implementation: Option<String>,
    /// Engine process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Restarts of the engine process since the agent started it.
    #[serde(default)]
    pub restarts: u32,
    /// The `spec_hash` of the group as applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
    /// The probes' latest word on this member, once it has been probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeReport>,
    /// The local SOCKS5 port of a `vless` member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socks_port: Option<u16>,
}

/// What the probes say about one member on the node: the score of its
/// last evaluation and its parts (design: worst of the last `passes`
/// rounds), why the last round failed, and the failover counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    /// 0 to 1: the worst round of the last evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Share of targets that passed in that round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// Share of critical targets that passed in that round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_success_rate: Option<f64>,
    /// Median time to first byte of the passed samples, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u32>,
    /// Mean change of the time to first byte since the round before, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u32>,
    /// How the last failed sample failed (`Stall16K`, `ResetAtHello`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_phase: Option<String>,
    /// Failed rounds in a row.
    #[serde(default)]
    pub failed_rounds: u32,
    /// When the group last switched members on the node (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_switch_time: Option<String>,
    /// When the last probe round finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<String>,
    /// What failover says about the member (`NeverWorked: …`, `no
    /// alternative works`, a switch); shown as the node's message while
    /// the member runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The samples of the round that finished at `lastProbe`, in target
    /// order (the operator keeps a bounded history of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub round: Vec<ProbeSample>,
}

/// One sample of a probe round: one target, once (one TLS version).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSample {
    /// The target's URL (with ` (TLS 1.2)` / ` (TLS 1.3)` when it lists
    /// versions) or `udp://host:port`.
    pub target: String,
    /// Whether the target is critical.
    #[serde(default)]
    pub critical: bool,
    pub passed: bool,
    /// How it failed (`Stall16K`, `ResetAtHello`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_phase: Option<String>,
    /// Time to the first byte of the answer, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<u32>,
    /// Body bytes read (the reply's size for UDP).
    #[serde(default)]
    pub bytes: u64,
    /// The HTTP status of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// What went wrong, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
