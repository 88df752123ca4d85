//! Plan rules, tested in memory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use veil_crds::document::{Limits, parse_documents};
use veil_crds::kind::Kind;

use super::*;
use crate::source::{Origin, SourceSnapshot, SourcedObject};
use crate::world::GenerationBook;

/// A source snapshot of the objects in `yaml` (namespace `default`).
pub(crate) fn snapshot(yaml: &str) -> SourceSnapshot {
    let objects = parse_documents(yaml, "default", &Limits::default())
        .unwrap_or_else(|errors| panic!("test YAML must parse: {errors:?}"))
        .into_iter()
        .map(|parsed| {
            (
                parsed.object.key(),
                SourcedObject {
                    object: parsed.object.into(),
                    origin: Origin {
                        file: PathBuf::from("test.yaml"),
                        line: parsed.line,
                    },
                },
            )
        })
        .collect();
    SourceSnapshot {
        objects,
        ..SourceSnapshot::default()
    }
}

const NODE_AND_SECRET: &str = "
apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata:
  name: edge-1
spec:
  cordoned: false
---
apiVersion: v1
kind: Secret
metadata:
  name: psk
stringData:
  key: hunter2
";

/// Plans with no agents and no runs.
fn plan_of(world: &crate::world::World, previous: &Statuses, now: chrono::DateTime<Utc>) -> Plan {
    plan(&PlanInputs {
        world,
        previous,
        nodes: &BTreeMap::new(),
        runs: &Default::default(),
        now,
        node_timeout: chrono::Duration::seconds(30),
        last_schedule_times: &BTreeMap::new(),
        secrets: &vless::GeneratedSecrets::default(),
        traffic: &vless::TrafficState::default(),
        memo: None,
    })
}

/// The source holding `yaml` after `before`: objects whose document did
/// not change are handed over as the same allocation, as the dir source
/// does for an unchanged file.
pub(crate) fn snapshot_after(before: &SourceSnapshot, yaml: &str) -> SourceSnapshot {
    let mut source = snapshot(yaml);
    source.objects = source
        .objects
        .into_iter()
        .map(|(key, sourced)| match before.objects.get(&key) {
            Some(old) if old.object.to_value() == sourced.object.to_value() => (key, old.clone()),
            _ => (key, sourced),
        })
        .collect();
    source
}

/// `uid-1`, `uid-2`, … in the order objects are first seen (key order).
/// Fails unless two plans agree on everything the controller acts on
/// (baselines as sets: their order carries no meaning).
pub(crate) fn assert_same_plan(got: &Plan, want: &Plan) {
    let texts = |plan: &Plan| {
        plan.statuses
            .iter()
            .map(|(key, raw)| (key.clone(), raw.get().to_owned()))
            .collect::<Vec<_>>()
    };
    let (got_texts, want_texts) = (texts(got), texts(want));
    if got_texts != want_texts {
        let first = got_texts
            .iter()
            .zip(&want_texts)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("got {a:?}\nwant {b:?}"));
        panic!(
            "statuses differ ({} vs {} objects); first difference:\n{}",
            got_texts.len(),
            want_texts.len(),
            first.unwrap_or_default()
        );
    }
    assert_eq!(got.phase_counts, want.phase_counts, "phase counts differ");
    assert_eq!(got.assignments, want.assignments, "assignments differ");
    assert_eq!(got.run_changes, want.run_changes, "run changes differ");
    assert_eq!(got.stale_runs, want.stale_runs, "stale runs differ");
    assert_eq!(got.wake_at, want.wake_at, "wake times differ");
    let sorted = |plan: &Plan| {
        let mut baselines = plan.traffic_baselines.clone();
        baselines.sort_by(|a, b| a.key_uid.cmp(&b.key_uid));
        baselines
    };
    assert_eq!(sorted(got), sorted(want), "baselines differ");
    assert_eq!(
        got.stale_baselines, want.stale_baselines,
        "stale baselines differ"
    );
}

pub(crate) fn uids() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("uid-{n}")
    }
}

