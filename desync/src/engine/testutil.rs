//! Test helpers: packets assembled and checked byte by byte, without
//! etherparse, so tests do not trust the code they test.

use std::net::IpAddr;

/// One's-complement sum of 16-bit words, folded.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        acc += u32::from(word);
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

fn pseudo_sum(src: IpAddr, dst: IpAddr, tcp_len: usize) -> u32 {
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend(s.octets());
            p.extend(d.octets());
            p.extend([0, 6]);
            p.extend((tcp_len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend(s.octets());
            p.extend(d.octets());
            p.extend((tcp_len as u32).to_be_bytes());
            p.extend([0, 0, 0, 6]);
        }
        _ => panic!("mixed families"),
    }
    sum16(&p, 0)
}

/// TCP flags byte: ACK|PSH.
pub const ACK_PSH: u8 = 0x18;
/// TCP flags byte: SYN.
pub const SYN: u8 = 0x02;

/// A TCP packet with a timestamp option, correct checksums.
pub fn tcp_packet(
    src: IpAddr,
    dst: IpAddr,
    ports: (u16, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend(ports.0.to_be_bytes());
    tcp.extend(ports.1.to_be_bytes());
    tcp.extend(seq.to_be_bytes());
    tcp.extend(ack.to_be_bytes());
    tcp.push(8 << 4); // 32-byte header: 20 + 12 option bytes
    tcp.push(flags);
    tcp.extend(502u16.to_be_bytes());
    tcp.extend([0, 0, 0, 0]); // checksum, urgent
    tcp.extend([1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78]); // NOP NOP TS
    tcp.extend(payload);
    let sum = !(sum16(&tcp, pseudo_sum(src, dst, tcp.len())) as u16);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend([0x45, 0]);
            out.extend(((20 + tcp.len()) as u16).to_be_bytes());
            out.extend([0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
            out.extend(s.octets());
            out.extend(d.octets());
            let sum = !(sum16(&out, 0) as u16);
            out[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend([0x60, 0, 0, 0]);
            out.extend((tcp.len() as u16).to_be_bytes());
            out.extend([6, 64]);
            out.extend(s.octets());
            out.extend(d.octets());
        }
        _ => panic!("mixed families"),
    }
    out.extend(tcp);
    out
}

/// What a test needs to know about an emitted packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub seq: u32,
    pub ack: u32,
    pub ttl: u8,
    pub flags: u8,
    pub ip_sum_ok: bool,
    pub tcp_sum_ok: bool,
    pub payload: Vec<u8>,
}

/// Decodes and checks an IPv4 or IPv6 + TCP packet by hand.
pub fn inspect(pkt: &[u8]) -> Seen {
    let (src, dst, ttl, ip_len, ip_sum_ok, total) = match pkt[0] >> 4 {
        4 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            let s: [u8; 4] = pkt[12..16].try_into().unwrap();
            let d: [u8; 4] = pkt[16..20].try_into().unwrap();
            (
                IpAddr::from(s),
                IpAddr::from(d),
                pkt[8],
                ihl,
                sum16(&pkt[..ihl], 0) == 0xffff,
                total,
            )
        }
        6 => {
            assert_eq!(pkt[6], 6, "next header is TCP");
            let s: [u8; 16] = pkt[8..24].try_into().unwrap();
            let d: [u8; 16] = pkt[24..40].try_into().unwrap();
            let plen = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            (
                IpAddr::from(s),
                IpAddr::from(d),
                pkt[7],
                40,
                true,
                40 + plen,
            )
        }
        v => panic!("IP version {v}"),
    };
    assert_eq!(total, pkt.len(), "IP length field matches the packet");
    let tcp = &pkt[ip_len..];
    let off = usize::from(tcp[12] >> 4) * 4;
    Seen {
        seq: u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
        ack: u32::from_be_bytes(tcp[8..12].try_into().unwrap()),
        ttl,
        flags: tcp[13],
        ip_sum_ok,
        tcp_sum_ok: sum16(tcp, pseudo_sum(src, dst, tcp.len())) == 0xffff,
        payload: tcp[off..].to_vec(),
    }
}

pub fn v4(last: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, last])
}

pub fn v6(last: u16) -> IpAddr {
    IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, last])
}

/// A stand-in for the real list matchers: a profile's `include_domains` /
/// `exclude_domains` (suffix match on label boundaries) and `include` /
/// `exclude` addresses (exact only).
pub struct DomainLists(pub crate::spec::Config);

fn under(host: &str, domain: &str) -> bool {
    host == domain || host.ends_with(&format!(".{domain}"))
}

impl crate::engine::profile::ProfileFilter for DomainLists {
    fn host_allowed(&self, profile: usize, host: &str) -> bool {
        let h = &self.0.profiles[profile].hosts;
        let included =
            h.include_domains.is_empty() || h.include_domains.iter().any(|d| under(host, d));
        included && !h.exclude_domains.iter().any(|d| under(host, d))
    }
    fn ip_allowed(&self, profile: usize, ip: IpAddr) -> bool {
        let l = &self.0.profiles[profile].ips;
        (l.include.is_empty() || l.include.iter().any(|c| c.addr == ip))
            && !l.exclude.iter().any(|c| c.addr == ip)
    }
}
