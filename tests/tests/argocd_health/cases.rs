//! Sample objects for the health checks: the statuses the operator writes
//! (operator/src/plan), one case per kind and outcome, with what Argo CD
//! must show for each.

use serde_json::{Value, json};
use veil_crds::kind::Kind;

/// A live object of `kind` at `generation` with `status` (`Value::Null`: none yet).
fn object(kind: Kind, generation: i64, status: Value) -> Value {
    let mut object = json!({
        "apiVersion": "veil.dev/v1alpha1",
        "kind": kind.as_str(),
        "metadata": {"name": "sample", "generation": generation},
        "spec": {},
    });
    if !status.is_null() {
        object["status"] = status;
    }
    object
}

/// The three kstatus conditions, as the operator writes them: `(status,
/// message)` for Ready, Reconciling and Stalled, one reason for all.
fn conditions(reason: &str, ready: (&str, &str), reconciling: &str, stalled: &str) -> Value {
    let message = ready.1;
    let condition = |type_: &str, status: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3})
    };
    let when_true = |status: &str| if status == "True" { message } else { "" };
    json!([
        condition("Ready", ready.0, message),
        condition("Reconciling", reconciling, when_true(reconciling)),
        condition("Stalled", stalled, when_true(stalled)),
    ])
}

/// Ready=True (the operator's `ready`).
fn ready(reason: &str, message: &str) -> Value {
    conditions(reason, ("True", message), "False", "False")
}
/// Ready=False, Reconciling=True (`progressing`).
fn progressing(reason: &str, message: &str) -> Value {
    conditions(reason, ("False", message), "True", "False")
}
/// Ready=False, Stalled=True (`stalled`).
fn stalled(reason: &str, message: &str) -> Value {
    conditions(reason, ("False", message), "False", "True")
}
/// Ready=False, nothing in progress, nothing broken (`inactive`).
fn inactive(reason: &str, message: &str) -> Value {
    conditions(reason, ("False", message), "False", "False")
}

/// A current status (observedGeneration 3 of generation 3) with `phase`
/// (empty: none) and `conditions`.
fn status(phase: &str, conditions: Value) -> Value {
    let mut status = json!({"observedGeneration": 3, "conditions": conditions});
    if !phase.is_empty() {
        status["phase"] = json!(phase);
    }
    status
}

/// One sample: the object, and what Argo CD must show for it.
pub struct Case {
    pub name: &'static str,
    pub object: Value,
    pub status: &'static str,
    pub message: String,
}

fn case(
    name: &'static str,
    kind: Kind,
    status: Value,
    health: &'static str,
    message: &str,
) -> Case {
    Case {
        name,
        object: object(kind, 3, status),
        status: health,
        message: message.to_owned(),
    }
}

/// Cases every kind answers alike: no status yet, an old generation, and
/// the plain condition outcomes.
pub fn common_cases(kind: Kind) -> Vec<Case> {
    let waiting = "Waiting for the Veil operator to report a status";
    vec![
        Case {
            name: "no status yet",
            object: object(kind, 1, Value::Null),
            status: "Progressing",
            message: waiting.to_owned(),
        },
        case(
            "status without conditions",
            kind,
            json!({"observedGeneration": 3}),
            "Progressing",
            waiting,
        ),
        Case {
            name: "status of an older generation",
            object: object(kind, 4, status("", ready("Done", "all good"))),
            status: "Progressing",
            message: "Waiting for the Veil operator to observe generation 4".to_owned(),
        },
        case(
            "status without observedGeneration",
            kind,
            json!({"conditions": ready("Done", "all good")}),
            "Progressing",
            "Waiting for the Veil operator to observe generation 3",
        ),
        case(
            "Ready=True",
            kind,
            status("", ready("Done", "all good")),
            "Healthy",
            "Done: all good",
        ),
        case(
            "Reconciling=True",
            kind,
            status("", progressing("Applying", "2 of 3 nodes")),
            "Progressing",
            "Applying: 2 of 3 nodes",
        ),
        case(
            "Stalled=True",
            kind,
            status("", stalled("NotImplemented", "no reconciler yet")),
            "Degraded",
            "NotImplemented: no reconciler yet",
        ),
        case(
            "Ready=False with nothing in progress",
            kind,
            status("", inactive("Broken", "gave up")),
            "Degraded",
            "Broken: gave up",
        ),
        case(
            "Ready unknown",
            kind,
            status(
                "",
                json!([{"type": "Ready", "status": "Unknown", "reason": "Starting"}]),
            ),
            "Progressing",
            "Waiting for the Veil operator to set the Ready condition",
        ),
    ]
}

