//! The task driver against real processes: `sh`, `git`, `ansible-playbook`
//! and `tofu`.
//!
//! `ansible-playbook` and `tofu` come from `make env` (`scripts/env-tools.sh`):
//! they are looked up on `PATH`, then in `$VEIL_CACHE/bin`; when absent the
//! tests that need them fail, saying to run `make env`. Every await is
//! bounded, so a regression fails instead of hanging. Liveness is read from
//! `/proc` (zombies count as dead).
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use veil_agent::capabilities::detect_in;
use veil_agent::drivers::task::{DRIVER_LINE_PREFIX, RunDir, TaskContext, TaskOutcome, run_task};
use veil_agent::supervisor::{OutputLine, Stream};
use veil_crds::task_run::TaskRunPhase;
use veil_crds::wire::{Capability, ResolvedEnv, RunRef, SecretValue, TaskAssignment};

const BOUND: Duration = Duration::from_secs(60);
/// ansible and tofu start slowly on a busy two-core machine.
const TOOL_BOUND: Duration = Duration::from_secs(300);

async fn within<T>(what: &str, bound: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn mk_assignment(name: &str, task: serde_json::Value) -> TaskAssignment {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    TaskAssignment {
        run: RunRef {
            namespace: "test".into(),
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

fn with_env(mut assignment: TaskAssignment, env: &[(&str, &str)]) -> TaskAssignment {
    assignment.env = env
        .iter()
        .map(|(name, value)| ResolvedEnv {
            name: (*name).into(),
            value: SecretValue((*value).into()),
        })
        .collect();
    assignment
}

fn mk_ctx(root: &Path) -> TaskContext {
    let mut ctx = TaskContext::new("test-node", root.join("runs"));
    ctx.kill_grace = Duration::from_millis(500);
    ctx
}

/// Runs to completion, collecting every line.
async fn run(
    assignment: &TaskAssignment,
    ctx: &TaskContext,
    bound: Duration,
) -> (TaskOutcome, Vec<OutputLine>) {
    let (tx, mut rx) = mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        lines
    });
    let outcome = within(
        "the run",
        bound,
        run_task(assignment, ctx, CancellationToken::new(), tx),
    )
    .await;
    (outcome, collect.await.unwrap())
}

fn texts(lines: &[OutputLine]) -> Vec<&str> {
    lines.iter().map(|l| l.text.as_str()).collect()
}

fn has_line(lines: &[OutputLine], want: &str) -> bool {
    lines.iter().any(|l| l.text.contains(want))
}

fn assert_phase(
    outcome: &TaskOutcome,
    lines: &[OutputLine],
    phase: TaskRunPhase,
    reason: Option<&str>,
) {
    assert_eq!(
        (outcome.phase, outcome.reason.as_deref()),
        (phase, reason),
        "message: {:?}\nlog:\n{}",
        outcome.message,
        texts(lines).join("\n")
    );
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

async fn assert_all_dead(pids: &[u32]) {
    assert!(!pids.is_empty(), "no pid to check");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let survivors: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(survivors.is_empty(), "processes survived: {survivors:?}");
}

fn pids_in(lines: &[OutputLine]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| l.text.strip_prefix("pid "))
        .map(|p| p.trim().parse().unwrap())
        .collect()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=veil",
            "-c",
            "user.email=veil@example.invalid",
        ])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One commit for [`mk_repo`]: files written (path, contents), then an optional tag.
type Commit<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);

