//! Kubernetes-mode benchmarks (issue 5) against a real kube-apiserver +
//! etcd on loopback: 10,000 objects created → all statuses written, one spec
//! change → new status, and the API server's count of status writes during
//! an idle minute.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use veil_crds::veil_node::VeilNode;
use veil_e2e::kube::TestCluster;
use veil_e2e::process::{Operator, OperatorOptions};

use super::{ms, peak_rss_kib, percentile};

const OBJECTS: usize = 10_000;
/// Create requests in flight at once.
const CREATORS: usize = 32;
/// Spec changes timed one after another.
const SPEC_CHANGES: usize = 200;

pub async fn run_all() {
    let cluster = TestCluster::start().await;
    let client = cluster.client().await;
    let nodes: Api<VeilNode> = Api::all(client.clone());
    let empty = tempfile::tempdir().expect("temp dir");
    let op = Operator::start_with(
        empty.path(),
        OperatorOptions {
            source: Some("kube".into()),
            extra_args: vec![
                "--kubeconfig".into(),
                cluster.kubeconfig().display().to_string(),
                "--lease-namespace".into(),
                "default".into(),
            ],
            // VEIL_BENCH_OPERATOR_LOG=FILE: the operator logs each pass's
            // timings (debug) and the log is copied to FILE at the end.
            env: match std::env::var_os("VEIL_BENCH_OPERATOR_LOG") {
                Some(_) => vec![(
                    "RUST_LOG".into(),
                    "info,veil_operator::controller=debug".into(),
                )],
                None => Vec::new(),
            },
            ..OperatorOptions::default()
        },
    )
    .await;

    // 10,000 VeilNodes, created by server-side apply with CREATORS requests
    // in flight (how a GitOps controller or `kubectl apply` of many objects
    // with parallelism would create them).
    let started = Instant::now();
    futures::stream::iter(0..OBJECTS)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let name = format!("bench-{i:05}");
                let object = serde_json::json!({
                    "apiVersion": "veil.dev/v1alpha1",
                    "kind": "VeilNode",
                    "metadata": { "name": name },
                    "spec": { "labels": { "zone": format!("z{}", i % 7) } },
                });
                nodes
                    .patch(
                        &name,
                        &PatchParams::apply("veil-bench"),
                        &Patch::Apply(&object),
                    )
                    .await
                    .expect("create VeilNode");
            }
        })
        .buffer_unordered(CREATORS)
        .collect::<()>()
        .await;
    let applied = started.elapsed();
    loop {
        let list = nodes.list(&ListParams::default()).await.expect("list");
        let done = list
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation == n.metadata.generation)
            })
            .count();
        if done >= OBJECTS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {done} statuses after 5 minutes; operator log:\n{}",
            op.log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all = started.elapsed();
    println!(
        "kube_{OBJECTS}_objects: created in {:.1}s ({CREATORS} server-side applies in flight), all statuses written {:.1}s after the start (target < 30 s); operator peak RSS {:.1}MiB (target < 250 MB)",
        applied.as_secs_f64(),
        all.as_secs_f64(),
        peak_rss_kib(op.pid()) as f64 / 1024.0
    );

    // One spec change → its status, SPEC_CHANGES times (enough samples for
    // the 99th percentile not to be simply the slowest one).
    let mut samples = Vec::new();
    for i in 0..SPEC_CHANGES {
        let name = format!("bench-{:05}", i * 37);
        let patch = serde_json::json!({ "spec": { "labels": { "bench": format!("b{i}") } } });
        let started = Instant::now();
        let changed = nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch spec");
        let generation = changed.metadata.generation;
        loop {
            let node = nodes.get(&name).await.expect("get");
            if node.status.as_ref().and_then(|s| s.observed_generation) == generation {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no status for {name}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "kube_spec_change_to_status: changes={SPEC_CHANGES} p50={:.1}ms p99={:.1}ms max={:.1}ms (target p99 < 200 ms)",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().expect("samples"))
    );

    // An idle minute: status writes the API server counted.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = status_patches(&cluster);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = status_patches(&cluster);
    println!(
        "kube_idle_minute_status_writes: {} (target 0)",
        after.saturating_sub(before)
    );
    if let Some(file) = std::env::var_os("VEIL_BENCH_OPERATOR_LOG") {
        std::fs::write(&file, op.log()).expect("write the operator log");
    }
    drop(op);
}

/// Status PATCH requests the API server has served for veil.dev kinds,
/// from its own `apiserver_request_total` metric.
fn status_patches(cluster: &TestCluster) -> u64 {
    let metrics = cluster.kubectl_ok(&["get", "--raw", "/metrics"]);
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains("group=\"veil.dev\"") && l.contains("subresource=\"status\""))
        .filter(|l| l.contains("verb=\"PATCH\"") || l.contains("verb=\"APPLY\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}
