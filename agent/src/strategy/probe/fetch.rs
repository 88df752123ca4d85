//! One URL sample: resolve, connect (new socket, probe mark), TLS with the
//! asked version, one GET, read until the pass rule is met or something
//! fails — recording the stage reached, the phases and the server bytes for
//! [`classify`](super::classify::classify).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ProtocolVersion, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout_at;
use tokio_rustls::TlsConnector;

use super::classify::{Ending, Stage, stall_window};
use super::http::{BodyDecoder, HttpError, ResponseHead, parse_head, request};
use super::net::{Meter, Metered, resolve, tcp_socket};
use super::socks;
use super::url::{ProbeUrl, Scheme, same_site};
use super::{Phases, ProbeError, ProbeOptions, TlsVersion};

/// What a URL sample saw, for the caller to classify and report.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub stage: Stage,
    pub ending: Ending,
    pub phases: Phases,
    /// From the start of the sample to the first response byte.
    pub ttfb: Option<Duration>,
    pub http_status: Option<u16>,
    pub body_bytes: u64,
    pub server_bytes: u64,
    pub tls_version: Option<TlsVersion>,
    /// The underlying error or reason, for logs.
    pub detail: Option<String>,
}

/// Runs one sample of `url`. `Err` only for local failures (socket, mark,
/// TLS configuration), never for anything the network did.
pub(crate) async fn fetch(
    url: &ProbeUrl,
    min_bytes: Option<u64>,
    tls: Option<TlsVersion>,
    options: &ProbeOptions,
) -> Result<Attempt, ProbeError> {
    let start = Instant::now();
    let mut run = Run {
        start,
        deadline: tokio::time::Instant::from_std(start + options.timeout),
        stall: stall_window(options.timeout),
        meter: Meter::default(),
        attempt: Attempt {
            stage: Stage::Resolve,
            ending: Ending::Deadline,
            phases: Phases::default(),
            ttfb: None,
            http_status: None,
            body_bytes: 0,
            server_bytes: 0,
            tls_version: None,
            detail: None,
        },
    };
    let ending = run.go(url, min_bytes, tls, options).await?;
    run.attempt.ending = ending;
    run.attempt.server_bytes = run.meter.readings().bytes;
    Ok(run.attempt)
}

struct Run {
    start: Instant,
    deadline: tokio::time::Instant,
    stall: Duration,
    meter: Meter,
    attempt: Attempt,
}