#[test]
fn kinds_without_reconciler_are_stalled_not_implemented_and_secrets_have_no_status() {
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let yaml = format!("{NODE_AND_SECRET}---\n{SOMNYTOO}");
    let (world, _) = GenerationBook::default().build_world(&snapshot(&yaml), now, uids());
    let plan = plan_of(&world, &Statuses::new(), now);
    assert_eq!(
        plan.statuses.len(),
        2,
        "the VeilNode and the ProtocolServer have statuses"
    );
    let key_status = plan
        .statuses
        .iter()
        .find(|(k, _)| k.kind == Kind::ProtocolServer)
        .map(|(_, s)| json(s))
        .unwrap();
    let stalled = condition(&key_status, "Stalled");
    assert_eq!(stalled["status"], "True");
    assert_eq!(stalled["reason"], "NotImplemented");
    assert_eq!(key_status["observedGeneration"], 1);
}

#[test]
fn a_declared_node_without_agent_is_not_ready_not_registered() {
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let (world, _) = GenerationBook::default().build_world(&snapshot(NODE_AND_SECRET), now, uids());
    let plan = plan_of(&world, &Statuses::new(), now);
    let status = json(plan.statuses.values().next().unwrap());
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "NotRegistered");
}

fn json(raw: &serde_json::value::RawValue) -> serde_json::Value {
    serde_json::from_str(raw.get()).unwrap()
}

fn condition<'a>(status: &'a serde_json::Value, type_: &str) -> &'a serde_json::Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

const SOMNYTOO: &str = "
apiVersion: veil.dev/v1alpha1
kind: ProtocolServer
metadata:
  name: somny
spec:
  protocol: somnytoo
  port: 9000
  somnytoo:
    pskSecretRef: {name: psk, key: key}
";

#[test]
fn unchanged_world_replans_to_identical_statuses() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let t1 = Utc.with_ymd_and_hms(2026, 11, 23, 13, 0, 0).unwrap();
    let mut book = GenerationBook::default();
    let (world, _) = book.build_world(&snapshot(NODE_AND_SECRET), t0, uids());
    let first = plan_of(&world, &Statuses::new(), t0);
    let (world, changes) = book.build_world(&snapshot(NODE_AND_SECRET), t1, uids());
    assert!(changes.is_empty(), "nothing changed, nothing to persist");
    let second = plan_of(&world, &first.statuses, t1);
    let texts =
        |p: &Plan| -> Vec<String> { p.statuses.values().map(|s| s.get().to_owned()).collect() };
    assert_eq!(texts(&first), texts(&second), "transition times are kept");
}

#[test]
fn generation_increments_only_when_spec_changes() {
    let t = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let mut book = GenerationBook::default();
    let (world, changes) = book.build_world(&snapshot(NODE_AND_SECRET), t, uids());
    assert_eq!(changes.upserts.len(), 2);
    let node = |w: &crate::world::World| {
        w.of_kind(Kind::VeilNode)
            .next()
            .unwrap()
            .1
            .object
            .meta()
            .generation
    };
    assert_eq!(node(&world), Some(1));

    let relabelled = NODE_AND_SECRET.replace(
        "  name: edge-1\n",
        "  name: edge-1\n  labels:\n    zone: a\n",
    );
    let (world, changes) = book.build_world(&snapshot(&relabelled), t, uids());
    assert!(changes.is_empty(), "labels are metadata, not spec");
    assert_eq!(node(&world), Some(1));

    let cordoned = NODE_AND_SECRET.replace("cordoned: false", "cordoned: true");
    let (world, changes) = book.build_world(&snapshot(&cordoned), t, uids());
    assert_eq!(changes.upserts.len(), 1);
    assert_eq!(node(&world), Some(2));
    let plan = plan_of(&world, &Statuses::new(), t);
    let status = json(plan.statuses.values().next().unwrap());
    assert_eq!(status["observedGeneration"], 2);
}

