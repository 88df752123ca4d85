//! VLESS benchmarks (issue 6): 10,000 keys from files to xray, key add and
//! remove latency with xray restarts counted, agent memory with 10,000
//! users, the cost of one stats read, and the panels' way (restarting xray
//! with a 10,000-user config) on the same machine for comparison.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use veil_agent::drivers::xray::api::XrayApi;
use veil_e2e::process::{Agent, AgentOptions, Operator, free_port};
use veil_e2e::xray::{RealityDest, xray_binary};

use super::{cpu_seconds, ms, pass_totals, percentile, plan_seconds, write_atomically};

/// Keys on the one server: `VEIL_BENCH_VLESS_KEYS` (default 10,000).
static KEYS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    std::env::var("VEIL_BENCH_VLESS_KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
});

fn server_yaml(port: u16, dest: &RealityDest) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: ProtocolServer\nmetadata:\n  name: edge\nspec:\n  protocol: vless\n  listen: 127.0.0.1\n  port: {port}\n  allowCidrs: [{}]\n  vless:\n    reality:\n      dest: \"{}\"\n      serverNames: [{}]\n",
        veil_e2e::xray::ALLOW_CIDRS.join(", "),
        dest.dest(),
        dest.server_name
    )
}

fn key_yaml(name: &str) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: VlessKey\nmetadata:\n  name: {name}\nspec:\n  serverRef:\n    name: edge\n"
    )
}

pub async fn run_all() {
    let keys = *KEYS;
    let dest = RealityDest::start();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("server.yaml"),
        server_yaml(free_port(), &dest),
    )
    .expect("server");
    // The server and every key fit under the operator's object limit.
    let op = Operator::start_with(
        dir.path(),
        veil_e2e::process::OperatorOptions {
            extra_args: vec!["--max-objects".into(), (*KEYS + 1_000).to_string()],
            ..Default::default()
        },
    )
    .await;
    let agent = Agent::start_with(&op, "bench-edge", &[], &AgentOptions::default());
    let first = server_node(&op, |n| n["phase"] == "Running").await;
    let pid = first["pid"].clone();

    let files = ten_thousand_keys(&op, dir.path(), &agent).await;
    add_remove_latency(&op, dir.path(), 100, keys).await;
    for n in 0..files {
        std::fs::remove_file(dir.path().join(format!("keys-{n:03}.yaml"))).expect("remove keys");
    }
    server_node(&op, |n| n["users"] == 0).await;
    add_remove_latency(&op, dir.path(), 500, 0).await;
    let last = server_node(&op, |_| true).await;
    println!(
        "vless_xray_restarts: {} (pid {} → {}, target 0)",
        last["restarts"], pid, last["pid"]
    );
    stats_and_restart_cost(&dest).await;
}

/// The first node entry of the server's status once `check` holds.
async fn server_node(op: &Operator, check: impl Fn(&Value) -> bool) -> Value {
    op.eventually("server status", Duration::from_secs(120), || async {
        let server = op.object("protocolservers", "edge").await?;
        let node = server["status"]["nodes"].get(0)?.clone();
        check(&node).then_some(node)
    })
    .await
}

/// Writes 10,000 keys and waits until xray has them all; returns how many
/// files hold them (`keys-NN.yaml`).
async fn ten_thousand_keys(op: &Operator, dir: &Path, agent: &Agent) -> usize {
    let keys = *KEYS;
    // Files of 1,000 keys (one file may hold at most 5,000 documents).
    let files: Vec<String> = (0..keys)
        .collect::<Vec<_>>()
        .chunks(1_000)
        .map(|chunk| {
            chunk
                .iter()
                .map(|i| format!("{}---\n", key_yaml(&format!("k{i:05}"))))
                .collect()
        })
        .collect();
    let started = Instant::now();
    for (n, text) in files.iter().enumerate() {
        write_atomically(&dir.join(format!("keys-{n:03}.yaml")), text);
    }
    server_node(op, |n| n["users"] == keys as u64).await;
    let applied = started.elapsed();
    println!(
        "vless_{keys}_keys_to_xray: {:.0}ms from file write to all users in xray (target < 5 s)",
        ms(applied)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "vless_agent_rss_{keys}_users: {:.1}MiB now, peak {:.1}MiB (target < 40 MB)",
        rss_kib(agent.pid(), "VmRSS:") as f64 / 1024.0,
        rss_kib(agent.pid(), "VmHWM:") as f64 / 1024.0
    );
    println!(
        "vless_operator_rss_{keys}_keys: {:.1}MiB now, peak {:.1}MiB (target < 600 MB at 100,000)",
        rss_kib(op.pid(), "VmRSS:") as f64 / 1024.0,
        rss_kib(op.pid(), "VmHWM:") as f64 / 1024.0
    );
    files.len()
}

