//! The controller in Kubernetes mode: the same pass as dir mode, with the
//! cluster as the home of statuses and Schedule-made TaskRuns.
//!
//! What differs from dir mode:
//! - objects keep the uid, generation and creation time the API server
//!   gave them (`observedGeneration` is `metadata.generation`);
//! - the statuses already in the cluster are adopted as "last written"
//!   when an object is first seen (after a start, or re-created under the
//!   same name), so a restart rewrites only what really changed and keeps
//!   condition transition times;
//! - statuses go to the [`crate::sink::KubeStatusWriter`], which retries
//!   until written; dir-mode leftovers in the store are ignored;
//! - TaskRuns are created and deleted in the cluster. Until the watch
//!   reports a created run it is kept here (so the next pass does not
//!   decide it again), and a deleted one is hidden until the watch reports
//!   it gone. A failed create or delete is not an error of the pass: the
//!   Schedule's time is not advanced, so the next pass — woken with
//!   backoff — decides the same action again;
//! - writes pass the [`WriteGate`] of leader election: a follower plans
//!   like the leader but writes nothing (its runs are refused before any
//!   request, and a run's name is derived from its Schedule and time, so
//!   a new leader adopts a run the old one made instead of making another).
//!   When the gate opens, the statuses in the cluster are adopted again as
//!   "last written" and the next pass — started at once — writes every one
//!   that differs from the plan;
//! - the transitions in a pass's status changes (old → new) become
//!   Kubernetes Events ([`KubeEvents`]), on the leader only. The old
//!   status is the adopted one after a start or a change of leader, so
//!   transitions from before are not reported again;
//! - the leader creates a VeilNode for every live registered agent that
//!   has none in the cluster ([`nodes_to_create`]); until the watch reports
//!   it, the node is not created again. A node whose agent is silent
//!   (NotReady) gets none, so a VeilNode deleted after its machine is gone
//!   stays deleted; one deleted while its agent is live comes back, as a
//!   kubelet's Node does;
//! - generated credentials are adopted from, and written to, Secrets owned
//!   by their objects ([`crate::credential_secrets`]; the rules are in
//!   `secrets.rs`): the leader submits, after each pass whose inputs
//!   changed, every Secret whose content differs from the cluster's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_json::value::RawValue;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;

use super::secrets::ClusterState;
use super::{Controller, ControllerError, generated_object};
use crate::agents::NodeObservation;
use crate::backoff::Backoff;
use crate::credential_secrets::CredentialSecrets;
use crate::credential_secrets::convert::{Adopted, adopted};
use crate::credential_secrets::desired::desired_secrets;
use crate::metrics::{KindLabel, SourceLabel};
use crate::plan::Statuses;
use crate::plan::schedules::ScheduleActions;
use crate::plan::vless::GeneratedSecrets;
use crate::sink::kube_events::Regarding;
use crate::sink::kube_events::transitions::{Severity, Transition, bounded, transitions};
use crate::sink::{
    KubeEvents, KubeStatusWriter, KubeTaskRuns, KubeVeilNodes, NodeCreated, NodeWriteError,
    StatusChange, StatusSink, TaskRunWriteError, WriteGate,
};
use crate::source::{SourceSnapshot, SourcedObject};

/// Delay before a pass retries a failed TaskRun or VeilNode write: 1 s,
/// doubling per failing pass, at most 30 s.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// Kubernetes mode's part of the controller state.
pub(super) struct KubeMode {
    runs: KubeTaskRuns,
    events: KubeEvents,
    cluster: ClusterObjects,
    /// Passes in a row with a failed TaskRun write.
    failures: u32,
    /// Open while this replica may write (leads).
    gate: WriteGate,
    /// Whether the gate was open at the last pass.
    leading: bool,
    /// Creates VeilNodes for registered agents.
    nodes: KubeVeilNodes,
    /// VeilNodes created (or found existing) that the watch has not reported yet.
    nodes_created: BTreeSet<String>,
    /// Passes in a row with a failed VeilNode create.
    node_failures: u32,
    /// The credentials Secrets; `None` until
    /// [`Controller::with_credential_secrets`].
    credentials: Option<CredentialSecrets>,
    /// What the credentials Secrets were last compared with.
    credentials_written: Option<CredentialInputs>,
}

