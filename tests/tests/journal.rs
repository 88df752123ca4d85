//! The agent's report journal under bounds and failure, with real
//! processes: a 10 MB task output, a report the operator refuses, and an
//! agent whose data dir is a tmpfs that fills up (root: `mount`).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use veil_crds::wire::MAX_REPORT_BYTES;
use veil_e2e::process::{Agent, AgentOptions, Operator, OperatorOptions, free_port};
use veil_e2e::refusing_proxy::RefusingProxy;
use veil_e2e::tmpfs::Tmpfs;
use veil_e2e::xray::{ALLOW_CIDRS, ByteServer, ClientSettings, RealityDest, XrayClient, download};

const WAIT: Duration = Duration::from_secs(90);

fn write(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

fn runner(work_dir: Option<&Path>) -> String {
    let work_dir = work_dir.map_or(String::new(), |d| format!("  workDir: {}\n", d.display()));
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: Runner\nmetadata:\n  name: all\nspec:\n  nodeSelector: {{}}\n  maxParallelTasks: 2\n  executors: [shell]\n{work_dir}"
    )
}

fn shell_run(name: &str, script: &str) -> String {
    let script: String = script.lines().map(|l| format!("        {l}\n")).collect();
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: TaskRun\nmetadata:\n  name: {name}\nspec:\n  task:\n    executor: shell\n    shell:\n      script: |\n{script}"
    )
}

async fn operator(dir: &Path) -> Operator {
    Operator::start_with(
        dir,
        OperatorOptions {
            extra_args: vec!["--heartbeat-interval".into(), "1".into()],
            ..OperatorOptions::default()
        },
    )
    .await
}

fn address(op: &Operator) -> SocketAddr {
    op.url.trim_start_matches("https://").parse().unwrap()
}

async fn finished(op: &Operator, name: &str) -> Value {
    op.eventually(&format!("{name} finished"), WAIT, || async {
        op.object("taskruns", name).await.filter(|r| {
            ["Succeeded", "Failed", "Cancelled"]
                .iter()
                .any(|p| r["status"]["phase"] == *p)
        })
    })
    .await
}

/// Writes a shell TaskRun `name` into `dir` and waits for it to succeed.
async fn run_succeeds(op: &Operator, dir: &Path, name: &str, script: &str, agent: &Agent) {
    write(dir, &format!("{name}.yaml"), &shell_run(name, script));
    let run = finished(op, name).await;
    assert_eq!(
        run["status"]["phase"],
        "Succeeded",
        "{run}\n{}",
        agent.log()
    );
}

