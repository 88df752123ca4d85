//! The agent's probe loop: one task per assigned failover group that has
//! `probes`, probing the group's active member every `interval` (±10 %, so
//! nodes do not probe in step) and handing the [`ActiveWatch`] report to a
//! sink (the zapret driver, which sends it with the member's Strategy
//! report).
//!
//! Probes of the active member go out unmarked: they must take the path
//! users' traffic takes, through the live engine's capture. A group whose
//! spec changes (another `specHash`) starts over with a fresh watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use veil_crds::wire::{ProbeReport, StrategyGroup, StrategyId};

use super::probe::{ProbeOptions, probe_round};
use super::watch::ActiveWatch;

/// Where reports go: the member and its latest report.
pub type ReportSink = Arc<dyn Fn(StrategyId, ProbeReport) + Send + Sync>;

/// Longest wait before a group's first round (the engine starts first).
const FIRST_ROUND_WITHIN: Duration = Duration::from_secs(3);

/// The running probe loops, by group primary.
pub struct Prober {
    options: ProbeOptions,
    sink: ReportSink,
    loops: BTreeMap<StrategyId, (String, JoinHandle<()>)>,
}

impl Prober {
    /// No loops yet; `options` (trust, DNS) serve every group, each with
    /// its own `timeout`.
    pub fn new(options: ProbeOptions, sink: ReportSink) -> Prober {
        Prober {
            options,
            sink,
            loops: BTreeMap::new(),
        }
    }

    /// Runs exactly one loop per group of `groups` that has probes: new
    /// groups start, changed ones start over, gone ones stop.
    pub fn apply(&mut self, groups: &[StrategyGroup]) {
        let wanted: BTreeMap<&StrategyId, &StrategyGroup> = groups
            .iter()
            .filter(|g| g.probes.is_some() && !g.members.is_empty())
            .map(|g| (&g.primary, g))
            .collect();
        self.loops.retain(|primary, (hash, task)| {
            let keep = wanted.get(primary).is_some_and(|g| &g.spec_hash == hash);
            if !keep {
                task.abort();
            }
            keep
        });
        for (primary, group) in wanted {
            if self.loops.contains_key(primary) {
                continue;
            }
            let task = tokio::spawn(group_loop(
                (*group).clone(),
                self.options.clone(),
                self.sink.clone(),
            ));
            self.loops
                .insert(primary.clone(), (group.spec_hash.clone(), task));
        }
    }

    /// Groups being probed.
    pub fn len(&self) -> usize {
        self.loops.len()
    }

    /// Whether no group is probed.
    pub fn is_empty(&self) -> bool {
        self.loops.is_empty()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        for (_, task) in self.loops.values() {
            task.abort();
        }
    }
}

/// Probes `group`'s active member (its primary, until failover is wired)
/// until aborted.
async fn group_loop(group: StrategyGroup, options: ProbeOptions, sink: ReportSink) {
    let (Some(probes), Some(active)) = (group.probes.as_ref(), group.members.first()) else {
        return;
    };
    let interval = probes.interval.as_std();
    let options = ProbeOptions {
        timeout: probes.timeout.as_std(),
        ..options
    };
    let mut watch = ActiveWatch::new(
        probes.passes,
        probes.timeout.as_std(),
        group.scoring.weights.clone(),
    );
    tokio::time::sleep(interval.min(FIRST_ROUND_WITHIN)).await;
    loop {
        match probe_round(&probes.targets, &options).await {
            Ok(results) => {
                for result in results.iter().filter(|r| !r.sample.passed) {
                    tracing::debug!(
                        strategy = %active.strategy,
                        target = %result.sample.target,
                        fail_phase = ?result.sample.fail_phase,
                        detail = result.detail.as_deref().unwrap_or(""),
                        "probe sample failed"
                    );
                }
                let samples = results.into_iter().map(|r| r.sample).collect();
                watch.on_round(samples, chrono::Utc::now());
                if let Some(report) = watch.report() {
                    sink(active.strategy.clone(), report);
                }
            }
            Err(error) => {
                tracing::warn!(strategy = %active.strategy, %error, "a probe round could not run");
            }
        }
        tokio::time::sleep(jittered(interval)).await;
    }
}

/// `interval` ± up to 10 %.
fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_secs_f64() * 0.1;
    let offset = rand::random_range(-spread..=spread);
    Duration::from_secs_f64((interval.as_secs_f64() + offset).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let interval = Duration::from_secs(300);
        for _ in 0..1000 {
            let waited = jittered(interval);
            assert!(
                (Duration::from_secs(270)..=Duration::from_secs(330)).contains(&waited),
                "{waited:?}"
            );
        }
    }
}
