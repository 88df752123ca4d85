use serde_json::json;

use super::*;

fn round(success_rate: f64, total: f64) -> RoundScore {
    RoundScore {
        success_rate,
        critical_success: success_rate,
        total,
        ..RoundScore::nothing_worked()
    }
}

fn critical_failed(mut r: RoundScore) -> RoundScore {
    r.critical_failed = true;
    r
}

#[test]
fn the_score_is_the_worst_of_the_rounds() {
    let cases: Vec<(&str, Vec<RoundScore>, Option<f64>)> = vec![
        ("no round", vec![], None),
        ("one round", vec![round(1.0, 0.9)], Some(0.9)),
        (
            "a bad round in the middle is not averaged away",
            vec![round(1.0, 0.95), round(0.5, 0.4), round(1.0, 0.97)],
            Some(0.4),
        ),
        (
            "the last round is the worst",
            vec![round(1.0, 0.9), round(1.0, 0.8), round(1.0, 0.7)],
            Some(0.7),
        ),
    ];
    for (case, rounds, expected) in cases {
        assert_eq!(worst_of(&rounds).map(|r| r.total), expected, "{case}");
    }
}

#[test]
fn the_baseline_is_the_success_rate_of_the_worst_round_of_the_first_evaluation() {
    let cases: Vec<(&str, Vec<RoundScore>, Baseline)> = vec![
        ("no round yet", vec![], Baseline::Pending),
        (
            "one target blocked by IP in every round",
            vec![round(2.0 / 3.0, 0.8), round(2.0 / 3.0, 0.7)],
            Baseline::Worked {
                success_rate: 2.0 / 3.0,
            },
        ),
        (
            "the worst round by total decides, not the lowest S",
            vec![round(0.5, 0.6), round(1.0, 0.5)],
            Baseline::Worked { success_rate: 1.0 },
        ),
        (
            "nothing ever passed",
            vec![round(0.0, 0.05), round(0.0, 0.05)],
            Baseline::NeverWorked,
        ),
    ];
    for (case, rounds, expected) in cases {
        assert_eq!(Baseline::from_evaluation(&rounds), expected, "{case}");
    }
}

#[test]
fn active_rounds_fail_on_a_critical_target_or_below_the_baseline() {
    let two_thirds = Baseline::Worked {
        success_rate: 2.0 / 3.0,
    };
    let cases: Vec<(&str, RoundScore, Baseline, Verdict)> = vec![
        (
            "as good as the baseline (the IP-blocked target still fails)",
            round(2.0 / 3.0, 0.7),
            two_thirds.clone(),
            Verdict::Passed,
        ),
        (
            "better than the baseline",
            round(1.0, 0.9),
            two_thirds.clone(),
            Verdict::Passed,
        ),
        (
            "one target fewer than the baseline",
            round(1.0 / 3.0, 0.4),
            two_thirds.clone(),
            Verdict::Failed,
        ),
        (
            "a critical target failed, S at the baseline",
            critical_failed(round(2.0 / 3.0, 0.5)),
            two_thirds.clone(),
            Verdict::Failed,
        ),
        (
            "a baseline that went through JSON and came back one ULP higher",
            round(2.0 / 3.0, 0.7),
            Baseline::Worked {
                success_rate: f64::from_bits((2.0f64 / 3.0).to_bits() + 1),
            },
            Verdict::Passed,
        ),
        (
            "baseline still pending",
            round(0.0, 0.0),
            Baseline::Pending,
            Verdict::Unjudged,
        ),
        (
            "never worked: not a reason to switch",
            critical_failed(round(0.0, 0.0)),
            Baseline::NeverWorked,
            Verdict::Unjudged,
        ),
    ];
    for (case, r, baseline, expected) in cases {
        assert_eq!(judge_active(&r, &baseline), expected, "{case}");
    }
}

#[test]
fn candidate_rounds_must_reach_the_active_members_baseline() {
    let two_thirds = Baseline::Worked {
        success_rate: 2.0 / 3.0,
    };
    let cases: Vec<(&str, RoundScore, Baseline, bool)> = vec![
        (
            "at the baseline",
            round(2.0 / 3.0, 0.7),
            two_thirds.clone(),
            true,
        ),
        ("below it", round(1.0 / 3.0, 0.4), two_thirds.clone(), false),
        (
            "critical failed",
            critical_failed(round(1.0, 0.6)),
            two_thirds.clone(),
            false,
        ),
        (
            "no baseline: something passes",
            round(0.25, 0.2),
            Baseline::Pending,
            true,
        ),
        (
            "no baseline: nothing passes",
            round(0.0, 0.05),
            Baseline::NeverWorked,
            false,
        ),
    ];
    for (case, r, baseline, expected) in cases {
        assert_eq!(candidate_passes(&r, &baseline), expected, "{case}");
    }
}

#[test]
fn beating_by_a_margin_excludes_ties_and_float_noise() {
    let cases = [
        ("well above", 0.9, 0.8, true),
        ("exactly the margin", 0.85, 0.8, false),
        (
            "the margin computed with float noise",
            0.8 + 0.05,
            0.8,
            false,
        ),
        ("a tie", 0.8, 0.8, false),
        ("just above the margin", 0.851, 0.8, true),
        ("below", 0.7, 0.8, false),
    ];
    for (case, a, b, expected) in cases {
        assert_eq!(beats_by(a, b, 0.05), expected, "{case}");
    }
}

#[test]
fn the_baseline_persists_with_its_status_name() {
    let cases = [
        (Baseline::Pending, json!({"state": "Pending"})),
        (
            Baseline::Worked { success_rate: 0.5 },
            json!({"state": "Worked", "successRate": 0.5}),
        ),
        (Baseline::NeverWorked, json!({"state": "NeverWorked"})),
    ];
    for (baseline, expected) in cases {
        assert_eq!(serde_json::to_value(&baseline).unwrap(), expected);
        assert_eq!(
            serde_json::from_value::<Baseline>(expected).unwrap(),
            baseline
        );
    }
}
