use super::*;
use crate::engine::fake::client_hello;
use crate::engine::packet::parse;
use crate::engine::profile::NoLists;
use crate::engine::testutil::{ACK_PSH, DomainLists, SYN, inspect, tcp_packet, v4, v6};
use crate::spec::{HostFilter, Limit, Marker, PortFilter, Profile, SplitMode, SplitPos};
use std::net::IpAddr;

const ISN: u32 = 7_000;
const SNI: &str = "www.blocked.test";

fn profile(desync: Desync) -> Profile {
    Profile {
        tcp: Some(PortFilter {
            negate: false,
            ranges: vec![(443, 443), (80, 80)],
        }),
        desync,
        ..Profile::default()
    }
}

fn split_at(points: &[i32]) -> Desync {
    Desync {
        split: Some(SplitMode::Multisplit),
        split_pos: points
            .iter()
            .map(|&offset| SplitPos {
                marker: Marker::Absolute,
                offset,
            })
            .collect(),
        ..Desync::default()
    }
}

fn config(profiles: Vec<Profile>) -> Config {
    Config {
        profiles,
        ..Config::default()
    }
}

/// A client connection to port 443: builds its packets.
struct Client {
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    sent: u32,
}

impl Client {
    fn new(src: IpAddr, dst: IpAddr) -> Self {
        Client {
            src,
            dst,
            port: 443,
            sent: 0,
        }
    }
    fn syn(&self) -> Parsed {
        parse(&tcp_packet(
            self.src,
            self.dst,
            (40000, self.port),
            ISN,
            0,
            SYN,
            b"",
        ))
    }
    fn ack(&self) -> Parsed {
        parse(&tcp_packet(
            self.src,
            self.dst,
            (40000, self.port),
            ISN + 1,
            1,
            0x10,
            b"",
        ))
    }
    /// The next data segment.
    fn data(&mut self, payload: &[u8]) -> Parsed {
        let pkt = tcp_packet(
            self.src,
            self.dst,
            (40000, self.port),
            ISN + 1 + self.sent,
            1,
            ACK_PSH,
            payload,
        );
        self.sent += payload.len() as u32;
        parse(&pkt)
    }
}

/// Runs SYN and ACK through `d` (both must pass untouched).
fn handshake<F: ProfileFilter>(d: &mut Desyncer<u32, F>, c: &Client, now: Instant) {
    for (id, p) in [(100, c.syn()), (101, c.ack())] {
        let a = d.on_packet(id, p, now);
        assert!(a.inject.is_empty());
        assert_eq!(a.verdicts, vec![(id, Verdict::Accept)]);
    }
}

fn payloads(actions: &Actions<u32>) -> Vec<Vec<u8>> {
    actions.inject.iter().map(|p| inspect(p).payload).collect()
}

#[test]
fn single_segment_request_is_replaced_by_its_parts() {
    let mut d = Desyncer::new(config(vec![profile(split_at(&[1, 5]))]), NoLists);
    let now = Instant::now();
    let mut c = Client::new(v4(1), v4(2));
    handshake(&mut d, &c, now);
    let hello = client_hello(SNI, 517);
    let a = d.on_packet(1, c.data(&hello), now);
    assert_eq!(a.verdicts, vec![(1, Verdict::Drop)]);
    assert_eq!(
        payloads(&a),
        vec![
            hello[..1].to_vec(),
            hello[1..5].to_vec(),
            hello[5..].to_vec()
        ]
    );
}

#[test]
fn request_over_two_segments_is_held_then_desynced_whole() {
    for (src, dst) in [(v4(1), v4(2)), (v6(1), v6(2))] {
        let mut d = Desyncer::new(config(vec![profile(split_at(&[1, -2]))]), NoLists);
        let now = Instant::now();
        let mut c = Client::new(src, dst);
        handshake(&mut d, &c, now);
        let hello = client_hello(SNI, 1800);
        let first = d.on_packet(1, c.data(&hello[..1200]), now);
        assert!(
            first.verdicts.is_empty() && first.inject.is_empty(),
            "first segment held"
        );
        let second = d.on_packet(2, c.data(&hello[1200..]), now);
        assert_eq!(
            second.verdicts,
            vec![(1, Verdict::Drop), (2, Verdict::Drop)]
        );
        let n = hello.len();
        let want = vec![
            hello[..1].to_vec(),
            hello[1..1200].to_vec(),
            hello[1200..n - 2].to_vec(),
            hello[n - 2..].to_vec(),
        ];
        assert_eq!(payloads(&second), want, "{src}");
    }
}

#[test]
fn http_request_over_two_segments_is_reassembled() {
    let mut d = Desyncer::new(config(vec![profile(split_at(&[2]))]), NoLists);
    let now = Instant::now();
    let mut c = Client::new(v4(1), v4(2));
    c.port = 80;
    handshake(&mut d, &c, now);
    let req = b"GET / HTTP/1.1\r\nHost: www.blocked.test\r\nAccept: */*\r\n\r\n";
    assert!(d.on_packet(1, c.data(&req[..20]), now).verdicts.is_empty());
    let a = d.on_packet(2, c.data(&req[20..]), now);
    assert_eq!(a.verdicts, vec![(1, Verdict::Drop), (2, Verdict::Drop)]);
    assert_eq!(payloads(&a).concat(), req.to_vec());
}

