//! Agents end to end: real `veil-operator` and `veil-agent` processes on
//! loopback — token isolation, registration, placement, shell task runs
//! with logs, failures, and an agent killed mid-run.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by design")]

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use veil_e2e::process::{Agent, Operator, OperatorOptions};

const WAIT: Duration = Duration::from_secs(20);

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

const RUNNER: &str = "
apiVersion: veil.dev/v1alpha1
kind: Runner
metadata:
  name: edge
  labels:
    pool: main
spec:
  nodeSelector:
    matchLabels:
      role: edge
  maxParallelTasks: 2
  executors: [shell]
";

fn task_run(name: &str, script: &str, timeout: u32) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: TaskRun\nmetadata:\n  name: {name}\nspec:\n  task:\n    executor: shell\n    timeoutSeconds: {timeout}\n    shell:\n      script: {}\n",
        serde_json::to_string(script).unwrap()
    )
}

async fn start(dir: &Path, heartbeat: u32) -> Operator {
    Operator::start_with(
        dir,
        OperatorOptions {
            extra_args: vec!["--heartbeat-interval".into(), heartbeat.to_string()],
            ..Default::default()
        },
    )
    .await
}

async fn wait_run(op: &Operator, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    op.eventually(what, WAIT, || async {
        op.object("taskruns", name).await.filter(|o| check(o))
    })
    .await
}

async fn raw(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> u16 {
    let client = veil_e2e::process::test_client();
    let mut request = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap().status().as_u16()
}

fn registration(node: &str) -> Value {
    json!({"node": node, "os": "linux", "arch": "x86_64", "agentVersion": "test"})
}

#[tokio::test]
async fn node_tokens_read_and_write_only_their_own_node() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path(), 10).await;
    let a = op.create_token("node-a");
    let b = op.create_token("node-b");
    let url = |path: &str| format!("{}/v1/agent/{path}", op.url);

    // 401: missing, wrong.
    assert_eq!(
        raw("POST", &url("register"), None, Some(registration("node-a"))).await,
        401
    );
    assert_eq!(
        raw(
            "POST",
            &url("register"),
            Some("veil_node_wrong"),
            Some(registration("node-a"))
        )
        .await,
        401
    );
    assert_eq!(raw("GET", &url("assignment?wait=0"), None, None).await, 401);
    assert_eq!(
        raw(
            "POST",
            &url("report"),
            None,
            Some(json!({"node": "node-a", "seq": 1, "appliedRevision": 0}))
        )
        .await,
        401
    );

    // Own data: fine.
    assert_eq!(
        raw(
            "POST",
            &url("register"),
            Some(&a),
            Some(registration("node-a"))
        )
        .await,
        200
    );
    let own = raw("GET", &url("assignment?wait=0"), Some(&a), None).await;
    assert!(
        own == 200 || own == 204,
        "own assignment: {own} (200, or 204 when unchanged)"
    );
    assert_eq!(
        raw(
            "POST",
            &url("report"),
            Some(&a),
            Some(json!({"node": "node-a", "seq": 1, "appliedRevision": 0}))
        )
        .await,
        200
    );

    // 403: another node's data.
    assert_eq!(
        raw(
            "POST",
            &url("register"),
            Some(&a),
            Some(registration("node-b"))
        )
        .await,
        403
    );
    assert_eq!(
        raw("GET", &url("assignment?node=node-b&wait=0"), Some(&a), None).await,
        403
    );
    assert_eq!(
        raw(
            "POST",
            &url("report"),
            Some(&a),
            Some(json!({"node": "node-b", "seq": 1, "appliedRevision": 0}))
        )
        .await,
        403
    );
    assert_eq!(
        raw(
            "POST",
            &url("register"),
            Some(&b),
            Some(registration("node-a"))
        )
        .await,
        403
    );

    // 401: revoked.
    let list = op.cli(&[
        "token",
        "list",
        "--data-dir",
        &op.data_dir.display().to_string(),
    ]);
    let listing = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(!listing.contains(&a), "token list never shows tokens");
    let id = listing
        .lines()
        .find(|l| l.contains("node-a"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let out = op.cli(&[
        "token",
        "revoke",
        &id,
        "--data-dir",
        &op.data_dir.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        raw(
            "POST",
            &url("register"),
            Some(&a),
            Some(registration("node-a"))
        )
        .await,
        401
    );
    assert_eq!(
        raw("GET", &url("assignment?wait=0"), Some(&a), None).await,
        401
    );
    assert!(
        !op.log().contains(&a) && !op.log().contains(&b),
        "tokens are never logged"
    );
}

#[tokio::test]
async fn an_agent_registers_runs_a_shell_task_and_streams_its_log() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("runner.yaml"), RUNNER);
    let op = start(dir.path(), 1).await;
    let _agent = Agent::start(&op, "edge-1", &["role=edge"]);

    let node = op
        .eventually("the agent's VeilNode Ready", WAIT, || async {
            op.object("veilnodes", "edge-1").await.filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
        })
        .await;
    let capabilities = node["status"]["capabilities"].as_array().unwrap();
    assert!(capabilities.iter().any(|c| c["name"] == "sh"), "{node}");

    write(
        &dir.path().join("run.yaml"),
        &task_run(
            "hello",
            "echo first; echo to-stderr >&2; sleep 1; echo last",
            60,
        ),
    );
    // Output printed before exit is visible while the run is still going.
    wait_run(&op, "hello", "first line while running", |r| {
        r["status"]["phase"] == "Running"
            && r["status"]["logTail"]
                .as_array()
                .is_some_and(|t| t.iter().any(|l| l == "first"))
    })
    .await;
    let done = wait_run(&op, "hello", "Succeeded", |r| {
        r["status"]["phase"] == "Succeeded"
    })
    .await;
    assert_eq!(done["status"]["exitCode"], 0);
    assert_eq!(done["status"]["node"], "edge-1");
    let tail: Vec<&str> = done["status"]["logTail"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tail.contains(&"to-stderr") && tail.contains(&"last"),
        "{tail:?}"
    );

    let out = op.cli(&["logs", "taskrun", "hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        log.matches("first").count(),
        1,
        "each chunk stored once: {log}"
    );
    assert!(log.contains("last"), "{log}");

    write(
        &dir.path().join("fail.yaml"),
        &task_run("broken", "echo nope; exit 3", 60),
    );
    let failed = wait_run(&op, "broken", "Failed", |r| {
        r["status"]["phase"] == "Failed"
    })
    .await;
    assert_eq!(failed["status"]["exitCode"], 3);
}

#[tokio::test]
async fn a_run_without_a_matching_runner_stays_pending_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("runner.yaml"), RUNNER);
    write(
        &dir.path().join("run.yaml"),
        &task_run("waiting", "true", 60),
    );
    let op = start(dir.path(), 1).await;
    let _agent = Agent::start(&op, "db-1", &["role=db"]);
    let run = wait_run(&op, "waiting", "a pending message", |r| {
        r["status"]["phase"] == "Pending"
            && r["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no node matches"))
    })
    .await;
    assert!(run["status"]["node"].is_null());
}

