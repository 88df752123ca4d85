//! Prometheus metrics (design §9), named like controller-runtime's so
//! existing dashboards carry over. Base units, counters end in `_total`, no
//! per-object labels.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{kind, result}` labels of reconcile counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindResult {
    pub kind: String,
    pub result: String,
}

/// `{kind}` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// `{kind, phase}` labels of the object gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindPhase {
    pub kind: String,
    pub phase: String,
}

/// `{source}` labels (`dir`, `kube`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

/// `{result}` labels of forwarded requests: `forwarded` (the leader
/// answered) or `unavailable` (this replica answered 503).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// `{server, direction}` labels of traffic counters: the server as
/// `namespace/name`, the direction `uplink` (from clients) or `downlink`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerDirection {
    pub server: String,
    pub direction: String,
}

/// `{encoding}` labels of assignment answers: `full` or `delta`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EncodingLabel {
    pub encoding: String,
}

/// Every metric the operator exports, registered once.
pub struct Metrics {
    registry: Registry,
    pub reconcile_total: Family<KindResult, Counter>,
    pub reconcile_errors_total: Family<KindLabel, Counter>,
    pub reconcile_duration_seconds: Family<KindLabel, Histogram>,
    /// Whole reconcile passes: planning, store and status writes, publishing.
    pub pass_duration_seconds: Histogram,
    /// 1 while a change arrived during the last pass and waits for the
    /// next one, else 0 (changes are coalesced into one pass).
    pub queue_depth: Gauge,
    pub objects: Family<KindPhase, Gauge>,
    pub source_errors_total: Family<SourceLabel, Counter>,
    pub source_errors: Family<SourceLabel, Gauge>,
    pub status_writes_total: Counter,
    /// 1 while this replica may write (dir mode, or the holder of the
    /// leader Lease in Kubernetes mode), 0 for a follower.
    pub leader: Gauge,
    /// Bytes VLESS users moved, per server (never per user: cardinality).
    pub traffic_bytes_total: Family<ServerDirection, Counter>,
    /// Requests under `/v1/` a Kubernetes-mode follower handed to the
    /// leader, or answered 503 for want of one.
    pub forwarded_requests_total: Family<ResultLabel, Counter>,
    /// Bytes of assignment answers sent to agents, by encoding.
    pub assignment_bytes_total: Family<EncodingLabel, Counter>,
    /// Reconcile passes in a row that failed (the store could not be
    /// written); 0 after a pass that succeeded. `/readyz` reads it.
    pub failed_passes: Gauge,
}

impl Metrics {
    /// Creates and registers every metric under the `veil_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("veil");
        let reconcile_total = Family::<KindResult, Counter>::default();
        let reconcile_errors_total = Family::<KindLabel, Counter>::default();
        let reconcile_duration_seconds =
            Family::<KindLabel, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 4.0, 10))
            });
        let pass_duration_seconds = Histogram::new(exponential_buckets(0.0001, 4.0, 10));
        let queue_depth = Gauge::default();
        let objects = Family::<KindPhase, Gauge>::default();
        let source_errors_total = Family::<SourceLabel, Counter>::default();
        let source_errors = Family::<SourceLabel, Gauge>::default();
        let status_writes_total = Counter::default();
        let leader = Gauge::default();
        let traffic_bytes_total = Family::<ServerDirection, Counter>::default();
        let forwarded_requests_total = Family::<ResultLabel, Counter>::default();
        let assignment_bytes_total = Family::<EncodingLabel, Counter>::default();
        let failed_passes = Gauge::default();
        registry.register(
            "failed_passes",
            "Reconcile passes in a row that failed (the state store could not be read or written); 0 after a good pass",
            failed_passes.clone(),
        );
        registry.register(
            "reconcile",
            "Reconcile passes per kind and result (success, error)",
            reconcile_total.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile passes per kind that ended in an error",
            reconcile_errors_total.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent planning in one reconcile pass (kind=\"all\": the whole plan)",
            reconcile_duration_seconds.clone(),
        );
        registry.register(
            "reconcile_pass_duration_seconds",
            "Time one whole reconcile pass took: planning, store and status writes, publishing",
            pass_duration_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Changes waiting for the next reconcile pass: 1 when the source or an agent changed during the last pass, else 0 (changes are coalesced)",
            queue_depth.clone(),
        );
        registry.register(
            "objects",
            "Desired objects per kind and phase",
            objects.clone(),
        );
        registry.register(
            "source_errors",
            "Load errors reported by a source (files or objects refused), counted when they appear",
            source_errors_total.clone(),
        );
        registry.register(
            "source_errors_current",
            "Load errors a source reports right now",
            source_errors.clone(),
        );
        registry.register(
            "status_writes",
            "Status documents written to the store",
            status_writes_total.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica writes statuses and task runs (the leader in Kubernetes mode), 0 while it follows",
            leader.clone(),
        );
        registry.register(
            "traffic_bytes",
            "Bytes moved by VLESS users per server and direction (uplink: from clients, downlink: to clients), counted once per agent report",
            traffic_bytes_total.clone(),
        );
        registry.register(
            "forwarded_requests",
            "Requests under /v1/ a follower passed to the leader (result forwarded) or answered 503 for want of a reachable leader (result unavailable)",
            forwarded_requests_total.clone(),
        );
        registry.register(
            "assignment_bytes",
            "Bytes of assignments sent to agents: encoding full (the whole state) or delta (the changes since the agent's revision)",
            assignment_bytes_total.clone(),
        );
        Metrics {
            registry,
            reconcile_total,
            reconcile_errors_total,
            reconcile_duration_seconds,
            pass_duration_seconds,
            queue_depth,
            objects,
            source_errors_total,
            source_errors,
            status_writes_total,
            leader,
            traffic_bytes_total,
            forwarded_requests_total,
            assignment_bytes_total,
            failed_passes,
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
