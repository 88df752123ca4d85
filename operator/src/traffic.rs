//! The traffic book: every VLESS user's lifetime counters, period baselines
//! and last-seen times, written through to the store and mirrored in memory
//! for `plan`, shared by the agent API (reports) and the controller
//! (baselines).
//!
//! Exactly once: a report's deltas are added in the same store transaction
//! that records its `seq` for the node's [`traffic_stream`], so a retried or
//! replayed report changes nothing; memory and metrics follow only a report
//! the store applied. A report without traffic is not written at all (seqs
//! only grow, so skipping one never lets an older report through).

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use veil_crds::wire::{NodeReport, traffic_stream};

use crate::metrics::{Metrics, ServerDirection};
use crate::plan::vless::TrafficState;
use crate::store::{Store, StoreError, TrafficBaselineRecord, TrafficDelta};

/// Traffic counters in the store and in memory.
pub struct TrafficBook {
    store: Store,
    metrics: Arc<Metrics>,
    /// Copy-on-write: a planning pass holds a snapshot while reports update.
    state: Mutex<Arc<TrafficState>>,
    /// Held from a report's store write to its memory update, and by
    /// [`TrafficBook::reload`]: a reload never lands between the two, which
    /// would count the report's bytes twice in memory.
    applying: tokio::sync::Mutex<()>,
}

impl TrafficBook {
    /// Loads totals, baselines and last-seen times from the store.
    pub async fn load(store: Store, metrics: Arc<Metrics>) -> Result<TrafficBook, StoreError> {
        let state = read_state(&store).await?;
        Ok(TrafficBook {
            store,
            metrics,
            state: Mutex::new(Arc::new(state)),
            applying: tokio::sync::Mutex::new(()),
        })
    }

    /// Replaces what memory holds by what the store holds: for a replica
    /// that takes over from another on a shared store, whose reports it
    /// never saw.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _applying = self.applying.lock().await;
        let state = read_state(&self.store).await?;
        *self.lock() = Arc::new(state);
        Ok(())
    }
}

/// Totals, baselines and last-seen times as the store has them.
async fn read_state(store: &Store) -> Result<TrafficState, StoreError> {
    let last_seen = store
        .traffic_last_seen()
        .await?
        .into_iter()
        .map(|s| ((s.server, s.email), s.last_seen));
    Ok(TrafficState::loaded(
        store.traffic_totals().await?,
        store.traffic_baselines().await?,
        last_seen,
    ))
}

impl TrafficBook {
    fn lock(&self) -> MutexGuard<'_, Arc<TrafficState>> {
        // Every critical section is a plain update of the map; a panic
        // elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state, shared (cheap).
    pub fn snapshot(&self) -> Arc<TrafficState> {
        self.lock().clone()
    }

    /// Applies the traffic of `report` from `node` once; returns whether it
    /// applied (false: no traffic, or this seq was applied before).
    ///
    /// # Errors
    /// [`StoreError::InvalidTrafficDelta`] for a count above `i64::MAX`;
    /// any store error. Nothing is applied then, and a retry may apply it.
    pub async fn apply_report(
        &self,
        node: &str,
        report: &NodeReport,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if report.traffic.is_empty() {
            return Ok(false);
        }
        let deltas = report
            .traffic
            .iter()
            .map(|t| {
                let server = t.server.to_string();
                let bytes = |n: u64| {
                    i64::try_from(n).map_err(|_| StoreError::InvalidTrafficDelta {
                        server: server.clone(),
                        email: t.email.clone(),
                        reason: "byte counts above 2^63 are not plausible",
                    })
                };
                Ok(TrafficDelta {
                    uplink: bytes(t.uplink)?,
                    downlink: bytes(t.downlink)?,
                    server,
                    email: t.email.clone(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let seq = i64::try_from(report.seq).unwrap_or(i64::MAX);
        let _applying = self.applying.lock().await;
        if !self
            .store
            .apply_traffic_delta(node, traffic_stream(), seq, &deltas)
            .await?
        {
            return Ok(false);
        }
        let seen: Vec<(String, String)> = deltas
            .iter()
            .filter(|d| d.uplink > 0 || d.downlink > 0)
            .map(|d| (d.server.clone(), d.email.clone()))
            .collect();
        {
            let mut state = self.lock();
            let state = Arc::make_mut(&mut state);
            for delta in &deltas {
                state.add(
                    &delta.server,
                    &delta.email,
                    delta.uplink as u64,
                    delta.downlink as u64,
                );
                self.count(&delta.server, "uplink", delta.uplink as u64);
                self.count(&delta.server, "downlink", delta.downlink as u64);
            }
            for user in &seen {
                state.see(user.clone(), now);
            }
        }
        // After the counters: a failure here loses a last-seen time, never bytes.
        self.store.record_traffic_seen(&seen, now).await?;
        Ok(true)
    }

    fn count(&self, server: &str, direction: &str, bytes: u64) {
        self.metrics
            .traffic_bytes_total
            .get_or_create(&ServerDirection {
                server: server.to_owned(),
                direction: direction.to_owned(),
            })
            .inc_by(bytes);
    }

    /// Persists baselines of periods that began, then holds them.
    pub async fn put_baselines(
        &self,
        baselines: Vec<TrafficBaselineRecord>,
    ) -> Result<(), StoreError> {
        if baselines.is_empty() {
            return Ok(());
        }
        self.store.upsert_traffic_baselines(&baselines).await?;
        let mut state = self.lock();
        let state = Arc::make_mut(&mut state);
        for baseline in baselines {
            state.put_baseline(baseline);
        }
        Ok(())
    }

    /// Forgets the baselines of keys that are gone.
    pub async fn remove_baselines(&self, key_uids: Vec<String>) -> Result<(), StoreError> {
        if key_uids.is_empty() {
            return Ok(());
        }
        self.store.delete_traffic_baselines(&key_uids).await?;
        let mut state = self.lock();
        let state = Arc::make_mut(&mut state);
        for uid in &key_uids {
            state.remove_baseline(uid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
