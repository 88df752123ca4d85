use super::*;
use crate::engine::testutil::{DomainLists, v4, v6};
use crate::spec::{Cidr, Desync, HostFilter, IpFilter, PortFilter, SplitMode};

fn ports(list: &[(u16, u16)]) -> Option<PortFilter> {
    Some(PortFilter {
        negate: false,
        ranges: list.to_vec(),
    })
}

fn active() -> Desync {
    Desync {
        split: Some(SplitMode::Multisplit),
        ..Desync::default()
    }
}

fn key(transport: Transport, dst: IpAddr, dst_port: u16) -> FlowKey {
    FlowKey {
        transport,
        src: if dst.is_ipv6() { v6(1) } else { v4(1) },
        src_port: 40000,
        dst,
        dst_port,
    }
}

/// Profiles: 0 = tcp/443 tls with a hostlist; 1 = tcp/80,443 v6 only;
/// 2 = tcp/80 http excluding one host; 3 = udp/443; 4 = tcp/443 ipset.
fn config() -> Config {
    let profiles = vec![
        Profile {
            tcp: ports(&[(443, 443)]),
            l7: vec![L7::Tls],
            hosts: HostFilter {
                include_domains: vec!["blocked.test".into()],
                ..HostFilter::default()
            },
            desync: active(),
            ..Profile::default()
        },
        Profile {
            l3: Some(IpFamily::V6),
            tcp: ports(&[(80, 80), (443, 443)]),
            desync: active(),
            ..Profile::default()
        },
        Profile {
            tcp: ports(&[(80, 80)]),
            l7: vec![L7::Http],
            hosts: HostFilter {
                exclude_domains: vec!["allowed.test".into()],
                ..HostFilter::default()
            },
            desync: active(),
            ..Profile::default()
        },
        Profile {
            udp: ports(&[(443, 443)]),
            desync: active(),
            ..Profile::default()
        },
        Profile {
            tcp: ports(&[(443, 443)]),
            ips: IpFilter {
                include: vec![Cidr {
                    addr: v4(9),
                    prefix: 32,
                }],
                ..IpFilter::default()
            },
            desync: active(),
            ..Profile::default()
        },
    ];
    Config {
        profiles,
        ..Config::default()
    }
}

/// (name, flow, protocol, host, expected profile)
type Case<'a> = (
    &'a str,
    FlowKey,
    Option<Proto>,
    Option<&'a str>,
    Option<usize>,
);

#[test]
fn first_matching_profile_wins() {
    let config = config();
    let lists = DomainLists(config.clone());
    let tcp = Transport::Tcp;
    let tls = Some(Proto::Tls);
    let cases: Vec<Case> = vec![
        (
            "listed tls host",
            key(tcp, v4(2), 443),
            tls,
            Some("www.blocked.test"),
            Some(0),
        ),
        (
            "host unknown skips the hostlist profile",
            key(tcp, v4(9), 443),
            tls,
            None,
            Some(4),
        ),
        (
            "unlisted host, ipset address",
            key(tcp, v4(9), 443),
            tls,
            Some("other.test"),
            Some(4),
        ),
        (
            "unlisted host, other address",
            key(tcp, v4(2), 443),
            tls,
            Some("other.test"),
            None,
        ),
        (
            "v6 profile",
            key(tcp, v6(2), 443),
            tls,
            Some("other.test"),
            Some(1),
        ),
        (
            "v6 before the host is known",
            key(tcp, v6(2), 443),
            tls,
            None,
            Some(1),
        ),
        (
            "http on 80",
            key(tcp, v4(2), 80),
            Some(Proto::Http),
            Some("a.test"),
            Some(2),
        ),
        (
            "excluded http host",
            key(tcp, v4(2), 80),
            Some(Proto::Http),
            Some("www.allowed.test"),
            None,
        ),
        (
            "l7 mismatch on 80",
            key(tcp, v4(2), 80),
            tls,
            Some("a.test"),
            None,
        ),
        (
            "udp 443",
            key(Transport::Udp, v4(2), 443),
            None,
            None,
            Some(3),
        ),
        (
            "udp other port",
            key(Transport::Udp, v4(2), 53),
            None,
            None,
            None,
        ),
        (
            "tcp other port",
            key(tcp, v4(2), 22),
            Some(Proto::Unknown),
            None,
            None,
        ),
    ];
    for (name, key, proto, host, want) in cases {
        let facts = FlowFacts {
            key: &key,
            proto,
            host,
        };
        assert_eq!(select(&config, &lists, facts), want, "{name}");
    }
}

#[test]
fn profile_without_port_filters_takes_both_protocols() {
    let config = Config {
        profiles: vec![Profile {
            desync: active(),
            ..Profile::default()
        }],
        ..Config::default()
    };
    for t in [Transport::Tcp, Transport::Udp] {
        let k = key(t, v4(2), 1234);
        let facts = FlowFacts {
            key: &k,
            proto: None,
            host: None,
        };
        assert_eq!(select(&config, &NoLists, facts), Some(0), "{t:?}");
    }
}

#[test]
fn may_take_ignores_hosts_but_not_ports_l7_or_inactive_profiles() {
    let config = config();
    let facts = |k: &FlowKey, proto| {
        let config = &config;
        may_take(
            config,
            FlowFacts {
                key: k,
                proto,
                host: None,
            },
        )
    };
    assert!(facts(&key(Transport::Tcp, v4(2), 443), Some(Proto::Tls)));
    assert!(!facts(&key(Transport::Tcp, v4(2), 22), Some(Proto::Tls)));
    assert!(!facts(
        &key(Transport::Tcp, v4(2), 80),
        Some(Proto::Unknown)
    ));
    let mut idle = config.clone();
    for p in &mut idle.profiles {
        p.desync = Desync::default();
    }
    let k = key(Transport::Tcp, v4(2), 443);
    let facts = FlowFacts {
        key: &k,
        proto: Some(Proto::Tls),
        host: None,
    };
    assert!(!may_take(&idle, facts));
}
