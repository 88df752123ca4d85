//! Strategy benchmarks (issue 12, design §4e), with the real built-in
//! engine (`veil-agent desync`, `--dpi-desync=multisplit
//! --dpi-desync-split-pos=1,midsld` on a hostlist holding the ClientHello's
//! name) in [c] of a client ─ router ─ server set of network namespaces,
//! behind the capture rule the agent installs (connbytes 1:6, the
//! loop-prevention mark, `--queue-bypass`):
//!
//! - added first-packet latency: connect + ClientHello + its echo from a
//!   TCP echo server in [s], with the rule minus without (blocks of each,
//!   alternating, so a busy neighbour hits both);
//! - new connections per second through the engine, several client threads;
//! - bulk download throughput with the rule vs without;
//! - composing 1,000 Strategies with 10,000-domain hostlists.
//!
//! [s] counts, for every connection, whether its first data segment
//! arrived split, so a figure measured with the engine bypassed (queue
//! full, engine dead) shows as such instead of passing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lab::{Lab, download, exchange};

use crate::{ms, percentile};

mod compose;
mod lab;

/// Samples per mode for the latency figure, in alternating blocks.
const LATENCY_SAMPLES: usize = 2_000;
const LATENCY_BLOCKS: usize = 8;
const CONNECTIONS: usize = 5_000;
const CLIENT_THREADS: usize = 8;
const CONNECTIONS_TIME_LIMIT: Duration = Duration::from_secs(60);
const BULK_BYTES: u64 = 200_000_000;
const BULK_RUNS: usize = 5;

pub fn run_all() {
    compose::thousand_strategies(1_000, 10_000);
    let lab = Lab::start();
    first_packet_latency(&lab);
    connections_per_second(&lab);
    bulk_throughput(&lab);
}

pub(crate) fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

/// p50/p99 of connect → echo and write → echo, without and with the rule.
fn first_packet_latency(lab: &Lab) {
    let per_block = LATENCY_SAMPLES / LATENCY_BLOCKS;
    // [mode][0: connect → echo, 1: write → echo]
    let mut samples: [[Vec<Duration>; 2]; 2] = Default::default();
    let mut splits = [(0, 0); 2];
    for block in 0..LATENCY_BLOCKS * 2 {
        let engine = block % 2 == 1;
        if engine {
            lab.capture(true);
        }
        let hello = &lab.hello;
        let block_samples = lab.in_client(1, || {
            // A few unmeasured connections first (caches, ARP/ND).
            for _ in 0..5 {
                exchange(hello).expect("warm-up exchange");
            }
            (0..per_block)
                .map(|_| {
                    let (total, write, _stream) = exchange(hello).expect("exchange");
                    (total, write)
                })
                .collect::<Vec<_>>()
        });
        if engine {
            lab.capture(false);
        }
        let (data, split) = lab.take_split_counts();
        splits[usize::from(engine)].0 += data;
        splits[usize::from(engine)].1 += split;
        for (total, write) in block_samples.into_iter().flatten() {
            samples[usize::from(engine)][0].push(total);
            samples[usize::from(engine)][1].push(write);
        }
    }
    for mode in &mut samples {
        for series in mode.iter_mut() {
            series.sort();
        }
    }
    let p = |mode: usize, series: usize, q: f64| percentile(&samples[mode][series], q);
    for (series, what) in [(0, "connect→echo"), (1, "write→echo")] {
        println!(
            "strategy_first_packet_{}: without p50={:.3}ms p99={:.3}ms, with engine p50={:.3}ms p99={:.3}ms ({} each)",
            if series == 0 { "connect" } else { "write" },
            ms(p(0, series, 0.5)),
            ms(p(0, series, 0.99)),
            ms(p(1, series, 0.5)),
            ms(p(1, series, 0.99)),
            samples[0][series].len(),
        );
        let added50 = ms(p(1, series, 0.5)) - ms(p(0, series, 0.5));
        let added99 = ms(p(1, series, 0.99)) - ms(p(0, series, 0.99));
        println!(
            "strategy_first_packet_added ({what}): p50 {added50:+.3}ms, p99 {added99:+.3}ms (target p99 < 2 ms) {}",
            verdict(added99 < 2.0)
        );
    }
    println!(
        "strategy_first_packet_split: with engine {}/{} first segments split, without {}/{}",
        splits[1].1, splits[1].0, splits[0].1, splits[0].0
    );
}

