//! The probe runner (design §4d): checks a Strategy's `probes.targets` from
//! this node and turns each check into a [`Sample`] for [`score_round`]
//! (super::score_round), with the phases timed and the failure classified
//! as a [`FailPhase`].
//!
//! Contract:
//! - **A new connection per sample**, never pooled, never through a proxy
//!   (no proxy variables are read), no TLS session resumption. Sockets carry
//!   [`ProbeOptions::mark`] as `SO_MARK` (Linux), so a candidate's probes
//!   can be steered to its side queue.
//! - **One GET** per URL sample (`Connection: close`, `User-Agent:
//!   veil-probe`), spoken by hand over HTTP/1.1 so the phases are exact.
//!   `https` uses rustls with exactly one protocol version when asked.
//! - **Pass** = TLS verified (for https), a 2xx or a 3xx that stays on the
//!   site, and — when `minBytes` is set — at least that many body bytes or
//!   the whole body, all within `timeout`. Without `minBytes` the head is
//!   enough (HEAD-like, still a GET).
//! - **Failures** are classified by [`classify::classify`] from the stage
//!   reached, how it ended and how many bytes the server sent. A stall is no
//!   new server byte for `min(timeout/2, 5s)`; with 14–22 KiB of the
//!   server's stream received (TCP payload including the TLS handshake and
//!   record framing — what TSPU-like DPI counts) it is `Stall16K`.
//! - **Rounds** ([`probe_round`]): names are looked up once per round and
//!   pinned for its samples; at most [`ROUND_CONCURRENCY`] samples run at
//!   once; results come back in target order.
//! - `Err(ProbeError)` means the agent could not probe at all (socket, mark,
//!   TLS setup, a URL or payload it cannot use) — never a network outcome,
//!   so it must not count against the Strategy.
//!
//! Not here: when rounds run, scoring, failover, reporting.

pub mod classify;
mod fetch;
mod http;
mod net;
mod socks;
mod udp;
mod url;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rustls::RootCertStore;
use veil_crds::strategy::ProbeTarget;

pub use udp::{probe_udp, stun_binding_request, udp_target_name};

use super::{FailPhase, Sample};
use classify::{Observed, classify};
use url::{ProbeUrl, Scheme};

/// Samples of one round that run at the same time (design §4d: ≤ 4), so a
/// round neither bursts connections nor takes targets × timeout.
pub const ROUND_CONCURRENCY: usize = 4;

/// Why the agent could not probe (its own problem, not the network's).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A probe URL this runner cannot use.
    #[error("cannot probe `{url}`: {reason}")]
    Url { url: String, reason: String },
    /// A UDP target's `payloadHex` is not hex.
    #[error("the payloadHex of {target} is not hex: {reason}")]
    Payload { target: String, reason: String },
    /// The socket could not be created or set up.
    #[error("cannot create a probe socket: {0}")]
    Socket(#[source] io::Error),
    /// `SO_MARK` could not be set (needs `CAP_NET_ADMIN`; Linux only).
    #[error(
        "cannot set the probe mark {mark:#x} on a socket (needs CAP_NET_ADMIN on Linux): {source}"
    )]
    Mark {
        mark: u32,
        #[source]
        source: io::Error,
    },
    /// The TLS client could not be configured.
    #[error("cannot configure the probe's TLS client: {0}")]
    Tls(#[source] rustls::Error),
    /// The system's CA store gave no usable certificate.
    #[error("no usable CA certificate in the system's store: {0}")]
    NoSystemRoots(String),
}

/// A TLS protocol version to probe with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// The version a `probes.targets[].tls` entry asks for; `None` for `auto`.
    pub fn from_spec(tls: veil_crds::strategy::ProbeTls) -> Option<TlsVersion> {
        match tls {
            veil_crds::strategy::ProbeTls::Auto => None,
            veil_crds::strategy::ProbeTls::V1_2 => Some(TlsVersion::Tls12),
            veil_crds::strategy::ProbeTls::V1_3 => Some(TlsVersion::Tls13),
        }
    }

    /// `TLS 1.2` / `TLS 1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLS 1.2",
            TlsVersion::Tls13 => "TLS 1.3",
        }
    }
}

/// How to probe; shared by every sample of a round.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Time allowed for one sample, lookup to last byte (`probes.timeout`).
    pub timeout: Duration,
    /// `SO_MARK` on every probe socket (Linux; elsewhere a set mark is a
    /// [`ProbeError::Mark`]). `None` leaves sockets unmarked.
    pub mark: Option<u32>,
    /// Whom TLS trusts.
    pub roots: Arc<RootCertStore>,
    /// Fixed addresses by host name (lower case), used instead of lookups.
    pub resolve: HashMap<String, IpAddr>,
    /// Reach URL targets through this SOCKS5 proxy (a VLESS Strategy's
    /// port), names resolved by the proxy. UDP targets are still probed
    /// directly (the VLESS clients carry TCP only).
    pub socks: Option<std::net::SocketAddr>,
}

