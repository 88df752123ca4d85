//! The supervisor against real processes (`sh`, `sleep`, `printf`, `yes`).
//!
//! Every await is bounded by [`within`], so a regression fails instead of
//! hanging. Liveness is read from `/proc` (zombies count as dead: in a
//! container without an init, orphans are never reaped).
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::future::Future;
use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use veil_agent::supervisor::{
    Exit, OutputLimits, OutputLine, ProcessSpec, RestartPolicy, State, Stream, Supervised,
    SupervisorError, TempDir, TempFile, run_once,
};

const BOUND: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new("sh").arg("-c").arg(script)
}

fn texts(lines: &[OutputLine]) -> Vec<&str> {
    lines.iter().map(|l| l.text.as_str()).collect()
}

/// Alive = exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next();
            !matches!(state, Some("Z" | "X"))
        }
        Err(_) => false,
    }
}

fn pids_in(lines: &[OutputLine]) -> Vec<u32> {
    lines.iter().filter_map(|l| l.text.parse().ok()).collect()
}

/// Waits (bounded) until none of `pids` is alive; fails naming survivors.
async fn assert_all_dead(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let survivors: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(survivors.is_empty(), "processes survived: {survivors:?}");
}

/// Receives lines from `rx` until `count` lines arrived.
async fn receive(rx: &mut mpsc::Receiver<OutputLine>, count: usize) -> Vec<OutputLine> {
    let mut lines = Vec::new();
    while lines.len() < count {
        lines.push(within("an output line", rx.recv()).await.unwrap());
    }
    lines
}

#[tokio::test]
async fn line_printed_before_exit_arrives_while_the_process_runs() {
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(run_once(
        sh("echo ready; sleep 300")
            .output_sink(tx)
            .kill_grace(Duration::from_millis(200)),
        cancel.clone(),
    ));
    let line = within("first line", rx.recv()).await.unwrap();
    assert_eq!(
        (line.seq, line.stream, line.text.as_str()),
        (0, Stream::Stdout, "ready")
    );
    assert!(!run.is_finished());
    cancel.cancel();
    let done = within("cancelled run", run).await.unwrap().unwrap();
    assert_eq!(done.exit, Exit::Cancelled);
}

#[tokio::test]
async fn stderr_is_captured_and_tagged() {
    let done = within(
        "run",
        run_once(sh("echo out; echo err >&2"), CancellationToken::new()),
    )
    .await
    .unwrap();
    assert_eq!(done.exit, Exit::Code(0));
    let mut lines: Vec<_> = done
        .recent_lines
        .iter()
        .map(|l| (l.stream, l.text.as_str()))
        .collect();
    lines.sort_by_key(|(_, text)| *text);
    assert_eq!(lines, [(Stream::Stderr, "err"), (Stream::Stdout, "out")]);
}

#[tokio::test]
async fn output_of_a_process_that_exits_at_once_is_never_lost() {
    for _ in 0..20 {
        let spec = ProcessSpec::new("printf").arg("a\\nb\\nno newline");
        let done = within("run", run_once(spec, CancellationToken::new()))
            .await
            .unwrap();
        assert_eq!(texts(&done.recent_lines), ["a", "b", "no newline"]);
    }
}

