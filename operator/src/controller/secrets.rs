//! Credentials the operator generates: a VLESS id for every VlessKey
//! without `spec.id`, a Reality private key for every vless ProtocolServer
//! without `privateKeySecretRef`.
//!
//! Each is made once, keyed by the object's uid, and kept in the store
//! (`generated_values`): in dir mode the store is the Secret the operator
//! owns, and the credentials API serves what a client needs. New objects
//! get theirs in one batch per pass, before `plan` reads them; values of
//! objects that are gone are deleted (a uid never comes back). Values are
//! never logged.
//!
//! In Kubernetes mode the cluster's credentials Secrets
//! ([`crate::credential_secrets`]) come first: nothing is generated before
//! they are listed, a replica without a value (a new pod, an empty store)
//! adopts the Secret's, a follower always takes the Secret's, and only the
//! leader generates. Adopted values are written to the store too, which the
//! credentials API reads.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use veil_crds::kind::Kind;
use veil_crds::object::Object;
use veil_crds::protocol_server::Protocol;
use veil_crds::reality;
use veil_crds::validate::VlessId;

use super::{Controller, ControllerError};
use crate::plan::vless::{GeneratedValues, REALITY_KEY_SCOPE, VLESS_ID_SCOPE};
use crate::store::Store;
use crate::world::{World, WorldObjects, changed_keys};

/// Per scope: the uids that need a generated value, and the uids of every
/// object of the kind (a value is kept while its object exists, so a key
/// that sets `spec.id` for a while gets its generated id back after).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Needed {
    pub vless_ids: HashSet<String>,
    pub keys: HashSet<String>,
    pub reality_keys: HashSet<String>,
    pub servers: HashSet<String>,
}

/// [`Needed`] kept from pass to pass and updated from what changed in the
/// world, so a pass that changed one key looks at one key, not at every
/// VlessKey; `touched` are the uids whose values the next sync checks.
#[derive(Default)]
pub(super) struct NeededBook {
    /// The world objects `needed` reflects; `None` before the first pass.
    world: Option<WorldObjects>,
    needed: Needed,
    /// Uids whose objects came, went or changed since the last sync that
    /// completed; with `every`, the next sync checks every uid instead.
    touched: HashSet<String>,
    every: bool,
}

impl NeededBook {
    /// Brings `needed` up to `world`, marking the uids that changed.
    fn update(&mut self, world: &World) {
        let Some(last) = &self.world else {
            self.needed = needed(world);
            self.world = Some(world.objects.clone());
            self.every = true;
            return;
        };
        for key in changed_keys(last, &world.objects) {
            if !matches!(key.kind, Kind::VlessKey | Kind::ProtocolServer) {
                continue;
            }
            for object in [last.get(key), world.objects.get(key)]
                .into_iter()
                .flatten()
            {
                if let Some(uid) = object.object.meta().uid.as_ref() {
                    self.touched.insert(uid.clone());
                }
            }
            if let Some(old) = last.get(key) {
                self.needed.forget(&old.object);
            }
            if let Some(new) = world.objects.get(key) {
                self.needed.add(&new.object);
            }
        }
        self.world = Some(world.objects.clone());
    }

    /// The uids the next sync checks: `None` for all of them.
    fn candidates(&self) -> Option<&HashSet<String>> {
        (!self.every).then_some(&self.touched)
    }

    /// A sync completed: what it checked needs no checking again.
    fn synced(&mut self) {
        self.touched.clear();
        self.every = false;
    }
}

/// Which objects of `world` need a generated value.
pub(super) fn needed(world: &World) -> Needed {
    let mut needed = Needed::default();
    for kind in [Kind::VlessKey, Kind::ProtocolServer] {
        for (_, object) in world.of_kind(kind) {
            needed.add(&object.object);
        }
    }
    needed
}

