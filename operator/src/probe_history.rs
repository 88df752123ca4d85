//! The bounded history of Strategy probe rounds, fed by agent reports.
//!
//! Every report repeats each member's latest round (the agent reports its
//! whole state); a round is written once, the first time a report carries
//! it, and only for Strategies in the reporting node's current assignment,
//! so a node can neither write under another node's name nor fill the
//! store with Strategies it was never given.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use veil_crds::wire::StrategyReport;

use crate::agents::ReportScope;
use crate::store::{ProbeRoundRecord, Store, StoreError};

/// Rounds kept per (Strategy, node): at the default 5-minute interval
/// about four hours.
pub const ROUNDS_KEPT: u32 = 50;
/// Rounds older than this go, whoever's they are (a deleted Strategy's).
pub const MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// Samples kept of one round; a report with more keeps the first ones.
pub const MAX_SAMPLES: usize = 128;

/// Which round was last written per (namespace, strategy, node), so a
/// repeated round costs no store write.
#[derive(Default)]
pub struct ProbeHistory {
    written: Mutex<HashMap<(String, String, String), DateTime<Utc>>>,
}

impl ProbeHistory {
    /// Writes the rounds of `strategies` (from `node`'s report) that are
    /// new and in `scope`; nothing when none is.
    pub async fn record(
        &self,
        store: &Store,
        node: &str,
        strategies: &[StrategyReport],
        scope: &ReportScope,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let rounds = self.new_rounds(node, strategies, scope);
        if rounds.is_empty() {
            return Ok(());
        }
        store
            .record_probe_rounds(&rounds, ROUNDS_KEPT, now - MAX_AGE)
            .await?;
        let mut written = self.lock();
        for round in rounds {
            written.insert(
                (round.namespace, round.strategy, round.node),
                round.finished_at,
            );
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), DateTime<Utc>>> {
        // Plain map updates: a poisoned lock still holds a consistent map.
        self.written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The reported rounds not written yet, of Strategies in `scope`.
    fn new_rounds(
        &self,
        node: &str,
        strategies: &[StrategyReport],
        scope: &ReportScope,
    ) -> Vec<ProbeRoundRecord> {
        let written = self.lock();
        strategies
            .iter()
            .filter_map(|report| {
                let probe = report.probe.as_ref()?;
                if probe.round.is_empty() {
                    return None;
                }
                let id = &report.strategy;
                if !scope.allows_strategy(&id.namespace, &id.name) {
                    return None;
                }
                let finished_at = DateTime::parse_from_rfc3339(probe.last_probe.as_deref()?)
                    .ok()?
                    .with_timezone(&Utc);
                let key = (id.namespace.clone(), id.name.clone(), node.to_owned());
                if written.get(&key) == Some(&finished_at) {
                    return None;
                }
                let mut samples = probe.round.clone();
                samples.truncate(MAX_SAMPLES);
                Some(ProbeRoundRecord {
                    namespace: key.0,
                    strategy: key.1,
                    node: key.2,
                    finished_at,
                    score: probe.score,
                    samples,
                })
            })
            .collect()
    }
}
