//! What each file contributes, and how files are combined into one snapshot.
//!
//! This module owns the rules that make a directory safe to edit live:
//! files are atomic (a refused version keeps the last good one in effect),
//! a key belongs to the file that already holds it (a duplicate is an error
//! on the other file, never an override), and the total object budget. It
//! is pure: it must never touch the file system.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use veil_crds::document::{DocumentError, Limits, ParsedObject};
use veil_crds::object::{Object, ObjectKey};

use super::read::ContentHash;
use super::scan::FileStat;
use crate::source::SourceError;

/// The document parser: [`veil_crds::document::parse_documents`] in
/// production, a stand-in in unit tests.
pub type ParseFn = fn(&str, &str, &Limits) -> Result<Vec<ParsedObject>, Vec<DocumentError>>;

/// One object of a file version.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: ObjectKey,
    /// Shared with every snapshot while the file version is in effect: an
    /// unchanged object is the same allocation from one snapshot to the
    /// next, which lets the world reuse what it built from it.
    pub object: Arc<Object>,
    pub line: usize,
}

/// A file version that parsed and validated on its own.
#[derive(Clone, Debug)]
pub struct Version {
    pub hash: ContentHash,
    pub entries: Arc<[Entry]>,
}

/// What the latest look at a file found.
#[derive(Clone, Debug)]
pub enum Current {
    /// Parsed and valid on its own (cross-file checks happen in [`resolve`]).
    Good(Version),
    /// Refused by the parser; kept with its hash so it is not parsed again.
    Refused {
        hash: ContentHash,
        errors: Arc<[SourceError]>,
    },
    /// Could not be read this time; never cached.
    Unreadable(SourceError),
}

impl Current {
    /// Hash of the content this result was computed from, if any was read.
    pub fn hash(&self) -> Option<&ContentHash> {
        match self {
            Current::Good(version) => Some(&version.hash),
            Current::Refused { hash, .. } => Some(hash),
            Current::Unreadable(_) => None,
        }
    }
}

/// Everything known about one file across reloads.
#[derive(Clone, Debug)]
pub struct FileState {
    /// Stat at the last read and the time that read's scan started; lets an
    /// unchanged file be skipped without reading it.
    pub stat: Option<(FileStat, std::time::SystemTime)>,
    pub current: Current,
    /// The version whose objects are in effect: the last good one.
    pub in_effect: Option<Version>,
}

