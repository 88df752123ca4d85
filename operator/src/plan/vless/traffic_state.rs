//! Traffic as the store holds it, mirrored in memory: lifetime counters,
//! last-seen times and period baselines, with a log of what changed lately
//! so that planning can tell which users a change reached without
//! comparing every counter (see [`TrafficState::changes_since`]).
//!
//! Every change goes through a method, which logs it: the maps are private.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use super::inputs::{Counters, UserKey};
use crate::records::{TrafficBaselineRecord, TrafficTotal};

/// How many changes the log keeps; an older version than that reads as
/// "anything may have changed".
const LOG_LIMIT: usize = 1 << 17;

/// A source of distinct epochs: a state loaded anew never shares one with
/// a state planned before.
static EPOCHS: AtomicU64 = AtomicU64::new(1);

/// Counters, last-seen times and baselines, and the log of their changes.
/// Two states are equal when their counters, times and baselines are
/// (whatever their logs say).
#[derive(Clone, Debug)]
pub struct TrafficState {
    totals: HashMap<UserKey, Counters>,
    last_seen: HashMap<UserKey, DateTime<Utc>>,
    baselines: HashMap<String, TrafficBaselineRecord>,
    epoch: u64,
    revision: u64,
    /// `(revision, what)` of the latest changes, oldest first, revisions
    /// consecutive.
    recent: VecDeque<(u64, Touched)>,
}

/// What one change touched.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Touched {
    /// A user's counters or last-seen time.
    User(UserKey),
    /// The baseline of a VlessKey (by uid).
    Baseline(String),
}

/// Which state, after how many changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrafficVersion {
    epoch: u64,
    revision: u64,
}

impl PartialEq for TrafficState {
    fn eq(&self, other: &TrafficState) -> bool {
        self.totals == other.totals
            && self.last_seen == other.last_seen
            && self.baselines == other.baselines
    }
}

impl Eq for TrafficState {}

impl Default for TrafficState {
    fn default() -> TrafficState {
        TrafficState {
            totals: HashMap::new(),
            last_seen: HashMap::new(),
            baselines: HashMap::new(),
            epoch: EPOCHS.fetch_add(1, Ordering::Relaxed),
            revision: 0,
            recent: VecDeque::new(),
        }
    }
}

impl TrafficState {
    /// A state loaded from the store (a new epoch: nothing is known to
    /// have stayed the same).
    pub fn loaded(
        totals: Vec<TrafficTotal>,
        baselines: Vec<TrafficBaselineRecord>,
        last_seen: impl IntoIterator<Item = (UserKey, DateTime<Utc>)>,
    ) -> TrafficState {
        let totals = totals
            .into_iter()
            .map(|total| {
                let counters = Counters {
                    uplink: total.uplink.max(0) as u64,
                    downlink: total.downlink.max(0) as u64,
                };
                ((total.server, total.email), counters)
            })
            .collect();
        TrafficState {
            totals,
            last_seen: last_seen.into_iter().collect(),
            baselines: baselines
                .into_iter()
                .map(|b| (b.key_uid.clone(), b))
                .collect(),
            ..TrafficState::default()
        }
    }

    /// This state's version, for [`TrafficState::changes_since`].
    pub fn version(&self) -> TrafficVersion {
        TrafficVersion {
            epoch: self.epoch,
            revision: self.revision,
        }
    }

    /// What changed after `since`; `None` when that is not known (another
    /// epoch, or older than the log reaches): anything may have changed.
    pub fn changes_since(&self, since: TrafficVersion) -> Option<impl Iterator<Item = &Touched>> {
        if since.epoch != self.epoch || since.revision > self.revision {
            return None;
        }
        let first = self.recent.front().map_or(self.revision + 1, |(r, _)| *r);
        if since.revision + 1 < first {
            return None;
        }
        let skip = usize::try_from(since.revision + 1 - first).ok()?;
        Some(self.recent.iter().skip(skip).map(|(_, touched)| touched))
    }

    fn touch(&mut self, touched: Touched) {
        self.revision += 1;
        self.recent.push_back((self.revision, touched));
        if self.recent.len() > LOG_LIMIT {
            self.recent.pop_front();
        }
    }