/// What decides the credentials Secrets a pass wants: equal inputs want
/// equal Secrets, so the comparison is skipped. Generated values change
/// only with the world or the watched Secrets (`secrets.rs`); their counts
/// are kept as a guard.
struct CredentialInputs {
    world: std::sync::Arc<crate::world::World>,
    observed_version: u64,
    generated: (usize, usize),
    /// The statuses of ProtocolServers (public key, endpoints).
    servers: Vec<(ObjectKey, Arc<RawValue>)>,
}

impl PartialEq for CredentialInputs {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.world, &other.world)
            && self.observed_version == other.observed_version
            && self.generated == other.generated
            && self.servers.len() == other.servers.len()
            && self
                .servers
                .iter()
                .zip(&other.servers)
                .all(|((k1, s1), (k2, s2))| k1 == k2 && s1.get() == s2.get())
    }
}

impl KubeMode {
    /// The gate leader election opens; the run loop wakes when it flips.
    pub fn gate(&self) -> WriteGate {
        self.gate.clone()
    }

    /// Before a pass: on becoming the leader, forget what was adopted, so
    /// that this pass adopts the cluster's statuses again and writes every
    /// one that differs from the plan (the previous leader may have written
    /// others than this replica planned), and retry TaskRun writes at once.
    pub fn follow_gate(&mut self) -> bool {
        let open = self.gate.is_open();
        let became_leader = open && !self.leading;
        if became_leader {
            self.cluster.adopted.clear();
            self.cluster.adopted_version = 0;
            self.cluster.adopted_from = Default::default();
            self.failures = 0;
            self.node_failures = 0;
        }
        self.leading = open;
        became_leader
    }

    /// Whether this replica leads (as of the last [`KubeMode::follow_gate`]).
    pub fn is_leading(&self) -> bool {
        self.leading
    }

