//! The agent's probe runner against the DPI simulator: probes run in [c]
//! (their sockets live there), the test site in [s], the simulator in [d].
//! Level 3 lets a header-only probe of a blocked name through but freezes a
//! 64 KiB download after 16–20 KB (`Stall16K`); level 1 resets the
//! ClientHello of a blocked name (`ResetAtHello`).
//!
//! Needs root and `cargo build -p veil-e2e --bin veil-dpi-sim`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use veil_agent::strategy::FailPhase;
use veil_agent::strategy::probe::classify::STALL_16K_STREAM_BYTES;
use veil_agent::strategy::probe::{ProbeOptions, ProbeResult, UrlProbe, probe_url};
use veil_e2e::dpi_lab::DpiLab;
use veil_e2e::netns::Topology;

/// Per sample; the stall window is half of it (2 s).
const TIMEOUT: Duration = Duration::from_secs(4);

/// Probes `url` once from [c], trusting the test CA, with the test names
/// pinned to the site's IPv4 address.
fn probe(lab: &DpiLab, url: &str, min_bytes: Option<u64>) -> ProbeResult {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(lab.site.ca_der.clone()))
        .expect("the test CA");
    let mut options = ProbeOptions::new(TIMEOUT, Arc::new(roots));
    for name in ["blocked.test", "allowed.test"] {
        options
            .resolve
            .insert(name.to_string(), IpAddr::V4(Topology::SERVER_V4));
    }
    let target = UrlProbe {
        url: url.to_string(),
        critical: true,
        min_bytes,
    };
    lab.topology.client.enter(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime in [c]")
            .block_on(probe_url(&target, None, &options))
            .expect("the probe could run")
    })
}

#[test]
fn level_3_header_probes_pass_and_downloads_of_blocked_names_stall_at_16k() {
    let lab = DpiLab::new(3);

    let head = probe(&lab, "https://blocked.test/", None);
    assert!(
        head.sample.passed,
        "a HEAD-like probe misses the freeze: {head:?}"
    );
    assert_eq!(head.http_status, Some(200));

    let blocked = probe(&lab, "https://blocked.test/bytes/65536", Some(65536));
    assert_eq!(
        blocked.sample.fail_phase,
        Some(FailPhase::Stall16K),
        "{blocked:?}\nsimulator: {}",
        lab.sim.stderr_text()
    );
    assert!(!blocked.sample.passed);
    // The window is on the server's whole stream (TLS included): the body
    // bytes are whole TLS records, so 0 or 16 KiB with this site's records.
    assert!(
        STALL_16K_STREAM_BYTES.contains(&blocked.stream_bytes),
        "server bytes before the freeze: {blocked:?}"
    );
    assert!(blocked.bytes_read < 65536);

    let allowed = probe(&lab, "https://allowed.test/bytes/65536", Some(65536));
    assert!(allowed.sample.passed, "{allowed:?}");
    assert_eq!(allowed.bytes_read, 65536);
}

#[test]
fn level_1_resets_the_hello_of_a_blocked_name() {
    let lab = DpiLab::new(3);
    lab.sim.set_level(1);
    let result = probe(&lab, "https://blocked.test/", None);
    assert_eq!(
        result.sample.fail_phase,
        Some(FailPhase::ResetAtHello),
        "{result:?}\nsimulator: {}",
        lab.sim.stderr_text()
    );
    assert!(result.phases.connect.is_some());
    assert_eq!(result.phases.handshake, None);
    let allowed = probe(&lab, "https://allowed.test/", None);
    assert!(allowed.sample.passed, "{allowed:?}");
}
