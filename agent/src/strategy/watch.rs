//! One failover group on this node, seen through its probe rounds: each
//! round is scored ([`score_round`], with the member's previous round for
//! jitter), handed to the [`FailoverState`] machine as the active
//! member's or the candidate's, and turned into the report the operator
//! shows as the Strategy's node status. A group without `failover` is
//! watched the same way with itself as its only member: it is scored and
//! counted, never switched.
//!
//! Pure, like the rest of [`super`]: samples and the time come in as
//! arguments, actions go out for the prober to carry out.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use veil_crds::strategy::ScoringWeights;
use veil_crds::wire::ProbeReport;

use super::failover::{Action, Event, FailoverConfig, FailoverState};
use super::score::{RoundScore, Sample, score_round};

/// The probe and failover state of one group.
#[derive(Clone, Debug)]
pub struct GroupWatch {
    config: FailoverConfig,
    state: FailoverState,
    timeout: Duration,
    weights: ScoringWeights,
    /// Each member's previous round (for its jitter).
    previous: BTreeMap<String, Vec<Sample>>,
    /// The latest round of the member that is active now.
    latest: Option<RoundScore>,
    last_probe: Option<DateTime<Utc>>,
}

impl GroupWatch {
    /// Watches a group configured by `config`, continuing from `saved` (a
    /// state persisted before an agent restart) when it is of the same
    /// spec; the actions are what resuming takes (a candidate to start
    /// again).
    pub fn new(
        config: FailoverConfig,
        saved: Option<FailoverState>,
        timeout: Duration,
        weights: ScoringWeights,
    ) -> (GroupWatch, Vec<Action>) {
        let (state, actions) = FailoverState::restore(saved, &config);
        let watch = GroupWatch {
            config,
            state,
            timeout,
            weights,
            previous: BTreeMap::new(),
            latest: None,
            last_probe: None,
        };
        (watch, actions)
    }

    /// The active member's name.
    pub fn active(&self) -> &str {
        self.state.active()
    }

    /// The member under test in the candidate slot, if any.
    pub fn testing(&self) -> Option<&str> {
        self.state.testing()
    }

    /// The state to persist.
    pub fn state(&self) -> &FailoverState {
        &self.state
    }

    /// Takes a finished round of `member` (the active one, or the
    /// candidate under test) at `now`.
    pub fn on_round(
        &mut self,
        member: &str,
        samples: Vec<Sample>,
        now: DateTime<Utc>,
    ) -> Vec<Action> {
        let previous = self.previous.get(member).map(Vec::as_slice);
        let round = score_round(&samples, previous, self.timeout, &self.weights);
        self.previous.insert(member.to_owned(), samples);
        let event = if member == self.state.active() {
            self.last_probe = Some(now);
            Event::ActiveRound(round.clone())
        } else {
            Event::CandidateRound {
                name: member.to_owned(),
                round: round.clone(),
            }
        };
        let actions = self.state.on_event(&self.config, event, now);
        if member == self.state.active() {
            // Also after a switch to it: its test round is its latest.
            self.latest = Some(round);
            self.last_probe = Some(now);
        }
        actions
    }

    /// `member`'s engine could not start (or keeps crashing).
    pub fn on_engine_failed(
        &mut self,
        member: &str,
        reason: String,
        now: DateTime<Utc>,
    ) -> Vec<Action> {
        let active = member == self.state.active();
        let event = Event::EngineFailed {
            name: member.to_owned(),
            reason,
        };
        let actions = self.state.on_event(&self.config, event, now);
        if active {
            // Reported as a round in which nothing worked.
            self.latest = Some(RoundScore::nothing_worked());
            self.last_probe = Some(now);
        }
        actions
    }

    /// Lets due timers fire (a search, a re-test of the primary).
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        self.state.on_event(&self.config, Event::Tick, now)
    }

    /// Scores a round of a warm standby member (a VLESS backup checked at
    /// a low rate between searches) without touching failover — a search
    /// still tests it in full — and returns what the node reports for it.
    pub fn on_standby_round(
        &mut self,
        member: &str,
        samples: Vec<Sample>,
        now: DateTime<Utc>,
    ) -> ProbeReport {
        let previous = self.previous.get(member).map(Vec::as_slice);
        let round = score_round(&samples, previous, self.timeout, &self.weights);
        self.previous.insert(member.to_owned(), samples);
        let state = self.state.report();
        ProbeReport {
            failed_rounds: 0,
            last_switch_time: state.last_switch.map(rfc3339),
            last_probe: Some(rfc3339(now)),
            message: None,
            ..parts(&round, &round)
        }
    }

    /// What the node reports for its active member; `None` before the
    /// first round. `failPhase` is the latest round's whenever a sample
    /// failed in it — even a round that does not count as failed (a target
    /// blocked from the start) says why.
    pub fn report(&self) -> Option<ProbeReport> {
        let latest = self.latest.as_ref()?;
        let state = self.state.report();
        let worst = state.score.as_ref().unwrap_or(latest);
        Some(ProbeReport {
            failed_rounds: state.failed_rounds,
            last_switch_time: state.last_switch.map(rfc3339),
            last_probe: self.last_probe.map(rfc3339),
            message: state.message,
            ..parts(worst, latest)
        })
    }
}

/// The score parts of `worst` and the fail phase of `latest`, as reported.
fn parts(worst: &RoundScore, latest: &RoundScore) -> ProbeReport {
    let millis = |d: Option<Duration>| d.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
    ProbeReport {
        score: Some(worst.total),
        success_rate: Some(worst.success_rate),
        critical_success_rate: Some(worst.critical_success),
        latency_ms: millis(worst.median_ttfb),
        jitter_ms: millis(worst.mean_ttfb_change),
        fail_phase: latest.fail_phase.map(|phase| phase.to_string()),
        ..ProbeReport::default()
    }
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests;
