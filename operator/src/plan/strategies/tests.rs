//! Strategy planning rules, from YAML, in memory.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;
use veil_crds::strategy::StrategyPhase;
use veil_crds::wire::{ProbeReport, RegisterRequest, StrategyGroup, StrategyId, StrategyReport};

use crate::agents::NodeObservation;
use crate::plan::tests::{snapshot, uids};
use crate::plan::{Plan, PlanInputs, Statuses, plan, vless};
use crate::world::GenerationBook;

const NODES: &str = "
apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata: {name: edge-1}
spec: {labels: {role: edge}}
---
apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata: {name: edge-2}
spec: {labels: {role: edge, zone: b}}
---
apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata: {name: office}
spec: {labels: {role: office}}
";

fn strategy(name: &str, extra: &str) -> String {
    format!(
        "---
apiVersion: veil.dev/v1alpha1
kind: Strategy
metadata: {{name: {name}}}
spec:
  nodeSelector: {{matchLabels: {{role: edge}}}}
  engine: zapret
  zapret:
    args: [--filter-tcp=443, '--hostlist={{hostlist:blocked}}', --dpi-desync=multisplit]
    hostlists: [{{name: blocked, domains: [blocked.test]}}]
{extra}"
    )
}

const PROBES_AND_BACKUP: &str = "  probes: {targets: [{url: 'https://blocked.test/'}]}
  failover: {backups: [fake-ttl]}
";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap()
}

fn observation(node: &str, os: &str, reports: Vec<StrategyReport>) -> NodeObservation {
    let registration: RegisterRequest = serde_json::from_value(serde_json::json!({
        "node": node, "os": os, "arch": "x86_64", "agentVersion": "test",
    }))
    .unwrap();
    NodeObservation {
        strategies: reports,
        ..NodeObservation::registered(registration, t0(), t0())
    }
}

fn plan_with(yaml: &str, nodes: &BTreeMap<String, NodeObservation>) -> Plan {
    let (world, _) = GenerationBook::default().build_world(&snapshot(yaml), t0(), uids());
    plan(&PlanInputs {
        world: &world,
        previous: &Statuses::new(),
        nodes,
        runs: &Default::default(),
        now: t0(),
        node_timeout: chrono::Duration::seconds(30),
        last_schedule_times: &BTreeMap::new(),
        secrets: &vless::GeneratedSecrets::default(),
        traffic: &vless::TrafficState::default(),
        memo: None,
    })
}

fn status(plan: &Plan, name: &str) -> Value {
    let key = ObjectKey::new(Kind::Strategy, "default", name);
    serde_json::from_str(plan.statuses[&key].get()).unwrap()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

fn groups<'a>(plan: &'a Plan, node: &str) -> &'a [StrategyGroup] {
    plan.assignments
        .get(node)
        .map(|a| a.strategies.as_slice())
        .unwrap_or_default()
}

