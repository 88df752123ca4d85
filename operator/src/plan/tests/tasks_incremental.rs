//! The incremental planner against the reference for tasks: random
//! histories of TaskRuns created, cancelled and deleted (some made by a
//! Schedule), agents reporting them Running and finished, late log lines
//! on finished runs, Runners and VeilNode labels edited (one node never
//! has an agent), agents coming and
//! going silent, clock steps past the node timeout, failed writes of run
//! states and statuses replaced from outside. After every step the incremental plan
//! equals the plan from scratch in every status, phase count, run change,
//! stale run and assignment.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::agents::NodeObservation;
use crate::records::{RunStateRecord, RunStates};

const SLOTS: usize = 6;
/// VeilNodes; the third never gets an agent (a quiet node).
const NODES: [&str; 3] = ["edge-1", "edge-2", "edge-3"];
const NAMESPACES: [&str; 2] = ["team-a", "team-b"];

#[derive(Clone, Debug)]
struct RunSpec {
    namespace: usize,
    ansible: bool,
    cancel: bool,
    /// Made by the Schedule `nightly` (team-a only).
    scheduled: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Run(usize, Option<RunSpec>),
    /// The agent of the run's node reports a phase (0 Running, 1
    /// Succeeded, 2 Failed).
    Report(usize, u8),
    /// A log line for the run (finished or not).
    Log(usize),
    Heartbeat(usize),
    /// A VeilNode's label: 0 none, 1 `role: edge`, 2 `role: other`.
    Label(usize, u8),
    /// The Runner `deploy` in team-a: absent, or its capacity.
    Runner(Option<u32>),
    Clock(i64),
    StalePrevious(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let spec = (
        0..2usize,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
        any::<bool>(),
    )
        .prop_map(|(namespace, ansible, cancel, scheduled)| RunSpec {
            namespace,
            ansible,
            cancel,
            scheduled,
        });
    prop_oneof![
        4 => (0..SLOTS, proptest::option::weighted(0.85, spec)).prop_map(|(i, s)| Op::Run(i, s)),
        5 => (0..SLOTS, 0..3u8).prop_map(|(i, p)| Op::Report(i, p)),
        1 => (0..SLOTS).prop_map(Op::Log),
        2 => (0..2usize).prop_map(Op::Heartbeat),
        1 => (0..NODES.len(), 0..3u8).prop_map(|(i, l)| Op::Label(i, l)),
        1 => proptest::option::weighted(0.8, 1..3u32).prop_map(Op::Runner),
        1 => prop::sample::select(vec![1i64, 20, 45]).prop_map(Op::Clock),
        1 => (0..SLOTS).prop_map(Op::StalePrevious),
    ]
}

/// What a history edits; its YAML is the source.
struct Model {
    runs: [Option<RunSpec>; SLOTS],
    labels: [u8; 3],
    runner: Option<u32>,
}

impl Model {
    fn yaml(&self) -> String {
        let mut yaml = String::new();
        for (node, label) in NODES.iter().zip(self.labels) {
            let labels = match label {
                1 => "{role: edge}",
                2 => "{role: other}",
                _ => "{}",
            };
            yaml.push_str(&format!(
                "apiVersion: veil.dev/v1alpha1\nkind: VeilNode\nmetadata: {{name: {node}}}\nspec: {{labels: {labels}}}\n---\n"
            ));
        }
        if let Some(capacity) = self.runner {
            yaml.push_str(&format!(
                "apiVersion: veil.dev/v1alpha1\nkind: Runner\nmetadata: {{name: deploy, namespace: team-a}}\nspec:\n  nodeSelector: {{matchLabels: {{role: edge}}}}\n  maxParallelTasks: {capacity}\n  executors: [shell, ansible]\n---\n"
            ));
        }
        yaml.push_str("apiVersion: veil.dev/v1alpha1\nkind: Runner\nmetadata: {name: any, namespace: team-b}\nspec:\n  nodeSelector: {}\n---\n");
        yaml.push_str("apiVersion: veil.dev/v1alpha1\nkind: Schedule\nmetadata: {name: nightly, namespace: team-a}\nspec:\n  schedule: \"0 3 * * *\"\n  suspend: true\n  task: {executor: shell, shell: {command: [date]}}\n---\n");
        for (i, spec) in self.runs.iter().enumerate() {
            let Some(spec) = spec else { continue };
            let namespace = NAMESPACES[spec.namespace];
            let scheduled = spec.scheduled && spec.namespace == 0;
            let meta = if scheduled {
                format!(
                    "{{name: r{i}, namespace: {namespace}, labels: {{veil.dev/schedule: nightly}}, annotations: {{veil.dev/scheduled-time: \"2026-12-0{}T03:00:00Z\"}}}}",
                    i % 7 + 1
                )
            } else {
                format!("{{name: r{i}, namespace: {namespace}}}")
            };
            let executor = if spec.ansible {
                "ansible, ansible: {playbook: site.yml}"
            } else {
                "shell, shell: {command: [date]}"
            };
            yaml.push_str(&format!(
                "apiVersion: veil.dev/v1alpha1\nkind: TaskRun\nmetadata: {meta}\nspec: {{cancel: {}, task: {{executor: {executor}}}}}\n---\n",
                spec.cancel
            ));
        }
        yaml
    }
}

/// The controller's side of a history: world, agents, run book, statuses.
struct Case {
    book: crate::world::GenerationBook,
    source: crate::source::SourceSnapshot,
    world: World,
    uids: u32,
    nodes: BTreeMap<String, NodeObservation>,
    runs: RunStates,
    previous: Statuses,
    memo: StatusMemo,
    planner: Planner,
    now: DateTime<Utc>,
}

impl Case {
    /// The source now holds `yaml`; unchanged documents stay the same
    /// allocation, as the dir source hands them over.
    fn edit(&mut self, yaml: &str) {
        let source = crate::plan::tests::snapshot_after(&self.source, yaml);
        let mut n = self.uids;
        let (world, _) = self.book.build_world(&source, self.now, || {
            n += 1;
            format!("uid-{n}")
        });
        self.uids = n;
        self.world = world;
        self.source = source;
    }

