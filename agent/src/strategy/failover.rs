//! Which member of a failover group is active on this node (design §4d,
//! issue 14). The agent decides alone — it owns timing and keeps working
//! while the operator is unreachable — and persists [`FailoverState`] so a
//! restart neither forgets a switch nor restarts the hysteresis.
//!
//! Rules, in the order they apply:
//!
//! 1. Each round of the active member is judged ([`judge_active`]). After
//!    `failureThreshold` failed rounds in a row, *and* at least
//!    `minSwitchInterval` since the last switch, a search starts. An engine
//!    that cannot start or keeps crashing counts as failed at once (no
//!    threshold wait; the interval still applies). A member that never
//!    worked is no reason to search.
//! 2. A search tests the other members one at a time (list order, so the
//!    primary first when a backup is active), `passes` rounds each; a
//!    failed round ends a candidate's test early.
//!    `ordered`: the first candidate whose rounds all pass wins.
//!    `bestScore`: every candidate is tested; the best passing one wins
//!    only if its score (worst of its rounds) beats the active member's by
//!    more than [`BEST_SCORE_MARGIN`] — the active member wins ties.
//! 3. When nothing wins, the active member stays ("no alternative works")
//!    and the next search waits `minSwitchInterval`.
//! 4. While a backup is active, the primary is tested every
//!    `minSwitchInterval`; it becomes active again when all its rounds pass.
//! 5. A new group `specHash` resets everything to the primary.
//!
//! Time is an argument everywhere (wall-clock UTC, which persists across
//! restarts). A clock that went backwards counts as "long enough ago", so a
//! clock step never blocks failover; each switch stamps the new time, so it
//! cannot cause flapping either.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use veil_crds::strategy::FailoverMode;

use super::evaluation::{beats_by, candidate_passes, judge_active, worst_of};
use super::{Baseline, FailPhase, RoundScore, Verdict};

mod config;

pub use config::{ConfigError, FailoverConfig};

/// How much a `bestScore` candidate must beat the active member by.
pub const BEST_SCORE_MARGIN: f64 = 0.05;

/// The reason given when a search found no working candidate.
pub const NO_ALTERNATIVE: &str = "no alternative works";

/// Something the state machine is told.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A probe round of the active member.
    ActiveRound(RoundScore),
    /// A probe round of the candidate under test (ignored unless `name`
    /// is that candidate: a late round of an earlier test).
    CandidateRound { name: String, round: RoundScore },
    /// A member's engine could not start or keeps crashing.
    EngineFailed { name: String, reason: String },
    /// Nothing new; lets due timers fire when no round arrives.
    Tick,
}

/// What the caller must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start this member in the candidate slot (users' traffic never goes
    /// through it) and send its rounds as [`Event::CandidateRound`].
    /// Re-testing the primary from a backup is this action too.
    TestCandidate(String),
    /// Stop the candidate slot.
    StopCandidate,
    /// Make this member the active one (and emit `StrategySwitched`).
    SwitchTo(String),
    /// A search ended without a switch; `reason` is for status and events.
    Stay { reason: String },
}

/// Why a test runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Purpose {
    /// The active member failed: find a replacement.
    Failover,
    /// A backup is active: see whether the primary works again.
    ReturnToPrimary,
}

/// A candidate that passed all its rounds (`bestScore` collects them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Passed {
    name: String,
    rounds: Vec<RoundScore>,
}

/// A test in progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Search {
    purpose: Purpose,
    /// The member in the candidate slot.
    candidate: String,
    /// Its rounds so far.
    rounds: Vec<RoundScore>,
    /// Members still to test after it, in order.
    queue: VecDeque<String>,
    passed: Vec<Passed>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
enum Phase {
    Steady,
    Testing(Search),
}

/// The failover state of one group on one node. Serialisable: the agent
/// stores it and gives it back to [`FailoverState::restore`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverState {
    spec_hash: String,
    active: String,
    /// Failed rounds of the active member in a row.
    consecutive_failures: u32,
    last_switch: Option<DateTime<Utc>>,
    baseline: Baseline,
    /// The active member's last `passes` rounds, oldest first.
    recent: VecDeque<RoundScore>,
    last_fail_phase: Option<FailPhase>,
    phase: Phase,
    /// When a failover search last ended without a switch.
    last_empty_search: Option<DateTime<Utc>>,
    /// When the primary was last tested (or left) while a backup is active.
    last_primary_test: Option<DateTime<Utc>>,
    message: Option<String>,
}

