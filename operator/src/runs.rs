//! The run book: the observed state of every task run (placement, phase,
//! exit code, log tail), shared by the agent API (reports) and the
//! controller (placement, lost nodes), written through to the store.
//!
//! Transitions only move forward: a finished run never becomes Running or
//! Pending again, whatever a late or replayed report says, so applying the
//! same report twice changes nothing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use veil_crds::task_run::TaskRunPhase;
use veil_crds::wire::{LogChunk, NodeReport, RegisterRequest, TaskUpdate};

use std::sync::Arc;

use crate::records::RunStates;
use crate::store::{NodeRecord, ObjectRef, RunStateRecord, Store, StoreError};

/// Lines of output kept in `status.logTail`.
pub const LOG_TAIL_LINES: usize = 20;

/// How much of a run's log the store keeps (characters of output, about
/// as many bytes): older output is dropped from the front and a visible
/// marker says so.
pub const MAX_LOG_CHARS_PER_RUN: i64 = 16 * 1024 * 1024;

/// Observed task runs by uid.
pub struct RunBook {
    store: Store,
    runs: Mutex<RunStates>,
    /// When each node's `last_seen` was last written: written at most every
    /// [`TOUCH_EVERY`], not on every report (each write is an fsync).
    touched: Mutex<BTreeMap<String, DateTime<Utc>>>,
}

/// How often a node's `last_seen` is persisted (it only matters after an operator restart).
const TOUCH_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// The phase names stored for each [`TaskRunPhase`].
pub fn phase_name(phase: TaskRunPhase) -> &'static str {
    match phase {
        TaskRunPhase::Pending => "Pending",
        TaskRunPhase::Running => "Running",
        TaskRunPhase::Succeeded => "Succeeded",
        TaskRunPhase::Failed => "Failed",
        TaskRunPhase::Cancelled => "Cancelled",
    }
}

/// Whether a stored phase name is final.
pub fn is_finished(phase: &str) -> bool {
    matches!(phase, "Succeeded" | "Failed" | "Cancelled")
}

/// The runs finished in `now` that were unfinished or unknown in `before`,
/// in uid order. Visits only what differs: the maps share every record
/// (and subtree) that did not change.
pub fn just_finished<'a>(
    before: &RunStates,
    now: &'a RunStates,
) -> impl Iterator<Item = &'a RunStateRecord> {
    before.diff(now).filter_map(|item| {
        let (old, new) = match item {
            imbl::ordmap::DiffItem::Add(_, new) => (None, new),
            imbl::ordmap::DiffItem::Update { old, new } => (Some(old.1), new.1),
            imbl::ordmap::DiffItem::Remove(..) => return None,
        };
        let was_finished = old.is_some_and(|old| is_finished(&old.phase));
        (is_finished(&new.phase) && !was_finished).then_some(&**new)
    })
}

/// The store key of a run's log: by uid, so a recreated run with the same name starts clean.
pub fn log_ref(namespace: &str, uid: &str) -> ObjectRef {
    ObjectRef::new("TaskRun", namespace, uid)
}

impl RunBook {
    /// Loads every run state from the store.
    pub async fn load(store: Store) -> Result<RunBook, StoreError> {
        let runs = store
            .run_states()
            .await?
            .into_iter()
            .map(|r| (r.uid.clone(), Arc::new(r)))
            .collect();
        Ok(RunBook {
            store,
            runs: Mutex::new(runs),
            touched: Mutex::new(BTreeMap::new()),
        })
    }

