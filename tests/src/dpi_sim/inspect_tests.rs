use etherparse::PacketBuilder;

use super::*;
use crate::tls_client::client_hello;

const ISN: u32 = 1000;

fn inspector() -> Inspector {
    Inspector::new(Blocklist::new(["blocked.test".to_string()]))
}

fn packet(seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let builder =
        PacketBuilder::ipv4([198, 18, 1, 2], [198, 18, 2, 2], 64).tcp(40000, 443, seq, 1000);
    let builder = if syn { builder.syn() } else { builder.ack(1) };
    let mut bytes = Vec::new();
    builder.write(&mut bytes, payload).unwrap();
    bytes
}

/// Opens the flow with a SYN; returns the first data sequence number.
fn open(inspector: &mut Inspector, level: u8) -> u32 {
    assert!(inspector.inspect(level, &packet(ISN, true, &[])).pass);
    ISN + 1
}

fn data(inspector: &mut Inspector, level: u8, seq: u32, payload: &[u8]) -> Outcome {
    inspector.inspect(level, &packet(seq, false, payload))
}

fn split_point(hello: &[u8]) -> usize {
    hello.windows(7).position(|w| w == b"blocked").unwrap() + 3
}

#[test]
fn level_0_passes_a_blocked_client_hello() {
    let mut dpi = inspector();
    let seq = open(&mut dpi, 0);
    let outcome = data(&mut dpi, 0, seq, &client_hello("blocked.test"));
    assert!(outcome.pass && outcome.reset.is_none() && outcome.decision.is_none());
}

#[test]
fn level_1_drops_and_resets_a_blocked_name_inside_one_segment() {
    let mut dpi = inspector();
    let seq = open(&mut dpi, 1);
    let outcome = data(&mut dpi, 1, seq, &client_hello("www.blocked.test"));
    assert!(!outcome.pass);
    let reset = outcome.reset.expect("a RST to the client");
    assert_eq!(reset.to.to_string(), "198.18.1.2");
    let decision = outcome.decision.unwrap();
    assert_eq!(decision["verdict"], "block");
    assert_eq!(decision["sni"], "www.blocked.test");
    assert_eq!(decision["level"], 1);
    assert_eq!(decision["flow"], "198.18.1.2:40000 -> 198.18.2.2:443");
}

#[test]
fn level_1_passes_an_allowed_name_and_a_split_blocked_one() {
    let mut dpi = inspector();
    let seq = open(&mut dpi, 1);
    let allowed = data(&mut dpi, 1, seq, &client_hello("allowed.test"));
    assert!(allowed.pass);
    assert_eq!(allowed.decision.unwrap()["verdict"], "pass");

    let mut dpi = inspector();
    let seq = open(&mut dpi, 1);
    let hello = client_hello("blocked.test");
    let at = split_point(&hello);
    assert!(data(&mut dpi, 1, seq, &hello[..at]).pass);
    assert!(data(&mut dpi, 1, seq + at as u32, &hello[at..]).pass);
}

#[test]
fn level_2_blocks_a_split_client_hello_on_the_segment_that_completes_it() {
    let mut dpi = inspector();
    let seq = open(&mut dpi, 2);
    let hello = client_hello("blocked.test");
    let at = split_point(&hello);
    let first = data(&mut dpi, 2, seq, &hello[..at]);
    assert!(first.pass && first.decision.is_none());
    let second = data(&mut dpi, 2, seq + at as u32, &hello[at..]);
    assert!(!second.pass && second.reset.is_some());
    assert_eq!(second.decision.unwrap()["sni"], "blocked.test");
    // The flow stays blocked: a later client segment is dropped too.
    let later = data(&mut dpi, 2, seq + hello.len() as u32, b"more");
    assert!(!later.pass && later.reset.is_some());
}

#[test]
fn level_2_reassembles_disordered_segments() {
    let mut dpi = inspector();
    let seq = open(&mut dpi, 2);
    let hello = client_hello("blocked.test");
    let at = split_point(&hello);
    assert!(data(&mut dpi, 2, seq + at as u32, &hello[at..]).pass);
    let completing = data(&mut dpi, 2, seq, &hello[..at]);
    assert!(!completing.pass);
    assert_eq!(completing.decision.unwrap()["verdict"], "block");
}

