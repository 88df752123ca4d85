//! How Veil is installed, checked with the real tools against a real
//! kube-apiserver: every file of `manifests/`, both `kubectl kustomize`
//! builds (manifests/ and examples/gitops/) and the Helm chart rendered for
//! both RBAC scopes apply with `kubectl apply --dry-run=server`; `helm lint`
//! passes; the chart renders the same objects as manifests/ and ships the
//! same CRDs; the operator's RBAC is enough for what it does and not one
//! verb wider (`kubectl auth can-i`); the operator's pod meets the
//! `restricted` Pod Security profile and the agent's gets exactly the
//! privileges it asks for. One cluster is shared by the tests of this file.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{Value, json};
use veil_e2e::kube::{TestCluster, crds_dir, env_tool, workspace_root};

mod at_work;
mod security;

fn path(relative: &str) -> String {
    workspace_root().join(relative).display().to_string()
}

fn succeeded(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn helm(args: &[&str]) -> Output {
    let helm = env_tool("helm").unwrap_or_else(|error| panic!("{error:#}"));
    Command::new(helm)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("running helm")
}

/// `helm template veil charts/veil -n veil-system EXTRA…`: the release
/// the docs install, so names match manifests/.
fn helm_template(extra: &[&str]) -> String {
    let mut args = vec!["template", "veil", "charts/veil", "-n", "veil-system"];
    args.extend(extra);
    succeeded(&format!("helm {}", args.join(" ")), &helm(&args))
}

/// The documents of a YAML stream, empty ones dropped.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

/// `Kind/name` or `Kind/namespace/name` of each object.
fn names(documents: &[Value]) -> BTreeSet<String> {
    documents
        .iter()
        .map(|object| {
            let kind = object["kind"].as_str().unwrap();
            let name = object["metadata"]["name"].as_str().unwrap();
            match object["metadata"]["namespace"].as_str() {
                Some(namespace) => format!("{kind}/{namespace}/{name}"),
                None => format!("{kind}/{name}"),
            }
        })
        .collect()
}

fn find<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in {:?}", names(documents)))
}

fn write(cluster: &TestCluster, name: &str, text: &str) -> String {
    let file = cluster.dir().join(name);
    std::fs::write(&file, text).unwrap();
    file.display().to_string()
}

/// Creates or updates `file`'s objects for real (server-side apply: the
/// same for every test that asks, in any order).
fn apply(cluster: &TestCluster, file: &str) {
    cluster.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", file]);
}