    fn heartbeat(&mut self, node: &str) {
        let now = self.now;
        let observation = self.nodes.entry(node.to_owned()).or_insert_with(|| {
            let registration = serde_json::from_value(json!({
                "node": node, "os": "linux", "arch": "x86_64", "agentVersion": "test",
                "capabilities": [{"name": "sh", "path": "/bin/sh"}],
            }))
            .unwrap();
            NodeObservation::registered(registration, now, now)
        });
        observation.last_seen = now;
    }

    /// The run state of slot `i`'s TaskRun.
    fn state(&self, i: usize) -> Option<(String, RunStateRecord)> {
        let object = self
            .world
            .of_kind(Kind::TaskRun)
            .find(|(key, _)| key.name == format!("r{i}"))?
            .1;
        let uid = object.object.meta().uid.clone()?;
        let state = self.runs.get(&uid)?;
        Some((uid, (**state).clone()))
    }

    /// An agent's report of slot `i`'s run, as the run book applies it.
    fn report(&mut self, i: usize, phase: u8) {
        let Some((uid, mut state)) = self.state(i) else {
            return;
        };
        if state.node.is_none() || crate::runs::is_finished(&state.phase) {
            return;
        }
        state.phase = ["Running", "Succeeded", "Failed"][usize::from(phase)].to_owned();
        if phase > 0 {
            state.finished_at = Some(self.now);
            state.exit_code = Some(i32::from(phase) - 1);
        } else {
            state.started_at = Some(self.now);
        }
        state.updated_at = self.now;
        self.runs.insert(uid, Arc::new(state));
    }

    fn log(&mut self, i: usize) {
        if let Some((uid, mut state)) = self.state(i) {
            state.log_tail.push(format!("line at {}", self.now));
            state.updated_at = self.now;
            self.runs.insert(uid, Arc::new(state));
        }
    }

    /// Plans incrementally and from scratch, checks both agree, and acts
    /// as the controller does (run changes stored unless `lag`).
    fn step(&mut self, lag: bool) {
        let times = BTreeMap::new();
        let secrets = vless::GeneratedSecrets::default();
        let traffic = vless::TrafficState::default();
        let inputs = |memo| PlanInputs {
            world: &self.world,
            previous: &self.previous,
            nodes: &self.nodes,
            runs: &self.runs,
            now: self.now,
            node_timeout: TimeDelta::seconds(30),
            last_schedule_times: &times,
            secrets: &secrets,
            traffic: &traffic,
            memo,
        };
        let want = plan(&inputs(None));
        let got = self.planner.step(&inputs(Some(&self.memo)));
        assert_same_plan(&got, &want);
        if !lag {
            for change in &got.run_changes {
                self.runs
                    .insert(change.uid.clone(), Arc::new(change.clone()));
            }
            for uid in &got.stale_runs {
                self.runs.remove(uid);
            }
        }
        self.previous = got.statuses;
        self.memo = got.memo;
    }
}

/// Each step: an op, and whether the pass's run changes and stale-run
/// removals fail to be stored (the next pass must find them again).
fn run(ops: Vec<(Op, bool)>) {
    let now = "2026-12-07T12:00:00Z".parse().unwrap();
    let mut model = Model {
        runs: Default::default(),
        labels: [1, 1, 2],
        runner: Some(1),
    };
    let mut case = Case {
        book: Default::default(),
        source: Default::default(),
        world: World::default(),
        uids: 0,
        nodes: BTreeMap::new(),
        runs: RunStates::new(),
        previous: Statuses::new(),
        memo: StatusMemo::default(),
        planner: Planner::default(),
        now,
    };
    case.heartbeat("edge-1");
    case.edit(&model.yaml());
    case.step(false);
    for (op, lag) in ops {
        match op {
            Op::Run(i, spec) => model.runs[i] = spec,
            Op::Report(i, phase) => case.report(i, phase),
            Op::Log(i) => case.log(i),
            Op::Heartbeat(node) => case.heartbeat(NODES[node]),
            Op::Label(node, label) => model.labels[node] = label,
            Op::Runner(runner) => model.runner = runner,
            Op::Clock(seconds) => case.now += TimeDelta::seconds(seconds),
            Op::StalePrevious(i) => {
                let key = NAMESPACES
                    .iter()
                    .map(|ns| ObjectKey::new(Kind::TaskRun, ns, &format!("r{i}")))
                    .find(|key| case.previous.contains_key(key));
                if let Some(key) = key {
                    let text = case.previous[&key].get().to_owned();
                    let copy = serde_json::value::RawValue::from_string(text).unwrap();
                    case.previous.insert(key, Arc::from(copy));
                }
            }
        }
        case.edit(&model.yaml());
        case.step(lag);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// After every step of a random history the incremental plan of the
    /// tasks equals the plan from scratch.
    #[test]
    fn incremental_task_planning_equals_the_full_plan(
        ops in proptest::collection::vec((op(), prop::bool::weighted(0.15)), 1..40)
    ) {
        run(ops);
    }
}