fn id(name: &str) -> StrategyId {
    StrategyId {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn report(name: &str, group: &StrategyGroup, phase: StrategyPhase, active: bool) -> StrategyReport {
    StrategyReport {
        strategy: id(name),
        phase,
        group: group.primary.clone(),
        active,
        implementation: Some("builtin".into()),
        applied_hash: Some(group.spec_hash.clone()),
        ..StrategyReport::default()
    }
}

fn member_names(group: &StrategyGroup) -> Vec<&str> {
    group
        .members
        .iter()
        .map(|m| m.strategy.name.as_str())
        .collect()
}

#[test]
fn a_backup_is_a_member_of_its_primarys_group_only_on_the_primarys_nodes() {
    let yaml = format!(
        "{NODES}{}{}",
        strategy("split", PROBES_AND_BACKUP),
        // The backup's own selector also picks the office node: it must not run there alone.
        strategy("fake-ttl", "").replace("{role: edge}", "{}")
    );
    let plan = plan_with(&yaml, &BTreeMap::new());
    for node in ["edge-1", "edge-2"] {
        let groups = groups(&plan, node);
        assert_eq!(groups.len(), 1, "{node}: one group");
        assert_eq!(groups[0].primary, id("split"));
        assert_eq!(
            member_names(&groups[0]),
            ["split", "fake-ttl"],
            "primary first"
        );
        let member = groups[0].members[0].zapret.as_ref().unwrap();
        assert_eq!(member.hostlists[0].domains, ["blocked.test"]);
        assert_eq!(member.priority, 100);
    }
    assert!(
        groups(&plan, "office").is_empty(),
        "a backup never runs on its own"
    );
    assert_eq!(status(&plan, "fake-ttl")["desiredNodes"], 2);
}

#[test]
fn backups_naming_each_other_in_a_circle_are_stalled() {
    let a = strategy("a", PROBES_AND_BACKUP).replace("backups: [fake-ttl]", "backups: [b]");
    let b = strategy("b", PROBES_AND_BACKUP).replace("backups: [fake-ttl]", "backups: [a]");
    let plan = plan_with(&format!("{NODES}{a}{b}"), &BTreeMap::new());
    for name in ["a", "b"] {
        let stalled = condition(&status(&plan, name), "Stalled").clone();
        assert_eq!(stalled["status"], "True", "{name}");
        assert_eq!(stalled["reason"], "FailoverCycle", "{name}");
        assert!(
            stalled["message"].as_str().unwrap().contains("a → b → a")
                || stalled["message"].as_str().unwrap().contains("b → a → b"),
            "{stalled}"
        );
    }
    assert!(groups(&plan, "edge-1").is_empty());
}

#[test]
fn agent_reports_make_a_primary_ready_and_its_backup_standby() {
    let yaml = format!(
        "{NODES}{}{}",
        strategy("split", PROBES_AND_BACKUP),
        strategy("fake-ttl", "")
    );
    let first = plan_with(&yaml, &BTreeMap::new());
    let group = groups(&first, "edge-1")[0].clone();
    let reports = vec![
        report("split", &group, StrategyPhase::Running, true),
        report("fake-ttl", &group, StrategyPhase::Standby, false),
    ];
    let nodes = BTreeMap::from([
        (
            "edge-1".to_owned(),
            observation("edge-1", "linux", reports.clone()),
        ),
        ("edge-2".to_owned(), observation("edge-2", "linux", reports)),
    ]);
    let plan = plan_with(&yaml, &nodes);
    let split = status(&plan, "split");
    assert_eq!(condition(&split, "Ready")["status"], "True", "{split}");
    assert_eq!(split["activeNodes"], 2);
    assert_eq!(split["nodes"][0]["implementation"], "builtin");
    assert_eq!(split["nodes"][0]["activeStrategy"], "split");
    assert_eq!(split["phase"], "Running");
    assert_eq!(split["activeStrategy"], "split");
    let backup = status(&plan, "fake-ttl");
    assert_eq!(condition(&backup, "Ready")["reason"], "Standby", "{backup}");
    assert_eq!(backup["nodes"][0]["phase"], "Standby");
    assert_eq!(backup["activeNodes"], 0);
    assert_eq!(backup["phase"], "Standby");
    assert_eq!(
        backup["activeStrategy"], "split",
        "the group's active member"
    );
}

#[test]
fn a_report_for_an_older_spec_keeps_the_strategy_reconciling() {
    let yaml = format!("{NODES}{}", strategy("split", ""));
    let first = plan_with(&yaml, &BTreeMap::new());
    let mut group = groups(&first, "edge-1")[0].clone();
    group.spec_hash = "an-older-spec".into();
    let nodes = BTreeMap::from([(
        "edge-1".to_owned(),
        observation(
            "edge-1",
            "linux",
            vec![report("split", &group, StrategyPhase::Running, true)],
        ),
    )]);
    let plan = plan_with(&yaml, &nodes);
    let split = status(&plan, "split");
    assert_eq!(
        condition(&split, "Reconciling")["status"],
        "True",
        "{split}"
    );
    assert_eq!(split["nodes"][0]["phase"], "Testing");
}

#[test]
fn a_failed_report_stalls_the_strategy_with_the_agents_reason() {
    let yaml = format!("{NODES}{}", strategy("split", ""));
    let first = plan_with(&yaml, &BTreeMap::new());
    let group = groups(&first, "edge-1")[0].clone();
    let mut failed = report("split", &group, StrategyPhase::Failed, false);
    failed.reason = Some("UnsupportedOption".into());
    failed.message = Some("args[2] `--dpi-desync`: UnsupportedOption".into());
    let nodes = BTreeMap::from([(
        "edge-1".to_owned(),
        observation("edge-1", "linux", vec![failed]),
    )]);
    let split = status(&plan_with(&yaml, &nodes), "split");
    let stalled = condition(&split, "Stalled");
    assert_eq!(stalled["reason"], "UnsupportedOption");
    assert_eq!(split["phase"], "Failed");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .starts_with("edge-1: args[2]"),
        "{stalled}"
    );
}

#[test]
fn nodes_that_cannot_run_the_engine_get_nothing_and_say_why() {
    let yaml = format!(
        "{NODES}{}",
        strategy("split", "").replace("args:", "implementation: builtin\n    args:")
    );
    let nodes = BTreeMap::from([
        (
            "edge-1".to_owned(),
            observation("edge-1", "windows", Vec::new()),
        ),
        (
            "edge-2".to_owned(),
            observation("edge-2", "windows", Vec::new()),
        ),
    ]);
    let plan = plan_with(&yaml, &nodes);
    assert!(groups(&plan, "edge-1").is_empty());
    let split = status(&plan, "split");
    let stalled = condition(&split, "Stalled");
    assert_eq!(stalled["reason"], "NoCapableNode", "{split}");
    assert!(stalled["message"].as_str().unwrap().contains("needs Linux"));
    assert_eq!(split["nodes"][0]["phase"], "Failed");
    assert_eq!(split["desiredNodes"], 0);
}

#[test]
fn a_vless_primary_is_stalled_but_a_vless_backup_is_a_member() {
    let vless = "---
apiVersion: veil.dev/v1alpha1
kind: Strategy
metadata: {name: via-vless}
spec:
  nodeSelector: {matchLabels: {role: edge}}
  engine: vless
  vless: {keyRef: {name: alice}}
";
    let alone = plan_with(&format!("{NODES}{vless}"), &BTreeMap::new());
    let stalled = condition(&status(&alone, "via-vless"), "Stalled").clone();
    assert_eq!(stalled["reason"], "EngineNotImplemented");

    // Its VlessKey does not exist: the group goes out without it.
    let primary = strategy("split", PROBES_AND_BACKUP).replace("[fake-ttl]", "[via-vless]");
    let plan = plan_with(&format!("{NODES}{primary}{vless}"), &BTreeMap::new());
    let group = &groups(&plan, "edge-1")[0];
    assert_eq!(member_names(group), ["split"]);
    let backup = status(&plan, "via-vless");
    assert_eq!(
        condition(&backup, "Reconciling")["reason"],
        "VlessKeyNotReady",
        "{backup}"
    );

    // A link from a Secret reaches the agent with the client, never a status.
    let link = "vless://0b6e5c2a-3f4d-4e1b-9a8c-7d6e5f4a3b2c@198.18.2.9:443?security=reality&pbk=K&sni=allowed.test&sid=ab&fp=chrome&type=tcp#backup";
    let from_secret = format!(
        "{vless}---
apiVersion: v1
kind: Secret
metadata: {{name: vless-link}}
stringData: {{url: \"{link}\"}}
"
    )
    .replace(
        "vless: {keyRef: {name: alice}}",
        "vless: {urlSecretRef: {name: vless-link, key: url}, client: xray, socksPort: 10808}",
    );
    let plan = plan_with(&format!("{NODES}{primary}{from_secret}"), &BTreeMap::new());
    let group = &groups(&plan, "edge-1")[0];
    assert_eq!(member_names(group), ["split", "via-vless"]);
    let member = group.members[1].vless.as_ref().expect("a vless member");
    assert_eq!(member.link.expose(), link);
    assert_eq!(member.client, veil_crds::strategy::VlessClient::Xray);
    assert_eq!(member.socks_port, Some(10808));
    assert!(group.members[1].zapret.is_none());
    let text = plan.statuses.values().map(|s| s.get()).collect::<String>();
    assert!(!text.contains("0b6e5c2a"), "a link in a status: {text}");
}

#[test]
fn files_from_secrets_reach_the_agent_and_never_the_status() {
    let yaml = format!(
        "{NODES}---
apiVersion: v1
kind: Secret
metadata: {{name: payloads}}
stringData: {{tls: very-secret-payload}}
{}",
        strategy("fake", "").replace(
            "hostlists:",
            "files: [{name: tls, secretKeyRef: {name: payloads, key: tls}}]\n    hostlists:"
        )
    );
    let plan = plan_with(&yaml, &BTreeMap::new());
    let file = &groups(&plan, "edge-1")[0].members[0]
        .zapret
        .as_ref()
        .unwrap()
        .files[0];
    assert!(file.secret);
    assert_eq!(file.data_base64.expose(), "dmVyeS1zZWNyZXQtcGF5bG9hZA==");
    let text = plan.statuses.values().map(|s| s.get()).collect::<String>();
    assert!(
        !text.contains("very-secret"),
        "a secret in a status: {text}"
    );
}

#[test]
fn a_missing_secret_keeps_the_strategy_reconciling_and_unassigned() {
    let yaml = format!(
        "{NODES}{}",
        strategy("fake", "").replace(
            "hostlists:",
            "files: [{name: tls, secretKeyRef: {name: payloads, key: tls}}]\n    hostlists:"
        )
    );
    let plan = plan_with(&yaml, &BTreeMap::new());
    assert!(groups(&plan, "edge-1").is_empty());
    let fake = status(&plan, "fake");
    assert_eq!(
        condition(&fake, "Reconciling")["reason"],
        "SecretNotFound",
        "{fake}"
    );
}

#[test]
fn a_missing_backup_keeps_a_running_primary_reconciling() {
    let yaml = format!("{NODES}{}", strategy("split", PROBES_AND_BACKUP));
    let first = plan_with(&yaml, &BTreeMap::new());
    let group = groups(&first, "edge-1")[0].clone();
    assert_eq!(member_names(&group), ["split"]);
    let running = vec![report("split", &group, StrategyPhase::Running, true)];
    let nodes = BTreeMap::from([
        (
            "edge-1".to_owned(),
            observation("edge-1", "linux", running.clone()),
        ),
        ("edge-2".to_owned(), observation("edge-2", "linux", running)),
    ]);
    let split = status(&plan_with(&yaml, &nodes), "split");
    let reconciling = condition(&split, "Reconciling");
    assert_eq!(reconciling["reason"], "BackupNotFound", "{split}");
    assert!(
        reconciling["message"]
            .as_str()
            .unwrap()
            .contains("fake-ttl")
    );
}

#[test]
fn probe_reports_show_per_node_and_the_lowest_score_sums_up_the_strategy() {
    let yaml = format!(
        "{NODES}{}{}",
        strategy("split", PROBES_AND_BACKUP),
        strategy("fake-ttl", "")
    );
    let first = plan_with(&yaml, &BTreeMap::new());
    let group = groups(&first, "edge-1")[0].clone();
    let probed = |score: f64, fail_phase: Option<&str>, failed_rounds: u32| {
        let mut active = report("split", &group, StrategyPhase::Running, true);
        active.probe = Some(ProbeReport {
            score: Some(score),
            success_rate: Some(0.5),
            critical_success_rate: Some(1.0),
            latency_ms: Some(120),
            jitter_ms: Some(7),
            fail_phase: fail_phase.map(str::to_owned),
            failed_rounds,
            last_switch_time: Some("2026-12-07T01:00:00Z".into()),
            last_probe: Some("not a time".into()),
            message: None,
            round: Vec::new(),
        });
        vec![
            active,
            report("fake-ttl", &group, StrategyPhase::Standby, false),
        ]
    };
    let nodes = BTreeMap::from([
        (
            "edge-1".to_owned(),
            observation("edge-1", "linux", probed(0.9, None, 0)),
        ),
        (
            "edge-2".to_owned(),
            observation("edge-2", "linux", probed(0.4, Some("Stall16K"), 2)),
        ),
    ]);
    let plan = plan_with(&yaml, &nodes);
    let split = status(&plan, "split");
    let edge_2 = &split["nodes"][1];
    assert_eq!(edge_2["node"], "edge-2", "{split}");
    assert_eq!(edge_2["score"], 0.4);
    assert_eq!(edge_2["failPhase"], "Stall16K");
    assert_eq!(edge_2["failedRounds"], 2);
    assert_eq!(edge_2["latencyMs"], 120);
    assert_eq!(edge_2["lastSwitchTime"], "2026-12-07T01:00:00Z");
    assert!(
        edge_2.get("lastProbe").is_none(),
        "an unreadable time is left out"
    );
    assert!(
        split["nodes"][0].get("failedRounds").is_none(),
        "0 is left out"
    );
    assert_eq!(split["score"], 0.4, "the lowest node's score");
    assert_eq!(split["failPhase"], "Stall16K");
}
