//! `make bench`: measures what the issues name targets for and prints the
//! figures (record them in docs/benchmarks.md). Uses release binaries and
//! real processes on loopback; every loop is bounded.

use std::path::Path;
use std::time::{Duration, Instant};

use veil_e2e::process::{Agent, Operator, OperatorOptions};

mod failover;
mod kube;
mod probes;
mod strategy;
mod tasks;
mod vless;

#[tokio::main]
async fn main() {
    println!("# veil-bench ({})", chrono_like_now());
    let only = std::env::var("VEIL_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "dir" {
        edit_to_status_latency(200).await;
        start_with_many_objects(10_000).await;
    }
    if only.is_empty() || only == "tasks" {
        tasks::run_all().await;
    }
    if only.is_empty() || only == "vless" {
        vless::run_all().await;
    }
    if only.is_empty() || only == "kube" {
        kube::run_all().await;
    }
    if only.is_empty() || only == "probes" {
        tokio::task::spawn_blocking(probes::run_all)
            .await
            .expect("probe benchmark");
    }
    if only.is_empty() || only == "failover" {
        tokio::task::spawn_blocking(failover::run_all)
            .await
            .expect("failover benchmark");
    }
    if only.is_empty() || only == "strategy" {
        tokio::task::spawn_blocking(strategy::run_all)
            .await
            .expect("strategy benchmarks");
    }
}

fn chrono_like_now() -> String {
    let out = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn node_yaml(name: &str, zone: usize) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: VeilNode\nmetadata:\n  name: {name}\nspec:\n  labels:\n    zone: z{zone}\n"
    )
}

pub(crate) fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// File write → new status readable through the `get` API, over `edits` edits.
async fn edit_to_status_latency(edits: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("node.yaml");
    write_atomically(&file, &node_yaml("bench", 0));
    let op = Operator::start(dir.path()).await;
    wait_generation(&op, 1, Duration::from_secs(10)).await;
    let mut samples = Vec::with_capacity(edits);
    for i in 1..=edits {
        let started = Instant::now();
        write_atomically(&file, &node_yaml("bench", i));
        wait_generation(&op, (i + 1) as i64, Duration::from_secs(10)).await;
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "edit_to_status: edits={edits} p50={:.1}ms p99={:.1}ms max={:.1}ms (target p99 < 100 ms)",
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().expect("samples"))
    );
}

async fn wait_generation(op: &Operator, generation: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(object) = op.object("veilnodes", "bench").await
            && object["status"]["observedGeneration"] == generation
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "generation {generation} not observed in time:\n{}",
            op.log()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Operator start → every status computed, for a directory of `count` objects.
async fn start_with_many_objects(count: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let per_file = 100;
    for file in 0..count.div_ceil(per_file) {
        let mut text = String::new();
        for i in 0..per_file {
            let n = file * per_file + i;
            if n >= count {
                break;
            }
            text.push_str(&node_yaml(&format!("node-{n:05}"), n % 7));
            text.push_str("---\n");
        }
        std::fs::write(dir.path().join(format!("f{file:03}.yaml")), text).expect("write");
    }
    let started = Instant::now();
    let op = Operator::start(dir.path()).await;
    let ready = started.elapsed();
    let all = op
        .eventually("all statuses", Duration::from_secs(60), || async {
            let items = op.objects("veilnodes").await;
            (items.len() == count && items.iter().all(|o| !o["status"].is_null())).then_some(())
        })
        .await;
    let _: () = all;
    let total = started.elapsed();
    let rss = peak_rss_kib(op.pid());
    println!(
        "start_{count}_objects: ready={:.0}ms all_statuses={:.0}ms peak_rss={:.1}MiB (targets < 3 s, < 150 MB)",
        ms(ready),
        ms(total),
        rss as f64 / 1024.0
    );
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// VmHWM of a process (peak resident set), in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The reconcile passes so far: (seconds spent, count).
pub(crate) async fn pass_totals(op: &Operator) -> (f64, f64) {
    let sum = op.metric("veil_reconcile_pass_duration_seconds_sum").await;
    let count = op
        .metric("veil_reconcile_pass_duration_seconds_count")
        .await;
    (sum.unwrap_or(0.0), count.unwrap_or(0.0))
}

/// Seconds the reconcile passes so far spent planning (world in, plan
/// out: the pure part of a pass, without its store writes).
pub(crate) async fn plan_seconds(op: &Operator) -> f64 {
    op.metric("veil_reconcile_duration_seconds_sum{kind=\"all\"}")
        .await
        .unwrap_or(0.0)
}

/// User + system CPU seconds the process `pid` used so far.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime: fields 14 and 15 of the line, counted from 1.
    (ticks(11) + ticks(12)) / 100.0
}