#[test]
fn stale_hold_passes_untouched_after_the_timeout() {
    let mut d = Desyncer::new(config(vec![profile(split_at(&[1]))]), NoLists);
    let now = Instant::now();
    let mut c = Client::new(v4(1), v4(2));
    handshake(&mut d, &c, now);
    let hello = client_hello(SNI, 1800);
    assert!(
        d.on_packet(1, c.data(&hello[..1000]), now)
            .verdicts
            .is_empty()
    );
    assert!(
        d.on_tick(now + HOLD_TIMEOUT / 2).verdicts.is_empty(),
        "still within the timeout"
    );
    let a = d.on_tick(now + HOLD_TIMEOUT + Duration::from_millis(1));
    assert_eq!(a.verdicts, vec![(1, Verdict::Accept)]);
    assert!(a.inject.is_empty());
}

#[test]
fn retransmission_of_held_data_is_dropped_and_out_of_order_gives_up() {
    let mut d = Desyncer::new(config(vec![profile(split_at(&[1]))]), NoLists);
    let now = Instant::now();
    let mut c = Client::new(v4(1), v4(2));
    handshake(&mut d, &c, now);
    let hello = client_hello(SNI, 1800);
    let first = c.data(&hello[..1000]);
    assert!(d.on_packet(1, first.clone(), now).verdicts.is_empty());
    assert_eq!(
        d.on_packet(2, first, now).verdicts,
        vec![(2, Verdict::Drop)]
    );
    // A segment beyond the expected one: pass everything as it is.
    c.sent += 100;
    let a = d.on_packet(3, c.data(&hello[1100..]), now);
    assert_eq!(a.verdicts, vec![(1, Verdict::Accept), (3, Verdict::Accept)]);
    assert!(a.inject.is_empty());
}

#[test]
fn hostlist_decides_once_the_host_is_known() {
    let mut p = profile(split_at(&[1]));
    p.hosts = HostFilter {
        include_domains: vec!["blocked.test".into()],
        ..HostFilter::default()
    };
    let cfg = config(vec![p]);
    for (sni, desynced) in [(SNI, true), ("www.allowed.test", false)] {
        let mut d = Desyncer::new(cfg.clone(), DomainLists(cfg.clone()));
        let now = Instant::now();
        let mut c = Client::new(v4(1), v4(2));
        handshake(&mut d, &c, now);
        let a = d.on_packet(1, c.data(&client_hello(sni, 517)), now);
        let want = if desynced {
            Verdict::Drop
        } else {
            Verdict::Accept
        };
        assert_eq!(a.verdicts, vec![(1, want)], "{sni}");
        assert_eq!(a.inject.len(), if desynced { 2 } else { 0 }, "{sni}");
    }
}

#[test]
fn flows_no_profile_takes_pass_untouched() {
    let mut d = Desyncer::new(config(vec![profile(split_at(&[1]))]), NoLists);
    let now = Instant::now();
    let mut c = Client::new(v4(1), v4(2));
    c.port = 8443;
    handshake(&mut d, &c, now);
    let a = d.on_packet(1, c.data(&client_hello(SNI, 517)), now);
    assert_eq!(a.verdicts, vec![(1, Verdict::Accept)]);
    // A multi-segment request no profile wants is not held either.
    let b = d.on_packet(2, c.data(&client_hello(SNI, 1800)[..1000]), now);
    assert_eq!(b.verdicts, vec![(2, Verdict::Accept)]);
}

/// Whether a request sent as the flow's `nth` data packet (after SYN and
/// ACK, and `nth - 1` earlier requests) is desynced under `desync`.
fn desynced_requests(desync: Desync, with_syn: bool, requests: usize) -> Vec<bool> {
    let mut d = Desyncer::new(config(vec![profile(desync)]), NoLists);
    let now = Instant::now();
    let mut c = Client::new(v4(1), v4(2));
    c.port = 80;
    if with_syn {
        handshake(&mut d, &c, now);
    }
    let req = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
    (0..requests)
        .map(|i| {
            let a = d.on_packet(i as u32, c.data(req), now);
            !a.inject.is_empty()
        })
        .collect()
}