/// `ops` keys added then removed one at a time: file write → key Active,
/// file removal → user gone from xray (the server's reported user count).
async fn add_remove_latency(op: &Operator, dir: &Path, ops: usize, present: usize) {
    let mut added = Vec::with_capacity(ops);
    let mut removed = Vec::with_capacity(ops);
    let sent_before = assignment_bytes(op).await;
    let cpu_before = cpu_seconds(op.pid());
    let passes_before = pass_totals(op).await;
    let planned_before = plan_seconds(op).await;
    for i in 0..ops {
        let name = format!("lat{i:04}");
        let file = dir.join(format!("{name}.yaml"));
        let started = Instant::now();
        write_atomically(&file, &key_yaml(&name));
        op.eventually("key Active", Duration::from_secs(30), || async {
            let key = op.object("vlesskeys", &name).await?;
            (key["status"]["phase"] == "Active").then_some(())
        })
        .await;
        added.push(started.elapsed());
        let started = Instant::now();
        std::fs::remove_file(&file).expect("remove");
        server_node(op, |n| n["users"] == present as u64).await;
        removed.push(started.elapsed());
    }
    let sent = assignment_bytes(op).await;
    let cpu = cpu_seconds(op.pid()) - cpu_before;
    let passes = pass_totals(op).await;
    let pass_count = passes.1 - passes_before.1;
    println!(
        "vless_operator_cpu_per_change: {:.2}ms CPU per key change with {present} other keys ({} changes, {pass_count:.0} passes of {:.2}ms mean wall time; target < 2 ms at 100,000)",
        cpu * 1e3 / (2 * ops) as f64,
        2 * ops,
        (passes.0 - passes_before.0) * 1e3 / pass_count.max(1.0),
    );
    println!(
        "vless_plan_per_change: {:.3}ms planning per key change with {present} other keys (the passes' plan timings; target < 2 ms at 100,000)",
        (plan_seconds(op).await - planned_before) * 1e3 / (2 * ops) as f64,
    );
    added.sort();
    removed.sort();
    println!(
        "vless_assignment_bytes_per_key_change: {:.0} bytes as deltas, {:.0} as whole assignments, with {present} other keys ({} changes; target < 2 KB)",
        (sent.0 - sent_before.0) / (2 * ops) as f64,
        (sent.1 - sent_before.1) / (2 * ops) as f64,
        2 * ops
    );
    println!(
        "vless_key_add: ops={ops} with {present} other keys p50={:.1}ms p99={:.1}ms max={:.1}ms (file write → Active; target p99 < 300 ms)",
        ms(percentile(&added, 0.5)),
        ms(percentile(&added, 0.99)),
        ms(*added.last().expect("samples"))
    );
    println!(
        "vless_key_remove: ops={ops} with {present} other keys p50={:.1}ms p99={:.1}ms max={:.1}ms (file removal → user gone from xray)",
        ms(percentile(&removed, 0.5)),
        ms(percentile(&removed, 0.99)),
        ms(*removed.last().expect("samples"))
    );
}

/// Bytes of assignments the operator sent so far: (as deltas, whole).
async fn assignment_bytes(op: &Operator) -> (f64, f64) {
    let sent = async |encoding: &str| {
        op.metric(&format!(
            "veil_assignment_bytes_total{{encoding=\"{encoding}\"}}"
        ))
        .await
        .unwrap_or(0.0)
    };
    (sent("delta").await, sent("full").await)
}

