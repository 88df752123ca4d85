//! The agent's probe loops: one task per assigned group that has `probes`.
//! Each round probes the group's active member (unmarked: it must take the
//! path users' traffic takes, through the live engine's capture) or, while
//! a search runs, the candidate under test (with the probe mark, so only
//! the candidate slot's engine sees it); rounds come every `interval`
//! (±10 %, so nodes do not probe in step), a candidate's back to back.
//! The group's [`GroupWatch`] turns rounds into failover actions, which the
//! loop carries out on the [`Engines`]; its state is saved after every
//! round ([`SavedStates`]) and its report sent with the active member's.
//! Warm VLESS backups are checked through their SOCKS ports at a low rate
//! ([`STANDBY_EVERY`] intervals) between searches.
//!
//! One candidate slot serves the node: a group's search holds it from its
//! first candidate to its last, other groups wait. A group whose spec
//! changes (another `specHash`) starts over from its primary.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::task::JoinHandle;
use veil_crds::wire::{ProbeReport, ProbeSample, StrategyGroup, StrategyId};

use super::failover::{Action, FailoverConfig};
use super::probe::{ProbeOptions, probe_round};
use super::saved::SavedStates;
use super::watch::GroupWatch;

/// Longest wait before a group's first round (the engine starts first).
const FIRST_ROUND_WITHIN: Duration = Duration::from_secs(3);

/// Longest pause between a candidate's rounds.
const CANDIDATE_PAUSE: Duration = Duration::from_secs(1);

/// A warm standby (a VLESS backup's running client) is checked once every
/// this many intervals (seed 000's prewarm): its status says whether it
/// would work before it is needed. A search still tests it in full.
const STANDBY_EVERY: u32 = 4;

