//! YAML/JSON text → typed, validated [`Object`]s, with errors that point at
//! the line, column and field path to fix.
//!
//! How a text is read (each step bounded, so a hostile file is refused fast):
//! 1. text larger than [`Limits::max_bytes`] → one error, nothing parsed;
//! 2. one scan over the YAML stream without following aliases finds each
//!    document's start line and the first syntax error, and stops after
//!    [`Limits::max_objects`] documents;
//! 3. each document is read into JSON with duplicate keys refused and alias
//!    expansion capped at 4× the document's text ("billion laughs");
//! 4. `apiVersion`/`kind`/`metadata` are checked first, so every later error
//!    names the object; unknown top-level and `metadata` fields are errors;
//! 5. the spec is deserialized from the YAML text itself (not from JSON) with
//!    `serde_path_to_error`, so errors carry the field path *and* the line and
//!    column of the offending value;
//! 6. the spec's cross-field `validate()` runs; its field paths are located in
//!    the document by [`yaml::locate`].
//!
//! `metadata.namespace` on a `VeilNode` (cluster-scoped) is ignored, as the
//! Kubernetes API server does, so one file works in both modes. `status` in
//! input is accepted and ignored: the operator computes status.
//!
//! Interface fixed by the lead; keep these signatures.

use std::fmt;

mod messages;
mod meta;
mod parse;
pub mod yaml;

use crate::object::Object;

/// Bounds on one file's input (design §8): a hostile or broken file is refused fast.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest accepted text, in bytes.
    pub max_bytes: usize,
    /// Most documents (objects) accepted from one text.
    pub max_objects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 4 * 1024 * 1024,
            max_objects: 5_000,
        }
    }
}

/// One object parsed from a text, with the 1-based line where its document starts.
#[derive(Clone, Debug)]
pub struct ParsedObject {
    pub object: Object,
    pub line: usize,
}

/// Why a document was refused: where, which object, which field, what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentError {
    /// 1-based line; 0 when the error is about the whole text (too large).
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// `VlessKey default/alice` when kind and name could be read.
    pub object: Option<String>,
    /// Field path in the document (`spec.probes[0].url`), empty for the document itself.
    pub path: String,
    /// What is wrong and what to change. Never contains secret values.
    pub message: String,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}", self.line)?;
            if self.column > 0 {
                write!(f, ", column {}", self.column)?;
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

/// Parses every document of `text` (YAML, multi-document, or JSON).
///
/// Contract:
/// - each document must be a `veil.dev/v1alpha1` kind or core `v1/Secret`;
///   other kinds are errors that name the kind (never silently ignored);
/// - unknown fields are errors (strict, like `kubectl apply`'s validation);
/// - `metadata.namespace` defaults to `default_namespace` for namespaced kinds;
/// - semantic validation of every field runs here (cron, UUID, ports, …);
/// - empty documents (only comments) are skipped;
/// - returns `Err` with **all** errors found when any document is refused:
///   callers treat a text as a whole (a file's last good version stays in effect).
pub fn parse_documents(
    text: &str,
    default_namespace: &str,
    limits: &Limits,
) -> Result<Vec<ParsedObject>, Vec<DocumentError>> {
    parse::parse_documents(text, default_namespace, limits)
}