/// A bare repository at `<root>/repo.git` whose commits each write their
/// files; returns its `file://` URL and the commit ids, oldest first.
fn mk_repo(root: &Path, commits: &[Commit<'_>]) -> (String, Vec<String>) {
    let work = root.join("repo-work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    let mut ids = Vec::new();
    for (files, tag) in commits {
        for (name, contents) in *files {
            let path = work.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "change"]);
        if let Some(tag) = tag {
            git(&work, &["tag", "-a", tag, "-m", tag]);
        }
        ids.push(git(&work, &["rev-parse", "HEAD"]));
    }
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
    (format!("file://{}", bare.display()), ids)
}

/// A tool from `make env`: on PATH or in `$VEIL_CACHE/bin`, else a failure.
async fn required_tool(name: &str) -> Capability {
    let cache = std::env::var_os("VEIL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/veil"));
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    dirs.push(cache.join("bin"));
    let search = std::env::join_paths(dirs).unwrap();
    detect_in(&search)
        .await
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH nor in {}/bin: run `make env`",
                cache.display()
            )
        })
}

#[tokio::test]
async fn command_line_printed_before_exit_arrives_while_the_command_runs() {
    let root = tempfile::tempdir().unwrap();
    let ctx = mk_ctx(root.path());
    let assignment = mk_assignment(
        "early-line",
        json!({"executor": "shell", "shell": {"command": ["sh", "-c", "echo ready; exec sleep 300"]}}),
    );
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = {
        let (assignment, ctx, cancel) = (assignment.clone(), ctx.clone(), cancel.clone());
        tokio::spawn(async move { run_task(&assignment, &ctx, cancel, tx).await })
    };
    loop {
        let line = within("the first line", BOUND, rx.recv()).await.unwrap();
        if line.text == "ready" {
            assert_eq!(line.stream, Stream::Stdout);
            break;
        }
        assert!(
            line.text.starts_with(DRIVER_LINE_PREFIX),
            "unexpected line {line:?}"
        );
    }
    assert!(
        !task.is_finished(),
        "the line must arrive while the process runs"
    );
    cancel.cancel();
    let outcome = within("the cancelled run", BOUND, task).await.unwrap();
    assert_eq!(outcome.phase, TaskRunPhase::Cancelled);
    assert_eq!(outcome.reason.as_deref(), Some("Cancelled"));
    assert_eq!(outcome.exit_code, None);
}

#[tokio::test]
async fn script_runs_through_sh_and_succeeds_with_exit_code_zero() {
    let root = tempfile::tempdir().unwrap();
    let assignment = mk_assignment(
        "script",
        json!({"executor": "shell", "shell": {"script": "echo $((40 + 2)) | tr 4 x"}}),
    );
    let (outcome, lines) = run(&assignment, &mk_ctx(root.path()), BOUND).await;
    assert_phase(&outcome, &lines, TaskRunPhase::Succeeded, None);
    assert_eq!(outcome.exit_code, Some(0));
    assert!(has_line(&lines, "x2"), "{:?}", texts(&lines));
    assert!(outcome.finished_at >= outcome.started_at);
    let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
    assert_eq!(
        seqs,
        (0..lines.len() as u64).collect::<Vec<_>>(),
        "gap-free numbering"
    );
}

#[tokio::test]
async fn stderr_is_captured_and_non_zero_exit_fails_with_its_code() {
    let root = tempfile::tempdir().unwrap();
    let assignment = mk_assignment(
        "fails",
        json!({"executor": "shell", "shell": {"script": "echo broken >&2; exit 3"}}),
    );
    let (outcome, lines) = run(&assignment, &mk_ctx(root.path()), BOUND).await;
    assert_phase(&outcome, &lines, TaskRunPhase::Failed, Some("NonZeroExit"));
    assert_eq!(outcome.exit_code, Some(3));
    assert!(outcome.message.as_deref().unwrap().contains("code 3"));
    let broken = lines.iter().find(|l| l.text == "broken").unwrap();
    assert_eq!(broken.stream, Stream::Stderr);
}

