//! The objects a directory source publishes, kept from one reload to the
//! next: only files whose version in effect changed are taken out and put
//! back, so an edit of one file costs that file's objects, not the tree's,
//! and every other object stays the same allocation in the same map.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use super::state::{Entry, FileState};
use crate::source::{Origin, SourceObjects, SourcedObject};

/// The published objects and, per file, the entries they came from.
#[derive(Default)]
pub struct Published {
    objects: SourceObjects,
    by_file: HashMap<PathBuf, Arc<[Entry]>>,
}

impl Published {
    /// The objects as of the last [`Published::update`].
    pub fn objects(&self) -> &SourceObjects {
        &self.objects
    }

    /// Brings the objects up to the versions in effect in `files`. Returns
    /// whether any object changed.
    ///
    /// Old entries of every changed file are taken out before new ones go
    /// in: a key that moved from one file to another in the same reload
    /// ends up with its new file.
    pub fn update(&mut self, files: &BTreeMap<PathBuf, FileState>) -> bool {
        let in_effect = |path: &PathBuf| {
            files
                .get(path)
                .and_then(|state| state.in_effect.as_ref())
                .map(|version| &version.entries)
        };
        let mut changed: Vec<PathBuf> = self
            .by_file
            .iter()
            .filter(|(path, entries)| !in_effect(path).is_some_and(|now| Arc::ptr_eq(now, entries)))
            .map(|(path, _)| path.clone())
            .collect();
        changed.extend(
            files
                .iter()
                .filter(|(path, state)| {
                    state.in_effect.is_some() && !self.by_file.contains_key(*path)
                })
                .map(|(path, _)| path.clone()),
        );
        for path in &changed {
            for entry in self.by_file.remove(path).iter().flat_map(|e| e.iter()) {
                self.objects.remove(&entry.key);
            }
        }
        for path in &changed {
            let Some(entries) = in_effect(path) else {
                continue;
            };
            for entry in entries.iter() {
                let origin = Origin {
                    file: path.clone(),
                    line: entry.line,
                };
                let object = Arc::clone(&entry.object);
                self.objects
                    .insert(entry.key.clone(), SourcedObject { object, origin });
            }
            self.by_file.insert(path.clone(), Arc::clone(entries));
        }
        !changed.is_empty()
    }
}
