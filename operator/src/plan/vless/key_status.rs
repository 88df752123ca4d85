//! The status of a VlessKey: phase, email, id prefix (never the id),
//! period traffic, and on each node of its server whether the user is live.
//!
//! On a node the user is `Running` once the agent reports the server's
//! current user set applied (`applied_users_hash`) and the email is not
//! among the users xray refused (`Failed`, with xray's message); `Stopped`
//! when the key is not eligible and the set without it is applied;
//! `Pending` before that. An eligible key is `Active` when it is `Running`
//! on every node of its server (at least one).
//!
//! While the server's set changes for *other* keys (a new hash not yet
//! reported applied), a key whose spec is unchanged since its last status
//! keeps its `Running`/`Stopped` there: adding one key never flips the other
//! 10,000 to `Pending` and back (which would also rewrite all their
//! statuses). For the same reason the per-node entries carry no report time
//! or assignment revision, which change with every key of the server.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use veil_crds::common::{NodeWorkloadStatus, WorkloadPhase};
use veil_crds::validate::Rfc3339;
use veil_crds::vless_key::{VlessKeyPhase, VlessKeyStatus};

use super::keys::{Key, KeyState};
use super::observed::{Conditions, inactive, observe, progressing, ready, stalled};
use super::period;
use super::servers::Server;
use crate::plan::tasks::NodeView;
use crate::world::timestamp;

/// Characters of the id shown in `status.idPrefix`.
const ID_PREFIX_CHARS: usize = 8;

/// The status body (without conditions and generation) and its conditions.
///
/// `users_hash` is the fingerprint of the server's assigned user set
/// (`None` when the server has no assignment).
pub fn key_status(
    key: &Key<'_>,
    server: Option<&Server<'_>>,
    users_hash: Option<&str>,
    views: &BTreeMap<&str, NodeView<'_>>,
    previous: Option<&str>,
    now: DateTime<Utc>,
) -> (VlessKeyStatus, Conditions) {
    let eligible = matches!(key.state, KeyState::Eligible(None));
    // Parsed only while some node has not applied the current set.
    let in_flight = match (server, users_hash) {
        (Some(server), Some(hash)) => server.nodes.iter().any(|node| {
            observe(views, node, &server.id)
                .report()
                .is_none_or(|r| r.applied_users_hash.as_deref() != Some(hash))
        }),
        _ => false,
    };
    let kept = if in_flight {
        kept_phases(key, previous)
    } else {
        BTreeMap::new()
    };
    let nodes: Vec<(NodeWorkloadStatus, bool)> = match (server, users_hash) {
        (Some(server), Some(hash)) if !matches!(key.state, KeyState::Error(_)) => server
            .nodes
            .iter()
            .map(|node| {
                let kept = kept.get(node.as_str()).copied();
                node_status(key, server, node, hash, eligible, kept, views)
            })
            .collect(),
        _ => Vec::new(),
    };
    let (phase, conditions) = phase_and_conditions(key, server, &nodes, now);
    let usage = key.usage.as_ref();
    let status = VlessKeyStatus {
        phase,
        email: Some(key.email.clone()),
        id_prefix: key
            .id
            .as_ref()
            .map(|id| id.chars().take(ID_PREFIX_CHARS).collect()),
        uplink_bytes: usage.map_or(0, |u| u.uplink),
        downlink_bytes: usage.map_or(0, |u| u.downlink),
        traffic_bytes: usage.map_or(0, |u| u.total()),
        period_start: usage.map(|u| Rfc3339::from_utc(u.period_start)),
        last_seen: usage.and_then(|u| u.last_seen).map(Rfc3339::from_utc),
        credentials_secret: Some(format!("{}-vless", key.key.name)),
        nodes: nodes.into_iter().map(|(status, _)| status).collect(),
        ..VlessKeyStatus::default()
    };
    (status, conditions)
}

/// The user on one node, and whether the server refused this user there.
fn node_status(
    key: &Key<'_>,
    server: &Server<'_>,
    node: &str,
    hash: &str,
    eligible: bool,
    kept: Option<WorkloadPhase>,
    views: &BTreeMap<&str, NodeView<'_>>,
) -> (NodeWorkloadStatus, bool) {
    let observed = observe(views, node, &server.id);
    let mut status = NodeWorkloadStatus {
        node: node.to_owned(),
        ..NodeWorkloadStatus::default()
    };
    let Some(report) = observed.report() else {
        status.phase = WorkloadPhase::Pending;
        status.message = observed.why_unknown(node);
        return (status, false);
    };
    let refused = report.failed_users.iter().find(|f| f.email == key.email);
    let applied = report.applied_users_hash.as_deref() == Some(hash);
    let (phase, message) = match (refused, applied, eligible) {
        (Some(failed), _, true) => (WorkloadPhase::Failed, Some(failed.message.clone())),
        (_, true, true) => (WorkloadPhase::Running, None),
        (_, true, false) => (
            WorkloadPhase::Stopped,
            Some("removed from the server".to_owned()),
        ),
        // Another key's change is in flight; this user is as it was.
        (None, false, true)
            if kept == Some(WorkloadPhase::Running) && report.phase == WorkloadPhase::Running =>
        {
            (WorkloadPhase::Running, None)
        }
        (_, false, false) if kept == Some(WorkloadPhase::Stopped) => (
            WorkloadPhase::Stopped,
            Some("removed from the server".to_owned()),
        ),
        _ if report.phase == WorkloadPhase::Failed => (
            WorkloadPhase::Failed,
            Some(format!(
                "the server failed on node {node}: {}",
                report.message.as_deref().unwrap_or("no message")
            )),
        ),
        _ => (
            WorkloadPhase::Pending,
            Some(format!("node {node} is applying the user set")),
        ),
    };
    status.phase = phase;
    // A stale report keeps its phase, with a message that says so.
    status.message = observed.why_unknown(node).or(message);
    (status, refused.is_some() && eligible)
}

