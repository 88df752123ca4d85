//! The one error type of the state store.
//!
//! No variant carries a database password: targets are rendered through
//! [`StoreTarget`](super::StoreTarget)'s masking `Display`, and sqlx errors
//! (kept as sources) never echo connection URLs.

use std::path::PathBuf;

/// Everything that can go wrong in the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `--database-url` names a scheme Veil does not support.
    #[error(
        "unsupported database URL `{url}`: use postgres://…, postgresql://…, sqlite://PATH or a file path"
    )]
    UnsupportedUrl {
        /// The URL with its password masked.
        url: String,
    },

    /// The directory that holds the SQLite file could not be created.
    #[error("cannot create the state directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The SQLite file (or its WAL or shared-memory file) could not be
    /// made private (0600).
    #[error("cannot make the state file {} private (mode 0600)", path.display())]
    FileMode {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The database could not be opened or reached.
    #[error("cannot open the state store at {target}")]
    Connect {
        /// The target with its password masked.
        target: String,
        #[source]
        source: sqlx::Error,
    },

    /// The embedded migrations could not be applied, e.g. the database was
    /// migrated by a newer Veil.
    #[error("cannot migrate the state store at {target}")]
    Migrate {
        /// The target with its password masked.
        target: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// A statement failed; the transaction it belonged to was rolled back.
    #[error("state store: cannot {operation}")]
    Query {
        /// What the store was doing, as a verb phrase ("write statuses").
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },

    /// A node token with the same id or the same hash already exists.
    #[error("a node token with id `{id}` or with the same token already exists")]
    DuplicateToken { id: String },

    /// A traffic delta is negative, or deltas for one user overflow a counter.
    #[error("invalid traffic delta for {email} on {server}: {reason}")]
    InvalidTrafficDelta {
        server: String,
        email: String,
        reason: &'static str,
    },

    /// A stored status document is not valid JSON (edited by hand?).
    #[error("state store: the status of {object} is not valid JSON")]
    CorruptStatus {
        /// The object, as `kind namespace/name`.
        object: String,
        #[source]
        source: serde_json::Error,
    },

    /// A stored JSON document other than a status (a node registration, a
    /// generated object, a run's log tail) is not valid JSON.
    #[error("state store: the {what} of {key} is not valid JSON")]
    CorruptDocument {
        /// Which document, as a noun phrase ("registration").
        what: &'static str,
        /// Whose document: a node name, an object as `kind namespace/name`, a uid.
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    /// Adapter for `map_err`: wraps a sqlx error with what the store was doing.
    pub(crate) fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Query { operation, source }
    }

    /// A short, stable label for metrics and structured logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::UnsupportedUrl { .. } => "unsupported_url",
            StoreError::CreateDir { .. } => "create_dir",
            StoreError::FileMode { .. } => "file_mode",
            StoreError::Connect { .. } => "connect",
            StoreError::Migrate { .. } => "migrate",
            StoreError::Query { .. } => "query",
            StoreError::DuplicateToken { .. } => "duplicate_token",
            StoreError::InvalidTrafficDelta { .. } => "invalid_traffic_delta",
            StoreError::CorruptStatus { .. } => "corrupt_status",
            StoreError::CorruptDocument { .. } => "corrupt_document",
        }
    }
}