#[tokio::test]
async fn killing_the_agent_mid_run_ends_the_run_node_lost_and_never_reruns_it() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("runner.yaml"), RUNNER);
    let op = start(dir.path(), 1).await;
    let token = op.create_token("edge-9");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("agent");
    let agent = Agent::start_in(&op, "edge-9", &["role=edge"], &token, tmp, data);
    write(
        &dir.path().join("run.yaml"),
        &task_run("long", "echo started; sleep 300", 600),
    );
    wait_run(&op, "long", "started", |r| {
        r["status"]["logTail"]
            .as_array()
            .is_some_and(|t| t.iter().any(|l| l == "started"))
    })
    .await;

    // The run's process group is recorded; after `kill -9` of the agent it
    // keeps running until the restarted agent ends it.
    let record = std::fs::read_dir(data_dir_runs(&agent))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "pid"))
        .expect("the run's pid record");
    let pid: u32 = std::fs::read_to_string(&record)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (tmp, data) = agent.kill();
    assert!(
        alive(pid),
        "the task outlives a killed agent until one restarts"
    );
    let lost = wait_run(&op, "long", "NodeLost", |r| {
        r["status"]["phase"] == "Failed"
    })
    .await;
    assert_eq!(lost["status"]["reason"], "NodeLost", "{lost}");

    // The restarted agent replays its journal but does not run the task again.
    let agent = Agent::start_in(&op, "edge-9", &["role=edge"], &token, tmp, data);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while alive(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !alive(pid),
        "the restarted agent must end the lost run's processes"
    );
    // A run started after the restart: the agent sends its reports in
    // order, journal first, so once this one's outcome is in, every
    // replayed chunk has been delivered (no fixed wait to hope for that).
    write(
        &dir.path().join("marker.yaml"),
        &task_run("marker", "echo marker", 60),
    );
    wait_run(&op, "marker", "marker Succeeded", |r| {
        r["status"]["phase"] == "Succeeded"
    })
    .await;
    let after = op.object("taskruns", "long").await.unwrap();
    assert_eq!(after["status"]["phase"], "Failed");
    let out = op.cli(&["logs", "taskrun", "long"]);
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        log.matches("started").count(),
        1,
        "no duplicate log chunk: {log}\n{}",
        agent.log()
    );
}