#[tokio::test]
async fn burst_of_100k_lines_is_fully_read_and_the_ring_stays_bounded() {
    // A sink that is never read: it fills at once, the rest is counted.
    let (tx, _rx) = mpsc::channel(10);
    let limits = OutputLimits {
        max_lines: 500,
        ..OutputLimits::default()
    };
    let spec = sh("yes line | head -n 100000")
        .output_limits(limits)
        .output_sink(tx);
    let done = within("burst", run_once(spec, CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(done.exit, Exit::Code(0));
    assert_eq!(done.recent_lines.len(), 500);
    assert_eq!(done.recent_lines.last().unwrap().seq, 99_999);
    assert_eq!(done.dropped_lines, 100_000 - 10);
}

#[tokio::test]
async fn non_zero_exit_code_and_signal_are_reported() {
    let done = within("exit 3", run_once(sh("exit 3"), CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(done.exit, Exit::Code(3));
    assert!(!done.exit.success());
    let done = within(
        "kill -9",
        run_once(sh("kill -9 $$"), CancellationToken::new()),
    )
    .await
    .unwrap();
    assert_eq!(done.exit, Exit::Signal(9));
}

const TREE: &str = "sleep 300 & echo $!; sleep 300 & echo $!; echo $$; wait";

#[tokio::test]
async fn timeout_kills_the_whole_process_tree() {
    let spec = sh(TREE)
        .timeout(Duration::from_millis(500))
        .kill_grace(Duration::from_secs(2));
    let started = Instant::now();
    let done = within("timed-out run", run_once(spec, CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(done.exit, Exit::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let pids = pids_in(&done.recent_lines);
    assert_eq!(pids.len(), 3, "{:?}", done.recent_lines);
    assert_eq!(pids[2], done.pid);
    assert_all_dead(&pids).await;
}

#[tokio::test]
async fn cancellation_kills_the_whole_process_tree() {
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(run_once(sh(TREE).output_sink(tx), cancel.clone()));
    let pids = pids_in(&receive(&mut rx, 3).await);
    assert!(pids.iter().all(|&p| alive(p)));
    cancel.cancel();
    let done = within("cancelled run", run).await.unwrap().unwrap();
    assert_eq!(done.exit, Exit::Cancelled);
    assert_all_dead(&pids).await;
}

#[tokio::test]
async fn a_tree_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    // SIG_IGN is inherited, so the sleeps ignore SIGTERM too.
    let spec = sh("trap '' TERM; sleep 300 & echo $!; echo ready; wait; wait")
        .output_sink(tx)
        .kill_grace(Duration::from_millis(300));
    let run = tokio::spawn(run_once(spec, cancel.clone()));
    let lines = receive(&mut rx, 2).await;
    cancel.cancel();
    let done = within("cancelled run", run).await.unwrap().unwrap();
    assert_eq!(done.exit, Exit::Cancelled);
    assert_all_dead(&[pids_in(&lines), vec![done.pid]].concat()).await;
}

#[tokio::test]
async fn leftover_background_processes_are_stopped_when_the_leader_exits() {
    let done = within(
        "run",
        run_once(sh("sleep 300 & echo $!"), CancellationToken::new()),
    )
    .await
    .unwrap();
    assert_eq!(done.exit, Exit::Code(0));
    assert_all_dead(&pids_in(&done.recent_lines)).await;
}

#[tokio::test]
async fn missing_binary_is_named_with_the_path_searched() {
    let spec = ProcessSpec::new("veil-no-such-binary").pass_env("PATH");
    let error = run_once(spec, CancellationToken::new()).await.unwrap_err();
    assert!(
        matches!(error, SupervisorError::BinaryNotFound { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("`veil-no-such-binary`") && message.contains("PATH="),
        "{message}"
    );
    assert_eq!(error.reason(), "BinaryNotFound");
}

#[tokio::test]
async fn non_executable_file_is_refused_before_spawning() {
    let file = TempFile::new(b"#!/bin/sh\necho hi\n", ".sh").unwrap();
    let error = run_once(ProcessSpec::new(file.path()), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(error, SupervisorError::NotExecutable { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains(&file.path().display().to_string())
    );
}

#[tokio::test]
async fn port_in_use_is_named() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let error = run_once(sh("true").require_free_tcp(addr), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(error, SupervisorError::PortInUse { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&format!("port {}", addr.port())),
        "{error}"
    );
}

#[tokio::test]
async fn missing_required_path_and_working_dir_are_named() {
    let error = run_once(
        sh("true").require_path("/nonexistent/veil.json"),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/veil.json"),
        "{error}"
    );
    let error = run_once(
        sh("true").current_dir("/nonexistent/run"),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("/nonexistent/run"), "{error}");
}

#[tokio::test]
async fn cancelled_before_start_runs_nothing() {
    let cancel = CancellationToken::new();
    cancel.cancel();
    let error = run_once(sh("true"), cancel).await.unwrap_err();
    assert!(matches!(error, SupervisorError::Cancelled));
}

#[tokio::test]
async fn environment_is_cleared_unless_given() {
    let run = |spec| async {
        within("env", run_once(spec, CancellationToken::new()))
            .await
            .unwrap()
    };
    let done = run(ProcessSpec::new("env").env("VEIL_X", "1")).await;
    assert_eq!(texts(&done.recent_lines), ["VEIL_X=1"]);
    let done = run(ProcessSpec::new("env").pass_env("PATH")).await;
    let lines = texts(&done.recent_lines);
    assert!(
        lines.len() == 1 && lines[0].starts_with("PATH="),
        "{lines:?}"
    );
    let done = run(ProcessSpec::new("env").inherit_env().env("VEIL_X", "2")).await;
    let lines = texts(&done.recent_lines);
    assert!(lines.contains(&"VEIL_X=2") && lines.iter().any(|l| l.starts_with("PATH=")));
}

#[test]
fn debug_output_never_shows_environment_values() {
    let spec = ProcessSpec::new("xray").env("VEIL_SECRET", "hunter2");
    let shown = format!("{spec:?}");
    assert!(
        shown.contains("VEIL_SECRET") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[tokio::test]
async fn arguments_are_passed_literally_without_a_shell() {
    let spec = ProcessSpec::new("printf").args(["%s\\n", "$(echo hi)", "*", "a b", "'q'"]);
    let done = within("printf", run_once(spec, CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(texts(&done.recent_lines), ["$(echo hi)", "*", "a b", "'q'"]);
}

#[tokio::test]
async fn held_temp_file_lives_exactly_as_long_as_the_run() {
    let config = TempFile::new(b"{\"k\":1}", ".json").unwrap();
    let path = config.path().to_path_buf();
    let spec = ProcessSpec::new("cat").arg(&path).hold(config);
    let done = within("cat", run_once(spec, CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(texts(&done.recent_lines), ["{\"k\":1}"]);
    assert!(!path.exists());
}

#[tokio::test]
async fn spawn_is_retried_while_the_binary_is_still_open_for_writing() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tool.sh");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(b"#!/bin/sh\necho written\n").unwrap();
    let mut perms = file.metadata().unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
    file.set_permissions(perms).unwrap();
    // Executing a file open for writing fails with ETXTBSY until it closes.
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(80)).await;
        drop(file);
    });
    let done = within(
        "retried run",
        run_once(ProcessSpec::new(&path), CancellationToken::new()),
    )
    .await
    .unwrap();
    assert_eq!(texts(&done.recent_lines), ["written"]);
    closer.await.unwrap();
}

fn quick_restarts() -> RestartPolicy {
    RestartPolicy {
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
        jitter: false,
        ..RestartPolicy::default()
    }
}

#[tokio::test]
async fn exiting_process_is_restarted_with_growing_delays() {
    let dir = TempDir::new().unwrap();
    let log = dir.path().join("starts");
    let spec = sh("date +%s%N >> \"$1\"")
        .arg("sh")
        .arg(&log)
        .kill_grace(Duration::from_millis(200));
    let mut workload = Supervised::start(spec, quick_restarts()).await.unwrap();
    let started =
        |log: &std::path::Path| std::fs::read_to_string(log).map_or(0, |s| s.lines().count());
    // Counted from the file: the restart counter moves just before a spawn.
    within("4 starts", async {
        while started(&log) < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    within("stop", workload.stop()).await;
    assert!(
        matches!(workload.state(), State::Stopped { .. }),
        "{:?}",
        workload.state()
    );

    let starts: Vec<u128> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(starts.len() >= 4, "{starts:?}");
    let gaps_ms: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    // 100 ms, 200 ms, 400 ms plus process start-up time.
    assert!(
        gaps_ms[0] >= 90 && gaps_ms[1] >= 190 && gaps_ms[2] >= 390,
        "{gaps_ms:?}"
    );
    assert!(gaps_ms[2] > gaps_ms[0], "{gaps_ms:?}");
    assert!(workload.restarts() >= 3);
}

#[tokio::test]
async fn failures_in_a_row_grow_in_a_crash_loop_and_a_stable_run_ends_the_row() {
    let dir = TempDir::new().unwrap();
    let log = dir.path().join("starts");
    // Starts 1–3 crash at once, start 4 runs 600 ms (stable after 300 ms),
    // start 5 crashes after 200 ms (read while it runs), later ones at once.
    let spec = sh("echo x >> \"$1\"; n=$(wc -l < \"$1\"); if [ \"$n\" -eq 4 ]; then sleep 0.6; fi; if [ \"$n\" -eq 5 ]; then sleep 0.2; fi; exit 1")
        .arg("sh")
        .arg(&log)
        .kill_grace(Duration::from_millis(200));
    let policy = RestartPolicy {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(100),
        stable_after: Duration::from_millis(300),
        ..quick_restarts()
    };
    let mut workload = Supervised::start(spec, policy).await.unwrap();
    let started =
        |log: &std::path::Path| std::fs::read_to_string(log).map_or(0, |s| s.lines().count());
    within("the stable run", async {
        while started(&log) < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(workload.failures_in_a_row(), 3, "three quick crashes");
    within("a crash after the stable run", async {
        while started(&log) < 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        workload.failures_in_a_row(),
        1,
        "the stable run's exit starts a new row"
    );
    within("stop", workload.stop()).await;
}

#[tokio::test]
async fn stop_kills_the_supervised_tree_and_reports_state() {
    let (tx, mut rx) = mpsc::channel(16);
    let spec = sh(TREE)
        .output_sink(tx)
        .kill_grace(Duration::from_millis(500));
    let mut workload = Supervised::start(spec, quick_restarts()).await.unwrap();
    let pids = pids_in(&receive(&mut rx, 3).await);
    assert_eq!(workload.pid(), Some(pids[2]));
    assert!(matches!(workload.state(), State::Running { pid, .. } if pid == pids[2]));
    within("stop", workload.stop()).await;
    assert_eq!(workload.pid(), None);
    assert!(matches!(workload.state(), State::Stopped { .. }));
    assert_eq!(workload.restarts(), 0);
    assert_all_dead(&pids).await;
    assert_eq!(workload.recent_lines().len(), 3);
}

#[tokio::test]
async fn dropping_the_handle_kills_the_supervised_tree() {
    let (tx, mut rx) = mpsc::channel(16);
    let workload = Supervised::start(sh(TREE).output_sink(tx), quick_restarts())
        .await
        .unwrap();
    let pids = pids_in(&receive(&mut rx, 3).await);
    drop(workload);
    assert_all_dead(&pids).await;
}

#[tokio::test]
async fn start_reports_preflight_errors_to_the_caller() {
    let error = Supervised::start(ProcessSpec::new("/nonexistent/xray"), quick_restarts())
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("/nonexistent/xray"), "{error}");
}
