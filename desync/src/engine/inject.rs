//! Sending the packets the engine builds: one raw socket per IP family,
//! header included (the engine writes whole IP packets), every packet
//! marked with `--dpi-desync-fwmark` so the capture rule
//! (`-m mark ! --mark M/M`) does not queue them again.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// `IPPROTO_RAW`: a send-only raw socket whose packets carry their own IP header.
const IPPROTO_RAW: i32 = 255;

/// Errors opening the injection sockets.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The raw socket could not be created or configured (needs CAP_NET_RAW,
    /// and CAP_NET_ADMIN for the mark).
    #[error(
        "cannot open the raw {family} socket for injected packets (needs CAP_NET_RAW and CAP_NET_ADMIN): {source}"
    )]
    Socket {
        family: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The raw sockets.
pub struct Injector {
    v4: Socket,
    v6: Socket,
}

impl Injector {
    /// Opens both sockets with `mark` set on every packet they send.
    pub fn open(mark: u32) -> Result<Self, InjectError> {
        let v4 = raw_socket(Domain::IPV4, mark).map_err(|source| InjectError::Socket {
            family: "IPv4",
            source,
        })?;
        let v6 = raw_socket(Domain::IPV6, mark)
            .and_then(|s| s.set_header_included_v6(true).map(|()| s))
            .map_err(|source| InjectError::Socket {
                family: "IPv6",
                source,
            })?;
        Ok(Injector { v4, v6 })
    }

    /// Sends one whole IP packet (the destination is read from its header).
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        let (socket, dst) = match destination(packet) {
            Some(IpAddr::V4(a)) => (&self.v4, IpAddr::V4(a)),
            Some(IpAddr::V6(a)) => (&self.v6, IpAddr::V6(a)),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an IPv4 or IPv6 packet",
                ));
            }
        };
        let sent = socket.send_to(packet, &SockAddr::from(SocketAddr::new(dst, 0)))?;
        if sent == packet.len() {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::WriteZero, "short raw send"))
        }
    }
}

fn raw_socket(domain: Domain, mark: u32) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))?;
    socket.set_mark(mark)?;
    Ok(socket)
}

/// The destination address in an IP header.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testutil::{tcp_packet, v4, v6};

    #[test]
    fn destination_is_read_from_the_ip_header() {
        for (src, dst) in [(v4(1), v4(2)), (v6(1), v6(2))] {
            let pkt = tcp_packet(src, dst, (1, 2), 0, 0, 0x10, b"x");
            assert_eq!(destination(&pkt), Some(dst));
        }
        assert_eq!(destination(&[0x45, 0, 0]), None);
        assert_eq!(destination(&[0x20; 40]), None);
        assert_eq!(destination(&[]), None);
    }
}