    /// Replaces the run states in memory by the store's: for a replica
    /// that takes over from another on a shared store. (A report applied
    /// meanwhile writes the same record to both, so nothing is lost.)
    pub async fn reload(&self) -> Result<(), StoreError> {
        let runs = self
            .store
            .run_states()
            .await?
            .into_iter()
            .map(|r| (r.uid.clone(), Arc::new(r)))
            .collect();
        *self.lock() = runs;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunStates> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every run state as it is now (a persistent map: the copy shares
    /// everything with the book's).
    pub fn snapshot(&self) -> RunStates {
        self.lock().clone()
    }

    /// Where the run `uid` is placed: `None` when the run is unknown,
    /// `Some(None)` when it is known but not placed yet.
    pub fn placement(&self, uid: &str) -> Option<Option<String>> {
        self.lock().get(uid).map(|r| r.node.clone())
    }

    /// Writes `records` to the store, then to memory.
    pub async fn put(&self, records: Vec<RunStateRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.store.upsert_run_states(&records).await?;
        let mut runs = self.lock();
        for record in records {
            runs.insert(record.uid.clone(), Arc::new(record));
        }
        Ok(())
    }

    /// Forgets runs (their TaskRuns are gone).
    pub async fn remove(&self, uids: Vec<String>) -> Result<(), StoreError> {
        if uids.is_empty() {
            return Ok(());
        }
        self.store.delete_run_states(&uids).await?;
        let mut runs = self.lock();
        for uid in uids {
            runs.remove(&uid);
        }
        Ok(())
    }

    /// Records an agent's registration; returns the last report seq applied for it.
    pub async fn register(
        &self,
        request: &RegisterRequest,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let existing = self
            .store
            .nodes()
            .await?
            .into_iter()
            .find(|n| n.node == request.node);
        let record = NodeRecord {
            node: request.node.clone(),
            registration: serde_json::to_value(request).unwrap_or_default(),
            registered_at: existing.as_ref().map_or(now, |n| n.registered_at),
            last_seen: now,
            last_report_seq: existing.as_ref().map_or(0, |n| n.last_report_seq),
        };
        self.store.upsert_node(&record).await?;
        Ok(record.last_report_seq.max(0) as u64)
    }

    /// Applies a report: log chunks (idempotent per run and seq), task
    /// updates (forward-only), then records the seq. Safe to call twice.
    ///
    /// Only runs placed on `node` are touched: chunks and updates for any
    /// other run (unknown, or another node's: the API refuses those before
    /// this is called) are dropped.
    pub async fn report(
        &self,
        node: &str,
        report: &NodeReport,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tails: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let own: Vec<&LogChunk> = report
            .logs
            .iter()
            .filter(|chunk| {
                let mine = self.placement(&chunk.run.uid).flatten().as_deref() == Some(node);
                if !mine {
                    tracing::debug!(%node, uid = %chunk.run.uid, "log chunk of a run not placed on this node dropped");
                }
                mine
            })
            .collect();
        let rows: Vec<(ObjectRef, i64, &str)> = own
            .iter()
            .map(|c| {
                let seq = i64::try_from(c.seq).unwrap_or(i64::MAX);
                (log_ref(&c.run.namespace, &c.run.uid), seq, c.text.as_str())
            })
            .collect();
        let stored = self.store.append_logs(&rows, MAX_LOG_CHARS_PER_RUN).await?;
        for (chunk, stored) in own.iter().zip(stored) {
            if stored {
                tails
                    .entry(chunk.run.uid.clone())
                    .or_default()
                    .extend(chunk.text.lines().map(str::to_owned));
            }
        }
        let changed = {
            let runs = self.lock();
            // Each update builds on the one before it in the same report
            // (a report often carries Running and Succeeded for one run).
            let mut changed: BTreeMap<String, RunStateRecord> = BTreeMap::new();
            for update in &report.task_updates {
                let uid = &update.run.uid;
                let current = changed.get(uid).or_else(|| runs.get(uid).map(|r| &**r));
                if let Some(next) = advance(current, update, node, now) {
                    changed.insert(uid.clone(), next);
                }
            }
            for (uid, lines) in tails {
                let Some(mut record) = changed
                    .remove(&uid)
                    .or_else(|| runs.get(&uid).map(|r| (**r).clone()))
                else {
                    continue;
                };
                let mut tail: VecDeque<String> = record.log_tail.into();
                tail.extend(lines);
                while tail.len() > LOG_TAIL_LINES {
                    tail.pop_front();
                }
                record.log_tail = tail.into();
                record.updated_at = now;
                changed.insert(uid, record);
            }
            changed.into_values().collect::<Vec<_>>()
        };
        self.put(changed).await?;
        self.store.claim_report_seq(node, report.seq as i64).await?;
        let due = {
            let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            let due = touched.get(node).is_none_or(|t| now - *t >= TOUCH_EVERY);
            if due {
                touched.insert(node.to_owned(), now);
            }
            due
        };
        if due {
            self.store.touch_node(node, now).await?;
        }
        Ok(())
    }
}

/// The run state after `update`, or `None` when it changes nothing (stale,
/// repeated, or from a node the run is not placed on).
fn advance(
    current: Option<&RunStateRecord>,
    update: &TaskUpdate,
    node: &str,
    now: DateTime<Utc>,
) -> Option<RunStateRecord> {
    let current = current?;
    if current.node.as_deref() != Some(node) || is_finished(&current.phase) {
        return None;
    }
    let phase = phase_name(update.phase);
    if phase == "Pending" || (phase == "Running" && current.phase == "Running") {
        return None;
    }
    let parse = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let mut next = current.clone();
    next.phase = phase.to_owned();
    next.started_at = parse(&update.started_at).or(current.started_at);
    next.finished_at = parse(&update.finished_at).or(current.finished_at);
    if is_finished(phase) && next.finished_at.is_none() {
        next.finished_at = Some(now);
    }
    next.exit_code = update.exit_code.or(current.exit_code);
    next.reason = update.reason.clone();
    next.message = update.message.clone();
    next.updated_at = now;
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_crds::wire::RunRef;

    fn placed(now: DateTime<Utc>) -> RunStateRecord {
        RunStateRecord {
            uid: "u1".into(),
            run: ObjectRef::new("TaskRun", "default", "r"),
            node: Some("n".into()),
            phase: "Pending".into(),
            placed_at: Some(now),
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
            log_tail: Vec::new(),
            updated_at: now,
        }
    }

    fn update(phase: TaskRunPhase) -> TaskUpdate {
        TaskUpdate {
            run: RunRef {
                namespace: "default".into(),
                name: "r".into(),
                uid: "u1".into(),
            },
            phase,
            started_at: None,
            finished_at: None,
            exit_code: Some(0),
            reason: None,
            message: None,
        }
    }

    #[test]
    fn just_finished_lists_the_runs_that_finished_since_and_nothing_else() {
        let now = Utc::now();
        let with = |uid: &str, phase: &str| {
            let mut record = placed(now);
            record.uid = uid.into();
            record.phase = phase.into();
            (uid.to_owned(), Arc::new(record))
        };
        let before = RunStates::from_iter([
            with("done-then", "Succeeded"),
            with("finishes", "Running"),
            with("stays", "Running"),
            with("goes", "Failed"),
            with("fails", "Pending"),
        ]);
        let mut now_runs = before.clone();
        now_runs.insert("finishes".into(), with("finishes", "Succeeded").1);
        now_runs.insert("fails".into(), with("fails", "Failed").1);
        now_runs.insert("done-then".into(), with("done-then", "Succeeded").1);
        now_runs.insert("new-done".into(), with("new-done", "Cancelled").1);
        now_runs.insert("new-running".into(), with("new-running", "Running").1);
        now_runs.remove("goes");
        let uids: Vec<&str> = just_finished(&before, &now_runs)
            .map(|r| r.uid.as_str())
            .collect();
        assert_eq!(uids, ["fails", "finishes", "new-done"]);
        assert_eq!(just_finished(&now_runs, &now_runs).count(), 0);
    }

    #[test]
    fn a_finished_run_never_moves_back() {
        let now = Utc::now();
        let running =
            advance(Some(&placed(now)), &update(TaskRunPhase::Running), "n", now).unwrap();
        let done = advance(Some(&running), &update(TaskRunPhase::Succeeded), "n", now).unwrap();
        assert_eq!(done.phase, "Succeeded");
        assert!(advance(Some(&done), &update(TaskRunPhase::Running), "n", now).is_none());
        assert!(advance(Some(&done), &update(TaskRunPhase::Succeeded), "n", now).is_none());
    }

    #[test]
    fn updates_from_another_node_are_ignored() {
        let now = Utc::now();
        assert!(
            advance(
                Some(&placed(now)),
                &update(TaskRunPhase::Running),
                "other",
                now
            )
            .is_none()
        );
    }
}