#[test]
fn cutoff_and_start_count_like_nfqws() {
    let limited = |cutoff, start| Desync {
        cutoff,
        start,
        ..split_at(&[1])
    };
    let req_len = 32u32; // b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
    let cases = [
        (
            "no limits",
            limited(None, None),
            true,
            vec![true, true, true],
        ),
        // Requests are packets 3, 4, 5 (after SYN and ACK).
        (
            "cutoff n4",
            limited(Some(Limit::Packets(4)), None),
            true,
            vec![true, false, false],
        ),
        (
            "cutoff n3",
            limited(Some(Limit::Packets(3)), None),
            true,
            vec![false, false, false],
        ),
        (
            "cutoff d2",
            limited(Some(Limit::DataPackets(2)), None),
            true,
            vec![true, false, false],
        ),
        (
            "start d2",
            limited(None, Some(Limit::DataPackets(2))),
            true,
            vec![false, true, true],
        ),
        (
            "start n4 cutoff n5",
            limited(Some(Limit::Packets(5)), Some(Limit::Packets(4))),
            true,
            vec![false, true, false],
        ),
        // Relative seq of request k is 1 + k * len.
        (
            "cutoff s",
            limited(Some(Limit::Seq(req_len + 1)), None),
            true,
            vec![true, false, false],
        ),
        (
            "cutoff s without SYN",
            limited(Some(Limit::Seq(100_000)), None),
            false,
            vec![false, false, false],
        ),
        (
            "no SYN, no limit",
            limited(None, None),
            false,
            vec![true, true, true],
        ),
    ];
    for (name, desync, with_syn, want) in cases {
        assert_eq!(desynced_requests(desync, with_syn, 3), want, "{name}");
    }
}

#[test]
fn unknown_payloads_need_any_protocol() {
    for (any, want) in [(false, 0), (true, 2)] {
        let mut desync = split_at(&[3]);
        desync.any_protocol = any;
        let mut d = Desyncer::new(config(vec![profile(desync)]), NoLists);
        let now = Instant::now();
        let mut c = Client::new(v4(1), v4(2));
        handshake(&mut d, &c, now);
        let a = d.on_packet(1, c.data(b"SSH-2.0-OpenSSH_9.6\r\n"), now);
        assert_eq!(a.inject.len(), want, "any_protocol={any}");
    }
}

#[test]
fn full_table_passes_new_flows_and_expiry_frees_it() {
    let mut d = Desyncer::with_capacity(config(vec![profile(split_at(&[1]))]), NoLists, 1);
    let now = Instant::now();
    let c1 = Client::new(v4(1), v4(2));
    handshake(&mut d, &c1, now);
    let mut c2 = Client::new(v4(3), v4(2));
    handshake(&mut d, &c2, now);
    let a = d.on_packet(1, c2.data(&client_hello(SNI, 517)), now);
    assert_eq!(
        a.verdicts,
        vec![(1, Verdict::Accept)],
        "untracked flow passes"
    );
    assert_eq!(d.flow_count(), 1);
    // Established flows live 300 s.
    d.on_tick(now + Duration::from_secs(299));
    assert_eq!(d.flow_count(), 1);
    d.on_tick(now + Duration::from_secs(301));
    assert_eq!(d.flow_count(), 0);
}

#[test]
fn syn_only_flows_expire_after_a_minute() {
    let mut d: Desyncer<u32, _> = Desyncer::new(config(vec![profile(split_at(&[1]))]), NoLists);
    let now = Instant::now();
    let c = Client::new(v4(1), v4(2));
    d.on_packet(1, c.syn(), now);
    d.on_tick(now + Duration::from_secs(59));
    assert_eq!(d.flow_count(), 1);
    d.on_tick(now + Duration::from_secs(61));
    assert_eq!(d.flow_count(), 0);
}

#[test]
fn holds_are_capped_and_the_cap_frees_up_when_holds_end() {
    use crate::engine::flow::MAX_HOLDING_FLOWS;
    let mut d = Desyncer::new(config(vec![profile(split_at(&[1]))]), NoLists);
    let now = Instant::now();
    let part = client_hello(SNI, 1800)[..1000].to_vec();
    let start_hold = |d: &mut Desyncer<u32, NoLists>, i: u32, now| {
        let src = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
        let mut c = Client::new(src, v4(2));
        d.on_packet(i, c.data(&part), now).verdicts
    };
    for i in 0..MAX_HOLDING_FLOWS as u32 {
        assert!(start_hold(&mut d, i, now).is_empty(), "flow {i} holds");
    }
    let over = MAX_HOLDING_FLOWS as u32;
    assert_eq!(start_hold(&mut d, over, now), vec![(over, Verdict::Accept)]);
    let later = now + HOLD_TIMEOUT + Duration::from_millis(1);
    assert_eq!(d.on_tick(later).verdicts.len(), MAX_HOLDING_FLOWS);
    assert!(
        start_hold(&mut d, over + 1, later).is_empty(),
        "room again after the holds ended"
    );
}

#[test]
fn retransmitted_first_segment_after_the_request_went_out_is_not_held() {
    let mut d = Desyncer::new(config(vec![profile(split_at(&[1]))]), NoLists);
    let now = Instant::now();
    let mut c = Client::new(v4(1), v4(2));
    handshake(&mut d, &c, now);
    let hello = client_hello(SNI, 1800);
    let first = c.data(&hello[..1200]);
    assert!(d.on_packet(1, first.clone(), now).verdicts.is_empty());
    let done = d.on_packet(2, c.data(&hello[1200..]), now);
    assert_eq!(done.verdicts.len(), 2);
    // The kernel retransmits the first segment: it passes at once.
    let again = d.on_packet(3, first, now);
    assert_eq!(again.verdicts, vec![(3, Verdict::Accept)]);
    assert!(again.inject.is_empty());
}
