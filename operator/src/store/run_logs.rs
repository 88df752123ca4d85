//! Task-run logs: chunks of output an agent streams for a run, each with the
//! agent's sequence number. Retried reports resend chunks; storing per
//! (run, seq) makes appending idempotent.

use std::collections::BTreeSet;

use super::pool::begin_write;
use super::{ObjectRef, Store, StoreError};

/// The chunk that replaces output dropped from the front of a log that grew
/// past its cap, so a reader sees that something is missing.
pub fn truncation_marker(cap: i64) -> String {
    format!(
        "[veil: earlier output of this run was dropped; the store keeps the last {cap} characters of a run's log]\n"
    )
}

impl Store {
    /// Stores `chunks` (run, seq, text) in one transaction, each at most
    /// once per (run, seq), then trims every run they touched to its last
    /// `cap` characters: whole chunks are dropped from the front and
    /// replaced by one [`truncation_marker`] chunk (under the newest
    /// dropped seq, so it reads first). Returns, per chunk, whether it was
    /// stored now (false: already stored).
    pub async fn append_logs(
        &self,
        chunks: &[(ObjectRef, i64, &str)],
        cap: i64,
    ) -> Result<Vec<bool>, StoreError> {
        const INSERT: &str = "INSERT INTO run_logs (kind, namespace, name, seq, chunk) \
                              VALUES ($1, $2, $3, $4, $5) \
                              ON CONFLICT (kind, namespace, name, seq) DO NOTHING";
        const SIZES: &str = "SELECT seq, CAST(LENGTH(chunk) AS BIGINT) FROM run_logs \
                             WHERE kind = $1 AND namespace = $2 AND name = $3 ORDER BY seq DESC";
        const DROP: &str = "DELETE FROM run_logs \
                            WHERE kind = $1 AND namespace = $2 AND name = $3 AND seq <= $4";
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        let marker = truncation_marker(cap);
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            let mut stored = Vec::with_capacity(chunks.len());
            let mut grown: BTreeSet<&ObjectRef> = BTreeSet::new();
            for (run, seq, text) in chunks {
                let done = sqlx::query(INSERT)
                    .bind(run.kind.as_str())
                    .bind(run.namespace.as_str())
                    .bind(run.name.as_str())
                    .bind(*seq)
                    .bind(*text)
                    .execute(&mut *tx)
                    .await?;
                stored.push(done.rows_affected() == 1);
                if done.rows_affected() == 1 {
                    grown.insert(run);
                }
            }
            for run in grown {
                let sizes = sqlx::query_as::<_, (i64, i64)>(SIZES)
                    .bind(run.kind.as_str())
                    .bind(run.namespace.as_str())
                    .bind(run.name.as_str())
                    .fetch_all(&mut *tx)
                    .await?;
                let mut kept = 0i64;
                let Some(cut) = sizes.iter().find_map(|(seq, size)| {
                    kept = kept.saturating_add(*size);
                    (kept > cap).then_some(*seq)
                }) else {
                    continue;
                };
                sqlx::query(DROP)
                    .bind(run.kind.as_str())
                    .bind(run.namespace.as_str())
                    .bind(run.name.as_str())
                    .bind(cut)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(INSERT)
                    .bind(run.kind.as_str())
                    .bind(run.namespace.as_str())
                    .bind(run.name.as_str())
                    .bind(cut)
                    .bind(marker.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await.map(|()| stored)
        }
        .await)
        .map_err(StoreError::query("append log chunks"))
    }

    /// Stores chunk `seq` of `run`'s log. Returns `false` (and changes
    /// nothing) if that chunk is already stored, even with other text.
    pub async fn append_log(
        &self,
        run: &ObjectRef,
        seq: i64,
        chunk: &str,
    ) -> Result<bool, StoreError> {
        const INSERT: &str = "INSERT INTO run_logs (kind, namespace, name, seq, chunk) \
                              VALUES ($1, $2, $3, $4, $5) \
                              ON CONFLICT (kind, namespace, name, seq) DO NOTHING";
        with_pool!(self, pool => sqlx::query(INSERT)
            .bind(run.kind.as_str())
            .bind(run.namespace.as_str())
            .bind(run.name.as_str())
            .bind(seq)
            .bind(chunk)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() == 1))
        .map_err(StoreError::query("append a log chunk"))
    }

    /// The chunks of `run`'s log with a sequence number greater than
    /// `after_seq`, in sequence order (pass `-1`, or any number below the
    /// first sequence number, to read from the start).
    pub async fn read_log(
        &self,
        run: &ObjectRef,
        after_seq: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        const SELECT: &str = "SELECT seq, chunk FROM run_logs \
                              WHERE kind = $1 AND namespace = $2 AND name = $3 AND seq > $4 \
                              ORDER BY seq";
        with_pool!(self, pool => sqlx::query_as::<_, (i64, String)>(SELECT)
            .bind(run.kind.as_str())
            .bind(run.namespace.as_str())
            .bind(run.name.as_str())
            .bind(after_seq)
            .fetch_all(pool)
            .await)
        .map_err(StoreError::query("read a log"))
    }
}
