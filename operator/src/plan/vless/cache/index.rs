//! The cache's indexes (email groups, user sets, timers, keys by server)
//! and resolving keys again with them.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use veil_crds::object::{Object, ObjectKey};
use veil_crds::vless_key::VlessKey;
use veil_crds::wire::VlessUser;

use super::super::UserKey;
use super::super::keys::{self, Key, KeyState, Subject};
use super::super::servers::Server;
use super::super::{VlessInputs, next_change};
use super::{Dirty, Entry, Group, KeyCache, Resolved, Settled};
use crate::records::TrafficBaselineRecord;
use crate::world::World;

impl KeyCache {
    /// Moves every key to be resolved into its (possibly new) email group;
    /// the members of every group that changed are resolved too.
    pub(super) fn regroup(
        &mut self,
        world: &World,
        servers: &BTreeMap<&ObjectKey, Server<'_>>,
        dirty: &mut Dirty,
    ) {
        let mut touched: Vec<Group> = Vec::new();
        for key in &dirty.resolve {
            let Some((object, created)) = vless_key(world, key) else {
                continue;
            };
            let server = keys::server_of(key, object);
            let group = servers
                .contains_key(&server)
                .then(|| (server, keys::email_of(key, object).to_lowercase()));
            let old = self
                .entries
                .get(key)
                .map(|entry| (entry.group.clone(), entry.created));
            if old.as_ref() == Some(&(group.clone(), created)) {
                continue;
            }
            if let Some((Some(old_group), old_created)) = old {
                self.leave_group(&old_group, old_created, key);
                touched.push(old_group);
            }
            if let Some(group) = group {
                self.groups
                    .entry(group.clone())
                    .or_default()
                    .insert((created, key.clone()));
                touched.push(group);
            }
        }
        for group in touched {
            if let Some(members) = self.groups.get(&group) {
                dirty.resolve.extend(members.iter().map(|(_, k)| k.clone()));
            }
        }
    }

    pub(super) fn leave_group(
        &mut self,
        group: &Group,
        created: Option<DateTime<Utc>>,
        key: &ObjectKey,
    ) {
        if let Some(members) = self.groups.get_mut(group) {
            members.remove(&(created, key.clone()));
            if members.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    /// Takes `key` out of the keys reading `user`'s traffic.
    pub(super) fn leave_traffic_user(
        &mut self,
        key: &ObjectKey,
        user: Option<&super::super::UserKey>,
    ) {
        if let Some(user) = user
            && let Some(keys) = self.by_user.get_mut(user)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.by_user.remove(user);
            }
        }
    }

    pub(super) fn drop_user(&mut self, server: &ObjectKey, email: Option<&str>) {
        if let (Some(set), Some(email)) = (self.users.get_mut(server), email) {
            set.remove(email);
        }
    }

    /// Resolves every key in `keys` again; the baselines of periods that began.
    pub(super) fn resolve_dirty(
        &mut self,
        inputs: &VlessInputs<'_>,
        servers: &BTreeMap<&ObjectKey, Server<'_>>,
        keys: &BTreeSet<ObjectKey>,
    ) -> Vec<TrafficBaselineRecord> {
        // Every old user entry first: a new one may take an email another
        // key of this batch gives up.
        for key in keys {
            if let Some(entry) = self.entries.get(key) {
                let (server, user) = (entry.server.clone(), entry.user().map(str::to_owned));
                self.drop_user(&server, user.as_deref());
            }
        }
        let mut baselines = Vec::new();
        for key in keys {
            let Some((world_key, object)) = inputs.world.objects.get_key_value(key) else {
                continue;
            };
            let Object::VlessKey(vless_key) = &*object.object else {
                continue;
            };
            let created = keys::created(vless_key);
            let named = keys::server_of(key, vless_key);
            let server = servers.get_key_value(&named).map(|(&k, s)| (k, s));
            let holder = self.holder(inputs.world, &named, world_key, vless_key, server.is_some());
            let (resolved, baseline) = keys::resolve_one(
                Subject {
                    key: world_key,
                    object: vless_key,
                    created,
                    server,
                    holder,
                },
                inputs.world,
                inputs.secrets,
                inputs.traffic,
                inputs.now,
            );
            self.store(key, &object.object, named, created, &resolved, inputs.now);
            match &baseline {
                Some(proposed) => self.awaiting.insert(key.clone(), proposed.clone()),
                None => self.awaiting.remove(key),
            };
            baselines.extend(baseline);
        }
        baselines
    }