/// What the operator writes for each kind (operator/src/plan), one case per outcome.
pub fn kind_cases(kind: Kind) -> Vec<Case> {
    match kind {
        Kind::VeilNode => vec![
            case(
                "agent not registered",
                kind,
                status(
                    "",
                    progressing("NotRegistered", "no agent has registered as this node yet"),
                ),
                "Progressing",
                "NotRegistered: no agent has registered as this node yet",
            ),
            case(
                "heartbeats arrive",
                kind,
                status("", ready("Heartbeat", "the agent reports regularly")),
                "Healthy",
                "Heartbeat: the agent reports regularly",
            ),
            case(
                "node lost",
                kind,
                status(
                    "",
                    stalled(
                        "NodeLost",
                        "no heartbeat since 2026-01-01T00:00:00Z (more than 90s)",
                    ),
                ),
                "Degraded",
                "NodeLost: no heartbeat since 2026-01-01T00:00:00Z (more than 90s)",
            ),
        ],
        Kind::ProtocolServer => vec![
            case(
                "running everywhere",
                kind,
                status("", ready("Running", "running on 2 node(s)")),
                "Healthy",
                "Running: running on 2 node(s)",
            ),
            case(
                "no node selected",
                kind,
                status(
                    "",
                    progressing("NoNodes", "no VeilNode matches nodeSelector"),
                ),
                "Progressing",
                "NoNodes: no VeilNode matches nodeSelector",
            ),
            case(
                "config refused by xray",
                kind,
                status("", stalled("ServerFailed", "edge-1: xray -test: bad port")),
                "Degraded",
                "ServerFailed: edge-1: xray -test: bad port",
            ),
        ],
        Kind::Runner => vec![
            case(
                "nodes ready",
                kind,
                status("", ready("NodesReady", "2 node(s) ready")),
                "Healthy",
                "NodesReady: 2 node(s) ready",
            ),
            case(
                "no ready node",
                kind,
                status(
                    "",
                    progressing("NoReadyNodes", "no node matches nodeSelector"),
                ),
                "Progressing",
                "NoReadyNodes: no node matches nodeSelector",
            ),
        ],
        Kind::Strategy => vec![
            case(
                "active strategy",
                kind,
                status("Running", ready("Running", "passing its probes")),
                "Healthy",
                "Running: passing its probes",
            ),
            case(
                "standby alternative",
                kind,
                status(
                    "Standby",
                    inactive("Standby", "ready as a failover alternative"),
                ),
                "Healthy",
                "Standby: ready as a failover alternative",
            ),
            case(
                "being probed",
                kind,
                status("Testing", progressing("Probing", "3 of 5 probes done")),
                "Progressing",
                "Probing: 3 of 5 probes done",
            ),
            case(
                "failed",
                kind,
                status("Failed", stalled("ProbesFailing", "every probe timed out")),
                "Degraded",
                "ProbesFailing: every probe timed out",
            ),
        ],
        Kind::Schedule => vec![
            case(
                "active",
                kind,
                status("Active", ready("Active", "schedule is active")),
                "Healthy",
                "Active: schedule is active",
            ),
            case(
                "suspended",
                kind,
                status("Suspended", ready("Suspended", "schedule is suspended")),
                "Suspended",
                "Schedule is suspended (spec.suspend: true)",
            ),
            case(
                "runAt done",
                kind,
                status("Completed", ready("Completed", "schedule is completed")),
                "Healthy",
                "Completed: schedule is completed",
            ),
            case(
                "cannot run",
                kind,
                status(
                    "Failed",
                    stalled("InvalidTimeZone", "unknown time zone Mars/Olympus"),
                ),
                "Degraded",
                "InvalidTimeZone: unknown time zone Mars/Olympus",
            ),
        ],
        Kind::TaskRun => vec![
            case(
                "waiting for a runner",
                kind,
                status(
                    "Pending",
                    progressing("Pending", "no runner has free capacity"),
                ),
                "Progressing",
                "Pending: no runner has free capacity",
            ),
            case(
                "running",
                kind,
                status("Running", progressing("Running", "the run is executing")),
                "Progressing",
                "Running: the run is executing",
            ),
            case(
                "succeeded",
                kind,
                status("Succeeded", ready("Succeeded", "the run exited 0")),
                "Healthy",
                "Succeeded: the run exited 0",
            ),
            case(
                "failed",
                kind,
                status("Failed", stalled("ExitCode", "exited with code 2")),
                "Degraded",
                "ExitCode: exited with code 2",
            ),
            case(
                "node lost",
                kind,
                status(
                    "Failed",
                    stalled("NodeLost", "node edge-1 stopped reporting"),
                ),
                "Degraded",
                "NodeLost: node edge-1 stopped reporting",
            ),
            case(
                "cancelled",
                kind,
                status("Cancelled", stalled("Cancelled", "spec.cancel is true")),
                "Healthy",
                "Cancelled: spec.cancel is true",
            ),
        ],
        Kind::VlessKey => vec![
            case(
                "active",
                kind,
                status("Active", ready("Active", "the user is live on 2 node(s)")),
                "Healthy",
                "Active: the user is live on 2 node(s)",
            ),
            case(
                "being applied",
                kind,
                status("Pending", progressing("Applying", "live on 1 of 2 node(s)")),
                "Progressing",
                "Applying: live on 1 of 2 node(s)",
            ),
            case(
                "disabled",
                kind,
                status(
                    "Disabled",
                    inactive("Disabled", "`enabled: false`: the user is removed"),
                ),
                "Healthy",
                "Disabled: `enabled: false`: the user is removed",
            ),
            case(
                "expired",
                kind,
                status(
                    "Expired",
                    inactive("Expired", "expired at 2026-01-01T00:00:00Z"),
                ),
                "Healthy",
                "Expired: expired at 2026-01-01T00:00:00Z",
            ),
            case(
                "over its traffic limit",
                kind,
                status(
                    "LimitExceeded",
                    inactive("LimitExceeded", "used 100 GiB of 100 GiB"),
                ),
                "Healthy",
                "LimitExceeded: used 100 GiB of 100 GiB",
            ),
            case(
                "duplicate email",
                kind,
                status(
                    "Error",
                    stalled(
                        "DuplicateEmail",
                        "alice@example.com is used by VlessKey bob",
                    ),
                ),
                "Degraded",
                "DuplicateEmail: alice@example.com is used by VlessKey bob",
            ),
        ],
        Kind::Secret => Vec::new(),
    }
}
