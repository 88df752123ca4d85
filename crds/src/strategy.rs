//! `Strategy`: a DPI-bypass configuration (zapret's winws/nfqws, or a local
//! VLESS SOCKS proxy) on selected nodes, with probes, scoring and failover.
//!
//! `engine` names the engine and the block of the same name (`zapret:` or
//! `vless:`) holds its settings; the other block must be absent.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, LabelSelector, impl_object_status};
use crate::validate::{FieldError, FieldErrors, Rfc3339};

mod engine;
mod probes;
mod zapret_args;

pub use engine::{
    FileSource, HostList, KeyRef, VlessClient, VlessEngine, ZapretEngine, ZapretImplementation,
    ZapretSyntax,
};
pub use probes::{
    Failover, FailoverMode, ProbeTarget, ProbeTls, Probes, Scoring, ScoringWeights, UdpProbe,
};

/// A DPI-bypass configuration on selected nodes.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "veil.dev",
    version = "v1alpha1",
    kind = "Strategy",
    doc = "A DPI-bypass configuration on selected nodes: zapret (winws/nfqws) arguments or a local VLESS SOCKS proxy, with probes, scoring and failover.",
    plural = "strategies",
    shortname = "strat",
    category = "veil",
    namespaced,
    status = "StrategyStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategySpec {
    /// Which `VeilNode`s run the strategy. Default: every node.
    #[serde(default, skip_serializing_if = "LabelSelector::is_empty")]
    pub node_selector: LabelSelector,
    /// `zapret` (winws on Windows, nfqws on Linux) or `vless` (a local SOCKS
    /// proxy through a VLESS server). The block of the same name holds its settings.
    pub engine: Engine,
    /// Settings for `engine: zapret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zapret: Option<ZapretEngine>,
    /// Settings for `engine: vless`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vless: Option<VlessEngine>,
    /// Checks that tell whether the strategy works. Default: no probes (the
    /// strategy counts as working while its process runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Probes>,
    /// How probe results become a score.
    #[serde(default)]
    pub scoring: Scoring,
    /// Alternatives to switch to when this strategy stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
}

/// The engine a strategy runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// zapret: winws (Windows, WinDivert) or nfqws (Linux, NFQUEUE); one process
    /// per node composes all active zapret strategies.
    Zapret,
    /// A local SOCKS proxy (sing-box or xray client) through a VLESS server.
    Vless,
}

impl StrategySpec {
    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = FieldErrors::default();
        self.node_selector
            .validate("spec.nodeSelector", &mut errors);
        let (wanted, other, other_name) = match self.engine {
            Engine::Zapret => ("zapret", self.vless.is_some(), "vless"),
            Engine::Vless => ("vless", self.zapret.is_some(), "zapret"),
        };
        match (&self.engine, &self.zapret, &self.vless) {
            (Engine::Zapret, Some(z), _) => z.validate("spec.zapret", &mut errors),
            (Engine::Vless, _, Some(v)) => v.validate("spec.vless", &mut errors),
            _ => errors.push(
                format!("spec.{wanted}"),
                format!(
                    "`engine: {wanted}` needs a `{wanted}:` block, e.g. {}",
                    if wanted == "zapret" {
                        "`zapret: {args: [\"--dpi-desync=fake\"]}`"
                    } else {
                        "`vless: {keyRef: {name: alice}}`"
                    }
                ),
            ),
        }
        if other {
            errors.push(
                format!("spec.{other_name}"),
                format!("`{other_name}` settings are set but `engine` is `{wanted}`; remove the block or change `engine`"),
            );
        }
        if let Some(probes) = &self.probes {
            probes.validate("spec.probes", &mut errors);
        }
        self.scoring.validate("spec.scoring", &mut errors);
        if let Some(failover) = &self.failover {
            failover.validate("spec.failover", &mut errors);
            if self.probes.is_none() {
                errors.push(
                    "spec.failover",
                    "failover needs probes: without `probes` nothing can tell that this strategy stopped working; add `probes: {targets: [{url: https://…}]}` or remove `failover`",
                );
            }
        }
        errors.into_result()
    }
}

/// What a strategy is doing on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StrategyPhase {
    /// Being probed before (or instead of) going live.
    #[default]
    Testing,
    /// Active and passing its probes.
    Running,
    /// Ready as a failover alternative, not active.
    Standby,
    /// Cannot run or keeps failing its probes; see `message`.
    Failed,
}

/// Observed state of the strategy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrategyStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Nodes the selector picks.
    #[serde(default)]
    pub desired_nodes: u32,
    /// Nodes where this strategy is active (`Running`).
    #[serde(default)]
    pub active_nodes: u32,
    /// Summary over the nodes: `Running` (active everywhere it should be),
    /// `Standby` (a backup, ready everywhere), `Failed` (a person must act)
    /// or `Testing` (being started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StrategyPhase>,
    /// The member of this strategy's failover group active on its nodes,
    /// when every node agrees (per node: `nodes[].activeStrategy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_strategy: Option<String>,
    /// The lowest probe score over its nodes (per node: `nodes[].score`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// How the last probe round failed on the node with that score, when
    /// it failed (per node: `nodes[].failPhase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_phase: Option<String>,
    /// Per-node state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<StrategyNodeStatus>,
}

impl_object_status!(StrategyStatus);

/// The strategy on one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrategyNodeStatus {
    /// Name of the `VeilNode`.
    #[serde(default)]
    pub node: String,
    /// `Testing`, `Running`, `Standby` or `Failed`.
    #[serde(default)]
    pub phase: StrategyPhase,
    /// Why the strategy is in this phase; WinDivert errors are translated into
    /// actions (e.g. 5: run as administrator; 1753: start the Base Filtering Engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether this strategy (rather than a failover alternative) is the active one here.
    #[serde(default)]
    pub active: bool,
    /// Name of the strategy actually active for this purpose on the node (itself or a backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_strategy: Option<String>,
    /// Score from 0 to 1 (the worst of the last `passes` probe rounds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Share of probe targets that passed, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// Share of critical probe targets that passed, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_success_rate: Option<f64>,
    /// Median probe latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u32>,
    /// Probe latency jitter in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u32>,
    /// Restarts of the engine process on this node.
    #[serde(default)]
    pub restarts: u32,
    /// The engine running the strategy here: e.g. `nfqws v72.12`, `winws v72.12`, `builtin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implementation: Option<String>,
    /// SOCKS port of a `vless` strategy on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socks_port: Option<u16>,
    /// When the last probe round finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<Rfc3339>,
    /// How the last failed probe sample failed: `DnsError`,
    /// `ConnectTimeout`, `ConnectRefused`, `ResetAtHello`,
    /// `SilentDropAtHello`, `TlsAlert`, `CertError`, `Stall16K`, `Stall`,
    /// `ResetMidStream`, `Blockpage`, `HttpStatus` or `Timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_phase: Option<String>,
    /// Probe rounds failed in a row.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_rounds: u32,
    /// When the failover group last switched members on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_switch_time: Option<Rfc3339>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}
