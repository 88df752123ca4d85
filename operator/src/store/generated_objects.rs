//! Objects the operator generates in dir mode: TaskRuns created by Schedules
//! live here, not in the YAML directory.
//!
//! The key is the lock: run names are deterministic from the scheduled time,
//! and [`Store::insert_generated_object`] lets exactly one writer take a key,
//! however many tasks, processes or replicas race for it. Documents are
//! stored as their compact JSON text and returned as parsed from it.

use chrono::{DateTime, Utc};

use super::stored_time;
use super::{GeneratedObjectRecord, ObjectRef, Store, StoreError};

/// A generated-object row as read back, before its document is parsed.
#[derive(sqlx::FromRow)]
struct GeneratedObjectRow {
    #[sqlx(flatten)]
    key: ObjectRef,
    owner_kind: Option<String>,
    owner_namespace: Option<String>,
    owner_name: Option<String>,
    document: String,
    created_at: DateTime<Utc>,
}

impl GeneratedObjectRow {
    fn into_record(self) -> Result<GeneratedObjectRecord, StoreError> {
        let document = match serde_json::from_str(&self.document) {
            Ok(document) => document,
            Err(source) => {
                return Err(StoreError::CorruptDocument {
                    what: "document",
                    key: self.key.to_string(),
                    source,
                });
            }
        };
        // The table's CHECK keeps the owner columns all set or all NULL.
        let owner = match (self.owner_kind, self.owner_namespace, self.owner_name) {
            (Some(kind), Some(namespace), Some(name)) => Some(ObjectRef {
                kind,
                namespace,
                name,
            }),
            _ => None,
        };
        Ok(GeneratedObjectRecord {
            key: self.key,
            owner,
            document,
            created_at: self.created_at,
        })
    }
}

impl Store {
    /// Inserts `record` unless an object with the same key exists; returns
    /// whether it inserted.
    ///
    /// First writer wins: of several callers (tasks, processes, replicas)
    /// inserting the same key at once, exactly one gets `true`, and a stored
    /// object is never replaced by this call. The key's kind and name (and
    /// the owner's, if any) must not be empty, else [`StoreError::Query`].
    pub async fn insert_generated_object(
        &self,
        record: &GeneratedObjectRecord,
    ) -> Result<bool, StoreError> {
        const INSERT: &str = "INSERT INTO generated_objects \
                              (kind, namespace, name, owner_kind, owner_namespace, owner_name, \
                              document, created_at) \
                              VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                              ON CONFLICT (kind, namespace, name) DO NOTHING";
        let document = record.document.to_string();
        let owner = record.owner.as_ref();
        with_pool!(self, pool => sqlx::query(INSERT)
            .bind(record.key.kind.as_str())
            .bind(record.key.namespace.as_str())
            .bind(record.key.name.as_str())
            .bind(owner.map(|owner| owner.kind.as_str()))
            .bind(owner.map(|owner| owner.namespace.as_str()))
            .bind(owner.map(|owner| owner.name.as_str()))
            .bind(document.as_str())
            .bind(stored_time(record.created_at))
            .execute(pool)
            .await
            .map(|done| done.rows_affected() == 1))
        .map_err(StoreError::query("insert a generated object"))
    }

    /// Replaces the document of the object at `key` (its owner and creation
    /// time stay); returns `false`, changing nothing, if there is none.
    pub async fn update_generated_object(
        &self,
        key: &ObjectRef,
        document: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        const UPDATE: &str = "UPDATE generated_objects SET document = $4 \
                              WHERE kind = $1 AND namespace = $2 AND name = $3";
        let document = document.to_string();
        with_pool!(self, pool => sqlx::query(UPDATE)
            .bind(key.kind.as_str())
            .bind(key.namespace.as_str())
            .bind(key.name.as_str())
            .bind(document.as_str())
            .execute(pool)
            .await
            .map(|done| done.rows_affected() == 1))
        .map_err(StoreError::query("update a generated object"))
    }

    /// Every generated object, ordered by `(kind, namespace, name)`.
    ///
    /// # Errors
    /// [`StoreError::CorruptDocument`] if a stored document is not valid JSON.
    pub async fn generated_objects(&self) -> Result<Vec<GeneratedObjectRecord>, StoreError> {
        const SELECT: &str = "SELECT kind, namespace, name, owner_kind, owner_namespace, \
                              owner_name, document, created_at FROM generated_objects \
                              ORDER BY kind, namespace, name";
        let rows = with_pool!(self, pool => sqlx::query_as::<_, GeneratedObjectRow>(SELECT)
            .fetch_all(pool)
            .await)
        .map_err(StoreError::query("read generated objects"))?;
        rows.into_iter()
            .map(GeneratedObjectRow::into_record)
            .collect()
    }

    /// Deletes the objects at `keys` in one transaction; unknown keys are
    /// ignored.
    pub async fn delete_generated_objects(&self, keys: &[ObjectRef]) -> Result<(), StoreError> {
        self.delete_by_key("generated_objects", keys, "delete generated objects")
            .await
    }
}
