//! The state store's behaviour, written once and run against both backends:
//! SQLite in a temp dir and a real PostgreSQL server (a fresh database per
//! test, see `veil_e2e::postgres`).
//!
//! Each test in the submodules is an `async fn(&Fixture)`; `both_backends!`
//! turns it into one `#[tokio::test]` per backend (`sqlite::name`,
//! `postgres::name`).

use tempfile::TempDir;
use veil_e2e::postgres::TestPostgres;
use veil_operator::store::{Backend, Store, StoreTarget};

mod generated_objects;
mod lifecycle;
mod logs;
mod nodes;
mod objects;
mod probes;
mod run_states;
mod schedules;
mod statuses;
mod tokens;
mod traffic;
mod vless;

/// One backend's database for one test.
pub struct Fixture {
    pub target: StoreTarget,
    /// Keeps the SQLite file's directory alive for the test's duration.
    _dir: Option<TempDir>,
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        Fixture {
            // A nested path: opening must create the parent directory.
            target: StoreTarget::Sqlite(dir.path().join("state").join("veil.db")),
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Fixture {
        let url = TestPostgres::shared()
            .fresh_database()
            .await
            .expect("a fresh test database");
        Fixture {
            target: StoreTarget::Postgres(url),
            _dir: None,
        }
    }

    /// Opens (and migrates) the fixture's database.
    pub async fn open(&self) -> Store {
        Store::open(&self.target).await.expect("store opens")
    }

    pub fn backend(&self) -> Backend {
        self.target.backend()
    }

    /// Rows in sqlx's migration bookkeeping table.
    pub async fn applied_migrations(&self) -> i64 {
        const COUNT: &str = "SELECT COUNT(*) FROM _sqlx_migrations";
        match &self.target {
            StoreTarget::Sqlite(path) => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .expect("sqlite opens");
                sqlx::query_scalar(COUNT)
                    .fetch_one(&pool)
                    .await
                    .expect("count")
            }
            StoreTarget::Postgres(url) => {
                let pool = sqlx::PgPool::connect(url).await.expect("postgres connects");
                sqlx::query_scalar(COUNT)
                    .fetch_one(&pool)
                    .await
                    .expect("count")
            }
        }
    }
}

/// Declares each listed suite test once per backend.
macro_rules! both_backends {
    ($($module:ident :: $test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let fixture = crate::Fixture::sqlite().await;
                    crate::$module::$test(&fixture).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let fixture = crate::Fixture::postgres().await;
                    crate::$module::$test(&fixture).await;
                }
            )*
        }
    };
}

both_backends!(
    lifecycle::fresh_store_is_empty_and_answers_ping,
    lifecycle::reopening_keeps_data_and_applies_no_migration_twice,
    lifecycle::two_stores_on_one_database_write_concurrently,
    objects::object_records_are_upserted_and_deleted,
    objects::object_record_batch_is_all_or_nothing,
    objects::last_object_record_for_a_key_wins,
    objects::timestamps_keep_microseconds,
    statuses::statuses_are_upserted_and_deleted_in_key_order,
    statuses::status_documents_come_back_as_written,
    statuses::status_batch_is_all_or_nothing,
    statuses::ten_thousand_statuses_are_written_in_one_batch,
    statuses::load_errors_are_replaced_wholesale_in_order,
    tokens::admin_token_hash_is_set_then_replaced,
    tokens::node_tokens_authenticate_their_node_until_revoked,
    tokens::duplicate_token_id_or_hash_is_rejected,
    traffic::a_report_seq_is_applied_once_per_stream,
    traffic::streams_are_independent,
    traffic::deltas_for_one_user_are_summed,
    traffic::failed_report_applies_nothing,
    traffic::negative_delta_is_rejected,
    traffic::concurrent_retries_count_a_report_once,
    logs::log_chunks_are_idempotent_per_seq,
    logs::logs_are_read_after_a_seq_per_run,
    logs::a_runs_log_keeps_its_tail_with_a_marker_and_goes_with_the_run,
    logs::generated_value_first_writer_wins,
    logs::racing_generated_value_inserts_agree,
    run_states::run_states_round_trip_in_uid_order,
    run_states::run_state_timestamps_keep_microseconds,
    run_states::run_state_batch_upsert_replaces,
    run_states::run_state_batch_is_all_or_nothing,
    run_states::run_states_are_deleted_by_uid,
    run_states::task_state_survives_reopening,
    nodes::node_registrations_round_trip_in_name_order,
    nodes::upsert_replaces_a_registration_but_never_lowers_the_seq,
    nodes::touch_node_sets_last_seen_of_known_nodes_only,
    nodes::a_report_seq_is_claimed_once,
    nodes::concurrent_claims_of_one_seq_let_one_through,
    nodes::nodes_are_deleted,
    nodes::corrupt_registration_is_reported,
    generated_objects::generated_objects_round_trip_in_key_order,
    generated_objects::first_insert_of_a_key_wins,
    generated_objects::generated_object_documents_are_updated,
    generated_objects::invalid_generated_objects_are_rejected,
    generated_objects::racing_inserts_of_one_key_let_one_win,
    generated_objects::generated_objects_are_deleted,
    schedules::last_schedule_time_never_moves_backwards,
    schedules::schedule_states_are_per_schedule_and_deleted,
    schedules::racing_writers_keep_the_latest_time,
    vless::traffic_baselines_are_upserted_and_deleted,
    vless::baseline_batch_is_all_or_nothing,
    vless::baseline_period_starts_keep_microseconds,
    vless::traffic_last_seen_never_moves_backwards,
    vless::generated_values_are_stored_in_batches_first_writer_wins,
    vless::racing_generated_value_batches_agree,
    vless::adopted_generated_values_replace_stored_ones,
    probes::probe_rounds_are_recorded_once_and_read_newest_first,
    probes::probe_rounds_keep_the_newest_per_strategy_and_node_and_age_out,
);
