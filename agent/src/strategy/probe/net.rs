//! Sockets for probes: name lookup (pinned names first), TCP and UDP
//! sockets carrying the probe mark, and a stream wrapper that meters what
//! the server sends (bytes and when) so phases and stalls are measured on
//! the wire, below TLS.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use super::ProbeError;

/// The address of `host`: the pinned one when `pinned` has it, the literal
/// when `host` is an address, else the system resolver's first answer.
pub(crate) async fn resolve(
    host: &str,
    pinned: &HashMap<String, IpAddr>,
) -> Result<IpAddr, io::Error> {
    if let Some(ip) = pinned.get(host) {
        return Ok(*ip);
    }
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    tokio::net::lookup_host((host, 0))
        .await?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

/// A socket of `kind` for `addr`'s family, non-blocking, with `mark` set.
fn socket(addr: SocketAddr, kind: Type, mark: Option<u32>) -> Result<Socket, ProbeError> {
    let protocol = if kind == Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let socket =
        Socket::new(Domain::for_address(addr), kind, Some(protocol)).map_err(ProbeError::Socket)?;
    socket.set_nonblocking(true).map_err(ProbeError::Socket)?;
    if let Some(mark) = mark {
        set_mark(&socket, mark)?;
    }
    Ok(socket)
}

#[cfg(target_os = "linux")]
fn set_mark(socket: &Socket, mark: u32) -> Result<(), ProbeError> {
    socket
        .set_mark(mark)
        .map_err(|source| ProbeError::Mark { mark, source })
}

#[cfg(not(target_os = "linux"))]
fn set_mark(_: &Socket, mark: u32) -> Result<(), ProbeError> {
    Err(ProbeError::Mark {
        mark,
        source: io::Error::new(io::ErrorKind::Unsupported, "SO_MARK exists only on Linux"),
    })
}

/// An unconnected TCP socket for `addr` (local failures are the caller's
/// [`ProbeError`]; connecting is the probe's business).
pub(crate) fn tcp_socket(addr: SocketAddr, mark: Option<u32>) -> Result<TcpSocket, ProbeError> {
    let socket = socket(addr, Type::STREAM, mark)?;
    Ok(TcpSocket::from_std_stream(socket.into()))
}

/// A UDP socket connected to `addr`.
pub(crate) async fn udp_socket(
    addr: SocketAddr,
    mark: Option<u32>,
) -> Result<UdpSocket, ProbeError> {
    let socket = socket(addr, Type::DGRAM, mark)?;
    let unspecified: SocketAddr = match addr {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    socket
        .bind(&unspecified.into())
        .map_err(ProbeError::Socket)?;
    let socket = UdpSocket::from_std(socket.into()).map_err(ProbeError::Socket)?;
    socket.connect(addr).await.map_err(ProbeError::Socket)?;
    Ok(socket)
}

/// What the server sent so far, shared between the probe and the stream
/// it handed to TLS.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Readings {
    /// Bytes received from the server.
    pub bytes: u64,
    /// When the probe first wrote (the ClientHello on TLS).
    pub first_write: Option<Instant>,
    /// When the first server byte arrived.
    pub first_read: Option<Instant>,
    /// When the latest server bytes arrived.
    pub last_read: Option<Instant>,
}

/// A handle on a [`Metered`] stream's readings.
#[derive(Clone, Debug, Default)]
pub(crate) struct Meter(Arc<Mutex<Readings>>);

impl Meter {
    pub(crate) fn readings(&self) -> Readings {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets what was read and written so far (a proxy's handshake is
    /// not the server's answer).
    pub(crate) fn reset(&self) {
        self.update(|readings| *readings = Readings::default());
    }

    fn update(&self, f: impl FnOnce(&mut Readings)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// A TCP stream that records its reads and first write in a [`Meter`].
#[derive(Debug)]
pub(crate) struct Metered {
    stream: TcpStream,
    meter: Meter,
}

impl Metered {
    pub(crate) fn new(stream: TcpStream, meter: Meter) -> Metered {
        Metered { stream, meter }
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            let now = Instant::now();
            self.meter.update(|r| {
                r.bytes += n as u64;
                r.first_read.get_or_insert(now);
                r.last_read = Some(now);
            });
        }
        poll
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            let now = Instant::now();
            self.meter.update(|r| {
                r.first_write.get_or_insert(now);
            });
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