/// What failover drives: the engines that run a group's members.
pub trait Engines: Clone + Send + Sync + 'static {
    /// Makes `member` (a name in `group`) the group's active member.
    fn activate(&self, group: &StrategyId, member: &str);
    /// Starts `member` in the candidate slot, reached only by probe-marked
    /// packets; `Err` says why it cannot run.
    fn test_candidate(
        &self,
        group: &StrategyId,
        member: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Empties the candidate slot (if `group`'s candidate is in it).
    fn stop_candidate(&self, group: &StrategyId);
    /// The probes' latest word on `member`.
    fn report(&self, member: StrategyId, report: ProbeReport);
    /// Why `group`'s active member cannot work (its engine could not
    /// start, stopped, or crash-loops), if it cannot.
    fn active_failure(&self, group: &StrategyId) -> impl Future<Output = Option<String>> + Send;
    /// The local SOCKS5 port of a `vless` member whose client runs.
    fn socks_port(&self, member: &StrategyId) -> impl Future<Output = Option<u16>> + Send;
}

/// The running probe loops, by group primary.
pub struct Prober<E: Engines> {
    options: ProbeOptions,
    /// `SO_MARK` of a candidate's probes.
    candidate_mark: u32,
    engines: E,
    saved: SavedStates,
    slot: Arc<Mutex<()>>,
    loops: BTreeMap<StrategyId, (String, JoinHandle<()>)>,
}

impl<E: Engines> Prober<E> {
    /// No loops yet; `options` (trust, DNS) serve every group, each with
    /// its own `timeout`; candidates' probes carry `candidate_mark`; states
    /// are saved in `saved`.
    pub fn new(
        options: ProbeOptions,
        candidate_mark: u32,
        engines: E,
        saved: SavedStates,
    ) -> Prober<E> {
        Prober {
            options,
            candidate_mark,
            engines,
            saved,
            slot: Arc::new(Mutex::new(())),
            loops: BTreeMap::new(),
        }
    }

    /// Runs exactly one loop per group of `groups` that has probes: new
    /// groups start (from their saved state), changed ones start over, gone
    /// ones stop. Call it before the engines apply `groups`: it tells them
    /// each new group's active member first, so a restarted agent never
    /// runs the primary where failover had chosen a backup.
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
        for (primary, group) in &wanted {
            if self.loops.contains_key(*primary) {
                continue;
            }
            let Some(task) = self.start(group) else {
                continue;
            };
            self.loops
                .insert((*primary).clone(), (group.spec_hash.clone(), task));
        }
        let keep: Vec<&StrategyId> = wanted.keys().copied().collect();
        self.saved.retain(&keep);
    }

    fn start(&self, group: &StrategyGroup) -> Option<JoinHandle<()>> {
        let probes = group.probes.as_ref()?;
        let config = match FailoverConfig::from_group(group) {
            Ok(config) => config,
            Err(error) => {
                tracing::warn!(%error, "not probing the group");
                return None;
            }
        };
        let (watch, resume) = GroupWatch::new(
            config,
            self.saved.load(&group.primary),
            probes.timeout.as_std(),
            group.scoring.weights.clone(),
        );
        self.engines.activate(&group.primary, watch.active());
        let run = GroupLoop {
            group: group.clone(),
            options: ProbeOptions {
                timeout: probes.timeout.as_std(),
                ..self.options.clone()
            },
            candidate_mark: self.candidate_mark,
            engines: self.engines.clone(),
            saved: self.saved.clone(),
            slot: self.slot.clone(),
            held: None,
            rounds: BTreeMap::new(),
            standby_due: tokio::time::Instant::now(),
            announced: watch.active().to_owned(),
            watch,
        };
        Some(tokio::spawn(run.run(resume)))
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

impl<E: Engines> Drop for Prober<E> {
    fn drop(&mut self) {
        for (_, task) in self.loops.values() {
            task.abort();
        }
    }
}

/// One group's loop and what it holds.
struct GroupLoop<E: Engines> {
    group: StrategyGroup,
    options: ProbeOptions,
    candidate_mark: u32,
    engines: E,
    saved: SavedStates,
    slot: Arc<Mutex<()>>,
    /// The node's candidate slot, while this group's search holds it.
    held: Option<OwnedMutexGuard<()>>,
    watch: GroupWatch,
    /// Each member's latest round, as reported.
    rounds: BTreeMap<String, Vec<ProbeSample>>,
    /// When the warm standbys are checked next.
    standby_due: tokio::time::Instant,
    /// The member the engines were last told is active (for the log).
    announced: String,
}

impl<E: Engines> Drop for GroupLoop<E> {
    /// A loop stopped mid-search leaves no candidate running.
    fn drop(&mut self) {
        if self.held.is_some() {
            self.engines.stop_candidate(&self.group.primary);
        }
    }
}

impl<E: Engines> GroupLoop<E> {
    async fn run(mut self, resume: Vec<Action>) {
        let Some(probes) = self.group.probes.clone() else {
            return;
        };
        let interval = probes.interval.as_std();
        // Resuming (a candidate test under way when the agent stopped) waits
        // for the first pause: the engines learn the group from the apply
        // that follows `Prober::apply`, and a candidate they do not know
        // yet would fail its test.
        tokio::time::sleep(interval.min(FIRST_ROUND_WITHIN)).await;
        self.carry_out(resume).await;
        loop {
            let active = self.watch.active().to_owned();
            let member = self.watch.testing().unwrap_or(&active).to_owned();
            let candidate = member != active;
            let failure = if candidate {
                None
            } else {
                self.engines.active_failure(&self.group.primary).await
            };
            if let Some(reason) = failure {
                tracing::warn!(group = %self.group.primary, strategy = %active, %reason, "the active strategy's engine has failed");
                let actions = self
                    .watch
                    .on_engine_failed(&active, reason, chrono::Utc::now());
                self.carry_out(actions).await;
                self.after_round();
                tokio::time::sleep(jittered(interval)).await;
                continue;
            }
            let Some(options) = self.options_for(&member, candidate).await else {
                // A VLESS client that is not serving yet: its engine state
                // says why; the round is skipped.
                let actions = self.watch.tick(chrono::Utc::now());
                self.carry_out(actions).await;
                tokio::time::sleep(interval.min(CANDIDATE_PAUSE)).await;
                continue;
            };
            let actions = match probe_round(&probes.targets, &options).await {
                Ok(results) => {
                    for result in results.iter().filter(|r| !r.sample.passed) {
                        tracing::debug!(
                            group = %self.group.primary,
                            strategy = %member,
                            candidate,
                            target = %result.sample.target,
                            fail_phase = ?result.sample.fail_phase,
                            detail = result.detail.as_deref().unwrap_or(""),
                            "probe sample failed"
                        );
                    }
                    self.rounds.insert(
                        member.clone(),
                        results.iter().map(|r| r.to_wire()).collect(),
                    );
                    let samples = results.into_iter().map(|r| r.sample).collect();
                    self.watch.on_round(&member, samples, chrono::Utc::now())
                }
                Err(error) => {
                    tracing::warn!(group = %self.group.primary, strategy = %member, %error, "a probe round could not run");
                    self.watch.tick(chrono::Utc::now())
                }
            };
            self.carry_out(actions).await;
            self.after_round();
            if self.watch.testing().is_none() && tokio::time::Instant::now() >= self.standby_due {
                self.check_standbys(&probes.targets).await;
                self.standby_due = tokio::time::Instant::now() + interval * STANDBY_EVERY;
            }
            let pause = if self.watch.testing().is_some() {
                interval.min(CANDIDATE_PAUSE)
            } else {
                jittered(interval)
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Saves the state and reports the active member.
    fn after_round(&self) {
        if let Err(error) = self.saved.save(&self.group.primary, self.watch.state()) {
            tracing::warn!(%error, "the failover state will not survive a restart");
        }
        if let Some(mut report) = self.watch.report() {
            let id = StrategyId {
                namespace: self.group.primary.namespace.clone(),
                name: self.watch.active().to_owned(),
            };
            report.round = self.rounds.get(&id.name).cloned().unwrap_or_default();
            self.engines.report(id, report);
        }
    }

    /// Probes each `vless` member that is not active and whose client
    /// serves a SOCKS port, and reports what it saw.
    async fn check_standbys(&mut self, targets: &[veil_crds::strategy::ProbeTarget]) {
        let active = self.watch.active().to_owned();
        let standbys: Vec<StrategyId> = self
            .group
            .members
            .iter()
            .filter(|m| m.vless.is_some() && m.strategy.name != active)
            .map(|m| m.strategy.clone())
            .collect();
        for id in standbys {
            let Some(options) = self.options_for(&id.name, false).await else {
                continue;
            };
            let results = match probe_round(targets, &options).await {
                Ok(results) => results,
                Err(error) => {
                    tracing::warn!(group = %self.group.primary, strategy = %id.name, %error, "a warm standby's probe round could not run");
                    continue;
                }
            };
            let round: Vec<ProbeSample> = results.iter().map(|r| r.to_wire()).collect();
            let samples = results.into_iter().map(|r| r.sample).collect();
            let mut report = self
                .watch
                .on_standby_round(&id.name, samples, chrono::Utc::now());
            tracing::debug!(group = %self.group.primary, strategy = %id.name, score = ?report.score, "warm standby checked");
            report.round = round.clone();
            self.rounds.insert(id.name.clone(), round);
            self.engines.report(id, report);
        }
    }

    /// How `member` is probed: a zapret member directly (a candidate with
    /// the probe mark, so only the side queue's engine sees it), a `vless`
    /// member through its client's SOCKS port (`None` while it has none).
    async fn options_for(&self, member: &str, candidate: bool) -> Option<ProbeOptions> {
        let id = StrategyId {
            namespace: self.group.primary.namespace.clone(),
            name: member.to_owned(),
        };
        let vless = self
            .group
            .members
            .iter()
            .any(|m| m.strategy == id && m.vless.is_some());
        if vless {
            let port = self.engines.socks_port(&id).await?;
            return Some(ProbeOptions {
                socks: Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
                ..self.options.clone()
            });
        }
        Some(ProbeOptions {
            mark: candidate.then_some(self.candidate_mark),
            ..self.options.clone()
        })
    }

    /// Carries out `actions` in order (and what a candidate that cannot
    /// start leads to).
    async fn carry_out(&mut self, actions: Vec<Action>) {
        let group = self.group.primary.clone();
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::TestCandidate(name) => {
                    if self.held.is_none() {
                        self.held = Some(self.slot.clone().lock_owned().await);
                    }
                    tracing::info!(%group, candidate = %name, active = %self.watch.active(), "testing a failover candidate");
                    if let Err(reason) = self.engines.test_candidate(&group, &name).await {
                        tracing::warn!(%group, candidate = %name, %reason, "the candidate cannot run; it fails its test");
                        queue.extend(self.watch.on_engine_failed(
                            &name,
                            reason,
                            chrono::Utc::now(),
                        ));
                    }
                }
                Action::StopCandidate => {
                    self.engines.stop_candidate(&group);
                    self.held = None;
                }
                Action::SwitchTo(name) => {
                    let from = std::mem::replace(&mut self.announced, name.clone());
                    tracing::info!(%group, %from, to = %name, "strategy switched");
                    self.engines.activate(&group, &name);
                }
                Action::Stay { reason } => {
                    tracing::warn!(%group, active = %self.watch.active(), %reason, "failover search ended without a switch");
                }
            }
        }
    }
}

/// `interval` ± up to 10 %.
fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_secs_f64() * 0.1;
    let offset = rand::random_range(-spread..=spread);
    Duration::from_secs_f64((interval.as_secs_f64() + offset).max(0.0))
}

#[cfg(test)]
mod tests;
