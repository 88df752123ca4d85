//! Registered agents (nodes), so VeilNodes survive operator restarts, and the
//! sequence number of each node's last applied report.
//!
//! Agents number their reports and retry until acknowledged, so a report
//! can arrive twice; [`Store::claim_report_seq`] lets exactly one delivery
//! through, even when retries race. Registrations are stored as their
//! compact JSON text and returned as parsed from it.

use chrono::{DateTime, Utc};

use super::stored_time;
use super::{NodeRecord, Store, StoreError};

/// A node row as read back, before its registration is parsed.
#[derive(sqlx::FromRow)]
struct NodeRow {
    node: String,
    registration: String,
    registered_at: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    last_report_seq: i64,
}

impl NodeRow {
    fn into_record(self) -> Result<NodeRecord, StoreError> {
        let registration = serde_json::from_str(&self.registration).map_err(|source| {
            StoreError::CorruptDocument {
                what: "registration",
                key: format!("node {}", self.node),
                source,
            }
        })?;
        Ok(NodeRecord {
            node: self.node,
            registration,
            registered_at: self.registered_at,
            last_seen: self.last_seen,
            last_report_seq: self.last_report_seq,
        })
    }
}

impl Store {
    /// Inserts or replaces the registration of `record.node`.
    ///
    /// Every field is replaced except `last_report_seq`, which never
    /// decreases: the stored value becomes the greater of the stored one and
    /// `record`'s, so re-registering (with `0`, say) never lets an applied
    /// report through again. `node` must not be empty, else
    /// [`StoreError::Query`].
    pub async fn upsert_node(&self, record: &NodeRecord) -> Result<(), StoreError> {
        // CASE rather than MAX/GREATEST: the two backends spell those differently.
        const UPSERT: &str = "INSERT INTO nodes \
                              (node, registration, registered_at, last_seen, last_report_seq) \
                              VALUES ($1, $2, $3, $4, $5) \
                              ON CONFLICT (node) DO UPDATE SET \
                              registration = excluded.registration, \
                              registered_at = excluded.registered_at, \
                              last_seen = excluded.last_seen, \
                              last_report_seq = CASE \
                              WHEN nodes.last_report_seq > excluded.last_report_seq \
                              THEN nodes.last_report_seq ELSE excluded.last_report_seq END";
        let registration = record.registration.to_string();
        with_pool!(self, pool => sqlx::query(UPSERT)
            .bind(record.node.as_str())
            .bind(registration.as_str())
            .bind(stored_time(record.registered_at))
            .bind(stored_time(record.last_seen))
            .bind(record.last_report_seq)
            .execute(pool)
            .await
            .map(drop))
        .map_err(StoreError::query("register a node"))
    }

    /// Sets the last time `node` was heard from; does nothing for a node
    /// that is not registered.
    pub async fn touch_node(&self, node: &str, last_seen: DateTime<Utc>) -> Result<(), StoreError> {
        const UPDATE: &str = "UPDATE nodes SET last_seen = $2 WHERE node = $1";
        with_pool!(self, pool => sqlx::query(UPDATE)
            .bind(node)
            .bind(stored_time(last_seen))
            .execute(pool)
            .await
            .map(drop))
        .map_err(StoreError::query("record a node heartbeat"))
    }

    /// Every registered node, ordered by name.
    ///
    /// # Errors
    /// [`StoreError::CorruptDocument`] if a stored registration is not
    /// valid JSON.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        const SELECT: &str = "SELECT node, registration, registered_at, last_seen, last_report_seq \
                              FROM nodes ORDER BY node";
        let rows =
            with_pool!(self, pool => sqlx::query_as::<_, NodeRow>(SELECT).fetch_all(pool).await)
                .map_err(StoreError::query("read nodes"))?;
        rows.into_iter().map(NodeRow::into_record).collect()
    }

    /// Applies report `seq` for `node` once: returns true and records it if
    /// seq > last_report_seq, false otherwise.
    ///
    /// Atomic (one conditional update): of several callers claiming the same
    /// `seq` at once, in this process or another, exactly one gets `true`.
    /// Returns `false` for a node that is not registered: register first.
    pub async fn claim_report_seq(&self, node: &str, seq: i64) -> Result<bool, StoreError> {
        const CLAIM: &str =
            "UPDATE nodes SET last_report_seq = $2 WHERE node = $1 AND last_report_seq < $2";
        with_pool!(self, pool => sqlx::query(CLAIM)
            .bind(node)
            .bind(seq)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() == 1))
        .map_err(StoreError::query("claim a report sequence number"))
    }

    /// Forgets `node`. Returns `true` if it was registered.
    pub async fn delete_node(&self, node: &str) -> Result<bool, StoreError> {
        const DELETE: &str = "DELETE FROM nodes WHERE node = $1";
        with_pool!(self, pool => sqlx::query(DELETE)
            .bind(node)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() == 1))
        .map_err(StoreError::query("delete a node"))
    }
}