    /// The older key holding this key's email on its server, if another.
    pub(super) fn holder<'w>(
        &self,
        world: &'w World,
        server: &ObjectKey,
        key: &ObjectKey,
        object: &VlessKey,
        on_server: bool,
    ) -> Option<&'w ObjectKey> {
        if !on_server {
            return None;
        }
        let group = (server.clone(), keys::email_of(key, object).to_lowercase());
        let (_, first) = self.groups.get(&group)?.first()?;
        if first == key {
            return None;
        }
        world.objects.get_key_value(first).map(|(k, _)| k)
    }

    /// Keeps a freshly resolved key: its entry, user, timer and indexes.
    pub(super) fn store(
        &mut self,
        key: &ObjectKey,
        object: &Arc<Object>,
        server: ObjectKey,
        created: Option<DateTime<Utc>>,
        resolved: &Key<'_>,
        now: DateTime<Utc>,
    ) {
        self.join_user_set(&server, resolved);
        let old = self.entries.remove(key);
        let next = next_change(resolved, now);
        let traffic_user = resolved.server.map(|s| {
            (
                format!("{}/{}", s.namespace, s.name),
                resolved.email.clone(),
            )
        });
        self.reindex(key, old.as_deref(), (&server, next, traffic_user.as_ref()));
        if let Some(uid) = object.meta().uid.as_deref() {
            self.by_uid.insert(uid.to_owned(), key.clone());
            self.stale_baselines.remove(uid);
        }
        if let Some(old) = &old {
            self.note_settled(&old.server, key, Settled::Independent);
        }
        let (output, phase, settled) = match old {
            Some(old) => (old.output, old.phase, old.settled),
            None => {
                let phase: Arc<str> = Arc::from("Unknown");
                self.count_phase(&phase, 1);
                (None, phase, Settled::No)
            }
        };
        self.note_settled(&server, key, settled);
        let entry = Entry {
            object: Arc::clone(object),
            server,
            created,
            group: resolved
                .server
                .map(|s| (s.clone(), resolved.email.to_lowercase())),
            resolved: Resolved::of(resolved),
            next_change: next,
            traffic_user,
            output,
            phase,
            settled,
        };
        self.entries.insert(key.clone(), Box::new(entry));
    }

    /// Keeps `key` in its server's [`KeyCache::unsettled`] set exactly when
    /// `settled` is [`Settled::No`].
    pub(super) fn note_settled(&mut self, server: &ObjectKey, key: &ObjectKey, settled: Settled) {
        if settled == Settled::No {
            self.unsettled
                .entry(server.clone())
                .or_default()
                .insert(key.clone());
        } else if let Some(keys) = self.unsettled.get_mut(server) {
            keys.remove(key);
            if keys.is_empty() {
                self.unsettled.remove(server);
            }
        }
    }

    /// Puts an eligible key with an id into its server's user set (under
    /// its email: see `Entry::user`).
    fn join_user_set(&mut self, server: &ObjectKey, resolved: &Key<'_>) {
        let (KeyState::Eligible(None), Some(_), Some(id)) =
            (&resolved.state, resolved.server, &resolved.id)
        else {
            return;
        };
        let set = self.users.entry(server.clone()).or_default();
        set.insert(VlessUser {
            email: resolved.email.clone(),
            id: veil_crds::wire::SecretValue(id.clone()),
            flow: resolved.flow,
        });
    }

    /// Moves `key` in the timer, server and traffic-user indexes from
    /// where its `old` entry had it to (server, next change, traffic user).
    fn reindex(
        &mut self,
        key: &ObjectKey,
        old: Option<&Entry>,
        (server, next, traffic_user): (&ObjectKey, Option<DateTime<Utc>>, Option<&UserKey>),
    ) {
        if let Some(old) = old {
            if let Some(at) = old.next_change {
                self.timers.remove(&(at, key.clone()));
            }
            if old.server != *server
                && let Some(keys) = self.by_server.get_mut(&old.server)
            {
                keys.remove(key);
            }
        }
        if let Some(at) = next {
            self.timers.insert((at, key.clone()));
        }
        self.by_server
            .entry(server.clone())
            .or_default()
            .insert(key.clone());
        self.leave_traffic_user(key, old.and_then(|e| e.traffic_user.as_ref()));
        if let Some(user) = traffic_user {
            self.by_user
                .entry(user.clone())
                .or_default()
                .insert(key.clone());
        }
    }
}

/// The VlessKey at `key` and its creation time.
fn vless_key<'w>(
    world: &'w World,
    key: &ObjectKey,
) -> Option<(&'w VlessKey, Option<DateTime<Utc>>)> {
    match world.objects.get(key).map(|o| &*o.object) {
        Some(Object::VlessKey(object)) => Some((object, keys::created(object))),
        _ => None,
    }
}
