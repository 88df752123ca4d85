//! A node may only touch what is its own (issue 13), performed against a
//! real `veil-operator` over real HTTP:
//! - node A forges a log chunk for node B's run and traffic for a server
//!   assigned to B: 403, nothing stored, B's reports still accepted; an
//!   `i64::MAX` counter is refused and does not poison B's stream;
//! - an agent claiming `--label role=edge` receives no task and no server
//!   keys until its VeilNode carries the label;
//! - a flood of bad tokens is answered 429 while a good agent keeps working;
//!   a body above the limit is 413.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by design")]

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use veil_e2e::process::{Agent, AgentOptions, Operator, free_port};
use veil_e2e::xray::edge_server_yaml;

const WAIT: Duration = Duration::from_secs(30);

fn write(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

const RUNNER: &str = "apiVersion: veil.dev/v1alpha1
kind: Runner
metadata: {name: edge}
spec:
  nodeSelector: {matchLabels: {role: edge}}
  maxParallelTasks: 2
  executors: [shell]
";

const KEY: &str = "apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {name: alice}
spec:
  serverRef: {name: edge}
";

const RUN: &str = "apiVersion: veil.dev/v1alpha1
kind: TaskRun
metadata: {name: job}
spec:
  task:
    executor: shell
    shell: {script: \"true\"}
";

/// `POST`s `body` (or `GET`s) `path` with `token`: status and JSON body.
async fn call(op: &Operator, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let client = op.client();
    let url = format!("{}/v1/agent/{path}", op.url);
    let request = match body {
        Some(body) => client.post(url).json(&body),
        None => client.get(url),
    };
    let response = request.bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Posts a 9 MiB report body; the status the operator answers with. The
/// body is written by a task of its own, whose write errors are expected:
/// the operator answers 413 once the limit is passed and closes without
/// reading the rest.
async fn oversized_report_status(op: &Operator, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = op
        .url
        .strip_prefix("https://")
        .expect("https URL")
        .to_owned();
    let stream = op.tls_stream().await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let size = 9 * 1024 * 1024;
    let head = format!(
        "POST /v1/agent/report HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    );
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(&vec![b' '; size]).await
    });
    let mut answer = vec![0_u8; 512];
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), reader.read(&mut answer))
        .await
        .expect("an answer to the oversized report")
        .unwrap();
    sender.abort();
    let line = String::from_utf8_lossy(&answer[..read]).into_owned();
    line.split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {line:?}"))
}

fn registration(node: &str, labels: Value) -> Value {
    json!({
        "node": node, "os": "linux", "arch": "x86_64", "agentVersion": "test",
        "labels": labels,
        "capabilities": [{"name": "sh", "path": "/bin/sh"}],
    })
}

/// `node`'s whole assignment (revision 0 when none was published).
async fn assignment(op: &Operator, token: &str) -> Value {
    match call(op, "assignment?after=0&wait=0", token, None).await {
        (200, body) => body,
        (204, _) => json!({"revision": 0, "tasks": [], "servers": []}),
        (status, body) => panic!("assignment: {status} {body}"),
    }
}

fn len(value: &Value) -> usize {
    value.as_array().map_or(0, Vec::len)
}

