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

use crate::source::{SourceError, SourceSnapshot, SourcedObject};
use crate::store::{ObjectRecord, ObjectRef};

/// One desired object with its metadata filled in.
#[derive(Clone, Debug)]
pub struct WorldObject {
    pub object: std::sync::Arc<Object>,
    /// Where the object came from (`file:line` in dir mode).
    pub origin: Option<String>,
}

/// Desired state: objects by key plus the source's current errors.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub objects: BTreeMap<ObjectKey, WorldObject>,
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
    /// What the last build made of each object, by key: an object the
    /// source hands over as the same allocation (an unchanged file) is
    /// reused without hashing its spec or copying it again, so a pass over
    /// 100,000 unchanged objects costs pointer comparisons.
    built: HashMap<ObjectKey, Built>,
}

/// One object as the last build made it.
#[derive(Clone, Debug)]
struct Built {
    source: std::sync::Arc<Object>,
    origin: crate::source::Origin,
    object: WorldObject,
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
            built: HashMap::new(),
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
    pub fn build_world_with(
        &mut self,
        snapshot: &SourceSnapshot,
        extra: &BTreeMap<ObjectKey, SourcedObject>,
        now: DateTime<Utc>,
        mut new_uid: impl FnMut() -> String,
    ) -> (World, BookChanges) {
        let mut changes = BookChanges::default();
        let extra = extra
            .iter()
            .filter(|(key, _)| !snapshot.objects.contains_key(*key));
        // Unchanged objects cost a lookup and a pointer comparison; the
        // world is bulk-built from the entries in key order.
        let mut objects = Vec::with_capacity(snapshot.objects.len());
        for (key, sourced) in snapshot.objects.iter().chain(extra) {
            if let Some(last) = self.built.get(key)
                && std::sync::Arc::ptr_eq(&last.source, &sourced.object)
                && last.origin == sourced.origin
            {
                objects.push((key.clone(), last.object.clone()));
                continue;
            }
            let record = self.record_for(key, &sourced.object, now, &mut new_uid, &mut changes);
            let object = world_object(sourced, &record);
            self.built.insert(
                key.clone(),
                Built {
                    source: sourced.object.clone(),
                    origin: sourced.origin.clone(),
                    object: object.clone(),
                },
            );
            objects.push((key.clone(), object));
        }
        objects.sort_by(|a, b| a.0.cmp(&b.0));
        let objects: BTreeMap<ObjectKey, WorldObject> = objects.into_iter().collect();
        if self.built.len() != objects.len() {
            self.built.retain(|key, _| objects.contains_key(key));
        }
        if self.records.len() != objects.len() {
            let gone: Vec<ObjectKey> = self
                .records
                .keys()
                .filter(|key| !objects.contains_key(*key))
                .cloned()
                .collect();
            for key in gone {
                self.records.remove(&key);
                changes.deletes.push(object_ref(&key));
            }
        }
        let world = World {
            objects,
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
        let cluster = created
            .iter()
            .filter(|(key, _)| !snapshot.objects.contains_key(*key))
            .chain(&snapshot.objects)
            .filter(|(key, _)| !hidden.contains(*key));
        // One bulk build from sorted runs instead of a tree insert per object
        // (a string comparison per level each); no key occurs twice.
        let mut objects: Vec<(ObjectKey, WorldObject)> =
            std::mem::take(&mut world.objects).into_iter().collect();
        objects.extend(cluster.map(|(key, sourced)| {
            let object = WorldObject {
                object: sourced.object.clone(),
                origin: None,
            };
            (key.clone(), object)
        }));
        world.objects = objects.into_iter().collect();
        (world, changes)
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
