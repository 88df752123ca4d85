//! Printer columns: what `kubectl get` (through each CRD's
//! `additionalPrinterColumns`) and `veil-operator get` show for each kind,
//! from one table, so both always agree.
//!
//! Also the small JSONPath subset the columns use ([`evaluate`]) and kubectl's
//! cell rendering ([`render_cell`]: ages for `date` columns, `<none>` for
//! missing values).

use chrono::{DateTime, Utc};

mod age;
mod jsonpath;

pub use age::human_duration;
pub use jsonpath::evaluate;

use crate::kind::Kind;

/// One column of `kubectl get` output (without `NAME`/`NAMESPACE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Header, e.g. `Phase` (kubectl upper-cases it).
    pub name: &'static str,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: &'static str,
    /// JSONPath into the object, e.g. `.status.phase`.
    pub json_path: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: i32,
    /// What the column shows (`kubectl explain` does not show it; CRD readers do).
    pub description: &'static str,
}

const fn col(
    name: &'static str,
    type_: &'static str,
    json_path: &'static str,
    priority: i32,
    description: &'static str,
) -> PrinterColumn {
    PrinterColumn {
        name,
        type_,
        json_path,
        priority,
        description,
    }
}

/// JSONPath of the `Ready` condition's status.
pub const READY_PATH: &str = ".status.conditions[?(@.type==\"Ready\")].status";

const READY: PrinterColumn = col(
    "Ready",
    "string",
    READY_PATH,
    0,
    "Status of the Ready condition",
);
const READY_WIDE: PrinterColumn = col(
    "Ready",
    "string",
    READY_PATH,
    1,
    "Status of the Ready condition",
);
const AGE: PrinterColumn = col(
    "Age",
    "date",
    ".metadata.creationTimestamp",
    0,
    "Time since the object was created",
);

const VEIL_NODE: &[PrinterColumn] = &[
    READY,
    col(
        "Cordoned",
        "boolean",
        ".spec.cordoned",
        0,
        "Whether new work is kept off the node",
    ),
    col("OS", "string", ".status.os", 0, "Operating system"),
    col("Arch", "string", ".status.arch", 0, "CPU architecture"),
    col(
        "Version",
        "string",
        ".status.agentVersion",
        0,
        "veil-agent version",
    ),
    col(
        "Address",
        "string",
        ".status.address",
        1,
        "Address of the agent",
    ),
    col(
        "Heartbeat",
        "date",
        ".status.lastHeartbeat",
        1,
        "Time since the last heartbeat",
    ),
    AGE,
];

const PROTOCOL_SERVER: &[PrinterColumn] = &[
    col(
        "Protocol",
        "string",
        ".spec.protocol",
        0,
        "vless or somnytoo",
    ),
    col("Port", "integer", ".spec.port", 0, "Listening port"),
    col(
        "Nodes",
        "integer",
        ".status.desiredNodes",
        0,
        "Nodes the selector picks",
    ),
    col(
        "Running",
        "integer",
        ".status.readyNodes",
        0,
        "Nodes where the server runs",
    ),
    col("Users", "integer", ".status.users", 0, "Users configured"),
    READY,
    col(
        "Public-Address",
        "string",
        ".spec.vless.publicAddress",
        1,
        "Host put into client links",
    ),
    AGE,
];

const VLESS_KEY: &[PrinterColumn] = &[
    col(
        "Phase",
        "string",
        ".status.phase",
        0,
        "Pending, Active, Disabled, Expired, LimitExceeded or Error",
    ),
    col(
        "Server",
        "string",
        ".spec.serverRef.name",
        0,
        "The ProtocolServer the user belongs to",
    ),
    col(
        "Traffic",
        "integer",
        ".status.trafficBytes",
        0,
        "Bytes up+down in the current period",
    ),
    col(
        "Limit",
        "integer",
        ".spec.trafficLimitBytes",
        0,
        "Bytes allowed per period",
    ),
    col(
        "Expires",
        "string",
        ".spec.expiresAt",
        0,
        "When the key stops working",
    ),
    col(
        "Email",
        "string",
        ".status.email",
        1,
        "The user key in xray",
    ),
    col(
        "Last-Seen",
        "date",
        ".status.lastSeen",
        1,
        "Time since traffic was last seen",
    ),
    READY_WIDE,
    AGE,
];

const STRATEGY: &[PrinterColumn] = &[
    col("Engine", "string", ".spec.engine", 0, "zapret or vless"),
    col(
        "Phase",
        "string",
        ".status.phase",
        0,
        "Running, Standby (a failover backup), Testing or Failed",
    ),
    col(
        "Nodes",
        "integer",
        ".status.desiredNodes",
        0,
        "Nodes the selector picks",
    ),
    col(
        "Active",
        "integer",
        ".status.activeNodes",
        0,
        "Nodes where this strategy is active",
    ),
    col(
        "Active-Strategy",
        "string",
        ".status.activeStrategy",
        0,
        "The member of its failover group active on its nodes",
    ),
    col(
        "Score",
        "number",
        ".status.score",
        1,
        "Lowest probe score over its nodes, 0 to 1",
    ),
    col(
        "Fail-Phase",
        "string",
        ".status.failPhase",
        1,
        "How the last probe round failed (Stall16K, ResetAtHello, …)",
    ),
    READY,
    AGE,
];