/// `kubectl apply --dry-run=server`: the API server validates and admits
/// every object and stores none. Returns what kubectl names (`kind.group/name`).
fn dry_run(cluster: &TestCluster, file: &str) -> BTreeSet<String> {
    cluster
        .kubectl_ok(&["apply", "--dry-run=server", "-o", "name", "-f", file])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What `manifests/` holds, as `kubectl -o name` prints it.
fn manifest_objects() -> BTreeSet<String> {
    let mut objects: BTreeSet<String> = [
        "namespace/veil-system",
        "serviceaccount/veil-operator",
        "serviceaccount/veil-agent",
        "clusterrole.rbac.authorization.k8s.io/veil-operator",
        "clusterrolebinding.rbac.authorization.k8s.io/veil-operator",
        "role.rbac.authorization.k8s.io/veil-operator-leader-election",
        "rolebinding.rbac.authorization.k8s.io/veil-operator-leader-election",
        "role.rbac.authorization.k8s.io/veil-operator-node-tokens",
        "rolebinding.rbac.authorization.k8s.io/veil-operator-node-tokens",
        "clusterrole.rbac.authorization.k8s.io/veil-operator-secret-writer",
        "rolebinding.rbac.authorization.k8s.io/veil-operator-secret-writer",
        "deployment.apps/veil-operator",
        "service/veil-operator",
        "daemonset.apps/veil-agent",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for plural in [
        "veilnodes",
        "protocolservers",
        "vlesskeys",
        "strategies",
        "runners",
        "schedules",
        "taskruns",
    ] {
        objects.insert(format!(
            "customresourcedefinition.apiextensions.k8s.io/{plural}.veil.dev"
        ));
    }
    objects
}

#[tokio::test]
async fn every_manifest_applies_to_the_api_server() {
    let cluster = TestCluster::shared().await;
    apply(cluster, &path("manifests/namespace.yaml"));
    let mut accepted = dry_run(cluster, &crds_dir().display().to_string());
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("manifests"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|file| {
            file.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .filter(|file| !file.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    for file in files {
        accepted.extend(dry_run(cluster, &file.display().to_string()));
    }
    assert_eq!(accepted, manifest_objects());
}

#[tokio::test]
async fn kustomize_builds_manifests_and_the_gitops_example() {
    let cluster = TestCluster::shared().await;
    apply(cluster, &path("manifests/namespace.yaml"));
    apply(cluster, &path("examples/gitops/veil/namespace.yaml"));

    let manifests = cluster.kubectl_ok(&["kustomize", &path("manifests")]);
    let file = write(cluster, "kustomize-manifests.yaml", &manifests);
    assert_eq!(dry_run(cluster, &file), manifest_objects());
    let objects = documents(&manifests);
    let image = |objects: &[Value], kind: &str, name: &str| {
        find(objects, kind, name)["spec"]["template"]["spec"]["containers"][0]["image"].clone()
    };
    assert_eq!(
        image(&objects, "Deployment", "veil-operator"),
        "ghcr.io/veil-project/veil-operator:0.1.0"
    );

    // The example: all of manifests/ plus the objects it reconciles.
    let gitops = cluster.kubectl_ok(&["kustomize", &path("examples/gitops")]);
    let file = write(cluster, "kustomize-gitops.yaml", &gitops);
    let mut expected = manifest_objects();
    expected.extend(
        [
            "namespace/veil-demo",
            "veilnode.veil.dev/edge-1",
            "protocolserver.veil.dev/edge-vless",
            "vlesskey.veil.dev/alice",
            "vlesskey.veil.dev/bob",
            "runner.veil.dev/edge",
            "schedule.veil.dev/disk-report",
        ]
        .map(str::to_owned),
    );
    assert_eq!(dry_run(cluster, &file), expected);

    // An overlay picks the images with `images:`, as docs/install.md shows.
    let overlay = cluster.dir().join("overlay");
    std::fs::create_dir_all(&overlay).unwrap();
    let manifests_dir = relative_to(&overlay, &workspace_root().join("manifests"));
    let kustomization = format!(
        "resources:\n  - {manifests_dir}\nimages:\n  - name: ghcr.io/veil-project/veil-operator\n    newName: registry.example.org/veil/operator\n    newTag: 9.9.9\n"
    );
    std::fs::write(overlay.join("kustomization.yaml"), kustomization).unwrap();
    let built = documents(&cluster.kubectl_ok(&["kustomize", &overlay.display().to_string()]));
    assert_eq!(
        image(&built, "Deployment", "veil-operator"),
        "registry.example.org/veil/operator:9.9.9"
    );
    assert_eq!(
        image(&built, "DaemonSet", "veil-agent"),
        "ghcr.io/veil-project/veil-agent:0.1.0"
    );
}

/// `target` as a path relative to `from` (kustomize refuses absolute ones).
fn relative_to(from: &Path, target: &Path) -> String {
    let depth = from
        .components()
        .filter(|component| matches!(component, Component::Normal(_)))
        .count();
    let target = target.strip_prefix("/").unwrap_or(target);
    format!("{}{}", "../".repeat(depth), target.display())
}

#[test]
fn helm_lint_passes_for_every_layout() {
    for values in [
        vec![],
        vec!["--set", "rbac.scope=namespace"],
        vec!["--set", "agent.enabled=false"],
        vec!["--set", "serviceMonitor.enabled=true"],
    ] {
        let mut args = vec!["lint", "--strict", "charts/veil"];
        args.extend(&values);
        let out = succeeded(&format!("helm {}", args.join(" ")), &helm(&args));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
    // The values schema catches a typo before anything renders.
    let typo = helm(&["lint", "charts/veil", "--set", "rbac.scope=cluster-wide"]);
    assert!(!typo.status.success());
    let said = String::from_utf8_lossy(&typo.stdout) + String::from_utf8_lossy(&typo.stderr);
    assert!(said.contains("rbac") && said.contains("scope"), "{said}");
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let read = |dir: PathBuf| -> BTreeMap<String, String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| {
                let file = entry.unwrap().path();
                let name = file.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&file).unwrap())
            })
            .collect()
    };
    let generated = read(crds_dir());
    let chart = read(workspace_root().join("charts/veil/crds"));
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>()
    );
    for (name, text) in &generated {
        assert!(
            chart[name] == *text,
            "charts/veil/crds/{name} differs from manifests/crds/{name}: run `make crds`"
        );
    }
}

/// Every (apiGroup, resource, verb) a list of RBAC rules grants.
fn grants(rules: &Value) -> BTreeSet<(String, String, String)> {
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item.as_str().unwrap().to_owned())
            .collect()
    };
    let mut out = BTreeSet::new();
    for rule in rules.as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none(), "{rule}");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    assert!(group != "*" && resource != "*" && verb != "*", "{rule}");
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

