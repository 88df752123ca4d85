//! What the Kubernetes source knows: every watched object, converted and
//! validated, grouped by the watch that delivered it, and the snapshot
//! version.
//!
//! Watch events go in ([`SourceState::apply`]); whole snapshots come out
//! ([`SourceState::take_snapshot`]). A re-list is buffered and swapped in
//! only when complete, so objects never vanish while the API server is
//! being listed again. No I/O: the watch tasks live in `watch.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use serde_json::value::RawValue;
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};

use super::convert::{Prepared, prepare};
use super::refs::{SecretName, referenced_secrets};
use crate::source::{Origin, SourceError, SourceObjects, SourceSnapshot, SourcedObject};

/// One watch: a whole kind, or one Secret by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum WatchId {
    Kind(Kind),
    Secret(SecretName),
}

impl WatchId {
    /// The kind of the objects this watch delivers.
    pub fn kind(&self) -> Kind {
        match self {
            WatchId::Kind(kind) => *kind,
            WatchId::Secret(_) => Kind::Secret,
        }
    }
}

/// One object as kept between events.
#[derive(Clone, Debug)]
struct Entry {
    fingerprint: u64,
    uid: Option<String>,
    /// The last version Veil accepted (of this uid), if any.
    good: Option<std::sync::Arc<Object>>,
    /// Why the current version is refused; empty when it is `good`.
    errors: Vec<SourceError>,
    status: Option<Arc<RawValue>>,
}

impl Entry {
    /// The entry for `prepared`, validating it unless `previous` already
    /// holds the same desired state (then only the status is taken).
    fn new(prepared: Prepared, previous: Option<&Entry>) -> Entry {
        if let Some(previous) = previous
            && previous.fingerprint == prepared.fingerprint
            && previous.uid == prepared.uid
        {
            return Entry {
                status: prepared.status,
                ..previous.clone()
            };
        }
        let (good, errors) = match prepared.validate() {
            Ok(object) => (Some(std::sync::Arc::new(object)), Vec::new()),
            // Like a file that fails: the last good version of the same
            // object stays in effect; a re-created object starts afresh.
            Err(errors) => (
                previous
                    .filter(|p| p.uid == prepared.uid)
                    .and_then(|p| p.good.clone()),
                errors,
            ),
        };
        Entry {
            fingerprint: prepared.fingerprint,
            uid: prepared.uid,
            good,
            errors,
            status: prepared.status,
        }
    }

    fn same_desired(&self, other: &Entry) -> bool {
        self.fingerprint == other.fingerprint && self.uid == other.uid
    }
}

#[derive(Debug, Default)]
struct WatchState {
    /// Whether a first list completed.
    listed: bool,
    entries: BTreeMap<ObjectKey, Entry>,
    /// Objects of a list in progress, swapped in when it completes.
    relist: Option<BTreeMap<ObjectKey, Entry>>,
}

/// Every watch's objects and the version of the last snapshot.
#[derive(Debug, Default)]
pub(super) struct SourceState {
    watches: BTreeMap<WatchId, WatchState>,
    /// Whether objects or errors changed since the last snapshot.
    changed: bool,
    version: u64,
    /// Keys an event touched since the last snapshot: only these are
    /// looked up again when the next one is taken.
    touched: BTreeSet<ObjectKey>,
    /// The objects and statuses of the last snapshot, kept to be updated.
    objects: SourceObjects,
    statuses: imbl::OrdMap<ObjectKey, Arc<RawValue>>,
}

/// Where objects from the API server say they come from.
fn origin() -> Origin {
    Origin {
        file: PathBuf::from("<kubernetes>"),
        line: 0,
    }
}

impl SourceState {
    /// Starts tracking a watch (nothing listed yet). No-op when tracked.
    pub fn add_watch(&mut self, id: WatchId) {
        self.watches.entry(id).or_default();
    }

    /// Stops tracking a watch; its objects leave the next snapshot.
    pub fn remove_watch(&mut self, id: &WatchId) {
        if let Some(state) = self.watches.remove(id) {
            self.changed |= !state.entries.is_empty();
            self.touched.extend(state.entries.into_keys());
        }
    }

    /// The watches tracked now.
    pub fn watch_ids(&self) -> impl Iterator<Item = &WatchId> {
        self.watches.keys()
    }

    /// Whether `id` has completed a first list.
    pub fn listed(&self, id: &WatchId) -> bool {
        self.watches.get(id).is_some_and(|w| w.listed)
    }