    /// A receiver woken when credentials Secrets change.
    pub fn credential_changes(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<crate::credential_secrets::Observed>> {
        self.credentials.as_ref().map(CredentialSecrets::changes)
    }

    /// The state of the credentials Secrets that decides a secrets pass;
    /// `None` without them.
    pub fn credentials_state(&self) -> Option<ClusterState> {
        let credentials = self.credentials.as_ref()?;
        let observed = credentials.observed();
        Some(ClusterState {
            listed: observed.listed,
            version: observed.version,
            leading: self.gate.is_open(),
        })
    }

    /// The values the watched Secrets hold, by owner uid.
    pub fn adoptable_secrets(&self) -> Adopted {
        self.credentials
            .as_ref()
            .map(|credentials| adopted(credentials.observed().secrets.values()))
            .unwrap_or_default()
    }

    /// On the leader: submits every credentials Secret the world calls for
    /// whose content differs from the cluster's. Skipped when nothing it
    /// depends on changed since the last call.
    pub fn write_credentials(
        &mut self,
        world: &std::sync::Arc<crate::world::World>,
        statuses: &Statuses,
        secrets: &GeneratedSecrets,
    ) {
        let Some(credentials) = &self.credentials else {
            return;
        };
        if !self.gate.is_open() {
            self.credentials_written = None;
            return;
        }
        let inputs = CredentialInputs {
            world: world.clone(),
            observed_version: credentials.observed().version,
            generated: (secrets.vless_ids.len(), secrets.reality_keys.len()),
            servers: statuses
                .iter()
                .filter(|(key, _)| key.kind == Kind::ProtocolServer)
                .map(|(key, status)| (key.clone(), status.clone()))
                .collect(),
        };
        if self.credentials_written.as_ref() == Some(&inputs) {
            return;
        }
        let wanted = desired_secrets(world, statuses, secrets);
        let differing: Vec<_> = {
            let observed = credentials.observed();
            wanted
                .into_iter()
                .filter(|desired| {
                    observed
                        .secrets
                        .get(&desired.name)
                        .is_none_or(|seen| seen.content != desired.content)
                })
                .collect()
        };
        for desired in differing {
            credentials.submit(desired);
        }
        self.credentials_written = Some(inputs);
    }

    /// TaskRuns to leave out of the world.
    pub fn hidden_runs(&self) -> &BTreeSet<ObjectKey> {
        &self.cluster.hidden
    }

    /// See [`ClusterObjects::forget_settled_runs`].
    pub fn forget_settled_runs(
        &mut self,
        snapshot: &SourceSnapshot,
        created: &mut BTreeMap<ObjectKey, SourcedObject>,
    ) {
        self.cluster.forget_settled_runs(snapshot, created);
    }

    /// See [`ClusterObjects::settle_adopted`].
    pub fn settle_adopted(&mut self, written: &mut Statuses, planned: &Statuses) {
        self.cluster.settle_adopted(written, planned);
    }

    /// The Schedules' events of a pass (`MissedSchedule`,
    /// `TooManyMissedTimes`, …) as Events on each Schedule; nothing unless
    /// this replica leads. `objects` gives the Schedules' uids.
    pub fn report_schedule_events(
        &self,
        events: &[(ObjectKey, crate::schedule::ScheduleEvent)],
        objects: &crate::source::SourceObjects,
    ) {
        if !self.events.is_open() {
            return;
        }
        for (key, event) in events {
            let severity = match event.type_ {
                crate::schedule::EventType::Normal => Severity::Normal,
                crate::schedule::EventType::Warning => Severity::Warning,
            };
            let regarding = Regarding {
                key: key.clone(),
                uid: objects
                    .get(key)
                    .and_then(|sourced| sourced.object.meta().uid.clone()),
            };
            let transition = Transition {
                severity,
                reason: event.reason,
                action: "Schedule",
                note: bounded(&event.message),
            };
            self.events.submit(&regarding, vec![transition]);
        }
    }

    /// Reports the transitions in `changes` (statuses about to be written)
    /// as Events, comparing each with its `old` status; nothing unless this
    /// replica leads. `objects` and `generated` give the objects' uids.
    pub fn report_transitions(
        &self,
        old: &Statuses,
        changes: &[StatusChange],
        objects: &crate::source::SourceObjects,
        generated: &BTreeMap<ObjectKey, SourcedObject>,
    ) {
        if !self.events.is_open() {
            return;
        }
        for (key, new) in changes {
            let Some(new) = new else { continue };
            let found = transitions(key.kind, old.get(key).map(|s| &**s), new);
            if found.is_empty() {
                continue;
            }
            let uid = objects
                .get(key)
                .or_else(|| generated.get(key))
                .and_then(|sourced| sourced.object.meta().uid.clone());
            let regarding = Regarding {
                key: key.clone(),
                uid,
            };
            self.events.submit(&regarding, found);
        }
    }

    /// See [`ClusterObjects::adopt_cluster_statuses`].
    pub fn adopt_cluster_statuses(
        &mut self,
        snapshot: &SourceSnapshot,
        created: &BTreeMap<ObjectKey, SourcedObject>,
        statuses: &mut Statuses,
    ) {
        self.cluster
            .adopt_cluster_statuses(snapshot, created, statuses);
    }
}

/// What the controller knows about cluster objects beyond the snapshot.
#[derive(Debug, Default)]
struct ClusterObjects {
    /// Per object, the uid whose cluster status was adopted.
    adopted: HashMap<ObjectKey, Option<String>>,
    /// The snapshot version statuses were last adopted from.
    adopted_version: u64,
    /// That snapshot's objects.
    adopted_from: crate::source::SourceObjects,
    /// TaskRuns deleted here that the watch still reports.
    hidden: BTreeSet<ObjectKey>,
    /// Objects whose cluster status was adopted in this pass.
    fresh: Vec<ObjectKey>,
}

impl ClusterObjects {
    /// Forgets created runs the watch now reports, and hidden runs it no
    /// longer reports: the snapshot speaks for both.
    fn forget_settled_runs(
        &mut self,
        snapshot: &SourceSnapshot,
        created: &mut BTreeMap<ObjectKey, SourcedObject>,
    ) {
        created.retain(|key, _| !snapshot.objects.contains_key(key));
        self.hidden.retain(|key| snapshot.objects.contains_key(key));
    }

