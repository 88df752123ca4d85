//! Strategy probe benchmark (issue 14, design §4e): one probe round of 10
//! HTTPS targets × 64 KiB × TLS 1.2 and 1.3 (20 samples, at most 4 at
//! once) against a local rustls server on loopback, timed by wall clock
//! and by the CPU of the probing thread alone (the server runs on other
//! threads); and the probe traffic a node sends per day at the default
//! interval (5 min).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use veil_agent::strategy::probe::{ProbeOptions, probe_round};
use veil_crds::strategy::{ProbeTarget, ProbeTls};
use veil_crds::validate::{ByteSize, HttpUrl};

use crate::strategy::verdict;
use crate::{ms, percentile};

const TARGETS: usize = 10;
const BODY: usize = 64 * 1024;
const ROUNDS: usize = 20;
const HOST: &str = "probe.bench.test";
/// Rounds per day at the default `interval` (5 min).
const ROUNDS_PER_DAY: u64 = 24 * 60 / 5;

pub fn run_all() {
    let (roots, server) = certificates();
    let port = serve(server);
    let targets: Vec<ProbeTarget> = (0..TARGETS)
        .map(|i| ProbeTarget {
            url: Some(
                HttpUrl::parse(&format!("https://{HOST}:{port}/bytes/{BODY}?target={i}"))
                    .expect("a probe URL"),
            ),
            udp: None,
            critical: false,
            min_bytes: Some(ByteSize::new(BODY as i128).expect("a size")),
            tls: vec![ProbeTls::V1_2, ProbeTls::V1_3],
        })
        .collect();
    let mut options = ProbeOptions::new(Duration::from_secs(10), Arc::new(roots));
    options.resolve = HashMap::from([(HOST.to_owned(), IpAddr::V4(Ipv4Addr::LOCALHOST))]);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut walls = Vec::with_capacity(ROUNDS);
    let mut cpus = Vec::with_capacity(ROUNDS);
    let mut bytes = 0;
    for _ in 0..ROUNDS {
        let cpu_before = thread_cpu();
        let started = Instant::now();
        let results = runtime
            .block_on(probe_round(&targets, &options))
            .expect("a probe round");
        walls.push(started.elapsed());
        cpus.push(thread_cpu().saturating_sub(cpu_before));
        let failed: Vec<_> = results.iter().filter(|r| !r.sample.passed).collect();
        assert!(failed.is_empty(), "probe samples failed: {failed:?}");
        assert_eq!(
            results.len(),
            TARGETS * 2,
            "one sample per target and TLS version"
        );
        bytes = results.iter().map(|r| r.stream_bytes).sum::<u64>();
    }
    walls.sort();
    cpus.sort();
    let wall_p50 = percentile(&walls, 0.5);
    let cpu_p50 = percentile(&cpus, 0.5);
    println!(
        "probe round: {TARGETS} targets x 64 KiB x TLS 1.2+1.3 ({} samples), {ROUNDS} rounds: wall p50 {:.1} ms max {:.1} ms (target < 1500 ms: {}), probing-thread CPU p50 {:.1} ms max {:.1} ms (target < 200 ms: {})",
        TARGETS * 2,
        ms(wall_p50),
        ms(walls[walls.len() - 1]),
        verdict(wall_p50 < Duration::from_millis(1500)),
        ms(cpu_p50),
        ms(cpus[cpus.len() - 1]),
        verdict(cpu_p50 < Duration::from_millis(200)),
    );
    println!(
        "probe traffic: {} KiB received per round of this shape; {} MiB per day at interval 5m ({ROUNDS_PER_DAY} rounds)",
        bytes / 1024,
        bytes * ROUNDS_PER_DAY / (1024 * 1024),
    );
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD)
        .expect("getrusage");
    let time = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().unsigned_abs())
            + Duration::from_micros(t.tv_usec().unsigned_abs())
    };
    time(usage.user_time()) + time(usage.system_time())
}

/// A CA (as the probes' roots) and a serving certificate for [`HOST`].
fn certificates() -> (
    rustls::RootCertStore,
    (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec![HOST.to_owned()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("CA into the roots");
    let chain = vec![cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (roots, (chain, key))
}

/// Serves `GET /bytes/N…` with N bytes over TLS 1.2 and 1.3 on 127.0.0.1,
/// on two threads of its own; returns the port.
fn serve(server: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(server.0, server.1)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let std_listener =
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the probe server");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let port = std_listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let listener = TcpListener::from_std(std_listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
                    let body = vec![b'x'; BODY];
                    if tls.write_all(head.as_bytes()).await.is_ok()
                        && tls.write_all(&body).await.is_ok()
                    {
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
    });
    port
}