/// Parses one file's text into a [`Current`], checking what only the whole
/// file can tell: names present, namespaces defaulted, no key twice.
pub fn parse_file(
    rel: &Path,
    hash: ContentHash,
    text: &str,
    default_namespace: &str,
    limits: &Limits,
    parse: ParseFn,
) -> Current {
    let parsed = match parse(text, default_namespace, limits) {
        Ok(parsed) => parsed,
        Err(errors) => {
            let errors = errors
                .into_iter()
                .map(|error| SourceError::from_document(rel, error))
                .collect();
            return Current::Refused { hash, errors };
        }
    };
    let mut errors = Vec::new();
    if parsed.len() > limits.max_objects {
        errors.push(SourceError::in_file(
            rel,
            format!(
                "file holds {} objects, over the limit of {} (max_objects_per_file): split it",
                parsed.len(),
                limits.max_objects
            ),
        ));
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(parsed.len());
    let mut lines: HashMap<ObjectKey, usize> = HashMap::with_capacity(parsed.len());
    for ParsedObject { mut object, line } in parsed.into_iter().take(limits.max_objects) {
        let kind = object.kind();
        let meta = object.meta_mut();
        if kind.namespaced() && meta.namespace.as_deref().unwrap_or_default().is_empty() {
            meta.namespace = Some(default_namespace.to_owned());
        }
        if meta.name.as_deref().unwrap_or_default().is_empty() {
            errors.push(located(
                rel,
                line,
                Some(kind.to_string()),
                "metadata.name",
                "is required",
            ));
            continue;
        }
        let key = object.key();
        if let Some(first) = lines.insert(key.clone(), line) {
            errors.push(located(
                rel,
                line,
                Some(key.to_string()),
                "",
                &format!("defined twice in this file (first at line {first}): remove one"),
            ));
            continue;
        }
        entries.push(Entry {
            key,
            object: Arc::new(object),
            line,
        });
    }
    if errors.is_empty() {
        Current::Good(Version {
            hash,
            entries: entries.into(),
        })
    } else {
        Current::Refused {
            hash,
            errors: errors.into(),
        }
    }
}

fn located(
    rel: &Path,
    line: usize,
    object: Option<String>,
    path: &str,
    message: &str,
) -> SourceError {
    SourceError {
        file: Some(rel.to_path_buf()),
        line,
        column: 0,
        object,
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

/// What combining the files found (their objects are then published by
/// [`super::publish::Published`] from the versions in effect).
pub struct Resolved {
    pub errors: Vec<SourceError>,
}

/// Combines files, moving each file's good new version
/// into effect when it can be.
///
/// A new version is accepted when none of its keys is held by another
/// file's version in effect and the total stays within `max_total`;
/// otherwise the file keeps its version in effect and gets errors. Keys
/// freed in the same reload are reused (the loop repeats until nothing more
/// is accepted), so the outcome does not depend on which file was edited
/// first; among new claimants, the first file in path order wins.
pub fn resolve(files: &mut BTreeMap<PathBuf, FileState>, max_total: usize) -> Resolved {
    let mut total: usize = files
        .values()
        .map(|state| state.in_effect.as_ref().map_or(0, |v| v.entries.len()))
        .sum();
    let mut pending: Vec<PathBuf> = files
        .iter()
        .filter(|(_, state)| match &state.current {
            Current::Good(version) => {
                state.in_effect.as_ref().map(|v| v.hash) != Some(version.hash)
            }
            _ => false,
        })
        .map(|(path, _)| path.clone())
        .collect();
    // Only keys some new version claims can conflict: track owners of those
    // alone, so an edit in a large tree costs a lookup per object, not a copy.
    let claimed: HashSet<ObjectKey> = pending
        .iter()
        .filter_map(|path| match &files.get(path)?.current {
            Current::Good(version) => Some(version.entries.iter().map(|e| e.key.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    let mut owners: HashMap<ObjectKey, (PathBuf, usize)> = HashMap::new();
    if !claimed.is_empty() {
        for (path, state) in files.iter() {
            for entry in state.in_effect.iter().flat_map(|v| v.entries.iter()) {
                if claimed.contains(&entry.key) {
                    owners.insert(entry.key.clone(), (path.clone(), entry.line));
                }
            }
        }
    }
    let mut rejected: HashMap<PathBuf, Vec<SourceError>> = HashMap::new();
    loop {
        let before = pending.len();
        pending.retain(|path| {
            let Some(state) = files.get_mut(path) else { return false };
            let Current::Good(version) = &state.current else { return false };
            let old = state.in_effect.as_ref().map_or(0, |v| v.entries.len());
            let mut errors = conflicts(path, version, &owners);
            let new_total = total - old + version.entries.len();
            if new_total > max_total {
                errors.push(SourceError::in_file(
                    path,
                    format!(
                        "loading this file would bring the directory to {new_total} objects, over \
                         the limit of {max_total}: remove objects or raise the limit (`--max-objects`, VEIL_MAX_OBJECTS)"
                    ),
                ));
            }
            if !errors.is_empty() {
                rejected.insert(path.clone(), errors);
                return true;
            }
            for entry in state.in_effect.iter().flat_map(|v| v.entries.iter()) {
                owners.remove(&entry.key);
            }
            for entry in version.entries.iter() {
                owners.insert(entry.key.clone(), (path.clone(), entry.line));
            }
            total = new_total;
            state.in_effect = Some(version.clone());
            rejected.remove(path);
            false
        });
        if pending.len() == before || pending.is_empty() {
            break;
        }
    }

    let mut errors = Vec::new();
    for (path, state) in files.iter() {
        let file_errors: Vec<SourceError> = match &state.current {
            Current::Good(_) => rejected.remove(path).unwrap_or_default(),
            Current::Refused { errors, .. } => errors.to_vec(),
            Current::Unreadable(error) => vec![error.clone()],
        };
        if !file_errors.is_empty() {
            errors.extend(file_errors);
            errors.push(SourceError::in_file(
                path,
                kept_note(state.in_effect.as_ref()),
            ));
        }
    }
    Resolved { errors }
}

/// Errors for the keys of `version` held by another file.
fn conflicts(
    path: &Path,
    version: &Version,
    owners: &HashMap<ObjectKey, (PathBuf, usize)>,
) -> Vec<SourceError> {
    version
        .entries
        .iter()
        .filter_map(|entry| {
            let (owner, line) = owners.get(&entry.key)?;
            (owner != path).then(|| {
                located(
                    path,
                    entry.line,
                    Some(entry.key.to_string()),
                    "",
                    &format!(
                        "already defined in {}:{line}; an object may be defined in one file \
                         only: remove or rename one of them",
                        owner.display()
                    ),
                )
            })
        })
        .collect()
}

/// What stays in effect for a file with errors.
fn kept_note(in_effect: Option<&Version>) -> String {
    match in_effect {
        Some(version) => format!(
            "this file's last good version ({} objects) stays in effect until it is fixed",
            version.entries.len()
        ),
        None => "no object from this file is loaded until it is fixed".to_owned(),
    }
}
