//! The one reconcile loop (design §3): take the latest source snapshot,
//! build the world, plan, persist only what changed, publish the read view.
//!
//! Sources already debounce bursts, and a `watch` channel keeps only the
//! newest snapshot, so a slow pass never queues up stale work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::watch;
use veil_crds::kind::Kind;

use crate::agents::{Agents, NodeObservation};
use crate::metrics::{KindLabel, KindPhase, KindResult, Metrics, SourceLabel};
use crate::plan::{PlanInputs, Statuses, plan};
use crate::runs::RunBook;
use crate::source::{Origin, SourceError, SourceSnapshot, SourcedObject};
use crate::store::{LoadErrorRecord, Store, StoreError};
use crate::view::View;
use crate::world::{GenerationBook, object_key, object_ref};

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
    /// A node silent longer than this is NotReady and its runs NodeLost.
    node_timeout: chrono::Duration,
    book: GenerationBook,
    statuses: Statuses,
    errors: Vec<LoadErrorRecord>,
    view: watch::Sender<Arc<View>>,
    metrics: Arc<Metrics>,
    source_label: SourceLabel,
}

impl Controller {
    /// Loads the generation book and the last written statuses from the store.
    pub async fn start(
        store: Store,
        agents: Arc<Agents>,
        runs: Arc<RunBook>,
        node_timeout: std::time::Duration,
        view: watch::Sender<Arc<View>>,
        metrics: Arc<Metrics>,
    ) -> Result<Controller, ControllerError> {
        for record in store.nodes().await? {
            if let Ok(registration) = serde_json::from_value(record.registration.clone()) {
                agents.restore(NodeObservation {
                    registration,
                    registered_at: record.registered_at,
                    last_seen: record.last_seen,
                    applied_revision: 0,
                });
            }
        }
        let book = GenerationBook::from_records(store.object_records().await?);
        let statuses = store
            .statuses()
            .await?
            .into_iter()
            .filter_map(|(reference, status)| Some((object_key(&reference)?, Arc::new(status))))
            .collect();
        let errors = store.load_errors().await?;
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
        Ok(Controller {
            store,
            agents,
            runs,
            node_timeout: chrono::Duration::from_std(node_timeout)
                .unwrap_or(chrono::Duration::seconds(30)),
            book,
            statuses,
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
    pub async fn run(mut self, mut snapshots: watch::Receiver<Arc<SourceSnapshot>>) {
        if snapshots.wait_for(|s| s.version > 0).await.is_err() {
            return;
        }
        let mut agent_changes = self.agents.changes();
        // Node timeouts need a pass even when nothing else happens.
        let mut tick = tokio::time::interval(
            (self.node_timeout / 3)
                .to_std()
                .unwrap_or(std::time::Duration::from_secs(10)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            agent_changes.borrow_and_update();
            self.metrics.queue_depth.set(0);
            if let Err(error) = self.reconcile(&snapshot, Utc::now()).await {
                tracing::error!(%error, "reconcile pass failed; retrying");
                self.metrics
                    .reconcile_errors_total
                    .get_or_create(&KindLabel { kind: "all".into() })
                    .inc();
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { return },
                _ = agent_changes.changed() => {}
                _ = tick.tick() => {}
            }
            self.metrics.queue_depth.set(1);
        }
    }

    /// One pass: world → plan → persist changes → publish.
    pub async fn reconcile(
        &mut self,
        snapshot: &SourceSnapshot,
        now: DateTime<Utc>,
    ) -> Result<(), ControllerError> {
        let nodes = self.agents.observations();
        let snapshot = with_registered_nodes(snapshot, &nodes);
        let mut book = self.book.clone();
        let (world, book_changes) =
            book.build_world(&snapshot, now, || uuid::Uuid::new_v4().to_string());
        if !book_changes.upserts.is_empty() {
            self.store
                .upsert_object_records(&book_changes.upserts)
                .await?;
        }
        if !book_changes.deletes.is_empty() {
            self.store
                .delete_object_records(&book_changes.deletes)
                .await?;
        }
        self.book = book;

        let runs = self.runs.snapshot();
        let started = Instant::now();
        let plan = plan(&PlanInputs {
            world: &world,
            previous: &self.statuses,
            nodes: &nodes,
            runs: &runs,
            now,
            node_timeout: self.node_timeout,
        });
        let elapsed = started.elapsed().as_secs_f64();
        for change in &plan.run_changes {
            if change.phase == "Failed" {
                tracing::warn!(run = %change.run, reason = ?change.reason, message = ?change.message, "task run failed");
            }
        }
        self.runs.put(plan.run_changes.clone()).await?;
        self.runs.remove(plan.stale_runs.clone()).await?;
        self.agents.set_assignments(plan.assignments.clone(), now);

        let changes = status_changes(&self.statuses, &plan.statuses);
        if !changes.is_empty() {
            self.store.write_statuses(&changes).await?;
            self.metrics
                .status_writes_total
                .inc_by(changes.len() as u64);
        }
        self.statuses = plan.statuses;

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

        self.record_metrics(&world, elapsed);
        tracing::debug!(
            objects = world.objects.len(),
            status_writes = changes.len(),
            "reconciled"
        );
        self.view.send_replace(Arc::new(View {
            world: Arc::new(world),
            statuses: Arc::new(self.statuses.clone()),
            loaded: true,
        }));
        Ok(())
    }

    fn record_metrics(&self, world: &crate::world::World, plan_seconds: f64) {
        let mut counts: BTreeMap<(Kind, String), i64> = BTreeMap::new();
        for key in world.objects.keys() {
            let phase = self
                .statuses
                .get(key)
                .and_then(|s| s.get("phase"))
                .and_then(Value::as_str)
                .unwrap_or("Unknown")
                .to_owned();
            *counts.entry((key.kind, phase)).or_default() += 1;
        }
        self.metrics.objects.clear();
        for ((kind, phase), count) in counts {
            self.metrics
                .objects
                .get_or_create(&KindPhase {
                    kind: kind.as_str().into(),
                    phase,
                })
                .set(count);
        }
        for kind in Kind::VEIL {
            self.metrics
                .reconcile_total
                .get_or_create(&KindResult {
                    kind: kind.as_str().into(),
                    result: "success".into(),
                })
                .inc();
        }
        self.metrics
            .reconcile_duration_seconds
            .get_or_create(&KindLabel { kind: "all".into() })
            .observe(plan_seconds);
    }
}

/// The snapshot plus a `VeilNode` for every registered agent that no file
/// declares, so `get veilnodes` lists every node.
fn with_registered_nodes(
    snapshot: &SourceSnapshot,
    nodes: &BTreeMap<String, NodeObservation>,
) -> SourceSnapshot {
    let mut snapshot = snapshot.clone();
    for name in nodes.keys() {
        let key = veil_crds::object::ObjectKey::new(Kind::VeilNode, "", name);
        if snapshot.objects.contains_key(&key) {
            continue;
        }
        let node = veil_crds::veil_node::VeilNode::new(name, Default::default());
        snapshot.objects.insert(
            key,
            SourcedObject {
                object: veil_crds::object::Object::VeilNode(Box::new(node)),
                origin: Origin {
                    file: std::path::PathBuf::from("<registered by its agent>"),
                    line: 0,
                },
            },
        );
    }
    snapshot
}

/// The store writes that turn `old` into `new`: changed or new statuses, and deletions.
fn status_changes(old: &Statuses, new: &Statuses) -> Vec<(crate::store::ObjectRef, Option<Value>)> {
    let mut changes = Vec::new();
    for (key, status) in new {
        if old.get(key) != Some(status) {
            changes.push((object_ref(key), Some((**status).clone())));
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            changes.push((object_ref(key), None));
        }
    }
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
