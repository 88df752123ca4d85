//! Incremental VLESS planning: [`KeyCache`] keeps what the last pass made
//! of every VlessKey and, from one pass to the next, recomputes only the
//! keys whose inputs changed. [`super::plan_vless`] (everything from
//! scratch) stays the reference: a property test checks after every step
//! of random histories that both give the same plan.
//!
//! What a key's status reads, and what marks it for recomputation:
//!
//! | input                                   | recomputed                      |
//! |-----------------------------------------|---------------------------------|
//! | its object (new, changed, deleted)      | it, and the keys sharing its email on that server |
//! | its server's facts ([`ServerFacts`])    | every key naming that server    |
//! | its generated id, its traffic, baseline | it                              |
//! | the clock passing its expiry or period  | it (timer: `next_change`)       |
//! | its last status, if not the one we made | it (status only)                |
//! | the server's nodes ([`NodeFacts`])      | every key of the server (status only) |
//! | nodes applying a new user set           | only keys not settled (below)   |
//! | a node refusing (or accepting) an email | the keys with that email        |
//!
//! Settled keys: when the only change on a server's nodes is which user
//! set they applied (another key was added or removed), a key whose last
//! status was `Running` on every node (eligible, every report Running) or
//! `Stopped` on every node (not eligible) keeps that status: the full plan
//! gives the same answer through the key's kept phases. That is what makes
//! one key add cost one key, not the server's 100,000.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_json::value::RawValue;
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::protocol_server::VlessFlow;
use veil_crds::vless_key::VlessKey;
use veil_crds::wire::{ServerAssignment, VlessUser, users_hash};

use super::keys::{self, Key, KeyState, Subject};
use super::servers::{self, Server};
use super::usage::PeriodUsage;
use super::{VlessInputs, VlessPlan, key_status, next_change, server_status, users};
use crate::records::TrafficBaselineRecord;
use crate::world::World;

mod facts;
mod traffic;

use facts::{NodeFacts, NodesChange, ServerFacts, failed_emails_changed, nodes_change};

/// What the last passes made of every VlessKey, and the indexes that say
/// which keys a change reaches. Starts empty: the first pass computes all.
#[derive(Default)]
pub struct KeyCache {
    entries: BTreeMap<ObjectKey, Entry>,
    /// Keys by the server they name (whether it exists or not).
    by_server: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Keys on a vless server by (server, lowercase email), oldest first:
    /// the first holds the email.
    groups: HashMap<Group, Members>,
    /// Each vless server's user set.
    users: HashMap<ObjectKey, UserSet>,
    server_facts: HashMap<ObjectKey, ServerFacts>,
    node_facts: HashMap<ObjectKey, Vec<NodeFacts>>,
    /// When time alone next changes a key (its expiry or next period).
    timers: BTreeSet<(DateTime<Utc>, ObjectKey)>,
    /// The traffic the keys were last resolved with.
    traffic: super::TrafficState,
    /// Uids of the keys in `entries`.
    uids: HashSet<String>,
    stale_baselines: Vec<String>,
    /// Keys recomputed by the last [`KeyCache::plan`], whose finished
    /// statuses [`KeyCache::record`] takes.
    recomputed: Vec<ObjectKey>,
}

/// A server and a lowercase email.
type Group = (ObjectKey, String);

/// The keys of one [`Group`] by creation time, then key.
type Members = BTreeSet<(Option<DateTime<Utc>>, ObjectKey)>;

/// One server's users by email, and the list and fingerprint built from them.
#[derive(Default)]
struct UserSet {
    by_email: BTreeMap<String, VlessUser>,
    built: Option<(Vec<VlessUser>, String)>,
}

/// One VlessKey as the cache knows it.
struct Entry {
    object: Arc<Object>,
    /// The server it names.
    server: ObjectKey,
    created: Option<DateTime<Utc>>,
    group: Option<Group>,
    resolved: Resolved,
    next_change: Option<DateTime<Utc>>,
    /// Its email in its server's user set, when it is in it.
    user: Option<String>,
    /// The finished status the last pass that computed it produced.
    output: Option<Arc<RawValue>>,
    phase: Arc<str>,
    settled: Settled,
    /// Its last resolution began a period whose baseline is not stored yet.
    awaiting_baseline: bool,
}

/// A [`Key`] without its borrows.
#[derive(Clone)]
struct Resolved {
    email: String,
    on_server: bool,
    id: Option<String>,
    flow: VlessFlow,
    usage: Option<PeriodUsage>,
    state: KeyState,
}

