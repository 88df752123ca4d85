//! A Strategy's status: its nodes as the agents report them, and kstatus
//! conditions (Ready when every node runs it — or, for a backup, holds it
//! in Standby; Reconciling while agents start it; Stalled when a person
//! must change something).

use std::collections::BTreeMap;

use serde_json::Value;
use veil_crds::strategy::{Engine, StrategyNodeStatus, StrategyPhase, StrategyStatus};
use veil_crds::validate::Rfc3339;
use veil_crds::wire::{ProbeReport, StrategyReport};

use super::groups::{Entry, Role};
use super::members::Resolved;
use super::placement::Placement;
use crate::plan::memo::Conditions;
use crate::plan::tasks::NodeView;
use crate::plan::vless::{progressing, ready, stalled};

/// The status body and conditions of `entry`.
pub fn strategy_status(
    entry: &Entry<'_>,
    resolved: &Resolved<'_>,
    placement: &Placement<'_>,
    views: &BTreeMap<&str, NodeView<'_>>,
) -> (Value, Conditions) {
    let placed = placement.strategies.get(entry.key);
    let mut nodes = Vec::new();
    let mut failures = Vec::new();
    for (node, hash, primary) in placed.map(|p| p.members.as_slice()).unwrap_or_default() {
        let (status, failed) = node_status(entry, node, hash, primary, views);
        if let Some(failure) = failed {
            failures.push(failure);
        }
        nodes.push(status);
    }
    let incapable = placed.map(|p| p.incapable.as_slice()).unwrap_or_default();
    for (node, why) in incapable {
        nodes.push(StrategyNodeStatus {
            node: node.clone(),
            phase: StrategyPhase::Failed,
            message: Some(why.clone()),
            ..StrategyNodeStatus::default()
        });
    }
    let desired = nodes.len() - incapable.len();
    let conditions = conditions(entry, resolved, &nodes[..desired], incapable, &failures);
    let phase = summary_phase(&conditions, matches!(entry.role, Role::Backup { .. }));
    let lowest = lowest_score(&nodes[..desired]);
    let status = StrategyStatus {
        phase: Some(phase),
        active_strategy: common_active(&nodes[..desired]),
        score: lowest.and_then(|n| n.score),
        fail_phase: lowest.and_then(|n| n.fail_phase.clone()),
        desired_nodes: count(desired),
        active_nodes: count(
            nodes
                .iter()
                .filter(|n| n.active && n.phase == StrategyPhase::Running)
                .count(),
        ),
        nodes,
        ..StrategyStatus::default()
    };
    (
        serde_json::to_value(&status).unwrap_or(Value::Null),
        conditions,
    )
}

/// The strategy every desired node has active, when they agree.
fn common_active(nodes: &[StrategyNodeStatus]) -> Option<String> {
    let mut active = nodes.iter().map(|n| n.active_strategy.as_deref());
    let first = active.next().flatten();
    active
        .all(|name| name == first)
        .then(|| first.map(str::to_owned))
        .flatten()
}

/// The desired node with the lowest score (the weakest link).
fn lowest_score(nodes: &[StrategyNodeStatus]) -> Option<&StrategyNodeStatus> {
    nodes.iter().filter(|n| n.score.is_some()).min_by(|a, b| {
        a.score
            .partial_cmp(&b.score)
            .unwrap_or(std::cmp::Ordering::Equal)
    })
}

