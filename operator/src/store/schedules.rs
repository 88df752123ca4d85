//! Schedule state: the last schedule time of each Schedule, persisted so no
//! run is created twice or lost across an operator restart.

use chrono::{DateTime, Utc};

use super::stored_time;
use super::{ObjectRef, Store, StoreError};

/// A schedule-state row as read back.
#[derive(sqlx::FromRow)]
struct ScheduleStateRow {
    #[sqlx(flatten)]
    key: ObjectRef,
    last_schedule_time: DateTime<Utc>,
}

impl Store {
    /// The last schedule time of every Schedule that has one, ordered by
    /// `(kind, namespace, name)`.
    pub async fn schedule_states(&self) -> Result<Vec<(ObjectRef, DateTime<Utc>)>, StoreError> {
        const SELECT: &str = "SELECT kind, namespace, name, last_schedule_time \
                              FROM schedule_states ORDER BY kind, namespace, name";
        let rows = with_pool!(self, pool => sqlx::query_as::<_, ScheduleStateRow>(SELECT)
            .fetch_all(pool)
            .await)
        .map_err(StoreError::query("read schedule states"))?;
        Ok(rows
            .into_iter()
            .map(|row| (row.key, row.last_schedule_time))
            .collect())
    }

    /// Records `time` as the last schedule time of `schedule` unless a later
    /// one is stored: the time never moves backwards, even when writers race.
    /// Kept with microsecond precision.
    pub async fn set_last_schedule_time(
        &self,
        schedule: &ObjectRef,
        time: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // One conditional upsert. SQLite compares the stored RFC 3339 text:
        // always UTC (`+00:00`) with 0, 3 or 6 fraction digits, which sorts
        // in time order ('+' < '.' < digits).
        const UPSERT: &str = "INSERT INTO schedule_states \
                              (kind, namespace, name, last_schedule_time) VALUES ($1, $2, $3, $4) \
                              ON CONFLICT (kind, namespace, name) DO UPDATE SET \
                              last_schedule_time = excluded.last_schedule_time \
                              WHERE schedule_states.last_schedule_time \
                              < excluded.last_schedule_time";
        with_pool!(self, pool => sqlx::query(UPSERT)
            .bind(schedule.kind.as_str())
            .bind(schedule.namespace.as_str())
            .bind(schedule.name.as_str())
            .bind(stored_time(time))
            .execute(pool)
            .await
            .map(drop))
        .map_err(StoreError::query("set a last schedule time"))
    }

    /// Forgets the state of `schedule` (deleted Schedule); nothing happens if
    /// it has none.
    pub async fn delete_schedule_state(&self, schedule: &ObjectRef) -> Result<(), StoreError> {
        const DELETE: &str =
            "DELETE FROM schedule_states WHERE kind = $1 AND namespace = $2 AND name = $3";
        with_pool!(self, pool => sqlx::query(DELETE)
            .bind(schedule.kind.as_str())
            .bind(schedule.namespace.as_str())
            .bind(schedule.name.as_str())
            .execute(pool)
            .await
            .map(drop))
        .map_err(StoreError::query("delete a schedule state"))
    }
}
