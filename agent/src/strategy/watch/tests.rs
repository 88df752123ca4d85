#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use chrono::TimeZone;

use super::*;
use crate::strategy::{Baseline, FailPhase};

fn sample(target: &str, passed: bool, fail: Option<FailPhase>) -> Sample {
    Sample {
        target: target.to_owned(),
        critical: false,
        passed,
        ttfb: passed.then(|| Duration::from_millis(100)),
        fail_phase: fail,
    }
}

/// A round of two targets: `header` (small answer) and `big` (64 KiB).
fn round(header: bool, big: bool) -> Vec<Sample> {
    vec![
        sample(
            "https://blocked.test/",
            header,
            (!header).then_some(FailPhase::ResetAtHello),
        ),
        sample(
            "https://blocked.test/bytes/65536",
            big,
            (!big).then_some(FailPhase::Stall16K),
        ),
    ]
}

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 1, minute, 0).unwrap()
}

/// A group `youtube` with probes (`passes` rounds per evaluation) and no
/// failover, and a convenience to feed it rounds.
struct Watch(GroupWatch);

impl Watch {
    fn on_round(&mut self, samples: Vec<Sample>, now: DateTime<Utc>) {
        let actions = self.0.on_round("youtube", samples, now);
        assert_eq!(actions, [], "a group without failover never acts");
    }
    fn report(&self) -> Option<ProbeReport> {
        self.0.report()
    }
    fn baseline(&self) -> Baseline {
        self.0.state().report().baseline
    }
}

fn watch(passes: u32) -> Watch {
    let group: veil_crds::wire::StrategyGroup = serde_json::from_value(serde_json::json!({
        "primary": {"namespace": "edge", "name": "youtube"},
        "members": [{"strategy": {"namespace": "edge", "name": "youtube"}}],
        "probes": {"passes": passes, "targets": [{"url": "https://blocked.test/"}]},
        "specHash": "sha256:1",
    }))
    .unwrap();
    let config = FailoverConfig::from_group(&group).unwrap();
    let (watch, actions) = GroupWatch::new(
        config,
        None,
        Duration::from_secs(10),
        ScoringWeights::default(),
    );
    assert_eq!(actions, []);
    Watch(watch)
}

#[test]
fn no_report_before_the_first_round() {
    assert_eq!(watch(3).report(), None);
}

#[test]
fn the_score_is_the_worst_of_the_last_passes_rounds() {
    let mut w = watch(2);
    w.on_round(round(true, true), at(0));
    let all = w.report().unwrap().score.unwrap();
    w.on_round(round(true, false), at(1));
    let half = w.report().unwrap().score.unwrap();
    assert!(half < all, "{half} vs {all}");
    // One more good round: the bad one is still among the last two.
    w.on_round(round(true, true), at(2));
    assert_eq!(w.report().unwrap().score.unwrap(), half);
    // Two good rounds: it is gone.
    w.on_round(round(true, true), at(3));
    assert!(w.report().unwrap().score.unwrap() > half);
}

#[test]
fn rounds_below_the_baseline_fail_in_a_row_with_their_fail_phase() {
    let mut w = watch(1);
    w.on_round(round(true, true), at(0));
    assert_eq!(w.baseline(), Baseline::Worked { success_rate: 1.0 });
    let report = w.report().unwrap();
    assert_eq!((report.failed_rounds, report.fail_phase), (0, None));

    w.on_round(round(true, false), at(1));
    w.on_round(round(true, false), at(2));
    let report = w.report().unwrap();
    assert_eq!(report.failed_rounds, 2);
    assert_eq!(report.fail_phase.as_deref(), Some("Stall16K"));
    assert_eq!(report.success_rate, Some(0.5));
    assert_eq!(report.last_probe.as_deref(), Some("2026-12-07T01:02:00Z"));

    // A passing round clears both.
    w.on_round(round(true, true), at(3));
    let report = w.report().unwrap();
    assert_eq!((report.failed_rounds, report.fail_phase), (0, None));
}

#[test]
fn a_target_failing_from_the_start_does_not_fail_rounds() {
    // The baseline is taken with the big target already stalled (blocked
    // by address, say): the same result later is no failure.
    let mut w = watch(2);
    w.on_round(round(true, false), at(0));
    w.on_round(round(true, false), at(1));
    assert_eq!(w.baseline(), Baseline::Worked { success_rate: 0.5 });
    w.on_round(round(true, false), at(2));
    let report = w.report().unwrap();
    assert_eq!(report.failed_rounds, 0);
    assert_eq!(
        report.fail_phase.as_deref(),
        Some("Stall16K"),
        "still says why the target fails"
    );
    // Losing the other target too fails the round.
    w.on_round(round(false, false), at(3));
    let report = w.report().unwrap();
    assert_eq!(report.failed_rounds, 1);
    assert_eq!(report.fail_phase.as_deref(), Some("ResetAtHello"));
}

#[test]
fn a_member_that_never_worked_is_not_counted_as_failing_and_may_start_working() {
    let mut w = watch(1);
    w.on_round(round(false, false), at(0));
    assert_eq!(w.baseline(), Baseline::NeverWorked);
    w.on_round(round(false, false), at(1));
    let report = w.report().unwrap();
    assert_eq!(report.failed_rounds, 0, "never worked: nothing to fail");
    assert_eq!(report.fail_phase.as_deref(), Some("ResetAtHello"));
    w.on_round(round(true, true), at(2));
    assert_eq!(w.baseline(), Baseline::Worked { success_rate: 1.0 });
}

#[test]
fn a_standby_round_is_scored_and_reported_without_moving_failover() {
    let mut w = watch(1);
    w.on_round(round(true, true), at(0));
    let before = w.0.state().clone();
    let report = w.0.on_standby_round("via-vless", round(true, false), at(5));
    assert_eq!(report.success_rate, Some(0.5));
    assert_eq!(report.fail_phase.as_deref(), Some("Stall16K"));
    assert_eq!(report.last_probe.as_deref(), Some("2026-12-07T01:05:00Z"));
    assert_eq!(report.failed_rounds, 0);
    assert_eq!(w.0.state(), &before, "failover did not see the round");
    assert_eq!(w.0.active(), "youtube");
    assert_eq!(
        w.report().unwrap().success_rate,
        Some(1.0),
        "the active member's report is its own"
    );
}
