//! History limits: which finished runs of a schedule to delete.
//!
//! Owns only the selection; never deletes anything and never selects a run
//! that has not finished.

use veil_crds::task_run::TaskRunPhase;

use super::RunSummary;

/// Names of finished runs beyond the limits, oldest first: at most
/// `successful` `Succeeded` runs and `failed` `Failed`/`Cancelled` runs are
/// kept (the newest by scheduled time, then by name for a stable order).
pub(super) fn prune(runs: &[RunSummary], successful: u32, failed: u32) -> Vec<String> {
    let mut excess = Vec::new();
    for (phases, limit) in [
        (&[TaskRunPhase::Succeeded][..], successful),
        (&[TaskRunPhase::Failed, TaskRunPhase::Cancelled][..], failed),
    ] {
        let mut finished: Vec<&RunSummary> = runs
            .iter()
            .filter(|run| phases.contains(&run.phase))
            .collect();
        finished.sort_by(|a, b| (a.scheduled_time, &a.name).cmp(&(b.scheduled_time, &b.name)));
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let over = finished.len().saturating_sub(limit);
        excess.extend(finished.into_iter().take(over));
    }
    excess.sort_by(|a, b| (a.scheduled_time, &a.name).cmp(&(b.scheduled_time, &b.name)));
    excess.into_iter().map(|run| run.name.clone()).collect()
}