impl ProbeOptions {
    /// Options trusting `roots`, unmarked, no pinned names, one sample per
    /// target.
    pub fn new(timeout: Duration, roots: Arc<RootCertStore>) -> ProbeOptions {
        ProbeOptions {
            timeout,
            mark: None,
            roots,
            resolve: HashMap::new(),
            socks: None,
        }
    }

    /// [`ProbeOptions::new`] trusting the system's CA store.
    pub fn with_system_roots(timeout: Duration) -> Result<ProbeOptions, ProbeError> {
        Ok(ProbeOptions::new(timeout, Arc::new(system_roots()?)))
    }
}

/// The system's CA certificates (rustls-native-certs: the OpenSSL
/// locations on Linux, `SSL_CERT_FILE`/`SSL_CERT_DIR` when set).
pub fn system_roots() -> Result<RootCertStore, ProbeError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "no certificate found".to_string(), ToString::to_string);
        return Err(ProbeError::NoSystemRoots(why));
    }
    Ok(roots)
}

/// One URL to fetch, as in a `probes.targets[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlProbe {
    pub url: String,
    pub critical: bool,
    /// Body bytes needed for a pass; `None` or 0: the head is enough.
    pub min_bytes: Option<u64>,
}

/// How long each phase of a sample took; `None` for a phase not reached
/// (or, for `hello`/`handshake`, plain `http`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// Name lookup (near zero when pinned or literal).
    pub dns: Option<Duration>,
    /// TCP connect.
    pub connect: Option<Duration>,
    /// ClientHello sent → first server byte.
    pub hello: Option<Duration>,
    /// The whole TLS handshake (includes `hello`).
    pub handshake: Option<Duration>,
    /// Request sent → first response byte (for UDP: datagram sent → reply).
    pub first_byte: Option<Duration>,
    /// Response head → body rule met; `None` when the head was enough.
    pub body: Option<Duration>,
}

/// One sample and what was measured on the way.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeResult {
    /// What scoring sees. `ttfb` runs from the start of the sample (lookup
    /// included) to the first byte of the answer.
    pub sample: Sample,
    pub phases: Phases,
    /// Body bytes read (the reply's size for UDP).
    pub bytes_read: u64,
    /// Bytes the server sent on the connection, TLS included.
    pub stream_bytes: u64,
    pub http_status: Option<u16>,
    /// The negotiated TLS version (https only).
    pub tls_version: Option<TlsVersion>,
    /// What went wrong, in words, for logs and status messages.
    pub detail: Option<String>,
}

/// The longest `detail` a sample's report carries.
const MAX_DETAIL_CHARS: usize = 200;

impl ProbeResult {
    /// The sample as the node reports it.
    pub fn to_wire(&self) -> veil_crds::wire::ProbeSample {
        let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        veil_crds::wire::ProbeSample {
            target: self.sample.target.clone(),
            critical: self.sample.critical,
            passed: self.sample.passed,
            fail_phase: self.sample.fail_phase.map(|p| p.to_string()),
            ttfb_ms: self.sample.ttfb.map(millis),
            bytes: self.bytes_read,
            http_status: self.http_status,
            detail: self
                .detail
                .as_ref()
                .map(|d| d.chars().take(MAX_DETAIL_CHARS).collect()),
        }
    }
}

/// One sample of `target`, with exactly `tls_version` when given.
pub async fn probe_url(
    target: &UrlProbe,
    tls_version: Option<TlsVersion>,
    options: &ProbeOptions,
) -> Result<ProbeResult, ProbeError> {
    let url = ProbeUrl::parse(&target.url)?;
    let attempt = fetch::fetch(&url, target.min_bytes, tls_version, options).await?;
    let fail_phase = classify(Observed {
        stage: attempt.stage,
        ending: attempt.ending,
        server_bytes: attempt.server_bytes,
    });
    Ok(ProbeResult {
        sample: Sample {
            target: target.url.clone(),
            critical: target.critical,
            passed: fail_phase.is_none(),
            ttfb: attempt.ttfb,
            fail_phase,
        },
        phases: attempt.phases,
        bytes_read: attempt.body_bytes,
        stream_bytes: attempt.server_bytes,
        http_status: attempt.http_status,
        tls_version: attempt.tls_version,
        detail: attempt.detail,
    })
}