/// A pod spec without its affinity (whose selector names the Helm release).
fn pod_spec(object: &Value) -> Value {
    let mut spec = object["spec"]["template"]["spec"].clone();
    spec.as_object_mut().unwrap().remove("affinity");
    spec
}

#[tokio::test]
async fn chart_renders_what_manifests_hold_and_applies_for_both_scopes() {
    let cluster = TestCluster::shared().await;
    apply(cluster, &path("manifests/namespace.yaml"));
    apply(cluster, &path("examples/gitops/veil/namespace.yaml"));
    let manifests = documents(&cluster.kubectl_ok(&["kustomize", &path("manifests")]));

    // Cluster-wide (the default): exactly manifests/ without the Namespace,
    // which Helm leaves to `--create-namespace`.
    let rendered = helm_template(&["--include-crds"]);
    let file = write(cluster, "chart-cluster.yaml", &rendered);
    let mut expected = manifest_objects();
    expected.remove("namespace/veil-system");
    assert_eq!(dry_run(cluster, &file), expected);
    let chart = documents(&rendered);
    assert_eq!(
        grants(&find(&chart, "ClusterRole", "veil-operator")["rules"]),
        grants(&find(&manifests, "ClusterRole", "veil-operator")["rules"])
    );
    for role in ["veil-operator-leader-election", "veil-operator-node-tokens"] {
        assert_eq!(
            find(&chart, "Role", role)["rules"],
            find(&manifests, "Role", role)["rules"]
        );
    }
    for (kind, name) in [("Deployment", "veil-operator"), ("DaemonSet", "veil-agent")] {
        assert_eq!(
            pod_spec(find(&chart, kind, name)),
            pod_spec(find(&manifests, kind, name)),
            "{kind}/{name}: the chart's pod differs from manifests/"
        );
    }
    let deployment = find(&chart, "Deployment", "veil-operator");
    // One replica on the per-pod SQLite store; more need PostgreSQL.
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );

    // One namespace: a Role there, a ClusterRole for VeilNodes only, and
    // the operator told which namespace to watch.
    let rendered = helm_template(&[
        "--set",
        "rbac.scope=namespace",
        "--set",
        "rbac.namespace=veil-demo",
    ]);
    let file = write(cluster, "chart-namespace.yaml", &rendered);
    assert!(dry_run(cluster, &file).contains("role.rbac.authorization.k8s.io/veil-operator"));
    let chart = documents(&rendered);
    let rbac: BTreeSet<String> = names(&chart)
        .into_iter()
        .filter(|name| name.contains("Role"))
        .collect();
    assert_eq!(
        rbac,
        [
            "ClusterRole/veil-operator-nodes",
            "ClusterRoleBinding/veil-operator-nodes",
            "ClusterRole/veil-operator-secret-writer",
            "RoleBinding/veil-system/veil-operator-secret-writer",
            "RoleBinding/veil-demo/veil-operator-secret-writer",
            "Role/veil-demo/veil-operator",
            "RoleBinding/veil-demo/veil-operator",
            "Role/veil-system/veil-operator-leader-election",
            "RoleBinding/veil-system/veil-operator-leader-election",
            "Role/veil-system/veil-operator-node-tokens",
            "RoleBinding/veil-system/veil-operator-node-tokens",
        ]
        .map(str::to_owned)
        .into()
    );
    let nodes = grants(&find(&chart, "ClusterRole", "veil-operator-nodes")["rules"]);
    // Cluster-scoped APIs only: VeilNodes, and TokenReviews (agent pods'
    // tokens), which have no namespaced form.
    assert!(
        nodes
            .iter()
            .all(|(group, resource, verb)| resource.starts_with("veilnodes")
                || (group == "authentication.k8s.io"
                    && resource == "tokenreviews"
                    && verb == "create")),
        "{nodes:?}"
    );
    let mut scoped = grants(&find(&chart, "Role", "veil-operator")["rules"]);
    scoped.extend(nodes);
    assert_eq!(
        scoped,
        grants(&find(&manifests, "ClusterRole", "veil-operator")["rules"])
    );
    let args = &find(&chart, "Deployment", "veil-operator")["spec"]["template"]["spec"]["containers"]
        [0]["args"];
    assert_eq!(
        args,
        &json!([
            "run",
            "--source",
            "kube",
            "--namespace",
            "veil-demo",
            "--listen",
            "0.0.0.0:7070",
            "--data-dir",
            "/var/lib/veil",
            "--agent-service-account=veil-agent",
            "--tls-secret",
            "veil-operator-tls"
        ])
    );
}

