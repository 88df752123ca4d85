//! Admin and node tokens, by SHA-256 hash only: the caller hashes, the store
//! never sees a token. A node token is bound to one node; revoking keeps the
//! row (for listing) but stops it from authenticating.

use chrono::Utc;

use super::stored_time;
use super::{NodeTokenRecord, Store, StoreError};

impl Store {
    /// The hash of the admin token, if one was set.
    pub async fn admin_token_hash(&self) -> Result<Option<String>, StoreError> {
        const SELECT: &str = "SELECT token_hash FROM admin_token WHERE singleton = 1";
        with_pool!(self, pool => sqlx::query_scalar::<_, String>(SELECT).fetch_optional(pool).await)
            .map_err(StoreError::query("read the admin token"))
    }

    /// Sets (or replaces) the hash of the one admin token.
    pub async fn set_admin_token_hash(&self, hash: &str) -> Result<(), StoreError> {
        const UPSERT: &str = "INSERT INTO admin_token (singleton, token_hash, updated_at) \
                              VALUES (1, $1, $2) \
                              ON CONFLICT (singleton) DO UPDATE SET \
                              token_hash = excluded.token_hash, updated_at = excluded.updated_at";
        let now = stored_time(Utc::now());
        with_pool!(self, pool => sqlx::query(UPSERT).bind(hash).bind(now).execute(pool).await.map(drop))
            .map_err(StoreError::query("set the admin token"))
    }

    /// Records a new token for `node`, identified by `id` (shown in listings
    /// and used to revoke it).
    ///
    /// # Errors
    /// [`StoreError::DuplicateToken`] if `id` or `token_hash` is already
    /// stored, revoked or not.
    pub async fn create_node_token(
        &self,
        node: &str,
        token_hash: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        const INSERT: &str = "INSERT INTO node_tokens (id, node, token_hash, created_at) \
                              VALUES ($1, $2, $3, $4)";
        let now = stored_time(Utc::now());
        let result = with_pool!(self, pool => sqlx::query(INSERT)
            .bind(id)
            .bind(node)
            .bind(token_hash)
            .bind(now)
            .execute(pool)
            .await
            .map(drop));
        match result {
            Ok(()) => Ok(()),
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                Err(StoreError::DuplicateToken { id: id.to_owned() })
            }
            Err(source) => Err(StoreError::query("create a node token")(source)),
        }
    }

    /// Every node token, revoked ones included, ordered by node, then
    /// creation time, then id.
    pub async fn node_tokens(&self) -> Result<Vec<NodeTokenRecord>, StoreError> {
        const SELECT: &str = "SELECT id, node, created_at, revoked_at FROM node_tokens \
                              ORDER BY node, created_at, id";
        with_pool!(self, pool => sqlx::query_as::<_, NodeTokenRecord>(SELECT).fetch_all(pool).await)
            .map_err(StoreError::query("list node tokens"))
    }

    /// Revokes the token `id`. Returns `true` if this call revoked it, `false`
    /// if no such token exists or it was already revoked.
    pub async fn revoke_node_token(&self, id: &str) -> Result<bool, StoreError> {
        const UPDATE: &str =
            "UPDATE node_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
        let now = stored_time(Utc::now());
        with_pool!(self, pool => sqlx::query(UPDATE)
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() == 1))
        .map_err(StoreError::query("revoke a node token"))
    }

    /// Every unrevoked token as (hash, node), for the API's in-memory cache.
    pub async fn active_node_token_hashes(&self) -> Result<Vec<(String, String)>, StoreError> {
        const SELECT: &str = "SELECT token_hash, node FROM node_tokens WHERE revoked_at IS NULL";
        with_pool!(self, pool => sqlx::query_as::<_, (String, String)>(SELECT).fetch_all(pool).await)
            .map_err(StoreError::query("list node token hashes"))
    }

    /// The node a token (by hash) is bound to; `None` if the hash is unknown
    /// or the token was revoked.
    pub async fn node_for_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<String>, StoreError> {
        const SELECT: &str =
            "SELECT node FROM node_tokens WHERE token_hash = $1 AND revoked_at IS NULL";
        with_pool!(self, pool => sqlx::query_scalar::<_, String>(SELECT)
            .bind(token_hash)
            .fetch_optional(pool)
            .await)
        .map_err(StoreError::query("look up a node token"))
    }
}
