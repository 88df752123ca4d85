#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::io::{Read, Write};
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

/// What the loops asked of the engines, in order.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Activate(String),
    Test(String),
    Stop,
}

/// Engines that record calls and reports. A candidate "works" by making
/// the target answer (`target_up`), as a good strategy would.
#[derive(Clone, Default)]
struct FakeEngines {
    calls: Arc<StdMutex<Vec<Call>>>,
    reports: Arc<StdMutex<Vec<(StrategyId, ProbeReport)>>>,
    target_up: Arc<AtomicBool>,
    candidates_work: bool,
    /// What `active_failure` answers (for the member active at first).
    engine_failure: Arc<StdMutex<Option<String>>>,
}

impl Engines for FakeEngines {
    fn activate(&self, _: &StrategyId, member: &str) {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Activate(member.to_owned()));
    }
    async fn test_candidate(&self, _: &StrategyId, member: &str) -> Result<(), String> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Test(member.to_owned()));
        if self.candidates_work {
            self.target_up.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
    fn stop_candidate(&self, _: &StrategyId) {
        self.calls.lock().unwrap().push(Call::Stop);
    }
    fn report(&self, member: StrategyId, report: ProbeReport) {
        self.reports.lock().unwrap().push((member, report));
    }
    async fn active_failure(&self, _: &StrategyId) -> Option<String> {
        let switched = self
            .calls()
            .iter()
            .any(|c| *c == Call::Activate("youtube-fake".into()));
        if switched {
            return None;
        }
        self.engine_failure.lock().unwrap().clone()
    }
    async fn socks_port(&self, _: &StrategyId) -> Option<u16> {
        None
    }
}

impl FakeEngines {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    fn last_report(&self) -> Option<(StrategyId, ProbeReport)> {
        self.reports.lock().unwrap().last().cloned()
    }
}

/// A loopback HTTP server answering `ok` while `up`, closing at once
/// otherwise. Serves until the test process ends.
fn target(up: Arc<AtomicBool>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if !up.load(Ordering::SeqCst) {
                continue;
            }
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    port
}

/// Group `youtube` (backup `youtube-fake` when `backup`), probed every
/// second, one round per evaluation, switching after one failed round (the
/// primary re-tested only after an hour).
fn group(hash: &str, port: u16, backup: bool) -> StrategyGroup {
    let member = |name: &str| serde_json::json!({"strategy": {"namespace": "edge", "name": name}, "generation": 1});
    let mut group = serde_json::json!({
        "primary": {"namespace": "edge", "name": "youtube"},
        "members": [member("youtube")],
        "probes": {
            "interval": "1s",
            "timeout": "500ms",
            "passes": 1,
            "targets": [{"url": format!("http://127.0.0.1:{port}/")}],
        },
        "specHash": hash,
    });
    if backup {
        group["members"] = serde_json::json!([member("youtube"), member("youtube-fake")]);
        group["failover"] = serde_json::json!({
            "backups": ["youtube-fake"],
            "failureThreshold": 1,
            "minSwitchInterval": "1h",
        });
    }
    serde_json::from_value(group).unwrap()
}

fn prober(engines: &FakeEngines, dir: &std::path::Path) -> Prober<FakeEngines> {
    let options = ProbeOptions::new(
        Duration::from_secs(1),
        Arc::new(rustls::RootCertStore::empty()),
    );
    Prober::new(options, 0x0800_0000, engines.clone(), SavedStates::new(dir))
}

/// Polls `done` every 100 ms for at most 20 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within 20 s: {what}");
}

