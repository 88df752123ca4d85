//! The rows the store reads and writes, as plain data: shared by the store
//! (which persists them) and `plan` (which reads run states and traffic
//! baselines), so the pure planning code depends on data, not on storage.
//!
//! Kinds are stored as strings: the store persists what it is given and
//! never interprets it. They serialise (camelCase) for the APIs that show them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identity of a stored object: kind, namespace (empty for cluster-scoped
/// kinds) and name.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::FromRow, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// Builds a reference; pass `""` as `namespace` for cluster-scoped kinds.
    pub fn new(kind: &str, namespace: &str, name: &str) -> ObjectRef {
        ObjectRef {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectRef {
    /// `VlessKey default/alice`, or `VeilNode edge-1` for cluster-scoped kinds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Generation bookkeeping of an object seen in dir mode: the values
/// Kubernetes would keep in `metadata`, kept stable across restarts.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRecord {
    #[sqlx(flatten)]
    pub key: ObjectRef,
    pub uid: String,
    /// Incremented by the caller each time `spec_hash` changes; never negative.
    pub generation: i64,
    /// Hash of the spec the generation was assigned for.
    pub spec_hash: String,
    /// Stored with microsecond precision (sub-microsecond digits are dropped).
    pub created_at: DateTime<Utc>,
}

/// One error found while loading the source (dir mode), with where it is.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadErrorRecord {
    pub file: String,
    pub line: Option<i64>,
    #[sqlx(rename = "column_number")]
    pub column: Option<i64>,
    /// The object, when the error is about one (`VlessKey default/alice`).
    pub object: Option<String>,
    /// The field path inside the object (`spec.port`).
    pub path: Option<String>,
    pub message: String,
}

/// A node token as listed: its id and node, never its hash.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeTokenRecord {
    pub id: String,
    pub node: String,
    pub created_at: DateTime<Utc>,
    /// Set once the token is revoked; a revoked token authenticates nothing.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Bytes to add to the counters of one user on one server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficDelta {
    pub server: String,
    pub email: String,
    /// Bytes, never negative.
    pub uplink: i64,
    /// Bytes, never negative.
    pub downlink: i64,
}

/// Accumulated traffic of one user on one server, in bytes.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTotal {
    pub server: String,
    pub email: String,
    pub uplink: i64,
    pub downlink: i64,
}

/// What agents reported about one task run and where it was placed, keyed by
/// the TaskRun's uid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStateRecord {
    /// The TaskRun's uid; not empty.
    pub uid: String,
    /// The TaskRun (kind `TaskRun`, namespace, name).
    pub run: ObjectRef,
    /// The node the run was placed on, once placed.
    pub node: Option<String>,
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Cancelled`; the store
    /// keeps any non-empty string without interpreting it.
    pub phase: String,
    pub placed_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub message: Option<String>,
    /// The last lines of output (stored as a JSON array).
    pub log_tail: Vec<String>,
    pub updated_at: DateTime<Utc>,
}

/// Every run state by TaskRun uid: a persistent map of shared records, so
/// a copy for a pass costs nothing and an unchanged record is the very
/// same allocation from pass to pass (planning compares by pointer first).
pub type RunStates = imbl::OrdMap<String, std::sync::Arc<RunStateRecord>>;

/// A registered agent (node), so VeilNodes survive operator restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The node's name; not empty.
    pub node: String,
    /// The registration the agent sent, returned as written.
    pub registration: serde_json::Value,
    pub registered_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The highest report sequence number applied for the node.
    pub last_report_seq: i64,
}

/// An object the operator generated in dir mode (a TaskRun created by a
/// Schedule), kept whole: its key is taken once, by the first writer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedObjectRecord {
    pub key: ObjectRef,
    /// The object that made it (a Schedule), if any.
    pub owner: Option<ObjectRef>,
    /// The full object, returned as written.
    pub document: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// The traffic counters of a VlessKey at the start of its current period
/// (period traffic = lifetime totals − baseline), keyed by the key's uid.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficBaselineRecord {
    /// The VlessKey's `metadata.uid`; not empty.
    pub key_uid: String,
    /// The counters' server (`namespace/name`) when the baseline was taken.
    pub server: String,
    /// The counters' email when the baseline was taken.
    pub email: String,
    /// When the period began (stored with microsecond precision).
    pub period_start: DateTime<Utc>,
    /// Lifetime uplink bytes at the period start; never negative.
    pub uplink: i64,
    /// Lifetime downlink bytes at the period start; never negative.
    pub downlink: i64,
}

/// When traffic of one user on one server was last reported.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSeenRecord {
    pub server: String,
    pub email: String,
    pub last_seen: DateTime<Utc>,
}
