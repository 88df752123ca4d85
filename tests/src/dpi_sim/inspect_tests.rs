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
