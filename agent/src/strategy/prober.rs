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
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A group whose one target is a closed loopback port, probed every
    /// second (`hash` is its spec hash).
    fn group(name: &str, hash: &str, port: u16) -> StrategyGroup {
        serde_json::from_value(serde_json::json!({
            "primary": {"namespace": "default", "name": name},
            "members": [{"strategy": {"namespace": "default", "name": name}, "generation": 1}],
            "probes": {
                "interval": "1s",
                "timeout": "500ms",
                "passes": 1,
                "targets": [{"url": format!("http://127.0.0.1:{port}/")}],
            },
            "specHash": hash,
        }))
        .unwrap()
    }

    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn each_group_with_probes_gets_one_loop_that_reports_its_active_member() {
        let reports: Arc<Mutex<Vec<(StrategyId, ProbeReport)>>> = Arc::default();
        let seen = reports.clone();
        let sink: ReportSink = Arc::new(move |id, report| seen.lock().unwrap().push((id, report)));
        let options = ProbeOptions::new(
            Duration::from_secs(1),
            Arc::new(rustls::RootCertStore::empty()),
        );
        let mut prober = Prober::new(options, sink);
        let port = closed_port();
        let mut without = group("unprobed", "h0", port);
        without.probes = None;
        prober.apply(&[group("youtube", "h1", port), without.clone()]);
        assert_eq!(prober.len(), 1, "a group without probes gets no loop");

        // The first round comes after a second (the interval); the closed
        // port fails it.
        let mut first = None;
        for _ in 0..100 {
            first = reports.lock().unwrap().first().cloned();
            if first.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (id, report) = first.expect("a report within 10 s");
        assert_eq!(id.name, "youtube");
        assert_eq!(report.success_rate, Some(0.0));
        assert_eq!(report.fail_phase.as_deref(), Some("ConnectRefused"));

        // The same hash keeps the loop; a gone group stops it.
        prober.apply(&[group("youtube", "h1", port)]);
        assert_eq!(prober.len(), 1);
        prober.apply(&[without]);
        assert!(prober.is_empty());
        let count = reports.lock().unwrap().len();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            reports.lock().unwrap().len(),
            count,
            "a stopped loop reports nothing"
        );
    }

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