fn report(node: &str, seq: u64, extra: Value) -> Value {
    let mut body = json!({"node": node, "seq": seq, "appliedRevision": 0});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

async fn key_uplink(op: &Operator) -> u64 {
    op.object("vlesskeys", "alice").await.unwrap()["status"]["uplinkBytes"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_node_cannot_write_another_nodes_run_logs_or_traffic() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "runner.yaml", RUNNER);
    write(dir.path(), "server.yaml", &edge_server_yaml(free_port()));
    write(dir.path(), "key.yaml", KEY);
    let op = Operator::start(dir.path()).await;
    op.declare_node_labels("node-b", &["role=edge"]);
    let a = op.create_token("node-a");
    let b = op.create_token("node-b");
    // A claims the label B was given: it gets nothing for it.
    let claimed = registration("node-a", json!({"role": "edge"}));
    assert_eq!(call(&op, "register", &a, Some(claimed)).await.0, 200);
    let own = registration("node-b", json!({}));
    assert_eq!(call(&op, "register", &b, Some(own)).await.0, 200);
    write(dir.path(), "run.yaml", RUN);

    let given = op
        .eventually("node-b's task and server", WAIT, || async {
            let given = assignment(&op, &b).await;
            (len(&given["tasks"]) == 1 && len(&given["servers"][0]["vless"]["users"]) == 1)
                .then_some(given)
        })
        .await;
    let run = given["tasks"][0]["run"].clone();
    let server_id = given["servers"][0]["server"].clone();
    let email = given["servers"][0]["vless"]["users"][0]["email"].clone();
    let a_has = assignment(&op, &a).await;
    assert_eq!(
        (len(&a_has["tasks"]), len(&a_has["servers"])),
        (0, 0),
        "claimed labels select nothing: {a_has}"
    );

    // The attack: A forges B's task output, and traffic on B's server.
    let forged_log = report(
        "node-a",
        1,
        json!({"logs": [{"run": run, "seq": 1, "text": "forged output\n"}]}),
    );
    let (status, body) = call(&op, "report", &a, Some(forged_log)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("node `node-b`"),
        "{body}"
    );
    let forged_traffic = report(
        "node-a",
        2,
        json!({"traffic": [{"server": server_id, "email": email, "uplink": 5_000_000_000u64, "downlink": 0}]}),
    );
    let (status, body) = call(&op, "report", &a, Some(forged_traffic)).await;
    assert_eq!(status, 403, "{body}");
    // Both at once, with one legitimate-looking heartbeat part: still all refused.
    let both = report(
        "node-a",
        3,
        json!({
            "logs": [{"run": run, "seq": 2, "text": "forged again\n"}],
            "traffic": [{"server": server_id, "email": email, "uplink": 1, "downlink": 1}],
        }),
    );
    assert_eq!(call(&op, "report", &a, Some(both)).await.0, 403);

    // Nothing of it was written.
    let (status, log) = op.api("/v1/logs/taskruns/default/job").await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(len(&log["chunks"]), 0, "no forged chunk stored: {log}");
    let job = op.object("taskruns", "job").await.unwrap();
    assert!(job["status"]["logTail"].is_null(), "{job:#}");
    assert_eq!(key_uplink(&op).await, 0);
    assert!(op.log().contains("report refused"), "the refusal is logged");

    // B's own reports are accepted and land.
    let running = report(
        "node-b",
        1,
        json!({
            "taskUpdates": [{"run": run, "phase": "Running"}],
            "logs": [{"run": run, "seq": 1, "text": "real output\n"}],
            "traffic": [{"server": server_id, "email": email, "uplink": 500, "downlink": 7}],
        }),
    );
    let (status, body) = call(&op, "report", &b, Some(running)).await;
    assert_eq!(status, 200, "{body}");
    op.eventually("B's traffic counted", WAIT, || async {
        (key_uplink(&op).await == 500).then_some(())
    })
    .await;
    let (_, log) = op.api("/v1/logs/taskruns/default/job").await;
    assert_eq!(log["chunks"], json!([{"seq": 1, "text": "real output\n"}]));

    // An impossible counter is refused whole, and does not poison B's stream.
    let huge = report(
        "node-b",
        2,
        json!({"traffic": [{"server": server_id, "email": email, "uplink": i64::MAX as u64, "downlink": 0}]}),
    );
    let (status, body) = call(&op, "report", &b, Some(huge)).await;
    assert_eq!(status, 422, "{body}");
    let next = report(
        "node-b",
        3,
        json!({"traffic": [{"server": server_id, "email": email, "uplink": 100, "downlink": 0}]}),
    );
    assert_eq!(call(&op, "report", &b, Some(next)).await.0, 200);
    op.eventually("B's next report counted", WAIT, || async {
        (key_uplink(&op).await == 600).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_agent_claiming_labels_receives_nothing_until_its_veil_node_has_them() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "runner.yaml", RUNNER);
    write(dir.path(), "server.yaml", &edge_server_yaml(free_port()));
    write(dir.path(), "key.yaml", KEY);
    write(dir.path(), "run.yaml", RUN);
    let op = Operator::start(dir.path()).await;
    let options = AgentOptions {
        reported_labels: vec!["role=edge".into()],
        ..AgentOptions::default()
    };
    let agent = Agent::start_with(&op, "claimer", &[], &options);
    let token = std::fs::read_to_string(agent.data_dir.join("node.token")).unwrap();

    // Registered, with its claim shown in status only.
    let node = op
        .eventually("the agent's registration", WAIT, || async {
            op.object("veilnodes", "claimer")
                .await
                .filter(|n| n["status"]["reportedLabels"]["role"] == "edge")
        })
        .await;
    assert!(node["spec"]["labels"].is_null(), "{node:#}");
    let job = op
        .eventually("the run to say why it waits", WAIT, || async {
            op.object("taskruns", "job")
                .await
                .filter(|r| r["status"]["phase"] == "Pending")
        })
        .await;
    assert!(job["status"]["node"].is_null(), "{job:#}");
    let given = assignment(&op, &token).await;
    assert_eq!(
        (len(&given["tasks"]), len(&given["servers"])),
        (0, 0),
        "no task and no server keys for a claimed label: {given}"
    );

    // Its owner gives it the label: now it receives both.
    op.declare_node_labels("claimer", &["role=edge"]);
    op.eventually("the run to succeed on the node", WAIT, || async {
        op.object("taskruns", "job")
            .await
            .filter(|r| r["status"]["phase"] == "Succeeded" && r["status"]["node"] == "claimer")
    })
    .await;
    let given = assignment(&op, &token).await;
    assert_eq!(len(&given["servers"]), 1, "{given}");
    assert_eq!(len(&given["servers"][0]["vless"]["users"]), 1);
    drop(agent);
}

#[tokio::test]
async fn a_flood_of_bad_tokens_is_answered_429_and_a_good_agent_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start(dir.path()).await;
    let good = op.create_token("good");
    let registration = registration("good", json!({}));
    assert_eq!(
        call(&op, "register", &good, Some(registration.clone()))
            .await
            .0,
        200
    );

    let mut unauthorized = 0;
    let mut limited = 0;
    for i in 0..300 {
        let bad = format!("veil_node_{i:064x}");
        match call(&op, "register", &bad, Some(registration.clone()))
            .await
            .0
        {
            401 => unauthorized += 1,
            429 => limited += 1,
            other => panic!("a bad token got {other}"),
        }
    }
    assert!(limited >= 250, "the flooder is limited: {limited} × 429");
    assert!(
        unauthorized <= 40,
        "only the burst (and what refills meanwhile) is looked up: {unauthorized} × 401"
    );
    assert!(
        op.log().contains("too many failed authentications"),
        "the limit is logged"
    );
    // The good agent, from the same address, is not limited.
    assert_eq!(
        call(&op, "register", &good, Some(registration.clone()))
            .await
            .0,
        200
    );
    let (status, _) = call(&op, "assignment?wait=0", &good, None).await;
    assert!(status == 200 || status == 204, "{status}");
    assert_eq!(
        call(&op, "report", &good, Some(report("good", 1, json!({}))))
            .await
            .0,
        200
    );

    // A body above the limit is refused before it is parsed.
    assert_eq!(oversized_report_status(&op, &good).await, 413);
    assert!(!op.log().contains(&good), "tokens are never logged");
}
