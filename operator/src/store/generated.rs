//! Values the operator generates once and must keep stable across restarts
//! and replicas (VLESS ids, Reality private keys, …), keyed by (scope, key).
//!
//! A stored value never changes, except through
//! [`Store::put_generated_values`]: Kubernetes mode adopts the value held
//! in the cluster's Secret (the cluster is where replicas agree).
//!
//! Values are credentials: they are returned to the caller, never logged
//! and never part of an error.

use sqlx::QueryBuilder;

use super::pool::begin_write;
use super::{Store, StoreError, batch};

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
        // No transaction needed: rows are deleted only once their key is
        // never asked for again (`delete_generated_values`) and replaced
        // only by an adopted value, so the row read is the one in effect.
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

    /// Every `(key, value)` of `scope`, ordered by key.
    pub async fn generated_values(&self, scope: &str) -> Result<Vec<(String, String)>, StoreError> {
        const SELECT: &str =
            "SELECT name, value FROM generated_values WHERE scope = $1 ORDER BY name";
        with_pool!(self, pool => sqlx::query_as::<_, (String, String)>(SELECT)
            .bind(scope)
            .fetch_all(pool)
            .await)
        .map_err(StoreError::query("read generated values"))
    }

    /// [`Self::generated_value_or_insert`] for many keys at once: stores each
    /// `(key, candidate)` whose key has no value yet, in one transaction, and
    /// returns the value in effect for every key given (ordered by key).
    ///
    /// Race-free like the single-key form: a key already stored (by an
    /// earlier call, another task or a replica) keeps its value. When a key
    /// appears more than once, the last candidate is the one offered.
    pub async fn generated_values_or_insert(
        &self,
        scope: &str,
        candidates: &[(String, String)],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let candidates = batch::last_per_key(candidates, |(key, _)| key);
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut values = with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            for chunk in candidates.chunks(batch::rows_per_statement(3)) {
                let mut query =
                    QueryBuilder::new("INSERT INTO generated_values (scope, name, value) ");
                query.push_values(chunk, |mut row, (key, value)| {
                    row.push_bind(scope).push_bind(key.as_str()).push_bind(value.as_str());
                });
                query.push(" ON CONFLICT (scope, name) DO NOTHING");
                query.build().execute(&mut *tx).await?;
            }
            let mut values = Vec::with_capacity(candidates.len());
            for chunk in candidates.chunks(batch::rows_per_statement(1)) {
                let mut query = QueryBuilder::new("SELECT name, value FROM generated_values WHERE scope = ");
                query.push_bind(scope).push(" AND name IN (");
                let mut separated = query.separated(", ");
                for (key, _) in chunk {
                    separated.push_bind(key.as_str());
                }
                query.push(")");
                values.extend(
                    query
                        .build_query_as::<(String, String)>()
                        .fetch_all(&mut *tx)
                        .await?,
                );
            }
            tx.commit().await.map(|()| values)
        }
        .await)
        .map_err(StoreError::query("store generated values"))?;
        values.sort();
        Ok(values)
    }

    /// Stores each `(key, value)` of `values` in `scope`, replacing a value
    /// already stored, in one transaction (Kubernetes mode: a value adopted
    /// from the cluster's Secret). When a key appears more than once, the
    /// last value is stored.
    pub async fn put_generated_values(
        &self,
        scope: &str,
        values: &[(String, String)],
    ) -> Result<(), StoreError> {
        let values = batch::last_per_key(values, |(key, _)| key);
        if values.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            for chunk in values.chunks(batch::rows_per_statement(3)) {
                let mut query =
                    QueryBuilder::new("INSERT INTO generated_values (scope, name, value) ");
                query.push_values(chunk, |mut row, (key, value)| {
                    row.push_bind(scope).push_bind(key.as_str()).push_bind(value.as_str());
                });
                query.push(" ON CONFLICT (scope, name) DO UPDATE SET value = excluded.value");
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)
        .map_err(StoreError::query("store adopted generated values"))
    }

    /// Forgets the values of `keys` in `scope` (their objects are gone, and
    /// a key — an object uid — never comes back); unknown keys are ignored.
    pub async fn delete_generated_values(
        &self,
        scope: &str,
        keys: &[String],
    ) -> Result<(), StoreError> {
        let keys = batch::last_per_key(keys, |key| key);
        if keys.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            for chunk in keys.chunks(batch::rows_per_statement(2)) {
                let mut query = QueryBuilder::new("DELETE FROM generated_values WHERE scope = ");
                query.push_bind(scope).push(" AND name IN (");
                let mut separated = query.separated(", ");
                for key in chunk {
                    separated.push_bind(key.as_str());
                }
                query.push(")");
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)
        .map_err(StoreError::query("delete generated values"))
    }
}