#[test]
fn an_object_handed_over_again_unchanged_is_reused_as_built() {
    let t = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let mut book = GenerationBook::default();
    let source = snapshot(NODE_AND_SECRET);
    let (first, _) = book.build_world(&source, t, uids());
    let (second, changes) = book.build_world(&source, t + chrono::Duration::hours(1), uids());
    assert!(changes.is_empty());
    for (key, object) in &first.objects {
        assert!(
            Arc::ptr_eq(&object.object, &second.objects[key].object),
            "{key} was built again"
        );
    }
    // The same spec in a new allocation (the file read again) is built
    // again, to the same result.
    let node = first.of_kind(Kind::VeilNode).next().unwrap().0.clone();
    let (third, changes) = book.build_world(&snapshot(NODE_AND_SECRET), t, uids());
    assert!(changes.is_empty());
    assert!(!Arc::ptr_eq(
        &first.objects[&node].object,
        &third.objects[&node].object
    ));
    assert_eq!(
        first.objects[&node].object.to_value(),
        third.objects[&node].object.to_value()
    );
    // The same allocation at another place (lines moved) gets its new origin.
    let mut moved = snapshot(NODE_AND_SECRET);
    let (fourth, _) = book.build_world(&moved, t, uids());
    moved.objects.get_mut(&node).unwrap().origin.line += 3;
    let (fifth, changes) = book.build_world(&moved, t, uids());
    assert!(changes.is_empty());
    assert_ne!(fourth.objects[&node].origin, fifth.objects[&node].origin);
    // A changed spec is a new generation, as always.
    let cordoned = NODE_AND_SECRET.replace("cordoned: false", "cordoned: true");
    let (sixth, changes) = book.build_world(&snapshot(&cordoned), t, uids());
    assert_eq!(changes.upserts.len(), 1);
    assert_eq!(sixth.objects[&node].object.meta().generation, Some(2));
}

#[test]
fn of_kind_yields_exactly_the_objects_of_that_kind_in_order() {
    let t = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let yaml = format!(
        "{NODE_AND_SECRET}---
apiVersion: veil.dev/v1alpha1
kind: Runner
metadata: {{name: b}}
spec: {{}}
---
apiVersion: veil.dev/v1alpha1
kind: Runner
metadata: {{name: a, namespace: zz}}
spec: {{}}
---
apiVersion: veil.dev/v1alpha1
kind: Runner
metadata: {{name: a}}
spec: {{}}
"
    );
    let (world, _) = GenerationBook::default().build_world(&snapshot(&yaml), t, uids());
    let names = |kind| {
        world
            .of_kind(kind)
            .map(|(key, _)| format!("{}/{}", key.namespace, key.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(Kind::Runner), ["default/a", "default/b", "zz/a"]);
    assert_eq!(names(Kind::VeilNode), ["/edge-1"]);
    assert_eq!(names(Kind::Secret), ["default/psk"]);
    assert!(names(Kind::Strategy).is_empty());
}

#[test]
fn absorbed_book_changes_keep_the_later_change_of_a_key() {
    use crate::records::{ObjectRecord, ObjectRef};
    use crate::world::BookChanges;
    let reference = |name: &str| ObjectRef {
        kind: "VlessKey".into(),
        namespace: "default".into(),
        name: name.into(),
    };
    let record = |name: &str, generation| ObjectRecord {
        key: reference(name),
        uid: format!("uid-{name}"),
        generation,
        spec_hash: String::new(),
        created_at: Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, 0).unwrap(),
    };
    let mut pending = BookChanges::default();
    pending.absorb(BookChanges {
        upserts: vec![record("a", 1), record("b", 1)],
        deletes: vec![reference("c")],
    });
    pending.absorb(BookChanges {
        upserts: vec![record("a", 2), record("c", 1)],
        deletes: vec![reference("b")],
    });
    let upserted: Vec<_> = pending
        .upserts
        .iter()
        .map(|r| (r.key.name.as_str(), r.generation))
        .collect();
    assert_eq!(upserted, [("a", 2), ("c", 1)]);
    assert_eq!(pending.deletes, [reference("b")]);
}

#[test]
fn removed_objects_are_deleted_from_the_book() {
    let t = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let mut book = GenerationBook::default();
    book.build_world(&snapshot(NODE_AND_SECRET), t, uids());
    let (world, changes) = book.build_world(&SourceSnapshot::default(), t, uids());
    assert!(world.objects.is_empty());
    assert_eq!(changes.deletes.len(), 2);
}

/// The agent of `edge-1`, registered at `registered_at`, last heard from at `last_seen`.
fn edge_1_seen(
    registered_at: chrono::DateTime<Utc>,
    last_seen: chrono::DateTime<Utc>,
) -> BTreeMap<String, crate::agents::NodeObservation> {
    let registration: veil_crds::wire::RegisterRequest =
        serde_json::from_value(serde_json::json!({
            "node": "edge-1", "os": "linux", "arch": "x86_64", "agentVersion": "test",
        }))
        .unwrap();
    BTreeMap::from([(
        "edge-1".to_owned(),
        crate::agents::NodeObservation::registered(registration, registered_at, last_seen),
    )])
}

#[test]
fn heartbeats_rewrite_a_node_status_only_every_few_minutes() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let (world, _) = GenerationBook::default().build_world(&snapshot(NODE_AND_SECRET), t0, uids());
    let seen = |at| edge_1_seen(t0, at);
    let pass = |previous: &Statuses, at| {
        plan(&PlanInputs {
            world: &world,
            previous,
            nodes: &seen(at),
            runs: &Default::default(),
            now: at,
            node_timeout: chrono::Duration::seconds(30),
            last_schedule_times: &BTreeMap::new(),
            secrets: &vless::GeneratedSecrets::default(),
            traffic: &vless::TrafficState::default(),
            memo: None,
        })
        .statuses
    };
    let first = pass(&Statuses::new(), t0);
    // A heartbeat 10 s later changes nothing in the status text.
    let second = pass(&first, t0 + chrono::Duration::seconds(10));
    let texts = |s: &Statuses| {
        s.values()
            .map(|raw| raw.get().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&first), texts(&second));
    // After the write interval the heartbeat time moves on.
    let later = t0 + nodes::HEARTBEAT_WRITE_INTERVAL + chrono::Duration::seconds(1);
    let third = pass(&second, later);
    let status = json(third.values().next().unwrap());
    assert_eq!(status["lastHeartbeat"], crate::world::timestamp(later));
    assert_eq!(condition(&status, "Ready")["status"], "True");
}

