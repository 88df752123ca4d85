//! The desired world: every object the source currently holds, with the
//! bookkeeping Kubernetes would do for it (uid, generation, creation time).
//!
//! This module never performs I/O. In dir mode the [`GenerationBook`] plays
//! the API server's part: `metadata.generation` starts at 1 and increments
//! only when an object's spec changes; it is persisted through the store by
//! the caller. In Kubernetes mode the API server does it, and the book
//! only covers what the cluster does not hold
//! ([`GenerationBook::build_cluster_world`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sha2::{Digest, Sha256};
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};

use crate::source::{SourceError, SourceObjects, SourceSnapshot, SourcedObject};
use crate::store::{ObjectRecord, ObjectRef};

/// One desired object with its metadata filled in.
#[derive(Clone, Debug)]
pub struct WorldObject {
    pub object: std::sync::Arc<Object>,
    /// Where the object came from (`file:line` in dir mode).
    pub origin: Option<String>,
}

/// Identity, not content (see [`SourcedObject`]'s equality): the world
/// hands an unchanged object over as the same allocation.
impl PartialEq for WorldObject {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.object, &other.object) && self.origin == other.origin
    }
}

/// The world's objects by key: a persistent map, cloned in O(1) and
/// compared with the last pass's ([`imbl::OrdMap::diff`]) in time
/// proportional to what changed.
pub type WorldObjects = imbl::OrdMap<ObjectKey, WorldObject>;

/// Desired state: objects by key plus the source's current errors.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub objects: WorldObjects,
    pub source_errors: Vec<SourceError>,
}

impl World {
    /// Objects of one kind, in key order. Keys sort by kind first, so this
    /// walks that kind's range only, not every object.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (&ObjectKey, &WorldObject)> {
        let first = ObjectKey {
            kind,
            namespace: String::new(),
            name: String::new(),
        };
        self.objects
            .range(first..)
            .take_while(move |(key, _)| key.kind == kind)
    }
}

/// Dir-mode generation bookkeeping, mirrored in the store's object records.
#[derive(Clone, Debug, Default)]
pub struct GenerationBook {
    records: HashMap<ObjectKey, ObjectRecord>,
    /// What the last build was made from, and what it made: the next build
    /// compares its inputs with these and rebuilds only the keys that
    /// differ, so a pass over 100,000 unchanged objects costs nothing per
    /// object.
    last_snapshot: SourceObjects,
    last_extra: BTreeMap<ObjectKey, SourcedObject>,
    world: WorldObjects,
    /// The cluster world of Kubernetes mode, built the same way.
    cluster: ClusterWorld,
}

/// What [`GenerationBook::build_cluster_world`] last built, from what.
#[derive(Clone, Debug, Default)]
struct ClusterWorld {
    snapshot: SourceObjects,
    created: BTreeMap<ObjectKey, SourcedObject>,
    hidden: BTreeSet<ObjectKey>,
    registered: WorldObjects,
    world: WorldObjects,
}

/// What the book changed in one step; the caller persists it.
#[derive(Clone, Debug, Default)]
pub struct BookChanges {
    pub upserts: Vec<ObjectRecord>,
    pub deletes: Vec<ObjectRef>,
}

impl BookChanges {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }

    /// Adds the changes of a later step: for a key changed in both, the
    /// later change is the one to persist.
    pub fn absorb(&mut self, later: BookChanges) {
        if self.is_empty() {
            *self = later;
            return;
        }
        for record in later.upserts {
            self.deletes.retain(|gone| *gone != record.key);
            self.upserts.retain(|held| held.key != record.key);
            self.upserts.push(record);
        }
        for gone in later.deletes {
            self.upserts.retain(|held| held.key != gone);
            self.deletes.retain(|held| *held != gone);
            self.deletes.push(gone);
        }
    }
}

impl GenerationBook {
    /// A book holding the given records (from the store); records of kinds
    /// this build does not know are dropped.
    pub fn from_records(records: Vec<ObjectRecord>) -> GenerationBook {
        let records = records
            .into_iter()
            .filter_map(|record| Some((object_key(&record.key)?, record)))
            .collect();
        GenerationBook {
            records,
            ..GenerationBook::default()
        }
    }

    /// Builds the world from a snapshot, assigning uid, generation and
    /// creation time the way an API server would.
    ///
    /// `new_uid` is called once per object seen for the first time.
    pub fn build_world(
        &mut self,
        snapshot: &SourceSnapshot,
        now: DateTime<Utc>,
        new_uid: impl FnMut() -> String,
    ) -> (World, BookChanges) {
        self.build_world_with(snapshot, &BTreeMap::new(), now, new_uid)
    }