impl Run {
    async fn go(
        &mut self,
        url: &ProbeUrl,
        min_bytes: Option<u64>,
        tls: Option<TlsVersion>,
        options: &ProbeOptions,
    ) -> Result<Ending, ProbeError> {
        let began = Instant::now();
        let addr = match options.socks {
            // The proxy resolves the name.
            Some(proxy) => proxy,
            None => {
                let ip = match timeout_at(self.deadline, resolve(&url.host, &options.resolve)).await
                {
                    Ok(Ok(ip)) => ip,
                    Ok(Err(e)) => return Ok(self.fail(Ending::DnsFailed, e.to_string())),
                    Err(_) => return Ok(self.fail(Ending::DnsFailed, "lookup timed out".into())),
                };
                self.attempt.phases.dns = Some(began.elapsed());
                SocketAddr::new(ip, url.port)
            }
        };

        self.attempt.stage = Stage::Connect;
        let socket = tcp_socket(addr, options.mark)?;
        let tls_client = match url.scheme {
            Scheme::Http => None,
            Scheme::Https => Some((connector(options.roots.clone(), tls)?, server_name(url)?)),
        };
        let began = Instant::now();
        let stream = match timeout_at(self.deadline, socket.connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Ok(self.io_failure(&e)),
            Err(_) => return Ok(self.fail(Ending::Deadline, format!("connect to {addr}"))),
        };
        // The request goes out at once rather than waiting for an ACK.
        let _ = stream.set_nodelay(true);
        let mut stream = Metered::new(stream, self.meter.clone());
        if options.socks.is_some() {
            // Connect ends when the proxy has reached the target.
            let asked = socks::connect(&mut stream, &url.host, url.port);
            match timeout_at(self.deadline, asked).await {
                Ok(Ok(Ok(()))) => self.meter.reset(),
                Ok(Ok(Err(refused))) => {
                    return Ok(self.fail(Ending::Refused, format!("via SOCKS {addr}: {refused}")));
                }
                Ok(Err(e)) => return Ok(self.io_failure(&e)),
                Err(_) => {
                    return Ok(self.fail(Ending::Deadline, format!("SOCKS connect via {addr}")));
                }
            }
        }
        self.attempt.phases.connect = Some(began.elapsed());

        match tls_client {
            None => {
                let mut stream = stream;
                self.exchange(&mut stream, url, min_bytes).await
            }
            Some((connector, name)) => {
                self.attempt.stage = Stage::Handshake;
                let began = Instant::now();
                let handshake = timeout_at(self.deadline, connector.connect(name, stream)).await;
                let readings = self.meter.readings();
                if let (Some(sent), Some(answered)) = (readings.first_write, readings.first_read) {
                    self.attempt.phases.hello = Some(answered.saturating_duration_since(sent));
                }
                let mut stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return Ok(self.io_failure(&e)),
                    Err(_) => return Ok(self.fail(Ending::Deadline, "TLS handshake".into())),
                };
                self.attempt.phases.handshake = Some(began.elapsed());
                self.attempt.tls_version = match stream.get_ref().1.protocol_version() {
                    Some(ProtocolVersion::TLSv1_2) => Some(TlsVersion::Tls12),
                    Some(ProtocolVersion::TLSv1_3) => Some(TlsVersion::Tls13),
                    _ => None,
                };
                self.exchange(&mut stream, url, min_bytes).await
            }
        }
    }

    /// Sends the GET and reads until the pass rule is met or it fails.
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        url: &ProbeUrl,
        min_bytes: Option<u64>,
    ) -> Result<Ending, ProbeError> {
        self.attempt.stage = Stage::Response;
        let sent = match timeout_at(self.deadline, async {
            stream.write_all(&request(url)).await?;
            stream.flush().await
        })
        .await
        {
            Ok(Ok(())) => Instant::now(),
            Ok(Err(e)) => return Ok(self.io_failure(&e)),
            Err(_) => return Ok(self.fail(Ending::Deadline, "sending the request".into())),
        };
        let min_bytes = min_bytes.filter(|n| *n > 0);
        let mut head_bytes: Vec<u8> = Vec::new();
        // The passing verdict of the head, the body so far, when the head came.
        let mut response: Option<(Ending, BodyDecoder, Instant)> = None;
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let progress = self.meter.readings().last_read.unwrap_or(sent).max(sent);
            let wake = self
                .deadline
                .min(tokio::time::Instant::from_std(progress + self.stall));
            let read = match timeout_at(wake, stream.read(&mut chunk)).await {
                Ok(read) => read,
                Err(_) => {
                    let now = Instant::now();
                    let progress = self.meter.readings().last_read.unwrap_or(sent).max(sent);
                    if tokio::time::Instant::from_std(now) >= self.deadline {
                        return Ok(self.fail(Ending::Deadline, "reading the response".into()));
                    }
                    if now.saturating_duration_since(progress) >= self.stall {
                        let why = format!("no data for {:?}", self.stall);
                        return Ok(self.fail(Ending::Stalled, why));
                    }
                    continue;
                }
            };
            let n = match read {
                Ok(n) => n,
                // rustls: the server closed without close_notify.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Ok(self.io_failure(&e)),
            };
            if n == 0 {
                return Ok(match &response {
                    Some((verdict, body, head_at)) if body.close_completes() => {
                        self.attempt.phases.body = Some(head_at.elapsed());
                        *verdict
                    }
                    _ => self.fail(Ending::Closed, "the server closed the connection".into()),
                });
            }
            if self.attempt.ttfb.is_none() {
                self.attempt.ttfb = Some(self.start.elapsed());
                self.attempt.phases.first_byte = Some(sent.elapsed());
            }
            let body_data = match response {
                Some(_) => &chunk[..n],
                None => {
                    head_bytes.extend_from_slice(&chunk[..n]);
                    let (head, rest) = match final_head(&mut head_bytes) {
                        Ok(Some(parsed)) => parsed,
                        Ok(None) => continue,
                        Err(e) => return Ok(self.fail(Ending::Malformed, e.to_string())),
                    };
                    self.attempt.http_status = Some(head.status);
                    let off_site_redirect = (300..400).contains(&head.status)
                        && head
                            .location
                            .as_deref()
                            .is_some_and(|l| !same_site(&url.host, l));
                    let verdict = Ending::Answered {
                        status: head.status,
                        off_site_redirect,
                    };
                    if let Some(location) = head.location.filter(|_| off_site_redirect) {
                        self.attempt.detail = Some(format!("redirected to {location}"));
                    }
                    if !passing(verdict) || min_bytes.is_none() {
                        return Ok(verdict);
                    }
                    response = Some((verdict, BodyDecoder::new(head.framing), Instant::now()));
                    head_bytes = rest;
                    &head_bytes[..]
                }
            };
            let Some((verdict, body, head_at)) = response.as_mut() else {
                continue;
            };
            if let Err(e) = body.feed(body_data) {
                return Ok(self.fail(Ending::Malformed, e.to_string()));
            }
            self.attempt.body_bytes = body.body_bytes;
            if body.is_done() || min_bytes.is_some_and(|m| body.body_bytes >= m) {
                self.attempt.phases.body = Some(head_at.elapsed());
                return Ok(*verdict);
            }
        }
    }

    fn io_failure(&mut self, e: &io::Error) -> Ending {
        self.fail(io_ending(e), e.to_string())
    }

    fn fail(&mut self, ending: Ending, detail: String) -> Ending {
        self.attempt.detail.get_or_insert(detail);
        ending
    }
}

