//! Who may do what: the operator's RBAC is not one verb wider than what it
//! does (`kubectl auth can-i` as its service account, after a real apply;
//! that it is enough is [`super::at_work`]'s part); a namespace-scoped
//! install stays in its namespace; and the Pod Security profiles admit the
//! operator's pod as `restricted` and the agent's only where privileged
//! pods are allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;
use veil_e2e::kube::TestCluster;

use super::{apply, documents, dry_run, helm, path, succeeded, write};

/// The operator's identity as the API server sees it.
pub(crate) const OPERATOR: &str = "system:serviceaccount:veil-system:veil-operator";
/// The agent's: it must be able to do nothing an unbound account cannot.
const AGENT: &str = "system:serviceaccount:veil-system:veil-agent";
/// An account nothing is bound to: what every authenticated caller may do.
const NOBODY: &str = "system:serviceaccount:veil-system:nobody";
/// How long a new RoleBinding may take to reach the API server's authorizer.
const RBAC_PROPAGATION: Duration = Duration::from_secs(30);

/// `kubectl auth can-i` as `user`: `args` are verb, resource and flags.
fn can_i(cluster: &TestCluster, user: &str, args: &[&str]) -> bool {
    let mut command = vec!["auth", "can-i"];
    command.extend(args);
    command.extend(["--as", user]);
    let output = cluster.kubectl(&command);
    match String::from_utf8_lossy(&output.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl {}: {other} {}",
            command.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Waits (bounded) until the authorizer has seen a new binding.
pub(crate) fn wait_until_allowed(cluster: &TestCluster, user: &str, args: &[&str]) {
    let deadline = Instant::now() + RBAC_PROPAGATION;
    while !can_i(cluster, user, args) {
        assert!(
            Instant::now() < deadline,
            "{user} still may not {args:?} after {RBAC_PROPAGATION:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kubectl auth can-i --list` in `namespace`: resource → verbs.
fn granted(
    cluster: &TestCluster,
    user: &str,
    namespace: &str,
) -> BTreeMap<String, BTreeSet<String>> {
    let table = cluster.kubectl_ok(&["auth", "can-i", "--list", "--as", user, "-n", namespace]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    let urls = header.find("Non-Resource URLs").unwrap();
    let verbs = header.find("Verbs").unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in lines {
        let resource = line[..urls].trim();
        if resource.is_empty() {
            continue; // a non-resource URL (/healthz, /version …)
        }
        let listed = line[verbs..]
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']');
        out.entry(resource.to_owned())
            .or_default()
            .extend(listed.split_whitespace().map(str::to_owned));
    }
    out
}

#[tokio::test]
async fn operator_rbac_allows_what_it_does_and_nothing_more() {
    let cluster = TestCluster::shared().await;
    apply(cluster, &path("manifests/namespace.yaml"));
    apply(cluster, &path("manifests/rbac.yaml"));
    wait_until_allowed(cluster, OPERATOR, &["list", "vlesskeys.veil.dev", "-A"]);

    let allowed: &[&[&str]] = &[
        &["list", "vlesskeys.veil.dev", "-A"],
        &["watch", "vlesskeys.veil.dev", "-n", "veil-demo"],
        &["get", "veilnodes.veil.dev"],
        &["watch", "taskruns.veil.dev", "-A"],
        &["list", "schedules.veil.dev", "-A"],
        &[
            "patch",
            "vlesskeys.veil.dev",
            "--subresource=status",
            "-n",
            "veil-demo",
        ],
        &["patch", "veilnodes.veil.dev", "--subresource=status"],
        &["create", "veilnodes.veil.dev"],
        &[
            "patch",
            "taskruns.veil.dev",
            "--subresource=status",
            "-n",
            "veil-demo",
        ],
        &["create", "taskruns.veil.dev", "-n", "veil-demo"],
        &["delete", "taskruns.veil.dev", "-n", "veil-demo"],
        &[
            "update",
            "schedules.veil.dev",
            "--subresource=finalizers",
            "-n",
            "veil-demo",
        ],
        &["get", "secrets", "-n", "veil-demo"],
        &["watch", "secrets", "-A"],
        // Writing Secrets: in its own namespace (bound there), nowhere else
        // unless a RoleBinding of veil-operator-secret-writer says so.
        &["create", "secrets", "-n", "veil-system"],
        &["patch", "secrets", "-n", "veil-system"],
        // Agent pods' ServiceAccount tokens.
        &["create", "tokenreviews.authentication.k8s.io"],
        // The Pod a Lease names, and its ReplicaSet.
        &["get", "pods", "-n", "veil-system"],
        &["get", "replicasets.apps", "-n", "veil-system"],
        &["create", "events", "-n", "veil-demo"],
        &["patch", "events", "-n", "veil-demo"],
        &["create", "events.events.k8s.io", "-n", "veil-demo"],
        &["get", "leases.coordination.k8s.io", "-n", "veil-system"],
        &["create", "leases.coordination.k8s.io", "-n", "veil-system"],
        &["update", "leases.coordination.k8s.io", "-n", "veil-system"],
    ];
    let denied: &[&[&str]] = &[
        &["*", "*"],
        &["*", "*", "-n", "veil-system"],
        &["delete", "vlesskeys.veil.dev", "-n", "veil-demo"],
        &["patch", "vlesskeys.veil.dev", "-n", "veil-demo"],
        &["update", "vlesskeys.veil.dev", "-n", "veil-demo"],
        &["create", "vlesskeys.veil.dev", "-n", "veil-demo"],
        &[
            "update",
            "vlesskeys.veil.dev",
            "--subresource=status",
            "-n",
            "veil-demo",
        ],
        &["patch", "schedules.veil.dev", "-n", "veil-demo"],
        &["patch", "taskruns.veil.dev", "-n", "veil-demo"],
        &["delete", "veilnodes.veil.dev"],
        &["update", "veilnodes.veil.dev"],
        &["delete", "secrets", "-n", "veil-demo"],
        // Never a cluster-wide create: it could mint a token Secret for any
        // ServiceAccount and read it back.
        &["create", "secrets", "-A"],
        &["create", "secrets"],
        &["create", "secrets", "-n", "veil-demo"],
        &["update", "secrets", "-n", "veil-demo"],
        &["patch", "secrets", "-n", "default"],
        &["create", "secrets", "-n", "kube-system"],
        &["delete", "events", "-n", "veil-demo"],
        &["create", "pods", "-n", "veil-system"],
        &["list", "pods", "-n", "veil-system"],
        &["get", "pods", "-n", "veil-demo"],
        &["update", "replicasets.apps", "-n", "veil-system"],
        &["list", "replicasets.apps", "-n", "veil-system"],
        &["get", "configmaps", "-n", "veil-system"],
        &["get", "nodes"],
        &["get", "namespaces"],
        &["update", "leases.coordination.k8s.io", "-n", "kube-system"],
        &["get", "leases.coordination.k8s.io", "-n", "default"],
        &["delete", "leases.coordination.k8s.io", "-n", "veil-system"],
        &["list", "leases.coordination.k8s.io", "-n", "veil-system"],
        &["create", "clusterroles.rbac.authorization.k8s.io"],
        &[
            "create",
            "serviceaccounts",
            "--subresource=token",
            "-n",
            "veil-system",
        ],
        &["impersonate", "users"],
        &["update", "customresourcedefinitions.apiextensions.k8s.io"],
    ];
    let mut wrong = Vec::new();
    for (args, expected) in allowed
        .iter()
        .map(|args| (args, true))
        .chain(denied.iter().map(|args| (args, false)))
    {
        if can_i(cluster, OPERATOR, args) != expected {
            wrong.push(format!(
                "{} {}",
                if expected {
                    "should be allowed:"
                } else {
                    "should be denied:"
                },
                args.join(" ")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Everything the operator may do beyond what any account may: exactly this.
    let baseline = granted(cluster, NOBODY, "veil-system");
    let mut extra = granted(cluster, OPERATOR, "veil-system");
    extra.retain(|resource, verbs| {
        verbs.retain(|verb| {
            !baseline
                .get(resource)
                .is_some_and(|base| base.contains(verb))
        });
        !verbs.is_empty()
    });
    let read = ["get", "list", "watch"];
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut grant = |resource: &str, verbs: &[&str]| {
        expected
            .entry(resource.to_owned())
            .or_default()
            .extend(verbs.iter().map(|verb| (*verb).to_owned()));
    };
    for plural in [
        "veilnodes",
        "protocolservers",
        "vlesskeys",
        "strategies",
        "runners",
        "schedules",
        "taskruns",
    ] {
        grant(&format!("{plural}.veil.dev"), &read);
        grant(&format!("{plural}.veil.dev/status"), &["patch"]);
    }
    grant("veilnodes.veil.dev", &["create"]);
    grant("taskruns.veil.dev", &["create", "delete"]);
    grant("schedules.veil.dev/finalizers", &["update"]);
    grant(
        "secrets",
        &["get", "list", "watch", "create", "update", "patch"],
    );
    grant("events", &["create", "patch"]);
    grant("events.events.k8s.io", &["create", "patch"]);
    grant("leases.coordination.k8s.io", &["get", "create", "update"]);
    grant("pods", &["get"]);
    grant("replicasets.apps", &["get"]);
    grant("tokenreviews.authentication.k8s.io", &["create"]);
    assert_eq!(extra, expected);

    // In a watched namespace it reads Secrets and writes none.
    let baseline = granted(cluster, NOBODY, "veil-demo");
    let watched = granted(cluster, OPERATOR, "veil-demo");
    let secrets: BTreeSet<String> = watched["secrets"]
        .difference(baseline.get("secrets").unwrap_or(&BTreeSet::new()))
        .cloned()
        .collect();
    assert_eq!(secrets, ["get", "list", "watch"].map(str::to_owned).into());

    // The agent never calls the API server: it may do what nobody may.
    assert_eq!(granted(cluster, AGENT, "veil-system"), baseline);
}

#[tokio::test]
async fn namespace_scoped_chart_rbac_stays_in_its_namespace() {
    let cluster = TestCluster::shared().await;
    for namespace in ["veil-scoped", "scoped-objects"] {
        let file = write(
            cluster,
            &format!("namespace-{namespace}.yaml"),
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n"),
        );
        apply(cluster, &file);
    }
    // Release `scoped` in veil-scoped, watching scoped-objects: its own names.
    let rendered = succeeded(
        "helm template scoped",
        &helm(&[
            "template",
            "scoped",
            "charts/veil",
            "-n",
            "veil-scoped",
            "--set",
            "rbac.scope=namespace",
            "--set",
            "rbac.namespace=scoped-objects",
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ]),
    );
    apply(
        cluster,
        &write(cluster, "chart-scoped-rbac.yaml", &rendered),
    );
    let operator = "system:serviceaccount:veil-scoped:scoped-veil-operator";
    wait_until_allowed(
        cluster,
        operator,
        &["list", "vlesskeys.veil.dev", "-n", "scoped-objects"],
    );
    wait_until_allowed(
        cluster,
        operator,
        &["update", "leases.coordination.k8s.io", "-n", "veil-scoped"],
    );

    let allowed: &[&[&str]] = &[
        &["watch", "vlesskeys.veil.dev", "-n", "scoped-objects"],
        &[
            "patch",
            "vlesskeys.veil.dev",
            "--subresource=status",
            "-n",
            "scoped-objects",
        ],
        &["create", "taskruns.veil.dev", "-n", "scoped-objects"],
        &["get", "secrets", "-n", "scoped-objects"],
        &["create", "events.events.k8s.io", "-n", "scoped-objects"],
        &["list", "veilnodes.veil.dev"],
        &["patch", "veilnodes.veil.dev", "--subresource=status"],
        &["create", "veilnodes.veil.dev"],
        &["create", "leases.coordination.k8s.io", "-n", "veil-scoped"],
        // Agent tokens: the node-token Secrets of its own namespace.
        &["watch", "secrets", "-n", "veil-scoped"],
        &["get", "secrets", "-n", "veil-scoped"],
        // Secrets it writes: in the watched namespace and its own only.
        &["create", "secrets", "-n", "scoped-objects"],
        &["patch", "secrets", "-n", "scoped-objects"],
        &["create", "secrets", "-n", "veil-scoped"],
        &["create", "tokenreviews.authentication.k8s.io"],
    ];
    let denied: &[&[&str]] = &[
        &["list", "vlesskeys.veil.dev", "-A"],
        &["list", "vlesskeys.veil.dev", "-n", "default"],
        &["get", "secrets", "-n", "default"],
        &["create", "secrets", "-n", "default"],
        &["create", "secrets", "-A"],
        &["delete", "secrets", "-n", "veil-scoped"],
        &["list", "secrets", "-A"],
        &["create", "taskruns.veil.dev", "-n", "default"],
        &[
            "update",
            "leases.coordination.k8s.io",
            "-n",
            "scoped-objects",
        ],
        &["patch", "vlesskeys.veil.dev", "-n", "scoped-objects"],
        &["delete", "veilnodes.veil.dev"],
    ];
    for args in allowed {
        assert!(
            can_i(cluster, operator, args),
            "should be allowed: {args:?}"
        );
    }
    for args in denied {
        assert!(
            !can_i(cluster, operator, args),
            "should be denied: {args:?}"
        );
    }
}

/// A Pod with the pod template of `manifest`'s `kind`, in `namespace`.
fn pod_from(manifest: &str, kind: &str, namespace: &str) -> String {
    let objects = documents(&std::fs::read_to_string(path(manifest)).unwrap());
    let workload = objects
        .iter()
        .find(|object| object["kind"] == kind)
        .unwrap();
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("{}-pod", workload["metadata"]["name"].as_str().unwrap()), "namespace": namespace},
        "spec": workload["spec"]["template"]["spec"],
    });
    serde_json::to_string(&pod).unwrap()
}

#[tokio::test]
async fn operator_pods_meet_the_restricted_profile_and_agents_need_privileged() {
    let cluster = TestCluster::shared().await;
    apply(cluster, &path("manifests/namespace.yaml"));
    apply(cluster, &path("manifests/rbac.yaml"));
    let restricted = write(
        cluster,
        "pss-restricted.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: pss-restricted\n  labels:\n    \
         pod-security.kubernetes.io/enforce: restricted\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: veil-operator\n  namespace: pss-restricted\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: veil-agent\n  namespace: pss-restricted\n",
    );
    apply(cluster, &restricted);

    let operator = write(
        cluster,
        "operator-pod.json",
        &pod_from("manifests/operator.yaml", "Deployment", "pss-restricted"),
    );
    assert_eq!(
        dry_run(cluster, &operator),
        ["pod/veil-operator-pod".to_owned()].into()
    );

    // The agent is refused by `restricted`, for the reasons agent.yaml gives…
    let agent = write(
        cluster,
        "agent-pod-restricted.json",
        &pod_from("manifests/agent.yaml", "DaemonSet", "pss-restricted"),
    );
    let refused = cluster.kubectl(&["apply", "--dry-run=server", "-f", &agent]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    for reason in ["hostNetwork", "NET_ADMIN", "NET_RAW", "hostPath"] {
        assert!(why.contains(reason), "{why}");
    }
    assert!(
        !why.contains("NET_BIND_SERVICE"),
        "restricted allows NET_BIND_SERVICE: {why}"
    );
    // …and admitted in veil-system, whose namespace.yaml allows it.
    let agent = write(
        cluster,
        "agent-pod.json",
        &pod_from("manifests/agent.yaml", "DaemonSet", "veil-system"),
    );
    assert_eq!(
        dry_run(cluster, &agent),
        ["pod/veil-agent-pod".to_owned()].into()
    );
}
