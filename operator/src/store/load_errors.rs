//! Load errors of the current source state (dir mode): replaced wholesale
//! after each load, so the set always describes the directory as it is now.

use sqlx::QueryBuilder;

use super::pool::begin_write;
use super::{LoadErrorRecord, Store, StoreError, batch};

impl Store {
    /// Replaces every stored load error with `errors`, in one transaction.
    /// The order of `errors` is kept.
    pub async fn replace_load_errors(&self, errors: &[LoadErrorRecord]) -> Result<(), StoreError> {
        with_pool!(self, pool => async {
            let mut tx = begin_write(pool).await?;
            sqlx::query("DELETE FROM load_errors").execute(&mut *tx).await?;
            let rows_per_statement = batch::rows_per_statement(7);
            for (chunk_index, chunk) in errors.chunks(rows_per_statement).enumerate() {
                let first_ordinal = chunk_index * rows_per_statement;
                let mut query = QueryBuilder::new(
                    "INSERT INTO load_errors \
                     (ordinal, file, line, column_number, object, path, message) ",
                );
                query.push_values(chunk.iter().enumerate(), |mut row, (index, error)| {
                    // Ordinals count entries of one batch: far below i64::MAX.
                    let ordinal = i64::try_from(first_ordinal + index).unwrap_or(i64::MAX);
                    row.push_bind(ordinal)
                        .push_bind(error.file.as_str())
                        .push_bind(error.line)
                        .push_bind(error.column)
                        .push_bind(error.object.as_deref())
                        .push_bind(error.path.as_deref())
                        .push_bind(error.message.as_str());
                });
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)
        .map_err(StoreError::query("replace load errors"))
    }

    /// The stored load errors, in the order they were given.
    pub async fn load_errors(&self) -> Result<Vec<LoadErrorRecord>, StoreError> {
        const SELECT: &str = "SELECT file, line, column_number, object, path, message \
                              FROM load_errors ORDER BY ordinal";
        with_pool!(self, pool => sqlx::query_as::<_, LoadErrorRecord>(SELECT).fetch_all(pool).await)
            .map_err(StoreError::query("read load errors"))
    }
}
