//! Task-run logs: chunks of output an agent streams for a run, each with the
//! agent's sequence number. Retried reports resend chunks; storing per
//! (run, seq) makes appending idempotent.

use super::{ObjectRef, Store, StoreError};

impl Store {
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