#[test]
fn level_2_first_client_hello_wins_so_a_fake_passes_the_flow() {
    let mut dpi = inspector();
    let seq = open(&mut dpi, 2);
    let fake = data(&mut dpi, 2, seq, &client_hello("allowed.test"));
    assert!(fake.pass);
    assert_eq!(fake.decision.unwrap()["sni"], "allowed.test");
    let real = data(&mut dpi, 2, seq, &client_hello("blocked.test"));
    assert!(real.pass && real.decision.is_none());
}

#[test]
fn level_2_blocks_an_http_request_for_a_blocked_host() {
    let mut dpi = inspector();
    let seq = open(&mut dpi, 2);
    let request = b"GET / HTTP/1.1\r\nHost: blocked.test\r\nAccept: */*\r\n\r\n";
    let outcome = data(&mut dpi, 2, seq, request);
    assert!(!outcome.pass);
    assert_eq!(outcome.decision.unwrap()["host"], "blocked.test");
}

#[test]
fn non_tcp_packets_pass_at_every_level() {
    let mut dpi = inspector();
    let builder = PacketBuilder::ipv4([198, 18, 1, 2], [198, 18, 2, 2], 1).udp(5000, 443);
    let mut bytes = Vec::new();
    builder
        .write(&mut bytes, &client_hello("blocked.test"))
        .unwrap();
    for level in 0..=MAX_LEVEL {
        assert!(dpi.inspect(level, &bytes).pass);
    }
}

/// A client segment with its own TTL (a fake meant to expire on the way).
fn data_with_ttl(dpi: &mut Inspector, seq: u32, ttl: u8, payload: &[u8]) -> Outcome {
    let builder =
        PacketBuilder::ipv4([198, 18, 1, 2], [198, 18, 2, 2], ttl).tcp(40000, 443, seq, 1000);
    let mut bytes = Vec::new();
    builder.ack(1).write(&mut bytes, payload).unwrap();
    dpi.inspect(3, &bytes)
}

/// Server ISN of [`server`] segments.
const SERVER_ISN: u32 = 50_000;

/// A server→client segment; `syn`: the SYN-ACK.
fn server(dpi: &mut Inspector, level: u8, seq: u32, syn: bool, payload: &[u8]) -> Outcome {
    let builder =
        PacketBuilder::ipv4([198, 18, 2, 2], [198, 18, 1, 2], 64).tcp(443, 40000, seq, 1000);
    let builder = if syn {
        builder.syn().ack(ISN + 1)
    } else {
        builder.ack(ISN + 1)
    };
    let mut bytes = Vec::new();
    builder.write(&mut bytes, payload).unwrap();
    dpi.inspect(level, &bytes)
}

/// Where this test flow freezes (the client's first data byte is ISN + 1).
fn freeze_at() -> u64 {
    super::super::flow::FREEZE_MIN + u64::from(ISN + 1) % super::super::flow::FREEZE_SPREAD
}

/// Sends server data in 1000-byte segments from offset 0 up to `until`;
/// returns the offset of the first dropped segment, if any.
fn download(dpi: &mut Inspector, until: u64) -> Option<u64> {
    let mut offset = 0_u64;
    while offset < until {
        let seq = SERVER_ISN + 1 + u32::try_from(offset).unwrap();
        let outcome = server(dpi, 3, seq, false, &[0_u8; 1000]);
        assert!(outcome.reset.is_none(), "a freeze never sends a RST");
        if !outcome.pass {
            return Some(offset);
        }
        offset += 1000;
    }
    None
}