#[test]
fn a_node_whose_agent_cannot_write_its_journal_says_so_and_clears_it() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let (world, _) = GenerationBook::default().build_world(&snapshot(NODE_AND_SECRET), t0, uids());
    let pass = |previous: &Statuses, fault: Option<veil_crds::wire::JournalFault>, memo| {
        let mut nodes = edge_1_seen(t0, t0);
        if let Some(observation) = nodes.get_mut("edge-1") {
            observation.journal_fault = fault;
        }
        plan(&PlanInputs {
            world: &world,
            previous,
            nodes: &nodes,
            runs: &Default::default(),
            now: t0,
            node_timeout: chrono::Duration::seconds(30),
            last_schedule_times: &BTreeMap::new(),
            secrets: &vless::GeneratedSecrets::default(),
            traffic: &vless::TrafficState::default(),
            memo,
        })
    };
    let key = ObjectKey::new(Kind::VeilNode, "", "edge-1");
    let writable = pass(&Statuses::new(), None, None);
    let status = json(&writable.statuses[&key]);
    assert_eq!(condition(&status, "JournalWritable")["status"], "True");
    assert_eq!(condition(&status, "Ready")["status"], "True");
    let fault = veil_crds::wire::JournalFault {
        reason: "DiskFull".into(),
        message: "cannot write the agent journal: No space left on device".into(),
        held_in_memory: 3,
    };
    // Through the memo too: a changed fault is never a reused status.
    let full = pass(&writable.statuses, Some(fault), Some(&writable.memo));
    let status = json(&full.statuses[&key]);
    let journal = condition(&status, "JournalWritable");
    assert_eq!(journal["status"], "False");
    assert_eq!(journal["reason"], "DiskFull");
    assert!(
        journal["message"]
            .as_str()
            .unwrap()
            .contains("3 report(s) held in memory")
    );
    assert_eq!(
        condition(&status, "Ready")["status"],
        "True",
        "still reporting"
    );
    let cleared = pass(&full.statuses, None, Some(&full.memo));
    let status = json(&cleared.statuses[&key]);
    assert_eq!(condition(&status, "JournalWritable")["status"], "True");
}