    /// Takes the cluster's status as the last written one for every object
    /// seen for the first time (or with a new uid); an object without a
    /// status loses any status remembered under its name.
    fn adopt_cluster_statuses(
        &mut self,
        snapshot: &SourceSnapshot,
        created: &BTreeMap<ObjectKey, SourcedObject>,
        statuses: &mut Statuses,
    ) {
        if snapshot.version == self.adopted_version {
            return;
        }
        self.adopted_version = snapshot.version;
        // Only the objects that changed since the last adoption can be new
        // or carry a new uid: the source hands the others over as the same
        // allocation (a diff that skips what the two maps share).
        let changed: Vec<ObjectKey> =
            crate::world::changed_keys(&self.adopted_from, &snapshot.objects)
                .filter(|key| key.kind != Kind::Secret)
                .cloned()
                .collect();
        for key in changed {
            match snapshot.objects.get(&key) {
                Some(sourced) => self.adopt(&key, sourced, snapshot, statuses),
                // A created run the watch does not report yet stays.
                None if created.contains_key(&key) => {}
                None => {
                    self.adopted.remove(&key);
                }
            }
        }
        self.adopted_from = snapshot.objects.clone();
    }

    /// Adopts the cluster's status of `key` unless it was adopted for the
    /// same uid already.
    fn adopt(
        &mut self,
        key: &ObjectKey,
        sourced: &SourcedObject,
        snapshot: &SourceSnapshot,
        statuses: &mut Statuses,
    ) {
        let uid = sourced.object.meta().uid.as_ref();
        if self
            .adopted
            .get(key)
            .is_some_and(|adopted| adopted.as_ref() == uid)
        {
            return;
        }
        self.adopted.insert(key.clone(), uid.cloned());
        match snapshot.observed_statuses.get(key) {
            Some(status) => {
                statuses.insert(key.clone(), status.clone());
                self.fresh.push(key.clone());
            }
            None => {
                statuses.remove(key);
            }
        }
    }

    /// After planning: a status adopted in this pass that equals the planned
    /// one but for the `null` fields the API server drops (and key order)
    /// counts as written, so a restart does not rewrite every object.
    fn settle_adopted(&mut self, written: &mut Statuses, planned: &Statuses) {
        for key in self.fresh.drain(..) {
            let (Some(old), Some(new)) = (written.get(&key), planned.get(&key)) else {
                continue;
            };
            let parse = |raw: &RawValue| serde_json::from_str::<Value>(raw.get()).ok();
            if let (Some(old_value), Some(new_value)) = (parse(old), parse(new))
                && old_value == without_nulls(new_value)
            {
                written.insert(key, new.clone());
            }
        }
    }
}

/// `value` without `null` object members, at any depth (the API server
/// prunes them from custom resources).
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

impl Controller {
    /// Switches this controller to Kubernetes mode: statuses go to
    /// `statuses`, Schedule-made TaskRuns to `runs`, transitions to
    /// `events`, and the dir-mode
    /// statuses and runs loaded from the store are dropped (the cluster
    /// holds the truth). Call before [`Controller::run`].
    ///
    /// `gate` is the one `statuses`, `runs` and `events` write through: when it
    /// opens, a pass starts and re-adopts the cluster's statuses (see
    /// [`KubeMode::follow_gate`]).
    pub fn into_kube_mode(
        mut self,
        statuses: KubeStatusWriter,
        runs: KubeTaskRuns,
        events: KubeEvents,
        nodes: KubeVeilNodes,
        gate: WriteGate,
    ) -> Controller {
        self.status_sink = StatusSink::Kube(statuses);
        self.kube = Some(KubeMode {
            runs,
            events,
            cluster: ClusterObjects::default(),
            failures: 0,
            leading: false,
            gate,
            nodes,
            nodes_created: BTreeSet::new(),
            node_failures: 0,
            credentials: None,
            credentials_written: None,
        });
        self.statuses = Arc::default();
        self.memo = Some(crate::plan::StatusMemo::default());
        self.planner = crate::plan::Planner::default();
        self.generated.clear();
        self.generated_rev += 1;
        self.cached_world = None;
        self.source_label = SourceLabel {
            source: "kube".into(),
        };
        self.metrics
            .source_errors_total
            .get_or_create(&self.source_label)
            .inc_by(0);
        self.metrics
            .reconcile_errors_total
            .get_or_create(&KindLabel { kind: "all".into() })
            .inc_by(0);
        self
    }

