//! Task runs through the operator with real tools: cancellation, a missing
//! executor, and real ansible-playbook and OpenTofu runs from a git
//! repository (tools from `make env`, on PATH through the Makefile).
//!
//! Tasks run as the agent's unprivileged task user. The tools of `make env`
//! live under `/root` (0700), which that user cannot enter: the OpenTofu test
//! copies the static `tofu` binary into a world-readable directory, as an
//! installation for task users would; ansible's Python itself lives under
//! `/root/.pyenv` here, so the ansible test uses a `runAsRoot` Runner.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by design")]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use veil_e2e::process::{Agent, AgentOptions, Operator, OperatorOptions};

const WAIT: Duration = Duration::from_secs(60);

const RUNNER: &str = "apiVersion: veil.dev/v1alpha1\nkind: Runner\nmetadata:\n  name: all\nspec:\n  nodeSelector:\n    matchLabels:\n      role: edge\n  maxParallelTasks: 4\n  executors: [shell, ansible, terraform]\n";

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn start(dir: &Path) -> Operator {
    start_with_runner(dir, RUNNER).await
}

async fn start_with_runner(dir: &Path, runner: &str) -> Operator {
    write(&dir.join("runner.yaml"), runner);
    Operator::start_with(
        dir,
        OperatorOptions {
            extra_args: vec!["--heartbeat-interval".into(), "1".into()],
            ..Default::default()
        },
    )
    .await
}

async fn wait_phase(op: &Operator, name: &str, phases: &[&str]) -> Value {
    op.eventually(&format!("{name} in {phases:?}"), WAIT, || async {
        op.object("taskruns", name)
            .await
            .filter(|r| phases.iter().any(|p| r["status"]["phase"] == *p))
    })
    .await
}

fn run_yaml(name: &str, task: &str, cancel: bool) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: TaskRun\nmetadata:\n  name: {name}\nspec:\n  cancel: {cancel}\n  task:\n{task}"
    )
}

/// A bare git repository holding `files`, as a `file://` URL (so tasks
/// need `allowInsecure: true`). `root` is made world-readable: git runs as
/// the task user.
fn repository(root: &Path, files: &[(&str, &str)]) -> String {
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    for (name, text) in files {
        std::fs::write(work.join(name), text).unwrap();
    }
    let git = |dir: &Path, args: &[&str]| {
        let out = Command::new("git")
            .current_dir(dir)
            .args([
                "-c",
                "user.name=veil",
                "-c",
                "user.email=veil@example.invalid",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "tasks"]);
    let bare = root.join("repo.git");
    git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    format!("file://{}", bare.display())
}

/// A world-readable directory holding a copy of `make env`'s `tofu`.
fn world_readable_tofu() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let found = Command::new("sh")
        .args(["-c", "command -v tofu"])
        .output()
        .unwrap();
    let tofu = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    assert!(!tofu.is_empty(), "tofu is not on PATH: run `make env`");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(&tofu, dir.path().join("tofu")).unwrap();
    std::fs::set_permissions(
        dir.path().join("tofu"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn a_running_task_is_cancelled_by_spec_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path()).await;
    let _agent = Agent::start(&op, "edge-c", &["role=edge"]);
    let task = "    executor: shell\n    shell:\n      script: \"echo begun; sleep 300\"\n";
    write(
        &dir.path().join("run.yaml"),
        &run_yaml("stop-me", task, false),
    );
    wait_phase(&op, "stop-me", &["Running"]).await;
    write(
        &dir.path().join("run.yaml"),
        &run_yaml("stop-me", task, true),
    );
    let run = wait_phase(&op, "stop-me", &["Cancelled", "Failed", "Succeeded"]).await;
    assert_eq!(run["status"]["phase"], "Cancelled", "{run}");
}

#[tokio::test]
async fn a_node_without_the_tool_fails_the_run_naming_node_and_tool() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path()).await;
    // /usr/bin and /bin only: no ansible-playbook (it lives in the tool cache).
    let _agent = Agent::start_with_path(&op, "bare-1", &["role=edge"], "/usr/bin:/bin");
    op.eventually("bare-1 registered", WAIT, || async {
        op.object("veilnodes", "bare-1")
            .await
            .filter(|n| !n["status"]["capabilities"].is_null())
    })
    .await;
    let task = "    executor: ansible\n    ansible:\n      playbook: site.yml\n";
    write(
        &dir.path().join("run.yaml"),
        &run_yaml("needs-ansible", task, false),
    );
    let run = wait_phase(&op, "needs-ansible", &["Failed", "Succeeded"]).await;
    assert_eq!(run["status"]["reason"], "ExecutorMissing", "{run}");
    let message = run["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("bare-1") && message.contains("ansible-playbook"),
        "{message}"
    );
}

#[tokio::test]
async fn a_real_ansible_playbook_runs_from_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo_root = tempfile::tempdir().unwrap();
    let url = repository(
        repo_root.path(),
        &[(
            "site.yml",
            "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: \"hello from ansible {{ who }}\"\n    - command: echo second-task\n",
        )],
    );
    // ansible's interpreter (make env's Python) is under /root here.
    let op = start_with_runner(dir.path(), &format!("{RUNNER}  runAsRoot: true\n")).await;
    let _agent = Agent::start(&op, "edge-a", &["role=edge"]);
    let task = format!(
        "    executor: ansible\n    repository:\n      url: \"{url}\"\n      allowInsecure: true\n      ref: main\n    ansible:\n      playbook: site.yml\n      extraVars:\n        who: veil\n    timeoutSeconds: 300\n"
    );
    write(
        &dir.path().join("run.yaml"),
        &run_yaml("playbook", &task, false),
    );
    let run = wait_phase(&op, "playbook", &["Succeeded", "Failed"]).await;
    let out = op.cli(&["logs", "taskrun", "playbook"]);
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(run["status"]["phase"], "Succeeded", "{run}\n{log}");
    assert!(log.contains("hello from ansible veil"), "{log}");
    assert!(log.contains("ok=2"), "{log}");
}

