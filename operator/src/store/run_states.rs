//! Task-run states: what agents reported about each run and where the
//! scheduler placed it, keyed by the TaskRun's uid. Written in batches by
//! the reconcile loop and the agent API; read whole on start.
//!
//! The log tail is stored as the JSON text of an array of lines.

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::pool::begin_write;
use super::stored_time;
use super::{ObjectRef, RunStateRecord, Store, StoreError, batch};

/// Columns of `run_states`, in the order rows are bound.
const COLUMNS: usize = 14;

/// A run-state row as read back, before its log tail is parsed.
#[derive(sqlx::FromRow)]
struct RunStateRow {
    uid: String,
    #[sqlx(flatten)]
    run: ObjectRef,
    node: Option<String>,
    phase: String,
    placed_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    exit_code: Option<i32>,
    reason: Option<String>,
    message: Option<String>,
    log_tail: String,
    updated_at: DateTime<Utc>,
}

impl RunStateRow {
    fn into_record(self) -> Result<RunStateRecord, StoreError> {
        let log_tail =
            serde_json::from_str(&self.log_tail).map_err(|source| StoreError::CorruptDocument {
                what: "log tail",
                key: format!("{} (uid {})", self.run, self.uid),
                source,
            })?;
        Ok(RunStateRecord {
            uid: self.uid,
            run: self.run,
            node: self.node,
            phase: self.phase,
            placed_at: self.placed_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            reason: self.reason,
            message: self.message,
            log_tail,
            updated_at: self.updated_at,
        })
    }
}

impl Store {
    /// Inserts or replaces `records` (by uid) in one transaction: all or
    /// nothing.
    ///
    /// When a uid appears more than once, the last record wins. Timestamps
    /// keep microseconds. `uid`, `phase` and the run's kind and name must not
    /// be empty, else the whole batch fails with [`StoreError::Query`].
    pub async fn upsert_run_states(&self, records: &[RunStateRecord]) -> Result<(), StoreError> {
        let records = batch::last_per_key(records, |record| &record.uid);
        if records.is_empty() {
            return Ok(());
        }
        // Encoded up front: a `Value`'s text cannot fail to render.
        let log_tails: Vec<String> = records
            .iter()
            .map(|record| serde_json::Value::from(record.log_tail.clone()).to_string())
            .collect();
        let rows: Vec<_> = records.into_iter().zip(&log_tails).collect();
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            for chunk in rows.chunks(batch::rows_per_statement(COLUMNS)) {
                let mut query = QueryBuilder::new(
                    "INSERT INTO run_states \
                     (uid, kind, namespace, name, node, phase, placed_at, started_at, \
                     finished_at, exit_code, reason, message, log_tail, updated_at) ",
                );
                query.push_values(chunk, |mut row, (record, log_tail)| {
                    row.push_bind(record.uid.as_str())
                        .push_bind(record.run.kind.as_str())
                        .push_bind(record.run.namespace.as_str())
                        .push_bind(record.run.name.as_str())
                        .push_bind(record.node.as_deref())
                        .push_bind(record.phase.as_str())
                        .push_bind(record.placed_at.map(stored_time))
                        .push_bind(record.started_at.map(stored_time))
                        .push_bind(record.finished_at.map(stored_time))
                        .push_bind(record.exit_code)
                        .push_bind(record.reason.as_deref())
                        .push_bind(record.message.as_deref())
                        .push_bind(log_tail.as_str())
                        .push_bind(stored_time(record.updated_at));
                });
                query.push(
                    " ON CONFLICT (uid) DO UPDATE SET \
                     kind = excluded.kind, namespace = excluded.namespace, name = excluded.name, \
                     node = excluded.node, phase = excluded.phase, \
                     placed_at = excluded.placed_at, started_at = excluded.started_at, \
                     finished_at = excluded.finished_at, exit_code = excluded.exit_code, \
                     reason = excluded.reason, message = excluded.message, \
                     log_tail = excluded.log_tail, updated_at = excluded.updated_at",
                );
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)
        .map_err(StoreError::query("write run states"))
    }

    /// Every run state, ordered by uid.
    ///
    /// # Errors
    /// [`StoreError::CorruptDocument`] if a stored log tail is not a JSON
    /// array of strings.
    pub async fn run_states(&self) -> Result<Vec<RunStateRecord>, StoreError> {
        const SELECT: &str = "SELECT uid, kind, namespace, name, node, phase, placed_at, \
                              started_at, finished_at, exit_code, reason, message, log_tail, \
                              updated_at FROM run_states ORDER BY uid";
        let rows = with_pool!(self, pool => sqlx::query_as::<_, RunStateRow>(SELECT)
            .fetch_all(pool)
            .await)
        .map_err(StoreError::query("read run states"))?;
        rows.into_iter().map(RunStateRow::into_record).collect()
    }

    /// Deletes the run states of `uids` in one transaction; unknown uids are
    /// ignored.
    ///
    /// The runs' logs are deleted in the same transaction.
    pub async fn delete_run_states(&self, uids: &[String]) -> Result<(), StoreError> {
        let uids = batch::last_per_key(uids, |uid| uid);
        if uids.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            for chunk in uids.chunks(batch::rows_per_statement(1)) {
                let mut query = QueryBuilder::new("DELETE FROM run_states WHERE uid IN (");
                let mut separated = query.separated(", ");
                for uid in chunk {
                    separated.push_bind(uid.as_str());
                }
                query.push(")");
                query.build().execute(&mut *tx).await?;
                // A run's log is stored under its uid (`runs::log_ref`).
                let mut query = QueryBuilder::new(
                    "DELETE FROM run_logs WHERE kind = 'TaskRun' AND name IN (",
                );
                let mut separated = query.separated(", ");
                for uid in chunk {
                    separated.push_bind(uid.as_str());
                }
                query.push(")");
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)
        .map_err(StoreError::query("delete run states"))
    }
}