impl Needed {
    /// Counts `object` in (a VlessKey or a ProtocolServer with a uid).
    fn add(&mut self, object: &Object) {
        match object {
            Object::VlessKey(key) => {
                if let Some(uid) = &key.metadata.uid {
                    self.keys.insert(uid.clone());
                    if key.spec.id.is_none() {
                        self.vless_ids.insert(uid.clone());
                    }
                }
            }
            Object::ProtocolServer(server) => {
                if let Some(uid) = &server.metadata.uid {
                    self.servers.insert(uid.clone());
                    if generates_reality_key(server) {
                        self.reality_keys.insert(uid.clone());
                    }
                }
            }
            _ => {}
        }
    }

    /// Takes what [`Needed::add`] put in for `object` out again.
    fn forget(&mut self, object: &Object) {
        let Some(uid) = object.meta().uid.as_ref() else {
            return;
        };
        match object {
            Object::VlessKey(_) => {
                self.keys.remove(uid);
                self.vless_ids.remove(uid);
            }
            Object::ProtocolServer(_) => {
                self.servers.remove(uid);
                self.reality_keys.remove(uid);
            }
            _ => {}
        }
    }
}

/// Whether the operator makes `server`'s Reality key (a vless server
/// without `privateKeySecretRef`).
fn generates_reality_key(server: &veil_crds::protocol_server::ProtocolServer) -> bool {
    server.spec.protocol == Protocol::Vless
        && server
            .spec
            .vless
            .as_ref()
            .is_some_and(|v| v.reality.private_key_secret_ref.is_none())
}

impl Controller {
    /// Makes sure every object of `world` that needs a generated value has
    /// one (in the store and in `self.secrets`), and forgets the values of
    /// objects that are gone. Does nothing for a world already completed;
    /// otherwise looks only at the objects that changed since the last
    /// completed pass (all of them on the first).
    pub(super) async fn complete_secrets(
        &mut self,
        world: &Arc<World>,
    ) -> Result<(), ControllerError> {
        let cluster = self.kube.as_ref().and_then(|kube| kube.credentials_state());
        if self
            .secrets_world
            .as_ref()
            .is_some_and(|(done, state)| Arc::ptr_eq(done, world) && *state == cluster)
        {
            return Ok(());
        }
        self.needed.update(world);
        let may_generate = match cluster {
            None => true,
            Some(ClusterState { listed: false, .. }) => {
                // Nothing may be generated before the Secrets are known.
                self.secrets_world = None;
                return Ok(());
            }
            Some(ClusterState { leading, .. }) => {
                self.adopt_from_cluster(leading).await?;
                leading
            }
        };
        self.sync_secrets(may_generate).await?;
        self.secrets_world = Some((world.clone(), cluster));
        Ok(())
    }

    /// Kubernetes mode: takes the cluster Secrets' values ([`adoptions`]).
    async fn adopt_from_cluster(&mut self, leading: bool) -> Result<(), ControllerError> {
        let adopted = self
            .kube
            .as_ref()
            .map(|kube| kube.adoptable_secrets())
            .unwrap_or_default();
        let needed = &self.needed.needed;
        adopt_scope(
            &self.store,
            VLESS_ID_SCOPE,
            (&adopted.vless_ids, &needed.vless_ids),
            &mut self.secrets.vless_ids,
            leading,
        )
        .await?;
        adopt_scope(
            &self.store,
            REALITY_KEY_SCOPE,
            (&adopted.reality_keys, &needed.reality_keys),
            &mut self.secrets.reality_keys,
            leading,
        )
        .await
    }

