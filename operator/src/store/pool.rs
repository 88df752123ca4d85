//! Opening the database: connection options per backend, the embedded
//! migrations, and how a write transaction begins on each backend.

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Database, Postgres, Sqlite, Transaction};
use std::str::FromStr;
use std::time::Duration;

use super::{Pool, StoreError, StoreTarget};

/// Schema of each backend, embedded at compile time; applied on open.
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite writer waits for another writer's lock before failing.
/// Writes are short batches; ten seconds only runs out if something is stuck.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite serialises writers anyway; a few connections let readers (the
/// `get` API, `/readyz`) proceed during a write thanks to WAL.
const SQLITE_MAX_CONNECTIONS: u32 = 4;

/// One operator process needs few concurrent statements; keeping this low
/// leaves room on shared PostgreSQL servers.
const POSTGRES_MAX_CONNECTIONS: u32 = 8;

/// How long a caller waits for a free pooled connection (or for PostgreSQL
/// to accept one) before the operation fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Shown to PostgreSQL administrators in `pg_stat_activity`.
const APPLICATION_NAME: &str = "veil-operator";

/// Connects to `target` and brings its schema up to date.
pub(super) async fn connect(target: &StoreTarget) -> Result<Pool, StoreError> {
    let connect_error = |source| StoreError::Connect {
        target: target.to_string(),
        source,
    };
    let migrate_error = |source| StoreError::Migrate {
        target: target.to_string(),
        source,
    };
    match target {
        StoreTarget::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                crate::private_fs::create_private_dir(dir).map_err(|source| {
                    StoreError::CreateDir {
                        path: dir.to_owned(),
                        source,
                    }
                })?;
            }
            // SQLite gives the WAL and shared-memory files the database
            // file's mode: creating it 0600 first keeps all three private.
            for file in sqlite_files(path) {
                crate::private_fs::make_private_file(&file, file == *path)
                    .map_err(|source| StoreError::FileMode { path: file, source })?;
            }
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL (not NORMAL): a commit acknowledged to an agent (traffic
                // above all) must survive a power loss, and batches make the
                // extra fsync per commit cheap.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(SQLITE_MAX_CONNECTIONS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(connect_error)?;
            SQLITE_MIGRATIONS.run(&pool).await.map_err(migrate_error)?;
            Ok(Pool::Sqlite(pool))
        }
        StoreTarget::Postgres(url) => {
            let options = PgConnectOptions::from_str(url)
                .map_err(connect_error)?
                .application_name(APPLICATION_NAME);
            let pool = PgPoolOptions::new()
                .max_connections(POSTGRES_MAX_CONNECTIONS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(connect_error)?;
            // Takes an advisory lock: replicas starting together migrate once.
            POSTGRES_MIGRATIONS
                .run(&pool)
                .await
                .map_err(migrate_error)?;
            Ok(Pool::Postgres(pool))
        }
    }
}

/// The database file and the WAL and shared-memory files next to it.
fn sqlite_files(path: &std::path::Path) -> [std::path::PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    [path.to_owned(), with("-wal"), with("-shm")]
}

/// The statement that opens a transaction that will write.
pub(super) trait WriteTransaction: Database {
    const BEGIN: &'static str;
}

impl WriteTransaction for Sqlite {
    /// Takes the write lock up front. A deferred transaction that reads
    /// before it writes fails with `SQLITE_BUSY` — which the busy timeout
    /// does not retry — when another connection committed in between.
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
}

impl WriteTransaction for Postgres {
    const BEGIN: &'static str = "BEGIN";
}

/// Begins a transaction that will write, the right way for the backend.
pub(super) async fn begin_write<DB: WriteTransaction>(
    pool: &sqlx::Pool<DB>,
) -> Result<Transaction<'static, DB>, sqlx::Error> {
    pool.begin_with(DB::BEGIN).await
}
