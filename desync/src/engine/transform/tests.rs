use super::*;
use crate::engine::fake::{FAKE_HOST, client_hello, http_get};
use crate::engine::locate::{Scan, scan};
use crate::engine::packet::{Parsed, parse};
use crate::engine::testutil::{ACK_PSH, Seen, inspect, tcp_packet, v4, v6};
use crate::spec::{Fooling, Marker, SplitPos};
use std::net::IpAddr;

const SEQ: u32 = 1_000_000;
const ACK: u32 = 5_000;
const SNI: &str = "www.blocked.example";

fn pos(marker: Marker, offset: i32) -> SplitPos {
    SplitPos { marker, offset }
}

fn desync(fake: bool, split: Option<SplitMode>, split_pos: Vec<SplitPos>) -> Desync {
    Desync {
        fake,
        split,
        split_pos,
        ..Desync::default()
    }
}

/// Original segments carrying `message` cut into `sizes` (the last takes the rest).
fn segments(src: IpAddr, dst: IpAddr, message: &[u8], sizes: &[usize]) -> Vec<TcpSegment> {
    let mut out = Vec::new();
    let mut at = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let end = if i + 1 == sizes.len() {
            message.len()
        } else {
            at + size
        };
        let pkt = tcp_packet(
            src,
            dst,
            (40000, 443),
            SEQ + at as u32,
            ACK,
            ACK_PSH,
            &message[at..end],
        );
        let Parsed::Tcp(seg) = parse(&pkt) else {
            panic!("tcp");
        };
        out.push(seg);
        at = end;
    }
    out
}

fn run_on(d: &Desync, segs: &[TcpSegment]) -> (Vec<Seen>, bool) {
    let message: Vec<u8> = segs.iter().flat_map(|s| s.payload.clone()).collect();
    let (proto, marks) = match scan(&message) {
        Scan::Complete(p, m) => (p, m),
        _ => (Proto::Unknown, Landmarks::default()),
    };
    let out = apply(
        d,
        &Request {
            segments: segs,
            proto,
            marks: &marks,
        },
    );
    (
        out.inject.iter().map(|p| inspect(p)).collect(),
        out.keep_originals,
    )
}

fn run(d: &Desync, message: &[u8]) -> (Vec<Seen>, bool) {
    run_on(d, &segments(v4(1), v4(2), message, &[message.len()]))
}

/// The real (not fooled) packets' payloads laid out by sequence number.
fn reassemble(seen: &[Seen]) -> Vec<u8> {
    let mut real: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.tcp_sum_ok && s.ttl == 64)
        .collect();
    real.sort_by_key(|s| s.seq);
    let mut out = Vec::new();
    for s in real {
        assert_eq!(s.seq, SEQ + out.len() as u32, "contiguous, no overlap");
        out.extend(&s.payload);
    }
    out
}

fn offset(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("present")
}

#[test]
fn multisplit_sends_parts_in_order_at_the_resolved_positions() {
    let hello = client_hello(SNI, 517);
    let host = offset(&hello, SNI.as_bytes());
    let midsld = host + 4 + "blocked".len() / 2;
    let d = desync(
        false,
        Some(SplitMode::Multisplit),
        vec![pos(Marker::Absolute, 1), pos(Marker::MidSld, 0)],
    );
    let (seen, keep) = run(&d, &hello);
    assert!(!keep);
    let starts: Vec<u32> = seen.iter().map(|s| s.seq - SEQ).collect();
    assert_eq!(starts, vec![0, 1, midsld as u32]);
    assert!(
        seen.iter()
            .all(|s| s.ip_sum_ok && s.tcp_sum_ok && s.ack == ACK && s.ttl == 64)
    );
    assert_eq!(reassemble(&seen), hello);
}