    /// Generates what is missing (when `may_generate`) and deletes the
    /// values of objects that are gone, for the uids the book marks.
    async fn sync_secrets(&mut self, may_generate: bool) -> Result<(), ControllerError> {
        let book = &self.needed;
        let nothing = HashSet::new();
        let wanted = |set| if may_generate { set } else { &nothing };
        let needed = &book.needed;
        sync_scope(
            &self.store,
            VLESS_ID_SCOPE,
            (wanted(&needed.vless_ids), &needed.keys, book.candidates()),
            &mut self.secrets.vless_ids,
            || VlessId::generate().uuid().hyphenated().to_string(),
        )
        .await?;
        sync_scope(
            &self.store,
            REALITY_KEY_SCOPE,
            (
                wanted(&needed.reality_keys),
                &needed.servers,
                book.candidates(),
            ),
            &mut self.secrets.reality_keys,
            reality::generate_private_key,
        )
        .await?;
        if may_generate {
            self.needed.synced();
        } else {
            // A follower generates nothing: once it leads, its first sync
            // must look at every object again.
            self.needed.every = true;
        }
        Ok(())
    }
}

/// What of the cluster's credentials Secrets decides a secrets pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ClusterState {
    /// Whether the Secrets have been listed.
    pub listed: bool,
    /// The watched Secrets' version.
    pub version: u64,
    /// Whether this replica leads (may generate and write).
    pub leading: bool,
}

/// The values of `adopted` (by uid) to take: for live objects that need a
/// generated value, when `held` has none, or — on a follower — a
/// different one (the leader's value is the one in the cluster).
pub(super) fn adoptions(
    adopted: &HashMap<String, String>,
    needed: &HashSet<String>,
    held: &GeneratedValues,
    leading: bool,
) -> Vec<(String, String)> {
    let mut taken: Vec<(String, String)> = adopted
        .iter()
        .filter(|(uid, value)| {
            needed.contains(*uid)
                && match held.get(*uid) {
                    None => true,
                    Some(mine) => !leading && mine != *value,
                }
        })
        .map(|(uid, value)| (uid.clone(), value.clone()))
        .collect();
    taken.sort();
    taken
}

/// Takes the [`adoptions`] into the store and `held`.
async fn adopt_scope(
    store: &Store,
    scope: &str,
    (adopted, needed): (&HashMap<String, String>, &HashSet<String>),
    held: &mut GeneratedValues,
    leading: bool,
) -> Result<(), ControllerError> {
    let taken = adoptions(adopted, needed, held, leading);
    if taken.is_empty() {
        return Ok(());
    }
    store.put_generated_values(scope, &taken).await?;
    tracing::info!(
        scope,
        count = taken.len(),
        "adopted credentials from the cluster's Secrets"
    );
    held.extend(taken);
    Ok(())
}

/// Generates values for `needed` uids missing from `held` (one store batch;
/// a value another replica stored first wins), and deletes held values
/// whose object is gone (not in `live`). Looks only at `candidates` when
/// given (the uids that changed), at every uid otherwise.
async fn sync_scope(
    store: &Store,
    scope: &str,
    (needed, live, candidates): (&HashSet<String>, &HashSet<String>, Option<&HashSet<String>>),
    held: &mut GeneratedValues,
    generate: impl Fn() -> String,
) -> Result<(), ControllerError> {
    let missing: Vec<(String, String)> = match candidates {
        Some(uids) => missing(uids.iter().filter(|uid| needed.contains(*uid)), held),
        None => missing(needed.iter(), held),
    }
    .into_iter()
    .map(|uid| (uid, generate()))
    .collect();
    if !missing.is_empty() {
        let stored = store.generated_values_or_insert(scope, &missing).await?;
        tracing::info!(scope, count = stored.len(), "generated credentials stored");
        held.extend(stored);
    }
    let is_gone = |uid: &&String| !live.contains(*uid) && held.contains_key(*uid);
    let gone: Vec<String> = match candidates {
        Some(uids) => uids.iter().filter(is_gone).cloned().collect(),
        None => held.keys().filter(is_gone).cloned().collect(),
    };
    if !gone.is_empty() {
        store.delete_generated_values(scope, &gone).await?;
        for uid in &gone {
            held.remove(uid);
        }
    }
    Ok(())
}