#[tokio::test]
async fn timeout_kills_the_whole_process_tree() {
    let root = tempfile::tempdir().unwrap();
    let assignment = mk_assignment(
        "slow",
        json!({"executor": "shell", "timeoutSeconds": 1,
               "shell": {"script": "sleep 300 & echo pid $!; echo pid $$; sleep 300"}}),
    );
    let started = Instant::now();
    let (outcome, lines) = run(&assignment, &mk_ctx(root.path()), BOUND).await;
    assert_phase(&outcome, &lines, TaskRunPhase::Failed, Some("Timeout"));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(outcome.exit_code, None);
    assert_all_dead(&pids_in(&lines)).await;
}

#[tokio::test]
async fn cancellation_kills_the_tree_and_a_cancelled_run_never_starts() {
    let root = tempfile::tempdir().unwrap();
    let ctx = mk_ctx(root.path());
    let assignment = mk_assignment(
        "cancel",
        json!({"executor": "shell", "shell": {"script": "sleep 300 & echo pid $!; echo started; wait"}}),
    );
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = {
        let (assignment, ctx, cancel) = (assignment.clone(), ctx.clone(), cancel.clone());
        tokio::spawn(async move { run_task(&assignment, &ctx, cancel, tx).await })
    };
    let mut lines = Vec::new();
    while !has_line(&lines, "started") {
        lines.push(within("a line", BOUND, rx.recv()).await.unwrap());
    }
    cancel.cancel();
    let outcome = within("the cancelled run", BOUND, task).await.unwrap();
    assert_phase(&outcome, &lines, TaskRunPhase::Cancelled, Some("Cancelled"));
    assert_all_dead(&pids_in(&lines)).await;

    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let (tx, _rx) = mpsc::channel(64);
    let never = mk_assignment(
        "never-started",
        json!({"executor": "shell", "shell": {"script": "true"}}),
    );
    let outcome = run_task(&never, &ctx, cancelled, tx).await;
    assert_eq!(outcome.phase, TaskRunPhase::Cancelled);
    let dir = RunDir::path_for(&ctx.work_root, &never.run).unwrap();
    assert!(!dir.exists(), "nothing was created");
}

#[tokio::test]
async fn missing_executor_names_the_node_and_the_tool_before_anything_runs() {
    let root = tempfile::tempdir().unwrap();
    let ctx = mk_ctx(root.path());
    let cases = [
        (
            "missing-ansible",
            json!({"executor": "ansible", "ansible": {"playbook": "site.yml"}}),
            "`ansible-playbook`",
        ),
        (
            "missing-terraform",
            json!({"executor": "terraform", "terraform": {}}),
            "`tofu or terraform`",
        ),
        (
            "missing-program",
            json!({"executor": "shell", "shell": {"command": ["veil-no-such-tool"]}}),
            "`veil-no-such-tool`",
        ),
        (
            "missing-git",
            json!({"executor": "shell", "shell": {"script": "true"},
            "repository": {"url": "file:///nowhere.git", "allowInsecure": true}}),
            "`git`",
        ),
    ];
    for (name, task, tool) in cases {
        // The run's own PATH points nowhere, so nothing can be found.
        let assignment = with_env(mk_assignment(name, task), &[("PATH", "/veil-empty-path")]);
        let (outcome, lines) = run(&assignment, &ctx, BOUND).await;
        assert_phase(
            &outcome,
            &lines,
            TaskRunPhase::Failed,
            Some("ExecutorMissing"),
        );
        let message = outcome.message.unwrap();
        assert!(
            message.contains(tool) && message.contains("`test-node`"),
            "{name}: {message}"
        );
    }
    assert!(
        !ctx.work_root.join("test").exists(),
        "no work dir for a run that cannot start"
    );
}

