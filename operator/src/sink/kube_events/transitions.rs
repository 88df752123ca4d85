//! The transitions a person should see in `kubectl describe`, read from
//! one object's status before and after a pass.
//!
//! Only changes count: the same status twice yields nothing, and neither
//! does a first status (no `old`), so an operator that starts, or becomes
//! the leader, and adopts the statuses already in the cluster reports no
//! transition that happened before it. Notes are built from status fields,
//! which never hold secrets; a TaskRun's log tail is never used.

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use veil_crds::common::{Condition, ConditionStatus};
use veil_crds::kind::Kind;
use veil_crds::strategy::StrategyStatus;
use veil_crds::task_run::{TaskRunPhase, TaskRunStatus};
use veil_crds::veil_node::VeilNodeStatus;
use veil_crds::vless_key::{VlessKeyPhase, VlessKeyStatus};

/// The condition and reason a VeilNode gets when its agent went silent.
const NODE_LOST: &str = "NodeLost";
/// The longest note the Events API accepts (1 kB).
const MAX_NOTE_BYTES: usize = 1024;

/// Whether an Event reports something normal or something to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Expected, e.g. a key someone disabled.
    Normal,
    /// Something is wrong or someone lost access.
    Warning,
}

/// One transition, as an Event says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub severity: Severity,
    /// `PascalCase`, shown as the Event's Reason (`NodeLost`, `TaskFailed`, …).
    pub reason: &'static str,
    /// What the operator was doing (`PascalCase`; the Event's action).
    pub action: &'static str,
    /// The human-readable message, at most 1 kB.
    pub note: String,
}

