//! Settled TaskRuns: the incremental planner's record of finished runs
//! whose status stands, so a pass with 10,000 runs in history plans only
//! the runs that are not finished or whose inputs changed.
//!
//! A finished run is never placed again and counts on no node, so what it
//! adds to a pass is its own status, its Runner's counts and its
//! Schedule's history. Its status is built from its TaskRun object, its
//! run state and the Runner that selected its node; it is kept while none
//! of those changed:
//!
//! | change since the last pass                      | TaskRuns planned again      |
//! |-------------------------------------------------|-----------------------------|
//! | the TaskRun object (new, changed, deleted)      | it                          |
//! | its run state (a late log line, a new record)   | it                          |
//! | a Runner or VeilNode, the registered nodes      | every one (a Runner's choice may move) |
//! | a previous status not the one the planner made  | every one                   |
//!
//! [`super::Scope::full`] (every TaskRun) stays the reference: the property
//! test in `plan/tests/tasks_incremental.rs` checks both give the same plan.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;

use super::{Scope, oldest_first};
use crate::agents::NodeObservation;
use crate::plan::nodes::RunCounts;
use crate::plan::schedules::run_summary;
use crate::records::RunStates;
use crate::runs::is_finished;
use crate::schedule::RunSummary;
use crate::world::{World, WorldObjects, changed_keys};

/// What the incremental planner knows of the TaskRuns between passes.
#[derive(Default)]
pub struct SettledRuns {
    /// Finished TaskRuns whose status stands.
    entries: HashMap<ObjectKey, Settled>,
    /// The world's other TaskRuns: planned every pass.
    open: BTreeSet<ObjectKey>,
    /// Every world TaskRun by uid.
    uids: HashMap<String, ObjectKey>,
    /// Run states whose TaskRun was gone at the last pass.
    stale: BTreeSet<String>,
    /// The run states and registered nodes the last pass saw.
    runs: RunStates,
    nodes: Vec<String>,
    /// Whether a pass ran since the cache was made or cleared.
    primed: bool,
    /// Settled TaskRuns per status phase.
    phases: HashMap<Arc<str>, i64>,
    /// Settled runs per Runner (namespace, name) by node and phase.
    runners: HashMap<(String, String), RunCounts>,
    /// Settled runs per Schedule (namespace, name), by TaskRun.
    schedules: HashMap<(String, String), BTreeMap<ObjectKey, RunSummary>>,
}

/// What else [`SettledRuns::scope`] follows.
pub struct Context<'a> {
    /// The world's objects the last pass saw.
    pub before: &'a WorldObjects,
    /// The world's keys that changed since then.
    pub changed: &'a [ObjectKey],
    /// The registered agents.
    pub nodes: &'a BTreeMap<String, NodeObservation>,
    /// Whether the previous statuses are the ones the planner produced.
    pub made: bool,
}

/// One settled TaskRun: what it contributes to the pass.
struct Settled {
    phase: Arc<str>,
    /// Its Runner's name (same namespace) and its run state's node.
    runner: Option<(String, String)>,
    /// Its Schedule's name and its summary there, when a Schedule made it.
    schedule: Option<(String, RunSummary)>,
}

