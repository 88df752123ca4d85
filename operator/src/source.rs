//! Where desired state comes from: the types every source produces.
//!
//! A source turns something outside the operator (a watched directory of
//! YAML files, or Kubernetes watches) into one consistent
//! [`SourceSnapshot`]: every object in effect, keyed by [`ObjectKey`], plus
//! the errors a user has to fix. The reconcile loop reads snapshots and
//! nothing else.
//!
//! This module owns the snapshot shapes and their display. It must never
//! touch the world, the plan or the store, and sources must never publish a
//! partial view: a snapshot is always whole (objects that could not be
//! re-read stay at their last good version rather than disappear).

pub mod dir;
pub mod kube;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::value::RawValue;

use veil_crds::document::DocumentError;
use veil_crds::object::{Object, ObjectKey};

/// Every object in effect, by key: a persistent map, so a snapshot is
/// cloned in O(1) and two snapshots are compared
/// ([`imbl::OrdMap::diff`]) in time proportional to what changed.
pub type SourceObjects = imbl::OrdMap<ObjectKey, SourcedObject>;

/// One consistent view of desired state.
#[derive(Clone, Debug, Default)]
pub struct SourceSnapshot {
    /// Every object in effect. Keys are unique across the whole source.
    /// A source keeps the map from one snapshot to the next, so an
    /// unchanged object is the same allocation in both.
    pub objects: SourceObjects,
    /// Everything the user must fix, sorted by file and line. Objects named
    /// here may still be in `objects` at their last good version.
    pub errors: Vec<SourceError>,
    /// Monotonic counter, bumped every time a new snapshot is published.
    /// `0` is never produced by a source: it marks "nothing loaded yet".
    pub version: u64,
    /// The status each object carries where the source keeps one (the
    /// Kubernetes status subresource), as compact JSON text with sorted
    /// keys. Empty for the directory source, whose statuses live in the
    /// store. The controller reads it only to learn what is already
    /// written for an object it has not written itself yet (after a start,
    /// or when an object was re-created under the same name); a change of
    /// status alone need not publish a new snapshot.
    pub observed_statuses: imbl::OrdMap<ObjectKey, Arc<RawValue>>,
}

/// An object in effect, with where it was read from.
#[derive(Clone, Debug)]
pub struct SourcedObject {
    pub object: std::sync::Arc<Object>,
    pub origin: Origin,
}

/// Identity, not content: the same allocation from the same place. Sources
/// hand an unchanged object over as the same allocation, so this is what
/// "unchanged since the last snapshot" means; an equal object parsed anew
/// counts as changed (the world then finds its spec unchanged).
impl PartialEq for SourcedObject {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.object, &other.object) && self.origin == other.origin
    }
}

/// Where an object was defined.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// Path of the file, relative to the source's root directory.
    pub file: PathBuf,
    /// 1-based line where the object's document starts.
    pub line: usize,
}

impl fmt::Display for Origin {
    /// `examples/x.yaml:12`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Something a user must fix in the source, located as precisely as known.
///
/// Never contains secret values (the parser guarantees it for document
/// errors; sources only add paths, names and limits).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceError {
    /// File relative to the source's root; `None` when the error is about
    /// the source as a whole (root directory missing).
    pub file: Option<PathBuf>,
    /// 1-based line; 0 when the error is about the whole file.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// `VlessKey default/alice` when the object could be identified.
    pub object: Option<String>,
    /// Field path (`spec.port`), empty when the error is not about a field.
    pub path: String,
    /// What is wrong and what to change.
    pub message: String,
}

impl SourceError {
    /// An error about a whole file (line 0).
    pub fn in_file(file: &Path, message: impl Into<String>) -> SourceError {
        SourceError {
            file: Some(file.to_path_buf()),
            line: 0,
            column: 0,
            object: None,
            path: String::new(),
            message: message.into(),
        }
    }

    /// An error about the source as a whole, not one file.
    pub fn global(message: impl Into<String>) -> SourceError {
        SourceError {
            file: None,
            line: 0,
            column: 0,
            object: None,
            path: String::new(),
            message: message.into(),
        }
    }

    /// Locates a parser error in `file`.
    pub fn from_document(file: &Path, error: DocumentError) -> SourceError {
        SourceError {
            file: Some(file.to_path_buf()),
            line: error.line,
            column: error.column,
            object: error.object,
            path: error.path,
            message: error.message,
        }
    }
}

impl fmt::Display for SourceError {
    /// `examples/x.yaml:12:5: VlessKey default/a: spec.port: …`; the parts
    /// that are unknown are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if self.line > 0 {
                write!(f, ":{}", self.line)?;
                if self.column > 0 {
                    write!(f, ":{}", self.column)?;
                }
            }
            f.write_str(": ")?;
        }
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn error_display_names_file_line_column_object_and_field() {
        let error = SourceError {
            file: Some(PathBuf::from("examples/x.yaml")),
            line: 12,
            column: 5,
            object: Some("VlessKey default/a".into()),
            path: "spec.port".into(),
            message: "must be between 1 and 65535".into(),
        };
        assert_eq!(
            error.to_string(),
            "examples/x.yaml:12:5: VlessKey default/a: spec.port: must be between 1 and 65535"
        );
    }

    #[test]
    fn error_display_leaves_out_unknown_parts() {
        assert_eq!(
            SourceError::in_file(Path::new("a.yaml"), "too large").to_string(),
            "a.yaml: too large"
        );
        assert_eq!(SourceError::global("gone").to_string(), "gone");
    }
}
