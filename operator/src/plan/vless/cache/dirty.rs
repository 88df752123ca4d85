//! What changed since the last pass, as keys to resolve again or whose
//! status to recompute: servers' facts, the keys themselves, traffic, and
//! the servers' nodes.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use imbl::ordmap::DiffItem;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;

use super::super::servers::Server;
use super::super::{Touched, TrafficState, VlessInputs};
use super::facts::{NodeFacts, NodesChange, ServerFacts, failed_emails_changed, nodes_change};
use super::{Dirty, KeyCache, Settled};
use crate::world::World;

impl KeyCache {
    /// Servers whose facts changed: every key naming them is resolved again.
    pub(super) fn check_servers(
        &mut self,
        world: &World,
        servers: &BTreeMap<&ObjectKey, Server<'_>>,
        dirty: &mut Dirty,
    ) {
        let named: Vec<ObjectKey> = self.by_server.keys().cloned().collect();
        let mut seen = HashSet::new();
        for key in named.iter().chain(servers.keys().copied()) {
            if !seen.insert(key) {
                continue;
            }
            let facts = ServerFacts::of(key, servers.get(key), world);
            if self.server_facts.get(key) != Some(&facts) {
                if let Some(keys) = self.by_server.get(key) {
                    dirty.resolve.extend(keys.iter().cloned());
                }
                self.server_facts.insert(key.clone(), facts);
            }
        }
        self.server_facts.retain(|key, _| seen.contains(key));
    }

    /// New, changed, deleted keys; generated ids; timers; statuses that are
    /// not the ones this cache made. Each from what changed since the last
    /// pass, not from a walk over every key: the world and the generated
    /// ids by a diff of persistent maps (shared parts unvisited), time from
    /// the timers; only statuses replaced from outside (the previous map
    /// is not the one [`KeyCache::record`] took) need a walk.
    pub(super) fn check_keys(&mut self, inputs: &VlessInputs<'_>, dirty: &mut Dirty) {
        let mut deleted = Vec::new();
        for item in self.world.diff(&inputs.world.objects) {
            match item {
                DiffItem::Add(key, _) | DiffItem::Update { new: (key, _), .. }
                    if key.kind == Kind::VlessKey =>
                {
                    dirty.resolve.insert(key.clone());
                }
                DiffItem::Remove(key, _) if key.kind == Kind::VlessKey => deleted.push(key.clone()),
                _ => {}
            }
        }
        self.world = inputs.world.objects.clone();
        for uid in crate::world::changed_keys(&self.ids, &inputs.secrets.vless_ids) {
            if let Some(key) = self.by_uid.get(uid) {
                dirty.resolve.insert(key.clone());
            }
        }
        self.ids = inputs.secrets.vless_ids.clone();
        let due = self.timers.iter().take_while(|(at, _)| *at <= inputs.now);
        dirty.resolve.extend(due.map(|(_, key)| key.clone()));
        let traffic = inputs.traffic;
        self.awaiting.retain(|key, proposed| {
            if traffic.baseline(&proposed.key_uid) == Some(proposed) {
                dirty.confirmed.insert(key.clone());
                return false;
            }
            // Not stored (a follower, a failed write) or stored otherwise.
            dirty.resolve.insert(key.clone());
            true
        });
        if !self.made(inputs.previous) {
            self.check_statuses(inputs.previous, dirty);
        }
        for key in deleted {
            self.forget(&key, inputs.traffic, dirty);
        }
    }

    /// Keys whose previous status is not the one this cache made.
    fn check_statuses(&self, previous: &crate::plan::Statuses, dirty: &mut Dirty) {
        // Walked alongside, all in key order: no lookup per key.
        let first = ObjectKey::new(Kind::VlessKey, "", "");
        let mut previous = previous.range(first..).peekable();
        for (key, entry) in &self.entries {
            while previous.next_if(|(k, _)| *k < key).is_some() {}
            let status = previous.next_if(|(k, _)| *k == key).map(|(_, raw)| raw);
            let same = match (status, &entry.output) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            if !same {
                dirty.status.insert(key.clone());
            }
        }
    }

