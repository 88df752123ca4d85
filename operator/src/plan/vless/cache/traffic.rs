//! Which users' traffic changed between two traffic states: counters, last
//! seen times and period baselines. Only the keys of those users are
//! resolved again.

use std::collections::HashSet;

use super::super::inputs::TrafficState;

/// Users (`(server, email)`) and VlessKey uids whose traffic changed.
#[derive(Debug, Default)]
pub struct TrafficChange<'t> {
    pub users: HashSet<(&'t str, &'t str)>,
    pub uids: HashSet<&'t str>,
}

impl TrafficChange<'_> {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.uids.is_empty()
    }
}

/// What changed from `old` to `new` (empty when they are equal).
pub fn traffic_change<'t>(old: &'t TrafficState, new: &'t TrafficState) -> TrafficChange<'t> {
    let mut change = TrafficChange::default();
    if old == new {
        return change;
    }
    for (user, counters) in &new.totals {
        if old.totals.get(user) != Some(counters) {
            change.users.insert((&user.0, &user.1));
        }
    }
    for (user, seen) in &new.last_seen {
        if old.last_seen.get(user) != Some(seen) {
            change.users.insert((&user.0, &user.1));
        }
    }
    for user in old.totals.keys().chain(old.last_seen.keys()) {
        if !new.totals.contains_key(user) || !new.last_seen.contains_key(user) {
            change.users.insert((&user.0, &user.1));
        }
    }
    for (uid, baseline) in &new.baselines {
        if old.baselines.get(uid) != Some(baseline) {
            change.uids.insert(uid);
        }
    }
    for uid in old.baselines.keys() {
        if !new.baselines.contains_key(uid) {
            change.uids.insert(uid);
        }
    }
    change
}
