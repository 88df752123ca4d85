//! TCP segments as the simulator sees them (parsed with `etherparse` from
//! the IP packets NFQUEUE hands over) and the RSTs it sends back.

use std::net::{IpAddr, SocketAddr};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

/// The fields of a TCP segment the simulator decides on. Checksums are
/// deliberately absent: the simulated DPI never checks them (so a fake with
/// a bad checksum fools it at every level). The TTL (hop limit) counts only
/// at level 3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// IPv4 TTL or IPv6 hop limit as the packet reached the simulator.
    pub ttl: u8,
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub has_ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: &'a [u8],
}

/// The TCP segment inside an IPv4/IPv6 packet; `None` for anything else
/// (ICMP, UDP, fragments, garbage), which the simulator always passes.
pub fn parse_segment(packet: &[u8]) -> Option<Segment<'_>> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let (src, dst, ttl) = match sliced.net? {
        NetSlice::Ipv4(ip) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
            ip.header().ttl(),
        ),
        NetSlice::Ipv6(ip) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
            ip.header().hop_limit(),
        ),
        NetSlice::Arp(_) => return None,
    };
    let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
        return None;
    };
    Some(Segment {
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        ttl,
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        syn: tcp.syn(),
        has_ack: tcp.ack(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: tcp.payload(),
    })
}

/// An IP packet to send, and where to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reset {
    pub to: IpAddr,
    pub packet: Vec<u8>,
}

/// TTL / hop limit of the RSTs.
const RESET_TTL: u8 = 64;

/// A RST+ACK "from the server" to the sender of `segment`, acceptable to the
/// client's stack: its sequence number is what the client acknowledged, and
/// it acknowledges everything the segment carried. Checksums are computed.
pub fn reset_to_sender(segment: &Segment<'_>) -> Option<Reset> {
    let carried = u32::try_from(segment.payload.len()).ok()?
        + u32::from(segment.syn)
        + u32::from(segment.fin);
    let ack = segment.seq.wrapping_add(carried);
    let (from, to) = (segment.dst, segment.src);
    let builder = match (from.ip(), to.ip()) {
        (IpAddr::V4(f), IpAddr::V4(t)) => PacketBuilder::ipv4(f.octets(), t.octets(), RESET_TTL),
        (IpAddr::V6(f), IpAddr::V6(t)) => PacketBuilder::ipv6(f.octets(), t.octets(), RESET_TTL),
        _ => return None,
    };
    let builder = builder
        .tcp(from.port(), to.port(), segment.ack, 0)
        .rst()
        .ack(ack);
    let mut packet = Vec::with_capacity(builder.size(0));
    builder.write(&mut packet, &[]).ok()?;
    Some(Reset {
        to: to.ip(),
        packet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_swaps_ends_and_acknowledges_the_payload_with_valid_checksums() {
        let builder = PacketBuilder::ipv4([198, 18, 1, 2], [198, 18, 2, 2], 1)
            .tcp(40000, 443, 1000, 100)
            .ack(7000);
        let mut packet = Vec::new();
        builder.write(&mut packet, b"hello").unwrap();
        let segment = parse_segment(&packet).unwrap();
        assert_eq!(segment.payload, b"hello");

        let reset = reset_to_sender(&segment).unwrap();
        assert_eq!(reset.to, "198.18.1.2".parse::<IpAddr>().unwrap());
        let sliced = SlicedPacket::from_ip(&reset.packet).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!("IPv4 expected")
        };
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
            panic!("TCP expected")
        };
        assert_eq!(ip.header().source(), [198, 18, 2, 2]);
        assert_eq!((tcp.source_port(), tcp.destination_port()), (443, 40000));
        assert!(tcp.rst() && tcp.ack());
        assert_eq!(tcp.sequence_number(), 7000);
        assert_eq!(tcp.acknowledgment_number(), 1005);
        let expected = tcp
            .calc_checksum_ipv4(ip.header().source(), ip.header().destination())
            .unwrap();
        assert_eq!(tcp.checksum(), expected);
        assert_eq!(
            ip.header().to_header().calc_header_checksum(),
            ip.header().header_checksum()
        );
    }
}