#[test]
fn level_3_lets_a_blocked_handshake_through_then_freezes_after_16_to_20_kb() {
    let mut dpi = inspector();
    let seq = open(&mut dpi, 3);
    assert!(server(&mut dpi, 3, SERVER_ISN, true, &[]).pass);
    let hello = data(&mut dpi, 3, seq, &client_hello("blocked.test"));
    assert!(
        hello.pass && hello.reset.is_none(),
        "the handshake goes through"
    );
    let decision = hello.decision.unwrap();
    assert_eq!(decision["verdict"], "throttle");
    assert_eq!(decision["level"], 3);
    assert_eq!(decision["freezeAfter"], freeze_at());
    let at = freeze_at();
    assert!((16 * 1024..=20 * 1024).contains(&at), "{at}");

    let dropped = download(&mut dpi, 64 * 1024).expect("the download freezes");
    assert!(dropped + 1000 > at && dropped <= at, "{dropped} vs {at}");
    // The freeze holds: later data and its retransmissions are dropped, and
    // the client's segments (ACKs, retries) still pass.
    let next = SERVER_ISN + 1 + u32::try_from(dropped).unwrap();
    assert!(!server(&mut dpi, 3, next, false, &[0_u8; 1000]).pass);
    assert!(!server(&mut dpi, 3, next + 5000, false, &[0_u8; 1000]).pass);
    assert!(data(&mut dpi, 3, seq + 600, b"client bytes").pass);
    // Data before the freeze point retransmitted: passes.
    assert!(server(&mut dpi, 3, SERVER_ISN + 1, false, &[0_u8; 1000]).pass);
}

#[test]
fn level_3_never_freezes_an_allowed_name() {
    let mut dpi = inspector();
    let seq = open(&mut dpi, 3);
    assert!(server(&mut dpi, 3, SERVER_ISN, true, &[]).pass);
    let hello = data(&mut dpi, 3, seq, &client_hello("allowed.test"));
    assert_eq!(hello.decision.unwrap()["verdict"], "pass");
    assert_eq!(download(&mut dpi, 64 * 1024), None);
}

#[test]
fn level_3_ignores_a_fake_whose_ttl_is_below_the_syns_so_fake_by_ttl_fails() {
    // At level 2 the low-TTL fake decides the flow (see the level 2 test);
    // at level 3 it is not looked at and the real ClientHello decides.
    let mut dpi = inspector();
    let seq = open(&mut dpi, 3);
    assert!(server(&mut dpi, 3, SERVER_ISN, true, &[]).pass);
    let fake = data_with_ttl(&mut dpi, seq, 3, &client_hello("allowed.test"));
    assert!(fake.pass);
    assert_eq!(fake.decision.unwrap()["verdict"], "ignore");
    let real = data(&mut dpi, 3, seq, &client_hello("blocked.test"));
    assert_eq!(real.decision.unwrap()["verdict"], "throttle");
    assert!(download(&mut dpi, 64 * 1024).is_some());
}

#[test]
fn level_3_still_takes_a_fake_with_the_syns_ttl_so_fake_by_badsum_works() {
    // A bad-checksum fake keeps the normal TTL: the simulator checks no
    // checksums, so the first ClientHello seen still wins.
    let mut dpi = inspector();
    let seq = open(&mut dpi, 3);
    assert!(server(&mut dpi, 3, SERVER_ISN, true, &[]).pass);
    let fake = data(&mut dpi, 3, seq, &client_hello("allowed.test"));
    assert_eq!(fake.decision.unwrap()["verdict"], "pass");
    let real = data(&mut dpi, 3, seq, &client_hello("blocked.test"));
    assert!(real.pass && real.decision.is_none());
    assert_eq!(download(&mut dpi, 64 * 1024), None);
}

#[test]
fn level_3_throttles_every_flow_to_a_blocked_address_whatever_the_name() {
    let mut dpi = inspector().with_blocked_addresses(vec!["198.18.2.2".parse().unwrap()]);
    let syn = dpi.inspect(3, &packet(ISN, true, &[]));
    assert!(syn.pass);
    assert_eq!(
        syn.decision.unwrap()["reason"],
        "blocked address 198.18.2.2"
    );
    assert!(server(&mut dpi, 3, SERVER_ISN, true, &[]).pass);
    let hello = data(&mut dpi, 3, ISN + 1, &client_hello("allowed.test"));
    assert!(hello.pass);
    assert!(download(&mut dpi, 64 * 1024).is_some());
}

#[test]
fn a_flow_throttled_at_level_3_flows_freely_after_a_switch_to_level_1() {
    let mut dpi = inspector();
    let seq = open(&mut dpi, 3);
    assert!(server(&mut dpi, 3, SERVER_ISN, true, &[]).pass);
    data(&mut dpi, 3, seq, &client_hello("blocked.test"));
    let beyond = SERVER_ISN + 1 + 30_000;
    assert!(!server(&mut dpi, 3, beyond, false, &[0_u8; 1000]).pass);
    assert!(server(&mut dpi, 1, beyond, false, &[0_u8; 1000]).pass);
}
