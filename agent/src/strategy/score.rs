//! One probe round's score (design §4d). With `w` the Strategy's
//! `scoring.weights` and `timeout` its `probes.timeout`:
//!
//! - S (`successRate`) = targets passed / targets probed;
//! - C (`criticalSuccess`) = critical targets passed / critical targets,
//!   or S when no target is critical;
//! - L (`latency`) = 1 − min(1, median TTFB of the passed targets /
//!   timeout), 0 when no passed target has a TTFB;
//! - J (`jitter`) = 1 − min(1, mean |ΔTTFB| / timeout), the change per
//!   target that passed with a TTFB in this round and the previous one;
//!   1 when there is no previous round or no such target;
//! - total = wS·S + wC·C + wL·L + wJ·J, between 0 and 1 when the weights
//!   are valid (each in 0..=1, adding up to 1).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use veil_crds::strategy::ScoringWeights;

use super::FailPhase;

/// The result of probing one target once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Which target (its URL, or `udp://host:port`): samples of the same
    /// target in two rounds are matched by it for the jitter part.
    pub target: String,
    /// Whether the target is `critical` in the Strategy's probes.
    pub critical: bool,
    pub passed: bool,
    /// Time to the first byte of the answer; `None` when nothing arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb: Option<Duration>,
    /// Where the probe failed; `None` when it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_phase: Option<FailPhase>,
}

/// A round's score and its parts, each between 0 and 1 (1 is best).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoundScore {
    /// S: share of targets that passed.
    pub success_rate: f64,
    /// C: share of critical targets that passed (S when none is critical).
    pub critical_success: f64,
    /// L: 1 for an instant answer, 0 at `timeout` or when nothing passed.
    pub latency: f64,
    /// J: 1 when TTFBs did not change since the previous round.
    pub jitter: f64,
    /// The weighted sum of the four parts.
    pub total: f64,
    /// Whether a critical target failed (the round fails whatever S is).
    pub critical_failed: bool,
    /// The failure shown in status: the first failed critical target's,
    /// else the first failed target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_phase: Option<FailPhase>,
    /// Median TTFB of the passed targets (status `latencyMs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_ttfb: Option<Duration>,
    /// Mean TTFB change since the previous round (status `jitterMs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_ttfb_change: Option<Duration>,
}

impl RoundScore {
    /// A round in which nothing could work: every part and the total are 0.
    /// Stands for a round without samples and for an engine that could not
    /// start or keeps crashing.
    pub fn nothing_worked() -> RoundScore {
        RoundScore {
            success_rate: 0.0,
            critical_success: 0.0,
            latency: 0.0,
            jitter: 0.0,
            total: 0.0,
            critical_failed: false,
            fail_phase: None,
            median_ttfb: None,
            mean_ttfb_change: None,
        }
    }
}

/// Scores one round of `samples`; `previous` is the same Strategy's
/// previous round (for J), `timeout` the probes' `timeout`. An empty round
/// scores [`RoundScore::nothing_worked`]. A zero `timeout` (refused by
/// validation) makes any latency count as the whole timeout.
pub fn score_round(
    samples: &[Sample],
    previous: Option<&[Sample]>,
    timeout: Duration,
    weights: &ScoringWeights,
) -> RoundScore {
    if samples.is_empty() {
        return RoundScore::nothing_worked();
    }
    let success_rate = share(samples.iter().filter(|s| s.passed).count(), samples.len());
    let critical: Vec<&Sample> = samples.iter().filter(|s| s.critical).collect();
    let critical_success = if critical.is_empty() {
        success_rate
    } else {
        share(critical.iter().filter(|s| s.passed).count(), critical.len())
    };
    let median_ttfb = median(samples.iter().filter(|s| s.passed).filter_map(|s| s.ttfb));
    let latency = median_ttfb.map_or(0.0, |m| 1.0 - fraction_of(m, timeout));
    let mean_ttfb_change = previous.and_then(|p| mean_change(samples, p));
    let jitter = mean_ttfb_change.map_or(1.0, |d| 1.0 - fraction_of(d, timeout));
    let total = weights.success_rate * success_rate
        + weights.critical_success * critical_success
        + weights.latency * latency
        + weights.jitter * jitter;
    let failed_critical = critical.iter().find(|s| !s.passed);
    let first_failed = failed_critical
        .copied()
        .or_else(|| samples.iter().find(|s| !s.passed));
    RoundScore {
        success_rate,
        critical_success,
        latency,
        jitter,
        total,
        critical_failed: failed_critical.is_some(),
        fail_phase: first_failed.and_then(|s| s.fail_phase),
        median_ttfb,
        mean_ttfb_change,
    }
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// `d / timeout`, capped at 1.
fn fraction_of(d: Duration, timeout: Duration) -> f64 {
    if timeout.is_zero() {
        return 1.0;
    }
    (d.as_secs_f64() / timeout.as_secs_f64()).min(1.0)
}

/// The middle value; the mean of the two middle ones for an even count.
fn median(values: impl Iterator<Item = Duration>) -> Option<Duration> {
    let mut values: Vec<Duration> = values.collect();
    values.sort_unstable();
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => values.get(mid).copied(),
        _ => Some((*values.get(mid - 1)? + *values.get(mid)?) / 2),
    }
}

/// Mean |ΔTTFB| over the targets that passed with a TTFB in both rounds.
fn mean_change(samples: &[Sample], previous: &[Sample]) -> Option<Duration> {
    let mut before: HashMap<&str, Duration> = HashMap::new();
    for s in previous.iter().filter(|s| s.passed) {
        if let Some(ttfb) = s.ttfb {
            before.entry(s.target.as_str()).or_insert(ttfb);
        }
    }
    let changes: Vec<Duration> = samples
        .iter()
        .filter(|s| s.passed)
        .filter_map(|s| Some(s.ttfb?.abs_diff(*before.get(s.target.as_str())?)))
        .collect();
    let count = u32::try_from(changes.len()).ok().filter(|n| *n > 0)?;
    Some(changes.iter().sum::<Duration>() / count)
}

#[cfg(test)]
mod tests;
