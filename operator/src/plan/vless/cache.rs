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
//! | its generated id, its traffic, baseline | it (not a baseline stored just as it proposed) |
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::protocol_server::VlessFlow;
use veil_crds::wire::Users;

use super::keys::{Key, KeyState};
use super::servers;
use super::usage::PeriodUsage;
use super::{VlessInputs, VlessPlan};
use crate::records::TrafficBaselineRecord;

mod dirty;
mod facts;
mod index;
mod small_set;
mod statuses;

use facts::{NodeFacts, ServerFacts};
use small_set::SmallSet;

/// What the last passes made of every VlessKey, and the indexes that say
/// which keys a change reaches. Starts empty: the first pass computes all.
#[derive(Default)]
pub struct KeyCache {
    /// Boxed: an entry is a few hundred bytes, and a B-tree keeps eleven
    /// slots per node whether used or not.
    entries: BTreeMap<ObjectKey, Box<Entry>>,
    /// Keys by the server they name (whether it exists or not).
    by_server: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Of those, the keys whose status is not settled ([`Settled::No`]):
    /// the only ones a node applying another user set recomputes while
    /// every node runs.
    unsettled: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Keys on a vless server by (server, lowercase email), oldest first:
    /// the first holds the email.
    groups: HashMap<Group, Members>,
    /// Each vless server's user set (persistent: every pass's assignment
    /// shares it, and its fingerprint is kept by every insert and remove).
    users: HashMap<ObjectKey, Users>,
    server_facts: HashMap<ObjectKey, ServerFacts>,
    node_facts: HashMap<ObjectKey, Vec<NodeFacts>>,
    /// When time alone next changes a key (its expiry or next period).
    timers: BTreeSet<(DateTime<Utc>, ObjectKey)>,
    /// The traffic version the keys were last resolved with.
    traffic: Option<super::TrafficVersion>,
    /// Keys by uid.
    by_uid: HashMap<String, ObjectKey>,
    /// Keys on a vless server by the traffic user they read.
    by_user: HashMap<super::UserKey, SmallSet<ObjectKey>>,
    /// Baselines whose key is gone.
    stale_baselines: BTreeSet<String>,
    /// Keys recomputed by the last [`KeyCache::plan`], whose finished
    /// statuses [`KeyCache::record`] takes.
    recomputed: Vec<ObjectKey>,
    /// Keys the last [`KeyCache::plan`] forgot (gone from the world).
    forgotten: Vec<ObjectKey>,
    /// The world objects the last pass saw: this pass's objects are
    /// compared with them.
    world: crate::world::WorldObjects,
    /// The generated VLESS ids the last pass saw.
    ids: super::GeneratedValues,
    /// Keys whose last resolution began a period whose baseline is not
    /// stored yet, with the baseline it proposed.
    awaiting: BTreeMap<ObjectKey, TrafficBaselineRecord>,
    /// The statuses the last pass finished ([`KeyCache::record`]).
    recorded: crate::plan::Statuses,
    /// How many keys have each phase.
    phases: HashMap<Arc<str>, i64>,
}

/// A server and a lowercase email.
type Group = (ObjectKey, String);

/// The keys of one [`Group`] by creation time, then key.
type Members = SmallSet<(Option<DateTime<Utc>>, ObjectKey)>;

