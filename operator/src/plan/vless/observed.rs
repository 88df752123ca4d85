//! What the operator knows of a server on one node, from that node's agent,
//! and the kstatus conditions both vless kinds are written with.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use veil_crds::wire::{ServerId, ServerReport};

use super::servers::report;
use crate::plan::tasks::NodeView;
use crate::world::timestamp;

/// kstatus conditions as `plan` writes them: (type, status, reason, message).
pub type Conditions = [(&'static str, &'static str, String, String); 3];

/// A server on one node.
#[derive(Clone, Copy, Debug)]
pub enum Observed<'v> {
    /// No agent has registered as this node.
    NoAgent,
    /// The agent stopped reporting; its last report, if any, may be stale.
    Lost {
        last_seen: DateTime<Utc>,
        report: Option<&'v ServerReport>,
    },
    /// The agent reports, but not this server (yet).
    NotReported,
    /// The agent's latest report of the server.
    Reported {
        report: &'v ServerReport,
        at: Option<DateTime<Utc>>,
    },
}

impl<'v> Observed<'v> {
    /// The latest report, stale or not.
    pub fn report(&self) -> Option<&'v ServerReport> {
        match *self {
            Observed::Lost { report, .. } => report,
            Observed::Reported { report, .. } => Some(report),
            Observed::NoAgent | Observed::NotReported => None,
        }
    }

    /// Why there is no current report, for messages; `None` when there is one.
    pub fn why_unknown(&self, node: &str) -> Option<String> {
        match self {
            Observed::NoAgent => Some(format!("no agent has registered as node {node} yet")),
            Observed::Lost { last_seen, .. } => Some(format!(
                "node {node} stopped reporting (no heartbeat since {}); the state there is unknown",
                timestamp(*last_seen)
            )),
            Observed::NotReported => Some(format!(
                "waiting for the agent on node {node} to start the server"
            )),
            Observed::Reported { .. } => None,
        }
    }
}

/// How server `id` stands on `node`.
pub fn observe<'v>(
    views: &'v BTreeMap<&str, NodeView<'_>>,
    node: &str,
    id: &ServerId,
) -> Observed<'v> {
    let Some(view) = views.get(node) else {
        return Observed::NoAgent;
    };
    let Some(observation) = view.observation else {
        return Observed::NoAgent;
    };
    let found = report(view, id);
    if !view.ready {
        return Observed::Lost {
            last_seen: observation.last_seen,
            report: found,
        };
    }
    match found {
        Some(report) => Observed::Reported {
            report,
            at: observation.servers_reported_at,
        },
        None => Observed::NotReported,
    }
}

/// Ready=True: the desired state is in effect.
pub fn ready(reason: &str, message: String) -> Conditions {
    [
        ("Ready", "True", reason.to_owned(), message),
        ("Reconciling", "False", reason.to_owned(), String::new()),
        ("Stalled", "False", reason.to_owned(), String::new()),
    ]
}

/// Ready=False while the operator or agents still work on it.
pub fn progressing(reason: &str, message: String) -> Conditions {
    [
        ("Ready", "False", reason.to_owned(), message.clone()),
        ("Reconciling", "True", reason.to_owned(), message),
        ("Stalled", "False", reason.to_owned(), String::new()),
    ]
}

/// Ready=False until a person changes something.
pub fn stalled(reason: &str, message: String) -> Conditions {
    [
        ("Ready", "False", reason.to_owned(), message.clone()),
        ("Reconciling", "False", reason.to_owned(), String::new()),
        ("Stalled", "True", reason.to_owned(), message),
    ]
}

/// Ready=False on purpose (a disabled or expired key): nothing is in
/// progress and nothing is broken, so kstatus reads it as current.
pub fn inactive(reason: &str, message: String) -> Conditions {
    [
        ("Ready", "False", reason.to_owned(), message),
        ("Reconciling", "False", reason.to_owned(), String::new()),
        ("Stalled", "False", reason.to_owned(), String::new()),
    ]
}
