//! What a VlessKey reads of its server and of the server's nodes, as plain
//! comparable values: when they are equal from one pass to the next, the
//! keys of that server need nothing recomputed on their account.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use veil_crds::common::WorkloadPhase;
use veil_crds::object::ObjectKey;
use veil_crds::protocol_server::VlessFlow;
use veil_crds::wire::ServerId;

use super::super::keys::missing_server;
use super::super::observed::{Observed, observe};
use super::super::servers::{Problem, Server};
use crate::plan::tasks::NodeView;
use crate::world::World;

/// The server facts that key resolution reads: whether the named server is
/// a vless one, its id and default flow, and why it cannot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerFacts {
    /// Missing or not `protocol: vless` (the error every key on it shows).
    Missing(Problem),
    Vless {
        id: ServerId,
        flow: VlessFlow,
        /// Why the server has no key pair (keys wait for it).
        not_ready: Option<Problem>,
    },
}

impl ServerFacts {
    /// The facts of the server named `key`.
    pub fn of(key: &ObjectKey, server: Option<&Server<'_>>, world: &World) -> ServerFacts {
        match server {
            None => ServerFacts::Missing(missing_server(world, key)),
            Some(server) => ServerFacts::Vless {
                id: server.id.clone(),
                flow: server.vless.flow,
                not_ready: server.reality.as_ref().err().cloned(),
            },
        }
    }
}

/// A node's latest report of the server, as key statuses read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The node applied the server's current user set.
    pub applied: bool,
    pub phase: WorkloadPhase,
    pub message: Option<String>,
}

/// How the server stands on one node (see [`Observed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    NoAgent,
    Lost {
        last_seen: DateTime<Utc>,
        report: Option<Report>,
    },
    NotReported,
    Reported(Report),
}

/// One node of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    pub node: String,
    pub seen: Seen,
    /// Users the server refused there: email → xray's message.
    pub failed: BTreeMap<String, String>,
}

/// How the node facts of a server changed between two passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodesChange {
    Same,
    /// Only whether nodes applied the current user set changed.
    AppliedOnly,
    /// Anything else: every key of the server is recomputed.
    Other,
}

impl NodeFacts {
    /// Every node of `server`, with `hash` its current user set's fingerprint.
    pub fn of(
        server: &Server<'_>,
        hash: Option<&str>,
        views: &BTreeMap<&str, NodeView<'_>>,
    ) -> Vec<NodeFacts> {
        server
            .nodes
            .iter()
            .map(|node| {
                let observed = observe(views, node, &server.id);
                let failed = observed
                    .report()
                    .map(|r| {
                        r.failed_users
                            .iter()
                            .map(|f| (f.email.clone(), f.message.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let report = |r: &veil_crds::wire::ServerReport| Report {
                    applied: hash.is_some() && r.applied_users_hash.as_deref() == hash,
                    phase: r.phase,
                    message: r.message.clone(),
                };
                let seen = match observed {
                    Observed::NoAgent => Seen::NoAgent,
                    Observed::Lost {
                        last_seen,
                        report: r,
                    } => Seen::Lost {
                        last_seen,
                        report: r.map(report),
                    },
                    Observed::NotReported => Seen::NotReported,
                    Observed::Reported { report: r, .. } => Seen::Reported(report(r)),
                };
                NodeFacts {
                    node: node.clone(),
                    seen,
                    failed,
                }
            })
            .collect()
    }

    /// The latest report, stale or not.
    pub fn report(&self) -> Option<&Report> {
        match &self.seen {
            Seen::Lost { report, .. } => report.as_ref(),
            Seen::Reported(report) => Some(report),
            Seen::NoAgent | Seen::NotReported => None,
        }
    }

    /// These facts with `applied` cleared, to compare everything else.
    fn masked(&self) -> Seen {
        let mask = |r: &Report| Report {
            applied: false,
            ..r.clone()
        };
        match &self.seen {
            Seen::Lost { last_seen, report } => Seen::Lost {
                last_seen: *last_seen,
                report: report.as_ref().map(mask),
            },
            Seen::Reported(report) => Seen::Reported(mask(report)),
            other => other.clone(),
        }
    }
}

/// How the nodes went from `old` to `new` (refused users aside: see
/// [`failed_emails_changed`]).
pub fn nodes_change(old: &[NodeFacts], new: &[NodeFacts]) -> NodesChange {
    if old.len() != new.len() || old.iter().zip(new).any(|(a, b)| a.node != b.node) {
        return NodesChange::Other;
    }
    let mut change = NodesChange::Same;
    for (a, b) in old.iter().zip(new) {
        if a.seen == b.seen {
            continue;
        }
        if a.masked() != b.masked() {
            return NodesChange::Other;
        }
        change = NodesChange::AppliedOnly;
    }
    change
}

/// Emails whose refusal (or its message) changed on some node.
pub fn failed_emails_changed(old: &[NodeFacts], new: &[NodeFacts]) -> Vec<String> {
    let empty = BTreeMap::new();
    let mut changed = Vec::new();
    for (index, node) in new.iter().enumerate() {
        let before = old.get(index).map_or(&empty, |n| &n.failed);
        for (email, message) in &node.failed {
            if before.get(email) != Some(message) {
                changed.push(email.clone());
            }
        }
        changed.extend(
            before
                .keys()
                .filter(|email| !node.failed.contains_key(*email))
                .cloned(),
        );
    }
    for node in old.iter().skip(new.len()) {
        changed.extend(node.failed.keys().cloned());
    }
    changed
}