    /// Like [`Self::build_world`], plus `extra` objects the operator itself
    /// holds (VeilNodes of registered agents, TaskRuns made by Schedules);
    /// on a key clash the source's object wins.
    ///
    /// Only keys whose source object differs from the last build's (see
    /// [`SourcedObject`]'s equality) are built again.
    pub fn build_world_with(
        &mut self,
        snapshot: &SourceSnapshot,
        extra: &BTreeMap<ObjectKey, SourcedObject>,
        now: DateTime<Utc>,
        mut new_uid: impl FnMut() -> String,
    ) -> (World, BookChanges) {
        let mut changes = BookChanges::default();
        let mut touched = BTreeSet::new();
        persistent_changes(&self.last_snapshot, &snapshot.objects, &mut touched);
        small_changes(&self.last_extra, extra, &mut touched);
        for key in touched {
            match snapshot.objects.get(&key).or_else(|| extra.get(&key)) {
                Some(sourced) => {
                    let record =
                        self.record_for(&key, &sourced.object, now, &mut new_uid, &mut changes);
                    self.world.insert(key, world_object(sourced, &record));
                }
                None => {
                    self.world.remove(&key);
                    if self.records.remove(&key).is_some() {
                        changes.deletes.push(object_ref(&key));
                    }
                }
            }
        }
        self.last_snapshot = snapshot.objects.clone();
        extra.clone_into(&mut self.last_extra);
        if self.records.len() != self.world.len() {
            // Records of objects gone while the operator was down.
            let world = &self.world;
            self.records.retain(|key, record| {
                let keep = world.contains_key(key);
                if !keep {
                    changes.deletes.push(record.key.clone());
                }
                keep
            });
        }
        let world = World {
            objects: self.world.clone(),
            source_errors: snapshot.errors.clone(),
        };
        (world, changes)
    }

    /// The record of an object built anew: unchanged when its spec is,
    /// the generation incremented when it changed, a new one (with a new
    /// uid) for an object never seen. New and changed records are added to
    /// `changes` for the caller to persist.
    fn record_for(
        &mut self,
        key: &ObjectKey,
        object: &Object,
        now: DateTime<Utc>,
        new_uid: &mut impl FnMut() -> String,
        changes: &mut BookChanges,
    ) -> ObjectRecord {
        let hash = spec_hash(object);
        match self.records.get_mut(key) {
            Some(record) if record.spec_hash == hash => record.clone(),
            Some(record) => {
                record.generation += 1;
                record.spec_hash = hash;
                changes.upserts.push(record.clone());
                record.clone()
            }
            None => {
                let record = ObjectRecord {
                    key: object_ref(key),
                    uid: new_uid(),
                    generation: 1,
                    spec_hash: hash,
                    created_at: now,
                };
                changes.upserts.push(record.clone());
                self.records.insert(key.clone(), record.clone());
                record
            }
        }
    }
}

impl GenerationBook {
    /// Kubernetes mode: objects of the snapshot and `created` (TaskRuns the
    /// operator just created, not yet reported by the watch) keep the
    /// metadata the API server gave them (uid, generation, creation time);
    /// only `registered` objects (VeilNodes of agents the cluster holds no
    /// object for) get theirs from this book. Keys in `hidden` (TaskRuns
    /// just deleted, still reported by the watch) are left out. On a key
    /// clash the snapshot wins, then `created`.
    ///
    /// Like [`Self::build_world_with`], only keys whose inputs differ from
    /// the last build's are looked at.
    pub fn build_cluster_world(
        &mut self,
        snapshot: &SourceSnapshot,
        created: &BTreeMap<ObjectKey, SourcedObject>,
        registered: &BTreeMap<ObjectKey, SourcedObject>,
        hidden: &BTreeSet<ObjectKey>,
        now: DateTime<Utc>,
        new_uid: impl FnMut() -> String,
    ) -> (World, BookChanges) {
        let in_cluster =
            |key: &ObjectKey| snapshot.objects.contains_key(key) || created.contains_key(key);
        let registered: BTreeMap<ObjectKey, SourcedObject> = registered
            .iter()
            .filter(|(key, _)| !in_cluster(key))
            .map(|(key, sourced)| (key.clone(), sourced.clone()))
            .collect();
        let errors_only = SourceSnapshot {
            errors: snapshot.errors.clone(),
            version: snapshot.version,
            ..SourceSnapshot::default()
        };
        let (mut world, changes) = self.build_world_with(&errors_only, &registered, now, new_uid);
        let last = &mut self.cluster;
        let mut touched = BTreeSet::new();
        persistent_changes(&last.snapshot, &snapshot.objects, &mut touched);
        small_changes(&last.created, created, &mut touched);
        persistent_changes(&last.registered, &world.objects, &mut touched);
        touched.extend(last.hidden.symmetric_difference(hidden).cloned());
        for key in touched {
            let from_cluster = snapshot.objects.get(&key).or_else(|| created.get(&key));
            let object = match from_cluster {
                _ if hidden.contains(&key) => None,
                Some(sourced) => Some(WorldObject {
                    object: sourced.object.clone(),
                    origin: None,
                }),
                None => world.objects.get(&key).cloned(),
            };
            match object {
                Some(object) => last.world.insert(key, object),
                None => last.world.remove(&key),
            };
        }
        last.snapshot = snapshot.objects.clone();
        created.clone_into(&mut last.created);
        hidden.clone_into(&mut last.hidden);
        last.registered = std::mem::replace(&mut world.objects, last.world.clone());
        (world, changes)
    }
}

