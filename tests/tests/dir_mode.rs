//! The watched-directory source end to end, against a real `veil-operator`
//! process: add, change, break, fix, delete, symlink swap, directory removed.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by design")]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use veil_e2e::process::Operator;

const WAIT: Duration = Duration::from_secs(10);

fn node(name: &str, cordoned: bool) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: VeilNode\nmetadata:\n  name: {name}\nspec:\n  cordoned: {cordoned}\n"
    )
}

fn write(path: &Path, text: &str) {
    // Editor-style save: write a temp file, then rename it over the target.
    let tmp = path.with_extension("yaml.tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn generation(object: &Value) -> i64 {
    object["metadata"]["generation"].as_i64().unwrap_or(-1)
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

async fn wait_object(
    op: &Operator,
    kind: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    op.eventually(what, WAIT, || async {
        op.object(kind, name).await.filter(|o| check(o))
    })
    .await
}

#[tokio::test]
async fn objects_are_added_changed_kept_while_broken_fixed_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nodes.yaml");
    write(&file, &node("edge-1", false));
    let op = Operator::start(dir.path()).await;

    // Added: status computed, generation 1; no agent has registered as this node.
    let object = wait_object(&op, "veilnodes", "edge-1", "edge-1 with status", |o| {
        o["status"]["observedGeneration"] == 1
    })
    .await;
    assert_eq!(generation(&object), 1);
    let ready = condition(&object, "Ready").expect("Ready condition");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "NotRegistered");

    // Changed spec: generation and observedGeneration move to 2.
    write(&file, &node("edge-1", true));
    let object = wait_object(&op, "veilnodes", "edge-1", "generation 2", |o| {
        o["status"]["observedGeneration"] == 2
    })
    .await;
    assert_eq!(generation(&object), 2);
    assert_eq!(object["spec"]["cordoned"], true);

    // Broken: an error with file, line and column; the last good version stays.
    write(
        &file,
        &format!("{}  unknownField: 1\n", node("edge-1", false)),
    );
    let errors = op
        .eventually("a load error", WAIT, || async {
            let errors = op.errors().await;
            (!errors.is_empty()).then_some(errors)
        })
        .await;
    let error = &errors[0];
    assert_eq!(error["file"], "nodes.yaml", "{error}");
    assert_eq!(error["line"], 7, "{error}");
    assert!(error["column"].as_i64().unwrap_or(0) > 0, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("unknownField"),
        "{error}"
    );
    let kept = op
        .object("veilnodes", "edge-1")
        .await
        .expect("kept while broken");
    assert_eq!(
        kept["spec"]["cordoned"], true,
        "last good version stays in effect"
    );
    assert_eq!(generation(&kept), 2);

    // Fixed: error cleared, new spec applied.
    write(&file, &node("edge-1", false));
    wait_object(&op, "veilnodes", "edge-1", "fixed spec", |o| {
        o["spec"]["cordoned"] != true && o["status"]["observedGeneration"] == 3
    })
    .await;
    op.eventually("errors cleared", WAIT, || async {
        op.errors().await.is_empty().then_some(())
    })
    .await;

    // An object removed from a multi-document file is pruned; its neighbour stays.
    write(
        &file,
        &format!("{}---\n{}", node("edge-1", false), node("edge-2", false)),
    );
    wait_object(&op, "veilnodes", "edge-2", "edge-2", |_| true).await;
    write(&file, &node("edge-2", false));
    op.eventually("edge-1 pruned", WAIT, || async {
        op.object("veilnodes", "edge-1")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(op.object("veilnodes", "edge-2").await.is_some());

    // Deleting the file prunes its objects.
    std::fs::remove_file(&file).unwrap();
    op.eventually("everything pruned", WAIT, || async {
        op.objects("veilnodes").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn directory_removed_prunes_nothing_and_recovers() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("infra");
    std::fs::create_dir(&dir).unwrap();
    write(&dir.join("a.yaml"), &node("keep-me", false));
    let op = Operator::start(&dir).await;
    wait_object(&op, "veilnodes", "keep-me", "keep-me", |_| true).await;

    let moved = parent.path().join("moved-away");
    std::fs::rename(&dir, &moved).unwrap();
    let errors = op
        .eventually("an error about the missing directory", WAIT, || async {
            let errors = op.errors().await;
            (!errors.is_empty()).then_some(errors)
        })
        .await;
    assert!(
        errors
            .iter()
            .any(|e| e["message"].as_str().unwrap_or("").contains("pruned")),
        "the error says nothing is pruned: {errors:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        op.object("veilnodes", "keep-me").await.is_some(),
        "nothing pruned"
    );

    std::fs::rename(&moved, &dir).unwrap();
    write(&dir.join("b.yaml"), &node("new-one", false));
    wait_object(&op, "veilnodes", "new-one", "recovered", |_| true).await;
    assert!(op.object("veilnodes", "keep-me").await.is_some());
    op.eventually("errors cleared", WAIT, || async {
        op.errors().await.is_empty().then_some(())
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn kubernetes_style_symlink_swap_applies_the_new_version_atomically() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let v1 = root.join("..2026_11_23_a");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("nodes.yaml"), node("swapped", false)).unwrap();
    symlink("..2026_11_23_a", root.join("..data")).unwrap();
    symlink("..data/nodes.yaml", root.join("nodes.yaml")).unwrap();
    let op = Operator::start(root).await;
    wait_object(&op, "veilnodes", "swapped", "v1", |o| {
        o["spec"]["cordoned"] != true
    })
    .await;

    let v2 = root.join("..2026_11_23_b");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("nodes.yaml"), node("swapped", true)).unwrap();
    symlink("..2026_11_23_b", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();

    let object = wait_object(&op, "veilnodes", "swapped", "v2", |o| {
        o["spec"]["cordoned"] == true
    })
    .await;
    assert_eq!(generation(&object), 2);
    assert!(op.errors().await.is_empty(), "a swap is not an error");
}

#[tokio::test]
async fn generations_and_admin_token_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = dir.path().join("n.yaml");
    write(&file, &node("stable", false));
    let options = veil_e2e::process::OperatorOptions {
        data_dir: Some(data.path().to_path_buf()),
        ..Default::default()
    };
    let mut op = Operator::start_with(dir.path(), options.clone()).await;
    wait_object(&op, "veilnodes", "stable", "g1", |o| generation(o) == 1).await;
    write(&file, &node("stable", true));
    let before = wait_object(&op, "veilnodes", "stable", "g2", |o| {
        o["status"]["observedGeneration"] == 2
    })
    .await;
    let token = op.token();
    op.stop();

    let op = Operator::start_with(dir.path(), options).await;
    assert_eq!(op.token(), token, "the admin token is kept");
    let after = wait_object(&op, "veilnodes", "stable", "g2 after restart", |o| {
        o["status"]["observedGeneration"] == 2
    })
    .await;
    assert_eq!(
        generation(&after),
        2,
        "an unchanged spec keeps its generation"
    );
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(
        after["metadata"]["creationTimestamp"],
        before["metadata"]["creationTimestamp"]
    );
    assert_eq!(
        condition(&after, "Stalled").unwrap()["lastTransitionTime"],
        condition(&before, "Stalled").unwrap()["lastTransitionTime"],
        "an unchanged status is not rewritten"
    );
}

#[tokio::test]
async fn api_requires_the_admin_token_but_probes_and_metrics_are_open() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("n.yaml"), &node("metered", false));
    let op = Operator::start(dir.path()).await;
    wait_object(&op, "veilnodes", "metered", "metered", |_| true).await;
    let http = op.client();
    let no_token = http
        .get(format!("{}/v1/objects/veilnodes", op.url))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let wrong = http
        .get(format!("{}/v1/objects/veilnodes", op.url))
        .bearer_auth("veil_admin_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    for path in ["/healthz", "/readyz"] {
        let response = http.get(format!("{}{path}", op.url)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let metrics = http
        .get(format!("{}/metrics", op.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "veil_reconcile_total",
        "veil_objects",
        "veil_source_errors_total",
        "veil_reconcile_duration_seconds",
        "veil_reconcile_pass_duration_seconds",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(
        !op.log().contains(&op.token()),
        "the admin token is never logged"
    );
}

#[tokio::test]
async fn cli_get_prints_printer_columns_and_accepts_short_names() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("n.yaml"), &node("edge-7", false));
    let op = Operator::start(dir.path()).await;
    wait_object(&op, "veilnodes", "edge-7", "edge-7", |o| {
        !o["status"].is_null()
    })
    .await;

    for name in ["veilnodes", "veilnode", "vn", "VeilNode"] {
        let out = op.cli(&["get", name]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "get {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = stdout.lines();
        let header = lines.next().unwrap_or_default();
        assert!(header.starts_with("NAME"), "{stdout}");
        for column in veil_crds::kind::Kind::VeilNode
            .printer_columns()
            .iter()
            .filter(|c| c.priority == 0)
        {
            assert!(
                header.contains(&column.name.to_ascii_uppercase()),
                "{column:?} in {header}"
            );
        }
        assert!(
            lines.next().unwrap_or_default().starts_with("edge-7"),
            "{stdout}"
        );
    }

    let out = op.cli(&["get", "vn", "edge-7", "-o", "json"]);
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["kind"], "VeilNode");
    assert_eq!(doc["metadata"]["name"], "edge-7");

    let out = op.cli(&["get", "vn", "absent"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    let out = op.cli(&["get", "nonsense"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown kind"));
}

#[tokio::test]
async fn secret_values_never_leave_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("s.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: psk\nstringData:\n  key: hunter2-very-secret\n",
    );
    let op = Operator::start(dir.path()).await;
    let secret = op
        .eventually("the secret", WAIT, || async {
            op.object("secrets", "psk").await
        })
        .await;
    assert!(!secret.to_string().contains("hunter2"), "{secret}");
    let out = op.cli(&["get", "secrets", "psk", "-o", "yaml"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
    assert!(!op.log().contains("hunter2"));
}

#[test]
fn validate_lists_every_error_with_file_and_line_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.yaml"), node("fine", false)).unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        format!(
            "{}  typo: 1\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
            node("broken", false)
        ),
    )
    .unwrap();
    let out = std::process::Command::new(veil_e2e::process::binary("veil-operator"))
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("bad.yaml:7:"),
        "unknown field located: {stdout}"
    );
    assert!(
        stdout.contains("ConfigMap"),
        "unsupported kind reported: {stdout}"
    );

    std::fs::remove_file(dir.path().join("bad.yaml")).unwrap();
    let out = std::process::Command::new(veil_e2e::process::binary("veil-operator"))
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
