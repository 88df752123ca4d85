//! The one reconcile loop (design §3): take the latest source snapshot,
//! build the world, plan, persist only what changed, publish the read view.
//!
//! Sources already debounce bursts, and a `watch` channel keeps only the
//! newest snapshot, so a slow pass never queues up stale work.
//!
//! Dir mode keeps statuses and Schedule-made TaskRuns in the store;
//! Kubernetes mode ([`Controller::into_kube_mode`], `kube_mode.rs`) writes
//! them to the cluster through [`crate::sink`]. Everything else — world,
//! plan, assignments, run states — is the same code in both modes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::watch;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;

use crate::agents::{Agents, NodeObservation};
use crate::metrics::{KindLabel, KindPhase, KindResult, Metrics, SourceLabel};
use crate::plan::vless::GeneratedSecrets;
use crate::plan::{Plan, PlanInputs, Statuses, plan};
use crate::runs::RunBook;
use crate::sink::{StatusChange, StatusSink};
use crate::source::{Origin, SourceError, SourceSnapshot, SourcedObject};
use crate::store::{LoadErrorRecord, Store, StoreError};
use crate::traffic::TrafficBook;
use crate::view::View;
use crate::world::{GenerationBook, object_ref};

mod degraded;
mod kube_mode;
mod restore;
mod secrets;
mod triggers;

/// Added to a clock-driven wake-up, so the pass runs just after the
/// instant (an expiry), not a hair before it.
const WAKE_MARGIN: std::time::Duration = std::time::Duration::from_millis(10);

/// Passes shorter than this are never paced (small worlds).
const PACE_FROM: std::time::Duration = std::time::Duration::from_millis(20);
/// The longest wait between two passes of a burst.
const MAX_PACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a reconcile pass failed. The pass is retried on the next snapshot or tick.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The store could not be read or written.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
}

/// Owns the dir-mode reconcile state: generation book, last written statuses and errors.
pub struct Controller {
    store: Store,
    agents: Arc<Agents>,
    runs: Arc<RunBook>,
    /// Traffic counters, shared with the agent API.
    traffic: Arc<TrafficBook>,
    /// VLESS ids and Reality keys generated so far (kept in the store).
    secrets: GeneratedSecrets,
    /// The world (and, in Kubernetes mode, the state of the credentials
    /// Secrets) `secrets` was last completed for.
    secrets_world: Option<(Arc<crate::world::World>, Option<secrets::ClusterState>)>,
    /// Which objects need generated credentials, kept from pass to pass.
    needed: secrets::NeededBook,
    /// A node silent longer than this is NotReady and its runs NodeLost.
    node_timeout: chrono::Duration,
    /// TaskRuns made by Schedules (dir mode keeps them in the store).
    generated: BTreeMap<ObjectKey, SourcedObject>,
    /// Last schedule time per Schedule.
    last_schedule_times: BTreeMap<ObjectKey, DateTime<Utc>>,
    /// When a Schedule, an expiring VlessKey or a traffic period next needs a pass.
    wake_at: Option<tokio::time::Instant>,
    notifier: crate::notify::Notifier,
    /// The last world built and what it was built from: a pass caused only
    /// by agent reports reuses it instead of copying every object again.
    cached_world: Option<(WorldInputs, Arc<crate::world::World>)>,
    /// Bumped whenever `generated` changes.
    generated_rev: u64,
    /// Finished runs already seen (webhooks fire once, on the transition).
    finished_seen: Option<crate::records::RunStates>,
    book: GenerationBook,
    /// Book changes the store has not taken yet (retried each pass).
    unpersisted: crate::world::BookChanges,
    /// The statuses last written (or, in Kubernetes mode, found in the
    /// cluster), shared with the readers' view.
    statuses: Arc<Statuses>,
    /// What the last plan made of each status (its text, phase and a
    /// fingerprint of its inputs: about 100 bytes per object), so unchanged
    /// statuses are not rebuilt (saves work, never changes a status).
    memo: Option<crate::plan::StatusMemo>,
    /// What the last passes computed, so a pass recomputes only what its
    /// changes reach (the plan is the same as from scratch).
    planner: crate::plan::Planner,
    /// Where statuses are written.
    status_sink: StatusSink,
    /// Kubernetes mode's state; `None` in dir mode.
    kube: Option<kube_mode::KubeMode>,
    /// Kubernetes mode: this replica just became the leader and has not
    /// yet read the run states and traffic totals the previous leader left
    /// in a shared store.
    books_stale: bool,
    errors: Vec<LoadErrorRecord>,
    view: watch::Sender<Arc<View>>,
    metrics: Arc<Metrics>,
    source_label: SourceLabel,
}

