//! A pass whose store writes failed (a full disk, a read-only database,
//! PostgreSQL away): revocations still reach the agents.
//!
//! The world is built and planned as usual but nothing is written; of the
//! plan's assignments only what they take away is published
//! ([`crate::agents::Agents::set_revocations`]): a disabled, expired,
//! over-limit or deleted key leaves its servers although the store cannot
//! record it. Anything new (users, servers, tasks) waits for a pass that
//! can write, so nothing is handed out that the store does not hold.

use chrono::{DateTime, Utc};

use super::{Controller, registered_nodes};
use crate::source::SourceSnapshot;

impl Controller {
    /// Plans `snapshot` without writing and publishes its revocations.
    pub(super) fn publish_revocations(&mut self, snapshot: &SourceSnapshot, now: DateTime<Utc>) {
        let nodes = self.agents.observations();
        let mut extra = registered_nodes(snapshot, &nodes);
        let mut book = self.book.clone();
        let new_uid = || uuid::Uuid::new_v4().to_string();
        let (world, _) = match &self.kube {
            None => {
                extra.extend(self.generated.iter().map(|(k, v)| (k.clone(), v.clone())));
                book.build_world_with(snapshot, &extra, now, new_uid)
            }
            Some(kube) => book.build_cluster_world(
                snapshot,
                &self.generated,
                &extra,
                kube.hidden_runs(),
                now,
                new_uid,
            ),
        };
        let planned = self.plan_now(&world, &nodes, now, None, None);
        self.agents.set_revocations(&planned.assignments, now);
    }
}