/// Whether a key's status survives nodes applying another user set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settled {
    /// No node entries: nothing a node applies changes it.
    Independent,
    /// Eligible and `Running` on every node.
    AllRunning,
    /// Not eligible and `Stopped` on every node.
    AllStopped,
    No,
}

/// Keys to resolve again (object, server, traffic, time) and keys whose
/// status alone is recomputed (nodes, previous status).
#[derive(Default)]
struct Dirty {
    resolve: BTreeSet<ObjectKey>,
    status: BTreeSet<ObjectKey>,
    /// A key was added or deleted.
    key_set: bool,
}

impl KeyCache {
    /// Plans every vless server and the keys whose inputs changed since the
    /// last call; the statuses of the others are in [`KeyCache::kept`].
    /// Call [`KeyCache::record`] with the finished statuses afterwards.
    pub fn plan(&mut self, inputs: &VlessInputs<'_>) -> VlessPlan {
        let servers = servers::resolve(inputs.world, inputs.views, inputs.secrets);
        let mut dirty = Dirty::default();
        self.check_servers(inputs.world, &servers, &mut dirty);
        self.check_keys(inputs, &mut dirty);
        let traffic_changed = self.check_traffic(inputs.traffic, &mut dirty);
        self.regroup(inputs.world, &servers, &mut dirty);
        let mut plan = VlessPlan {
            baselines: self.resolve_dirty(inputs, &servers, &dirty.resolve),
            ..VlessPlan::default()
        };
        let hashes = self.server_parts(inputs, &servers, &mut plan);
        self.check_nodes(inputs, &servers, &hashes, &mut dirty);
        self.key_statuses(inputs, &servers, &hashes, &dirty, &mut plan);
        if traffic_changed || dirty.key_set {
            self.stale_baselines = self.stale(inputs.traffic);
        }
        plan.stale_baselines = self.stale_baselines.clone();
        plan.wake_at = self.timers.first().map(|(at, _)| *at);
        plan
    }

    /// The phase of every key whose last status stands, in key order.
    pub fn kept(&self) -> impl Iterator<Item = (&ObjectKey, &Arc<str>)> {
        self.entries.iter().map(|(key, entry)| (key, &entry.phase))
    }