    /// Adds one applied report's deltas (already summed or not).
    pub fn add(&mut self, server: &str, email: &str, uplink: u64, downlink: u64) {
        let user = (server.to_owned(), email.to_owned());
        let counters = self.totals.entry(user.clone()).or_default();
        counters.uplink = counters.uplink.saturating_add(uplink);
        counters.downlink = counters.downlink.saturating_add(downlink);
        self.touch(Touched::User(user));
    }

    /// Traffic of `user` was reported at `at` (an earlier time is ignored).
    pub fn see(&mut self, user: UserKey, at: DateTime<Utc>) {
        match self.last_seen.entry(user.clone()) {
            Entry::Occupied(seen) if *seen.get() >= at => return,
            Entry::Occupied(mut seen) => *seen.get_mut() = at,
            Entry::Vacant(seen) => {
                seen.insert(at);
            }
        }
        self.touch(Touched::User(user));
    }

    /// Holds a baseline (replacing the key's previous one).
    pub fn put_baseline(&mut self, baseline: TrafficBaselineRecord) {
        let uid = baseline.key_uid.clone();
        self.baselines.insert(uid.clone(), baseline);
        self.touch(Touched::Baseline(uid));
    }

    /// Forgets the baseline of the key `uid`.
    pub fn remove_baseline(&mut self, uid: &str) {
        if self.baselines.remove(uid).is_some() {
            self.touch(Touched::Baseline(uid.to_owned()));
        }
    }

    /// The lifetime counters of `(server, email)` (zero when never seen).
    pub fn total(&self, server: &str, email: &str) -> Counters {
        self.totals
            .get(&(server.to_owned(), email.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// The lifetime counters of `user`, when it ever had traffic.
    pub fn counters(&self, user: &UserKey) -> Option<Counters> {
        self.totals.get(user).copied()
    }

    /// When traffic of `(server, email)` was last reported.
    pub fn seen(&self, server: &str, email: &str) -> Option<DateTime<Utc>> {
        self.last_seen
            .get(&(server.to_owned(), email.to_owned()))
            .copied()
    }

    /// The baseline of the key `uid`.
    pub fn baseline(&self, uid: &str) -> Option<&TrafficBaselineRecord> {
        self.baselines.get(uid)
    }

    /// Uids of every key with a baseline.
    pub fn baseline_uids(&self) -> impl Iterator<Item = &String> {
        self.baselines.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users<'a>(changes: impl Iterator<Item = &'a Touched>) -> Vec<Touched> {
        changes.cloned().collect()
    }

    #[test]
    fn changes_since_a_version_are_exactly_the_later_ones() {
        let mut state = TrafficState::default();
        let start = state.version();
        state.add("s", "a", 1, 2);
        let middle = state.version();
        state.put_baseline(TrafficBaselineRecord {
            key_uid: "u1".into(),
            server: "s".into(),
            email: "a".into(),
            period_start: DateTime::UNIX_EPOCH,
            uplink: 0,
            downlink: 0,
        });
        state.remove_baseline("nobody");
        assert_eq!(
            users(state.changes_since(start).unwrap()),
            [
                Touched::User(("s".into(), "a".into())),
                Touched::Baseline("u1".into())
            ]
        );
        assert_eq!(
            users(state.changes_since(middle).unwrap()),
            [Touched::Baseline("u1".into())]
        );
        assert!(
            state
                .changes_since(state.version())
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn another_epoch_or_a_version_past_the_log_is_unknown() {
        let mut state = TrafficState::default();
        let start = state.version();
        assert!(TrafficState::default().changes_since(start).is_none());
        for i in 0..=LOG_LIMIT {
            state.see(
                ("s".into(), "a".into()),
                DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(i as i64),
            );
        }
        assert!(
            state.changes_since(start).is_none(),
            "the log dropped the first change"
        );
        let loaded = TrafficState::loaded(Vec::new(), Vec::new(), Vec::new());
        assert!(loaded.changes_since(state.version()).is_none());
    }
}
