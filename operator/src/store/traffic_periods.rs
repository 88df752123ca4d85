//! What VlessKey traffic periods need besides the lifetime counters:
//! per-key baselines (the counters at the start of the current period) and
//! when each user's traffic was last seen.
//!
//! Baselines are written by the reconcile loop when a period begins;
//! last-seen times by the agent API after a report's deltas were applied.

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::pool::begin_write;
use super::stored_time;
use super::{Store, StoreError, TrafficBaselineRecord, TrafficSeenRecord, batch};

/// Columns of `traffic_baselines`, in the order rows are bound.
const BASELINE_COLUMNS: usize = 6;

impl Store {
    /// Inserts or replaces `records` (by key uid) in one transaction: all or
    /// nothing. When a uid appears more than once, the last record wins.
    ///
    /// # Errors
    /// [`StoreError::Query`] for an empty uid or negative counters (the
    /// whole batch is rolled back).
    pub async fn upsert_traffic_baselines(
        &self,
        records: &[TrafficBaselineRecord],
    ) -> Result<(), StoreError> {
        let records = batch::last_per_key(records, |record| &record.key_uid);
        if records.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            for chunk in records.chunks(batch::rows_per_statement(BASELINE_COLUMNS)) {
                let mut query = QueryBuilder::new(
                    "INSERT INTO traffic_baselines \
                     (key_uid, server, email, period_start, uplink, downlink) ",
                );
                query.push_values(chunk, |mut row, record| {
                    row.push_bind(record.key_uid.as_str())
                        .push_bind(record.server.as_str())
                        .push_bind(record.email.as_str())
                        .push_bind(stored_time(record.period_start))
                        .push_bind(record.uplink)
                        .push_bind(record.downlink);
                });
                query.push(
                    " ON CONFLICT (key_uid) DO UPDATE SET \
                     server = excluded.server, email = excluded.email, \
                     period_start = excluded.period_start, \
                     uplink = excluded.uplink, downlink = excluded.downlink",
                );
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)
        .map_err(StoreError::query("write traffic baselines"))
    }

    /// Every baseline, ordered by key uid.
    pub async fn traffic_baselines(&self) -> Result<Vec<TrafficBaselineRecord>, StoreError> {
        const SELECT: &str = "SELECT key_uid, server, email, period_start, uplink, downlink \
                              FROM traffic_baselines ORDER BY key_uid";
        with_pool!(self, pool => sqlx::query_as::<_, TrafficBaselineRecord>(SELECT)
            .fetch_all(pool)
            .await)
        .map_err(StoreError::query("read traffic baselines"))
    }

    /// Deletes the baselines of `key_uids` (keys that are gone) in one
    /// transaction; unknown uids are ignored.
    pub async fn delete_traffic_baselines(&self, key_uids: &[String]) -> Result<(), StoreError> {
        let uids = batch::last_per_key(key_uids, |uid| uid);
        if uids.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            for chunk in uids.chunks(batch::rows_per_statement(1)) {
                let mut query =
                    QueryBuilder::new("DELETE FROM traffic_baselines WHERE key_uid IN (");
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
        .map_err(StoreError::query("delete traffic baselines"))
    }

    /// Records that traffic of each `(server, email)` was seen at `at`,
    /// unless a later time is stored: last-seen times never move backwards,
    /// even when writers race. Duplicates in `users` are ignored.
    pub async fn record_traffic_seen(
        &self,
        users: &[(String, String)],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let users = batch::last_per_key(users, |user| user);
        if users.is_empty() {
            return Ok(());
        }
        let at = stored_time(at);
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            for chunk in users.chunks(batch::rows_per_statement(3)) {
                let mut query =
                    QueryBuilder::new("INSERT INTO traffic_last_seen (server, email, last_seen) ");
                query.push_values(chunk, |mut row, (server, email)| {
                    row.push_bind(server.as_str())
                        .push_bind(email.as_str())
                        .push_bind(at);
                });
                // SQLite compares the stored RFC 3339 text, which sorts in
                // time order (see `set_last_schedule_time`).
                query.push(
                    " ON CONFLICT (server, email) DO UPDATE SET last_seen = excluded.last_seen \
                     WHERE traffic_last_seen.last_seen < excluded.last_seen",
                );
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)
        .map_err(StoreError::query("record when traffic was seen"))
    }

    /// Every last-seen time, ordered by server then email.
    pub async fn traffic_last_seen(&self) -> Result<Vec<TrafficSeenRecord>, StoreError> {
        const SELECT: &str = "SELECT server, email, last_seen FROM traffic_last_seen \
                              ORDER BY server, email";
        with_pool!(self, pool => sqlx::query_as::<_, TrafficSeenRecord>(SELECT)
            .fetch_all(pool)
            .await)
        .map_err(StoreError::query("read traffic last-seen times"))
    }
}
