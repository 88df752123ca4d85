//! Probes against servers on 127.0.0.1 that answer, reset, stall, present a
//! foreign certificate, refuse, or never answer the ClientHello. Short
//! timeouts (the stall window is half of them) keep these fast.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_rustls::TlsAcceptor;
use veil_crds::strategy::{ProbeTarget, ProbeTls, UdpProbe};
use veil_crds::validate::{ByteSize, HttpUrl, Port};

use super::super::*;

/// The name the test servers' certificates carry.
const NAME: &str = "probe.test";

/// A CA and a server configuration with a leaf for [`NAME`] signed by it.
fn pki() -> (CertificateDer<'static>, Arc<ServerConfig>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![NAME.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
    (ca.der().clone(), Arc::new(config))
}

/// What a test server does after reading the request.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// `200` with a body of this many bytes.
    Serve(usize),
    /// Announces 1 MiB, sends this many body bytes, then resets (RST).
    ResetAfter(usize),
    /// Announces 1 MiB, sends this many body bytes, then goes quiet.
    StallAfter(usize),
    /// This status, with this `Location`, empty body.
    Status(u16, Option<&'static str>),
}

/// Serves `behaviour` over TLS on 127.0.0.1 until the test's runtime ends.
async fn https_server(config: Arc<ServerConfig>, behaviour: Behaviour) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
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
                let (head, body) = match behaviour {
                    Behaviour::Serve(n) => (format!("200 OK\r\nContent-Length: {n}"), n),
                    Behaviour::ResetAfter(n) | Behaviour::StallAfter(n) => {
                        ("200 OK\r\nContent-Length: 1048576".to_string(), n)
                    }
                    Behaviour::Status(status, location) => {
                        let location =
                            location.map_or(String::new(), |l| format!("\r\nLocation: {l}"));
                        (format!("{status} X{location}\r\nContent-Length: 0"), 0)
                    }
                };
                let head = format!("HTTP/1.1 {head}\r\n\r\n");
                if tls.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let piece = [b'x'; 4096];
                let mut left = body;
                while left > 0 {
                    let n = left.min(piece.len());
                    if tls.write_all(&piece[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
                let _ = tls.flush().await;
                match behaviour {
                    Behaviour::ResetAfter(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let (tcp, _) = tls.into_inner();
                        socket2::SockRef::from(&tcp)
                            .set_linger(Some(Duration::ZERO))
                            .unwrap();
                        drop(tcp);
                    }
                    Behaviour::StallAfter(_) => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    _ => {
                        let _ = tls.shutdown().await;
                    }
                }
            });
        }
    });
    port
}