#[test]
fn the_memo_reuses_unchanged_statuses_and_never_changes_one() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let (world, _) = GenerationBook::default().build_world(&snapshot(NODE_AND_SECRET), t0, uids());
    let seen_at = |last_seen| edge_1_seen(t0, last_seen);
    let pass = |previous: &Statuses, memo: Option<&StatusMemo>, last_seen, now| {
        plan(&PlanInputs {
            world: &world,
            previous,
            nodes: &seen_at(last_seen),
            runs: &Default::default(),
            now,
            node_timeout: chrono::Duration::seconds(30),
            last_schedule_times: &BTreeMap::new(),
            secrets: &vless::GeneratedSecrets::default(),
            traffic: &vless::TrafficState::default(),
            memo,
        })
    };
    let texts = |s: &Statuses| {
        s.values()
            .map(|raw| raw.get().to_owned())
            .collect::<Vec<_>>()
    };
    let key = ObjectKey::new(Kind::VeilNode, "", "edge-1");
    // Heard from, heard again, lost (Ready turns False at a new time), back.
    let s = chrono::Duration::seconds;
    let passes = [
        (t0, t0),
        (t0 + s(10), t0 + s(10)),
        (t0 + s(10), t0 + s(90)),
        (t0 + s(95), t0 + s(95)),
    ];
    let mut previous = Statuses::new();
    let mut memo = StatusMemo::default();
    for (i, (last_seen, now)) in passes.into_iter().enumerate() {
        let with_memo = pass(&previous, Some(&memo), last_seen, now);
        let without = pass(&previous, None, last_seen, now);
        assert_eq!(
            texts(&with_memo.statuses),
            texts(&without.statuses),
            "pass {i}"
        );
        if i == 1 {
            assert!(
                Arc::ptr_eq(&with_memo.statuses[&key], &previous[&key]),
                "an unchanged status is the remembered one, not a new copy"
            );
        }
        previous = with_memo.statuses;
        memo = with_memo.memo;
    }
    let status = json(&previous[&key]);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(
        condition(&status, "Ready")["lastTransitionTime"],
        crate::world::timestamp(t0 + s(95)),
        "the node's return is a transition"
    );

    // A previous status from elsewhere (say, the cluster) with other text:
    // the memo is not used for it.
    let mut foreign = previous.clone();
    foreign.insert(
        key.clone(),
        raw_status(&serde_json::json!({"phase": "Old"})),
    );
    let with_memo = pass(&foreign, Some(&memo), t0 + s(95), t0 + s(96));
    let without = pass(&foreign, None, t0 + s(95), t0 + s(96));
    assert_eq!(texts(&with_memo.statuses), texts(&without.statuses));
}

#[test]
fn selectors_match_the_veil_node_labels_never_the_agent_reported_ones() {
    let t = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let yaml = "
apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata:
  name: edge-1
  labels: {zone: a, role: db}
spec:
  labels: {role: edge}
";
    let (world, _) = GenerationBook::default().build_world(&snapshot(yaml), t, uids());
    let mut nodes = edge_1_seen(t, t);
    let claimed = BTreeMap::from([
        ("role".to_owned(), "office".to_owned()),
        ("tier".to_owned(), "gold".to_owned()),
    ]);
    nodes.get_mut("edge-1").unwrap().registration.labels = claimed.clone();
    let mut stranger = nodes["edge-1"].clone();
    stranger.registration.node = "stranger".into();
    nodes.insert("stranger".into(), stranger);
    let inputs = tasks::TaskInputs {
        world: &world,
        nodes: &nodes,
        runs: &Default::default(),
        now: t,
        node_timeout: chrono::Duration::seconds(30),
    };
    let views = tasks::node_views(&inputs, None);
    let expected = BTreeMap::from([
        ("role".to_owned(), "edge".to_owned()),
        ("zone".to_owned(), "a".to_owned()),
    ]);
    assert_eq!(
        *views["edge-1"].labels, expected,
        "spec.labels win over metadata.labels"
    );
    assert!(
        views["stranger"].labels.is_empty(),
        "an agent without a VeilNode has no labels, whatever it claims"
    );
    // The claimed labels are shown in status, only there.
    let status = nodes::node_status(
        Some(&views["edge-1"]),
        0,
        chrono::Duration::seconds(30),
        None,
    )
    .0;
    assert_eq!(status["reportedLabels"], serde_json::json!(claimed));
}

mod runners;
mod tasks_incremental;

/// `plan` stays pure: outside its tests, no file of it reaches the store,
/// the sinks, the API, the sources or the controller (it reads plain data
/// from `world`, `records` and the agents' observations).
#[test]
fn plan_imports_nothing_from_store_sink_api_source_or_controller() {
    fn rust_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "tests" {
                    rust_files(&path, out);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" {
                out.push(path);
            }
        }
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join("plan.rs")];
    rust_files(&src.join("plan"), &mut files);
    assert!(files.len() > 10, "{files:?}");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            for module in ["store", "sink", "api", "source", "controller"] {
                if line.contains(&format!("crate::{module}")) {
                    found.push(format!("{}:{}: {line}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "plan must stay pure:\n{}",
        found.join("\n")
    );
}
