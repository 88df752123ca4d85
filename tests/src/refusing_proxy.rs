//! An HTTP proxy on loopback between an agent and the operator that
//! refuses (413) every `POST …/report` whose body contains a marker, and
//! passes everything else on unchanged: a report the operator will never
//! accept, on demand, in front of a real operator. The agent speaks plain
//! HTTP to it (allowed to loopback); it speaks HTTPS to the operator,
//! trusting only the operator's CA.
//!
//! One request per connection: the proxy adds `Connection: close`, so each
//! request is seen (and inspected) on its own.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running proxy; stops when dropped.
pub struct RefusingProxy {
    /// `http://127.0.0.1:PORT`, for the agent's `--operator`.
    pub url: String,
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl RefusingProxy {
    /// Proxies to `upstream` (`127.0.0.1:PORT`, HTTPS under the CA in
    /// `ca_file`), refusing reports containing `marker`.
    pub async fn start(upstream: SocketAddr, ca_file: &Path, marker: &str) -> RefusingProxy {
        let tls = veil_agent::trust::Trust::ca_file(ca_file)
            .and_then(|trust| trust.rustls_config())
            .expect("a TLS client for the operator's CA");
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let counts = Arc::new(Counts::default());
        let counter = counts.clone();
        let marker = marker.as_bytes().to_vec();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let marker = marker.clone();
                let counter = counter.clone();
                let connector = connector.clone();
                tokio::spawn(async move {
                    let _ = serve(client, upstream, &connector, &marker, &counter).await;
                });
            }
        });
        RefusingProxy { url, counts, task }
    }

    /// Reports refused so far.
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }

    /// Reports seen so far (refused or passed on).
    pub fn reports(&self) -> u64 {
        self.counts.reports.load(Ordering::Relaxed)
    }

    /// Size of the largest report body seen.
    pub fn largest_report(&self) -> u64 {
        self.counts.largest.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Counts {
    reports: AtomicU64,
    refused: AtomicU64,
    largest: AtomicU64,
}

impl Drop for RefusingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    marker: &[u8],
    counts: &Counts,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = &buffer[head_end..head_end + length];
    let first_line = head.lines().next().unwrap_or_default();
    let report = first_line.starts_with("POST ") && first_line.contains("/report");
    if report {
        counts.reports.fetch_add(1, Ordering::Relaxed);
        counts.largest.fetch_max(length as u64, Ordering::Relaxed);
    }
    if report && find(body, marker).is_some() {
        counts.refused.fetch_add(1, Ordering::Relaxed);
        let answer = br#"{"error":"refused by the test proxy"}"#;
        let response = format!(
            "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            answer.len()
        );
        client.write_all(response.as_bytes()).await?;
        client.write_all(answer).await?;
        return client.shutdown().await;
    }
    // Same request, one per connection.
    let mut forwarded = String::new();
    for line in head.trim_end().lines() {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("connection: close\r\n\r\n");
    let server = TcpStream::connect(upstream).await?;
    let name = rustls::pki_types::ServerName::IpAddress(upstream.ip().into());
    let mut server = connector.connect(name, server).await?;
    server.write_all(forwarded.as_bytes()).await?;
    server.write_all(body).await?;
    let mut response = Vec::new();
    match server.read_to_end(&mut response).await {
        // A server that closes without TLS close_notify: the response is complete.
        Err(error) if error.kind() != std::io::ErrorKind::UnexpectedEof => return Err(error),
        _ => {}
    }
    client.write_all(&response).await?;
    client.shutdown().await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