/// The Strategy on one node, and `(reason, "node: message")` when the
/// agent reports it `Failed`.
fn node_status(
    entry: &Entry<'_>,
    node: &str,
    hash: &str,
    primary: &str,
    views: &BTreeMap<&str, NodeView<'_>>,
) -> (StrategyNodeStatus, Option<(String, String)>) {
    let waiting = |message: String| StrategyNodeStatus {
        node: node.to_owned(),
        phase: StrategyPhase::Testing,
        message: Some(message),
        ..StrategyNodeStatus::default()
    };
    let Some(observation) = views.get(node).and_then(|v| v.observation) else {
        return (
            waiting(format!("no agent has registered as node {node} yet")),
            None,
        );
    };
    if views.get(node).is_some_and(|v| !v.ready) {
        return (
            waiting(format!(
                "node {node} stopped reporting; the state there is unknown"
            )),
            None,
        );
    }
    let in_group =
        |r: &&StrategyReport| r.group.namespace == entry.key.namespace && r.group.name == primary;
    let report = observation
        .strategies
        .iter()
        .filter(in_group)
        .find(|r| r.strategy == entry.id);
    let Some(report) = report.filter(|r| r.applied_hash.as_deref() == Some(hash)) else {
        return (
            waiting(format!("waiting for the agent on node {node} to apply it")),
            None,
        );
    };
    let active_strategy = observation
        .strategies
        .iter()
        .filter(in_group)
        .find(|r| r.active)
        .map(|r| r.strategy.name.clone());
    let failed = failure(node, report);
    let status = StrategyNodeStatus {
        node: node.to_owned(),
        phase: report.phase,
        message: report.message.clone(),
        active: report.active,
        active_strategy,
        restarts: report.restarts,
        implementation: report.implementation.clone(),
        socks_port: report.socks_port,
        ..probe_status(report.probe.as_ref())
    };
    (status, failed)
}

/// `(reason, "node: message")` when the agent reports the Strategy `Failed`.
fn failure(node: &str, report: &StrategyReport) -> Option<(String, String)> {
    (report.phase == StrategyPhase::Failed).then(|| {
        let reason = report
            .reason
            .clone()
            .unwrap_or_else(|| "StrategyFailed".to_owned());
        let message = report
            .message
            .as_deref()
            .unwrap_or("failed without a message");
        (reason, format!("{node}: {message}"))
    })
}

/// The probe fields of a node's status from the agent's probe report
/// (times it cannot read are left out).
fn probe_status(probe: Option<&ProbeReport>) -> StrategyNodeStatus {
    let Some(probe) = probe else {
        return StrategyNodeStatus::default();
    };
    let time = |text: &Option<String>| text.as_deref().and_then(|t| Rfc3339::parse(t).ok());
    StrategyNodeStatus {
        score: probe.score,
        success_rate: probe.success_rate,
        critical_success_rate: probe.critical_success_rate,
        latency_ms: probe.latency_ms,
        jitter_ms: probe.jitter_ms,
        fail_phase: probe.fail_phase.clone(),
        failed_rounds: probe.failed_rounds,
        last_switch_time: time(&probe.last_switch_time),
        last_probe: time(&probe.last_probe),
        ..StrategyNodeStatus::default()
    }
}