impl SettledRuns {
    /// Brings the cache up to `world` and `runs` and returns the TaskRuns
    /// to plan: the open ones and the stale run states. `made`: the
    /// previous statuses are the ones the planner last produced.
    pub fn scope<'w>(
        &mut self,
        world: &'w World,
        runs: &RunStates,
        context: Context<'_>,
    ) -> Scope<'w> {
        let Context {
            before,
            changed,
            nodes,
            made,
        } = context;
        let names: Vec<String> = nodes.keys().cloned().collect();
        let runners_moved = changed
            .iter()
            .any(|key| matches!(key.kind, Kind::Runner | Kind::VeilNode));
        if !self.primed || !made || runners_moved || names != self.nodes {
            self.open_all();
        }
        let mut candidates: BTreeSet<String> = std::mem::take(&mut self.stale);
        for key in changed.iter().filter(|key| key.kind == Kind::TaskRun) {
            if let Some(old) = self.follow(key, before, &world.objects) {
                candidates.insert(old);
            }
        }
        let changed_runs: Vec<String> = changed_keys(&self.runs, runs).cloned().collect();
        for uid in changed_runs {
            if let Some(key) = self.uids.get(&uid).cloned() {
                self.reopen(&key);
            }
            candidates.insert(uid);
        }
        self.stale = candidates
            .into_iter()
            .filter(|uid| runs.contains_key(uid) && !self.uids.contains_key(uid))
            .collect();
        self.nodes = names;
        self.primed = true;
        let open = oldest_first(
            self.open
                .iter()
                .filter_map(|key| world.objects.get_key_value(key)),
        );
        let mut uids: Vec<String> = open.iter().map(|(_, uid, _)| (*uid).to_owned()).collect();
        uids.extend(self.stale.iter().cloned());
        Scope {
            runs: open,
            open: Some(uids),
            stale: self.stale.iter().cloned().collect(),
        }
    }

    /// Follows the TaskRun `key`, which changed from `before` to `objects`:
    /// planned this pass if it is still there, else gone. Returns the uid
    /// it had (its run state may now be stale).
    fn follow(
        &mut self,
        key: &ObjectKey,
        before: &WorldObjects,
        objects: &WorldObjects,
    ) -> Option<String> {
        let old = uid_of(before, key);
        if let Some(uid) = &old {
            self.uids.remove(uid);
        }
        self.reopen(key);
        if let Some(uid) = uid_of(objects, key) {
            self.uids.insert(uid, key.clone());
        }
        if objects.contains_key(key) {
            self.open.insert(key.clone());
        } else {
            self.open.remove(key);
        }
        old
    }

    /// After the pass: every open TaskRun whose run state (as the pass
    /// left it, in `runs`) is finished settles. `runner_of` gives each
    /// placed run's Runner.
    pub fn settle(
        &mut self,
        world: &World,
        runs: &RunStates,
        runner_of: impl Fn(&str) -> Option<String>,
    ) {
        let open = std::mem::take(&mut self.open);
        for key in open {
            let Some(settled) = self.settled(world, runs, &key, &runner_of) else {
                self.open.insert(key);
                continue;
            };
            self.count(&key, &settled, 1);
            self.entries.insert(key, settled);
        }
        self.runs = runs.clone();
    }

    /// The open TaskRuns (planned this pass), in key order.
    pub fn open(&self) -> impl Iterator<Item = &ObjectKey> {
        self.open.iter()
    }

    /// How many settled TaskRuns have each phase.
    pub fn phase_counts(&self) -> impl Iterator<Item = (&Arc<str>, i64)> {
        self.phases.iter().map(|(phase, count)| (phase, *count))
    }

    /// The settled runs of a Runner, by node and phase.
    pub fn runner_counts(&self, namespace: &str, runner: &str) -> Option<&RunCounts> {
        self.runners.get(&(namespace.to_owned(), runner.to_owned()))
    }

    /// The settled runs a Schedule made.
    pub fn schedule_runs(
        &self,
        namespace: &str,
        schedule: &str,
    ) -> impl Iterator<Item = (&ObjectKey, &RunSummary)> {
        self.schedules
            .get(&(namespace.to_owned(), schedule.to_owned()))
            .into_iter()
            .flat_map(|runs| runs.iter())
    }

    /// `key` as settled, when its run state is finished.
    fn settled(
        &self,
        world: &World,
        runs: &RunStates,
        key: &ObjectKey,
        runner_of: &impl Fn(&str) -> Option<String>,
    ) -> Option<Settled> {
        let object = world.objects.get(key)?;
        let uid = object.object.meta().uid.clone()?;
        let state = runs.get(&uid)?;
        if !is_finished(&state.phase) {
            return None;
        }
        let runner = runner_of(&uid).zip(state.node.clone());
        let meta = object.object.meta();
        let schedule = schedule_of(meta).zip(run_summary(key, meta, Some(state)));
        Some(Settled {
            phase: Arc::from(state.phase.as_str()),
            runner,
            schedule,
        })
    }

    /// Adds (`by` 1) or takes away (`by` -1) a settled run's part in the
    /// phase, Runner and Schedule tallies.
    fn count(&mut self, key: &ObjectKey, settled: &Settled, by: i64) {
        let phase = self.phases.entry(Arc::clone(&settled.phase)).or_default();
        *phase += by;
        if *phase == 0 {
            self.phases.remove(&settled.phase);
        }
        if let Some((runner, node)) = &settled.runner {
            let group = (key.namespace.clone(), runner.clone());
            let counts = self.runners.entry(group.clone()).or_default();
            counts.add(node, &settled.phase, by);
            if counts.is_empty() {
                self.runners.remove(&group);
            }
        }
        if let Some((schedule, summary)) = &settled.schedule {
            let group = (key.namespace.clone(), schedule.clone());
            let members = self.schedules.entry(group.clone()).or_default();
            if by > 0 {
                members.insert(key.clone(), summary.clone());
            } else {
                members.remove(key);
            }
            if members.is_empty() {
                self.schedules.remove(&group);
            }
        }
    }

    /// `key` is no longer settled (it is planned this pass, if it exists).
    fn reopen(&mut self, key: &ObjectKey) {
        if let Some(settled) = self.entries.remove(key) {
            self.count(key, &settled, -1);
            self.open.insert(key.clone());
        }
    }

    /// Every settled TaskRun is planned again.
    fn open_all(&mut self) {
        self.open.extend(self.entries.drain().map(|(key, _)| key));
        self.phases.clear();
        self.runners.clear();
        self.schedules.clear();
    }
}

/// The uid of the TaskRun `key` in `objects`.
fn uid_of(objects: &WorldObjects, key: &ObjectKey) -> Option<String> {
    objects.get(key)?.object.meta().uid.clone()
}

/// The Schedule that made a TaskRun (its label).
fn schedule_of(meta: &ObjectMeta) -> Option<String> {
    meta.labels
        .as_ref()?
        .get(crate::plan::schedules::SCHEDULE_LABEL)
        .cloned()
}
