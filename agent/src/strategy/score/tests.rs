use super::*;

const TIMEOUT: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn pass(target: &str, ttfb_ms: u64) -> Sample {
    Sample {
        target: target.into(),
        critical: false,
        passed: true,
        ttfb: Some(ms(ttfb_ms)),
        fail_phase: None,
    }
}

fn fail(target: &str, phase: FailPhase) -> Sample {
    Sample {
        target: target.into(),
        critical: false,
        passed: false,
        ttfb: None,
        fail_phase: Some(phase),
    }
}

fn critical(mut sample: Sample) -> Sample {
    sample.critical = true;
    sample
}

fn seed() -> ScoringWeights {
    ScoringWeights::default()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn seed_weights_are_half_three_tenths_fifteen_hundredths_and_five_hundredths() {
    let w = seed();
    assert_eq!(
        (w.success_rate, w.critical_success, w.latency, w.jitter),
        (0.5, 0.3, 0.15, 0.05)
    );
}

/// (case, samples, previous, S, C, L, J, total with the seed weights)
type Case = (
    &'static str,
    Vec<Sample>,
    Option<Vec<Sample>>,
    f64,
    f64,
    f64,
    f64,
    f64,
);

#[test]
fn parts_and_total_follow_the_documented_formulas() {
    let cases: Vec<Case> = vec![
        (
            "all pass instantly-ish, no previous round: J is 1",
            vec![pass("a", 1000), pass("b", 1000)],
            None,
            1.0,
            1.0,
            0.9,
            1.0,
            0.5 + 0.3 + 0.15 * 0.9 + 0.05,
        ),
        (
            "half pass, none critical: C equals S",
            vec![pass("a", 2000), fail("b", FailPhase::ResetAtHello)],
            None,
            0.5,
            0.5,
            0.8,
            1.0,
            0.25 + 0.15 + 0.12 + 0.05,
        ),
        (
            "the critical target fails while two of three pass",
            vec![
                pass("a", 1000),
                pass("b", 3000),
                critical(fail("c", FailPhase::Stall16K)),
            ],
            None,
            2.0 / 3.0,
            0.0,
            0.8, // median of 1 s and 3 s is 2 s
            1.0,
            0.5 * 2.0 / 3.0 + 0.15 * 0.8 + 0.05,
        ),
        (
            "nothing passes: L is 0",
            vec![fail("a", FailPhase::Timeout), fail("b", FailPhase::Timeout)],
            None,
            0.0,
            0.0,
            0.0,
            1.0,
            0.05,
        ),
        (
            "median of three, slower than the timeout caps L at 0",
            vec![pass("a", 12_000), pass("b", 15_000), pass("c", 11_000)],
            None,
            1.0,
            1.0,
            0.0,
            1.0,
            0.5 + 0.3 + 0.05,
        ),
        (
            "jitter: mean |ΔTTFB| over targets in both rounds (a: +1 s, b: −3 s)",
            vec![pass("a", 2000), pass("b", 1000), pass("new", 500)],
            Some(vec![pass("a", 1000), pass("b", 4000), pass("gone", 100)]),
            1.0,
            1.0,
            0.9, // median of 0.5, 1, 2 s is 1 s
            0.8, // (1 s + 3 s) / 2 = 2 s
            0.5 + 0.3 + 0.15 * 0.9 + 0.05 * 0.8,
        ),
        (
            "jitter ignores targets that failed in either round",
            vec![pass("a", 2000), fail("b", FailPhase::Stall)],
            Some(vec![fail("a", FailPhase::TlsAlert), pass("b", 4000)]),
            0.5,
            0.5,
            0.8,
            1.0,
            0.25 + 0.15 + 0.12 + 0.05,
        ),
    ];
    for (case, samples, previous, s, c, l, j, total) in cases {
        let r = score_round(&samples, previous.as_deref(), TIMEOUT, &seed());
        assert!(close(r.success_rate, s), "{case}: S {}", r.success_rate);
        assert!(
            close(r.critical_success, c),
            "{case}: C {}",
            r.critical_success
        );
        assert!(close(r.latency, l), "{case}: L {}", r.latency);
        assert!(close(r.jitter, j), "{case}: J {}", r.jitter);
        assert!(close(r.total, total), "{case}: total {} ≠ {total}", r.total);
    }
}

#[test]
fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
    let samples = [
        pass("a", 1000),
        pass("b", 2000),
        pass("c", 4000),
        pass("d", 9000),
    ];
    let r = score_round(&samples, None, TIMEOUT, &seed());
    assert_eq!(r.median_ttfb, Some(ms(3000)));
    assert!(close(r.latency, 0.7));
}

#[test]
fn other_weights_change_the_total_not_the_parts() {
    let w = ScoringWeights {
        success_rate: 1.0,
        critical_success: 0.0,
        latency: 0.0,
        jitter: 0.0,
    };
    let samples = [
        pass("a", 5000),
        fail("b", FailPhase::DnsError),
        pass("c", 5000),
    ];
    let r = score_round(&samples, None, TIMEOUT, &w);
    assert!(close(r.total, 2.0 / 3.0));
    assert!(close(r.latency, 0.5));
}

#[test]
fn fail_phase_prefers_the_first_failed_critical_target() {
    let samples = [
        fail("a", FailPhase::Blockpage),
        critical(pass("b", 100)),
        critical(fail("c", FailPhase::SilentDropAtHello)),
    ];
    let r = score_round(&samples, None, TIMEOUT, &seed());
    assert!(r.critical_failed);
    assert_eq!(r.fail_phase, Some(FailPhase::SilentDropAtHello));

    let samples = [pass("a", 100), fail("b", FailPhase::Blockpage)];
    let r = score_round(&samples, None, TIMEOUT, &seed());
    assert!(!r.critical_failed);
    assert_eq!(r.fail_phase, Some(FailPhase::Blockpage));
}

#[test]
fn an_empty_round_scores_nothing() {
    assert_eq!(
        score_round(&[], None, TIMEOUT, &seed()),
        RoundScore::nothing_worked()
    );
}