#[tokio::test]
async fn secret_env_reaches_the_process_but_no_message_or_driver_line() {
    const SECRET: &str = "s3cr3t-token-value";
    let root = tempfile::tempdir().unwrap();
    let ctx = mk_ctx(root.path());
    let script = r#"[ "$API_TOKEN" = "s3cr3t-token-value" ] && echo token-arrived; echo "echoed: $API_TOKEN"; exit 4"#;
    let assignment = with_env(
        mk_assignment(
            "secret",
            json!({"executor": "shell", "shell": {"script": script}}),
        ),
        &[("API_TOKEN", SECRET)],
    );
    let (outcome, lines) = run(&assignment, &ctx, BOUND).await;
    assert_phase(&outcome, &lines, TaskRunPhase::Failed, Some("NonZeroExit"));
    assert!(has_line(&lines, "token-arrived"), "{:?}", texts(&lines));
    assert!(
        has_line(&lines, "echoed: ***"),
        "the process's own echo is masked"
    );

    // Credentials in a repository URL: reported nowhere either.
    let task = json!({"executor": "shell", "shell": {"script": "true"},
        "repository": {"url": format!("https://veil:{SECRET}@127.0.0.1:9/repo.git"), "ref": "main"}});
    let checkout = with_env(mk_assignment("secret-url", task), &[("API_TOKEN", SECRET)]);
    let (checkout_outcome, checkout_lines) = run(&checkout, &ctx, BOUND).await;
    assert_phase(
        &checkout_outcome,
        &checkout_lines,
        TaskRunPhase::Failed,
        Some("CheckoutFailed"),
    );
    assert!(
        checkout_outcome
            .message
            .as_deref()
            .unwrap()
            .contains("https://127.0.0.1:9/repo.git")
    );

    for (outcome, lines) in [(&outcome, &lines), (&checkout_outcome, &checkout_lines)] {
        let message = outcome.message.as_deref().unwrap();
        assert!(!message.contains(SECRET), "secret in message: {message}");
        for line in lines.iter() {
            assert!(!line.text.contains(SECRET), "secret in line: {}", line.text);
        }
    }
}

#[tokio::test]
async fn repository_is_checked_out_at_a_tag_a_commit_or_a_branch() {
    let root = tempfile::tempdir().unwrap();
    let (url, ids) = mk_repo(
        root.path(),
        &[
            (&[("VERSION", "one\n")], Some("v1.0")),
            (&[("VERSION", "two\n")], None),
        ],
    );
    let ctx = mk_ctx(root.path());
    for (reference, want) in [
        (Some("v1.0"), "one"),
        (Some(ids[0].as_str()), "one"),
        (Some(&ids[0][..10]), "one"),
        (Some("main"), "two"),
        (None, "two"),
    ] {
        let task = json!({"executor": "shell", "shell": {"command": ["cat", "VERSION"]},
            "repository": {"allowInsecure": true, "url": url, "ref": reference}});
        let (outcome, lines) = run(&mk_assignment("checkout", task), &ctx, BOUND).await;
        assert_phase(&outcome, &lines, TaskRunPhase::Succeeded, None);
        assert!(
            texts(&lines).contains(&want),
            "{reference:?}: {:?}",
            texts(&lines)
        );
    }

    let task = json!({"executor": "shell", "shell": {"command": ["true"]},
        "repository": {"allowInsecure": true, "url": url, "ref": "no-such-branch"}});
    let (outcome, lines) = run(&mk_assignment("bad-ref", task), &ctx, BOUND).await;
    assert_phase(
        &outcome,
        &lines,
        TaskRunPhase::Failed,
        Some("CheckoutFailed"),
    );
    let message = outcome.message.unwrap();
    assert!(
        message.contains("no-such-branch") && message.contains("git fetch"),
        "{message}"
    );
}