    /// Removes a deleted key from every index; the keys sharing its email
    /// are resolved again (one of them may hold it now).
    pub(super) fn forget(&mut self, key: &ObjectKey, traffic: &TrafficState, dirty: &mut Dirty) {
        let Some(entry) = self.entries.remove(key) else {
            return;
        };
        self.count_phase(&entry.phase, -1);
        self.awaiting.remove(key);
        self.forgotten.push(key.clone());
        if let Some(keys) = self.by_server.get_mut(&entry.server) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_server.remove(&entry.server);
            }
        }
        self.note_settled(&entry.server, key, Settled::Independent);
        if let Some(group) = &entry.group {
            self.leave_group(group, entry.created, key);
            if let Some(members) = self.groups.get(group) {
                dirty.resolve.extend(members.iter().map(|(_, k)| k.clone()));
            }
        }
        self.drop_user(&entry.server, entry.user());
        if let Some(at) = entry.next_change {
            self.timers.remove(&(at, key.clone()));
        }
        self.leave_traffic_user(key, entry.traffic_user.as_ref());
        if let Some(uid) = entry.object.meta().uid.as_deref() {
            self.by_uid.remove(uid);
            self.note_baseline(uid, traffic);
        }
    }

    /// Keys whose counters, last-seen time or baseline changed since the
    /// last pass, from the traffic's change log; every key when the log
    /// does not reach back that far (or the traffic was loaded anew).
    pub(super) fn check_traffic(&mut self, traffic: &TrafficState, dirty: &mut Dirty) {
        let changes = self.traffic.and_then(|since| traffic.changes_since(since));
        self.traffic = Some(traffic.version());
        let Some(changes) = changes else {
            dirty.resolve.extend(self.entries.keys().cloned());
            self.stale_baselines = traffic
                .baseline_uids()
                .filter(|uid| !self.by_uid.contains_key(*uid))
                .cloned()
                .collect();
            return;
        };
        for touched in changes {
            match touched {
                Touched::User(user) => {
                    if let Some(keys) = self.by_user.get(user) {
                        dirty.resolve.extend(keys.iter().cloned());
                    }
                }
                Touched::Baseline(uid) => {
                    if let Some(key) = self.by_uid.get(uid)
                        && !dirty.confirmed.contains(key)
                    {
                        dirty.resolve.insert(key.clone());
                    }
                    self.note_baseline(uid, traffic);
                }
            }
        }
    }

    /// Keeps `uid` among the stale baselines exactly when it has a baseline
    /// and no key.
    pub(super) fn note_baseline(&mut self, uid: &str, traffic: &TrafficState) {
        if traffic.baseline(uid).is_some() && !self.by_uid.contains_key(uid) {
            self.stale_baselines.insert(uid.to_owned());
        } else {
            self.stale_baselines.remove(uid);
        }
    }

    /// Keys whose status the servers' nodes changed.
    pub(super) fn check_nodes(
        &mut self,
        inputs: &VlessInputs<'_>,
        servers: &BTreeMap<&ObjectKey, Server<'_>>,
        hashes: &HashMap<&ObjectKey, String>,
        dirty: &mut Dirty,
    ) {
        for (&key, server) in servers {
            let hash = hashes.get(key).map(String::as_str);
            let new = NodeFacts::of(server, hash, inputs.views);
            let old = self.node_facts.remove(key);
            let change = old
                .as_deref()
                .map_or(NodesChange::Other, |old| nodes_change(old, &new));
            let all_running = new.iter().all(|n| {
                n.report()
                    .is_some_and(|r| r.phase == veil_crds::common::WorkloadPhase::Running)
            });
            let members = match change {
                NodesChange::Same => None,
                // Only the unsettled: the index spares walking the others.
                NodesChange::AppliedOnly if all_running => self.unsettled.get(key),
                NodesChange::AppliedOnly | NodesChange::Other => self.by_server.get(key),
            };
            for member in members.into_iter().flatten() {
                let settled = self.entries.get(member).map_or(Settled::No, |e| e.settled);
                let recompute = match change {
                    NodesChange::Same => false,
                    NodesChange::Other => true,
                    NodesChange::AppliedOnly => match settled {
                        Settled::Independent | Settled::AllStopped => false,
                        Settled::AllRunning => !all_running,
                        Settled::No => true,
                    },
                };
                if recompute {
                    dirty.status.insert(member.clone());
                }
            }
            for email in failed_emails_changed(old.as_deref().unwrap_or_default(), &new) {
                if let Some(group) = self.groups.get(&(key.clone(), email.to_lowercase())) {
                    dirty.status.extend(group.iter().map(|(_, k)| k.clone()));
                }
            }
            self.node_facts.insert(key.clone(), new);
        }
        self.node_facts.retain(|key, _| servers.contains_key(key));
    }
}