/// The per-node phases of the key's last status, if its spec has not
/// changed since (same `observedGeneration`); empty otherwise.
fn kept_phases(key: &Key<'_>, previous: Option<&str>) -> BTreeMap<String, WorkloadPhase> {
    /// Just the fields read back (serde skips the rest).
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Previous {
        observed_generation: Option<i64>,
        #[serde(default)]
        nodes: Vec<PreviousNode>,
    }
    #[derive(serde::Deserialize)]
    struct PreviousNode {
        node: String,
        phase: WorkloadPhase,
    }
    let Some(previous) = previous.and_then(|text| serde_json::from_str::<Previous>(text).ok())
    else {
        return BTreeMap::new();
    };
    if previous.observed_generation != key.object.metadata.generation {
        return BTreeMap::new();
    }
    previous
        .nodes
        .into_iter()
        .map(|node| (node.node, node.phase))
        .collect()
}

fn phase_and_conditions(
    key: &Key<'_>,
    server: Option<&Server<'_>>,
    nodes: &[(NodeWorkloadStatus, bool)],
    now: DateTime<Utc>,
) -> (VlessKeyPhase, Conditions) {
    match &key.state {
        KeyState::Error(problem) => (
            VlessKeyPhase::Error,
            stalled(problem.reason, problem.message.clone()),
        ),
        KeyState::Disabled => (
            VlessKeyPhase::Disabled,
            inactive(
                "Disabled",
                "`enabled: false`: the user is removed from the server and its connections closed"
                    .to_owned(),
            ),
        ),
        KeyState::Expired => {
            let at = key
                .object
                .spec
                .expires_at
                .as_ref()
                .map_or_else(String::new, |at| at.as_str().to_owned());
            (
                VlessKeyPhase::Expired,
                inactive(
                    "Expired",
                    format!(
                        "expired at {at}: the user is removed from the server; move expiresAt to renew the key"
                    ),
                ),
            )
        }
        KeyState::LimitExceeded(limit) => (
            VlessKeyPhase::LimitExceeded,
            inactive("LimitExceeded", limit_message(key, *limit, now)),
        ),
        KeyState::Eligible(Some(problem)) => (
            VlessKeyPhase::Pending,
            if problem.stalled {
                stalled(problem.reason, problem.message.clone())
            } else {
                progressing(problem.reason, problem.message.clone())
            },
        ),
        KeyState::Eligible(None) => eligible(server, nodes),
    }
}

fn eligible(
    server: Option<&Server<'_>>,
    nodes: &[(NodeWorkloadStatus, bool)],
) -> (VlessKeyPhase, Conditions) {
    let server_name = server.map_or("", |s| s.key.name.as_str());
    if nodes.is_empty() {
        return (
            VlessKeyPhase::Pending,
            progressing(
                "NoNodes",
                format!("ProtocolServer {server_name} runs on no node"),
            ),
        );
    }
    let describe = |n: &NodeWorkloadStatus| {
        format!("{}: {}", n.node, n.message.as_deref().unwrap_or("pending"))
    };
    let refused: Vec<String> = nodes
        .iter()
        .filter(|(_, refused)| *refused)
        .map(|(n, _)| describe(n))
        .collect();
    if !refused.is_empty() {
        return (
            VlessKeyPhase::Error,
            stalled("RefusedByServer", refused.join("; ")),
        );
    }
    let running = nodes
        .iter()
        .filter(|(n, _)| n.phase == WorkloadPhase::Running)
        .count();
    if running == nodes.len() {
        return (
            VlessKeyPhase::Active,
            ready("Active", format!("the user is live on {running} node(s)")),
        );
    }
    let waiting: Vec<String> = nodes
        .iter()
        .filter(|(n, _)| n.phase != WorkloadPhase::Running)
        .map(|(n, _)| describe(n))
        .collect();
    (
        VlessKeyPhase::Pending,
        progressing(
            "Applying",
            format!(
                "live on {running} of {} node(s); {}",
                nodes.len(),
                waiting.join("; ")
            ),
        ),
    )
}

fn limit_message(key: &Key<'_>, limit: u64, now: DateTime<Utc>) -> String {
    let used = key.usage.as_ref().map_or(0, |u| u.total());
    let tz = key
        .object
        .spec
        .time_zone
        .as_ref()
        .map_or(chrono_tz::Tz::UTC, |zone| zone.tz());
    let then = match period::next_start(key.object.spec.traffic_reset_period, tz, now) {
        Some(next) => format!("the user is back at the next reset, {}", timestamp(next)),
        None => "raise trafficLimitBytes or set a trafficResetPeriod to let it back".to_owned(),
    };
    format!(
        "{used} of {limit} bytes used in this period: the user is removed from the server; {then}"
    )
}