    /// Takes the finished statuses of the keys the last pass recomputed.
    pub fn record(&mut self, statuses: &crate::plan::Statuses) {
        for key in std::mem::take(&mut self.recomputed) {
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.output = statuses.get(&key).cloned();
            }
        }
    }

    /// Servers whose facts changed: every key naming them is resolved again.
    fn check_servers(
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
    /// not the ones this cache made.
    fn check_keys(&mut self, inputs: &VlessInputs<'_>, dirty: &mut Dirty) {
        let mut world = inputs.world.of_kind(Kind::VlessKey).peekable();
        let mut deleted = Vec::new();
        for (key, entry) in &self.entries {
            while let Some((new, _)) = world.next_if(|(k, _)| *k < key) {
                dirty.resolve.insert(new.clone());
                dirty.key_set = true;
            }
            let Some((_, object)) = world.next_if(|(k, _)| *k == key) else {
                deleted.push(key.clone());
                continue;
            };
            let previous = inputs.previous.get(key);
            let same_status = match (previous, &entry.output) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            if !same_status {
                dirty.status.insert(key.clone());
            }
            if !Arc::ptr_eq(&object.object, &entry.object)
                || entry.awaiting_baseline
                || entry.next_change.is_some_and(|at| at <= inputs.now)
                || id_changed(&object.object, &entry.resolved, inputs.secrets)
            {
                dirty.resolve.insert(key.clone());
            }
        }
        for (new, _) in world {
            dirty.resolve.insert(new.clone());
            dirty.key_set = true;
        }
        for key in deleted {
            dirty.key_set = true;
            self.forget(&key, dirty);
        }
    }

    /// Removes a deleted key from every index; the keys sharing its email
    /// are resolved again (one of them may hold it now).
    fn forget(&mut self, key: &ObjectKey, dirty: &mut Dirty) {
        let Some(entry) = self.entries.remove(key) else {
            return;
        };
        if let Some(keys) = self.by_server.get_mut(&entry.server) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_server.remove(&entry.server);
            }
        }
        if let Some(group) = &entry.group {
            self.leave_group(group, entry.created, key);
            if let Some(members) = self.groups.get(group) {
                dirty.resolve.extend(members.iter().map(|(_, k)| k.clone()));
            }
        }
        self.drop_user(&entry.server, entry.user.as_deref());
        if let Some(at) = entry.next_change {
            self.timers.remove(&(at, key.clone()));
        }
        if let Some(uid) = entry.object.meta().uid.as_deref() {
            self.uids.remove(uid);
        }
    }

    /// Keys whose counters, last-seen time or baseline changed.
    fn check_traffic(&mut self, traffic: &super::TrafficState, dirty: &mut Dirty) -> bool {
        let change = traffic::traffic_change(&self.traffic, traffic);
        if change.is_empty() {
            return false;
        }
        let mut ids: HashMap<&ObjectKey, String> = HashMap::new();
        for (key, entry) in &self.entries {
            let server = ids
                .entry(&entry.server)
                .or_insert_with(|| format!("{}/{}", entry.server.namespace, entry.server.name));
            let uid = entry.object.meta().uid.as_deref().unwrap_or_default();
            if change
                .users
                .contains(&(server.as_str(), entry.resolved.email.as_str()))
                || change.uids.contains(uid)
            {
                dirty.resolve.insert(key.clone());
            }
        }
        drop(change);
        self.traffic = traffic.clone();
        true
    }

    /// Moves every key to be resolved into its (possibly new) email group;
    /// the members of every group that changed are resolved too.
    fn regroup(
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

    fn leave_group(&mut self, group: &Group, created: Option<DateTime<Utc>>, key: &ObjectKey) {
        if let Some(members) = self.groups.get_mut(group) {
            members.remove(&(created, key.clone()));
            if members.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    fn drop_user(&mut self, server: &ObjectKey, email: Option<&str>) {
        if let (Some(set), Some(email)) = (self.users.get_mut(server), email)
            && set.by_email.remove(email).is_some()
        {
            set.built = None;
        }
    }

    /// Resolves every key in `keys` again; the baselines of periods that began.
    fn resolve_dirty(
        &mut self,
        inputs: &VlessInputs<'_>,
        servers: &BTreeMap<&ObjectKey, Server<'_>>,
        keys: &BTreeSet<ObjectKey>,
    ) -> Vec<TrafficBaselineRecord> {
        // Every old user entry first: a new one may take an email another
        // key of this batch gives up.
        for key in keys {
            if let Some(entry) = self.entries.get(key) {
                let (server, user) = (entry.server.clone(), entry.user.clone());
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
            if let Some(entry) = self.entries.get_mut(key) {
                entry.awaiting_baseline = baseline.is_some();
            }
            baselines.extend(baseline);
        }
        baselines
    }

    /// The older key holding this key's email on its server, if another.
    fn holder<'w>(
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
    fn store(
        &mut self,
        key: &ObjectKey,
        object: &Arc<Object>,
        server: ObjectKey,
        created: Option<DateTime<Utc>>,
        resolved: &Key<'_>,
        now: DateTime<Utc>,
    ) {
        let next = next_change(resolved, now);
        let user = match (&resolved.state, resolved.server, &resolved.id) {
            (KeyState::Eligible(None), Some(_), Some(id)) => {
                let set = self.users.entry(server.clone()).or_default();
                set.by_email.insert(
                    resolved.email.clone(),
                    VlessUser {
                        email: resolved.email.clone(),
                        id: veil_crds::wire::SecretValue(id.clone()),
                        flow: resolved.flow,
                    },
                );
                set.built = None;
                Some(resolved.email.clone())
            }
            _ => None,
        };
        let group = resolved
            .server
            .map(|s| (s.clone(), resolved.email.to_lowercase()));
        let old = self.entries.remove(key);
        if let Some(old) = &old {
            if let Some(at) = old.next_change {
                self.timers.remove(&(at, key.clone()));
            }
            if old.server != server
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
        if let Some(uid) = object.meta().uid.as_deref() {
            self.uids.insert(uid.to_owned());
        }
        let (output, phase, settled) = old.map(|e| (e.output, e.phase, e.settled)).unwrap_or((
            None,
            Arc::from("Unknown"),
            Settled::No,
        ));
        self.entries.insert(
            key.clone(),
            Entry {
                object: Arc::clone(object),
                server,
                created,
                group,
                resolved: Resolved {
                    email: resolved.email.clone(),
                    on_server: resolved.server.is_some(),
                    id: resolved.id.clone(),
                    flow: resolved.flow,
                    usage: resolved.usage.clone(),
                    state: resolved.state.clone(),
                },
                next_change: next,
                user,
                output,
                phase,
                settled,
                awaiting_baseline: false,
            },
        );
    }

    /// Server statuses and assignments; the user-set fingerprint of every
    /// server that has an assignment.
    fn server_parts<'s>(
        &mut self,
        inputs: &VlessInputs<'_>,
        servers: &'s BTreeMap<&ObjectKey, Server<'_>>,
        plan: &mut VlessPlan,
    ) -> HashMap<&'s ObjectKey, String> {
        let mut hashes = HashMap::new();
        for (&key, server) in servers {
            let set = self.users.entry(key.clone()).or_default();
            let count = set.by_email.len();
            plan.statuses.insert(
                key.clone(),
                server_status::server_status(server, count, inputs.views),
            );
            let Ok(reality) = &server.reality else {
                continue;
            };
            let (users, hash) = set.built.get_or_insert_with(|| {
                let users: Vec<VlessUser> = set.by_email.values().cloned().collect();
                let hash = users_hash(&users);
                (users, hash)
            });
            let assignment: ServerAssignment =
                users::assignment_hashed(server, reality, users.clone(), hash.clone());
            for node in &server.nodes {
                plan.assignments
                    .entry(node.clone())
                    .or_default()
                    .push(assignment.clone());
            }
            hashes.insert(key, hash.clone());
        }
        self.users
            .retain(|key, set| servers.contains_key(key) || !set.by_email.is_empty());
        hashes
    }

    /// Keys whose status the servers' nodes changed.
    fn check_nodes(
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
            let members = self.by_server.get(key);
            let all_running = new.iter().all(|n| {
                n.report()
                    .is_some_and(|r| r.phase == veil_crds::common::WorkloadPhase::Running)
            });
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

    /// The status of every key resolved again or otherwise marked.
    fn key_statuses(
        &mut self,
        inputs: &VlessInputs<'_>,
        servers: &BTreeMap<&ObjectKey, Server<'_>>,
        hashes: &HashMap<&ObjectKey, String>,
        dirty: &Dirty,
        plan: &mut VlessPlan,
    ) {
        for key in dirty.resolve.union(&dirty.status) {
            let Some((world_key, object)) = inputs.world.objects.get_key_value(key) else {
                continue;
            };
            let (Object::VlessKey(vless_key), Some(entry)) =
                (&*object.object, self.entries.get_mut(key))
            else {
                continue;
            };
            let server = servers.get_key_value(&entry.server);
            let r = &entry.resolved;
            let resolved = Key {
                key: world_key,
                object: vless_key,
                email: r.email.clone(),
                server: server.filter(|_| r.on_server).map(|(&k, _)| k),
                id: r.id.clone(),
                flow: r.flow,
                usage: r.usage.clone(),
                state: r.state.clone(),
            };
            let hash = server
                .filter(|_| r.on_server)
                .and_then(|(k, _)| hashes.get(k))
                .map(String::as_str);
            let (body, conditions) = key_status::key_status(
                &resolved,
                server.map(|(_, s)| s).filter(|_| r.on_server),
                hash,
                inputs.views,
                inputs.previous.get(key).map(|raw| raw.get()),
                inputs.now,
            );
            entry.settled = settled(&r.state, &body);
            entry.phase = Arc::from(
                body.get("phase")
                    .and_then(Value::as_str)
                    .unwrap_or("Unknown"),
            );
            plan.statuses.insert(key.clone(), (body, conditions));
            self.recomputed.push(key.clone());
        }
    }

    /// Baselines whose key is gone.
    fn stale(&self, traffic: &super::TrafficState) -> Vec<String> {
        let mut stale: Vec<String> = traffic
            .baselines
            .keys()
            .filter(|uid| !self.uids.contains(*uid))
            .cloned()
            .collect();
        stale.sort();
        stale
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

/// The operator generated a different id for this key than it was resolved with.
fn id_changed(object: &Object, resolved: &Resolved, secrets: &super::GeneratedSecrets) -> bool {
    let Object::VlessKey(key) = object else {
        return false;
    };
    if key.spec.id.is_some() {
        return false;
    }
    let uid = key.metadata.uid.as_deref().unwrap_or_default();
    secrets.vless_ids.get(uid) != resolved.id.as_ref()
}

/// Whether the status `body` survives nodes applying another user set.
fn settled(state: &KeyState, body: &Value) -> Settled {
    let phases: Vec<&str> = body
        .get("nodes")
        .and_then(Value::as_array)
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| n.get("phase").and_then(Value::as_str).unwrap_or(""))
                .collect()
        })
        .unwrap_or_default();
    if phases.is_empty() {
        return Settled::Independent;
    }
    match state {
        KeyState::Error(_) => Settled::No,
        KeyState::Eligible(None) if phases.iter().all(|p| *p == "Running") => Settled::AllRunning,
        KeyState::Eligible(None) => Settled::No,
        _ if phases.iter().all(|p| *p == "Stopped") => Settled::AllStopped,
        _ => Settled::No,
    }
}
