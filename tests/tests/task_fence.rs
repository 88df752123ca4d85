//! Tasks fenced off the agent, through a real operator and a real agent
//! (running as root, as on a node): a task tries to read the agent's token
//! file, data dir, journal and xray config dir and is denied, unless its
//! Runner sets `runAsRoot` (then the TaskRun's and the Runner's status say
//! so); a PEM key from a Secret is masked line by line; hostile repository
//! URLs and refs are refused at validation.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by design")]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use veil_e2e::process::{Agent, AgentOptions, Operator, OperatorOptions};

const WAIT: Duration = Duration::from_secs(60);

/// Two Runners on the same nodes: `fenced` (the default task user) and
/// `trusted` (`runAsRoot`), told apart by their `trust` label.
const RUNNERS: &str = "apiVersion: veil.dev/v1alpha1\nkind: Runner\nmetadata:\n  name: fenced\n  labels:\n    trust: task\nspec:\n  nodeSelector:\n    matchLabels:\n      role: edge\n  maxParallelTasks: 2\n---\napiVersion: veil.dev/v1alpha1\nkind: Runner\nmetadata:\n  name: trusted\n  labels:\n    trust: root\nspec:\n  nodeSelector:\n    matchLabels:\n      role: edge\n  maxParallelTasks: 2\n  runAsRoot: true\n";

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn start(dir: &Path) -> Operator {
    write(&dir.join("runners.yaml"), RUNNERS);
    Operator::start_with(
        dir,
        OperatorOptions {
            extra_args: vec!["--heartbeat-interval".into(), "1".into()],
            ..Default::default()
        },
    )
    .await
}

fn run_yaml(name: &str, trust: &str, task: &str) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: TaskRun\nmetadata:\n  name: {name}\nspec:\n  runnerSelector:\n    matchLabels:\n      trust: {trust}\n  task:\n{task}"
    )
}

async fn finished(op: &Operator, name: &str) -> (Value, String) {
    let run = op
        .eventually(&format!("{name} finished"), WAIT, || async {
            op.object("taskruns", name).await.filter(|r| {
                ["Succeeded", "Failed"]
                    .iter()
                    .any(|p| r["status"]["phase"] == *p)
            })
        })
        .await;
    let out = op.cli(&["logs", "taskrun", name]);
    (run, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A script that tries each of the agent's secrets and says what it got.
fn prying_script(agent: &Agent) -> String {
    let data = agent.data_dir.display();
    format!(
        "cat {data}/node.token >/dev/null && echo got-token; ls {data} >/dev/null && echo listed-data-dir; ls {data}/journal >/dev/null && echo listed-journal; ls {data}/servers >/dev/null && echo listed-xray-configs; echo uid=$(id -u) groups=$(id -G); echo home=$HOME; echo canary=${{VEIL_FENCE_CANARY:-unset}}"
    )
}

#[tokio::test]
async fn a_task_cannot_read_the_agent_token_or_data_dir_unless_its_runner_runs_as_root() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path()).await;
    let options = AgentOptions {
        env: vec![("VEIL_FENCE_CANARY".into(), "agent-environment".into())],
        ..AgentOptions::default()
    };
    let agent = Agent::start_with(&op, "edge-f", &["role=edge"], &options);
    let script = prying_script(&agent);
    let task = format!("    executor: shell\n    shell:\n      script: \"{script}\"\n");

    write(
        &dir.path().join("fenced.yaml"),
        &run_yaml("pry", "task", &task),
    );
    let (run, log) = finished(&op, "pry").await;
    assert_eq!(run["status"]["phase"], "Succeeded", "{run}\n{log}");
    for got in [
        "got-token",
        "listed-data-dir",
        "listed-journal",
        "listed-xray-configs",
    ] {
        assert!(!log.contains(got), "the task user managed `{got}`:\n{log}");
    }
    assert!(
        log.matches("Permission denied").count() >= 4,
        "each attempt shows its permission error:\n{log}"
    );
    assert!(!log.contains("uid=0 "), "not root:\n{log}");
    assert!(log.contains("running as the task user"), "{log}");
    assert!(log.contains("canary=unset"), "no agent environment:\n{log}");
    let home = format!("home={}/runs/default/pry-", agent.data_dir.display());
    assert!(log.contains(&home), "HOME is in the run's work dir:\n{log}");
    assert_eq!(run["status"]["runner"], "fenced", "{run}");
    assert!(run["status"]["runAsRoot"].is_null(), "{run}");

    write(
        &dir.path().join("trusted.yaml"),
        &run_yaml("pry-root", "root", &task),
    );
    let (run, log) = finished(&op, "pry-root").await;
    assert_eq!(run["status"]["phase"], "Succeeded", "{run}\n{log}");
    for got in [
        "got-token",
        "listed-data-dir",
        "listed-journal",
        "listed-xray-configs",
        "uid=0 ",
    ] {
        assert!(log.contains(got), "a runAsRoot task can `{got}`:\n{log}");
    }
    assert!(
        log.contains("canary=unset"),
        "still no agent environment:\n{log}"
    );
    assert_eq!(run["status"]["runAsRoot"], true, "{run}");
    assert_eq!(run["status"]["runner"], "trusted", "{run}");
    let runner = op.object("runners", "trusted").await.unwrap();
    assert_eq!(runner["status"]["runAsRoot"], true, "{runner}");
}