/// Adds the keys whose entries differ between two versions of a persistent
/// map; shared parts of the two are skipped unvisited.
fn persistent_changes<V: Clone + PartialEq>(
    old: &imbl::OrdMap<ObjectKey, V>,
    new: &imbl::OrdMap<ObjectKey, V>,
    out: &mut BTreeSet<ObjectKey>,
) {
    out.extend(changed_keys(old, new).cloned());
}

/// The keys whose entries differ between two versions of a persistent map
/// (added, changed or removed), in order; shared parts of the two are
/// skipped unvisited, so maps derived from one another compare in time
/// proportional to their differences.
pub fn changed_keys<'a, K: Ord + Clone, V: Clone + PartialEq>(
    old: &'a imbl::OrdMap<K, V>,
    new: &'a imbl::OrdMap<K, V>,
) -> impl Iterator<Item = &'a K> {
    old.diff(new).map(|item| match item {
        imbl::ordmap::DiffItem::Add(key, _) | imbl::ordmap::DiffItem::Remove(key, _) => key,
        imbl::ordmap::DiffItem::Update { new: (key, _), .. } => key,
    })
}

/// Adds the keys whose entries differ between two small ordinary maps.
fn small_changes<V: PartialEq>(
    old: &BTreeMap<ObjectKey, V>,
    new: &BTreeMap<ObjectKey, V>,
    out: &mut BTreeSet<ObjectKey>,
) {
    for (key, value) in old {
        if new.get(key) != Some(value) {
            out.insert(key.clone());
        }
    }
    for key in new.keys() {
        if !old.contains_key(key) {
            out.insert(key.clone());
        }
    }
}

fn world_object(sourced: &SourcedObject, record: &ObjectRecord) -> WorldObject {
    let mut object = (*sourced.object).clone();
    let meta = object.meta_mut();
    meta.uid = Some(record.uid.clone());
    meta.generation = Some(record.generation);
    // k8s-openapi's `Time` wraps a jiff timestamp; RFC 3339 is the lossless bridge.
    meta.creation_timestamp = timestamp(record.created_at).parse().ok().map(Time);
    meta.resource_version = None;
    WorldObject {
        object: object.into(),
        origin: Some(format!(
            "{}:{}",
            sourced.origin.file.display(),
            sourced.origin.line
        )),
    }
}

/// SHA-256 over the canonical JSON of what generation tracks (`spec`, or a
/// Secret's data). serde_json's map is ordered, so equal specs hash equally.
pub fn spec_hash(object: &Object) -> String {
    let bytes = serde_json::to_vec(&object.spec_value()).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// The store's string form of a key.
pub fn object_ref(key: &ObjectKey) -> ObjectRef {
    ObjectRef {
        kind: key.kind.as_str().to_owned(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

/// The typed key of a stored reference; `None` for kinds this build does not know.
pub fn object_key(reference: &ObjectRef) -> Option<ObjectKey> {
    let kind = Kind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == reference.kind)?;
    Some(ObjectKey::new(kind, &reference.namespace, &reference.name))
}

/// RFC 3339 with seconds, as Kubernetes writes timestamps.
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}
