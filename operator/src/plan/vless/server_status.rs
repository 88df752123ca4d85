//! The status of a `protocol: vless` ProtocolServer: desired and running
//! nodes, users, the Reality public key, and each node as its agent reports it.
//!
//! Ready when the server runs on every node that should run it (and at
//! least one). A refused configuration on a node (`Failed`) is Stalled: it
//! needs a change; anything else not yet running is Reconciling.

use std::collections::BTreeMap;

use serde_json::Value;
use veil_crds::common::WorkloadPhase;
use veil_crds::protocol_server::{ProtocolServerStatus, ServerNodeStatus};
use veil_crds::validate::Rfc3339;

use super::observed::{Conditions, Observed, observe, progressing, ready, stalled};
use super::servers::Server;
use crate::plan::tasks::NodeView;

/// The status body (without conditions and generation) and its conditions.
pub fn server_status(
    server: &Server<'_>,
    users: usize,
    views: &BTreeMap<&str, NodeView<'_>>,
) -> (Value, Conditions) {
    let mut refused = Vec::new();
    let nodes: Vec<ServerNodeStatus> = server
        .nodes
        .iter()
        .map(|node| {
            let (status, reported) = node_status(server, node, views);
            if reported && status.phase == WorkloadPhase::Failed {
                refused.push(describe(&status));
            }
            status
        })
        .collect();
    let running = nodes
        .iter()
        .filter(|n| n.phase == WorkloadPhase::Running)
        .count();
    let conditions = conditions(server, &nodes, &refused, running);
    let status = ProtocolServerStatus {
        desired_nodes: count(nodes.len()),
        ready_nodes: count(running),
        users: count(users),
        public_key: server.reality.as_ref().ok().map(|keys| keys.public.clone()),
        nodes,
        ..ProtocolServerStatus::default()
    };
    let body = serde_json::to_value(&status).unwrap_or(Value::Null);
    (body, conditions)
}

/// `node: message`, or `node: Phase` without one.
fn describe(node: &ServerNodeStatus) -> String {
    match &node.message {
        Some(message) => format!("{}: {message}", node.node),
        None => format!("{}: {:?}", node.node, node.phase),
    }
}

/// `refused` lists the nodes whose agent reported the server `Failed` (a
/// refused config, a process that keeps failing), as opposed to nodes that
/// stopped reporting.
fn conditions(
    server: &Server<'_>,
    nodes: &[ServerNodeStatus],
    refused: &[String],
    running: usize,
) -> Conditions {
    if let Err(problem) = &server.reality {
        return if problem.stalled {
            stalled(problem.reason, problem.message.clone())
        } else {
            progressing(problem.reason, problem.message.clone())
        };
    }
    if nodes.is_empty() {
        let message = if server.cordoned.is_empty() {
            "no node matches nodeSelector".to_owned()
        } else {
            format!(
                "every matching node is cordoned ({})",
                server.cordoned.join(", ")
            )
        };
        return progressing("NoNodes", message);
    }
    if !refused.is_empty() {
        return stalled("ServerFailed", refused.join("; "));
    }
    if running == nodes.len() {
        return ready("Running", format!("running on {running} node(s)"));
    }
    let waiting: Vec<String> = nodes
        .iter()
        .filter(|n| n.phase != WorkloadPhase::Running)
        .map(describe)
        .collect();
    progressing(
        "NotRunning",
        format!(
            "running on {running} of {} node(s); {}",
            nodes.len(),
            waiting.join("; ")
        ),
    )
}

/// The server on `node`, and whether that comes from a current report.
fn node_status(
    server: &Server<'_>,
    node: &str,
    views: &BTreeMap<&str, NodeView<'_>>,
) -> (ServerNodeStatus, bool) {
    let observed = observe(views, node, &server.id);
    let report = observed.report();
    let (phase, message, last_update_time) = match observed {
        Observed::Reported { report, at } => (
            report.phase,
            report.message.clone(),
            at.map(Rfc3339::from_utc),
        ),
        Observed::Lost { .. } => (WorkloadPhase::Failed, observed.why_unknown(node), None),
        Observed::NoAgent | Observed::NotReported => {
            (WorkloadPhase::Pending, observed.why_unknown(node), None)
        }
    };
    let status = ServerNodeStatus {
        node: node.to_owned(),
        phase,
        message,
        pid: report.and_then(|r| r.pid),
        version: report.and_then(|r| r.version.clone()),
        endpoint: endpoint(server, views.get(node)),
        users: report.map_or(0, |r| r.users),
        connections: report.map_or(0, |r| r.connections),
        restarts: report.map_or(0, |r| r.restarts),
        last_update_time,
    };
    (status, matches!(observed, Observed::Reported { .. }))
}

/// `host:port` clients connect to on a node: `publicAddress`, else the
/// address the node's agent registered with.
pub fn endpoint(server: &Server<'_>, view: Option<&NodeView<'_>>) -> Option<String> {
    let host = server.vless.public_address.clone().or_else(|| {
        view.and_then(|v| v.observation)
            .and_then(|o| o.registration.address.clone())
    })?;
    Some(host_port(&host, server.object.spec.port.get()))
}

/// `host:port`, with an IPv6 address in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
