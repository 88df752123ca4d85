#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::json;
use veil_crds::wire::{NodeReport, ServerAssignment};

use super::*;
use crate::agents::{Agents, NodeAssignment};

fn server(name: &str, emails: &[&str]) -> ServerAssignment {
    let users: Vec<_> = emails
        .iter()
        .map(|e| json!({"email": e, "id": "00000000-0000-4000-8000-000000000000", "flow": "xtls-rprx-vision"}))
        .collect();
    serde_json::from_value(json!({
        "server": {"namespace": "default", "name": name},
        "listen": "0.0.0.0", "port": 443,
        "vless": {"privateKey": "k", "dest": "example.com:443", "serverNames": ["example.com"],
                  "shortIds": [""], "users": users, "usersHash": "h"}
    }))
    .unwrap()
}

fn publish(agents: &Agents, node: &str, servers: Vec<ServerAssignment>) {
    let desired = BTreeMap::from([(
        node.to_owned(),
        NodeAssignment {
            servers,
            ..NodeAssignment::default()
        },
    )]);
    agents.set_assignments(desired, Utc::now());
}

fn traffic(server: &str, email: &str, bytes: u64) -> NodeReport {
    serde_json::from_value(json!({
        "node": "a", "seq": 1, "appliedRevision": 0,
        "traffic": [{"server": {"namespace": "default", "name": server}, "email": email,
                     "uplink": bytes, "downlink": 0}]
    }))
    .unwrap()
}

fn log_of(uid: &str) -> NodeReport {
    serde_json::from_value(json!({
        "node": "a", "seq": 1, "appliedRevision": 0,
        "logs": [{"run": {"namespace": "default", "name": "r", "uid": uid}, "seq": 1, "text": "x"}]
    }))
    .unwrap()
}

#[test]
fn no_scope_is_known_before_the_first_publish() {
    let agents = Agents::default();
    assert!(agents.report_scope("a").is_none());
    publish(&agents, "b", Vec::new());
    assert!(agents.report_scope("a").is_some());
}

#[test]
fn traffic_is_accepted_for_current_and_previous_users_of_assigned_servers_only() {
    let agents = Agents::default();
    let state = TrafficState::default();
    publish(&agents, "b", vec![server("other", &["u9"])]);
    publish(&agents, "a", vec![server("edge", &["u1"])]);
    let scope = agents.report_scope("a").unwrap();
    let check = |r: &NodeReport, s: &ReportScope| check("a", r, |_| None, s, &state);
    assert_eq!(check(&traffic("edge", "u1", 10), &scope), Ok(()));
    assert!(matches!(
        check(&traffic("other", "u9", 10), &scope),
        Err(Refusal::ServerNotAssigned { .. })
    ));
    assert!(matches!(
        check(&traffic("edge", "invented", 10), &scope),
        Err(Refusal::UserNotAssigned { .. })
    ));
    // u1 removed: its last deltas still land (previous assignment)...
    publish(&agents, "a", vec![server("edge", &["u2"])]);
    let scope = agents.report_scope("a").unwrap();
    assert_eq!(check(&traffic("edge", "u1", 10), &scope), Ok(()));
    // ...and, two changes later, because it was counted before.
    publish(&agents, "a", vec![server("edge", &["u3"])]);
    let scope = agents.report_scope("a").unwrap();
    assert!(check(&traffic("edge", "u1", 10), &scope).is_err());
    let mut counted = TrafficState::default();
    counted.add("default/edge", "u1", 1, 1);
    assert_eq!(
        super::check("a", &traffic("edge", "u1", 10), |_| None, &scope, &counted),
        Ok(())
    );
}

#[test]
fn counters_are_bounded() {
    let agents = Agents::default();
    publish(&agents, "a", vec![server("edge", &["u1"])]);
    let scope = agents.report_scope("a").unwrap();
    let mut state = TrafficState::default();
    let refused = check(
        "a",
        &traffic("edge", "u1", i64::MAX as u64),
        |_| None,
        &scope,
        &state,
    );
    assert!(matches!(refused, Err(Refusal::DeltaTooLarge { .. })));
    assert!(!refused.unwrap_err().is_foreign());
    state.add("default/edge", "u1", MAX_TOTAL_BYTES - 5, 0);
    assert!(matches!(
        check("a", &traffic("edge", "u1", 6), |_| None, &scope, &state),
        Err(Refusal::TotalTooLarge { .. })
    ));
    assert_eq!(
        check("a", &traffic("edge", "u1", 5), |_| None, &scope, &state),
        Ok(())
    );
}

#[test]
fn logs_are_accepted_only_for_runs_placed_on_the_node() {
    let scope = ReportScope::default();
    let state = TrafficState::default();
    let placement = |uid: &str| match uid {
        "mine" => Some(Some("a".to_owned())),
        "theirs" => Some(Some("b".to_owned())),
        "pending" => Some(None),
        _ => None,
    };
    assert_eq!(
        check("a", &log_of("mine"), placement, &scope, &state),
        Ok(())
    );
    assert_eq!(
        check("a", &log_of("gone"), placement, &scope, &state),
        Ok(()),
        "an unknown run is dropped later, not refused"
    );
    let refused = check("a", &log_of("theirs"), placement, &scope, &state).unwrap_err();
    assert!(refused.is_foreign());
    assert!(refused.to_string().contains("node `b`"), "{refused}");
    assert!(check("a", &log_of("pending"), placement, &scope, &state).is_err());
}