    /// Kubernetes mode: generated credentials are adopted from and written
    /// to the cluster's Secrets through `credentials` (see
    /// [`crate::credential_secrets`]). Call after
    /// [`Controller::into_kube_mode`], before [`Controller::run`].
    pub fn with_credential_secrets(mut self, credentials: CredentialSecrets) -> Controller {
        if let Some(kube) = &mut self.kube {
            kube.credentials = Some(credentials);
        }
        self.secrets_world = None;
        self
    }

    /// [`Controller::apply_schedule_actions`] in Kubernetes mode: runs to
    /// cancel (`Replace`) and prune are deleted, new runs created, in the
    /// cluster. Returns whether the world changed.
    pub(super) async fn apply_schedule_actions_in_cluster(
        &mut self,
        actions: &ScheduleActions,
        now: DateTime<Utc>,
    ) -> Result<bool, ControllerError> {
        let Some(runs) = self.kube.as_ref().map(|kube| kube.runs.clone()) else {
            return Ok(false);
        };
        let mut changed = false;
        let mut failed_schedules = BTreeSet::new();
        let mut first_error: Option<(ObjectKey, TaskRunWriteError)> = None;
        // Replace deletes the active runs before making the new one, as
        // the CronJob controller deletes Jobs.
        for key in actions.cancel.iter().chain(&actions.prune) {
            match runs.delete(key).await {
                Ok(()) => {
                    tracing::info!(run = %key, "deleted a task run in the cluster");
                    self.generated.remove(key);
                    if let Some(kube) = &mut self.kube {
                        kube.cluster.hidden.insert(key.clone());
                    }
                    changed = true;
                }
                Err(error) => {
                    first_error.get_or_insert((key.clone(), error));
                }
            }
        }
        for (key, document, owner) in &actions.create {
            match runs.create(document).await {
                Ok(stored) => {
                    let Some((key, sourced)) = generated_object(&stored) else {
                        continue;
                    };
                    tracing::info!(schedule = %owner, run = %key.name, "created a task run in the cluster");
                    if let Some(kube) = &mut self.kube {
                        kube.cluster.hidden.remove(&key);
                        kube.cluster
                            .adopted
                            .insert(key.clone(), sourced.object.meta().uid.clone());
                    }
                    self.generated.insert(key, sourced);
                    changed = true;
                }
                Err(error) => {
                    failed_schedules.insert(owner.clone());
                    first_error.get_or_insert((key.clone(), error));
                }
            }
        }
        self.finish_schedule_actions(actions, &failed_schedules)
            .await?;
        self.retry_run_writes(first_error);
        let _ = now;
        if changed {
            self.generated_rev += 1;
        }
        Ok(changed)
    }

    /// After a batch of task-run writes: the failure count resets on
    /// success; after a failure the controller wakes again with backoff
    /// (quietly when it may not write: not the leader).
    fn retry_run_writes(&mut self, first_error: Option<(ObjectKey, TaskRunWriteError)>) {
        let Some(kube) = &mut self.kube else {
            return;
        };
        let Some((key, error)) = first_error else {
            kube.failures = 0;
            return;
        };
        kube.failures += 1;
        let delay = RETRY.delay(kube.failures);
        if matches!(error, TaskRunWriteError::GateClosed) {
            tracing::debug!(run = %key, retry_in = ?delay, "not writing task runs now");
        } else {
            tracing::warn!(run = %key, %error, retry_in = ?delay, "could not write a task run to the cluster; the Schedule will decide it again");
        }
        let at = tokio::time::Instant::now() + delay;
        self.wake_at = Some(self.wake_at.map_or(at, |other| other.min(at)));
    }
}

impl Controller {
    /// Kubernetes mode, leader only: creates a VeilNode for every live
    /// registered agent without one (see [`nodes_to_create`]). A failed
    /// create is retried by a later pass, woken with backoff.
    pub(super) async fn create_registered_nodes(
        &mut self,
        snapshot: &SourceSnapshot,
        nodes: &BTreeMap<String, NodeObservation>,
        now: DateTime<Utc>,
    ) {
        let node_timeout = self.node_timeout;
        let Some(kube) = &mut self.kube else {
            return;
        };
        kube.nodes_created
            .retain(|name| !snapshot.objects.contains_key(&node_key(name)));
        if !kube.nodes.may_write() {
            return;
        }
        let mut failed = None;
        for name in nodes_to_create(snapshot, nodes, &kube.nodes_created, now, node_timeout) {
            match kube.nodes.create(&name).await {
                Ok(NodeCreated::Created) => {
                    tracing::info!(node = %name, "created a VeilNode for a registered agent");
                    kube.nodes_created.insert(name);
                }
                Ok(NodeCreated::Existed) => {
                    kube.nodes_created.insert(name);
                }
                Err(NodeWriteError::GateClosed) => return,
                Err(error) => {
                    failed = Some((name, error));
                    break;
                }
            }
        }
        match failed {
            None => kube.node_failures = 0,
            Some((name, error)) => {
                kube.node_failures += 1;
                let delay = RETRY.delay(kube.node_failures);
                tracing::warn!(node = %name, %error, retry_in = ?delay, "could not create a VeilNode for a registered agent");
                let at = tokio::time::Instant::now() + delay;
                self.wake_at = Some(self.wake_at.map_or(at, |other| other.min(at)));
            }
        }
    }
}

fn node_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::VeilNode, "", name)
}