    /// Whether every whole-kind watch has completed a first list.
    pub fn kinds_listed(&self) -> bool {
        self.watches
            .iter()
            .filter(|(id, _)| matches!(id, WatchId::Kind(_)))
            .all(|(_, w)| w.listed)
    }

    /// Takes one event of watch `id`; events of watches no longer tracked
    /// (a Secret watch just stopped) are ignored.
    pub fn apply(&mut self, id: &WatchId, event: Event<DynamicObject>) {
        let kind = id.kind();
        let Some(watch) = self.watches.get_mut(id) else {
            return;
        };
        match event {
            Event::Init => watch.relist = Some(BTreeMap::new()),
            Event::InitApply(object) => {
                let Some(prepared) = prepare(kind, object) else {
                    return;
                };
                let key = prepared.key.clone();
                let entry = Entry::new(prepared, watch.entries.get(&key));
                watch.relist.get_or_insert_default().insert(key, entry);
            }
            Event::InitDone => {
                let listed = watch.relist.take().unwrap_or_default();
                let same = listed.len() == watch.entries.len()
                    && listed
                        .iter()
                        .zip(&watch.entries)
                        .all(|((k1, e1), (k2, e2))| k1 == k2 && e1.same_desired(e2));
                self.changed |= !same || !watch.listed;
                self.touched.extend(watch.entries.keys().cloned());
                self.touched.extend(listed.keys().cloned());
                watch.entries = listed;
                watch.listed = true;
            }
            Event::Apply(object) => {
                let Some(prepared) = prepare(kind, object) else {
                    return;
                };
                let key = prepared.key.clone();
                let previous = watch.entries.get(&key);
                let entry = Entry::new(prepared, previous);
                self.changed |= previous.is_none_or(|p| !p.same_desired(&entry));
                self.touched.insert(key.clone());
                watch.entries.insert(key, entry);
            }
            Event::Delete(object) => {
                if let Some(prepared) = prepare(kind, object) {
                    self.changed |= watch.entries.remove(&prepared.key).is_some();
                    self.touched.insert(prepared.key);
                }
            }
        }
    }

    /// The Secrets the objects in effect reference.
    pub fn referenced_secrets(&self) -> BTreeSet<SecretName> {
        let mut out = BTreeSet::new();
        for (id, watch) in &self.watches {
            if matches!(id, WatchId::Kind(_)) {
                for entry in watch.entries.values() {
                    if let Some(object) = &entry.good {
                        referenced_secrets(object, &mut out);
                    }
                }
            }
        }
        out
    }

