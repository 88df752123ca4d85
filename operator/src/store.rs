//! The state store: everything Veil persists that neither the YAML directory
//! nor Kubernetes should hold (design §7).
//!
//! It owns the database — SQLite (a file under the data dir, the default) or
//! PostgreSQL (`--database-url postgres://…`) — its schema and migrations,
//! and every statement run against it. Both backends behave identically:
//! the same tables and constraints, the same ordering (bytewise), the same
//! timestamp precision (microseconds), the same transaction boundaries.
//!
//! It never stores a secret in clear: tokens are kept as SHA-256 hashes
//! computed by the caller, and the database password never appears in
//! errors, logs or `Debug` output.
//!
//! What lives here:
//! - [`objects`](Store::object_records): dir-mode generation bookkeeping;
//! - [`statuses`](Store::statuses) and [`load errors`](Store::load_errors) of dir mode;
//! - admin and node [`tokens`](Store::node_tokens) (hashes);
//! - exactly-once [`traffic`](Store::apply_traffic_delta) accounting, with
//!   VlessKey period [`baselines`](Store::traffic_baselines) and
//!   [`last-seen`](Store::traffic_last_seen) times;
//! - task-run [`logs`](Store::append_log) and stable [`generated values`](Store::generated_value).
//! - task-run [`states`](Store::run_states), registered [`nodes`](Store::nodes)
//!   with exactly-once [`report claims`](Store::claim_report_seq),
//!   dir-mode [`generated objects`](Store::generated_objects) and
//!   [`schedule states`](Store::schedule_states);
//! - a bounded history of Strategy [`probe rounds`](Store::record_probe_rounds).

use sqlx::{PgPool, SqlitePool};
use std::fmt;

/// Runs `$body` with `$pool` bound to the concrete pool of `$store`.
///
/// The body is compiled once per backend, so the same runtime query code
/// (`sqlx::query`, `QueryBuilder`, …) serves both. Hand-written SQL uses
/// `$1`-style placeholders, which SQLite and PostgreSQL both understand.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

// Declared after `with_pool!` so its textual scope covers them.
mod batch;
mod error;
mod generated;
mod generated_objects;
mod load_errors;
mod nodes;
mod objects;
mod pool;
mod probe_rounds;
mod run_logs;
mod run_states;
mod schedules;
mod statuses;
mod target;
mod tokens;
mod traffic;
mod traffic_periods;

pub use crate::records::{
    GeneratedObjectRecord, LoadErrorRecord, NodeRecord, NodeTokenRecord, ObjectRecord, ObjectRef,
    RunStateRecord, TrafficBaselineRecord, TrafficDelta, TrafficSeenRecord, TrafficTotal,
};
pub use error::StoreError;
pub use probe_rounds::ProbeRoundRecord;
pub use run_logs::truncation_marker;
pub use target::{Backend, StoreTarget};

/// Digits of sub-second precision the store keeps: PostgreSQL's
/// `timestamptz` holds microseconds, so SQLite is given the same.
const STORED_SUBSEC_DIGITS: u16 = 6;

/// `time` as the store will return it, on either backend.
fn stored_time(time: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    time.trunc_subsecs(STORED_SUBSEC_DIGITS)
}

/// Handle on the state store. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

/// The connection pool of whichever backend the store was opened on.
#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Store {
    /// Opens (creating if needed) the store at `target` and applies pending
    /// migrations.
    ///
    /// For SQLite the parent directory of the file is created; the file is
    /// opened in WAL mode with foreign keys on and a busy timeout, so several
    /// connections (and processes) can share it. For PostgreSQL the database
    /// must exist; migrations take an advisory lock, so replicas starting
    /// together do not race. An unreachable server is retried for up to
    /// 30 seconds (it may still be starting) before `open` fails.
    ///
    /// # Errors
    /// [`StoreError::CreateDir`], [`StoreError::Connect`] or
    /// [`StoreError::Migrate`]; none of them contains the database password.
    pub async fn open(target: &StoreTarget) -> Result<Store, StoreError> {
        let pool = pool::connect(target).await?;
        Ok(Store { pool })
    }

    /// Which backend this store runs on.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Checks that the database answers a trivial query (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))
            .map_err(StoreError::query("ping the database"))
    }
}

impl fmt::Debug for Store {
    /// Shows the backend only: the pools' own `Debug` would print the
    /// connection options, password included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}