/// One sample of each target and each TLS version it lists (`<url> (TLS
/// 1.2)`, `<url> (TLS 1.3)`, plain `<url>` for `auto`), in target order. Names are looked
/// up once, up front, and pinned for the round; a name that does not
/// resolve fails its targets' samples with `DnsError` without connecting.
pub async fn probe_round(
    targets: &[ProbeTarget],
    options: &ProbeOptions,
) -> Result<Vec<ProbeResult>, ProbeError> {
    let jobs = jobs(targets)?;
    let (pinned, unresolved) = match options.socks {
        // The proxy resolves names (remote DNS).
        Some(_) => (HashMap::new(), HashMap::new()),
        None => pin_names(&jobs, options).await,
    };
    let round = ProbeOptions {
        resolve: pinned,
        ..options.clone()
    };
    let results: Vec<Result<ProbeResult, ProbeError>> = futures::stream::iter(jobs)
        .map(|job| {
            let round = &round;
            let unresolved = &unresolved;
            async move {
                if let Some(why) = unresolved.get(job.host()) {
                    return Ok(dns_failure(&job, why));
                }
                job.run(round).await
            }
        })
        .buffered(ROUND_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// One sample to take in a round.
enum Job {
    Url {
        probe: UrlProbe,
        host: String,
        tls: Option<TlsVersion>,
    },
    Udp {
        udp: veil_crds::strategy::UdpProbe,
        critical: bool,
    },
}

impl Job {
    fn host(&self) -> &str {
        match self {
            Job::Url { host, .. } => host,
            Job::Udp { udp, .. } => &udp.host,
        }
    }

    fn target_name(&self) -> String {
        match self {
            Job::Url {
                probe,
                tls: Some(v),
                ..
            } => format!("{} ({})", probe.url, v.as_str()),
            Job::Url { probe, .. } => probe.url.clone(),
            Job::Udp { udp, .. } => udp_target_name(udp),
        }
    }

    async fn run(&self, options: &ProbeOptions) -> Result<ProbeResult, ProbeError> {
        match self {
            Job::Url { probe, tls, .. } => {
                let mut result = probe_url(probe, *tls, options).await?;
                result.sample.target = self.target_name();
                Ok(result)
            }
            Job::Udp { udp, critical } => probe_udp(udp, *critical, options).await,
        }
    }
}

fn jobs(targets: &[ProbeTarget]) -> Result<Vec<Job>, ProbeError> {
    let mut jobs = Vec::new();
    for target in targets {
        if let Some(url) = &target.url {
            let parsed = ProbeUrl::parse(url.as_str())?;
            let probe = UrlProbe {
                url: url.as_str().to_string(),
                critical: target.critical,
                min_bytes: target.min_bytes.map(|b| b.get()),
            };
            let versions: Vec<Option<TlsVersion>> =
                if parsed.scheme != Scheme::Https || target.tls.is_empty() {
                    vec![None]
                } else {
                    target
                        .tls
                        .iter()
                        .map(|v| TlsVersion::from_spec(*v))
                        .collect()
                };
            for tls in versions {
                jobs.push(Job::Url {
                    probe: probe.clone(),
                    host: parsed.host.clone(),
                    tls,
                });
            }
        } else if let Some(udp) = &target.udp {
            jobs.push(Job::Udp {
                udp: udp.clone(),
                critical: target.critical,
            });
        }
    }
    Ok(jobs)
}

/// Looks every name of the round up once: the pinned addresses (those
/// given in `options` included) and why each unresolved name failed.
async fn pin_names(
    jobs: &[Job],
    options: &ProbeOptions,
) -> (HashMap<String, IpAddr>, HashMap<String, String>) {
    let mut pinned = options.resolve.clone();
    let mut unresolved = HashMap::new();
    let names: HashSet<&str> = jobs
        .iter()
        .map(Job::host)
        .filter(|h| !pinned.contains_key(*h) && h.parse::<IpAddr>().is_err())
        .collect();
    let none = HashMap::new();
    let lookups = names.into_iter().map(|name| {
        let none = &none;
        async move {
            let lookup = tokio::time::timeout(options.timeout, net::resolve(name, none)).await;
            let outcome = match lookup {
                Ok(Ok(ip)) => Ok(ip),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("lookup timed out".to_string()),
            };
            (name.to_string(), outcome)
        }
    });
    for (name, outcome) in futures::future::join_all(lookups).await {
        match outcome {
            Ok(ip) => {
                pinned.insert(name, ip);
            }
            Err(why) => {
                unresolved.insert(name, why);
            }
        }
    }
    (pinned, unresolved)
}

fn dns_failure(job: &Job, why: &str) -> ProbeResult {
    let critical = match job {
        Job::Url { probe, .. } => probe.critical,
        Job::Udp { critical, .. } => *critical,
    };
    ProbeResult {
        sample: Sample {
            target: job.target_name(),
            critical,
            passed: false,
            ttfb: None,
            fail_phase: Some(FailPhase::DnsError),
        },
        phases: Phases::default(),
        bytes_read: 0,
        stream_bytes: 0,
        http_status: None,
        tls_version: None,
        detail: Some(format!("{}: {why}", job.host())),
    }
}

#[cfg(test)]
mod tests;
