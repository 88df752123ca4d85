//! A test HTTPS client whose first flight is shaped by hand: sent whole,
//! split in two TCP segments, or preceded by a fake ClientHello in a raw
//! segment (low TTL or bad checksum) — the traffic DPI-bypass tools make,
//! produced here without any bypass engine so the DPI simulator can be
//! tested on its own.
//!
//! Call it on a thread inside the client namespace
//! ([`crate::netns::Namespace::enter`]). IPv4 only.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use rustls::pki_types::{CertificateDer, ServerName};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// How the ClientHello leaves the client.
#[derive(Clone, Debug)]
pub enum FirstFlight {
    /// One `write()`: one segment (the MTU permitting).
    Whole,
    /// Two segments: the first `at` bytes, a pause, the rest.
    Split { at: usize },
    /// Two segments split in the middle of the SNI (found in the bytes
    /// actually sent: rustls shuffles its extensions per connection).
    SplitMidSni,
    /// A fake segment first (same connection, the first sequence number),
    /// then the real ClientHello as usual.
    AfterFake(Fake),
}

/// A fake ClientHello that must not reach the server.
#[derive(Clone, Debug)]
pub struct Fake {
    /// SNI of the fake (a harmless name).
    pub sni: String,
    /// IP TTL of the fake: 1 dies at the first router.
    pub ttl: u8,
    /// Corrupt the TCP checksum (the server's kernel drops it).
    pub bad_checksum: bool,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid server name {0:?}")]
    ServerName(String),
    #[error("no SYN-ACK seen for the local port within 2 s")]
    NoSynAck,
    #[error("IPv4 only")]
    NotIpv4,
    #[error("crafting the fake segment: {0}")]
    Craft(String),
    #[error("no HTTP status line in {0:?}")]
    BadResponse(String),
}

/// The pause between the two parts of a split (and after a fake): long
/// enough that the kernel sends them as separate segments.
const PAUSE: Duration = Duration::from_millis(50);
const TIMEOUT: Duration = Duration::from_secs(5);

/// A ClientHello for `sni` as rustls sends it (one TLS record).
pub fn client_hello(sni: &str) -> Vec<u8> {
    let config = config(rustls::RootCertStore::empty());
    let name = ServerName::try_from(sni.to_string()).expect("a valid test name");
    let mut connection = rustls::ClientConnection::new(config, name).expect("a client connection");
    let mut hello = Vec::new();
    connection
        .write_tls(&mut hello)
        .expect("write to a Vec cannot fail");
    hello
}

/// `GET path` over HTTPS to `server` with SNI and Host `name`, trusting only
/// `ca_der`; returns the HTTP status code.
pub fn https_get(
    server: SocketAddr,
    name: &str,
    path: &str,
    ca_der: &[u8],
    flight: &FirstFlight,
) -> Result<u16, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|_| ClientError::ServerName(name.into()))?;
    let mut connection = rustls::ClientConnection::new(config(roots), server_name)?;

    let tcp = match flight {
        FirstFlight::AfterFake(fake) => connect_after_fake(server, fake)?,
        _ => connect(server)?,
    };
    let split = match flight {
        FirstFlight::Split { at } => Some(SplitAt::Offset(*at)),
        FirstFlight::SplitMidSni => Some(SplitAt::MidName(name.to_string())),
        _ => None,
    };
    let mut shaped = ShapedStream { tcp, split };
    let mut stream = rustls::Stream::new(&mut connection, &mut shaped);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    while !response.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !response.is_empty() => break,
            Err(e) => return Err(e.into()),
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or(ClientError::BadResponse(text))
}

fn config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn connect(server: SocketAddr) -> Result<TcpStream, ClientError> {
    let tcp = TcpStream::connect_timeout(&server, TIMEOUT)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(TIMEOUT))?;
    tcp.set_write_timeout(Some(TIMEOUT))?;
    Ok(tcp)
}

/// Connects, learns the connection's sequence numbers from the SYN-ACK (a
/// raw socket sees a copy of every TCP packet arriving here), and sends the
/// fake as a raw segment at the first data sequence number.
fn connect_after_fake(server: SocketAddr, fake: &Fake) -> Result<TcpStream, ClientError> {
    let IpAddr::V4(server_ip) = server.ip() else {
        return Err(ClientError::NotIpv4);
    };
    let sniffer = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP))?;
    sniffer.set_read_timeout(Some(Duration::from_millis(100)))?;
    let tcp = connect(server)?;
    let IpAddr::V4(local_ip) = tcp.local_addr()?.ip() else {
        return Err(ClientError::NotIpv4);
    };
    let local_port = tcp.local_addr()?.port();
    let (server_seq, client_seq) = syn_ack(&sniffer, server.port(), local_port)?;

    let payload = client_hello(&fake.sni);
    let builder = PacketBuilder::ipv4(local_ip.octets(), server_ip.octets(), fake.ttl)
        .tcp(local_port, server.port(), client_seq, 64240)
        .psh()
        .ack(server_seq.wrapping_add(1));
    let mut packet = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut packet, &payload)
        .map_err(|e| ClientError::Craft(e.to_string()))?;
    if fake.bad_checksum {
        // IPv4 header without options (20) + offset of the TCP checksum (16).
        packet[36] ^= 0xff;
    }
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))?;
    raw.send_to(&packet, &SockAddr::from(SocketAddr::new(server.ip(), 0)))?;
    std::thread::sleep(PAUSE);
    Ok(tcp)
}

/// `IPPROTO_RAW`: a raw socket whose packets carry their own IP header.
const IPPROTO_RAW: i32 = 255;

/// (server ISN, client's first data sequence number) from the SYN-ACK.
fn syn_ack(sniffer: &Socket, server_port: u16, local_port: u16) -> Result<(u32, u32), ClientError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buffer = [0u8; 2048];
    let mut reader = sniffer;
    while Instant::now() < deadline {
        let n = match reader.read(&mut buffer) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let Ok(packet) = SlicedPacket::from_ip(&buffer[..n]) else {
            continue;
        };
        if !matches!(packet.net, Some(NetSlice::Ipv4(_))) {
            continue;
        }
        if let Some(TransportSlice::Tcp(tcp)) = packet.transport
            && tcp.syn()
            && tcp.ack()
            && tcp.source_port() == server_port
            && tcp.destination_port() == local_port
        {
            return Ok((tcp.sequence_number(), tcp.acknowledgment_number()));
        }
    }
    Err(ClientError::NoSynAck)
}

/// Where the first write is split.
enum SplitAt {
    Offset(usize),
    /// In the middle of the first occurrence of this name.
    MidName(String),
}

impl SplitAt {
    fn position(&self, bytes: &[u8]) -> Option<usize> {
        match self {
            SplitAt::Offset(at) => Some(*at),
            SplitAt::MidName(name) => bytes
                .windows(name.len())
                .position(|w| w == name.as_bytes())
                .map(|start| start + name.len() / 2),
        }
    }
}

/// The client side of a TCP connection that splits its first write.
struct ShapedStream {
    tcp: TcpStream,
    split: Option<SplitAt>,
}

impl Read for ShapedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for ShapedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(at) = self.split.take().and_then(|split| split.position(buf))
            && at < buf.len()
        {
            let written = self.tcp.write(&buf[..at])?;
            std::thread::sleep(PAUSE);
            return Ok(written);
        }
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}