/// New connections (connect, ClientHello, echo, close) per second from
/// [`CLIENT_THREADS`] threads; baseline without the rule, then with it.
fn connections_per_second(lab: &Lab) {
    let mut rates = [0.0; 2];
    for engine in [false, true] {
        if engine {
            lab.capture(true);
        }
        let ticks_before = cpu_ticks(lab.engine_pid());
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        let deadline = started + CONNECTIONS_TIME_LIMIT;
        let hello = &lab.hello;
        let results = lab.in_client(CLIENT_THREADS, || {
            let (mut done, mut failed) = (0usize, 0usize);
            while next.fetch_add(1, Ordering::Relaxed) < CONNECTIONS && Instant::now() < deadline {
                match exchange(hello) {
                    Ok(_) => done += 1,
                    Err(_) => failed += 1,
                }
            }
            (done, failed)
        });
        let took = started.elapsed();
        let ticks = cpu_ticks(lab.engine_pid()) - ticks_before;
        if engine {
            lab.capture(false);
        }
        let done: usize = results.iter().map(|r| r.0).sum();
        let failed: usize = results.iter().map(|r| r.1).sum();
        let (data, split) = lab.take_split_counts();
        let rate = done as f64 / took.as_secs_f64();
        rates[usize::from(engine)] = rate;
        println!(
            "strategy_new_connections_{}: {done} in {:.2}s = {rate:.0}/s, {failed} failed, {split}/{data} first segments split, engine CPU {}ms",
            if engine { "with_engine" } else { "without" },
            took.as_secs_f64(),
            ticks * 10,
        );
    }
    println!(
        "strategy_new_connections_per_second: {:.0}/s through the engine ({CLIENT_THREADS} client threads, 2 cores; {:.0}/s without) (target ≥ 2,000/s) {}",
        rates[1],
        rates[0],
        verdict(rates[1] >= 2_000.0)
    );
}

/// [`BULK_BYTES`] downloaded [s] → [c] over one connection, [`BULK_RUNS`]
/// times in each mode, the modes taking turns: no rule, the engine's
/// capture rule, and (for reference) the same rule ending in `ACCEPT`
/// (conntrack and connbytes accounting in [c], nothing queued). Medians
/// compared.
fn bulk_throughput(lab: &Lab) {
    const MODES: [&str; 3] = ["without", "engine", "conntrack_only"];
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut splits = (0, 0);
    for run in 0..BULK_RUNS * MODES.len() {
        let mode = run % MODES.len();
        match mode {
            1 => lab.capture(true),
            2 => lab.conntrack_only(true),
            _ => {}
        }
        let hello = &lab.hello;
        let (bytes, took) = lab
            .in_client(1, || {
                let (_, _, mut stream) = exchange(hello).expect("exchange");
                let started = Instant::now();
                let bytes = download(&mut stream, BULK_BYTES).expect("download");
                (bytes, started.elapsed())
            })
            .remove(0);
        match mode {
            1 => lab.capture(false),
            2 => lab.conntrack_only(false),
            _ => {}
        }
        let (data, split) = lab.take_split_counts();
        if mode == 1 {
            splits = (splits.0 + data, splits.1 + split);
        }
        assert_eq!(bytes, BULK_BYTES, "short download");
        rates[mode].push(bytes as f64 * 8.0 / took.as_secs_f64() / 1e6);
    }
    let all = MODES
        .iter()
        .zip(&rates)
        .map(|(name, r)| format!("{name} {r:.0?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let [base, engine, conntrack] = rates.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    });
    let ratio = engine / base * 100.0;
    println!(
        "strategy_bulk_download: {}MB × {BULK_RUNS} per mode, medians {base:.0} Mbit/s without, {engine:.0} Mbit/s with the engine's rule = {ratio:.1}%, {conntrack:.0} Mbit/s with the rule ending in ACCEPT = {:.1}% ({all} Mbit/s; {}/{} engine-run first segments split) (target ≥ 95 %) {}",
        BULK_BYTES / 1_000_000,
        conntrack / base * 100.0,
        splits.1,
        splits.0,
        verdict(ratio >= 95.0)
    );
}

/// utime + stime of `pid`, in clock ticks (10 ms).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    stat.rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}
