//! Messages between `veil-operator` and `veil-agent` (design §5), as JSON
//! over HTTP under `/v1/agent/`.
//!
//! - `POST register` — [`RegisterRequest`] → [`RegisterResponse`];
//! - `GET assignment?after=REV` — long-poll → [`Assignment`] (the node's
//!   *whole* desired state); with `&delta=true`, an [`AssignmentUpdate`]:
//!   the deltas from revision `REV` when the operator has them, else the
//!   whole state (module `delta` states the rules);
//! - `POST report` — [`NodeReport`] → [`ReportAck`].
//!
//! Exactly-once rules: every report carries the agent's monotonic `seq`;
//! log chunks carry a per-run `seq` and are stored idempotently by
//! `(run uid, seq)`; task updates are states, so applying one twice is
//! harmless. A retried report therefore changes nothing the second time.
//!
//! Secret values (resolved `secretKeyRef` env) travel only inside
//! [`SecretValue`], whose `Debug` never shows the value.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::task_run::{Task, TaskRunPhase};

mod delta;
mod servers;
mod strategies;
mod users;

pub use delta::{AssignmentDelta, AssignmentUpdate, DeltaError, ServerDelta, apply, diff};

pub use servers::{
    FailedUser, ServerAssignment, ServerId, ServerReport, UserTraffic, VlessAssignment, VlessUser,
    traffic_stream,
};
pub use strategies::{
    ProbeReport, ProbeSample, ResolvedFile, ResolvedHostList, StrategyGroup, StrategyId,
    StrategyMember, StrategyReport, VlessMember, ZapretMember,
};
pub use users::{Users, users_hash};

/// Path prefix of the agent protocol.
pub const AGENT_PATH: &str = "/v1/agent";

/// Largest serialized [`NodeReport`] an agent builds: it spreads task
/// updates, log chunks and traffic deltas over several reports (each with
/// its own `seq`) rather than send a larger one.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;

/// The operator's body limit for `POST report`, above
/// [`MAX_REPORT_BYTES`] so a report at the cap (or one from a slightly
/// different agent version) is never refused for its size.
pub const MAX_REPORT_BODY_BYTES: usize = 4 * MAX_REPORT_BYTES;

/// A capability found on a node: a tool Veil can drive, with where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capability {
    /// Tool name: `xray`, `sing-box`, `nfqws`, `winws`, `ansible-playbook`, `terraform`, `tofu`, `git`, `sh`.
    pub name: String,
    /// Version as the tool reports it, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Absolute path of the executable.
    pub path: String,
}

/// `POST /v1/agent/register`: who the agent is and what the node can do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    /// Node name; must equal the node the token is bound to.
    pub node: String,
    /// `linux`, `windows`, `macos`.
    pub os: String,
    /// `x86_64`, `aarch64`, …
    pub arch: String,
    /// veil-agent version.
    pub agent_version: String,
    /// Labels the agent was started with (`--label k=v`); merged under `VeilNode.spec.labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Tools found on the node.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Address the node is reachable at, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Answer to a registration: the pacing the operator expects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    pub node: String,
    /// Send a report at least this often; three missed intervals make the node NotReady.
    pub heartbeat_interval_seconds: u32,
    /// How long an assignment long-poll waits before answering "unchanged".
    pub long_poll_seconds: u32,
    /// The last report seq the operator applied for this node (0: none), so
    /// a restarted agent can drop journal entries already applied.
    pub last_report_seq: u64,
}

/// A node's whole desired state at one revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub node: String,
    /// Monotonic per node; increments only when the content changes.
    pub revision: u64,
    /// Task runs this node must run (or keep running, or cancel).
    #[serde(default)]
    pub tasks: Vec<TaskAssignment>,
    /// Protocol servers this node must run, each with its whole user set.
    /// A server absent from the list is stopped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerAssignment>,
    /// Strategy groups this node must run (primary + backups, resolved).
    /// A Strategy absent from every group is stopped and its files and
    /// firewall rules removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strategies: Vec<StrategyGroup>,
}

/// Identity of one task run, stable across retries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRef {
    pub namespace: String,
    pub name: String,
    /// `metadata.uid` of the TaskRun: a recreated run with the same name is a different run.
    pub uid: String,
}

impl fmt::Display for RunRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One task run placed on this node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAssignment {
    pub run: RunRef,
    /// The task as written (env entries with `secretKeyRef` are resolved into `env`).
    pub task: Task,
    /// Every environment variable of the run: the Runner's, then the task's, resolved.
    #[serde(default)]
    pub env: Vec<ResolvedEnv>,
    /// Base directory for run work dirs on the node (the Runner's `workDir`), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<String>,
    /// Stop the run (spec.cancel, or the TaskRun was deleted).
    #[serde(default)]
    pub cancel: bool,
    /// Run as root instead of the node's task user (the Runner's `runAsRoot`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_as_root: bool,
}

/// One environment variable with its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedEnv {
    pub name: String,
    pub value: SecretValue,
}

/// A value that may be secret: serialised as is, never shown by `Debug`/`Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(pub String);

impl SecretValue {
    /// The value, for handing to a process.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `POST /v1/agent/report`: what the agent observed since its last acknowledged report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub node: String,
    /// Monotonic per agent (journal order); the operator acknowledges by seq.
    pub seq: u64,
    /// Revision of the last assignment the agent applied.
    pub applied_revision: u64,
    #[serde(default)]
    pub task_updates: Vec<TaskUpdate>,
    #[serde(default)]
    pub logs: Vec<LogChunk>,
    /// The current state of every server the agent runs (a state: applying
    /// it twice is harmless). Sent in full with every report and heartbeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerReport>,
    /// Traffic since the previous report, per user: counted exactly once by
    /// this report's `seq` (see [`traffic_stream`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<UserTraffic>,
    /// The current state of every Strategy member the agent was given (a
    /// state, sent in full with every report and heartbeat).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strategies: Vec<StrategyReport>,
    /// Set while the agent cannot write its journal (full disk, read-only
    /// or failing file system): its reports are then held in memory, still
    /// sent, and lost only if the agent dies before they are delivered.
    /// Absent when the journal is writable (a state, like `servers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_fault: Option<JournalFault>,
}

/// Why the agent's journal cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalFault {
    /// `DiskFull`, `ReadOnly` or `WriteFailed`.
    pub reason: String,
    /// The failed operation and the system's error (never report content).
    pub message: String,
    /// Reports held in memory only when this report was sent.
    #[serde(default)]
    pub held_in_memory: u64,
}

/// The state of one task run as the agent sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUpdate {
    pub run: RunRef,
    pub phase: TaskRunPhase,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Machine-readable reason (`Timeout`, `ExecutorMissing`, `StartFailed`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A piece of a run's output: whole lines, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogChunk {
    pub run: RunRef,
    /// Per run, starting at 1, no gaps: the operator stores each seq once.
    pub seq: u64,
    /// Lines, each ending in `\n`; stderr lines are not marked (interleaved as produced).
    pub text: String,
}

/// Answer to a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportAck {
    /// Everything up to and including this seq is applied; the agent may drop it from its journal.
    pub seq: u64,
}