    /// A new snapshot when objects or errors changed since the last one.
    pub fn take_snapshot(&mut self) -> Option<SourceSnapshot> {
        if !self.changed {
            return None;
        }
        self.changed = false;
        self.version += 1;
        for key in std::mem::take(&mut self.touched) {
            // On a key two watches hold, the last watch's entry is the one in effect.
            let entry = self
                .watches
                .values()
                .rev()
                .find_map(|watch| watch.entries.get(&key));
            match entry.and_then(|entry| entry.good.clone()) {
                Some(object) => {
                    let origin = origin();
                    self.objects
                        .insert(key.clone(), SourcedObject { object, origin });
                }
                None => {
                    self.objects.remove(&key);
                }
            }
            match entry.and_then(|entry| entry.status.clone()) {
                Some(status) => {
                    self.statuses.insert(key, status);
                }
                None => {
                    self.statuses.remove(&key);
                }
            }
        }
        let errors = self
            .watches
            .values()
            .flat_map(|watch| watch.entries.values())
            .flat_map(|entry| entry.errors.iter().cloned())
            .collect();
        let mut snapshot = SourceSnapshot {
            version: self.version,
            objects: self.objects.clone(),
            observed_statuses: self.statuses.clone(),
            errors,
        };
        snapshot.errors.sort();
        Some(snapshot)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const KEYS: WatchId = WatchId::Kind(Kind::VlessKey);

    fn key(name: &str, server: &str, uid: &str, status: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "veil.dev/v1alpha1",
            "kind": "VlessKey",
            "metadata": {"name": name, "namespace": "team", "uid": uid, "generation": 1},
            "spec": {"serverRef": {"name": server}},
            "status": status,
        }))
        .unwrap()
    }

    /// An object Veil refuses (the CRD schema would let it through).
    fn bad_key(name: &str, uid: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "veil.dev/v1alpha1",
            "kind": "VlessKey",
            "metadata": {"name": name, "namespace": "team", "uid": uid},
            "spec": {"serverRef": {"name": "edge"}, "trafficResetPeriod": "hourly"},
        }))
        .unwrap()
    }

    fn listed(objects: Vec<DynamicObject>) -> SourceState {
        let mut state = SourceState::default();
        state.add_watch(KEYS);
        state.apply(&KEYS, Event::Init);
        for object in objects {
            state.apply(&KEYS, Event::InitApply(object));
        }
        state.apply(&KEYS, Event::InitDone);
        state
    }

    fn names(snapshot: &SourceSnapshot) -> Vec<&str> {
        snapshot.objects.keys().map(|k| k.name.as_str()).collect()
    }

    #[test]
    fn nothing_is_ready_before_every_kind_is_listed() {
        let mut state = SourceState::default();
        state.add_watch(KEYS);
        state.add_watch(WatchId::Kind(Kind::Runner));
        state.apply(&KEYS, Event::Init);
        state.apply(&KEYS, Event::InitDone);
        assert!(!state.kinds_listed());
        state.apply(&WatchId::Kind(Kind::Runner), Event::Init);
        state.apply(&WatchId::Kind(Kind::Runner), Event::InitDone);
        assert!(state.kinds_listed());
        assert_eq!(state.take_snapshot().unwrap().version, 1);
    }

    #[test]
    fn a_relist_keeps_the_old_objects_until_it_completes() {
        let mut state = listed(vec![key("a", "edge", "u-a", json!(null))]);
        state.take_snapshot().unwrap();
        state.apply(&KEYS, Event::Init);
        assert!(state.take_snapshot().is_none(), "nothing changes mid-list");
        state.apply(
            &KEYS,
            Event::InitApply(key("b", "edge", "u-b", json!(null))),
        );
        state.apply(&KEYS, Event::InitDone);
        let snapshot = state.take_snapshot().unwrap();
        assert_eq!(names(&snapshot), ["b"], "a was deleted while unwatched");
        assert_eq!(snapshot.version, 2);
    }

    #[test]
    fn a_status_change_alone_publishes_nothing_but_is_kept() {
        let mut state = listed(vec![key("a", "edge", "u-a", json!(null))]);
        state.take_snapshot().unwrap();
        state.apply(
            &KEYS,
            Event::Apply(key("a", "edge", "u-a", json!({"phase": "Active"}))),
        );
        assert!(state.take_snapshot().is_none());
        state.apply(&KEYS, Event::Apply(key("a", "other", "u-a", json!(null))));
        let snapshot = state.take_snapshot().unwrap();
        assert!(snapshot.observed_statuses.is_empty());
        assert_eq!(snapshot.version, 2);
    }

    #[test]
    fn a_refused_update_keeps_the_last_good_version_of_the_same_object() {
        let mut state = listed(vec![key("a", "edge", "u-a", json!(null))]);
        state.take_snapshot().unwrap();
        state.apply(&KEYS, Event::Apply(bad_key("a", "u-a")));
        state.apply(&KEYS, Event::Apply(bad_key("fresh", "u-f")));
        let snapshot = state.take_snapshot().unwrap();
        assert_eq!(
            names(&snapshot),
            ["a"],
            "the new bad object is not in effect"
        );
        let errors: Vec<_> = snapshot
            .errors
            .iter()
            .map(|e| (e.object.clone().unwrap(), e.path.clone()))
            .collect();
        assert_eq!(
            errors,
            [
                (
                    "VlessKey team/a".to_owned(),
                    "spec.trafficResetPeriod".to_owned()
                ),
                (
                    "VlessKey team/fresh".to_owned(),
                    "spec.trafficResetPeriod".to_owned()
                ),
            ]
        );
        // A re-created object with the same name does not inherit it.
        state.apply(&KEYS, Event::Delete(bad_key("a", "u-a")));
        state.apply(&KEYS, Event::Apply(bad_key("a", "u-a2")));
        assert_eq!(names(&state.take_snapshot().unwrap()), Vec::<&str>::new());
    }

    #[test]
    fn secrets_referenced_and_events_of_stopped_watches_ignored() {
        let mut state = SourceState::default();
        let secret = WatchId::Secret(("team".into(), "psk".into()));
        state.apply(&secret, Event::Init);
        state.apply(&secret, Event::InitDone);
        assert!(!state.listed(&secret), "an untracked watch is ignored");
        state.add_watch(secret.clone());
        state.apply(&secret, Event::Init);
        state.apply(&secret, Event::InitDone);
        assert!(state.listed(&secret));
        state.remove_watch(&secret);
        assert!(state.referenced_secrets().is_empty());
    }
}