fn options(ca: CertificateDer<'static>, timeout: Duration) -> ProbeOptions {
    let mut roots = RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut options = ProbeOptions::new(timeout, Arc::new(roots));
    options
        .resolve
        .insert(NAME.to_string(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    options
}

fn target(port: u16, path: &str, min_bytes: Option<u64>) -> UrlProbe {
    UrlProbe {
        url: format!("https://{NAME}:{port}{path}"),
        critical: true,
        min_bytes,
    }
}

/// One probe of `behaviour` with `min_bytes` and a 2 s timeout.
async fn probe(behaviour: Behaviour, min_bytes: Option<u64>) -> ProbeResult {
    let (ca, config) = pki();
    let port = https_server(config, behaviour).await;
    let options = options(ca, Duration::from_secs(2));
    probe_url(&target(port, "/", min_bytes), None, &options)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_full_download_passes_with_every_phase_timed() {
    let (ca, config) = pki();
    let port = https_server(config, Behaviour::Serve(65536)).await;
    let options = options(ca, Duration::from_secs(5));
    for version in [None, Some(TlsVersion::Tls12), Some(TlsVersion::Tls13)] {
        let result = probe_url(&target(port, "/bytes", Some(65536)), version, &options)
            .await
            .unwrap();
        assert!(result.sample.passed, "{version:?}: {result:?}");
        assert!(result.sample.critical);
        assert_eq!(result.sample.fail_phase, None);
        assert_eq!(result.bytes_read, 65536);
        assert!(result.stream_bytes > 65536);
        assert_eq!(result.http_status, Some(200));
        assert_eq!(
            result.tls_version,
            Some(version.unwrap_or(TlsVersion::Tls13))
        );
        let p = result.phases;
        for phase in [p.dns, p.connect, p.hello, p.handshake, p.first_byte, p.body] {
            assert!(phase.is_some(), "{p:?}");
        }
        assert!(p.hello <= p.handshake);
        assert!(result.sample.ttfb.unwrap() >= p.handshake.unwrap());
    }
}

#[tokio::test]
async fn without_min_bytes_the_head_is_enough() {
    let result = probe(Behaviour::StallAfter(100), None).await;
    assert!(result.sample.passed, "{result:?}");
    assert_eq!(result.phases.body, None);
}

#[tokio::test]
async fn a_body_shorter_than_min_bytes_passes_when_complete() {
    let result = probe(Behaviour::Serve(10), Some(65536)).await;
    assert!(result.sample.passed, "{result:?}");
    assert_eq!(result.bytes_read, 10);
}

#[tokio::test]
async fn a_reset_during_the_body_is_reset_mid_stream() {
    let result = probe(Behaviour::ResetAfter(8192), Some(65536)).await;
    assert_eq!(
        result.sample.fail_phase,
        Some(FailPhase::ResetMidStream),
        "{result:?}"
    );
    assert!(!result.sample.passed);
    assert!(result.sample.ttfb.is_some());
}

#[tokio::test]
async fn a_stall_after_16_kib_is_stall16k_and_elsewhere_stall() {
    let result = probe(Behaviour::StallAfter(16 * 1024), Some(65536)).await;
    assert_eq!(
        result.sample.fail_phase,
        Some(FailPhase::Stall16K),
        "{result:?}"
    );
    assert!(classify::STALL_16K_STREAM_BYTES.contains(&result.stream_bytes));
    for early_or_late in [2 * 1024, 40 * 1024] {
        let result = probe(Behaviour::StallAfter(early_or_late), Some(65536)).await;
        assert_eq!(
            result.sample.fail_phase,
            Some(FailPhase::Stall),
            "{result:?}"
        );
        assert!(!classify::STALL_16K_STREAM_BYTES.contains(&result.stream_bytes));
    }
}

#[tokio::test]
async fn block_statuses_and_foreign_redirects_fail() {
    let cases = [
        (Behaviour::Status(451, None), Some(FailPhase::Blockpage)),
        (
            Behaviour::Status(302, Some("http://warning.example/")),
            Some(FailPhase::Blockpage),
        ),
        (Behaviour::Status(302, Some("/moved")), None),
        (
            Behaviour::Status(301, Some("https://www.probe.test/")),
            None,
        ),
        (Behaviour::Status(404, None), Some(FailPhase::HttpStatus)),
        (Behaviour::Status(502, None), Some(FailPhase::HttpStatus)),
    ];
    for (behaviour, expected) in cases {
        let result = probe(behaviour, Some(65536)).await;
        assert_eq!(
            result.sample.fail_phase, expected,
            "{behaviour:?}: {result:?}"
        );
        assert_eq!(result.sample.passed, expected.is_none());
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_cert_error() {
    let (_, config) = pki();
    let port = https_server(config, Behaviour::Serve(10)).await;
    let (other_ca, _) = pki();
    let options = options(other_ca, Duration::from_secs(2));
    let result = probe_url(&target(port, "/", None), None, &options)
        .await
        .unwrap();
    assert_eq!(
        result.sample.fail_phase,
        Some(FailPhase::CertError),
        "{result:?}"
    );
    assert!(result.phases.hello.is_some());
}

#[tokio::test]
async fn a_closed_port_is_connect_refused() {
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ca, _) = pki();
    let options = options(ca, Duration::from_secs(2));
    let result = probe_url(&target(port, "/", None), None, &options)
        .await
        .unwrap();
    assert_eq!(
        result.sample.fail_phase,
        Some(FailPhase::ConnectRefused),
        "{result:?}"
    );
    assert_eq!(result.phases.connect, None);
}

#[tokio::test]
async fn no_answer_to_the_client_hello_is_silent_drop() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let (ca, _) = pki();
    let options = options(ca, Duration::from_secs(1));
    let started = std::time::Instant::now();
    let result = probe_url(&target(port, "/", None), None, &options)
        .await
        .unwrap();
    assert_eq!(
        result.sample.fail_phase,
        Some(FailPhase::SilentDropAtHello),
        "{result:?}"
    );
    assert!(result.phases.connect.is_some());
    assert_eq!((result.phases.hello, result.stream_bytes), (None, 0));
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn the_probe_mark_is_set_on_the_socket() {
    let (ca, config) = pki();
    let port = https_server(config, Behaviour::Serve(10)).await;
    let mut options = options(ca, Duration::from_secs(2));
    options.mark = Some(0x0800_0000);
    let result = probe_url(&target(port, "/", None), None, &options).await;
    if cfg!(target_os = "linux") && nix::unistd::geteuid().is_root() {
        assert!(result.unwrap().sample.passed);
    } else {
        assert!(matches!(result, Err(ProbeError::Mark { .. })), "{result:?}");
    }
}

fn udp(port: u16, payload_hex: Option<&str>) -> UdpProbe {
    UdpProbe {
        host: "127.0.0.1".into(),
        port: Port::new(i64::from(port)).unwrap(),
        payload_hex: payload_hex.map(String::from),
    }
}

#[tokio::test]
async fn udp_passes_on_any_reply_and_fails_on_silence_or_refusal() {
    let echo = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    let received = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let (n, from) = echo.recv_from(&mut buf).await.unwrap();
        echo.send_to(b"pong", from).await.unwrap();
        buf[..n].to_vec()
    });
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let closed_port = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ca, _) = pki();
    let options = options(ca, Duration::from_millis(500));

    let pass = probe_udp(&udp(echo_port, None), true, &options)
        .await
        .unwrap();
    assert!(pass.sample.passed, "{pass:?}");
    assert_eq!(pass.sample.target, format!("udp://127.0.0.1:{echo_port}"));
    assert_eq!(pass.bytes_read, 4);
    let stun = received.await.unwrap();
    assert_eq!(
        (stun.len(), &stun[4..8]),
        (20, &[0x21, 0x12, 0xA4, 0x42][..])
    );

    let quiet = probe_udp(&udp(silent_port, Some("00ff")), false, &options)
        .await
        .unwrap();
    assert_eq!(
        quiet.sample.fail_phase,
        Some(FailPhase::Timeout),
        "{quiet:?}"
    );
    let refused = probe_udp(&udp(closed_port, None), false, &options)
        .await
        .unwrap();
    assert_eq!(
        refused.sample.fail_phase,
        Some(FailPhase::ConnectRefused),
        "{refused:?}"
    );
    let bad = probe_udp(&udp(silent_port, Some("zz")), false, &options).await;
    assert!(matches!(bad, Err(ProbeError::Payload { .. })), "{bad:?}");
}

fn url_target(url: &str, min_bytes: Option<u64>) -> ProbeTarget {
    ProbeTarget {
        url: Some(HttpUrl::parse(url).unwrap()),
        udp: None,
        critical: false,
        min_bytes: min_bytes.map(ByteSize::from),
        tls: Vec::new(),
    }
}

#[tokio::test]
async fn a_round_keeps_target_order_and_splits_tls_versions_when_asked() {
    let (ca, config) = pki();
    let port = https_server(config, Behaviour::Serve(1000)).await;
    let options = options(ca, Duration::from_secs(1));
    let good = format!("https://{NAME}:{port}/");
    let targets = [
        url_target(&good, Some(1000)),
        url_target("https://unresolvable.invalid/", None),
    ];
    let results = probe_round(&targets, &options).await.unwrap();
    let seen: Vec<_> = results
        .iter()
        .map(|r| (r.sample.target.clone(), r.sample.fail_phase))
        .collect();
    assert_eq!(
        seen,
        [
            (good.clone(), None),
            (
                "https://unresolvable.invalid/".into(),
                Some(FailPhase::DnsError)
            ),
        ]
    );

    let mut both = url_target(&good, Some(1000));
    both.tls = vec![ProbeTls::V1_2, ProbeTls::Auto, ProbeTls::V1_3];
    let results = probe_round(&[both], &options).await.unwrap();
    let seen: Vec<_> = results
        .iter()
        .map(|r| (r.sample.target.clone(), r.sample.passed, r.tls_version))
        .collect();
    assert_eq!(
        seen,
        [
            (format!("{good} (TLS 1.2)"), true, Some(TlsVersion::Tls12)),
            (good.clone(), true, Some(TlsVersion::Tls13)),
            (format!("{good} (TLS 1.3)"), true, Some(TlsVersion::Tls13)),
        ]
    );
}

#[tokio::test]
async fn a_round_runs_at_most_four_samples_at_once() {
    // Six targets whose ClientHello is never answered: two waves of four.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (open_in_server, peak_in_server) = (open.clone(), peak.clone());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let now = open_in_server.fetch_add(1, Ordering::SeqCst) + 1;
            peak_in_server.fetch_max(now, Ordering::SeqCst);
            let open = open_in_server.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let (ca, _) = pki();
    let options = options(ca, Duration::from_millis(300));
    let targets: Vec<_> = (0..6)
        .map(|i| url_target(&format!("https://{NAME}:{port}/{i}"), None))
        .collect();
    let results = probe_round(&targets, &options).await.unwrap();
    assert_eq!(results.len(), 6);
    for result in &results {
        assert_eq!(result.sample.fail_phase, Some(FailPhase::SilentDropAtHello));
    }
    assert_eq!(peak.load(Ordering::SeqCst), ROUND_CONCURRENCY);
}

#[tokio::test]
async fn plain_http_with_a_chunked_body() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let reply = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                         3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
            let _ = tcp.write_all(reply.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    let (ca, _) = pki();
    let options = options(ca, Duration::from_secs(2));
    let probe = UrlProbe {
        url: format!("http://{NAME}:{port}/"),
        critical: false,
        min_bytes: Some(100),
    };
    let result = probe_url(&probe, None, &options).await.unwrap();
    assert!(result.sample.passed, "{result:?}");
    assert_eq!((result.bytes_read, result.http_status), (7, Some(200)));
    assert_eq!(
        (
            result.phases.hello,
            result.phases.handshake,
            result.tls_version
        ),
        (None, None, None)
    );
}