#[tokio::test]
async fn a_real_tofu_init_and_apply_runs_from_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo_root = tempfile::tempdir().unwrap();
    let url = repository(
        repo_root.path(),
        &[(
            "main.tf",
            "variable \"greeting\" {\n  type = string\n}\n\nresource \"terraform_data\" \"hello\" {\n  input = var.greeting\n}\n\noutput \"greeting\" {\n  value = terraform_data.hello.output\n}\n",
        )],
    );
    // git (as the task user) refuses a repository another user owns.
    let bare = url.trim_start_matches("file://");
    let chown = Command::new("chown")
        .args(["-R", "65534:65534", bare])
        .status()
        .unwrap();
    assert!(chown.success());
    let op = start(dir.path()).await;
    // The task user cannot enter /root: tofu goes where it can.
    let tools = world_readable_tofu();
    let path = format!(
        "{}:{}",
        tools.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let options = AgentOptions {
        path: Some(path),
        ..AgentOptions::default()
    };
    let _agent = Agent::start_with(&op, "edge-t", &["role=edge"], &options);
    let task = format!(
        "    executor: terraform\n    repository:\n      url: \"{url}\"\n      allowInsecure: true\n    terraform:\n      action: apply\n      vars:\n        greeting: hi-from-veil\n    timeoutSeconds: 300\n"
    );
    write(
        &dir.path().join("run.yaml"),
        &run_yaml("infra", &task, false),
    );
    let run = wait_phase(&op, "infra", &["Succeeded", "Failed"]).await;
    let out = op.cli(&["logs", "taskrun", "infra"]);
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(run["status"]["phase"], "Succeeded", "{run}\n{log}");
    assert!(log.contains("Apply complete"), "{log}");
    assert!(log.contains("hi-from-veil"), "{log}");
}

#[tokio::test]
async fn a_timed_out_task_dies_with_its_whole_process_tree() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path()).await;
    let _agent = Agent::start(&op, "edge-x", &["role=edge"]);
    // A distinctive duration so the check below finds only this test's processes.
    let task = "    executor: shell\n    timeoutSeconds: 1\n    shell:\n      script: \"sleep 317 & sleep 317 & echo spawned; wait\"\n";
    write(&dir.path().join("run.yaml"), &run_yaml("slow", task, false));
    let run = wait_phase(&op, "slow", &["Failed", "Succeeded"]).await;
    assert_eq!(run["status"]["reason"], "Timeout", "{run}");
    let survivors = Command::new("pgrep")
        .args(["-f", "sleep 317"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&survivors.stdout).trim().is_empty(),
        "no orphan survives the timeout: {}",
        String::from_utf8_lossy(&survivors.stdout)
    );
}

#[tokio::test]
async fn capacity_is_respected_and_a_waiting_run_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path()).await;
    write(
        &dir.path().join("runner.yaml"),
        &RUNNER.replace("maxParallelTasks: 4", "maxParallelTasks: 1"),
    );
    let _agent = Agent::start(&op, "edge-1cap", &["role=edge"]);
    let task = "    executor: shell\n    shell:\n      command: [\"sleep\", \"2\"]\n";
    write(&dir.path().join("a.yaml"), &run_yaml("first", task, false));
    wait_phase(&op, "first", &["Running"]).await;
    write(&dir.path().join("b.yaml"), &run_yaml("second", task, false));
    let waiting = op
        .eventually("second waits for capacity", WAIT, || async {
            op.object("taskruns", "second").await.filter(|r| {
                r["status"]["phase"] == "Pending"
                    && r["status"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("busy"))
            })
        })
        .await;
    assert!(waiting["status"]["node"].is_null(), "{waiting}");
    wait_phase(&op, "second", &["Succeeded"]).await;
    let first = op.object("taskruns", "first").await.unwrap();
    let second = op.object("taskruns", "second").await.unwrap();
    assert!(
        second["status"]["startedAt"].as_str() >= first["status"]["finishedAt"].as_str(),
        "one at a time: {first} {second}"
    );
}

#[tokio::test]
async fn a_secret_env_value_reaches_the_task_but_never_a_log_or_status() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path()).await;
    write(
        &dir.path().join("secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: deploy\nstringData:\n  token: s3cr3t-VALUE-42\n",
    );
    let _agent = Agent::start(&op, "edge-s2", &["role=edge"]);
    let task = "    executor: shell\n    env:\n      - name: DEPLOY_TOKEN\n        secretKeyRef:\n          name: deploy\n          key: token\n    shell:\n      script: \"test ${#DEPLOY_TOKEN} -eq 15 && echo token-ok; echo value=$DEPLOY_TOKEN\"\n";
    write(
        &dir.path().join("run.yaml"),
        &run_yaml("uses-secret", task, false),
    );
    let run = wait_phase(&op, "uses-secret", &["Succeeded", "Failed"]).await;
    assert_eq!(
        run["status"]["phase"], "Succeeded",
        "the task saw the value: {run}"
    );
    let out = op.cli(&["logs", "taskrun", "uses-secret"]);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("token-ok"), "{log}");
    assert!(
        !log.contains("s3cr3t-VALUE-42"),
        "masked in the stored log: {log}"
    );
    assert!(
        !run["status"].to_string().contains("s3cr3t-VALUE-42"),
        "not in status"
    );
    assert!(
        !op.log().contains("s3cr3t-VALUE-42"),
        "not in the operator's log"
    );
}
