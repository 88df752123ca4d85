//! Who is a primary and who is a backup: the failover graph of every
//! namespace's Strategies.

use std::collections::{BTreeMap, BTreeSet};

use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::strategy::Strategy;
use veil_crds::wire::StrategyId;

use crate::world::World;

/// Every Strategy of the world with its role.
#[derive(Debug, Default)]
pub struct Roles<'a> {
    pub strategies: BTreeMap<&'a ObjectKey, Entry<'a>>,
}

/// One Strategy.
#[derive(Debug)]
pub struct Entry<'a> {
    pub key: &'a ObjectKey,
    pub object: &'a Strategy,
    pub id: StrategyId,
    pub role: Role<'a>,
}

/// A Strategy's place in the failover graph.
#[derive(Debug, PartialEq, Eq)]
pub enum Role<'a> {
    /// Nobody's backup: runs on its own nodes with its backups as candidates.
    Primary {
        /// Backups that exist, in `failover.backups` order.
        backups: Vec<&'a ObjectKey>,
        /// Names in `failover.backups` that match no Strategy (yet).
        missing: Vec<String>,
    },
    /// A backup of these primaries (each of which names it).
    Backup { primaries: Vec<&'a ObjectKey> },
    /// Named as a backup only by other backups (whose `failover` is
    /// ignored), so no group holds it.
    Orphan { named_by: Vec<String> },
    /// On a circle of Strategies naming each other as backups.
    Cycle { circle: Vec<String> },
}

/// Reads the failover graph.
pub fn roles(world: &World) -> Roles<'_> {
    let strategies: BTreeMap<&ObjectKey, &Strategy> = world
        .of_kind(Kind::Strategy)
        .filter_map(|(key, object)| match &*object.object {
            Object::Strategy(strategy) => Some((key, &**strategy)),
            _ => None,
        })
        .collect();
    let edges = Edges::of(&strategies);
    let mut roles = Roles::default();
    for (&key, &object) in &strategies {
        let id = StrategyId {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        };
        let role = edges.role(key);
        roles.strategies.insert(
            key,
            Entry {
                key,
                object,
                id,
                role,
            },
        );
    }
    roles
}

/// Who names whom as a backup (same namespace, existing Strategies only),
/// and the names that match no Strategy.
#[derive(Default)]
struct Edges<'a> {
    names: BTreeMap<&'a ObjectKey, Vec<&'a ObjectKey>>,
    missing: BTreeMap<&'a ObjectKey, Vec<String>>,
    named_by: BTreeMap<&'a ObjectKey, Vec<&'a ObjectKey>>,
}

impl<'a> Edges<'a> {
    fn of(strategies: &BTreeMap<&'a ObjectKey, &'a Strategy>) -> Edges<'a> {
        let mut edges = Edges::default();
        for (&key, strategy) in strategies {
            let Some(failover) = &strategy.spec.failover else {
                continue;
            };
            for backup in &failover.backups {
                let target = ObjectKey::new(Kind::Strategy, &key.namespace, backup.as_str());
                match strategies.get_key_value(&target) {
                    Some((&target, _)) if target != key => {
                        if !edges.names.get(key).is_some_and(|n| n.contains(&target)) {
                            edges.names.entry(key).or_default().push(target);
                            edges.named_by.entry(target).or_default().push(key);
                        }
                    }
                    Some(_) => {} // naming itself: ignored (it is already the primary)
                    None => edges
                        .missing
                        .entry(key)
                        .or_default()
                        .push(backup.as_str().to_owned()),
                }
            }
        }
        edges
    }

    /// A Strategy's role: primary when nobody names it; a backup of the
    /// primaries that name it; else on a cycle of backups, or an orphan.
    fn role(&self, key: &'a ObjectKey) -> Role<'a> {
        let is_backup = |key: &ObjectKey| self.named_by.contains_key(key);
        let Some(by) = self.named_by.get(key) else {
            return Role::Primary {
                backups: self.names.get(key).cloned().unwrap_or_default(),
                missing: self.missing.get(key).cloned().unwrap_or_default(),
            };
        };
        let primaries: Vec<&ObjectKey> = by.iter().copied().filter(|k| !is_backup(k)).collect();
        if !primaries.is_empty() {
            Role::Backup { primaries }
        } else if let Some(circle) = circle_through(key, &self.names, &is_backup) {
            Role::Cycle { circle }
        } else {
            Role::Orphan {
                named_by: by.iter().map(|k| k.name.clone()).collect(),
            }
        }
    }
}

/// The names on a circle of backups through `start`, if there is one.
fn circle_through(
    start: &ObjectKey,
    names: &BTreeMap<&ObjectKey, Vec<&ObjectKey>>,
    is_backup: &dyn Fn(&ObjectKey) -> bool,
) -> Option<Vec<String>> {
    // Depth-first search over backups only, remembering the path.
    let mut path: Vec<&ObjectKey> = vec![start];
    let mut seen: BTreeSet<&ObjectKey> = BTreeSet::new();
    fn walk<'k>(
        at: &'k ObjectKey,
        start: &ObjectKey,
        names: &BTreeMap<&'k ObjectKey, Vec<&'k ObjectKey>>,
        is_backup: &dyn Fn(&ObjectKey) -> bool,
        path: &mut Vec<&'k ObjectKey>,
        seen: &mut BTreeSet<&'k ObjectKey>,
    ) -> bool {
        for &next in names.get(at).map(Vec::as_slice).unwrap_or_default() {
            if next == start {
                return true;
            }
            if !is_backup(next) || !seen.insert(next) {
                continue;
            }
            path.push(next);
            if walk(next, start, names, is_backup, path, seen) {
                return true;
            }
            path.pop();
        }
        false
    }
    walk(start, start, names, is_backup, &mut path, &mut seen)
        .then(|| path.iter().map(|k| k.name.clone()).collect())
}