/// A fresh xray with a 10,000-user config: time until its API answers (what
/// a panel's restart costs, every connection dropped meanwhile), and the
/// cost of one `QueryStats` read with reset over all users.
async fn stats_and_restart_cost(dest: &RealityDest) {
    let keys = *KEYS;
    let dir = tempfile::tempdir().expect("temp dir");
    let api_port = free_port();
    let plain_port = free_port();
    let clients: Vec<Value> = (0..keys)
        .map(|i| {
            serde_json::json!({
                "id": format!("6f2a1c3e-0000-4000-8000-{i:012}"),
                "email": format!("user{i}"),
                "flow": "",
            })
        })
        .collect();
    let private_key = veil_crds::reality::generate_private_key();
    let config = serde_json::json!({
        "log": { "loglevel": "warning" },
        "api": { "tag": "api", "listen": format!("127.0.0.1:{api_port}"), "services": ["HandlerService", "StatsService"] },
        "stats": {},
        "policy": { "levels": { "0": { "statsUserUplink": true, "statsUserDownlink": true } } },
        "inbounds": [{
            // Plain VLESS (no Reality) with the same users: lets the bench
            // give every user real traffic, so every user has counters.
            "tag": "plain-in", "listen": "127.0.0.1", "port": plain_port, "protocol": "vless",
            "settings": { "clients": clients.clone(), "decryption": "none" },
        }, {
            "tag": "vless-in", "listen": "127.0.0.1", "port": free_port(), "protocol": "vless",
            "settings": { "clients": clients, "decryption": "none" },
            "streamSettings": { "network": "tcp", "security": "reality", "realitySettings": {
                "dest": dest.dest(), "serverNames": [dest.server_name], "privateKey": private_key, "shortIds": [""],
            }},
        }],
        "outbounds": [{ "protocol": "freedom" }],
    });
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("write");
    let started = Instant::now();
    let mut child = std::process::Command::new(xray_binary())
        .args(["run", "-c"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("xray");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], api_port));
    let api = loop {
        if let Ok(api) = XrayApi::connect(addr).await
            && api.inbound_users_count("vless-in").await.is_ok()
        {
            break api;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "xray did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let restart = started.elapsed();
    println!(
        "xray_restart_{keys}_users: {:.0}ms from start to API ready (the panels' way; every connection dropped)",
        ms(restart)
    );
    let echo = veil_e2e::xray::ByteServer::start().await;
    let started = Instant::now();
    touch_every_user(plain_port, echo.addr).await;
    println!(
        "xray_traffic_for_{keys}_users: {:.0}ms to move a few bytes as every user (plain VLESS, 64 at a time)",
        ms(started.elapsed())
    );
    let mut samples = Vec::new();
    let mut counters = 0;
    for _ in 0..20 {
        let started = Instant::now();
        counters = api.user_traffic(true).await.expect("stats").len();
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "xray_stats_read_{keys}_users: {counters} users with counters, p50={:.2}ms max={:.2}ms per read (QueryStats reset)",
        ms(percentile(&samples, 0.5)),
        ms(*samples.last().expect("samples"))
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// One short VLESS request per user through the plain inbound, so each
/// user's counters exist (xray creates them on first traffic).
async fn touch_every_user(port: u16, echo: std::net::SocketAddr) {
    let keys = *KEYS;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let std::net::SocketAddr::V4(echo) = echo else {
        panic!("IPv4 echo server expected");
    };
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..keys {
        let permit = semaphore.clone().acquire_owned().await.expect("semaphore");
        tasks.spawn(async move {
            let _permit = permit;
            let id = format!("6f2a1c3e00004000800{i:013}");
            let mut request = vec![0u8];
            for pair in id.as_bytes().chunks(2) {
                let hex = std::str::from_utf8(pair).expect("hex");
                request.push(u8::from_str_radix(hex, 16).expect("hex"));
            }
            // No addons, command TCP, port, IPv4 address, then the payload.
            request.extend_from_slice(&[0, 1]);
            request.extend_from_slice(&echo.port().to_be_bytes());
            request.push(1);
            request.extend_from_slice(&echo.ip().octets());
            request.extend_from_slice(b"Eping");
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("plain inbound");
            stream.write_all(&request).await.expect("request");
            // Response header (version, addons length), then the echo.
            let mut reply = [0u8; 2 + 4];
            stream
                .read_exact(&mut reply)
                .await
                .expect("echo through xray");
            assert_eq!(&reply[2..], b"ping");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("user request");
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