impl Controller {
    /// Loads the generation book, the last written statuses and the
    /// generated credentials from the store.
    pub async fn start(
        store: Store,
        agents: Arc<Agents>,
        runs: Arc<RunBook>,
        traffic: Arc<TrafficBook>,
        node_timeout: std::time::Duration,
        view: watch::Sender<Arc<View>>,
        metrics: Arc<Metrics>,
    ) -> Result<Controller, ControllerError> {
        let generated = restore::generated_objects(&store).await?;
        let last_schedule_times = restore::schedule_times(&store).await?;
        restore::nodes(&store, &agents).await?;
        let book = GenerationBook::from_records(store.object_records().await?);
        let statuses = restore::statuses(&store).await?;
        let errors = store.load_errors().await?;
        let secrets = restore::secrets(&store).await?;
        let source_label = SourceLabel {
            source: "dir".into(),
        };
        // Series that must exist from the start, so dashboards and alerts see 0, not "no data".
        metrics
            .source_errors_total
            .get_or_create(&source_label)
            .inc_by(0);
        metrics
            .reconcile_errors_total
            .get_or_create(&KindLabel { kind: "all".into() })
            .inc_by(0);
        let status_sink = StatusSink::Store(store.clone());
        Ok(Controller {
            store,
            agents,
            runs,
            traffic,
            secrets,
            secrets_world: None,
            needed: secrets::NeededBook::default(),
            node_timeout: chrono::Duration::from_std(node_timeout)
                .unwrap_or(chrono::Duration::seconds(30)),
            generated,
            last_schedule_times,
            wake_at: None,
            notifier: notifier(false),
            finished_seen: None,
            cached_world: None,
            generated_rev: 0,
            book,
            unpersisted: Default::default(),
            statuses: Arc::new(statuses),
            memo: Some(crate::plan::StatusMemo::default()),
            planner: crate::plan::Planner::default(),
            status_sink,
            kube: None,
            books_stale: false,
            errors,
            view,
            metrics,
            source_label,
        })
    }