async fn log_text(op: &Operator, name: &str) -> String {
    let (status, body) = op.api(&format!("/v1/logs/taskruns/default/{name}")).await;
    assert_eq!(status, 200, "{body}");
    body["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap_or_default())
        .collect()
}

/// Journal entries waiting on disk (not the `rejected/` ones).
fn journal_entries(agent: &Agent) -> usize {
    std::fs::read_dir(agent.data_dir.join("journal"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_task_output_reaches_the_store_in_several_capped_reports() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "runner.yaml", &runner(None));
    let op = operator(dir.path()).await;
    // Counts the reports and their sizes; refuses nothing.
    let proxy = RefusingProxy::start(address(&op), &op.ca_file, "never-in-a-report-7f3a").await;
    let agent = Agent::start_with(
        &op,
        "big-1",
        &[],
        &AgentOptions {
            operator_url: Some(proxy.url.clone()),
            ..AgentOptions::default()
        },
    );
    // 1,000 lines of 10,000 bytes, as fast as the shell can print them.
    let script = "line=$(printf '%10000s' '' | tr ' ' a)\ni=0\nwhile [ $i -lt 1000 ]; do echo \"$line\"; i=$((i+1)); done\necho big-done\n";
    run_succeeds(&op, dir.path(), "big-output", script, &agent).await;
    // Later work is not stuck behind it.
    run_succeeds(&op, dir.path(), "after-big", "echo after-ok\n", &agent).await;
    let log = op
        .eventually("the whole big log", WAIT, || async {
            let log = log_text(&op, "big-output").await;
            log.ends_with("big-done\n").then_some(log)
        })
        .await;
    // The driver adds lines of its own; the task's are all there, or cut with a marker.
    let marker = log.contains("bytes dropped by the agent journal limit");
    let full_lines = log
        .lines()
        .filter(|l| l.len() == 10_000 && l.bytes().all(|b| b == b'a'))
        .count();
    assert!(
        marker || full_lines == 1_000,
        "the output or its truncation marker: {full_lines} full lines in {} bytes",
        log.len()
    );
    assert!(log_text(&op, "after-big").await.contains("after-ok"));
    assert!(
        proxy.largest_report() <= MAX_REPORT_BYTES as u64,
        "largest report {} bytes",
        proxy.largest_report()
    );
    assert!(proxy.reports() >= 10, "{} reports", proxy.reports());
    op.eventually("an empty journal", WAIT, || async {
        (journal_entries(&agent) == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_the_operator_refuses_does_not_block_the_ones_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "runner.yaml", &runner(None));
    let op = operator(dir.path()).await;
    let proxy = RefusingProxy::start(address(&op), &op.ca_file, "REFUSE-ME").await;
    let agent = Agent::start_with(
        &op,
        "refused-1",
        &[],
        &AgentOptions {
            operator_url: Some(proxy.url.clone()),
            ..AgentOptions::default()
        },
    );
    // The marker is built by the shell: the assignment (passed on) does not contain it.
    let script = "echo REFUSE-$(echo ME)\nsleep 1\necho after-refused\n";
    run_succeeds(&op, dir.path(), "refused", script, &agent).await;
    run_succeeds(&op, dir.path(), "behind", "echo behind-ok\n", &agent).await;
    let log = op
        .eventually("the output after the refused chunk", WAIT, || async {
            let log = log_text(&op, "refused").await;
            log.contains("after-refused").then_some(log)
        })
        .await;
    assert!(!log.contains("REFUSE-ME"), "{log}");
    assert!(proxy.refused() >= 1);
    let rejected = std::fs::read_dir(agent.data_dir.join("journal").join("rejected"))
        .unwrap()
        .count();
    assert_eq!(rejected, 1, "the refused chunk is kept aside once");
    let agent_log = agent.log();
    assert!(
        agent_log.contains("set aside") && !agent_log.contains("REFUSE-ME"),
        "{agent_log}"
    );
    op.eventually("an empty journal", WAIT, || async {
        (journal_entries(&agent) == 0).then_some(())
    })
    .await;
}

fn server_yaml(port: u16, dest: &RealityDest) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: ProtocolServer\nmetadata:\n  name: edge\nspec:\n  protocol: vless\n  listen: 127.0.0.1\n  port: {port}\n  allowCidrs: [{}]\n  vless:\n    publicAddress: 127.0.0.1\n    reality:\n      dest: \"{}\"\n      serverNames: [{}]\n      shortIds: [\"\", \"6ba85179e30d4fc2\"]\n",
        ALLOW_CIDRS.join(", "),
        dest.dest(),
        dest.server_name
    )
}

async fn downlink_at_least(op: &Operator, at_least: u64) -> u64 {
    op.eventually(&format!("alice downlink ≥ {at_least}"), WAIT, || async {
        let key = op.object("vlesskeys", "alice").await?;
        let down = key["status"]["downlinkBytes"].as_u64()?;
        (down >= at_least).then_some(down)
    })
    .await
}

async fn journal_condition(op: &Operator, status: &str) -> Value {
    op.eventually(&format!("JournalWritable={status}"), WAIT, || async {
        let node = op.object("veilnodes", "edge-1").await?;
        node["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "JournalWritable" && c["status"] == status)
            .cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_a_full_disk_keeps_reporting_and_its_node_says_so() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("agent");
    let tmpfs = Tmpfs::mount_at(&data_dir, "16m");
    let work = tempfile::tempdir().unwrap();
    let dest = RealityDest::start();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "runner.yaml", &runner(Some(work.path())));
    write(dir.path(), "server.yaml", &server_yaml(free_port(), &dest));
    write(
        dir.path(),
        "alice.yaml",
        "apiVersion: veil.dev/v1alpha1\nkind: VlessKey\nmetadata:\n  name: alice\nspec:\n  serverRef:\n    name: edge\n",
    );
    let op = operator(dir.path()).await;
    std::fs::write(data_dir.join("node.token"), op.create_token("edge-1")).unwrap();
    let options = AgentOptions {
        env: vec![("VEIL_STATS_INTERVAL".into(), "1s".into())],
        ..AgentOptions::default()
    };
    let agent = Agent::restart(&op, "edge-1", &[], (root, data_dir.clone()), &options);
    let bytes = ByteServer::start().await;
    op.eventually("alice Active", WAIT, || async {
        let key = op.object("vlesskeys", "alice").await?;
        (key["status"]["phase"] == "Active").then_some(())
    })
    .await;
    let (status, body) = op.api("/v1/credentials/vlesskeys/default/alice").await;
    assert_eq!(status, 200, "{body}");
    let client = XrayClient::start(&ClientSettings::from_link(body["link"].as_str().unwrap()));
    let chunk = 2 * 1024 * 1024;
    let mut moved = download(&client, bytes.addr, chunk).await.unwrap();
    downlink_at_least(&op, moved).await;
    journal_condition(&op, "True").await;

    // The disk fills up: traffic still reaches the operator. (A task run
    // on the full data dir did not finish in this test: not covered yet.)
    let filler = tmpfs.fill();
    moved += download(&client, bytes.addr, chunk).await.unwrap();
    downlink_at_least(&op, moved).await;
    let condition = journal_condition(&op, "False").await;
    assert_eq!(condition["reason"], "DiskFull", "{condition}");

    // Space comes back: the condition clears, reporting goes on.
    std::fs::remove_file(&filler).unwrap();
    journal_condition(&op, "True").await;
    moved += download(&client, bytes.addr, chunk).await.unwrap();
    downlink_at_least(&op, moved).await;
    drop(client);
    drop(agent);
}
