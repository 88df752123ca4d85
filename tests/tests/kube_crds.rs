//! Veil's CRDs against a real kube-apiserver with etcd (`make env` builds
//! them): they install, are Established and structural, `kubectl explain`
//! shows their field docs, every example object is accepted, and `kubectl
//! get` prints their columns. One cluster is shared by the tests of this file.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;
use veil_e2e::kube::{TestCluster, crds_dir, workspace_root};

/// The seven kinds of `veil.dev/v1alpha1`, as CRD names.
const CRDS: [&str; 7] = [
    "protocolservers.veil.dev",
    "runners.veil.dev",
    "schedules.veil.dev",
    "strategies.veil.dev",
    "taskruns.veil.dev",
    "veilnodes.veil.dev",
    "vlesskeys.veil.dev",
];

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("kubectl printed JSON")
}

/// Whitespace collapsed to single spaces, so wrapped text can be searched.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn condition<'a>(crd: &'a Value, type_: &str) -> Option<&'a Value> {
    crd["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == type_)
}

#[tokio::test]
async fn all_crds_install_established_and_structural() {
    let cluster = TestCluster::shared().await;

    // Exactly our seven files were applied.
    let files: BTreeSet<String> = std::fs::read_dir(crds_dir())
        .unwrap()
        .filter_map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name()?.to_str()?.strip_suffix(".yaml")?;
            Some(name.to_owned())
        })
        .collect();
    assert_eq!(files, CRDS.iter().map(|name| (*name).to_owned()).collect());

    for name in CRDS {
        let crd = json(&cluster.kubectl_ok(&["get", "crd", name, "-o", "json"]));
        let established = condition(&crd, "Established").expect("an Established condition");
        assert_eq!(established["status"], "True", "{name}: {established}");
        let accepted = condition(&crd, "NamesAccepted").expect("a NamesAccepted condition");
        assert_eq!(accepted["status"], "True", "{name}: {accepted}");
        assert!(
            condition(&crd, "NonStructuralSchema").is_none(),
            "{name} has a non-structural schema: {}",
            crd["status"]["conditions"]
        );
    }

    // The same through the Rust client the operator will use.
    let client = cluster.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let listed: BTreeSet<String> = crds
        .list(&ListParams::default())
        .await
        .expect("list CRDs")
        .items
        .into_iter()
        .filter(|crd| crd.spec.group == "veil.dev")
        .filter_map(|crd| crd.metadata.name)
        .collect();
    assert_eq!(listed, CRDS.iter().map(|name| (*name).to_owned()).collect());
}

#[tokio::test]
async fn kubectl_explain_shows_field_docs() {
    let cluster = TestCluster::shared().await;
    let spec = one_line(&cluster.kubectl_ok(&["explain", "vlesskey.spec"]));
    assert!(spec.contains("serverRef"), "{spec}");
    assert!(
        spec.contains(
            "The `ProtocolServer` (with `protocol: vless`, same namespace) this user belongs to."
        ),
        "{spec}"
    );
    let server_ref = one_line(&cluster.kubectl_ok(&["explain", "vlesskey.spec.serverRef.name"]));
    assert!(server_ref.contains("FIELD: name"), "{server_ref}");
}

#[tokio::test]
async fn every_example_object_is_accepted() {
    let cluster = TestCluster::shared().await;
    let examples = workspace_root().join("examples/standalone");
    let out = cluster.kubectl_ok(&[
        "apply",
        "--dry-run=server",
        "-o",
        "name",
        "-f",
        &examples.display().to_string(),
    ]);
    let accepted: BTreeSet<&str> = out.lines().collect();
    let expected: BTreeSet<&str> = [
        "secret/edge-reality",
        "secret/demo-token",
        "secret/zapret-payloads",
        "veilnode.veil.dev/local",
        "strategy.veil.dev/youtube-fake",
        "strategy.veil.dev/youtube-badsum",
        "strategy.veil.dev/via-vless",
        "runner.veil.dev/local",
        "schedule.veil.dev/heartbeat",
        "taskrun.veil.dev/hello",
        "protocolserver.veil.dev/edge-vless",
        "vlesskey.veil.dev/alice",
    ]
    .into();
    assert_eq!(accepted, expected, "kubectl printed:\n{out}");
}

#[tokio::test]
async fn kubectl_get_shows_printer_columns() {
    let cluster = TestCluster::shared().await;
    cluster.kubectl_ok(&["create", "namespace", "printer-columns"]);
    let key = "apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata:
  name: bob
  namespace: printer-columns
spec:
  serverRef:
    name: edge-vless
  email: bob@example.com
  trafficLimitBytes: 1024
";
    let file = cluster.dir().join("printer-columns-key.yaml");
    std::fs::write(&file, key).unwrap();
    cluster.kubectl_ok(&["apply", "-f", &file.display().to_string()]);

    let table = cluster.kubectl_ok(&["get", "vlesskeys", "-n", "printer-columns"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    // The columns the CRD declares for the default (non-wide) view.
    let crd = json(&cluster.kubectl_ok(&["get", "crd", "vlesskeys.veil.dev", "-o", "json"]));
    let mut expected: Vec<String> = vec!["NAME".to_owned()];
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
    {
        if column["priority"].as_i64().unwrap_or(0) == 0 {
            expected.push(column["name"].as_str().unwrap().to_uppercase());
        }
    }
    assert!(expected.contains(&"SERVER".to_owned()), "{expected:?}");
    let expected_refs: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(header, expected_refs, "kubectl printed:\n{table}");

    // The row shows real values from the object.
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row.first(), Some(&"bob"), "{table}");
    assert!(row.contains(&"edge-vless"), "{table}");
    assert!(row.contains(&"1024"), "{table}");
}

#[tokio::test]
async fn objects_survive_an_apiserver_restart_on_the_same_port() {
    // Its own cluster: the shared one must stay up for the other tests.
    let cluster = TestCluster::start().await;
    let url = cluster.server_url();
    let node =
        "apiVersion: veil.dev/v1alpha1\nkind: VeilNode\nmetadata:\n  name: survivor\nspec: {}\n";
    let file = cluster.dir().join("survivor.yaml");
    std::fs::write(&file, node).unwrap();
    cluster.kubectl_ok(&["apply", "-f", &file.display().to_string()]);

    cluster.restart_apiserver().await;
    assert_eq!(cluster.server_url(), url);
    let names = cluster.kubectl_ok(&["get", "veilnodes", "-o", "name"]);
    assert_eq!(names.trim(), "veilnode.veil.dev/survivor");
    let client = cluster.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    assert!(crds.get("veilnodes.veil.dev").await.is_ok());

    // Dropping the cluster kills both processes and removes its files.
    let dir = cluster.dir().to_path_buf();
    let etcd = cluster.etcd_url().trim_start_matches("http://").to_owned();
    drop(cluster);
    for address in [url.trim_start_matches("https://"), etcd.as_str()] {
        assert!(
            std::net::TcpStream::connect(address).is_err(),
            "{address} still answers"
        );
    }
    assert!(!dir.exists());
}
