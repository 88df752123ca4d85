use chrono::TimeDelta;
use serde_json::json;
use veil_crds::strategy::{Failover, Probes};

use super::*;

const MINUTE: TimeDelta = TimeDelta::minutes(1);

fn t0() -> DateTime<Utc> {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

fn probes(passes: u32) -> Probes {
    serde_json::from_value(json!({"targets": [{"url": "https://a.test/"}], "passes": passes}))
        .unwrap()
}

/// A group `members[0]` with the rest as backups; `failover` is merged
/// over `{backups}` so the API's defaults apply to what is left out.
fn config(members: &[&str], passes: u32, failover: serde_json::Value) -> FailoverConfig {
    let mut spec = json!({"backups": members[1..]});
    for (k, v) in failover.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let failover: Failover = serde_json::from_value(spec).unwrap();
    let members = members.iter().map(|m| m.to_string()).collect();
    FailoverConfig::new("hash-1", members, &probes(passes), &failover).unwrap()
}

/// `threshold` 3, `minSwitchInterval` 10m, 3 passes.
fn ordered(members: &[&str]) -> FailoverConfig {
    config(members, 3, json!({}))
}

fn best_score(members: &[&str]) -> FailoverConfig {
    config(members, 3, json!({"mode": "bestScore"}))
}

fn round(success_rate: f64, total: f64) -> RoundScore {
    RoundScore {
        success_rate,
        critical_success: success_rate,
        total,
        ..RoundScore::nothing_worked()
    }
}

/// Every target passes.
fn good() -> RoundScore {
    round(1.0, 0.95)
}

/// One of three targets is blocked: below a baseline of 1.
fn degraded() -> RoundScore {
    RoundScore {
        fail_phase: Some(FailPhase::ResetAtHello),
        ..round(2.0 / 3.0, 0.6)
    }
}

fn dead() -> RoundScore {
    round(0.0, 0.05)
}

fn test(name: &str) -> Action {
    Action::TestCandidate(name.into())
}

fn switch(name: &str) -> Action {
    Action::SwitchTo(name.into())
}

fn stay() -> Action {
    Action::Stay {
        reason: NO_ALTERNATIVE.into(),
    }
}

/// A node: the state machine, a clock, and what the runtime would do.
struct Node {
    config: FailoverConfig,
    state: FailoverState,
    now: DateTime<Utc>,
}

impl Node {
    fn new(config: FailoverConfig) -> Node {
        Node {
            state: FailoverState::new(&config),
            config,
            now: t0(),
        }
    }

    /// A node whose primary has set its baseline with `passes` good rounds.
    fn warm(config: FailoverConfig) -> Node {
        let mut node = Node::new(config);
        for _ in 0..node.config.passes {
            assert_eq!(node.active(good()), vec![]);
        }
        node
    }

    fn send(&mut self, event: Event) -> Vec<Action> {
        self.state.on_event(&self.config, event, self.now)
    }

    fn active(&mut self, round: RoundScore) -> Vec<Action> {
        self.send(Event::ActiveRound(round))
    }

    fn candidate(&mut self, name: &str, round: RoundScore) -> Vec<Action> {
        self.send(Event::CandidateRound {
            name: name.into(),
            round,
        })
    }

    /// The candidate passes every round; returns the last round's actions.
    fn candidate_passes(&mut self, name: &str, total: f64) -> Vec<Action> {
        let mut last = Vec::new();
        for _ in 0..self.config.passes {
            last = self.candidate(name, round(1.0, total));
        }
        last
    }

    fn crash(&mut self, name: &str) -> Vec<Action> {
        self.send(Event::EngineFailed {
            name: name.into(),
            reason: "exit status 1".into(),
        })
    }

    /// `n` degraded rounds of the active member, one minute apart; the
    /// actions of the last.
    fn degrade(&mut self, n: u32) -> Vec<Action> {
        let mut last = Vec::new();
        for _ in 0..n {
            self.now += MINUTE;
            last = self.active(degraded());
        }
        last
    }
}

#[test]
fn config_takes_the_api_defaults() {
    let c = ordered(&["a", "b"]);
    assert_eq!(c.mode, FailoverMode::Ordered);
    assert_eq!(c.failure_threshold, 3);
    assert_eq!(c.min_switch_interval, Duration::from_secs(600));
    assert_eq!(c.passes, 3);
    assert_eq!(c.primary(), "a");
}

#[test]
fn a_search_starts_after_failure_threshold_failed_rounds_in_a_row() {
    // (case, active rounds, actions after the last one)
    let cases: Vec<(&str, Vec<RoundScore>, Vec<Action>)> = vec![
        ("two failures", vec![degraded(), degraded()], vec![]),
        ("three failures", vec![degraded(); 3], vec![test("b")]),
        (
            "a pass in between resets the count",
            vec![degraded(), degraded(), good(), degraded(), degraded()],
            vec![],
        ),
        (
            "a critical failure at full S counts",
            vec![
                RoundScore {
                    critical_failed: true,
                    ..good()
                };
                3
            ],
            vec![test("b")],
        ),
    ];
    for (case, rounds, expected) in cases {
        let mut node = Node::warm(ordered(&["a", "b"]));
        let mut last = Vec::new();
        for r in rounds {
            node.now += MINUTE;
            last = node.active(r);
        }
        assert_eq!(last, expected, "{case}");
    }
}

#[test]
fn a_target_blocked_from_the_start_does_not_count_against_the_strategy() {
    let mut node = Node::new(ordered(&["a", "b"]));
    for _ in 0..10 {
        node.now += MINUTE;
        assert_eq!(node.active(degraded()), vec![], "S 2/3 is its baseline");
    }
    assert_eq!(
        node.state.report().baseline,
        Baseline::Worked {
            success_rate: 2.0 / 3.0
        }
    );
    assert_eq!(node.state.report().failed_rounds, 0);
    node.now += MINUTE;
    node.active(round(1.0 / 3.0, 0.3));
    assert_eq!(node.state.report().failed_rounds, 1, "one more target lost");
}

#[test]
fn ordered_switches_to_the_first_candidate_whose_rounds_all_pass() {
    let mut node = Node::warm(ordered(&["a", "b", "c"]));
    assert_eq!(node.degrade(3), vec![test("b")]);
    assert_eq!(node.candidate("b", good()), vec![]);
    assert_eq!(
        node.candidate("b", degraded()),
        vec![Action::StopCandidate, test("c")],
        "one failed round ends b's test"
    );
    assert_eq!(
        node.candidate("b", good()),
        vec![],
        "late round of b ignored"
    );
    assert_eq!(node.candidate("c", good()), vec![]);
    assert_eq!(node.candidate("c", good()), vec![]);
    assert_eq!(
        node.candidate("c", good()),
        vec![Action::StopCandidate, switch("c")],
        "after `passes` rounds, not before"
    );
    let report = node.state.report();
    assert_eq!(report.active_strategy, "c");
    assert_eq!(report.last_switch, Some(node.now));
    assert_eq!(report.failed_rounds, 0);
    assert_eq!(report.fail_phase, None, "a's failures are not c's");
    assert_eq!(report.baseline, Baseline::Worked { success_rate: 1.0 });
}

#[test]
fn active_rounds_during_a_search_keep_counting() {
    let mut node = Node::warm(ordered(&["a", "b"]));
    node.degrade(3);
    assert_eq!(node.degrade(2), vec![], "no second test while one runs");
    assert_eq!(node.state.report().failed_rounds, 5);
    assert_eq!(node.state.report().testing.as_deref(), Some("b"));
}

#[test]
fn best_score_switches_only_to_a_candidate_that_beats_the_active_one_by_the_margin() {
    // The active member's score is the worst of its last 3 rounds: 0.6.
    // (case, b's total or None when it fails, c's likewise, the final action)
    let cases: Vec<(&str, Option<f64>, Option<f64>, Action)> = vec![
        ("the best of two", Some(0.7), Some(0.8), switch("c")),
        (
            "equal candidates: list order",
            Some(0.9),
            Some(0.9),
            switch("b"),
        ),
        (
            "exactly the margin is a tie: the active one stays",
            Some(0.65),
            Some(0.6),
            Action::Stay {
                reason:
                    "no alternative scores more than 0.05 above `a` (best: `b` 0.65, active 0.60)"
                        .into(),
            },
        ),
        ("a failing candidate is out", None, Some(0.7), switch("c")),
        ("nothing passes", None, None, stay()),
    ];
    for (case, b, c, expected) in cases {
        let mut node = Node::warm(best_score(&["a", "b", "c"]));
        assert_eq!(node.degrade(3), vec![test("b")], "{case}");
        let after_b = match b {
            Some(total) => node.candidate_passes("b", total),
            None => node.candidate("b", dead()),
        };
        assert_eq!(
            after_b,
            vec![Action::StopCandidate, test("c")],
            "{case}: c is tested too"
        );
        let after_c = match c {
            Some(total) => node.candidate_passes("c", total),
            None => node.candidate("c", dead()),
        };
        assert_eq!(after_c, vec![Action::StopCandidate, expected], "{case}");
    }
}

#[test]
fn when_no_alternative_works_the_active_one_stays_and_the_search_waits() {
    let mut node = Node::warm(ordered(&["a", "b"]));
    node.degrade(3);
    assert_eq!(
        node.candidate("b", dead()),
        vec![Action::StopCandidate, stay()]
    );
    let report = node.state.report();
    assert_eq!(report.active_strategy, "a");
    assert_eq!(report.message.as_deref(), Some(NO_ALTERNATIVE));
    // Still failing: nothing until minSwitchInterval since the empty search.
    for _ in 0..9 {
        assert_eq!(node.degrade(1), vec![]);
    }
    assert_eq!(node.degrade(1), vec![test("b")], "10 minutes later");
}

#[test]
fn min_switch_interval_holds_the_next_switch() {
    let mut node = Node::warm(ordered(&["a", "b"]));
    node.degrade(3);
    node.candidate_passes("b", 0.9);
    let switched = node.now;
    // b fails at once; a re-test of a is not due either.
    assert_eq!(node.degrade(9), vec![]);
    assert!(
        node.state
            .report()
            .message
            .unwrap()
            .contains("waiting for minSwitchInterval")
    );
    assert_eq!(node.now - switched, TimeDelta::minutes(9));
    assert_eq!(
        node.degrade(1),
        vec![test("a")],
        "10 minutes after the switch"
    );
}

#[test]
fn flapping_switches_at_most_once_per_min_switch_interval() {
    // Every member alternates between failing and passing each minute and
    // every candidate passes its test: the worst case for flapping.
    let config = config(&["a", "b", "c"], 1, json!({"failureThreshold": 1}));
    let mut node = Node::new(config);
    node.active(good());
    let mut switches = Vec::new();
    for minute in 0..180 {
        node.now += MINUTE;
        let mut actions = node.active(if minute % 2 == 0 { degraded() } else { good() });
        while let Some(Action::TestCandidate(name)) = actions.last().cloned() {
            actions = node.candidate(&name, good());
        }
        if actions.iter().any(|a| matches!(a, Action::SwitchTo(_))) {
            switches.push(node.now);
        }
    }
    assert!(switches.len() >= 5, "it does switch: {switches:?}");
    for pair in switches.windows(2) {
        assert!(pair[1] - pair[0] >= TimeDelta::minutes(10), "{pair:?}");
    }
}

#[test]
fn on_a_backup_the_primary_is_retested_every_min_switch_interval_and_returns_when_it_passes() {
    let mut node = Node::warm(ordered(&["a", "b"]));
    node.degrade(3);
    node.candidate_passes("b", 0.9);
    let tick = |node: &mut Node, minutes: i64| {
        node.now += TimeDelta::minutes(minutes);
        node.active(good())
    };
    assert_eq!(tick(&mut node, 9), vec![]);
    assert_eq!(tick(&mut node, 1), vec![test("a")]);
    assert_eq!(node.candidate("a", degraded()), vec![Action::StopCandidate]);
    assert_eq!(node.state.active(), "b");
    assert_eq!(tick(&mut node, 9), vec![]);
    assert_eq!(
        tick(&mut node, 1),
        vec![test("a")],
        "again 10 minutes later"
    );
    assert_eq!(
        node.candidate_passes("a", 0.9),
        vec![Action::StopCandidate, switch("a")]
    );
    let report = node.state.report();
    assert_eq!(report.active_strategy, "a");
    assert_eq!(report.message, None);
    assert_eq!(tick(&mut node, 60), vec![], "no re-test on the primary");
}

#[test]
fn an_ordered_search_from_a_backup_tests_the_primary_first() {
    let mut node = Node::warm(ordered(&["a", "b", "c"]));
    node.degrade(3);
    node.candidate("b", dead());
    node.candidate_passes("c", 0.9);
    assert_eq!(node.state.active(), "c");
    // c fails from the start; the search is due 10 minutes after the switch.
    assert_eq!(node.degrade(9), vec![]);
    assert_eq!(node.degrade(1), vec![test("a")]);
    assert_eq!(
        node.candidate("a", dead()),
        vec![Action::StopCandidate, test("b")]
    );
}

#[test]
fn an_engine_that_cannot_start_counts_as_failed_at_once() {
    let mut node = Node::warm(ordered(&["a", "b", "c"]));
    assert_eq!(node.crash("a"), vec![test("b")]);
    let report = node.state.report();
    assert_eq!(report.failed_rounds, 3);
    assert_eq!(report.score.map(|s| s.total), Some(0.0));
    assert_eq!(
        node.crash("b"),
        vec![Action::StopCandidate, test("c")],
        "a candidate's engine failing ends its test"
    );
    assert_eq!(
        node.crash("a"),
        vec![],
        "the active one's again: already searching"
    );
}

#[test]
fn an_engine_failure_still_respects_min_switch_interval() {
    let mut node = Node::warm(ordered(&["a", "b"]));
    node.degrade(3);
    node.candidate_passes("b", 0.9);
    node.now += TimeDelta::minutes(1);
    assert_eq!(node.crash("b"), vec![]);
    node.now += TimeDelta::minutes(9);
    assert_eq!(node.send(Event::Tick), vec![test("a")]);
}

#[test]
fn a_strategy_that_never_worked_is_no_reason_to_switch() {
    let mut node = Node::new(ordered(&["a", "b"]));
    for _ in 0..20 {
        node.now += MINUTE;
        assert_eq!(node.active(dead()), vec![]);
    }
    let report = node.state.report();
    assert_eq!(report.baseline, Baseline::NeverWorked);
    assert_eq!(report.failed_rounds, 0);
    assert!(report.message.unwrap().starts_with("NeverWorked"));
    // The network comes back: the baseline is measured again.
    for _ in 0..3 {
        node.now += MINUTE;
        node.active(good());
    }
    assert_eq!(
        node.state.report().baseline,
        Baseline::Worked { success_rate: 1.0 }
    );
    assert_eq!(node.state.report().message, None);
    assert_eq!(node.degrade(3), vec![test("b")], "now failures count");
}

#[test]
fn a_new_spec_hash_resets_the_group_to_its_primary() {
    let mut node = Node::warm(ordered(&["a", "b"]));
    node.degrade(3);
    node.candidate_passes("b", 0.9);
    node.now += TimeDelta::minutes(10);
    node.active(good()); // starts the primary's re-test
    node.config.spec_hash = "hash-2".into();
    assert_eq!(
        node.active(good()),
        vec![Action::StopCandidate, switch("a")]
    );
    assert_eq!(node.state, {
        let mut fresh = FailoverState::new(&node.config);
        fresh.recent.push_back(good());
        fresh
    });
}

#[test]
fn the_state_survives_a_restart_through_json() {
    let mut node = Node::warm(ordered(&["a", "b", "c"]));
    node.degrade(3);
    node.candidate("b", dead());
    node.candidate_passes("c", 0.9);
    node.now += TimeDelta::minutes(3);
    node.active(good());
    let json = serde_json::to_string(&node.state).unwrap();
    let saved: FailoverState = serde_json::from_str(&json).unwrap();
    assert_eq!(saved, node.state);

    let (restored, actions) = FailoverState::restore(Some(saved), &node.config);
    assert_eq!(actions, vec![]);
    node.state = restored;
    assert_eq!(node.state.active(), "c");
    assert_eq!(
        node.degrade(6),
        vec![],
        "the interval since the switch still holds"
    );
    assert_eq!(node.degrade(1), vec![test("a")]);
}

#[test]
fn a_restart_during_a_test_starts_that_candidate_again() {
    let mut node = Node::warm(ordered(&["a", "b"]));
    node.degrade(3);
    node.candidate("b", good());
    let saved: FailoverState =
        serde_json::from_str(&serde_json::to_string(&node.state).unwrap()).unwrap();
    assert_eq!(
        saved, node.state,
        "with degraded rounds (S = 2/3) and a test"
    );
    let (restored, actions) = FailoverState::restore(Some(saved), &node.config);
    assert_eq!(actions, vec![test("b")]);
    node.state = restored;
    node.candidate("b", good());
    node.candidate("b", good());
    assert_eq!(
        node.state.active(),
        "a",
        "the round before the restart is gone"
    );
    assert_eq!(
        node.candidate("b", good()),
        vec![Action::StopCandidate, switch("b")]
    );
}

#[test]
fn a_saved_state_of_another_spec_is_dropped() {
    let mut node = Node::warm(ordered(&["a", "b"]));
    node.degrade(3);
    node.candidate_passes("b", 0.9);
    let other = ordered(&["a", "b"]);
    let other = FailoverConfig {
        spec_hash: "hash-2".into(),
        ..other
    };
    let (restored, actions) = FailoverState::restore(Some(node.state.clone()), &other);
    assert_eq!(restored, FailoverState::new(&other));
    assert_eq!(actions, vec![]);
    assert_eq!(
        FailoverState::restore(None, &other).0,
        FailoverState::new(&other)
    );
}

#[test]
fn a_clock_that_steps_back_does_not_block_failover() {
    let mut node = Node::warm(ordered(&["a", "b", "c"]));
    node.degrade(3);
    node.candidate_passes("b", 0.9);
    node.now -= TimeDelta::days(1);
    assert_eq!(
        node.degrade(1),
        vec![test("a")],
        "the switch a day \"in the future\" counts as long ago"
    );
}

#[test]
fn the_report_carries_the_status_fields() {
    let mut node = Node::warm(ordered(&["a", "b"]));
    node.degrade(2);
    let report = node.state.report();
    assert_eq!(report.active_strategy, "a");
    assert_eq!(report.failed_rounds, 2);
    assert_eq!(report.fail_phase, Some(FailPhase::ResetAtHello));
    assert_eq!(report.score, Some(degraded()), "worst of the last 3 rounds");
    assert_eq!(report.last_switch, None);
    assert_eq!(report.testing, None);
}