#[test]
fn multidisorder_sends_the_same_parts_last_first() {
    let hello = client_hello(SNI, 517);
    let d = desync(
        false,
        Some(SplitMode::Multidisorder),
        vec![
            pos(Marker::Absolute, 1),
            pos(Marker::Sld, 0),
            pos(Marker::Absolute, -3),
        ],
    );
    let (seen, keep) = run(&d, &hello);
    assert!(!keep);
    let starts: Vec<u32> = seen.iter().map(|s| s.seq - SEQ).collect();
    let host = offset(&hello, SNI.as_bytes()) as u32;
    assert_eq!(starts, vec![hello.len() as u32 - 3, host + 4, 1, 0]);
    assert_eq!(reassemble(&seen), hello);
}

#[test]
fn multi_segment_request_is_also_cut_at_segment_boundaries() {
    // A post-quantum-sized ClientHello over two segments, SNI near the end.
    let hello = client_hello(SNI, 1800);
    for (src, dst) in [(v4(1), v4(2)), (v6(1), v6(2))] {
        let segs = segments(src, dst, &hello, &[1200, 0]);
        let host = offset(&hello, SNI.as_bytes());
        let d = desync(
            false,
            Some(SplitMode::Multisplit),
            vec![pos(Marker::Absolute, 2), pos(Marker::Host, 3)],
        );
        let (seen, keep) = run_on(&d, &segs);
        assert!(!keep);
        let starts: Vec<usize> = seen.iter().map(|s| (s.seq - SEQ) as usize).collect();
        let mut want = vec![0, 2, 1200, host + 3];
        want.sort_unstable();
        assert_eq!(starts, want, "{src}");
        assert!(seen.iter().all(|s| s.payload.len() <= 1200));
        assert_eq!(reassemble(&seen), hello);
    }
}

#[test]
fn unresolvable_split_leaves_the_originals_alone() {
    let d = desync(
        false,
        Some(SplitMode::Multisplit),
        vec![pos(Marker::Method, 2), pos(Marker::Absolute, 9999)],
    );
    let (seen, keep) = run(&d, &client_hello(SNI, 517));
    assert!(seen.is_empty());
    assert!(keep);
}

#[test]
fn fake_goes_first_repeated_with_ttl_and_badsum_then_originals_pass() {
    let mut d = desync(true, None, vec![]);
    d.repeats = 3;
    d.ttl = Some(4);
    d.fooling = Fooling {
        badsum: true,
        badseq: false,
    };
    let (seen, keep) = run(&d, &client_hello(SNI, 517));
    assert!(keep);
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!((s.seq, s.ack, s.ttl), (SEQ, ACK, 4));
        assert!(s.ip_sum_ok && !s.tcp_sum_ok);
        let Scan::Complete(Proto::Tls, marks) = scan(&s.payload) else {
            panic!("fake is a ClientHello");
        };
        let host = marks.host.expect("sni");
        assert_eq!(&s.payload[host], FAKE_HOST.as_bytes());
    }
}

#[test]
fn badseq_moves_seq_and_ack_of_fakes_only() {
    let mut d = desync(
        true,
        Some(SplitMode::Multisplit),
        vec![pos(Marker::Absolute, 1)],
    );
    d.fooling = Fooling {
        badsum: false,
        badseq: true,
    };
    let hello = client_hello(SNI, 517);
    let (seen, _) = run(&d, &hello);
    assert_eq!(seen.len(), 3);
    assert_eq!(
        (seen[0].seq, seen[0].ack),
        (SEQ - 10_000, ACK.wrapping_sub(66_000))
    );
    assert!(seen[0].tcp_sum_ok);
    assert_eq!((seen[1].seq, seen[1].ack), (SEQ, ACK));
    assert_eq!((seen[2].seq, seen[2].ack), (SEQ + 1, ACK));
    assert_eq!(
        [seen[1].payload.clone(), seen[2].payload.clone()].concat(),
        hello
    );
}

