//! Task benchmarks (issue 4): throughput through two agents, file write →
//! Running latency, operator memory with a long run history, agent idle cost.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{
    Agent, Operator, OperatorOptions, cpu_seconds, ms, pass_totals, peak_rss_kib, percentile,
    write_atomically,
};

const RUNNER: &str = "apiVersion: veil.dev/v1alpha1\nkind: Runner\nmetadata:\n  name: bench\nspec:\n  nodeSelector:\n    matchLabels:\n      role: bench\n  maxParallelTasks: 16\n  executors: [shell]\n";

fn runs_yaml(prefix: &str, from: usize, count: usize) -> String {
    let mut text = String::new();
    for i in from..from + count {
        text.push_str(&format!(
            "apiVersion: veil.dev/v1alpha1\nkind: TaskRun\nmetadata:\n  name: {prefix}-{i:05}\nspec:\n  task:\n    executor: shell\n    shell:\n      command: [\"echo\", \"run {i}\"]\n---\n"
        ));
    }
    text
}

async fn operator(dir: &Path) -> Operator {
    std::fs::write(dir.join("runner.yaml"), RUNNER).expect("runner");
    Operator::start_with(
        dir,
        OperatorOptions {
            extra_args: vec!["--heartbeat-interval".into(), "2".into()],
            ..Default::default()
        },
    )
    .await
}

/// Runs 1,000 TaskRuns through 2 agents, then measures write → Running, then 10,000 in history.
pub async fn run_all() {
    let dir = tempfile::tempdir().expect("temp dir");
    let op = operator(dir.path()).await;
    let agents = [
        Agent::start(&op, "bench-1", &["role=bench"]),
        Agent::start(&op, "bench-2", &["role=bench"]),
    ];
    wait_ready_nodes(&op, 2).await;

    throughput(&op, dir.path(), 1_000).await;
    write_to_running(&op, dir.path(), 100).await;
    agent_idle(&agents).await;
    if std::env::var("VEIL_BENCH_SKIP_HISTORY").is_err() {
        history(&op, dir.path(), 10_000).await;
        throughput_with_history(&op, dir.path(), 1_000).await;
    }
}

async fn wait_ready_nodes(op: &Operator, count: usize) {
    op.eventually("agents Ready", Duration::from_secs(30), || async {
        let ready = op
            .objects("veilnodes")
            .await
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        (ready >= count).then_some(())
    })
    .await;
}

/// Finished and total TaskRuns, read from `/metrics` (`veil_objects`), so
/// polling costs the operator nothing next to listing thousands of objects.
async fn finished(op: &Operator) -> (usize, usize) {
    let text = op
        .client()
        .get(format!("{}/metrics", op.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let (mut done, mut all) = (0, 0);
    for line in text
        .lines()
        .filter(|l| l.starts_with("veil_objects{kind=\"TaskRun\""))
    {
        let count: usize = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        all += count;
        if ["Succeeded", "Failed", "Cancelled"]
            .iter()
            .any(|p| line.contains(&format!("phase=\"{p}\"")))
        {
            done += count;
        }
    }
    (done, all)
}

async fn wait_finished(op: &Operator, total: usize, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (done, all) = finished(op).await;
        if done == total && all == total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {done}/{all} of {total} finished in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn throughput(op: &Operator, dir: &Path, count: usize) {
    let started = Instant::now();
    for file in 0..count.div_ceil(100) {
        let n = 100.min(count - file * 100);
        write_atomically(
            &dir.join(format!("tp-{file:03}.yaml")),
            &runs_yaml("tp", file * 100, n),
        );
    }
    wait_finished(op, count, "throughput runs", Duration::from_secs(300)).await;
    let elapsed = started.elapsed();
    let failed = op
        .objects("taskruns")
        .await
        .iter()
        .filter(|r| {
            r["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("tp-"))
                && r["status"]["phase"] != "Succeeded"
        })
        .count();
    let mut logged = 0;
    for i in (0..count).step_by(count / 20) {
        let (_, body) = op
            .api(&format!("/v1/logs/taskruns/default/tp-{i:05}"))
            .await;
        if body["chunks"].as_array().is_some_and(|c| {
            c.iter().any(|c| {
                c["text"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("run {i}")))
            })
        }) {
            logged += 1;
        }
    }
    println!(
        "taskruns_throughput: runs={count} agents=2 elapsed={:.1}s rate={:.0} runs/s not_succeeded={failed} logs_checked={logged}/20 (target >= 100 runs/s)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
}

async fn write_to_running(op: &Operator, dir: &Path, count: usize) {
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("lat-{i:05}");
        let started = Instant::now();
        write_atomically(&dir.join(format!("{name}.yaml")), &runs_yaml("lat", i, 1));
        op.eventually("running", Duration::from_secs(30), || async {
            let run = op.object("taskruns", &name).await?;
            matches!(
                run["status"]["phase"].as_str(),
                Some("Running" | "Succeeded")
            )
            .then_some(())
        })
        .await;
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "taskrun_write_to_running: runs={count} p50={:.1}ms p99={:.1}ms (target p99 < 200 ms)",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99))
    );
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn agent_idle(agents: &[Agent; 2]) {
    let pid = agents[0].pid();
    let before = cpu_ticks(pid);
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let ticks = cpu_ticks(pid) - before;
    println!(
        "agent_idle: rss={:.1}MiB cpu={:.2}% over {}s (clock ticks {ticks}; targets < 15 MB, ~0)",
        rss_kib(pid) as f64 / 1024.0,
        ticks as f64 / 100.0 / window.as_secs_f64() * 100.0,
        window.as_secs()
    );
}

/// `count` more runs (files of 100) once the history holds every run so far.
async fn throughput_with_history(op: &Operator, dir: &Path, count: usize) {
    let before = finished(op).await.1;
    let (cpu_before, passes_before) = (cpu_seconds(op.pid()), pass_totals(op).await);
    let started = Instant::now();
    for file in 0..count.div_ceil(100) {
        let n = 100.min(count - file * 100);
        write_atomically(
            &dir.join(format!("late-{file:03}.yaml")),
            &runs_yaml("late", file * 100, n),
        );
    }
    wait_finished(
        op,
        before + count,
        "runs after the history",
        Duration::from_secs(600),
    )
    .await;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(op.pid()) - cpu_before;
    let passes = pass_totals(op).await;
    let (pass_seconds, pass_count) = (passes.0 - passes_before.0, passes.1 - passes_before.1);
    println!(
        "taskruns_throughput_with_history: runs={count} with {before} finished in history elapsed={:.1}s rate={:.0} runs/s (target >= 250 runs/s); operator cpu={:.1}s passes={pass_count:.0} pass_mean={:.1}ms",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        cpu,
        pass_seconds * 1000.0 / pass_count.max(1.0),
    );
}

async fn history(op: &Operator, dir: &Path, total: usize) {
    let started = Instant::now();
    let before = finished(op).await.1;
    for file in 0..total.div_ceil(500) {
        let n = 500.min(total - file * 500);
        write_atomically(
            &dir.join(format!("hist-{file:03}.yaml")),
            &runs_yaml("hist", file * 500, n),
        );
    }
    wait_finished(op, before + total, "history runs", Duration::from_secs(600)).await;
    println!(
        "operator_with_history: finished_taskruns={} (plus {before} earlier) in {:.0}s; rss={:.1}MiB peak={:.1}MiB (target < 200 MB)",
        total,
        started.elapsed().as_secs_f64(),
        rss_kib(op.pid()) as f64 / 1024.0,
        peak_rss_kib(op.pid()) as f64 / 1024.0
    );
}