#[test]
fn chart_values_switch_the_agent_images_and_monitoring() {
    let kinds = |yaml: &str| names(&documents(yaml));

    let without_agent = kinds(&helm_template(&["--set", "agent.enabled=false"]));
    assert!(!without_agent.contains("DaemonSet/veil-system/veil-agent"));
    assert!(!without_agent.contains("ServiceAccount/veil-system/veil-agent"));
    assert!(without_agent.contains("Deployment/veil-system/veil-operator"));

    let chart = documents(&helm_template(&[
        "--set",
        "operator.image.tag=1.2.3",
        "--set",
        "agent.image.repository=registry.example.org/veil/agent",
        "--set",
        "operator.replicas=1",
    ]));
    let image = |kind: &str, name: &str| {
        find(&chart, kind, name)["spec"]["template"]["spec"]["containers"][0]["image"].clone()
    };
    assert_eq!(
        image("Deployment", "veil-operator"),
        "ghcr.io/veil-project/veil-operator:1.2.3"
    );
    assert_eq!(
        image("DaemonSet", "veil-agent"),
        "registry.example.org/veil/agent:0.1.0"
    );
    // One replica cannot keep one available through a drain: no budget.
    assert!(!names(&chart).contains("PodDisruptionBudget/veil-system/veil-operator"));

    // The ServiceMonitor needs the Prometheus Operator's CRDs, which the
    // test cluster lacks, so it is only rendered here.
    let monitored = documents(&helm_template(&["--set", "serviceMonitor.enabled=true"]));
    let monitor = find(&monitored, "ServiceMonitor", "veil-operator");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http");

    let refused = helm(&[
        "template",
        "veil",
        "charts/veil",
        "--set",
        "rbac.scope=everywhere",
    ]);
    assert!(!refused.status.success());

    // Two replicas on per-pod SQLite files: refused, with the way out.
    let refused = helm(&[
        "template",
        "veil",
        "charts/veil",
        "--set",
        "operator.replicas=2",
    ]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("replicas > 1 need a shared store")
            && said.contains("operator.database.urlSecret.name"),
        "{said}"
    );
    // With PostgreSQL: two replicas and a disruption budget.
    let shared = documents(&helm_template(&[
        "--set",
        "operator.replicas=2",
        "--set",
        "operator.database.urlSecret.name=veil-postgres",
    ]));
    assert_eq!(
        find(&shared, "Deployment", "veil-operator")["spec"]["replicas"],
        2
    );
    assert!(names(&shared).contains("PodDisruptionBudget/veil-system/veil-operator"));

    // Secrets are written in the namespaces named, never cluster-wide.
    let chart = documents(&helm_template(&[
        "--set",
        "rbac.secretNamespaces={vpn,edge}",
    ]));
    let writers: BTreeSet<String> = names(&chart)
        .into_iter()
        .filter(|name| name.contains("secret-writer"))
        .collect();
    assert_eq!(
        writers,
        [
            "ClusterRole/veil-operator-secret-writer",
            "RoleBinding/edge/veil-operator-secret-writer",
            "RoleBinding/veil-system/veil-operator-secret-writer",
            "RoleBinding/vpn/veil-operator-secret-writer",
        ]
        .map(str::to_owned)
        .into()
    );
    assert!(
        !names(&chart)
            .iter()
            .any(|name| name.starts_with("ClusterRoleBinding/veil-operator-secret"))
    );
}