/// The uids of `needed` that `held` has no value for.
fn missing<'a>(needed: impl Iterator<Item = &'a String>, held: &GeneratedValues) -> Vec<String> {
    needed
        .filter(|uid| !held.contains_key(*uid))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{snapshot, uids};
    use crate::world::GenerationBook;

    const SERVER: &str = "apiVersion: veil.dev/v1alpha1\nkind: ProtocolServer\nmetadata:\n  name: edge\nspec:\n  protocol: vless\n  listen: 0.0.0.0\n  port: 8443\n  vless:\n    reality:\n      dest: www.example.com:443\n      serverNames: [www.example.com]\n";

    fn key(name: &str, id: Option<&str>) -> String {
        let id = id.map(|id| format!("  id: {id}\n")).unwrap_or_default();
        format!(
            "---\napiVersion: veil.dev/v1alpha1\nkind: VlessKey\nmetadata:\n  name: {name}\nspec:\n  serverRef:\n    name: edge\n{id}"
        )
    }

    const ID: &str = "5783a3e7-e373-51cd-8642-c83782b807c5";

    #[test]
    fn the_book_follows_the_world_and_marks_only_the_uids_that_changed() {
        let now = chrono::Utc::now();
        let mut worlds = GenerationBook::default();
        let mut new_uid = uids();
        let vless_key =
            |name: &str| veil_crds::object::ObjectKey::new(Kind::VlessKey, "default", name);
        let before = snapshot(&format!(
            "{SERVER}{}{}{}",
            key("a", None),
            key("b", Some(ID)),
            key("c", None)
        ));
        let first = worlds.build_world(&before, now, &mut new_uid).0;
        let mut book = NeededBook::default();
        book.update(&first);
        assert_eq!(book.needed, needed(&first));
        assert_eq!(
            book.candidates(),
            None,
            "the first sync looks at everything"
        );
        book.synced();

        // `a` goes, `b` drops its id, `d` comes; `c` and the server stay
        // (the same objects, as a source hands over what did not change).
        let mut after = before.clone();
        after.objects.remove(&vless_key("a"));
        let changed = snapshot(&format!("{}{}", key("b", None), key("d", None)));
        after.objects.extend(changed.objects);
        let second = worlds.build_world(&after, now, &mut new_uid).0;
        book.update(&second);
        assert_eq!(book.needed, needed(&second));
        let uid = |world: &World, name: &str| {
            world.objects[&vless_key(name)]
                .object
                .meta()
                .uid
                .clone()
                .unwrap()
        };
        let expected: HashSet<String> =
            [uid(&first, "a"), uid(&second, "b"), uid(&second, "d")].into();
        assert_eq!(book.candidates(), Some(&expected));
        book.synced();
        book.update(&second);
        assert_eq!(
            book.candidates(),
            Some(&HashSet::new()),
            "an unchanged world marks nothing"
        );
    }

    fn map(items: &[(&str, &str)]) -> HashMap<String, String> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_replica_without_a_value_adopts_the_clusters_and_a_follower_always_does() {
        let cluster = map(&[("a", "cluster-a"), ("b", "cluster-b"), ("gone", "x")]);
        let needed: HashSet<String> = ["a", "b", "c"].map(str::to_owned).into();
        let held: GeneratedValues = map(&[("b", "mine-b")]).into_iter().collect();
        let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
            items
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            adoptions(&cluster, &needed, &held, true),
            pairs(&[("a", "cluster-a")]),
            "the leader keeps its own value (an edited Secret is written back)"
        );
        assert_eq!(
            adoptions(&cluster, &needed, &held, false),
            pairs(&[("a", "cluster-a"), ("b", "cluster-b")]),
            "a follower follows the cluster"
        );
        assert!(
            adoptions(&cluster, &HashSet::new(), &GeneratedValues::new(), false).is_empty(),
            "values of objects that are gone (or set spec.id) are not taken"
        );
    }
}
