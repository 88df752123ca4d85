use super::*;
use crate::engine::testutil::{ACK_PSH, inspect, tcp_packet, v4, v6};

#[test]
fn parse_reads_tcp_flows_of_both_families() {
    for (src, dst) in [(v4(1), v4(2)), (v6(1), v6(2))] {
        let pkt = tcp_packet(src, dst, (40000, 443), 1000, 2000, ACK_PSH, b"hello");
        let Parsed::Tcp(seg) = parse(&pkt) else {
            panic!("not parsed as TCP");
        };
        assert_eq!(
            seg.key(),
            FlowKey {
                transport: Transport::Tcp,
                src,
                src_port: 40000,
                dst,
                dst_port: 443
            }
        );
        assert_eq!(seg.payload, b"hello");
        assert_eq!(seg.tcp.sequence_number, 1000);
        assert_eq!(seg.is_v6(), dst.is_ipv6());
    }
}

#[test]
fn garbage_and_non_tcp_udp_are_other() {
    assert!(matches!(parse(&[0x45, 0, 0]), Parsed::Other));
    assert!(matches!(parse(&[]), Parsed::Other));
    let mut icmp = tcp_packet(v4(1), v4(2), (1, 2), 0, 0, 0, b"");
    icmp[9] = 1; // protocol ICMP
    assert!(matches!(parse(&icmp), Parsed::Other));
}

#[test]
fn rebuild_reproduces_the_original_bytes() {
    for (src, dst) in [(v4(1), v4(2)), (v6(1), v6(2))] {
        let pkt = tcp_packet(src, dst, (40000, 443), 7, 9, ACK_PSH, b"some payload");
        let Parsed::Tcp(seg) = parse(&pkt) else {
            panic!("tcp");
        };
        assert_eq!(seg.rebuild().expect("fits"), pkt, "{src}");
    }
}

#[test]
fn built_packets_have_correct_lengths_and_checksums() {
    // (family, payload, seq, ttl, badsum)
    let cases = [
        (v4(1), v4(2), &b"abc"[..], 5u32, None, false),
        (v4(1), v4(2), &b""[..], 0xffff_fff0, Some(3u8), false),
        (v4(1), v4(2), &[0u8; 1400][..], 1, Some(1), true),
        (v6(1), v6(2), &b"abcd"[..], 77, None, false),
        (v6(1), v6(2), &b"odd"[..], 1, Some(2), false),
        (v6(1), v6(2), &[9u8; 1200][..], 1, None, true),
    ];
    for (src, dst, payload, seq, ttl, badsum) in cases {
        let orig = tcp_packet(src, dst, (1234, 80), 100, 200, ACK_PSH, b"original");
        let Parsed::Tcp(seg) = parse(&orig) else {
            panic!("tcp");
        };
        let pkt = seg
            .build(seq, 4242, payload, Emit { ttl, badsum })
            .expect("fits");
        let seen = inspect(&pkt);
        assert_eq!(seen.payload, payload);
        assert_eq!((seen.seq, seen.ack, seen.flags), (seq, 4242, ACK_PSH));
        assert_eq!(seen.ttl, ttl.unwrap_or(64));
        assert!(seen.ip_sum_ok, "{src} ip checksum");
        assert_eq!(
            seen.tcp_sum_ok, !badsum,
            "{src} tcp checksum, badsum={badsum}"
        );
    }
}