#[test]
fn fake_payload_follows_the_protocol_and_the_profile() {
    let custom = vec![0xaa; 40];
    let cases = [
        (
            "tls default",
            client_hello(SNI, 517),
            None,
            None,
            client_hello(FAKE_HOST, 517),
        ),
        (
            "http default",
            http_get(SNI),
            None,
            None,
            http_get(FAKE_HOST),
        ),
        (
            "tls custom",
            client_hello(SNI, 517),
            Some(custom.clone()),
            None,
            custom.clone(),
        ),
        (
            "http custom",
            http_get(SNI),
            None,
            Some(custom.clone()),
            custom.clone(),
        ),
    ];
    for (name, message, fake_tls, fake_http, want) in cases {
        let mut d = desync(true, None, vec![]);
        d.fake_tls = fake_tls;
        d.fake_http = fake_http;
        let (seen, _) = run(&d, &message);
        assert_eq!(seen.len(), 1, "{name}");
        assert_eq!(seen[0].payload, want, "{name}");
    }
}

/// (real?, start offset, length) of each emitted packet.
fn shape(seen: &[Seen]) -> Vec<(bool, u32, usize)> {
    seen.iter()
        .map(|s| {
            let real = s.tcp_sum_ok && s.ttl == 64;
            if !real {
                assert!(
                    s.payload.iter().all(|&b| b == 0),
                    "fake split parts are zeros"
                );
            }
            (real, s.seq - SEQ, s.payload.len())
        })
        .collect()
}

#[test]
fn fakedsplit_and_fakeddisorder_surround_each_part_with_same_size_fakes() {
    let hello = client_hello(SNI, 517);
    let len = hello.len();
    let host = offset(&hello, SNI.as_bytes());
    for (mode, head_first) in [
        (SplitMode::Fakedsplit, true),
        (SplitMode::Fakeddisorder, false),
    ] {
        let mut d = desync(
            false,
            Some(mode),
            vec![pos(Marker::Absolute, 7), pos(Marker::Host, 1)],
        );
        d.ttl = Some(3);
        let (seen, keep) = run(&d, &hello);
        assert!(!keep);
        let at = host + 1;
        let head = [(false, 0, at), (true, 0, at), (false, 0, at)];
        let tail = [
            (false, at as u32, len - at),
            (true, at as u32, len - at),
            (false, at as u32, len - at),
        ];
        let want: Vec<_> = if head_first {
            [head, tail].concat()
        } else {
            [tail, head].concat()
        };
        assert_eq!(shape(&seen), want, "{mode:?}");
        assert_eq!(reassemble(&seen), hello);
    }
}

#[test]
fn fake_combined_with_split_sends_fakes_then_parts() {
    let hello = client_hello(SNI, 517);
    let mut d = desync(
        true,
        Some(SplitMode::Multidisorder),
        vec![pos(Marker::Absolute, 1)],
    );
    d.repeats = 2;
    d.ttl = Some(5);
    let (seen, keep) = run(&d, &hello);
    assert!(!keep);
    let ttls: Vec<u8> = seen.iter().map(|s| s.ttl).collect();
    assert_eq!(ttls, vec![5, 5, 64, 64]);
    assert_eq!((seen[2].seq, seen[3].seq), (SEQ + 1, SEQ));
}

#[test]
fn ipv6_fakes_use_ttl6_else_ttl() {
    let hello = client_hello(SNI, 517);
    for (ttl, ttl6, want) in [(Some(3), Some(7), 7), (Some(3), None, 3), (None, None, 64)] {
        let mut d = desync(true, None, vec![]);
        d.ttl = ttl;
        d.ttl6 = ttl6;
        let (seen, _) = run_on(&d, &segments(v6(1), v6(2), &hello, &[hello.len()]));
        assert_eq!(seen[0].ttl, want);
        assert!(seen[0].tcp_sum_ok);
    }
}

#[test]
fn unknown_payload_splits_at_numbers_only() {
    let data = vec![0x42; 100];
    let d = desync(
        false,
        Some(SplitMode::Multisplit),
        vec![pos(Marker::MidSld, 0), pos(Marker::Absolute, -10)],
    );
    let (seen, _) = run(&d, &data);
    let starts: Vec<u32> = seen.iter().map(|s| s.seq - SEQ).collect();
    assert_eq!(starts, vec![0, 90]);
    assert_eq!(reassemble(&seen), data);
}
