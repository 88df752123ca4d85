//! Dir-mode generation bookkeeping: for each object seen in the YAML
//! directory, the uid, generation, spec hash and creation time that
//! Kubernetes would otherwise keep in `metadata`.

use sqlx::QueryBuilder;

use super::pool::begin_write;
use super::stored_time;
use super::{ObjectRecord, ObjectRef, Store, StoreError, batch};

impl Store {
    /// Every object record, ordered by `(kind, namespace, name)`.
    pub async fn object_records(&self) -> Result<Vec<ObjectRecord>, StoreError> {
        const SELECT: &str = "SELECT kind, namespace, name, uid, generation, spec_hash, created_at \
                              FROM object_records ORDER BY kind, namespace, name";
        with_pool!(self, pool => sqlx::query_as::<_, ObjectRecord>(SELECT).fetch_all(pool).await)
            .map_err(StoreError::query("read object records"))
    }

    /// Inserts or replaces `records` in one transaction: all or nothing.
    ///
    /// When a key appears more than once, the last record wins. `kind` and
    /// `name` must not be empty and `generation` must not be negative, else
    /// the whole batch fails with [`StoreError::Query`].
    pub async fn upsert_object_records(&self, records: &[ObjectRecord]) -> Result<(), StoreError> {
        let records = batch::last_per_key(records, |record| &record.key);
        if records.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            for chunk in records.chunks(batch::rows_per_statement(7)) {
                let mut query = QueryBuilder::new(
                    "INSERT INTO object_records \
                     (kind, namespace, name, uid, generation, spec_hash, created_at) ",
                );
                query.push_values(chunk, |mut row, record| {
                    row.push_bind(record.key.kind.as_str())
                        .push_bind(record.key.namespace.as_str())
                        .push_bind(record.key.name.as_str())
                        .push_bind(record.uid.as_str())
                        .push_bind(record.generation)
                        .push_bind(record.spec_hash.as_str())
                        .push_bind(stored_time(record.created_at));
                });
                query.push(
                    " ON CONFLICT (kind, namespace, name) DO UPDATE SET \
                     uid = excluded.uid, generation = excluded.generation, \
                     spec_hash = excluded.spec_hash, created_at = excluded.created_at",
                );
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)
        .map_err(StoreError::query("write object records"))
    }

    /// Deletes the records of `keys` in one transaction; unknown keys are ignored.
    pub async fn delete_object_records(&self, keys: &[ObjectRef]) -> Result<(), StoreError> {
        self.delete_by_key("object_records", keys, "delete object records")
            .await
    }

    /// Deletes the rows of `table` (keyed by kind, namespace, name) at `keys`
    /// in one transaction; unknown keys are ignored.
    pub(super) async fn delete_by_key(
        &self,
        table: &'static str,
        keys: &[ObjectRef],
        operation: &'static str,
    ) -> Result<(), StoreError> {
        let keys = batch::last_per_key(keys, |key| key);
        if keys.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            for chunk in keys.chunks(batch::rows_per_statement(3)) {
                batch::delete_objects(table, chunk)
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        .await)
        .map_err(StoreError::query(operation))
    }
}
