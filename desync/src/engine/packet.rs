//! IP packets as the queue hands them over, and the packets the engine
//! builds to replace them.
//!
//! Every packet built here carries a correct IPv4 header checksum and a
//! correct TCP checksum, unless [`Emit::badsum`] asks for a wrong one. IPv6
//! extension headers of the original are not copied (the emitted packet is
//! a plain IPv6 + TCP packet).

use std::net::IpAddr;

use etherparse::{
    IpNumber, Ipv4Header, Ipv6Header, NetSlice, SlicedPacket, TcpHeader, TransportSlice,
};

/// The connection a packet belongs to, as the sender sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub transport: Transport,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
}

/// Transport protocol of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

/// A queued packet, parsed.
#[derive(Clone, Debug)]
pub enum Parsed {
    Tcp(TcpSegment),
    /// A UDP datagram: only its flow and payload length matter to the engine.
    Udp {
        key: FlowKey,
        payload_len: usize,
    },
    /// Anything else (fragments, ICMP, malformed): passed untouched.
    Other,
}

/// The IP header of a TCP segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpHeader {
    V4(Ipv4Header),
    V6(Ipv6Header),
}

/// A TCP segment with its headers, able to produce copies with other
/// payloads and sequence numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSegment {
    pub ip: IpHeader,
    pub tcp: TcpHeader,
    pub payload: Vec<u8>,
}

/// How to alter a built packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Emit {
    /// TTL (IPv4) or hop limit (IPv6); `None` keeps the original's.
    pub ttl: Option<u8>,
    /// Write a TCP checksum that is certainly wrong.
    pub badsum: bool,
}

/// XORed into a correct checksum to make a wrong one; no value XOR this
/// mask is the one's-complement equivalent (0x0000 vs 0xffff) of itself.
const BADSUM_MASK: u16 = 0x5a5a;

/// Parses an IPv4 or IPv6 packet (no link-layer header).
pub fn parse(bytes: &[u8]) -> Parsed {
    let Ok(sliced) = SlicedPacket::from_ip(bytes) else {
        return Parsed::Other;
    };
    let (ip, src, dst, fragmented) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            (
                IpHeader::V4(h.to_header()),
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.is_payload_fragmented(),
            )
        }
        Some(NetSlice::Ipv6(v6)) => {
            let h = v6.header();
            (
                IpHeader::V6(h.to_header()),
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.is_payload_fragmented(),
            )
        }
        _ => return Parsed::Other,
    };
    if fragmented {
        return Parsed::Other;
    }
    match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => Parsed::Tcp(TcpSegment {
            ip,
            tcp: tcp.to_header(),
            payload: tcp.payload().to_vec(),
        }),
        Some(TransportSlice::Udp(udp)) => Parsed::Udp {
            key: FlowKey {
                transport: Transport::Udp,
                src,
                src_port: udp.source_port(),
                dst,
                dst_port: udp.destination_port(),
            },
            payload_len: udp.payload().len(),
        },
        _ => Parsed::Other,
    }
}

impl TcpSegment {
    /// The segment's flow.
    pub fn key(&self) -> FlowKey {
        let (src, dst) = match &self.ip {
            IpHeader::V4(h) => (
                IpAddr::V4(h.source.into()),
                IpAddr::V4(h.destination.into()),
            ),
            IpHeader::V6(h) => (
                IpAddr::V6(h.source.into()),
                IpAddr::V6(h.destination.into()),
            ),
        };
        FlowKey {
            transport: Transport::Tcp,
            src,
            src_port: self.tcp.source_port,
            dst,
            dst_port: self.tcp.destination_port,
        }
    }

    /// Whether this is IPv6.
    pub fn is_v6(&self) -> bool {
        matches!(self.ip, IpHeader::V6(_))
    }

    /// Builds a packet with this segment's headers (addresses, ports, flags,
    /// window, TCP options, IPv4 id/flags), the given sequence and
    /// acknowledgement numbers and `payload`, with lengths and checksums
    /// recomputed. `None` only if the result would exceed an IP length field.
    pub fn build(&self, seq: u32, ack: u32, payload: &[u8], emit: Emit) -> Option<Vec<u8>> {
        let mut tcp = self.tcp.clone();
        tcp.sequence_number = seq;
        tcp.acknowledgment_number = ack;
        let tcp_len = tcp.header_len() + payload.len();
        let mut out = Vec::with_capacity(60 + tcp_len);
        match &self.ip {
            IpHeader::V4(orig) => {
                let mut ip = orig.clone();
                ip.protocol = IpNumber::TCP;
                ip.set_payload_len(tcp_len).ok()?;
                if let Some(ttl) = emit.ttl {
                    ip.time_to_live = ttl;
                }
                ip.header_checksum = ip.calc_header_checksum();
                tcp.checksum = tcp.calc_checksum_ipv4(&ip, payload).ok()?;
                out.extend_from_slice(&ip.to_bytes());
            }
            IpHeader::V6(orig) => {
                let mut ip = orig.clone();
                ip.next_header = IpNumber::TCP;
                ip.set_payload_length(tcp_len).ok()?;
                if let Some(hops) = emit.ttl {
                    ip.hop_limit = hops;
                }
                tcp.checksum = tcp.calc_checksum_ipv6(&ip, payload).ok()?;
                out.extend_from_slice(&ip.to_bytes());
            }
        }
        if emit.badsum {
            tcp.checksum ^= BADSUM_MASK;
        }
        out.extend_from_slice(&tcp.to_bytes());
        out.extend_from_slice(payload);
        Some(out)
    }

    /// Builds an unchanged copy of this segment (checksums recomputed).
    pub fn rebuild(&self) -> Option<Vec<u8>> {
        self.build(
            self.tcp.sequence_number,
            self.tcp.acknowledgment_number,
            &self.payload,
            Emit::default(),
        )
    }
}

#[cfg(test)]
#[path = "packet/tests.rs"]
mod tests;
