//! Strategy probe rounds: the samples of each round an agent reported for a
//! Strategy on its node, kept as a bounded history for `veil-operator get
//! strategy NAME -o wide` (design §7: "probe samples").
//!
//! Bounded two ways, in the transaction that records new rounds: at most
//! `keep` rounds per (Strategy, node), and none finished before a cut-off
//! (a deleted Strategy's or node's rounds age out).

use chrono::{DateTime, Utc};
use veil_crds::wire::ProbeSample;

use super::pool::begin_write;
use super::stored_time;
use super::{Store, StoreError};

/// One probe round of a Strategy (`namespace`/`strategy`) on `node`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeRoundRecord {
    pub namespace: String,
    pub strategy: String,
    pub node: String,
    /// When the round finished; with the three names, the round's key.
    pub finished_at: DateTime<Utc>,
    /// The Strategy's score as reported with the round.
    pub score: Option<f64>,
    /// The round's samples, in target order.
    pub samples: Vec<ProbeSample>,
}

/// A probe-round row as read back, before its samples are parsed.
#[derive(sqlx::FromRow)]
struct ProbeRoundRow {
    namespace: String,
    strategy: String,
    node: String,
    finished_at: DateTime<Utc>,
    score: Option<f64>,
    samples: String,
}

impl ProbeRoundRow {
    fn into_record(self) -> Result<ProbeRoundRecord, StoreError> {
        let samples =
            serde_json::from_str(&self.samples).map_err(|source| StoreError::CorruptDocument {
                what: "probe samples",
                key: format!(
                    "{}/{} on node {} at {}",
                    self.namespace, self.strategy, self.node, self.finished_at
                ),
                source,
            })?;
        Ok(ProbeRoundRecord {
            namespace: self.namespace,
            strategy: self.strategy,
            node: self.node,
            finished_at: self.finished_at,
            score: self.score,
            samples,
        })
    }
}

impl Store {
    /// Records `rounds` in one transaction, each at most once (a round
    /// already stored under its key is left as it is), then keeps only the
    /// newest `keep` rounds of every (Strategy, node) written to and drops
    /// every round that finished before `oldest`. Returns how many rounds
    /// were new. `keep` must be at least 1.
    pub async fn record_probe_rounds(
        &self,
        rounds: &[ProbeRoundRecord],
        keep: u32,
        oldest: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        const INSERT: &str = "INSERT INTO probe_rounds \
                              (namespace, strategy, node, finished_at, score, samples) \
                              VALUES ($1, $2, $3, $4, $5, $6) \
                              ON CONFLICT (namespace, strategy, node, finished_at) DO NOTHING";
        // Deletes what is older than the `keep`-th newest round (no row
        // when there are fewer: the comparison with NULL deletes nothing).
        const TRIM: &str = "DELETE FROM probe_rounds \
                            WHERE namespace = $1 AND strategy = $2 AND node = $3 \
                            AND finished_at < (SELECT finished_at FROM probe_rounds \
                                WHERE namespace = $1 AND strategy = $2 AND node = $3 \
                                ORDER BY finished_at DESC LIMIT 1 OFFSET $4)";
        const AGE_OUT: &str = "DELETE FROM probe_rounds WHERE finished_at < $1";
        if rounds.is_empty() {
            return Ok(0);
        }
        // Encoded up front: samples always render as JSON.
        let texts: Vec<String> = rounds
            .iter()
            .map(|r| serde_json::to_string(&r.samples).unwrap_or_else(|_| "[]".to_owned()))
            .collect();
        let offset = i64::from(keep.max(1) - 1);
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            let mut new = 0;
            for (round, samples) in rounds.iter().zip(&texts) {
                let done = sqlx::query(INSERT)
                    .bind(round.namespace.as_str())
                    .bind(round.strategy.as_str())
                    .bind(round.node.as_str())
                    .bind(stored_time(round.finished_at))
                    .bind(round.score)
                    .bind(samples.as_str())
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 1 {
                    new += 1;
                    sqlx::query(TRIM)
                        .bind(round.namespace.as_str())
                        .bind(round.strategy.as_str())
                        .bind(round.node.as_str())
                        .bind(offset)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            sqlx::query(AGE_OUT)
                .bind(stored_time(oldest))
                .execute(&mut *tx)
                .await?;
            tx.commit().await.map(|()| new)
        }
        .await)
        .map_err(StoreError::query("record probe rounds"))
    }

    /// The stored rounds of Strategy `namespace`/`strategy`: up to
    /// `per_node` of each node, by node name, newest first.
    pub async fn probe_rounds(
        &self,
        namespace: &str,
        strategy: &str,
        per_node: usize,
    ) -> Result<Vec<ProbeRoundRecord>, StoreError> {
        const SELECT: &str = "SELECT namespace, strategy, node, finished_at, score, samples \
                              FROM probe_rounds WHERE namespace = $1 AND strategy = $2 \
                              ORDER BY node, finished_at DESC";
        let rows = with_pool!(self, pool => sqlx::query_as::<_, ProbeRoundRow>(SELECT)
            .bind(namespace)
            .bind(strategy)
            .fetch_all(pool)
            .await)
        .map_err(StoreError::query("read probe rounds"))?;
        let mut out: Vec<ProbeRoundRecord> = Vec::new();
        let mut of_node = 0;
        for row in rows {
            if out.last().is_some_and(|last| last.node == row.node) {
                of_node += 1;
            } else {
                of_node = 1;
            }
            if of_node <= per_node {
                out.push(row.into_record()?);
            }
        }
        Ok(out)
    }
}
