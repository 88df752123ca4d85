use super::*;
use crate::engine::packet::{Parsed, parse};
use crate::engine::testutil::{ACK_PSH, SYN, tcp_packet, v4};

fn seg(seq: u32, flags: u8, payload: &[u8]) -> TcpSegment {
    match parse(&tcp_packet(
        v4(1),
        v4(2),
        (1000, 443),
        seq,
        1,
        flags,
        payload,
    )) {
        Parsed::Tcp(s) => s,
        other => panic!("{other:?}"),
    }
}

#[test]
fn observe_counts_packets_and_moves_phases() {
    let now = Instant::now();
    let mut flow: Flow<()> = Flow::new(now);
    // (segment, phase after, packets, data packets, relative seq)
    let steps = [
        (seg(500, SYN, b""), Phase::Syn, 1, 0, Some(0)),
        (seg(501, 0x10, b""), Phase::Established, 2, 0, Some(1)),
        (seg(501, ACK_PSH, b"abc"), Phase::Established, 3, 1, Some(1)),
        (seg(504, 0x11, b""), Phase::Fin, 4, 1, Some(4)),
        // A new SYN on the same tuple starts a new connection.
        (seg(9000, SYN, b""), Phase::Syn, 1, 0, Some(0)),
    ];
    for (i, (s, phase, packets, data, rel)) in steps.into_iter().enumerate() {
        flow.observe(&s, now);
        assert_eq!(flow.phase, phase, "step {i}");
        assert_eq!(
            flow.counters,
            Counters {
                packets,
                data_packets: data,
                relative_seq: rel
            },
            "step {i}"
        );
    }
}

#[test]
fn flow_seen_without_syn_has_no_relative_seq() {
    let now = Instant::now();
    let mut flow: Flow<()> = Flow::new(now);
    flow.observe(&seg(501, ACK_PSH, b"abc"), now);
    assert_eq!(flow.counters.relative_seq, None);
    assert_eq!(flow.counters.value(Limit::Seq(5)), None);
    assert_eq!(flow.counters.value(Limit::DataPackets(5)), Some((1, 5)));
}

#[test]
fn fin_flows_expire_after_a_minute_and_release_holds() {
    let now = Instant::now();
    let mut table: FlowTable<u8> = FlowTable::new(10);
    let s = seg(600, 0x11, b"");
    let mut released = Vec::new();
    let flow = table.entry(s.key(), now, &mut released).expect("room");
    flow.observe(&s, now);
    flow.held = Some(Held {
        tokens: vec![7],
        segments: vec![],
        since: now,
        counters: Counters::default(),
    });
    table.expire(now + FIN_TIMEOUT - Duration::from_secs(1), &mut released);
    assert_eq!((table.len(), released.len()), (1, 0));
    table.expire(now + FIN_TIMEOUT, &mut released);
    assert!(table.is_empty());
    assert_eq!(released, vec![7]);
}