/// A throwaway key-shaped value: base64 lines between PEM armour.
const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nVJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDu\nictGeurT8jNbvJZHtCSuYEvuNMoSfm76oqFvAp8Gy0iz5sxjZmSn\n-----END PRIVATE KEY-----\n";

#[tokio::test]
async fn a_pem_key_from_a_secret_is_masked_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path()).await;
    let indented: String = PEM.lines().map(|l| format!("    {l}\n")).collect();
    write(
        &dir.path().join("secret.yaml"),
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: tls\nstringData:\n  key: |\n{indented}"
        ),
    );
    let _agent = Agent::start(&op, "edge-p", &["role=edge"]);
    let task = "    executor: shell\n    env:\n      - name: TLS_KEY\n        secretKeyRef:\n          name: tls\n          key: key\n    shell:\n      script: \"printf '%s' \\\"$TLS_KEY\\\"; echo printed-key\"\n";
    write(&dir.path().join("run.yaml"), &run_yaml("pem", "task", task));
    let (run, log) = finished(&op, "pem").await;
    assert_eq!(run["status"]["phase"], "Succeeded", "{run}\n{log}");
    assert!(log.contains("printed-key"), "{log}");
    for line in PEM.lines() {
        assert!(!log.contains(line), "`{line}` is in the log:\n{log}");
    }
    assert!(!run["status"].to_string().contains("MIIEvQ"), "{run}");
}

#[tokio::test]
async fn an_ext_url_and_an_option_like_ref_are_refused_at_validation() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path()).await;
    let marker = dir.path().join("pwned");
    let cases = [
        (
            "ext-url",
            format!("ext::sh -c touch% {}", marker.display()),
            "main".to_owned(),
            "spec.task.repository.url",
        ),
        (
            "dash-ref",
            "https://example.invalid/repo.git".to_owned(),
            format!("--upload-pack=touch {}", marker.display()),
            "spec.task.repository.ref",
        ),
    ];
    for (name, url, reference, field) in cases {
        let task = format!(
            "    executor: shell\n    repository:\n      url: \"{url}\"\n      ref: \"{reference}\"\n      allowInsecure: true\n    shell:\n      command: [\"true\"]\n"
        );
        let file = dir.path().join(format!("{name}.yaml"));
        write(&file, &run_yaml(name, "task", &task));
        let errors = op
            .eventually(&format!("{name} refused"), WAIT, || async {
                let errors = op.errors().await;
                (!errors.is_empty()).then_some(errors)
            })
            .await;
        let text = Value::Array(errors).to_string();
        assert!(text.contains(field), "{name}: {text}");
        assert!(
            op.object("taskruns", name).await.is_none(),
            "{name} was loaded"
        );
        std::fs::remove_file(&file).unwrap();
        op.eventually("errors cleared", WAIT, || async {
            op.errors().await.is_empty().then_some(())
        })
        .await;
    }
    assert!(!marker.exists(), "nothing ran");
}
