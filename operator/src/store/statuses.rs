//! Dir-mode statuses: one JSON document per object, written in batches by
//! the reconcile loop (only changed statuses) and read by the `get` API.
//!
//! Documents are stored as their compact JSON text and returned as parsed
//! from it, so both backends give back exactly what was written.

use sqlx::QueryBuilder;

use super::pool::begin_write;
use super::{ObjectRef, Store, StoreError, batch};

/// A status row as read back, before its document is parsed.
#[derive(sqlx::FromRow)]
struct StatusRow {
    #[sqlx(flatten)]
    key: ObjectRef,
    document: String,
}

impl Store {
    /// Every stored status, ordered by `(kind, namespace, name)`.
    ///
    /// # Errors
    /// [`StoreError::CorruptStatus`] if a stored document is not valid JSON.
    pub async fn statuses(&self) -> Result<Vec<(ObjectRef, serde_json::Value)>, StoreError> {
        const SELECT: &str =
            "SELECT kind, namespace, name, document FROM statuses ORDER BY kind, namespace, name";
        let rows =
            with_pool!(self, pool => sqlx::query_as::<_, StatusRow>(SELECT).fetch_all(pool).await)
                .map_err(StoreError::query("read statuses"))?;
        rows.into_iter()
            .map(|row| match serde_json::from_str(&row.document) {
                Ok(document) => Ok((row.key, document)),
                Err(source) => Err(StoreError::CorruptStatus {
                    object: row.key.to_string(),
                    source,
                }),
            })
            .collect()
    }

    /// Applies a batch of status changes in ONE transaction: `Some(document)`
    /// inserts or replaces the status of an object, `None` deletes it.
    ///
    /// All or nothing: if any change fails (e.g. an empty kind or name), none
    /// is applied. When a key appears more than once, its last change wins.
    /// Rows go out in multi-row statements, so 10,000 changes take
    /// milliseconds.
    pub async fn write_statuses<V: serde::Serialize>(
        &self,
        changes: &[(ObjectRef, Option<V>)],
    ) -> Result<(), StoreError> {
        let changes = batch::last_per_key(changes, |(key, _)| key);
        if changes.is_empty() {
            return Ok(());
        }
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for (key, document) in changes {
            match document {
                Some(document) => upserts.push((
                    key,
                    serde_json::to_string(document).map_err(|source| {
                        StoreError::CorruptStatus {
                            object: key.to_string(),
                            source,
                        }
                    })?,
                )),
                None => deletes.push(key),
            }
        }
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            for chunk in deletes.chunks(batch::rows_per_statement(3)) {
                batch::delete_objects("statuses", chunk)
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
            for chunk in upserts.chunks(batch::rows_per_statement(4)) {
                let mut query =
                    QueryBuilder::new("INSERT INTO statuses (kind, namespace, name, document) ");
                query.push_values(chunk, |mut row, (key, document)| {
                    row.push_bind(key.kind.as_str())
                        .push_bind(key.namespace.as_str())
                        .push_bind(key.name.as_str())
                        .push_bind(document.as_str());
                });
                query.push(
                    " ON CONFLICT (kind, namespace, name) DO UPDATE SET document = excluded.document",
                );
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)
        .map_err(StoreError::query("write statuses"))
    }
}
