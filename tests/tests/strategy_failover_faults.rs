//! Failover through faults on the node (real operator, agent, built-in
//! engine, DPI simulator and HTTPS site in network namespaces).
//!
//! An agent killed in the middle of a failover search: the DPI turns
//! TSPU-like (level 3), the fake-by-TTL primary fails, the agent starts
//! testing its fake-by-badsum backup on the side queue — and is killed
//! (SIGKILL) after the candidate's first round, as a crash or a reboot
//! would. The restarted agent reads its saved state, finds the search
//! under way, tests the candidate again from a clean slot (the engines
//! the dead agent left are ended), switches once, and users' downloads
//! pass through the backup.
//!
//! A primary the node's engine cannot run (an nfqws-only option for the
//! built-in engine): nothing of it ever worked, which by probes alone is
//! `NeverWorked` and no reason to switch — but an engine that cannot run
//! is, so the node switches to a backup that works.

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use veil_e2e::dpi_lab::DpiLab;
use veil_e2e::process::{Agent, Operator};
use veil_e2e::zapret_agent::{self, logged_at, wait_entry, write_atomically as write};

const NODE: &str = "edge-c";
const WAIT: Duration = Duration::from_secs(60);

/// The primary with failover to `youtube-badsum`: three candidate rounds
/// per test, so the test lasts a few seconds.
fn primary() -> String {
    let strategy = zapret_agent::blocked_test_strategy("youtube", zapret_agent::FAKE_TTL);
    zapret_agent::with_failover(
        &strategy,
        &zapret_agent::Failover {
            interval: "3s",
            timeout: "2s",
            passes: 3,
            targets: zapret_agent::PAGE_AND_DOWNLOAD,
            backups: &["youtube-badsum"],
            failure_threshold: 1,
            min_switch_interval: "1h",
        },
    )
}

fn backup() -> String {
    zapret_agent::blocked_test_strategy("youtube-badsum", zapret_agent::FAKE_BADSUM)
}

#[test]
fn an_agent_killed_while_testing_a_candidate_resumes_the_test_and_switches_once() {
    let lab = DpiLab::new(2);
    lab.topology.client.block_on(|| scenario(&lab));
}

async fn scenario(lab: &DpiLab) {
    let source = tempfile::tempdir().expect("source dir");
    let op = Operator::start(source.path()).await;
    let options = lab.agent_options();
    let agent = Agent::start_with(&op, NODE, &["role=edge"], &options);
    write(&source.path().join("youtube-badsum.yaml"), &backup());
    write(&source.path().join("youtube.yaml"), &primary());
    // The baseline needs `passes` (3) passing rounds.
    let mut last_probe = Value::Null;
    for round in 0..3 {
        let entry = wait_entry(
            &op,
            "youtube",
            NODE,
            &format!("passing round {round}"),
            WAIT,
            |e| {
                e["successRate"].as_f64() == Some(1.0)
                    && e["lastProbe"].is_string()
                    && e["lastProbe"] != last_probe
            },
        )
        .await;
        last_probe = entry["lastProbe"].clone();
    }

    lab.sim.set_level(3);
    let saved = agent.data_dir.join("failover").join("default_youtube.json");
    let mut mid_test = None;
    for _ in 0..3000 {
        let state: Option<Value> = std::fs::read(&saved)
            .ok()
            .and_then(|text| serde_json::from_slice(&text).ok());
        if let Some(state) = state
            && state["phase"]["state"] == "testing"
            && state["phase"]["rounds"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        {
            mid_test = Some(state);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mid_test = mid_test.unwrap_or_else(|| panic!("no candidate test saved:\n{}", agent.log()));
    assert_eq!(
        mid_test["phase"]["candidate"], "youtube-badsum",
        "{mid_test}"
    );
    assert_eq!(mid_test["active"], "youtube", "{mid_test}");

    let killed_at = Utc::now();
    let agent = Agent::restart(&op, NODE, &["role=edge"], agent.kill(), &options);
    let agent_log_path = agent.log_path.clone();
    let _print = PrintOnPanic(agent_log_path);
    let entry = wait_entry(
        &op,
        "youtube",
        NODE,
        "switched after the restart",
        WAIT,
        |e| e["activeStrategy"] == "youtube-badsum" && e["lastSwitchTime"].is_string(),
    )
    .await;
    assert_eq!(entry["phase"], "Standby", "{entry}");

    let log = agent.log();
    let tests: Vec<_> = logged_at(&log, "testing a failover candidate on the side queue")
        .into_iter()
        .filter(|t| *t > killed_at)
        .collect();
    assert!(
        !tests.is_empty(),
        "the restarted agent tested the candidate again:\n{log}"
    );
    let switches = logged_at(&log, "strategy switched");
    assert_eq!(
        switches.len(),
        1,
        "one switch, by the restarted agent:\n{log}"
    );
    assert!(switches[0] > killed_at, "{switches:?} {killed_at}");

    // Users' downloads go through the backup now.
    let big = lab.curl("https://blocked.test/bytes/65536", &[]);
    assert!(big.ok() && big.body.len() == 65536, "{big:?}\n{log}");
}

#[test]
fn a_primary_the_engine_cannot_run_is_replaced_by_a_working_backup() {
    let lab = DpiLab::new(2);
    lab.topology.client.block_on(|| engine_cannot_run(&lab));
}

async fn engine_cannot_run(lab: &DpiLab) {
    let source = tempfile::tempdir().expect("source dir");
    let op = Operator::start(source.path()).await;
    let options = lab.agent_options();
    let agent = Agent::start_with(&op, NODE, &["role=edge"], &options);
    let _print = PrintOnPanic(agent.log_path.clone());
    // `--domcase` is nfqws's alone: the built-in engine refuses the profile.
    let strategy = zapret_agent::blocked_test_strategy(
        "youtube",
        &["--dpi-desync=fake", "--dpi-desync-ttl=1", "--domcase"],
    );
    let primary = zapret_agent::with_failover(
        &strategy,
        &zapret_agent::Failover {
            interval: "3s",
            timeout: "2s",
            passes: 1,
            targets: zapret_agent::PAGE_AND_DOWNLOAD,
            backups: &["youtube-badsum"],
            failure_threshold: 1,
            min_switch_interval: "1h",
        },
    );
    write(&source.path().join("youtube-badsum.yaml"), &backup());
    write(&source.path().join("youtube.yaml"), &primary);

    let entry = wait_entry(
        &op,
        "youtube-badsum",
        NODE,
        "the backup active",
        WAIT,
        |e| e["active"] == true && e["phase"] == "Running",
    )
    .await;
    assert_eq!(entry["implementation"], "builtin", "{entry}");
    let log = agent.log();
    assert!(
        log.contains("the active strategy's engine has failed")
            && log.contains("UnsupportedOption"),
        "the switch came from the engine failure:\n{log}"
    );
    assert_eq!(logged_at(&log, "strategy switched").len(), 1, "{log}");
    let big = lab.curl("https://blocked.test/bytes/65536", &[]);
    assert!(big.ok() && big.body.len() == 65536, "{big:?}");
}

/// Prints the agent's log (INFO and up) when the test fails.
struct PrintOnPanic(std::path::PathBuf);
impl Drop for PrintOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            for line in log.lines().filter(|l| !l.contains("\"DEBUG\"")) {
                eprintln!("AGENT: {line}");
            }
        }
    }
}