    /// Reconciles snapshots until the channel closes.
    ///
    /// Nothing is reconciled before the source's first load (version > 0):
    /// an empty placeholder snapshot must never prune what the store holds.
    pub async fn run(mut self, snapshots: watch::Receiver<Arc<SourceSnapshot>>) {
        let mut triggers = triggers::Triggers::new(
            snapshots,
            self.agents.changes(),
            (self.node_timeout / 3)
                .to_std()
                .unwrap_or(std::time::Duration::from_secs(10)),
            self.kube.as_ref().map(kube_mode::KubeMode::gate),
            self.kube
                .as_ref()
                .and_then(kube_mode::KubeMode::credential_changes),
        );
        if !triggers.ready().await {
            return;
        }
        loop {
            let snapshot = triggers.take();
            self.metrics.queue_depth.set(0);
            let started = Instant::now();
            let now = Utc::now();
            let result = self.reconcile(&snapshot, now).await;
            let pass = started.elapsed();
            self.count_pass(result.is_ok(), pass, &snapshot, now);
            self.metrics.queue_depth.set(i64::from(triggers.pending()));
            if let Err(error) = result {
                tracing::error!(error = %veil_agent::trust::error_chain(&error), "reconcile pass failed; retrying");
                self.metrics
                    .reconcile_errors_total
                    .get_or_create(&KindLabel { kind: "all".into() })
                    .inc();
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            if pass >= PACE_FROM && triggers.source_changed() {
                // A burst: the source changed while this pass ran. Waiting
                // as long as the pass took keeps the controller at half a
                // core at most while changes stream in (creating 10,000
                // objects), leaving the rest to the API server; the next
                // pass takes every change made meanwhile. An isolated
                // change is not delayed.
                tokio::time::sleep(pass.min(MAX_PACE)).await;
            }
            if !triggers.next(self.wake_at).await {
                return;
            }
        }
    }

    /// Counts a pass in the metrics; after a failed one, agents still get
    /// the revocations the source asks for.
    fn count_pass(
        &mut self,
        succeeded: bool,
        pass: std::time::Duration,
        snapshot: &SourceSnapshot,
        now: DateTime<Utc>,
    ) {
        self.metrics
            .pass_duration_seconds
            .observe(pass.as_secs_f64());
        if succeeded {
            self.metrics.failed_passes.set(0);
            return;
        }
        self.metrics.failed_passes.inc();
        // A pass plans every kind at once: all of them failed.
        self.count_reconciles("error");
        self.publish_revocations(snapshot, now);
    }

    /// Lets webhooks reach loopback and private addresses (`--allow-private-webhooks`).
    pub fn allow_private_webhooks(&mut self) {
        self.notifier = notifier(true);
    }

    /// Plans `world` against the run and traffic books as they are now
    /// (their snapshots are held only while planning): incrementally with
    /// `planner`, from scratch without.
    fn plan_now(
        &self,
        world: &crate::world::World,
        nodes: &BTreeMap<String, NodeObservation>,
        now: DateTime<Utc>,
        memo: Option<&crate::plan::StatusMemo>,
        planner: Option<&mut crate::plan::Planner>,
    ) -> crate::plan::Plan {
        let runs = self.runs.snapshot();
        let traffic = self.traffic.snapshot();
        let inputs = PlanInputs {
            world,
            previous: &self.statuses,
            nodes,
            runs: &runs,
            now,
            node_timeout: self.node_timeout,
            last_schedule_times: &self.last_schedule_times,
            secrets: &self.secrets,
            traffic: &traffic,
            memo,
        };
        match planner {
            Some(planner) => planner.step(&inputs),
            None => plan(&inputs),
        }
    }

    /// One pass: world → plan → persist changes → publish.
    pub async fn reconcile(
        &mut self,
        snapshot: &SourceSnapshot,
        now: DateTime<Utc>,
    ) -> Result<(), ControllerError> {
        let pass_started = Instant::now();
        let nodes = self.agents.observations();
        let world = self.world(snapshot, &nodes, now).await?;
        let world_ms = pass_started.elapsed().as_secs_f64() * 1e3;
        let leading = self.follow_cluster(snapshot).await?;
        let secrets_started = Instant::now();
        self.complete_secrets(&world).await?;
        let secrets_ms = secrets_started.elapsed().as_secs_f64() * 1e3;
        let started = Instant::now();
        let plan = self.plan_pass(&world, &nodes, now);
        let plan_seconds = started.elapsed().as_secs_f64();
        let books_started = Instant::now();
        if leading {
            self.persist_books(&plan).await?;
        }
        let books_ms = books_started.elapsed().as_secs_f64() * 1e3;
        self.agents.set_assignments(plan.assignments.clone(), now);
        let replan = self.act_on_schedules(&plan, snapshot, now).await?;
        // After the schedule actions, which reset `wake_at`.
        self.create_registered_nodes(snapshot, &nodes, now).await;
        let Plan {
            statuses,
            memo,
            phase_counts,
            changed_statuses,
            ..
        } = plan;
        let written = self
            .write_statuses(snapshot, &world, (statuses, changed_statuses), memo)
            .await?;
        self.record_source_errors(&world).await?;
        self.record_metrics(&phase_counts, plan_seconds);
        tracing::debug!(
            objects = world.objects.len(),
            status_writes = written,
            world_ms,
            secrets_ms,
            plan_ms = plan_seconds * 1e3,
            books_ms,
            total_ms = pass_started.elapsed().as_secs_f64() * 1e3,
            "reconciled"
        );
        self.notify_finished(&world);
        self.view.send_replace(Arc::new(View {
            world: world.clone(),
            statuses: Arc::clone(&self.statuses),
            loaded: true,
        }));
        if replan {
            // Runs were created, cancelled or pruned: show them now, not on the next event.
            Box::pin(self.reconcile(snapshot, now)).await?;
        }
        Ok(())
    }

    /// Kubernetes mode's part before planning: the leader gate, the
    /// statuses and schedule times the cluster holds, and — on becoming the
    /// leader — the run and traffic books the previous leader left in the
    /// store. Returns whether this replica leads (always in dir mode).
    async fn follow_cluster(&mut self, snapshot: &SourceSnapshot) -> Result<bool, ControllerError> {
        let mut leading = true;
        if let Some(kube) = &mut self.kube {
            if kube.follow_gate() {
                self.books_stale = true;
            }
            leading = kube.is_leading();
            kube.adopt_cluster_statuses(
                snapshot,
                &self.generated,
                Arc::make_mut(&mut self.statuses),
            );
            kube_mode::adopt_schedule_times(snapshot, &mut self.last_schedule_times);
        }
        if leading && self.books_stale {
            // On a shared store the previous leader counted traffic and
            // moved runs on; plan from that, not from this replica's start.
            self.runs.reload().await?;
            self.traffic.reload().await?;
            self.books_stale = false;
            tracing::info!("leading: run states and traffic totals read from the store");
        }
        Ok(leading)
    }

    /// The plan of this pass, from the incremental planner.
    fn plan_pass(
        &mut self,
        world: &crate::world::World,
        nodes: &BTreeMap<String, NodeObservation>,
        now: DateTime<Utc>,
    ) -> Plan {
        let mut planner = std::mem::take(&mut self.planner);
        let plan = self.plan_now(world, nodes, now, self.memo.as_ref(), Some(&mut planner));
        self.planner = planner;
        for change in &plan.run_changes {
            if change.phase == "Failed" {
                tracing::warn!(run = %change.run, reason = ?change.reason, message = ?change.message, "task run failed");
            }
        }
        plan
    }

    /// Stores the run states and traffic baselines the plan changed. Only
    /// the leader does: a follower plans alike but writes nothing (on a
    /// shared store the leader's run states and baselines are the truth; a
    /// follower, which serves no agent, would see every node lost).
    async fn persist_books(&mut self, plan: &Plan) -> Result<(), ControllerError> {
        self.runs.put(plan.run_changes.clone()).await?;
        self.runs.remove(plan.stale_runs.clone()).await?;
        // Baselines before assignments: a period's traffic is counted
        // from the baseline on, and users come back only once it is stored.
        self.traffic
            .put_baselines(plan.traffic_baselines.clone())
            .await?;
        self.traffic
            .remove_baselines(plan.stale_baselines.clone())
            .await?;
        Ok(())
    }

    /// Creates, cancels and prunes Schedule runs, reports their Events and
    /// sets the next wake time. Returns whether the world changed.
    async fn act_on_schedules(
        &mut self,
        plan: &Plan,
        snapshot: &SourceSnapshot,
        now: DateTime<Utc>,
    ) -> Result<bool, ControllerError> {
        let replan = self
            .apply_schedule_actions(&plan.schedule_actions, now)
            .await?;
        if let Some(kube) = &self.kube {
            kube.report_schedule_events(&plan.schedule_actions.events, &snapshot.objects);
        }
        if let Some(at) = plan.wake_at {
            let after = (at - now).to_std().unwrap_or_default() + WAKE_MARGIN;
            let wake = tokio::time::Instant::now() + after;
            self.wake_at = Some(self.wake_at.map_or(wake, |other| other.min(wake)));
        }
        Ok(replan)
    }

    /// Writes the statuses that changed (in Kubernetes mode: of objects the
    /// cluster holds, with Events for transitions and the credentials
    /// Secrets), then keeps the plan's statuses and memo for the next pass.
    /// Returns how many statuses were written.
    async fn write_statuses(
        &mut self,
        snapshot: &SourceSnapshot,
        world: &Arc<crate::world::World>,
        (statuses, delta): (Statuses, Option<crate::plan::StatusDelta>),
        memo: crate::plan::StatusMemo,
    ) -> Result<usize, ControllerError> {
        if let Some(kube) = &mut self.kube {
            kube.settle_adopted(Arc::make_mut(&mut self.statuses), &statuses);
        }
        let mut changes = match delta {
            Some(delta) if delta.base.ptr_eq(&self.statuses) => {
                changes_at(&self.statuses, &statuses, &delta.keys)
            }
            _ => status_changes(&self.statuses, &statuses),
        };
        if let Some(kube) = &mut self.kube {
            // Only objects the cluster holds have a status subresource.
            changes.retain(|(key, status)| {
                status.is_some()
                    && (snapshot.objects.contains_key(key) || self.generated.contains_key(key))
            });
            kube.report_transitions(&self.statuses, &changes, &snapshot.objects, &self.generated);
            kube.write_credentials(world, &statuses, &self.secrets);
        }
        let written = self.status_sink.write(&changes).await?;
        self.metrics.status_writes_total.inc_by(written as u64);
        self.statuses = Arc::new(statuses);
        if self.memo.is_some() {
            self.memo = Some(memo);
        }
        Ok(changes.len())
    }

    /// Keeps the source's errors in the store and the metrics, logging
    /// them when they changed.
    async fn record_source_errors(
        &mut self,
        world: &crate::world::World,
    ) -> Result<(), ControllerError> {
        let errors: Vec<LoadErrorRecord> = world.source_errors.iter().map(load_error).collect();
        if errors != self.errors {
            let new = errors.iter().filter(|e| !self.errors.contains(e)).count();
            self.metrics
                .source_errors_total
                .get_or_create(&self.source_label)
                .inc_by(new as u64);
            self.store.replace_load_errors(&errors).await?;
            for error in &world.source_errors {
                tracing::warn!(error = %error, "source error");
            }
            self.errors = errors;
        }
        self.metrics
            .source_errors
            .get_or_create(&self.source_label)
            .set(self.errors.len() as i64);
        Ok(())
    }

    /// The world for this pass: rebuilt (and generation records persisted)
    /// only when the source snapshot, the operator's own objects or the set
    /// of registered nodes changed; otherwise the last one, shared.
    async fn world(
        &mut self,
        snapshot: &SourceSnapshot,
        nodes: &BTreeMap<String, NodeObservation>,
        now: DateTime<Utc>,
    ) -> Result<Arc<crate::world::World>, ControllerError> {
        let inputs = WorldInputs {
            snapshot_version: snapshot.version,
            generated_rev: self.generated_rev,
            nodes: nodes.keys().cloned().collect(),
        };
        if let Some((cached, world)) = &self.cached_world
            && *cached == inputs
        {
            return Ok(world.clone());
        }
        let mut extra = registered_nodes(snapshot, nodes);
        let book = &mut self.book;
        let new_uid = || uuid::Uuid::new_v4().to_string();
        let (world, book_changes) = match &mut self.kube {
            None => {
                extra.extend(self.generated.iter().map(|(k, v)| (k.clone(), v.clone())));
                book.build_world_with(snapshot, &extra, now, new_uid)
            }
            Some(kube) => {
                kube.forget_settled_runs(snapshot, &mut self.generated);
                book.build_cluster_world(
                    snapshot,
                    &self.generated,
                    &extra,
                    kube.hidden_runs(),
                    now,
                    new_uid,
                )
            }
        };
        // The book is updated in place (copying it would cost a pass a copy
        // of every record); what it changed is persisted before the world is
        // used, and kept to retry while the store refuses it.
        self.unpersisted.absorb(book_changes);
        if !self.unpersisted.upserts.is_empty() {
            self.store
                .upsert_object_records(&self.unpersisted.upserts)
                .await?;
        }
        if !self.unpersisted.deletes.is_empty() {
            self.store
                .delete_object_records(&self.unpersisted.deletes)
                .await?;
        }
        self.unpersisted = crate::world::BookChanges::default();
        let world = Arc::new(world);
        self.cached_world = Some((inputs, world.clone()));
        Ok(world)
    }

    /// Creates, cancels and prunes Schedule-owned TaskRuns and persists
    /// schedule times. Returns whether the world changed.
    async fn apply_schedule_actions(
        &mut self,
        actions: &crate::plan::schedules::ScheduleActions,
        now: DateTime<Utc>,
    ) -> Result<bool, ControllerError> {
        if self.kube.is_some() {
            return self.apply_schedule_actions_in_cluster(actions, now).await;
        }
        let mut changed = false;
        for (key, document, owner) in &actions.create {
            let record = crate::store::GeneratedObjectRecord {
                key: object_ref(key),
                owner: Some(object_ref(owner)),
                document: document.clone(),
                created_at: now,
            };
            // The name is the lock: an existing run with this name is adopted, never duplicated.
            self.store.insert_generated_object(&record).await?;
            if let Some((key, sourced)) = generated_object(document) {
                tracing::info!(schedule = %owner, run = %key.name, "scheduled a task run");
                self.generated.entry(key).or_insert(sourced);
                changed = true;
            }
        }
        for key in &actions.cancel {
            if let Some(sourced) = self.generated.get_mut(key)
                && let veil_crds::object::Object::TaskRun(run) =
                    std::sync::Arc::make_mut(&mut sourced.object)
                && !run.spec.cancel
            {
                run.spec.cancel = true;
                let document = sourced.object.to_value();
                self.store
                    .update_generated_object(&object_ref(key), &document)
                    .await?;
                changed = true;
            }
        }
        if !actions.prune.is_empty() {
            let refs: Vec<_> = actions.prune.iter().map(object_ref).collect();
            self.store.delete_generated_objects(&refs).await?;
            for key in &actions.prune {
                changed |= self.generated.remove(key).is_some();
            }
        }
        self.finish_schedule_actions(actions, &Default::default())
            .await?;
        if changed {
            self.generated_rev += 1;
        }
        Ok(changed)
    }

    /// Persists schedule times (except for the Schedules in `failed`, whose
    /// run could not be made: the next pass decides the same run again),
    /// logs events and sets the requeue time.
    async fn finish_schedule_actions(
        &mut self,
        actions: &crate::plan::schedules::ScheduleActions,
        failed: &std::collections::BTreeSet<ObjectKey>,
    ) -> Result<(), ControllerError> {
        for (key, time) in &actions.last_schedule_times {
            if failed.contains(key) {
                continue;
            }
            self.store
                .set_last_schedule_time(&object_ref(key), *time)
                .await?;
            self.last_schedule_times.insert(key.clone(), *time);
        }
        for (key, event) in &actions.events {
            tracing::warn!(schedule = %key, reason = event.reason, message = %event.message, "schedule event");
        }
        self.wake_at = actions
            .requeue_after
            .map(|after| tokio::time::Instant::now() + after);
        Ok(())
    }

    /// Fires the `notify` webhooks of Schedules whose runs just finished.
    fn notify_finished(&mut self, world: &crate::world::World) {
        use crate::plan::schedules::SCHEDULE_LABEL;
        let runs = self.runs.snapshot();
        let Some(seen) = self.finished_seen.replace(runs.clone()) else {
            return; // first pass after start: nothing "just" finished
        };
        for state in crate::runs::just_finished(&seen, &runs) {
            let run_key = veil_crds::object::ObjectKey::new(
                Kind::TaskRun,
                &state.run.namespace,
                &state.run.name,
            );
            let Some(run) = world.objects.get(&run_key) else {
                continue;
            };
            let Some(schedule_name) = run
                .object
                .meta()
                .labels
                .as_ref()
                .and_then(|l| l.get(SCHEDULE_LABEL))
            else {
                continue;
            };
            let schedule_key = veil_crds::object::ObjectKey::new(
                Kind::Schedule,
                &state.run.namespace,
                schedule_name,
            );
            let Some(veil_crds::object::Object::Schedule(schedule)) =
                world.objects.get(&schedule_key).map(|o| &*o.object)
            else {
                continue;
            };
            let Some(status) = self.statuses.get(&run_key).and_then(|s| {
                serde_json::from_str::<veil_crds::task_run::TaskRunStatus>(s.get()).ok()
            }) else {
                continue;
            };
            let payload = crate::notify::finish_payload(
                &state.run.namespace,
                schedule_name,
                &state.run.name,
                &status,
            );
            for url in crate::notify::webhooks_for(schedule.spec.notify.as_ref(), status.phase) {
                if let Ok(url) = reqwest::Url::parse(url.as_str()) {
                    self.notifier.notify(url, payload.clone());
                }
            }
        }
    }

    /// Counts one reconcile of every kind with `result` (a pass plans
    /// every kind at once).
    fn count_reconciles(&self, result: &str) {
        for kind in Kind::VEIL {
            self.metrics
                .reconcile_total
                .get_or_create(&KindResult {
                    kind: kind.as_str().into(),
                    result: result.into(),
                })
                .inc();
        }
    }

    fn record_metrics(&self, counts: &BTreeMap<(Kind, String), i64>, plan_seconds: f64) {
        self.metrics.objects.clear();
        for ((kind, phase), count) in counts.iter() {
            self.metrics
                .objects
                .get_or_create(&KindPhase {
                    kind: kind.as_str().into(),
                    phase: phase.clone(),
                })
                .set(*count);
        }
        self.count_reconciles("success");
        self.metrics
            .reconcile_duration_seconds
            .get_or_create(&KindLabel { kind: "all".into() })
            .observe(plan_seconds);
    }
}

/// What a world is built from; equal inputs give an equal world.
#[derive(Clone, Debug, PartialEq, Eq)]
struct WorldInputs {
    snapshot_version: u64,
    generated_rev: u64,
    nodes: Vec<String>,
}

/// A generated object (TaskRun made by a Schedule) as the world reads it.
fn generated_object(document: &Value) -> Option<(ObjectKey, SourcedObject)> {
    let run: veil_crds::task_run::TaskRun = serde_json::from_value(document.clone()).ok()?;
    let object = veil_crds::object::Object::TaskRun(Box::new(run));
    let key = object.key();
    Some((
        key,
        SourcedObject {
            object: object.into(),
            origin: Origin {
                file: std::path::PathBuf::from("<made by a Schedule>"),
                line: 0,
            },
        },
    ))
}

/// The webhook notifier: no redirects, and no loopback or private
/// destinations unless `allow_private` (`--allow-private-webhooks`).
fn notifier(allow_private: bool) -> crate::notify::Notifier {
    let options = crate::notify::NotifierOptions {
        allow_private,
        ..Default::default()
    };
    let client =
        crate::notify::destination::webhook_client(allow_private).unwrap_or_else(|error| {
            // Only a broken TLS backend fails here; deliveries then fail and are counted.
            tracing::error!(%error, "cannot build the webhook client; notifications will fail");
            reqwest::Client::new()
        });
    crate::notify::Notifier::spawn(client, options)
}

/// A `VeilNode` for every registered agent that no file declares, so
/// `get veilnodes` lists every node.
fn registered_nodes(
    snapshot: &SourceSnapshot,
    nodes: &BTreeMap<String, NodeObservation>,
) -> BTreeMap<veil_crds::object::ObjectKey, SourcedObject> {
    let mut extra = BTreeMap::new();
    for name in nodes.keys() {
        let key = veil_crds::object::ObjectKey::new(Kind::VeilNode, "", name);
        if snapshot.objects.contains_key(&key) {
            continue;
        }
        let node = veil_crds::veil_node::VeilNode::new(name, Default::default());
        extra.insert(
            key,
            SourcedObject {
                object: std::sync::Arc::new(veil_crds::object::Object::VeilNode(Box::new(node))),
                origin: Origin {
                    file: std::path::PathBuf::from("<registered by its agent>"),
                    line: 0,
                },
            },
        );
    }
    extra
}

/// The writes that turn `old` into `new`: changed or new statuses, and
/// deletions. Statuses are shared, not copied.
fn status_changes(old: &Statuses, new: &Statuses) -> Vec<StatusChange> {
    // One merge over both sorted maps: a comparison per key, not a tree
    // lookup (a string comparison per level) per key.
    let mut changes = Vec::new();
    let mut deleted = Vec::new();
    let mut old_entries = old.iter().peekable();
    for (key, status) in new {
        let mut previous = None;
        while let Some((old_key, old_status)) = old_entries.peek() {
            match (*old_key).cmp(key) {
                std::cmp::Ordering::Less => deleted.push(((*old_key).clone(), None)),
                std::cmp::Ordering::Equal => previous = Some(*old_status),
                std::cmp::Ordering::Greater => break,
            }
            old_entries.next();
            if previous.is_some() {
                break;
            }
        }
        if previous.is_none_or(|o| !crate::plan::same_status(o, status)) {
            changes.push((key.clone(), Some(status.clone())));
        }
    }
    deleted.extend(old_entries.map(|(key, _)| (key.clone(), None)));
    changes.extend(deleted);
    changes
}

/// [`status_changes`] when only `keys` (in key order) can differ.
fn changes_at(old: &Statuses, new: &Statuses, keys: &[ObjectKey]) -> Vec<StatusChange> {
    let mut changes = Vec::new();
    let mut deleted = Vec::new();
    for key in keys {
        match (old.get(key), new.get(key)) {
            (old, Some(status)) => {
                if old.is_none_or(|o| !crate::plan::same_status(o, status)) {
                    changes.push((key.clone(), Some(status.clone())));
                }
            }
            (Some(_), None) => deleted.push((key.clone(), None)),
            (None, None) => {}
        }
    }
    changes.extend(deleted);
    changes
}

fn load_error(error: &SourceError) -> LoadErrorRecord {
    LoadErrorRecord {
        file: error
            .file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_default(),
        line: (error.line > 0).then_some(error.line as i64),
        column: (error.column > 0).then_some(error.column as i64),
        object: error.object.clone(),
        path: (!error.path.is_empty()).then(|| error.path.clone()),
        message: error.message.clone(),
    }
}

#[cfg(test)]
mod tests;