fn conditions(
    entry: &Entry<'_>,
    resolved: &Resolved<'_>,
    nodes: &[StrategyNodeStatus],
    incapable: &[(String, String)],
    failures: &[(String, String)],
) -> Conditions {
    if let Some(conditions) = role_problem(entry) {
        return conditions;
    }
    if let Some(Err(problem)) = resolved.get(entry.key) {
        return if problem.stalled {
            stalled(problem.reason, problem.message.clone())
        } else {
            progressing(problem.reason, problem.message.clone())
        };
    }
    let backup_of = match &entry.role {
        Role::Backup { primaries } => Some(
            primaries
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        _ => None,
    };
    if nodes.is_empty() {
        return unplaced(backup_of.as_deref(), incapable);
    }
    if let Some((reason, _)) = failures.first() {
        let messages: Vec<&str> = failures.iter().map(|(_, m)| m.as_str()).collect();
        return stalled(reason, messages.join("; "));
    }
    match backup_of {
        Some(primaries) => backup_conditions(entry, &primaries, nodes),
        None => primary_conditions(entry, nodes),
    }
}

/// Stalled for its place among the Strategies: in a backup cycle, named
/// only by backups, or a `engine: vless` primary.
fn role_problem(entry: &Entry<'_>) -> Option<Conditions> {
    match &entry.role {
        Role::Cycle { circle } => {
            let mut names = circle.clone();
            names.push(entry.key.name.clone());
            return Some(stalled(
                "FailoverCycle",
                format!(
                    "Strategies name each other as backups in a circle ({}), so none of them is a primary; remove one of the names from `failover.backups`",
                    names.join(" → ")
                ),
            ));
        }
        Role::Orphan { named_by } => {
            return Some(stalled(
                "NotInAnyGroup",
                format!(
                    "named as a backup only by backups ({}), whose own `failover` is ignored; name it in a primary's `failover.backups`",
                    named_by.join(", ")
                ),
            ));
        }
        Role::Primary { .. } | Role::Backup { .. } => {}
    }
    let primary = matches!(entry.role, Role::Primary { .. });
    (primary && entry.object.spec.engine == Engine::Vless).then(|| {
        stalled(
            "EngineNotImplemented",
            "agents run `engine: vless` Strategies only as failover backups of a zapret Strategy (where they wait in Standby until failover chooses them), not on their own yet".to_owned(),
        )
    })
}

/// Placed on no node: stalled when nodes match but none can run it.
fn unplaced(backup_of: Option<&str>, incapable: &[(String, String)]) -> Conditions {
    if !incapable.is_empty() {
        let why: Vec<&str> = incapable.iter().map(|(_, why)| why.as_str()).collect();
        return stalled("NoCapableNode", why.join("; "));
    }
    progressing(
        "NoNodes",
        match backup_of {
            Some(primaries) => format!(
                "no node of its primary ({primaries}) matches its own nodeSelector, or the primary runs nowhere"
            ),
            None => "no node matches nodeSelector".to_owned(),
        },
    )
}

/// A backup: ready once in Standby (or Running) on every node.
fn backup_conditions(
    entry: &Entry<'_>,
    primaries: &str,
    nodes: &[StrategyNodeStatus],
) -> Conditions {
    let total = nodes.len();
    let placed = nodes
        .iter()
        .filter(|n| matches!(n.phase, StrategyPhase::Standby | StrategyPhase::Running))
        .count();
    if placed < total {
        return progressing("Starting", waiting_message(nodes, placed, total));
    }
    let ignored = if entry.object.spec.failover.is_some() {
        "; its own `failover` is ignored while it is a backup"
    } else {
        ""
    };
    ready(
        "Standby",
        format!("backup of {primaries} on {total} node(s){ignored}"),
    )
}

/// A primary: ready once Running on every node, noting missing backups.
fn primary_conditions(entry: &Entry<'_>, nodes: &[StrategyNodeStatus]) -> Conditions {
    let total = nodes.len();
    let running = nodes
        .iter()
        .filter(|n| n.phase == StrategyPhase::Running)
        .count();
    if running < total {
        return progressing("Starting", waiting_message(nodes, running, total));
    }
    if let Role::Primary { missing, .. } = &entry.role
        && !missing.is_empty()
    {
        return progressing(
            "BackupNotFound",
            format!(
                "running on {total} node(s); backup(s) {} do not exist (yet), so failover has fewer alternatives",
                missing.join(", ")
            ),
        );
    }
    ready("Running", format!("running on {total} node(s)"))
}

/// One phase for the whole Strategy, from its conditions.
fn summary_phase(conditions: &Conditions, backup: bool) -> StrategyPhase {
    let is_true = |type_: &str| {
        conditions
            .iter()
            .any(|(t, status, _, _)| *t == type_ && *status == "True")
    };
    if is_true("Stalled") {
        StrategyPhase::Failed
    } else if is_true("Ready") && backup {
        StrategyPhase::Standby
    } else if is_true("Ready")
        || conditions
            .iter()
            .any(|(t, _, reason, _)| *t == "Reconciling" && reason == "BackupNotFound")
    {
        StrategyPhase::Running
    } else {
        StrategyPhase::Testing
    }
}

fn waiting_message(nodes: &[StrategyNodeStatus], done: usize, total: usize) -> String {
    let waiting: Vec<String> = nodes
        .iter()
        .filter(|n| !matches!(n.phase, StrategyPhase::Running | StrategyPhase::Standby))
        .map(|n| match &n.message {
            Some(message) => format!("{}: {message}", n.node),
            None => format!("{}: {:?}", n.node, n.phase),
        })
        .collect();
    format!("{done} of {total} node(s) ready; {}", waiting.join("; "))
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
