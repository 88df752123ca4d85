//! Exactly-once traffic accounting.
//!
//! Agents number their reports per (node, stream) and retry until
//! acknowledged, so the same report can arrive twice. The store remembers
//! the last applied sequence number of each stream and adds a report's
//! deltas in the same transaction that advances it: a report is counted
//! once, or not at all.

use sqlx::QueryBuilder;
use std::collections::HashMap;

use super::pool::begin_write;
use super::{Store, StoreError, TrafficDelta, TrafficTotal, batch};

impl Store {
    /// Adds `deltas` to the counters if `seq` is greater than the last
    /// applied sequence number of `(node, stream)`, and records `seq` as
    /// applied; returns whether it applied. Atomic: the sequence number
    /// advances if and only if every delta was added.
    ///
    /// Deltas for the same (server, email) are summed. A stream starts with
    /// no applied sequence number, so its first report applies whatever its
    /// `seq`.
    ///
    /// # Errors
    /// [`StoreError::InvalidTrafficDelta`] for a negative delta or summed
    /// deltas that overflow; [`StoreError::Query`] if a counter would
    /// overflow. Nothing is applied in either case.
    pub async fn apply_traffic_delta(
        &self,
        node: &str,
        stream: &str,
        seq: i64,
        deltas: &[TrafficDelta],
    ) -> Result<bool, StoreError> {
        const ADVANCE: &str = "INSERT INTO traffic_streams (node, stream, last_seq) VALUES ($1, $2, $3) \
                               ON CONFLICT (node, stream) DO UPDATE SET last_seq = excluded.last_seq \
                               WHERE traffic_streams.last_seq < excluded.last_seq";
        let deltas = sum_per_user(deltas)?;
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            // Zero rows affected: `seq` was already applied. Dropping the
            // transaction rolls back (there is nothing to roll back).
            let advanced = sqlx::query(ADVANCE)
                .bind(node)
                .bind(stream)
                .bind(seq)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if advanced == 0 {
                return Ok(false);
            }
            for chunk in deltas.chunks(batch::rows_per_statement(4)) {
                let mut query =
                    QueryBuilder::new("INSERT INTO traffic_totals (server, email, uplink, downlink) ");
                query.push_values(chunk, |mut row, delta| {
                    row.push_bind(delta.server.as_str())
                        .push_bind(delta.email.as_str())
                        .push_bind(delta.uplink)
                        .push_bind(delta.downlink);
                });
                query.push(
                    " ON CONFLICT (server, email) DO UPDATE SET \
                     uplink = traffic_totals.uplink + excluded.uplink, \
                     downlink = traffic_totals.downlink + excluded.downlink",
                );
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await.map(|()| true)
        }
        .await)
        .map_err(StoreError::query("apply traffic deltas"))
    }

    /// Accumulated traffic per (server, email), ordered by server then email.
    pub async fn traffic_totals(&self) -> Result<Vec<TrafficTotal>, StoreError> {
        const SELECT: &str = "SELECT server, email, uplink, downlink FROM traffic_totals \
                              ORDER BY server, email";
        with_pool!(self, pool => sqlx::query_as::<_, TrafficTotal>(SELECT).fetch_all(pool).await)
            .map_err(StoreError::query("read traffic totals"))
    }
}

/// Checks that deltas are not negative and sums those of the same user, in
/// first-seen order, so one statement never touches a counter twice.
fn sum_per_user(deltas: &[TrafficDelta]) -> Result<Vec<TrafficDelta>, StoreError> {
    let invalid = |delta: &TrafficDelta, reason| StoreError::InvalidTrafficDelta {
        server: delta.server.clone(),
        email: delta.email.clone(),
        reason,
    };
    let mut summed: Vec<TrafficDelta> = Vec::with_capacity(deltas.len());
    let mut index: HashMap<(&str, &str), usize> = HashMap::with_capacity(deltas.len());
    for delta in deltas {
        if delta.uplink < 0 || delta.downlink < 0 {
            return Err(invalid(delta, "byte counts must not be negative"));
        }
        match index.get(&(delta.server.as_str(), delta.email.as_str())) {
            Some(&at) => {
                let total = &mut summed[at];
                total.uplink = total
                    .uplink
                    .checked_add(delta.uplink)
                    .ok_or_else(|| invalid(delta, "uplink bytes overflow"))?;
                total.downlink = total
                    .downlink
                    .checked_add(delta.downlink)
                    .ok_or_else(|| invalid(delta, "downlink bytes overflow"))?;
            }
            None => {
                index.insert((&delta.server, &delta.email), summed.len());
                summed.push(delta.clone());
            }
        }
    }
    Ok(summed)
}