/// The registered nodes that need a VeilNode in the cluster: their agent
/// was heard from within `node_timeout` (a node that is not Ready gets
/// none), the cluster has no VeilNode of that name, and none was created
/// already (`created`, awaiting the watch).
pub(super) fn nodes_to_create(
    snapshot: &SourceSnapshot,
    nodes: &BTreeMap<String, NodeObservation>,
    created: &BTreeSet<String>,
    now: DateTime<Utc>,
    node_timeout: chrono::Duration,
) -> Vec<String> {
    nodes
        .iter()
        .filter(|(name, node)| {
            now - node.last_seen <= node_timeout
                && !created.contains(*name)
                && !snapshot.objects.contains_key(&node_key(name))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Gives every Schedule the store has no last schedule time for the one in
/// its cluster status (`status.lastScheduleTime`). A new leader whose own
/// store is empty (SQLite per replica) then continues from where the old
/// one was, instead of counting every time since the Schedule's creation as
/// missed. The store's time, when there is one, wins.
pub(super) fn adopt_schedule_times(
    snapshot: &SourceSnapshot,
    times: &mut BTreeMap<ObjectKey, DateTime<Utc>>,
) {
    for (key, status) in &snapshot.observed_statuses {
        if key.kind != Kind::Schedule || times.contains_key(key) {
            continue;
        }
        let time = serde_json::from_str::<Value>(status.get())
            .ok()
            .and_then(|status| status.get("lastScheduleTime")?.as_str()?.parse().ok());
        if let Some(time) = time {
            times.insert(key.clone(), time);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::plan::tests::snapshot;

    const KEY: &str = "
apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {name: alice, uid: u-1}
spec:
  serverRef: {name: edge}
";

    fn raw(text: &str) -> Arc<RawValue> {
        Arc::from(RawValue::from_string(text.to_owned()).unwrap())
    }

    #[test]
    fn cluster_statuses_are_adopted_once_per_object_uid() {
        let key = ObjectKey::new(Kind::VlessKey, "default", "alice");
        let mut source = snapshot(KEY);
        source.version = 1;
        source
            .observed_statuses
            .insert(key.clone(), raw(r#"{"phase":"Active"}"#));
        let mut kube = ClusterObjects::default();
        let mut statuses = Statuses::new();
        kube.adopt_cluster_statuses(&source, &BTreeMap::new(), &mut statuses);
        assert_eq!(statuses[&key].get(), r#"{"phase":"Active"}"#);

        // Written since: a later snapshot of the same object does not undo it.
        statuses.insert(key.clone(), raw(r#"{"phase":"Disabled"}"#));
        source.version = 2;
        kube.adopt_cluster_statuses(&source, &BTreeMap::new(), &mut statuses);
        assert_eq!(statuses[&key].get(), r#"{"phase":"Disabled"}"#);

        // Re-created under the same name, without a status yet.
        let mut recreated = snapshot(&KEY.replace("u-1", "u-2"));
        recreated.version = 3;
        kube.adopt_cluster_statuses(&recreated, &BTreeMap::new(), &mut statuses);
        assert!(
            !statuses.contains_key(&key),
            "the new object gets its status written"
        );
    }

    #[test]
    fn an_adopted_status_equal_but_for_nulls_counts_as_written() {
        let key = ObjectKey::new(Kind::VlessKey, "default", "alice");
        let mut source = snapshot(KEY);
        source.version = 1;
        source.observed_statuses.insert(
            key.clone(),
            raw(r#"{"nodes":[{"node":"a"}],"phase":"Active"}"#),
        );
        let mut cluster = ClusterObjects::default();
        let mut written = Statuses::new();
        cluster.adopt_cluster_statuses(&source, &BTreeMap::new(), &mut written);
        let planned_text = r#"{"phase":"Active","os":null,"nodes":[{"node":"a","message":null}]}"#;
        let planned = Statuses::unit(key.clone(), raw(planned_text));
        cluster.settle_adopted(&mut written, &planned);
        assert_eq!(written[&key].get(), planned_text, "no write needed");

        // A real difference stays a difference.
        let mut other = ClusterObjects::default();
        let mut written = Statuses::new();
        other.adopt_cluster_statuses(&source, &BTreeMap::new(), &mut written);
        let planned = Statuses::unit(key.clone(), raw(r#"{"phase":"Disabled"}"#));
        other.settle_adopted(&mut written, &planned);
        assert_ne!(written[&key].get(), r#"{"phase":"Disabled"}"#);
    }

    fn observed(node: &str, last_seen: DateTime<Utc>) -> (String, NodeObservation) {
        let registration = veil_crds::wire::RegisterRequest {
            node: node.to_owned(),
            os: "linux".into(),
            arch: "x86_64".into(),
            agent_version: "0.1.0".into(),
            labels: BTreeMap::new(),
            capabilities: Vec::new(),
            address: None,
        };
        let observation = NodeObservation::registered(registration, last_seen, last_seen);
        (node.to_owned(), observation)
    }

    #[test]
    fn only_live_agents_without_a_veil_node_get_one_created_once() {
        let now = Utc::now();
        let timeout = chrono::Duration::seconds(30);
        let source = snapshot(
            "apiVersion: veil.dev/v1alpha1\nkind: VeilNode\nmetadata: {name: declared}\nspec: {}\n",
        );
        let nodes = BTreeMap::from([
            observed("declared", now),
            observed("new", now - chrono::Duration::seconds(5)),
            observed("pending", now),
            observed("gone", now - chrono::Duration::seconds(31)),
        ]);
        let created = BTreeSet::from(["pending".to_owned()]);
        assert_eq!(
            nodes_to_create(&source, &nodes, &created, now, timeout),
            ["new"]
        );
    }

    #[test]
    fn retries_back_off_to_half_a_minute() {
        assert_eq!(RETRY.delay(1), Duration::from_secs(1));
        assert_eq!(RETRY.delay(3), Duration::from_secs(4));
        assert_eq!(RETRY.delay(60), Duration::from_secs(30));
    }

    #[test]
    fn a_schedule_without_a_stored_time_takes_its_cluster_status_time() {
        // Only the observed statuses matter.
        let mut source = SourceSnapshot::default();
        let nightly = ObjectKey::new(Kind::Schedule, "default", "nightly");
        let other = ObjectKey::new(Kind::Schedule, "default", "other");
        let alice = ObjectKey::new(Kind::VlessKey, "default", "alice");
        let status = |time: &str| raw(&format!(r#"{{"lastScheduleTime":"{time}"}}"#));
        source
            .observed_statuses
            .insert(nightly.clone(), status("2026-12-03T03:00:00Z"));
        source
            .observed_statuses
            .insert(other.clone(), status("2026-12-01T03:00:00Z"));
        source
            .observed_statuses
            .insert(alice.clone(), status("2026-12-02T03:00:00Z"));
        let stored = "2026-12-02T03:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let mut times = BTreeMap::from([(other.clone(), stored)]);
        adopt_schedule_times(&source, &mut times);
        assert_eq!(
            times,
            BTreeMap::from([
                (nightly, "2026-12-03T03:00:00Z".parse().unwrap()),
                (other, stored),
            ]),
            "the cluster's time for a Schedule the store does not know; the store's wins; other kinds ignored"
        );
    }
}