/// One VlessKey as the cache knows it.
struct Entry {
    object: Arc<Object>,
    /// The server it names.
    server: ObjectKey,
    created: Option<DateTime<Utc>>,
    group: Option<Group>,
    resolved: Resolved,
    next_change: Option<DateTime<Utc>>,
    /// The traffic counters it reads (keys on a vless server).
    traffic_user: Option<super::UserKey>,
    /// The finished status the last pass that computed it produced.
    output: Option<Arc<RawValue>>,
    phase: Arc<str>,
    settled: Settled,
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

impl Entry {
    /// Its email in its server's user set, when it is in it: an eligible
    /// key on a vless server with an id.
    fn user(&self) -> Option<&str> {
        let r = &self.resolved;
        (matches!(r.state, KeyState::Eligible(None)) && r.on_server && r.id.is_some())
            .then_some(r.email.as_str())
    }
}

impl Resolved {
    fn of(key: &Key<'_>) -> Resolved {
        Resolved {
            email: key.email.clone(),
            on_server: key.server.is_some(),
            id: key.id.clone(),
            flow: key.flow,
            usage: key.usage.clone(),
            state: key.state.clone(),
        }
    }
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
    /// Keys whose proposed baseline is stored now, exactly as proposed:
    /// they resolve as they did (their usage was counted from that very
    /// baseline), so the baseline's arrival alone does not resolve them.
    confirmed: BTreeSet<ObjectKey>,
}

impl KeyCache {
    /// Plans every vless server and the keys whose inputs changed since the
    /// last call; the statuses of the others are in [`KeyCache::kept`].
    /// Call [`KeyCache::record`] with the finished statuses afterwards.
    pub fn plan(&mut self, inputs: &VlessInputs<'_>) -> VlessPlan {
        self.forgotten.clear();
        let servers = servers::resolve(inputs.world, inputs.views, inputs.secrets);
        let mut dirty = Dirty::default();
        self.check_servers(inputs.world, &servers, &mut dirty);
        self.check_keys(inputs, &mut dirty);
        self.check_traffic(inputs.traffic, &mut dirty);
        self.regroup(inputs.world, &servers, &mut dirty);
        let mut plan = VlessPlan {
            baselines: self.resolve_dirty(inputs, &servers, &dirty.resolve),
            ..VlessPlan::default()
        };
        let hashes = self.server_parts(inputs, &servers, &mut plan);
        self.check_nodes(inputs, &servers, &hashes, &mut dirty);
        self.key_statuses(inputs, &servers, &hashes, &dirty, &mut plan);
        plan.stale_baselines = self.stale_baselines.iter().cloned().collect();
        plan.wake_at = self.timers.first().map(|(at, _)| *at);
        plan
    }

    /// The phase of every key whose last status stands, in key order.
    pub fn kept(&self) -> impl Iterator<Item = (&ObjectKey, &Arc<str>)> {
        self.entries.iter().map(|(key, entry)| (key, &entry.phase))
    }

    /// Takes the finished statuses of the pass: those of the keys it
    /// recomputed, and the whole map, to know the next pass's previous
    /// statuses for the same ones.
    pub fn record(&mut self, statuses: &crate::plan::Statuses) {
        for key in std::mem::take(&mut self.recomputed) {
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.output = statuses.get(&key).cloned();
            }
        }
        self.recorded = statuses.clone();
    }

    /// Whether `previous` is the very map [`KeyCache::record`] took last:
    /// no status was replaced from outside since.
    pub fn made(&self, previous: &crate::plan::Statuses) -> bool {
        previous.ptr_eq(&self.recorded)
    }

    /// The keys the last [`KeyCache::plan`] recomputed.
    pub fn recomputed(&self) -> impl Iterator<Item = &ObjectKey> {
        self.recomputed.iter()
    }

    /// The keys the last [`KeyCache::plan`] forgot.
    pub fn forgotten(&self) -> impl Iterator<Item = &ObjectKey> {
        self.forgotten.iter()
    }

    /// How many keys have each phase (the phases of their statuses).
    pub fn phase_counts(&self) -> impl Iterator<Item = (&Arc<str>, i64)> {
        self.phases.iter().map(|(phase, count)| (phase, *count))
    }

    /// Counts `phase` once more (`by` 1) or once less (`by` -1).
    fn count_phase(&mut self, phase: &Arc<str>, by: i64) {
        let count = self.phases.entry(Arc::clone(phase)).or_default();
        *count += by;
        if *count == 0 {
            self.phases.remove(phase);
        }
    }
}