/// What status shows for the group on this node.
#[derive(Clone, Debug, PartialEq)]
pub struct FailoverReport {
    /// `activeStrategy`.
    pub active_strategy: String,
    /// The worst of the active member's last `passes` rounds (its parts
    /// are the status' score parts); `None` before the first round.
    pub score: Option<RoundScore>,
    /// `failPhase` of the last failed round.
    pub fail_phase: Option<FailPhase>,
    /// `failedRounds`: failed rounds in a row.
    pub failed_rounds: u32,
    /// `lastSwitchTime`.
    pub last_switch: Option<DateTime<Utc>>,
    pub baseline: Baseline,
    /// The member in the candidate slot, if any.
    pub testing: Option<String>,
    pub message: Option<String>,
}

impl FailoverState {
    /// The state of a group seen for the first time: the primary active,
    /// its baseline still to be measured.
    pub fn new(config: &FailoverConfig) -> FailoverState {
        FailoverState {
            spec_hash: config.spec_hash.clone(),
            active: config.primary().to_owned(),
            consecutive_failures: 0,
            last_switch: None,
            baseline: Baseline::Pending,
            recent: VecDeque::new(),
            last_fail_phase: None,
            phase: Phase::Steady,
            last_empty_search: None,
            last_primary_test: None,
            message: None,
        }
    }

    /// The state after an agent restart: `saved` when it belongs to the
    /// same group spec, else a fresh one. A test that was running starts
    /// over (its candidate engine did not survive the restart), so the
    /// actions say which candidate to start again.
    pub fn restore(
        saved: Option<FailoverState>,
        config: &FailoverConfig,
    ) -> (FailoverState, Vec<Action>) {
        match saved {
            Some(mut state)
                if state.spec_hash == config.spec_hash
                    && config.members.contains(&state.active) =>
            {
                let mut actions = Vec::new();
                if let Phase::Testing(search) = &mut state.phase {
                    search.rounds.clear();
                    actions.push(Action::TestCandidate(search.candidate.clone()));
                }
                (state, actions)
            }
            _ => (FailoverState::new(config), Vec::new()),
        }
    }

    /// The active member's name.
    pub fn active(&self) -> &str {
        &self.active
    }

    /// The member in the candidate slot, if a test runs.
    pub fn testing(&self) -> Option<&str> {
        match &self.phase {
            Phase::Testing(search) => Some(&search.candidate),
            Phase::Steady => None,
        }
    }

    /// Applies `event` at `now` and returns what the caller must do.
    /// A `config` with another `specHash` than the state's first resets the
    /// state to the primary (with the actions that takes).
    pub fn on_event(
        &mut self,
        config: &FailoverConfig,
        event: Event,
        now: DateTime<Utc>,
    ) -> Vec<Action> {
        let mut actions = self.reset_if_spec_changed(config);
        match event {
            Event::ActiveRound(round) => self.on_active_round(config, round),
            Event::CandidateRound { name, round } => {
                self.on_candidate_round(config, &name, Some(round), now, &mut actions)
            }
            Event::EngineFailed { name, reason } => {
                if name == self.active {
                    self.on_active_engine_failed(config, &reason);
                } else {
                    self.on_candidate_round(config, &name, None, now, &mut actions);
                }
            }
            Event::Tick => {}
        }
        self.start_due_test(config, now, &mut actions);
        actions
    }

    /// What status shows.
    pub fn report(&self) -> FailoverReport {
        let recent: Vec<RoundScore> = self.recent.iter().cloned().collect();
        FailoverReport {
            active_strategy: self.active.clone(),
            score: worst_of(&recent).cloned(),
            fail_phase: self.last_fail_phase,
            failed_rounds: self.consecutive_failures,
            last_switch: self.last_switch,
            baseline: self.baseline.clone(),
            testing: self.testing().map(str::to_owned),
            message: self.message.clone(),
        }
    }

