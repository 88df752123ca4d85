//! Watching a group's active member by its probe rounds: the running score
//! (worst of the last `passes` rounds), the baseline taken by the first
//! evaluation after activation, failed rounds in a row, and the report the
//! operator turns into the Strategy's node status.
//!
//! Pure, like the rest of [`super`]: rounds and the time come in as
//! arguments. This is what runs on nodes today; the failover state machine
//! ([`super::failover`]) takes over from it once candidates can be tested
//! beside the live engine.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use veil_crds::strategy::ScoringWeights;
use veil_crds::wire::ProbeReport;

use super::evaluation::{self, Baseline, Verdict};
use super::score::{RoundScore, Sample, score_round};

/// The probe state of one active member.
#[derive(Clone, Debug)]
pub struct ActiveWatch {
    passes: usize,
    timeout: Duration,
    weights: ScoringWeights,
    /// The last `passes` rounds, oldest first.
    rounds: Vec<RoundScore>,
    previous: Option<Vec<Sample>>,
    baseline: Baseline,
    failed_rounds: u32,
    /// How the latest round's first failed sample failed.
    fail_phase: Option<String>,
    last_probe: Option<DateTime<Utc>>,
}

impl ActiveWatch {
    /// A member just activated: no rounds, the baseline pending. `passes`
    /// below 1 counts as 1.
    pub fn new(passes: u32, timeout: Duration, weights: ScoringWeights) -> ActiveWatch {
        ActiveWatch {
            passes: usize::try_from(passes.max(1)).unwrap_or(1),
            timeout,
            weights,
            rounds: Vec::new(),
            previous: None,
            baseline: Baseline::Pending,
            failed_rounds: 0,
            fail_phase: None,
            last_probe: None,
        }
    }

    /// Takes one finished round at `now`.
    pub fn on_round(&mut self, samples: Vec<Sample>, now: DateTime<Utc>) {
        let round = score_round(
            &samples,
            self.previous.as_deref(),
            self.timeout,
            &self.weights,
        );
        self.previous = Some(samples);
        self.rounds.push(round.clone());
        if self.rounds.len() > self.passes {
            self.rounds.remove(0);
        }
        let evaluated = self.rounds.len() == self.passes;
        if evaluated && matches!(self.baseline, Baseline::Pending | Baseline::NeverWorked) {
            // NeverWorked is measured again every evaluation: it may start working.
            self.baseline = Baseline::from_evaluation(&self.rounds);
        }
        match evaluation::judge_active(&round, &self.baseline) {
            Verdict::Failed => self.failed_rounds = self.failed_rounds.saturating_add(1),
            Verdict::Passed => self.failed_rounds = 0,
            Verdict::Unjudged => {}
        }
        // Shown whenever a sample failed, even in a round that does not
        // count as failed (a target blocked from the start): it says why.
        self.fail_phase = round.fail_phase.map(|phase| phase.to_string());
        self.last_probe = Some(now);
    }

    /// The baseline so far.
    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    /// What the node reports; `None` before the first round.
    pub fn report(&self) -> Option<ProbeReport> {
        let worst = evaluation::worst_of(&self.rounds)?;
        let millis =
            |d: Option<Duration>| d.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
        Some(ProbeReport {
            score: Some(worst.total),
            success_rate: Some(worst.success_rate),
            critical_success_rate: Some(worst.critical_success),
            latency_ms: millis(worst.median_ttfb),
            jitter_ms: millis(worst.mean_ttfb_change),
            fail_phase: self.fail_phase.clone(),
            failed_rounds: self.failed_rounds,
            last_switch_time: None,
            last_probe: self
                .last_probe
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
        })
    }
}

#[cfg(test)]
mod tests;
