//! Task runs through the operator with real tools: cancellation, a missing
//! executor, and real ansible-playbook and OpenTofu runs from a git
//! repository (tools from `make env`, on PATH through the Makefile).
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by design")]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use veil_e2e::process::{Agent, Operator, OperatorOptions};

const WAIT: Duration = Duration::from_secs(60);

const RUNNER: &str = "apiVersion: veil.dev/v1alpha1\nkind: Runner\nmetadata:\n  name: all\nspec:\n  nodeSelector:\n    matchLabels:\n      role: edge\n  maxParallelTasks: 4\n  executors: [shell, ansible, terraform]\n";

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn start(dir: &Path) -> Operator {
    write(&dir.join("runner.yaml"), RUNNER);
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

/// A bare git repository holding `files`, as a `file://` URL.
fn repository(root: &Path, files: &[(&str, &str)]) -> String {
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
    let op = start(dir.path()).await;
    let _agent = Agent::start(&op, "edge-a", &["role=edge"]);
    let task = format!(
        "    executor: ansible\n    repository:\n      url: \"{url}\"\n      ref: main\n    ansible:\n      playbook: site.yml\n      extraVars:\n        who: veil\n    timeoutSeconds: 300\n"
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
    let op = start(dir.path()).await;
    let _agent = Agent::start(&op, "edge-t", &["role=edge"]);
    let task = format!(
        "    executor: terraform\n    repository:\n      url: \"{url}\"\n    terraform:\n      action: apply\n      vars:\n        greeting: hi-from-veil\n    timeoutSeconds: 300\n"
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
