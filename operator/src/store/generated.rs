//! Values the operator generates once and must keep stable across restarts
//! and replicas (VLESS ids, …), keyed by (scope, key).

use super::{Store, StoreError};

impl Store {
    /// The value stored for `(scope, key)`, if any.
    pub async fn generated_value(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        const SELECT: &str = "SELECT value FROM generated_values WHERE scope = $1 AND name = $2";
        with_pool!(self, pool => sqlx::query_scalar::<_, String>(SELECT)
            .bind(scope)
            .bind(key)
            .fetch_optional(pool)
            .await)
        .map_err(StoreError::query("read a generated value"))
    }

    /// Returns the value stored for `(scope, key)`; if there is none, stores
    /// `candidate` and returns it.
    ///
    /// Race-free: when several callers (tasks, replicas) race, the first
    /// insert wins and every caller gets the winner's value. Stored values
    /// never change afterwards.
    pub async fn generated_value_or_insert(
        &self,
        scope: &str,
        key: &str,
        candidate: &str,
    ) -> Result<String, StoreError> {
        const INSERT: &str = "INSERT INTO generated_values (scope, name, value) VALUES ($1, $2, $3) \
                              ON CONFLICT (scope, name) DO NOTHING";
        const SELECT: &str = "SELECT value FROM generated_values WHERE scope = $1 AND name = $2";
        // No transaction needed: rows are never updated or deleted, so once
        // the insert has run (or lost to another), the row read is final.
        with_pool!(self, pool => async {
            sqlx::query(INSERT)
                .bind(scope)
                .bind(key)
                .bind(candidate)
                .execute(pool)
                .await?;
            sqlx::query_scalar::<_, String>(SELECT)
                .bind(scope)
                .bind(key)
                .fetch_one(pool)
                .await
        }
        .await)
        .map_err(StoreError::query("store a generated value"))
    }
}
