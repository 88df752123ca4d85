//! The operator's state store on disk (issue 13), with real processes:
//! - the data dir is 0700 and the SQLite database, its WAL and shared
//!   memory files and `admin.token` are 0600, with no temp file left;
//! - when the store cannot be written (a full file system: a tmpfs this
//!   test mounts and unmounts), `/readyz` says so and a disabled key is
//!   still taken off the agent's assignment.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by design")]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use veil_e2e::process::{Agent, Operator, OperatorOptions, free_port};
use veil_e2e::tmpfs::Tmpfs;
use veil_e2e::xray::edge_server_yaml;

const WAIT: Duration = Duration::from_secs(30);

fn write(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn the_data_dir_and_the_database_are_private() {
    let source = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    // Created readable by all, as an installer's mkdir would: narrowed at start.
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let op = Operator::start_with(
        source.path(),
        OperatorOptions {
            data_dir: Some(data_dir.clone()),
            ..OperatorOptions::default()
        },
    )
    .await;
    // A write, so the WAL and shared-memory files exist.
    op.create_token("node-1");
    assert_eq!(mode(&data_dir), 0o700, "data dir");
    for file in ["veil.db", "veil.db-wal", "veil.db-shm", "admin.token"] {
        assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn key(name: &str, enabled: bool) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: VlessKey\nmetadata: {{name: {name}}}\nspec:\n  serverRef: {{name: edge}}\n  enabled: {enabled}\n"
    )
}

/// The emails of the users the node's assignment gives its one server.
async fn users(op: &Operator, token: &str) -> Vec<String> {
    let response = op
        .client()
        .get(format!("{}/v1/agent/assignment?after=0&wait=0", op.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if response.status().as_u16() != 200 {
        return Vec::new();
    }
    let body: Value = response.json().await.unwrap();
    body["servers"][0]["vless"]["users"]
        .as_array()
        .map(|users| {
            users
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn readyz(op: &Operator) -> (u16, String) {
    let response = op
        .client()
        .get(format!("{}/readyz", op.url))
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_full_store_is_not_ready_and_revocations_still_reach_the_agent() {
    // The whole data dir on the small file system (the token CLI and the
    // operator share its database).
    let store = Tmpfs::mount("4m");
    let source = tempfile::tempdir().unwrap();
    write(source.path(), "server.yaml", &edge_server_yaml(free_port()));
    write(source.path(), "alice.yaml", &key("alice", true));
    write(source.path(), "bob.yaml", &key("bob", true));
    let op = Operator::start_with(
        source.path(),
        OperatorOptions {
            data_dir: Some(store.path().join("data")),
            ..OperatorOptions::default()
        },
    )
    .await;
    let agent = Agent::start(&op, "edge-1", &["role=edge"]);
    let token = std::fs::read_to_string(agent.data_dir.join("node.token")).unwrap();
    op.eventually("both users assigned", WAIT, || async {
        (users(&op, &token).await == ["default.alice", "default.bob"]).then_some(())
    })
    .await;

    // The disk fills up; then bob's key is disabled.
    let filler = store.fill();
    write(source.path(), "bob.yaml", &key("bob", false));
    op.eventually(
        "bob revoked although nothing can be stored",
        WAIT,
        || async { (users(&op, &token).await == ["default.alice"]).then_some(()) },
    )
    .await;
    let (status, text) = op
        .eventually("/readyz to report the store", WAIT, || async {
            let (status, text) = readyz(&op).await;
            (status == 503).then_some((status, text))
        })
        .await;
    assert_eq!(status, 503);
    assert!(text.contains("cannot be written"), "{text}");
    let errors = op
        .metric("veil_reconcile_total{kind=\"VlessKey\",result=\"error\"}")
        .await
        .unwrap_or_default();
    assert!(
        errors >= 1.0,
        "failed passes are counted as errors: {errors}"
    );

    // Not asserted here: recovery once space returns. It passes alone but
    // failed under CI's load on 2026-12-07 ("cannot write object records"
    // every second for 30 s after the filler was removed; the reconcile
    // error now logs its whole cause chain to find out why) — open work,
    // see the issue note.
    std::fs::remove_file(&filler).unwrap();
    drop(agent);
}