    fn reset_if_spec_changed(&mut self, config: &FailoverConfig) -> Vec<Action> {
        if self.spec_hash == config.spec_hash && config.members.contains(&self.active) {
            return Vec::new();
        }
        let mut actions = Vec::new();
        if matches!(self.phase, Phase::Testing(_)) {
            actions.push(Action::StopCandidate);
        }
        if self.active != config.primary() {
            actions.push(Action::SwitchTo(config.primary().to_owned()));
        }
        *self = FailoverState::new(config);
        actions
    }

    fn remember(&mut self, config: &FailoverConfig, round: RoundScore) {
        self.recent.push_back(round);
        while self.recent.len() > config.passes {
            self.recent.pop_front();
        }
    }

    fn on_active_round(&mut self, config: &FailoverConfig, round: RoundScore) {
        self.remember(config, round.clone());
        // The first evaluation sets the baseline; a member that never
        // worked is measured again with every round, so a node that was
        // offline at activation recovers on its own.
        let unmeasured = matches!(self.baseline, Baseline::Pending | Baseline::NeverWorked);
        if unmeasured && self.recent.len() >= config.passes {
            let rounds: Vec<RoundScore> = self.recent.iter().cloned().collect();
            self.baseline = Baseline::from_evaluation(&rounds);
            self.message = match self.baseline {
                Baseline::NeverWorked => Some(format!(
                    "NeverWorked: no probe target passed through `{}` since it became active; not switching blindly — check the targets and the arguments",
                    self.active
                )),
                _ => None,
            };
        }
        match judge_active(&round, &self.baseline) {
            Verdict::Failed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_fail_phase = round.fail_phase;
            }
            Verdict::Passed => {
                self.consecutive_failures = 0;
                if matches!(self.phase, Phase::Steady) {
                    self.message = None;
                }
            }
            // Something got through, so an earlier engine failure is over.
            Verdict::Unjudged if round.success_rate > 0.0 => self.consecutive_failures = 0,
            Verdict::Unjudged => {}
        }
    }

    fn on_active_engine_failed(&mut self, config: &FailoverConfig, reason: &str) {
        self.remember(config, RoundScore::nothing_worked());
        self.consecutive_failures = self
            .consecutive_failures
            .saturating_add(1)
            .max(config.failure_threshold);
        self.message = Some(format!("engine of `{}` failed: {reason}", self.active));
    }

    /// A candidate round (`None`: its engine failed) for `name`.
    fn on_candidate_round(
        &mut self,
        config: &FailoverConfig,
        name: &str,
        round: Option<RoundScore>,
        now: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        let Phase::Testing(search) = &mut self.phase else {
            return;
        };
        if search.candidate != name {
            return;
        }
        let passed = match round {
            Some(round) => {
                let passes = candidate_passes(&round, &self.baseline);
                search.rounds.push(round);
                if passes && search.rounds.len() < config.passes {
                    return;
                }
                passes
            }
            None => false,
        };
        actions.push(Action::StopCandidate);
        let rounds = std::mem::take(&mut search.rounds);
        match search.purpose {
            Purpose::ReturnToPrimary => {
                self.phase = Phase::Steady;
                if passed {
                    self.switch_to(config, name, rounds, now, actions);
                } else {
                    self.last_primary_test = Some(now);
                }
            }
            Purpose::Failover => {
                if passed {
                    if config.mode == FailoverMode::Ordered {
                        self.switch_to(config, name, rounds, now, actions);
                        return;
                    }
                    search.passed.push(Passed {
                        name: name.to_owned(),
                        rounds,
                    });
                }
                if let Some(next) = search.queue.pop_front() {
                    search.candidate = next.clone();
                    actions.push(Action::TestCandidate(next));
                    return;
                }
                let finalists = std::mem::take(&mut search.passed);
                self.phase = Phase::Steady;
                self.finish_search(config, finalists, now, actions);
            }
        }
    }

    /// Every candidate was tested: `bestScore` picks among `finalists`
    /// (`ordered` has none: its first passing candidate switched at once).
    fn finish_search(
        &mut self,
        config: &FailoverConfig,
        finalists: Vec<Passed>,
        now: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        let score = |p: &Passed| worst_of(&p.rounds).map_or(0.0, |w| w.total);
        // The earliest of equal candidates: list order breaks ties.
        let best = finalists
            .into_iter()
            .reduce(|best, p| if score(&p) > score(&best) { p } else { best });
        let Some(best) = best else {
            return self.stay(NO_ALTERNATIVE.to_owned(), now, actions);
        };
        let recent: Vec<RoundScore> = self.recent.iter().cloned().collect();
        let current = worst_of(&recent).map_or(0.0, |w| w.total);
        let candidate = score(&best);
        if beats_by(candidate, current, BEST_SCORE_MARGIN) {
            self.switch_to(config, &best.name, best.rounds, now, actions);
        } else {
            self.stay(
                format!(
                    "no alternative scores more than {BEST_SCORE_MARGIN} above `{}` (best: `{}` {candidate:.2}, active {current:.2})",
                    self.active, best.name
                ),
                now,
                actions,
            );
        }
    }

    fn stay(&mut self, reason: String, now: DateTime<Utc>, actions: &mut Vec<Action>) {
        self.last_empty_search = Some(now);
        self.message = Some(reason.clone());
        actions.push(Action::Stay { reason });
    }

    /// Makes `name` active; its test rounds are its first evaluation.
    fn switch_to(
        &mut self,
        config: &FailoverConfig,
        name: &str,
        rounds: Vec<RoundScore>,
        now: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        let from = std::mem::replace(&mut self.active, name.to_owned());
        self.baseline = Baseline::from_evaluation(&rounds);
        self.recent = rounds.into();
        self.consecutive_failures = 0;
        self.last_switch = Some(now);
        self.phase = Phase::Steady;
        self.last_empty_search = None;
        self.last_primary_test = Some(now);
        self.last_fail_phase = None;
        self.message = (name != config.primary())
            .then(|| format!("backup `{name}` replaced `{from}`, which failed its probes"));
        actions.push(Action::SwitchTo(name.to_owned()));
    }

    /// Starts a failover search or a primary re-test when one is due.
    fn start_due_test(
        &mut self,
        config: &FailoverConfig,
        now: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        if !matches!(self.phase, Phase::Steady) {
            return;
        }
        let interval = config.min_switch_interval;
        if self.consecutive_failures >= config.failure_threshold {
            if !elapsed(self.last_switch, now, interval) {
                self.message = Some(format!(
                    "`{}` failed {} rounds in a row; waiting for minSwitchInterval since the last switch",
                    self.active, self.consecutive_failures
                ));
                return;
            }
            if elapsed(self.last_empty_search, now, interval) {
                let mut queue: VecDeque<String> = config
                    .members
                    .iter()
                    .filter(|m| **m != self.active)
                    .cloned()
                    .collect();
                if let Some(first) = queue.pop_front() {
                    self.begin(Purpose::Failover, first, queue, actions);
                }
                return;
            }
        }
        let on_backup = self.active != config.primary();
        if on_backup && elapsed(self.last_primary_test, now, interval) {
            let primary = config.primary().to_owned();
            self.begin(Purpose::ReturnToPrimary, primary, VecDeque::new(), actions);
        }
    }

    fn begin(
        &mut self,
        purpose: Purpose,
        candidate: String,
        queue: VecDeque<String>,
        actions: &mut Vec<Action>,
    ) {
        actions.push(Action::TestCandidate(candidate.clone()));
        self.phase = Phase::Testing(Search {
            purpose,
            candidate,
            rounds: Vec::new(),
            queue,
            passed: Vec::new(),
        });
    }
}

/// Whether at least `interval` passed since `since` (never, or a time in
/// the future after a clock step back, counts as yes).
fn elapsed(since: Option<DateTime<Utc>>, now: DateTime<Utc>, interval: Duration) -> bool {
    match since {
        None => true,
        Some(since) => match now.signed_duration_since(since).to_std() {
            Ok(passed) => passed >= interval,
            Err(_) => true,
        },
    }
}

#[cfg(test)]
mod tests;