#[test]
fn no_agent_manifest_mounts_a_token_secret() {
    for (what, yaml) in [
        (
            "manifests/agent.yaml",
            std::fs::read_to_string(path("manifests/agent.yaml")).unwrap(),
        ),
        ("the chart", helm_template(&[])),
    ] {
        let objects = documents(&yaml);
        let agent = find(&objects, "DaemonSet", "veil-agent");
        let spec = &agent["spec"]["template"]["spec"];
        let volumes = spec["volumes"].as_array().unwrap();
        // The one Secret volume: the key `ca.crt` of the operator's TLS
        // Secret (never its `tls.key`, never a token).
        for volume in volumes
            .iter()
            .filter(|volume| volume.get("secret").is_some())
        {
            assert_eq!(
                volume["secret"]["secretName"], "veil-operator-tls",
                "{what}: the agent mounts a Secret: {volumes:#?}"
            );
            assert_eq!(
                volume["secret"]["items"],
                serde_json::json!([{"key": "ca.crt", "path": "ca.crt"}]),
                "{what}: more than ca.crt of the TLS Secret: {volumes:#?}"
            );
        }
        let projected = volumes
            .iter()
            .find_map(|volume| volume["projected"]["sources"].as_array())
            .unwrap_or_else(|| panic!("{what}: no projected volume"));
        assert!(
            projected
                .iter()
                .all(|source| source.get("secret").is_none()),
            "{what}: {projected:#?}"
        );
        let token = &projected[0]["serviceAccountToken"];
        assert_eq!(token["audience"], "veil.dev/agent", "{what}");
        assert_eq!(token["expirationSeconds"], 3600, "{what}");
        let args: Vec<&str> = spec["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            args.contains(&"--token-file=/var/run/secrets/veil.dev/agent/token"),
            "{what}: {args:?}"
        );
        assert!(
            args.contains(&"--ca-file=/etc/veil/ca/ca.crt"),
            "{what}: {args:?}"
        );
        assert_eq!(spec["serviceAccountName"], "veil-agent", "{what}");
    }
}

#[tokio::test]
async fn argocd_health_checks_patch_into_an_existing_argocd_cm() {
    let cluster = TestCluster::shared().await;
    // An Argo CD install's own argocd-cm, with settings that must survive.
    let existing = write(
        cluster,
        "argocd-cm.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: argocd\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n  namespace: argocd\n\
         data:\n  url: https://argocd.example.org\n  \
         resource.customizations.health.example.org_Other: |\n    return {status = \"Healthy\"}\n",
    );
    apply(cluster, &existing);
    // The command examples/gitops/README.md gives.
    cluster.kubectl_ok(&[
        "-n",
        "argocd",
        "patch",
        "configmap",
        "argocd-cm",
        "--patch-file",
        &path("examples/gitops/argocd/argocd-cm.yaml"),
    ]);
    let config: Value = serde_json::from_str(&cluster.kubectl_ok(&[
        "-n",
        "argocd",
        "get",
        "configmap",
        "argocd-cm",
        "-o",
        "json",
    ]))
    .unwrap();
    let data = config["data"].as_object().unwrap();
    assert_eq!(data["url"], "https://argocd.example.org");
    assert!(data.contains_key("resource.customizations.health.example.org_Other"));
    for kind in veil_crds::kind::Kind::VEIL {
        let script = std::fs::read_to_string(path(&format!(
            "examples/gitops/argocd/health/{}.lua",
            kind.as_str()
        )))
        .unwrap();
        let key = format!("resource.customizations.health.veil.dev_{}", kind.as_str());
        assert_eq!(data[&key].as_str(), Some(script.as_str()), "{key}");
    }
}

#[test]
fn flux_and_argocd_objects_point_at_the_example() {
    let flux = documents(&std::fs::read_to_string(path("examples/gitops/flux/veil.yaml")).unwrap());
    let kustomization = find(&flux, "Kustomization", "veil");
    assert_eq!(kustomization["spec"]["path"], "./examples/gitops");
    assert_eq!(kustomization["spec"]["wait"], true);
    assert_eq!(
        kustomization["spec"]["sourceRef"]["name"],
        find(&flux, "GitRepository", "veil")["metadata"]["name"]
    );
    let argocd = documents(
        &std::fs::read_to_string(path("examples/gitops/argocd/application.yaml")).unwrap(),
    );
    let application = find(&argocd, "Application", "veil");
    assert_eq!(application["spec"]["source"]["path"], "examples/gitops");
    assert!(
        workspace_root()
            .join("examples/gitops/kustomization.yaml")
            .is_file()
    );
}
