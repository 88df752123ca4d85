//! Judging a Strategy over several rounds (design §4d):
//!
//! - an **evaluation** is `passes` rounds; its score is that of its worst
//!   round (lowest total), so one good round cannot hide two bad ones;
//! - the **baseline** is the success rate (S) of the first evaluation after
//!   the Strategy became active: a target that is blocked whatever the
//!   Strategy does (an IP block) then never counts against it;
//! - a round of the active Strategy **fails** when a critical target failed
//!   or fewer targets passed than in the baseline;
//! - a baseline of 0 means the Strategy **never worked** on this node: its
//!   rounds are not judged, so it is no reason to switch (switching blindly
//!   would hide a wrong target list or a network that is down).

use serde::{Deserialize, Serialize};

use super::RoundScore;

/// Two success rates closer than this are equal: rates are ratios of small
/// counts, and a baseline that went through JSON may be one ULP off.
const SAME_RATE: f64 = 1e-9;

/// What the first evaluation after activation found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all_fields = "camelCase")]
pub enum Baseline {
    /// Fewer than `passes` rounds since activation.
    Pending,
    /// The first evaluation's success rate (above 0).
    Worked { success_rate: f64 },
    /// No target passed in the first evaluation's worst round.
    NeverWorked,
}

impl Baseline {
    /// The baseline an evaluation sets: its worst round's S; `Pending` when
    /// `rounds` is empty.
    pub fn from_evaluation(rounds: &[RoundScore]) -> Baseline {
        match worst_of(rounds) {
            None => Baseline::Pending,
            Some(worst) if worst.success_rate <= SAME_RATE => Baseline::NeverWorked,
            Some(worst) => Baseline::Worked {
                success_rate: worst.success_rate,
            },
        }
    }
}

/// How one round of the active Strategy counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// Counts towards `failureThreshold`.
    Failed,
    /// Not judged: the baseline is pending, or the Strategy never worked.
    Unjudged,
}

/// The worst round (lowest total; the earliest of equals), `None` for none.
pub fn worst_of(rounds: &[RoundScore]) -> Option<&RoundScore> {
    rounds
        .iter()
        .reduce(|worst, r| if r.total < worst.total { r } else { worst })
}

/// Judges a round of the active Strategy against its own baseline.
pub fn judge_active(round: &RoundScore, baseline: &Baseline) -> Verdict {
    match baseline {
        Baseline::Pending | Baseline::NeverWorked => Verdict::Unjudged,
        Baseline::Worked { success_rate } => {
            if round.critical_failed || round.success_rate < success_rate - SAME_RATE {
                Verdict::Failed
            } else {
                Verdict::Passed
            }
        }
    }
}

/// Whether a round of a candidate (a member tested while another is
/// active) passes: no critical target failed, at least one target passed,
/// and at least as many as the active member's baseline when it has one —
/// the same targets are blocked by IP for every member.
pub fn candidate_passes(round: &RoundScore, active_baseline: &Baseline) -> bool {
    let floor = match active_baseline {
        Baseline::Worked { success_rate } => success_rate - SAME_RATE,
        Baseline::Pending | Baseline::NeverWorked => SAME_RATE,
    };
    !round.critical_failed && round.success_rate > SAME_RATE && round.success_rate >= floor
}

/// Whether `a` beats `b` by more than `margin` (a tie, or a difference
/// within float noise, is not a win).
pub fn beats_by(a: f64, b: f64, margin: f64) -> bool {
    a > b + margin + SAME_RATE
}

#[cfg(test)]
mod tests;
