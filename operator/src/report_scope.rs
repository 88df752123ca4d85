//! What a node's report may touch: only what is its own.
//!
//! A report is checked whole before anything of it is written; one entry
//! outside the node's scope refuses the whole report ([`Refusal`]), so a
//! forged entry can never ride along with legitimate ones and a refused
//! report leaves no trace in the store. The rules:
//!
//! - log chunks and task updates only for task runs placed on the node
//!   (chunks of a run the operator does not know, e.g. one deleted while it
//!   ran, are not refused; [`crate::runs::RunBook::report`] drops them);
//! - traffic only for servers assigned to the node since the operator
//!   started, and users in its current or previous assignment of that
//!   server (or already counted for that server, so deltas journalled
//!   across several assignment changes or an operator restart still land);
//! - every delta at most [`MAX_DELTA_BYTES`], and no total pushed above
//!   [`MAX_TOTAL_BYTES`], so no report can overflow a counter (which would
//!   fail this node's every later report).
//!
//! Server and Strategy states need no check: they are stored under the
//! reporting node only, and statuses read them for what was placed there.

use veil_crds::wire::NodeReport;

use crate::agents::ReportScope;
use crate::plan::vless::TrafficState;

/// The largest traffic delta one report may carry for one user (1 PiB).
pub const MAX_DELTA_BYTES: u64 = 1 << 50;
/// The largest lifetime total a counter may reach (2^62 bytes).
pub const MAX_TOTAL_BYTES: u64 = 1 << 62;

/// Why a report was refused. Messages name the foreign object, never a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// A log chunk or task update for a run placed on another node.
    #[error("task run {run} (uid {uid}) is placed on node `{owner}`, not on this node")]
    ForeignRun {
        run: String,
        uid: String,
        owner: String,
    },
    /// Traffic for a server the node was never given.
    #[error("traffic for ProtocolServer {server}, which is not assigned to this node")]
    ServerNotAssigned { server: String },
    /// Traffic for a user the node was not given on that server.
    #[error(
        "traffic for user `{email}` of ProtocolServer {server}, who is not in this node's assignment"
    )]
    UserNotAssigned { server: String, email: String },
    /// A delta above [`MAX_DELTA_BYTES`].
    #[error(
        "a traffic delta of {bytes} bytes for `{email}` on {server} is above the {MAX_DELTA_BYTES} bytes one report may carry"
    )]
    DeltaTooLarge {
        server: String,
        email: String,
        bytes: u64,
    },
    /// A delta that would push a lifetime total above [`MAX_TOTAL_BYTES`].
    #[error("traffic for `{email}` on {server} would take its total above {MAX_TOTAL_BYTES} bytes")]
    TotalTooLarge { server: String, email: String },
}

impl Refusal {
    /// Whether the report asked for something that is not the node's
    /// (403), rather than for a value out of bounds (422).
    pub fn is_foreign(&self) -> bool {
        matches!(
            self,
            Refusal::ForeignRun { .. }
                | Refusal::ServerNotAssigned { .. }
                | Refusal::UserNotAssigned { .. }
        )
    }
}

/// Checks every entry of `report` from `node`.
///
/// `run_node` tells where a run (by uid) is placed: `None` for a run the
/// operator does not know, `Some(None)` for a known run not placed yet.
pub fn check(
    node: &str,
    report: &NodeReport,
    run_node: impl Fn(&str) -> Option<Option<String>>,
    scope: &ReportScope,
    traffic: &TrafficState,
) -> Result<(), Refusal> {
    let runs = report
        .logs
        .iter()
        .map(|c| &c.run)
        .chain(report.task_updates.iter().map(|u| &u.run));
    for run in runs {
        if let Some(placed) = run_node(&run.uid)
            && placed.as_deref() != Some(node)
        {
            return Err(Refusal::ForeignRun {
                run: format!("{}/{}", run.namespace, run.name),
                uid: run.uid.clone(),
                owner: placed.unwrap_or_else(|| "(none yet)".to_owned()),
            });
        }
    }
    for delta in &report.traffic {
        let server = delta.server.to_string();
        if !scope.allows_server(&server) {
            return Err(Refusal::ServerNotAssigned { server });
        }
        let key = (server, delta.email.clone());
        let total = traffic.counters(&key);
        if !scope.allows_user(&key.0, &key.1) && total.is_none() {
            let (server, email) = key;
            return Err(Refusal::UserNotAssigned { server, email });
        }
        let largest = delta.uplink.max(delta.downlink);
        if largest > MAX_DELTA_BYTES {
            let (server, email) = key;
            return Err(Refusal::DeltaTooLarge {
                server,
                email,
                bytes: largest,
            });
        }
        let (up, down) = total.map_or((0, 0), |t| (t.uplink, t.downlink));
        if up.saturating_add(delta.uplink) > MAX_TOTAL_BYTES
            || down.saturating_add(delta.downlink) > MAX_TOTAL_BYTES
        {
            let (server, email) = key;
            return Err(Refusal::TotalTooLarge { server, email });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