/// The transitions of an object of `kind` whose status went from `old` to
/// `new` (see the module docs). A status that does not parse yields none.
pub fn transitions(kind: Kind, old: Option<&RawValue>, new: &RawValue) -> Vec<Transition> {
    let Some(old) = old else {
        return Vec::new();
    };
    match kind {
        Kind::VeilNode => both(old, new, node).into_iter().collect(),
        Kind::TaskRun => both(old, new, task_run).into_iter().collect(),
        Kind::VlessKey => both(old, new, vless_key).into_iter().collect(),
        Kind::Strategy => both(old, new, strategy).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Parses both statuses and applies `compare`.
fn both<S: DeserializeOwned>(
    old: &RawValue,
    new: &RawValue,
    compare: impl Fn(&S, &S) -> Option<Transition>,
) -> Option<Transition> {
    let old = serde_json::from_str::<S>(old.get()).ok()?;
    let new = serde_json::from_str::<S>(new.get()).ok()?;
    compare(&old, &new)
}

fn ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// Lost: `Ready` turns to reason `NodeLost`; back: from `NodeLost` to `True`.
fn node(old: &VeilNodeStatus, new: &VeilNodeStatus) -> Option<Transition> {
    let (old, new) = (ready(&old.conditions)?, ready(&new.conditions)?);
    if old.reason != NODE_LOST && new.reason == NODE_LOST {
        return Some(Transition {
            severity: Severity::Warning,
            reason: "NodeLost",
            action: "MonitorHeartbeat",
            note: bounded(&new.message),
        });
    }
    if old.reason == NODE_LOST && new.status == ConditionStatus::True {
        return Some(Transition {
            severity: Severity::Normal,
            reason: "NodeReady",
            action: "MonitorHeartbeat",
            note: "the agent reports again".to_owned(),
        });
    }
    None
}

/// A run that turns `Failed`: its reason, node, exit code and message.
fn task_run(old: &TaskRunStatus, new: &TaskRunStatus) -> Option<Transition> {
    if old.phase == TaskRunPhase::Failed || new.phase != TaskRunPhase::Failed {
        return None;
    }
    let mut note = String::from("the task run failed");
    if let Some(node) = &new.node {
        note.push_str(&format!(" on node {node}"));
    }
    if let Some(reason) = &new.reason {
        note.push_str(&format!(" ({reason})"));
    }
    if let Some(code) = new.exit_code {
        note.push_str(&format!(", exit code {code}"));
    }
    if let Some(message) = new.message.as_deref().filter(|m| !m.is_empty()) {
        note.push_str(": ");
        note.push_str(message);
    }
    Some(Transition {
        severity: Severity::Warning,
        reason: "TaskFailed",
        action: "RunTask",
        note: bounded(&note),
    })
}

/// A key that stops working: disabled (revoked), expired or over its limit.
fn vless_key(old: &VlessKeyStatus, new: &VlessKeyStatus) -> Option<Transition> {
    if old.phase == new.phase {
        return None;
    }
    let (severity, reason, note) = match new.phase {
        VlessKeyPhase::Disabled => (
            Severity::Normal,
            "KeyDisabled",
            "the key was disabled (`enabled: false`); its user is removed from the servers",
        ),
        VlessKeyPhase::Expired => (
            Severity::Warning,
            "KeyExpired",
            "the key is past `expiresAt`; its user is removed from the servers",
        ),
        VlessKeyPhase::LimitExceeded => (
            Severity::Warning,
            "TrafficLimitExceeded",
            "the key used up `trafficLimitBytes` for this period; its user is removed until the next reset",
        ),
        _ => return None,
    };
    Some(Transition {
        severity,
        reason,
        action: "ApplyKey",
        note: note.to_owned(),
    })
}

/// Nodes whose active strategy changed from one to another, in one note.
fn strategy(old: &StrategyStatus, new: &StrategyStatus) -> Option<Transition> {
    let switches: Vec<String> = new
        .nodes
        .iter()
        .filter_map(|now| {
            let before = old.nodes.iter().find(|n| n.node == now.node)?;
            match (&before.active_strategy, &now.active_strategy) {
                (Some(from), Some(to)) if from != to => {
                    Some(format!("node {}: {from} -> {to}", now.node))
                }
                _ => None,
            }
        })
        .collect();
    if switches.is_empty() {
        return None;
    }
    Some(Transition {
        severity: Severity::Normal,
        reason: "StrategySwitched",
        action: "Failover",
        note: bounded(&format!(
            "active strategy switched: {}",
            switches.join("; ")
        )),
    })
}

/// `text` cut to [`MAX_NOTE_BYTES`] at a character boundary.
pub fn bounded(text: &str) -> String {
    if text.len() <= MAX_NOTE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_NOTE_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn reasons(kind: Kind, old: Option<&str>, new: &str) -> Vec<&'static str> {
        let old = old.map(raw);
        transitions(kind, old.as_deref(), &raw(new))
            .iter()
            .map(|t| t.reason)
            .collect()
    }

    const READY: &str = r#"{"conditions":[{"type":"Ready","status":"True","reason":"Heartbeat"}]}"#;
    const LOST: &str = r#"{"conditions":[{"type":"Ready","status":"False","reason":"NodeLost","message":"no heartbeat since 12:00"}]}"#;

    #[test]
    fn each_watched_transition_names_its_reason() {
        let table: &[(Kind, Option<&str>, &str, &[&str])] = &[
            (Kind::VeilNode, Some(READY), LOST, &["NodeLost"]),
            (Kind::VeilNode, Some(LOST), READY, &["NodeReady"]),
            (Kind::VeilNode, Some(LOST), LOST, &[]),
            (
                Kind::TaskRun,
                Some(r#"{"phase":"Running"}"#),
                r#"{"phase":"Failed","exitCode":3}"#,
                &["TaskFailed"],
            ),
            (
                Kind::TaskRun,
                Some(r#"{"phase":"Failed"}"#),
                r#"{"phase":"Failed","message":"other"}"#,
                &[],
            ),
            (
                Kind::TaskRun,
                Some(r#"{"phase":"Running"}"#),
                r#"{"phase":"Succeeded"}"#,
                &[],
            ),
            (
                Kind::VlessKey,
                Some(r#"{"phase":"Active"}"#),
                r#"{"phase":"Disabled"}"#,
                &["KeyDisabled"],
            ),
            (
                Kind::VlessKey,
                Some(r#"{"phase":"Active"}"#),
                r#"{"phase":"Expired"}"#,
                &["KeyExpired"],
            ),
            (
                Kind::VlessKey,
                Some(r#"{"phase":"Active"}"#),
                r#"{"phase":"LimitExceeded"}"#,
                &["TrafficLimitExceeded"],
            ),
            (
                Kind::VlessKey,
                Some(r#"{"phase":"Disabled"}"#),
                r#"{"phase":"Active"}"#,
                &[],
            ),
            (
                Kind::Strategy,
                Some(r#"{"nodes":[{"node":"a","activeStrategy":"main"}]}"#),
                r#"{"nodes":[{"node":"a","activeStrategy":"backup"}]}"#,
                &["StrategySwitched"],
            ),
            (
                Kind::Strategy,
                Some(r#"{"nodes":[{"node":"a"}]}"#),
                r#"{"nodes":[{"node":"a","activeStrategy":"main"}]}"#,
                &[],
            ),
            (Kind::Runner, Some("{}"), r#"{"phase":"Failed"}"#, &[]),
        ];
        for (kind, old, new, expected) in table {
            assert_eq!(
                reasons(*kind, *old, new),
                *expected,
                "{kind:?}: {old:?} -> {new}"
            );
        }
    }

    #[test]
    fn a_first_status_is_no_transition() {
        // What a starting operator or a new leader sees for an object
        // whose status it has not adopted: nothing to report.
        assert!(reasons(Kind::TaskRun, None, r#"{"phase":"Failed"}"#).is_empty());
        assert!(reasons(Kind::VeilNode, None, LOST).is_empty());
    }

    #[test]
    fn a_failed_run_note_has_status_fields_but_never_its_log() {
        let old = raw(r#"{"phase":"Running"}"#);
        let new = raw(
            r#"{"phase":"Failed","node":"n1","reason":"Exited","exitCode":3,"message":"exited with 3","logTail":["TOKEN=hunter2"]}"#,
        );
        let found = transitions(Kind::TaskRun, Some(&old), &new);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].severity, Severity::Warning);
        assert_eq!(
            found[0].note,
            "the task run failed on node n1 (Exited), exit code 3: exited with 3"
        );
        assert!(!found[0].note.contains("hunter2"));
    }

    #[test]
    fn notes_are_cut_to_one_kilobyte_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_NOTE_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("short"), "short");
    }
}