#[tokio::test]
async fn work_dir_is_private_fresh_and_removed_unless_kept() {
    let root = tempfile::tempdir().unwrap();
    let mut ctx = mk_ctx(root.path());
    let task =
        json!({"executor": "shell", "shell": {"script": "pwd; stat -c %a .; ls -A | wc -l"}});
    let assignment = mk_assignment("workdir", task);
    let (outcome, lines) = run(&assignment, &ctx, BOUND).await;
    assert_phase(&outcome, &lines, TaskRunPhase::Succeeded, None);
    let dir = PathBuf::from(
        lines
            .iter()
            .find(|l| l.text.starts_with('/'))
            .unwrap()
            .text
            .clone(),
    );
    assert!(
        dir.starts_with(ctx.work_root.join("test")),
        "{}",
        dir.display()
    );
    assert!(texts(&lines).contains(&"700"));
    assert!(
        texts(&lines).contains(&"1"),
        "the dir starts with only the run's HOME in it"
    );
    assert!(!dir.exists(), "removed after the run");

    ctx.keep_work_dirs = true;
    let mut elsewhere = assignment.clone();
    elsewhere.work_dir = Some(
        root.path()
            .join("runner-dir")
            .to_string_lossy()
            .into_owned(),
    );
    let (outcome, lines) = run(&elsewhere, &ctx, BOUND).await;
    assert_phase(&outcome, &lines, TaskRunPhase::Succeeded, None);
    let dir = PathBuf::from(
        lines
            .iter()
            .find(|l| l.text.starts_with('/'))
            .unwrap()
            .text
            .clone(),
    );
    assert!(
        dir.starts_with(root.path().join("runner-dir")),
        "{}",
        dir.display()
    );
    assert!(dir.exists(), "kept for debugging");
}

#[tokio::test]
async fn ansible_playbook_runs_against_localhost() {
    let ansible = required_tool("ansible-playbook").await;
    let root = tempfile::tempdir().unwrap();
    let playbook = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: say hello
      ansible.builtin.debug:
        msg: "hello from {{ who }}"
    - name: run a command
      ansible.builtin.command: echo command-ran
      register: out
    - ansible.builtin.debug:
        var: out.stdout
"#;
    let (url, _) = mk_repo(root.path(), &[(&[("playbooks/site.yml", playbook)], None)]);
    let mut ctx = mk_ctx(root.path());
    ctx.capabilities.push(ansible);
    let task = json!({"executor": "ansible", "repository": {"allowInsecure": true, "url": url},
        "ansible": {"playbook": "playbooks/site.yml", "extraVars": {"who": "veil tests"}}});
    let (outcome, lines) = run(&mk_assignment("ansible", task), &ctx, TOOL_BOUND).await;
    assert_phase(&outcome, &lines, TaskRunPhase::Succeeded, None);
    assert!(
        has_line(&lines, "hello from veil tests"),
        "{:?}",
        texts(&lines)
    );
    assert!(has_line(&lines, "command-ran"));
    assert!(has_line(&lines, "ok=3"), "PLAY RECAP: {:?}", texts(&lines));
}

#[tokio::test]
async fn tofu_init_and_apply_of_terraform_data_completes() {
    let tofu = required_tool("tofu").await;
    let root = tempfile::tempdir().unwrap();
    let config = r#"
variable "greeting" {
  type = string
}

resource "terraform_data" "example" {
  input = var.greeting
}

output "greeting" {
  value = terraform_data.example.output
}
"#;
    let (url, _) = mk_repo(root.path(), &[(&[("infra/main.tf", config)], None)]);
    let mut ctx = mk_ctx(root.path());
    ctx.capabilities.push(tofu);
    let task = json!({"executor": "terraform", "repository": {"allowInsecure": true, "url": url},
        "terraform": {"dir": "infra", "action": "apply", "vars": {"greeting": "hello tofu"}}});
    let (outcome, lines) = run(&mk_assignment("tofu", task), &ctx, TOOL_BOUND).await;
    assert_phase(&outcome, &lines, TaskRunPhase::Succeeded, None);
    assert!(has_line(&lines, "Apply complete!"), "{:?}", texts(&lines));
    assert!(has_line(&lines, "greeting = \"hello tofu\""));
    assert!(ctx.work_root.join(".cache/terraform-plugins").is_dir());
}