fn data_dir_runs(agent: &Agent) -> std::path::PathBuf {
    agent.data_dir.join("runs")
}

/// Whether `pid` is a live process (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z")
        })
        .unwrap_or(false)
}

fn one_shot_schedule(name: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: Schedule\nmetadata:\n  name: {name}\nspec:\n  runAt: \"{}\"\n  task:\n    executor: shell\n    shell:\n      command: [\"echo\", \"scheduled hello\"]\n",
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// Returns once the operator has finished a pass that began after this
/// call: a marker Schedule due now is written and its run waited for.
/// Schedules are decided together in every pass, so a duplicate run of
/// another Schedule would exist by then — unlike after a fixed wait.
async fn after_a_later_pass(op: &Operator, dir: &std::path::Path) {
    let now = chrono::Utc::now();
    write(&dir.join("marker.yaml"), &one_shot_schedule("marker", now));
    let name = format!("marker-{}", now.timestamp() / 60);
    wait_run(op, &name, "the marker Schedule's run", |_| true).await;
}

#[tokio::test]
async fn a_schedule_makes_one_owned_run_even_across_an_operator_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    write(&dir.path().join("runner.yaml"), RUNNER);
    let options = OperatorOptions {
        data_dir: Some(data.path().to_path_buf()),
        extra_args: vec!["--heartbeat-interval".into(), "1".into()],
        ..Default::default()
    };
    let mut op = Operator::start_with(dir.path(), options.clone()).await;
    let token = op.create_token("edge-s");
    let tmp = tempfile::tempdir().unwrap();
    let agent_data = tmp.path().join("agent");
    let _agent = Agent::start_in(&op, "edge-s", &["role=edge"], &token, tmp, agent_data);
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    write(
        &dir.path().join("schedule.yaml"),
        &one_shot_schedule("once", at),
    );

    let run_name = format!("once-{}", at.timestamp() / 60);
    let run = wait_run(&op, &run_name, "the scheduled run succeeded", |r| {
        r["status"]["phase"] == "Succeeded"
    })
    .await;
    assert_eq!(run["metadata"]["labels"]["veil.dev/schedule"], "once");
    assert_eq!(run["metadata"]["ownerReferences"][0]["kind"], "Schedule");
    let schedule = op.object("schedules", "once").await.unwrap();
    assert!(
        schedule["status"]["lastScheduleTime"].is_string(),
        "{schedule}"
    );

    op.stop();
    let op = Operator::start_with(dir.path(), options).await;
    after_a_later_pass(&op, dir.path()).await;
    let runs: Vec<Value> = op
        .objects("taskruns")
        .await
        .into_iter()
        .filter(|r| r["metadata"]["labels"]["veil.dev/schedule"] == "once")
        .collect();
    assert_eq!(runs.len(), 1, "exactly one run after a restart: {runs:?}");
    assert_eq!(runs[0]["status"]["phase"], "Succeeded");
}

#[tokio::test]
async fn an_operator_killed_while_a_schedule_is_due_makes_exactly_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    write(&dir.path().join("runner.yaml"), RUNNER);
    let options = OperatorOptions {
        data_dir: Some(data.path().to_path_buf()),
        extra_args: vec!["--heartbeat-interval".into(), "1".into()],
        ..Default::default()
    };
    let mut op = Operator::start_with(dir.path(), options.clone()).await;
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    write(
        &dir.path().join("schedule.yaml"),
        &one_shot_schedule("due", at),
    );
    // SIGKILL right when the run is due: before, during or after its creation.
    let until_due = (at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_due + Duration::from_millis(5)).await;
    op.kill();

    let op = Operator::start_with(dir.path(), options).await;
    let token = op.create_token("edge-d");
    let tmp = tempfile::tempdir().unwrap();
    let agent_data = tmp.path().join("agent");
    let _agent = Agent::start_in(&op, "edge-d", &["role=edge"], &token, tmp, agent_data);
    let run_name = format!("due-{}", at.timestamp() / 60);
    wait_run(&op, &run_name, "the due run succeeded", |r| {
        r["status"]["phase"] == "Succeeded"
    })
    .await;
    after_a_later_pass(&op, dir.path()).await;
    let runs: Vec<Value> = op
        .objects("taskruns")
        .await
        .into_iter()
        .filter(|r| r["metadata"]["labels"]["veil.dev/schedule"] == "due")
        .collect();
    assert_eq!(runs.len(), 1, "exactly one run: {runs:?}");
}

fn every_minute(name: &str, policy: &str) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: Schedule\nmetadata:\n  name: {name}\nspec:\n  schedule: \"* * * * *\"\n  concurrencyPolicy: {policy}\n  task:\n    executor: shell\n    shell:\n      command: [\"sleep\", \"600\"]\n"
    )
}