/// Takes the final (non-1xx) head off the front of `buf` once it is
/// complete, with the bytes after it.
fn final_head(buf: &mut Vec<u8>) -> Result<Option<(ResponseHead, Vec<u8>)>, HttpError> {
    while let Some((head, len)) = parse_head(buf)? {
        let rest = buf.split_off(len);
        if (100..200).contains(&head.status) && head.status != 101 {
            *buf = rest;
            continue;
        }
        return Ok(Some((head, rest)));
    }
    Ok(None)
}

/// Whether an answer passes before the body rule is applied.
fn passing(ending: Ending) -> bool {
    super::classify::classify(super::classify::Observed {
        stage: Stage::Response,
        ending,
        server_bytes: 0,
    })
    .is_none()
}

/// The name the TLS client sends (SNI) and verifies: the URL's host.
fn server_name(url: &ProbeUrl) -> Result<ServerName<'static>, ProbeError> {
    ServerName::try_from(url.host.clone()).map_err(|_| ProbeError::Url {
        url: url.host.clone(),
        reason: "the host is not a valid TLS server name".into(),
    })
}

/// The [`Ending`] an I/O error from the socket or TLS stands for.
fn io_ending(e: &io::Error) -> Ending {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::InvalidCertificate(_) => Ending::CertInvalid,
            _ => Ending::TlsAlert,
        };
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Ending::Refused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Ending::Reset,
        io::ErrorKind::UnexpectedEof => Ending::Closed,
        io::ErrorKind::TimedOut => Ending::Deadline,
        _ => Ending::OtherIo,
    }
}

/// A TLS client for one sample: the given roots, exactly `version` when
/// asked (else 1.2 and 1.3), ALPN `http/1.1`, no session resumption (every
/// sample makes a full handshake, as a first visit would).
fn connector(
    roots: Arc<RootCertStore>,
    version: Option<TlsVersion>,
) -> Result<TlsConnector, ProbeError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match version {
        Some(TlsVersion::Tls12) => &[&rustls::version::TLS12],
        Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
        None => rustls::ALL_VERSIONS,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(ProbeError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}
