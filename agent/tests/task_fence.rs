//! The task driver's fences against real processes, run as root with an
//! unprivileged task user (`nobody`): the process's uid, groups,
//! environment and HOME; a root-only file it cannot read; a tool it cannot
//! reach; `runAsRoot`; and hostile repository input that bypassed the
//! operator's validation, refused by the agent before `git` starts.
//!
//! Skipped (passes with a note) when the test does not run as root: only
//! root can start processes as another user.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use veil_agent::drivers::task::{TaskContext, TaskOutcome, run_task};
use veil_agent::supervisor::OutputLine;
use veil_agent::task_user::{NOBODY_ID, TaskUser, agent_is_root};
use veil_crds::task_run::TaskRunPhase;
use veil_crds::wire::{Capability, RunRef, TaskAssignment};

const BOUND: Duration = Duration::from_secs(60);

fn mk_assignment(name: &str, task: serde_json::Value) -> TaskAssignment {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    TaskAssignment {
        run: RunRef {
            namespace: "fence".into(),
            name: name.into(),
            uid: format!("{:08x}-{n:04}", std::process::id()),
        },
        task: serde_json::from_value(task).unwrap(),
        env: Vec::new(),
        work_dir: None,
        cancel: false,
        run_as_root: false,
    }
}

fn nobody() -> TaskUser {
    TaskUser {
        name: "nobody".into(),
        uid: NOBODY_ID,
        gid: NOBODY_ID,
    }
}

/// A context whose work root the task user can reach (the temp dir is
/// made 0711, like the agent's data dir).
fn mk_ctx(root: &Path) -> TaskContext {
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711)).unwrap();
    let mut ctx = TaskContext::new("fence-node", root.join("runs"));
    ctx.kill_grace = Duration::from_millis(500);
    ctx.task_user = Some(nobody());
    ctx
}

async fn run(assignment: &TaskAssignment, ctx: &TaskContext) -> (TaskOutcome, String) {
    let (tx, mut rx) = mpsc::channel::<OutputLine>(64);
    let collect = tokio::spawn(async move {
        let mut text = String::new();
        while let Some(line) = rx.recv().await {
            text.push_str(&line.text);
            text.push('\n');
        }
        text
    });
    let outcome = tokio::time::timeout(
        BOUND,
        run_task(assignment, ctx, CancellationToken::new(), tx),
    )
    .await
    .expect("the run ends");
    (outcome, collect.await.unwrap())
}

fn skip_unless_root() -> bool {
    if agent_is_root() {
        return false;
    }
    eprintln!("not root: cannot start processes as another user; fence tests skipped");
    true
}

#[tokio::test]
async fn a_task_runs_as_the_task_user_with_its_own_home_and_no_agent_environment() {
    if skip_unless_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ctx = mk_ctx(root.path());
    let secret_dir = root.path().join("agent-only");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("token"), "veil_node_secret").unwrap();
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let script = format!(
        "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); echo home=$HOME; stat -c 'home-owner=%u mode=%a' \"$HOME\"; env | cut -d= -f1 | sort | tr '\\n' ' '; echo; cat {}/token || echo denied",
        secret_dir.display()
    );
    let assignment = mk_assignment(
        "as-nobody",
        json!({"executor": "shell", "shell": {"script": script}}),
    );
    let (outcome, log) = run(&assignment, &ctx).await;
    assert_eq!(outcome.phase, TaskRunPhase::Succeeded, "{log}");
    assert!(
        log.contains("uid=65534 gid=65534 groups=65534\n"),
        "no other groups:\n{log}"
    );
    assert!(
        log.contains("running as the task user nobody (uid 65534"),
        "{log}"
    );
    assert!(log.contains("home-owner=65534 mode=700"), "{log}");
    assert!(
        log.contains("/fence/as-nobody-"),
        "HOME in the work dir:\n{log}"
    );
    assert!(
        log.contains("Permission denied") && log.contains("denied"),
        "{log}"
    );
    assert!(!log.contains("veil_node_secret"), "{log}");
    let names = log
        .lines()
        .find(|l| l.contains("HOME ") && l.contains("PATH "))
        .unwrap_or_else(|| panic!("no env listing:\n{log}"));
    for name in names.split_whitespace() {
        assert!(
            ["HOME", "PATH", "LANG", "PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
            "`{name}` leaked into the task's environment: {names}"
        );
    }
}

#[tokio::test]
async fn a_run_as_root_assignment_runs_as_the_agent_and_says_so() {
    if skip_unless_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ctx = mk_ctx(root.path());
    let mut assignment = mk_assignment(
        "as-root",
        json!({"executor": "shell", "shell": {"script": "echo uid=$(id -u)"}}),
    );
    assignment.run_as_root = true;
    let (outcome, log) = run(&assignment, &ctx).await;
    assert_eq!(outcome.phase, TaskRunPhase::Succeeded, "{log}");
    assert!(log.contains("uid=0\n"), "{log}");
    assert!(
        log.contains("running as root: the Runner sets runAsRoot"),
        "{log}"
    );
}

#[tokio::test]
async fn a_tool_the_task_user_cannot_reach_fails_naming_the_directory() {
    if skip_unless_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut ctx = mk_ctx(root.path());
    let private = root.path().join("private-tools");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let tool = private.join("veil-fence-tool");
    std::fs::write(&tool, "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    ctx.capabilities = vec![Capability {
        name: "veil-fence-tool".into(),
        path: tool.to_string_lossy().into_owned(),
        version: None,
    }];
    let assignment = mk_assignment(
        "unreachable",
        json!({"executor": "shell", "shell": {"command": ["veil-fence-tool"]}}),
    );
    let (outcome, log) = run(&assignment, &ctx).await;
    assert_eq!(outcome.reason.as_deref(), Some("ExecutorMissing"), "{log}");
    let message = outcome.message.unwrap();
    assert!(
        message.contains(&format!("`{}` is not searchable", private.display()))
            && message.contains("runAsRoot"),
        "{message}"
    );
    assert!(!log.contains("\nran\n"), "{log}");
}

#[tokio::test]
async fn hostile_repository_input_that_skipped_validation_never_reaches_git() {
    let root = tempfile::tempdir().unwrap();
    let ctx = TaskContext::new("fence-node", root.path().join("runs"));
    let marker = root.path().join("pwned");
    let cases = [
        json!({"url": format!("ext::sh -c touch% {}", marker.display()), "allowInsecure": true}),
        json!({"url": "https://example.invalid/r.git", "ref": format!("--upload-pack=touch {}", marker.display())}),
        json!({"url": format!("file://{}", root.path().display())}),
    ];
    for repository in cases {
        let assignment = mk_assignment(
            "hostile",
            json!({"executor": "shell", "shell": {"command": ["true"]}, "repository": repository}),
        );
        let (outcome, log) = run(&assignment, &ctx).await;
        assert_eq!(
            outcome.reason.as_deref(),
            Some("InvalidTask"),
            "{repository}: {log}"
        );
        assert!(
            !log.contains("checking out"),
            "{repository}: git started:\n{log}"
        );
    }
    assert!(!marker.exists());
}