fn phases(runs: &[Value], schedule: &str) -> Vec<String> {
    let mut mine: Vec<&Value> = runs
        .iter()
        .filter(|r| r["metadata"]["labels"]["veil.dev/schedule"] == schedule)
        .collect();
    mine.sort_by_key(|r| {
        r["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    mine.iter()
        .map(|r| {
            r["status"]["phase"]
                .as_str()
                .unwrap_or("Pending")
                .to_owned()
        })
        .collect()
}

/// Waits for two minute boundaries (up to about two minutes) with real cron schedules.
#[tokio::test]
async fn concurrency_policies_allow_forbid_and_replace_with_a_real_operator() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("runner.yaml"),
        &RUNNER.replace("maxParallelTasks: 2", "maxParallelTasks: 8"),
    );
    let op = start(dir.path(), 1).await;
    let _agent = Agent::start(&op, "edge-p", &["role=edge"]);
    for (name, policy) in [
        ("allow", "Allow"),
        ("forbid", "Forbid"),
        ("replace", "Replace"),
    ] {
        write(
            &dir.path().join(format!("{name}.yaml")),
            &every_minute(name, policy),
        );
    }
    let runs = op
        .eventually(
            "a second minute boundary",
            Duration::from_secs(150),
            || async {
                let runs = op.objects("taskruns").await;
                let allow = phases(&runs, "allow");
                let replace = phases(&runs, "replace");
                (allow.len() >= 2
                    && allow.iter().all(|p| p == "Running")
                    && replace.len() >= 2
                    && replace.last().is_some_and(|p| p == "Running")
                    && replace.first().is_some_and(|p| p == "Cancelled"))
                .then_some(runs)
            },
        )
        .await;
    let forbid = phases(&runs, "forbid");
    assert_eq!(
        forbid,
        vec!["Running".to_owned()],
        "Forbid never starts a second run while one is active"
    );
    let schedule = op.object("schedules", "forbid").await.unwrap();
    assert_eq!(schedule["status"]["activeCount"], 1, "{schedule}");
}

/// Waits for a minute boundary to pass while the operator is down (up to about 85 s).
#[tokio::test]
async fn a_run_missed_during_downtime_starts_once_unless_past_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    write(&dir.path().join("runner.yaml"), RUNNER);
    let schedule = |name: &str, deadline: &str| {
        format!(
            "apiVersion: veil.dev/v1alpha1\nkind: Schedule\nmetadata:\n  name: {name}\nspec:\n  schedule: \"* * * * *\"\n{deadline}  task:\n    executor: shell\n    shell:\n      command: [\"true\"]\n"
        )
    };
    write(&dir.path().join("late-ok.yaml"), &schedule("late-ok", ""));
    write(
        &dir.path().join("late-skip.yaml"),
        &schedule("late-skip", "  startingDeadlineSeconds: 10\n"),
    );
    let options = OperatorOptions {
        data_dir: Some(data.path().to_path_buf()),
        extra_args: vec!["--heartbeat-interval".into(), "1".into()],
        ..Default::default()
    };
    let mut op = Operator::start_with(dir.path(), options.clone()).await;
    op.eventually("both schedules seen", WAIT, || async {
        (op.objects("schedules").await.len() == 2).then_some(())
    })
    .await;
    op.stop();

    // Down across a minute boundary, until the missed time is 20 s old.
    let now = chrono::Utc::now();
    let boundary = (now.timestamp() / 60 + 1) * 60;
    let restart_at = boundary + 20;
    tokio::time::sleep(Duration::from_secs(
        (restart_at - now.timestamp()).max(0) as u64
    ))
    .await;
    let op = Operator::start_with(dir.path(), options).await;
    let _agent = Agent::start(&op, "edge-m", &["role=edge"]);

    let missed = format!("late-ok-{}", boundary / 60);
    wait_run(&op, &missed, "the missed run started late", |r| {
        r["status"]["phase"] == "Succeeded"
    })
    .await;
    // The skip is decided (and logged) in the pass that would have made the
    // run: once the line is there, that time's run can no longer appear.
    op.eventually("the skip of late-skip logged", WAIT, || async {
        op.log()
            .lines()
            .any(|line| line.contains("MissedSchedule") && line.contains("late-skip"))
            .then_some(())
    })
    .await;
    let skipped: Vec<Value> = op
        .objects("taskruns")
        .await
        .into_iter()
        .filter(|r| {
            r["metadata"]["labels"]["veil.dev/schedule"] == "late-skip"
                && r["metadata"]["name"] == format!("late-skip-{}", boundary / 60)
        })
        .collect();
    assert!(
        skipped.is_empty(),
        "past startingDeadlineSeconds: skipped, not started: {skipped:?}"
    );
}