const RUNNER: &[PrinterColumn] = &[
    col(
        "Nodes",
        "integer",
        ".status.readyNodes",
        0,
        "Ready nodes offering capacity",
    ),
    col(
        "Capacity",
        "integer",
        ".status.capacity",
        0,
        "Task slots on Ready nodes",
    ),
    col(
        "Running",
        "integer",
        ".status.running",
        0,
        "Task runs executing now",
    ),
    col(
        "Succeeded",
        "integer",
        ".status.succeeded",
        1,
        "Task runs that succeeded",
    ),
    col(
        "Failed",
        "integer",
        ".status.failed",
        1,
        "Task runs that failed",
    ),
    READY,
    AGE,
];

const SCHEDULE: &[PrinterColumn] = &[
    col("Schedule", "string", ".spec.schedule", 0, "Cron schedule"),
    col(
        "Run-At",
        "string",
        ".spec.runAt",
        1,
        "Time of the one-shot run",
    ),
    col(
        "Time-Zone",
        "string",
        ".spec.timeZone",
        1,
        "Time zone of the schedule",
    ),
    col(
        "Suspend",
        "boolean",
        ".spec.suspend",
        0,
        "Whether new runs are held back",
    ),
    col(
        "Active",
        "integer",
        ".status.activeCount",
        0,
        "Runs not finished yet",
    ),
    col(
        "Last-Schedule",
        "date",
        ".status.lastScheduleTime",
        0,
        "Time since the last run was scheduled",
    ),
    col(
        "Last-Result",
        "string",
        ".status.lastResult",
        0,
        "Phase of the last finished run",
    ),
    col(
        "Next",
        "string",
        ".status.nextScheduleTime",
        1,
        "When the next run is due",
    ),
    AGE,
];

const TASK_RUN: &[PrinterColumn] = &[
    col(
        "Phase",
        "string",
        ".status.phase",
        0,
        "Pending, Running, Succeeded, Failed or Cancelled",
    ),
    col(
        "Node",
        "string",
        ".status.node",
        0,
        "Node the run was placed on",
    ),
    col(
        "Exit-Code",
        "integer",
        ".status.exitCode",
        0,
        "Exit code of the process",
    ),
    col(
        "Reason",
        "string",
        ".status.reason",
        1,
        "Why the run is in its phase",
    ),
    col(
        "Started",
        "date",
        ".status.startedAt",
        1,
        "Time since the process started",
    ),
    AGE,
];

const SECRET: &[PrinterColumn] = &[col("Type", "string", ".type", 0, "Secret type"), AGE];

/// The columns of `kind`, in display order, `Age` last.
pub fn columns(kind: Kind) -> &'static [PrinterColumn] {
    match kind {
        Kind::VeilNode => VEIL_NODE,
        Kind::ProtocolServer => PROTOCOL_SERVER,
        Kind::VlessKey => VLESS_KEY,
        Kind::Strategy => STRATEGY,
        Kind::Runner => RUNNER,
        Kind::Schedule => SCHEDULE,
        Kind::TaskRun => TASK_RUN,
        Kind::Secret => SECRET,
    }
}

/// Renders one cell as kubectl does: `date` columns as the age since the time
/// (`5s`, `3m12s`, `2d`), missing values as `<none>`.
pub fn render_cell(col: &PrinterColumn, value: Option<&str>, now: DateTime<Utc>) -> String {
    let Some(value) = value else {
        return "<none>".to_owned();
    };
    if col.type_ == "date" {
        return match DateTime::parse_from_rfc3339(value) {
            Ok(time) => human_duration(now.signed_duration_since(time.with_timezone(&Utc))),
            Err(_) => "<invalid>".to_owned(),
        };
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_filters_and_indices() {
        let obj = json!({
            "spec": {"port": 443, "cordoned": false},
            "status": {"conditions": [
                {"type": "Reconciling", "status": "False"},
                {"type": "Ready", "status": "True"}
            ], "nodes": [{"node": "a"}]}
        });
        assert_eq!(evaluate(READY_PATH, &obj).as_deref(), Some("True"));
        assert_eq!(evaluate(".spec.port", &obj).as_deref(), Some("443"));
        assert_eq!(evaluate(".spec.cordoned", &obj).as_deref(), Some("false"));
        assert_eq!(
            evaluate(".status.nodes[0].node", &obj).as_deref(),
            Some("a")
        );
        assert_eq!(evaluate(".status.nodes[1].node", &obj), None);
        assert_eq!(evaluate(".status.phase", &obj), None);
    }

    #[test]
    fn cells_render_like_kubectl() {
        let now = DateTime::parse_from_rfc3339("2026-01-10T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let age = col("Age", "date", "", 0, "");
        assert_eq!(render_cell(&age, Some("2026-01-09T23:59:55Z"), now), "5s");
        assert_eq!(
            render_cell(&age, Some("2026-01-09T23:56:48Z"), now),
            "3m12s"
        );
        assert_eq!(render_cell(&age, Some("2026-01-08T00:00:00Z"), now), "2d");
        assert_eq!(render_cell(&age, None, now), "<none>");
        assert_eq!(render_cell(&READY, Some("True"), now), "True");
    }

    #[test]
    fn every_kind_ends_with_age() {
        for kind in Kind::ALL {
            let cols = columns(kind);
            assert_eq!(cols.last().map(|c| c.name), Some("Age"), "{kind}");
            for c in cols {
                assert!(["string", "integer", "number", "boolean", "date"].contains(&c.type_));
                assert!(
                    jsonpath::parse_path(c.json_path).is_some(),
                    "{}",
                    c.json_path
                );
            }
        }
    }
}