#[tokio::test]
async fn each_group_with_probes_gets_one_loop_that_reports_its_active_member() {
    let engines = FakeEngines::default();
    let dir = tempfile::tempdir().unwrap();
    let mut prober = prober(&engines, dir.path());
    let port = target(engines.target_up.clone());
    let mut without = group("h0", port, false);
    without.primary.name = "unprobed".into();
    without.probes = None;
    prober.apply(&[group("h1", port, false), without.clone()]);
    assert_eq!(prober.len(), 1, "a group without probes gets no loop");
    assert_eq!(engines.calls(), [Call::Activate("youtube".into())]);

    // The first round comes after a second (the interval); the target is down.
    eventually("a first report", || engines.last_report().is_some()).await;
    let (id, report) = engines.last_report().unwrap();
    assert_eq!(id.name, "youtube");
    assert_eq!(report.success_rate, Some(0.0));
    assert!(report.fail_phase.is_some(), "{report:?}");
    let [sample] = report.round.as_slice() else {
        panic!("one sample per target in the reported round: {report:?}");
    };
    assert_eq!(sample.target, format!("http://127.0.0.1:{port}/"));
    assert!(!sample.passed);
    assert_eq!(sample.fail_phase, report.fail_phase);
    assert!(
        dir.path().join("edge_youtube.json").exists(),
        "the state is saved"
    );

    // The same hash keeps the loop; a gone group stops it and its state goes.
    prober.apply(&[group("h1", port, false)]);
    assert_eq!(prober.len(), 1);
    prober.apply(&[without]);
    assert!(prober.is_empty());
    assert!(!dir.path().join("edge_youtube.json").exists());
    let count = engines.reports.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        engines.reports.lock().unwrap().len(),
        count,
        "a stopped loop reports nothing"
    );
}

#[tokio::test]
async fn a_failing_member_is_replaced_by_a_candidate_that_passes_its_test() {
    let engines = FakeEngines {
        candidates_work: true,
        ..FakeEngines::default()
    };
    engines.target_up.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let mut prober = prober(&engines, dir.path());
    let port = target(engines.target_up.clone());
    prober.apply(&[group("h1", port, true)]);

    // The primary works (baseline), then stops working.
    eventually("a passing round", || {
        engines
            .last_report()
            .is_some_and(|(_, r)| r.success_rate == Some(1.0))
    })
    .await;
    engines.target_up.store(false, Ordering::SeqCst);

    // One failed round: the backup is tested (and brings the target back),
    // passes its round, and becomes active.
    eventually("the switch", || {
        engines
            .calls()
            .contains(&Call::Activate("youtube-fake".into()))
    })
    .await;
    let calls = engines.calls();
    assert_eq!(
        calls[..4],
        [
            Call::Activate("youtube".into()),
            Call::Test("youtube-fake".into()),
            Call::Stop,
            Call::Activate("youtube-fake".into()),
        ],
        "{calls:?}"
    );
    eventually("a report of the new active member", || {
        engines
            .reports
            .lock()
            .unwrap()
            .iter()
            .any(|(id, r)| id.name == "youtube-fake" && r.last_switch_time.is_some())
    })
    .await;

    // A restarted agent (a new prober over the same directory) resumes
    // with the backup active, without switching again.
    drop(prober);
    let restarted = FakeEngines {
        target_up: engines.target_up.clone(),
        ..FakeEngines::default()
    };
    let mut again = self::prober(&restarted, dir.path());
    again.apply(&[group("h1", port, true)]);
    assert_eq!(restarted.calls(), [Call::Activate("youtube-fake".into())]);
}

#[tokio::test]
async fn an_active_engine_that_fails_is_replaced_even_before_it_ever_worked() {
    // The target is down from the start: by probes alone the primary
    // "never worked" and would not be switched. Its engine failing is
    // reason enough.
    let engines = FakeEngines {
        candidates_work: true,
        ..FakeEngines::default()
    };
    *engines.engine_failure.lock().unwrap() =
        Some("crash loop: the engine exited 3 times in a row".into());
    let dir = tempfile::tempdir().unwrap();
    let mut prober = prober(&engines, dir.path());
    let port = target(engines.target_up.clone());
    prober.apply(&[group("h1", port, true)]);

    eventually("the switch", || {
        engines
            .calls()
            .contains(&Call::Activate("youtube-fake".into()))
    })
    .await;
    let failed_report = engines
        .reports
        .lock()
        .unwrap()
        .iter()
        .find(|(id, _)| id.name == "youtube")
        .cloned();
    let (_, report) = failed_report.expect("a report of the failed primary");
    assert_eq!(report.score, Some(0.0), "{report:?}");
    assert!(
        report
            .message
            .as_deref()
            .is_some_and(|m| m.contains("crash loop")),
        "{report:?}"
    );
}

#[test]
fn jitter_stays_within_ten_percent() {
    let interval = Duration::from_secs(300);
    for _ in 0..1000 {
        let waited = jittered(interval);
        assert!(
            (Duration::from_secs(270)..=Duration::from_secs(330)).contains(&waited),
            "{waited:?}"
        );
    }
}
