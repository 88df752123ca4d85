//! Golden command lines, written from zapret's documented syntax
//! (`docs/readme.en.md`, `config.default`'s NFQWS_OPT), and the errors
//! malformed ones must give.

use std::path::{Path, PathBuf};

use super::*;
use crate::spec::{
    Cidr, Desync, Fooling, Globals, HostFilter, IpFamily, IpFilter, L7, Limit, Marker, PortFilter,
    SplitPos,
};

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Splits a space-separated command line (no quoting needed in these tests).
fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

/// (value, negated, ranges)
type PortCase = (&'static str, bool, &'static [(u16, u16)]);

/// (args, reason, index, option)
type Refused = (
    &'static [&'static str],
    &'static str,
    Option<usize>,
    Option<&'static str>,
);

fn pos(marker: Marker, offset: i32) -> SplitPos {
    SplitPos { marker, offset }
}

fn abs(offset: i32) -> SplitPos {
    pos(Marker::Absolute, offset)
}

fn ports(ranges: &[(u16, u16)]) -> Option<PortFilter> {
    Some(PortFilter {
        negate: false,
        ranges: ranges.to_vec(),
    })
}

fn file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// `config.default`'s NFQWS_OPT with `<HOSTLIST>` = one hostlist file.
#[test]
fn config_default_three_profiles_parse_for_external_nfqws() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = file(dir.path(), "zapret-hosts-user.txt", b"blocked.test\n");
    let h = format!("--hostlist={}", hosts.display());
    let line = format!(
        "--filter-tcp=80 --dpi-desync=fake,multisplit --dpi-desync-split-pos=method+2 --dpi-desync-fooling=md5sig {h} --new \
         --filter-tcp=443 --dpi-desync=fake,multidisorder --dpi-desync-split-pos=1,midsld --dpi-desync-fooling=badseq,md5sig {h} --new \
         --filter-udp=443 --dpi-desync=fake --dpi-desync-repeats=6 {h}"
    );
    let config = parse(&words(&line), ParseMode::External).unwrap();
    let host_filter = HostFilter {
        include_files: vec![hosts.clone()],
        ..HostFilter::default()
    };
    let expected = Config {
        globals: Globals::default(),
        profiles: vec![
            Profile {
                number: 1,
                tcp: ports(&[(80, 80)]),
                hosts: host_filter.clone(),
                desync: Desync {
                    fake: true,
                    split: Some(SplitMode::Multisplit),
                    split_pos: vec![pos(Marker::Method, 2)],
                    ..Desync::default()
                },
                external: vec!["--dpi-desync-fooling=md5sig".into()],
                ..Profile::default()
            },
            Profile {
                number: 2,
                tcp: ports(&[(443, 443)]),
                hosts: host_filter.clone(),
                desync: Desync {
                    fake: true,
                    split: Some(SplitMode::Multidisorder),
                    split_pos: vec![abs(1), pos(Marker::MidSld, 0)],
                    fooling: Fooling {
                        badsum: false,
                        badseq: true,
                    },
                    ..Desync::default()
                },
                external: vec!["--dpi-desync-fooling=badseq,md5sig".into()],
                ..Profile::default()
            },
            Profile {
                number: 3,
                udp: ports(&[(443, 443)]),
                hosts: host_filter,
                desync: Desync {
                    fake: true,
                    repeats: 6,
                    ..Desync::default()
                },
                ..Profile::default()
            },
        ],
    };
    assert_eq!(config, expected);
    assert!(!builtin_compatible(&config.profiles[0]));
    assert!(builtin_compatible(&config.profiles[2]));

    // The built-in engine refuses md5sig by name, in profile 1.
    let err = parse(&words(&line), ParseMode::Builtin).unwrap_err();
    assert_eq!(err.reason(), "UnsupportedOption");
    assert_eq!(
        (err.index(), err.option(), err.profile()),
        (Some(3), Some("--dpi-desync-fooling"), Some(1))
    );
    let msg = err.to_string();
    assert!(
        msg.contains("--dpi-desync-fooling=md5sig") && msg.contains("install nfqws"),
        "{msg}"
    );
}

/// The same shape with built-in fooling runs on the built-in engine, with
/// the agent's globals and both value forms.
#[test]
fn builtin_three_profiles_with_agent_globals() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = file(dir.path(), "hosts.txt", b"blocked.test\n");
    let tls = file(dir.path(), "tls.bin", &[0x16, 0x03, 0x01, 0x00, 0x05]);
    let hosts_s = hosts.to_str().unwrap();
    let tls_at = format!("@{}", tls.display());
    let config = parse(
        &argv(&[
            "--qnum=200",
            "--dpi-desync-fwmark",
            "0x10000000",
            "--filter-tcp",
            "80",
            "--dpi-desync",
            "multisplit",
            "--dpi-desync-split-pos=method+2",
            "--hostlist",
            hosts_s,
            "--hostlist-domains=guard.veil.invalid",
            "--new",
            "--filter-tcp=443",
            "--filter-l7=tls",
            "--dpi-desync=fake,multidisorder",
            "--dpi-desync-split-pos=1,midsld",
            "--dpi-desync-fooling=badsum,badseq",
            "--dpi-desync-badseq-increment=-0x100",
            "--dpi-desync-ttl=4",
            "--dpi-desync-ttl6=5",
            "--dpi-desync-fake-tls",
            &tls_at,
            "--dpi-desync-fake-http=0x474554",
            "--dpi-desync-cutoff=n3",
            "--dpi-desync-start=d1",
            "--new",
            "--filter-udp=443",
            "--filter-l3=ipv6",
            "--ipset-ip=192.0.2.0/24,2001:db8::1",
            "--ipset-exclude-ip=192.0.2.7",
            "--dpi-desync=fake",
            "--dpi-desync-any-protocol",
            "--dpi-desync-repeats=6",
            "--comment=quic",
            "--dry-run",
        ]),
        ParseMode::Builtin,
    )
    .unwrap();
    assert_eq!(
        config.globals,
        Globals {
            qnum: 200,
            fwmark: 0x1000_0000,
            dry_run: true,
            ..Globals::default()
        }
    );
    let [p1, p2, p3] = config.profiles.as_slice() else {
        panic!("three profiles: {config:?}");
    };
    assert_eq!(p1.tcp, ports(&[(80, 80)]));
    assert_eq!(p1.hosts.include_files, vec![hosts.clone()]);
    assert_eq!(
        p1.hosts.include_domains,
        vec!["guard.veil.invalid".to_string()]
    );
    assert_eq!(p1.desync.split, Some(SplitMode::Multisplit));
    assert!(!p1.desync.fake);

    assert_eq!(p2.l7, vec![L7::Tls]);
    assert_eq!(
        p2.desync,
        Desync {
            fake: true,
            split: Some(SplitMode::Multidisorder),
            split_pos: vec![abs(1), pos(Marker::MidSld, 0)],
            ttl: Some(4),
            ttl6: Some(5),
            fooling: Fooling {
                badsum: true,
                badseq: true
            },
            badseq_increment: -0x100,
            repeats: 1,
            fake_tls: Some(vec![0x16, 0x03, 0x01, 0x00, 0x05]),
            fake_http: Some(b"GET".to_vec()),
            cutoff: Some(Limit::Packets(3)),
            start: Some(Limit::DataPackets(1)),
            any_protocol: false,
        }
    );

    assert_eq!(
        (p3.tcp.clone(), p3.udp.clone()),
        (None, ports(&[(443, 443)]))
    );
    assert_eq!(p3.l3, Some(IpFamily::V6));
    assert_eq!(
        p3.ips,
        IpFilter {
            include: vec![
                Cidr {
                    addr: "192.0.2.0".parse().unwrap(),
                    prefix: 24
                },
                Cidr {
                    addr: "2001:db8::1".parse().unwrap(),
                    prefix: 128
                },
            ],
            exclude: vec![Cidr {
                addr: "192.0.2.7".parse().unwrap(),
                prefix: 32
            }],
            ..IpFilter::default()
        }
    );
    assert!(p3.desync.any_protocol);
    assert_eq!(p3.desync.repeats, 6);
    assert!(config.profiles.iter().all(|p| p.external.is_empty()));
}

#[test]
fn desync_modes_aliases_and_combinations() {
    use SplitMode::*;
    let ok: &[(&str, bool, Option<SplitMode>)] = &[
        ("fake", true, None),
        ("multisplit", false, Some(Multisplit)),
        ("split2", false, Some(Multisplit)),
        ("disorder2", false, Some(Multidisorder)),
        ("split", false, Some(Fakedsplit)),
        ("disorder", false, Some(Fakeddisorder)),
        ("fakedsplit", false, Some(Fakedsplit)),
        ("fake,multisplit", true, Some(Multisplit)),
        ("fake,split2", true, Some(Multisplit)),
        ("fake,fakeddisorder", true, Some(Fakeddisorder)),
    ];
    for &(mode, fake, split) in ok {
        let config = parse(
            &argv(&["--filter-tcp=443", &format!("--dpi-desync={mode}")]),
            ParseMode::Builtin,
        )
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let d = &config.profiles[0].desync;
        assert_eq!((d.fake, d.split), (fake, split), "{mode}");
    }

    // Real nfqws modes outside the subset: refused by name in Builtin,
    // kept verbatim for nfqws otherwise.
    for mode in [
        "ipfrag2",
        "fake,ipfrag2",
        "syndata,multisplit",
        "fakeknown",
        "rst,multidisorder",
        "hostfakesplit",
        "synack",
    ] {
        let arg = format!("--dpi-desync={mode}");
        let args = argv(&["--filter-tcp=443", &arg]);
        let err = parse(&args, ParseMode::Builtin).unwrap_err();
        assert_eq!(err.reason(), "UnsupportedOption", "{mode}");
        let msg = err.to_string();
        assert!(
            msg.contains(&arg) && msg.contains("install nfqws") && msg.contains("use fake"),
            "{msg}"
        );
        let config = parse(&args, ParseMode::External).unwrap();
        assert_eq!(config.profiles[0].external, vec![arg.clone()], "{mode}");
    }

    // Not nfqws at all.
    for mode in [
        "",
        "fake,fake",
        "multisplit,fake",
        "multisplit,multidisorder",
        "fake,multisplit,multisplit",
        "synack,synack",
        "bogus",
    ] {
        let args = argv(&["--filter-tcp=443", &format!("--dpi-desync={mode}")]);
        let err = parse(&args, ParseMode::External).unwrap_err();
        assert_eq!(
            (err.reason(), err.option()),
            ("InvalidValue", Some("--dpi-desync")),
            "{mode}: {err}"
        );
    }
}

#[test]
fn split_positions() {
    let cases: &[(&str, &[SplitPos])] = &[
        (
            "1",
            &[SplitPos {
                marker: Marker::Absolute,
                offset: 1,
            }],
        ),
        (
            "-10",
            &[SplitPos {
                marker: Marker::Absolute,
                offset: -10,
            }],
        ),
        (
            "host+1",
            &[SplitPos {
                marker: Marker::Host,
                offset: 1,
            }],
        ),
        (
            "endhost-2",
            &[SplitPos {
                marker: Marker::EndHost,
                offset: -2,
            }],
        ),
        (
            "sniext+1",
            &[SplitPos {
                marker: Marker::SniExt,
                offset: 1,
            }],
        ),
        (
            "1,midsld,-10,host+1,sniext+1,method,sld,endsld",
            &[
                SplitPos {
                    marker: Marker::Absolute,
                    offset: 1,
                },
                SplitPos {
                    marker: Marker::MidSld,
                    offset: 0,
                },
                SplitPos {
                    marker: Marker::Absolute,
                    offset: -10,
                },
                SplitPos {
                    marker: Marker::Host,
                    offset: 1,
                },
                SplitPos {
                    marker: Marker::SniExt,
                    offset: 1,
                },
                SplitPos {
                    marker: Marker::Method,
                    offset: 0,
                },
                SplitPos {
                    marker: Marker::Sld,
                    offset: 0,
                },
                SplitPos {
                    marker: Marker::EndSld,
                    offset: 0,
                },
            ],
        ),
    ];
    for &(value, expected) in cases {
        let config = parse(
            &argv(&[
                "--filter-tcp=443",
                "--dpi-desync=multisplit",
                &format!("--dpi-desync-split-pos={value}"),
            ]),
            ParseMode::Validate,
        )
        .unwrap();
        assert_eq!(config.profiles[0].desync.split_pos, expected, "{value}");
    }
    // Repeated options append after replacing the default.
    let config = parse(
        &argv(&[
            "--filter-tcp=443",
            "--dpi-desync-split-pos=1",
            "--dpi-desync-split-pos=host",
        ]),
        ParseMode::Validate,
    )
    .unwrap();
    assert_eq!(
        config.profiles[0].desync.split_pos,
        vec![abs(1), pos(Marker::Host, 0)]
    );

    for bad in ["0", "", "midsld+", "tld", "host+x", "40000", "1,,2"] {
        let err = parse(
            &argv(&["--filter-tcp=443", &format!("--dpi-desync-split-pos={bad}")]),
            ParseMode::Validate,
        )
        .unwrap_err();
        assert_eq!(err.option(), Some("--dpi-desync-split-pos"), "{bad}: {err}");
    }
}

#[test]
fn port_filters() {
    let cases: &[PortCase] = &[
        (
            "80,443,1000-2000",
            false,
            &[(80, 80), (443, 443), (1000, 2000)],
        ),
        ("*", false, &[(0, 65535)]),
        ("~80", true, &[(80, 80)]),
        ("~1000-2000", true, &[(1000, 2000)]),
    ];
    for &(value, negate, ranges) in cases {
        let config = parse(
            &argv(&[&format!("--filter-tcp={value}")]),
            ParseMode::Validate,
        )
        .unwrap();
        let expected = PortFilter {
            negate,
            ranges: ranges.to_vec(),
        };
        assert_eq!(config.profiles[0].tcp, Some(expected), "{value}");
    }
    let filter = parse(&argv(&["--filter-udp=~443"]), ParseMode::Validate)
        .unwrap()
        .profiles[0]
        .udp
        .clone()
        .unwrap();
    assert!(filter.matches(53) && !filter.matches(443));

    for bad in [
        "",
        "70000",
        "2000-1000",
        "80,~443",
        "~80,~443",
        "http",
        "80-",
        "~*",
    ] {
        let err = parse(
            &argv(&[&format!("--filter-tcp={bad}")]),
            ParseMode::Validate,
        )
        .unwrap_err();
        assert_eq!(
            (err.reason(), err.option()),
            ("InvalidValue", Some("--filter-tcp")),
            "{bad}: {err}"
        );
    }
}

#[test]
fn values_are_checked() {
    let good: &[&str] = &[
        "--dpi-desync-ttl=1",
        "--dpi-desync-ttl=255",
        "--dpi-desync-repeats=1024",
        "--dpi-desync-cutoff=s4000",
        "--dpi-desync-cutoff=5",
        "--dpi-desync-badseq-increment=-10000",
        "--dpi-desync-badseq-increment=0x7fffffff",
        "--dpi-desync-any-protocol=0",
        "--filter-l7=http,tls,quic",
        "--filter-l3=ipv4,ipv6",
        "--hostlist-exclude-domains=^Example.COM,b.test",
        "--dpi-desync-fake-tls=!",
    ];
    for arg in good {
        parse(&argv(&["--filter-tcp=443", arg]), ParseMode::Builtin)
            .unwrap_or_else(|e| panic!("{arg}: {e}"));
    }
    let bad: &[&str] = &[
        "--dpi-desync-ttl=0",
        "--dpi-desync-ttl=256",
        "--dpi-desync-ttl6=-1",
        "--dpi-desync-repeats=0",
        "--dpi-desync-repeats=1025",
        "--dpi-desync-cutoff=x5",
        "--dpi-desync-cutoff=n",
        "--dpi-desync-start=d-1",
        "--dpi-desync-badseq-increment=ten",
        "--dpi-desync-any-protocol=yes",
        "--filter-l7=https",
        "--filter-l3=ipv5",
        "--ipset-ip=192.0.2.0/33",
        "--ipset-exclude-ip=example.com",
        "--dpi-desync-fake-http=0x123",
        "--dpi-desync-fake-http=0xzz",
        "--dpi-desync-fake-tls=!x",
        "--hostlist-domains=^",
    ];
    for arg in bad {
        let err = parse(&argv(&["--filter-tcp=443", arg]), ParseMode::Builtin).unwrap_err();
        let option = arg.split_once('=').unwrap().0;
        assert_eq!(
            (err.reason(), err.option(), err.index()),
            ("InvalidValue", Some(option), Some(1)),
            "{arg}: {err}"
        );
    }
    let config = parse(
        &argv(&[
            "--filter-tcp=443",
            "--hostlist-exclude-domains=^Example.COM,b.test",
        ]),
        ParseMode::Builtin,
    )
    .unwrap();
    assert_eq!(
        config.profiles[0].hosts.exclude_domains,
        vec!["^example.com".to_string(), "b.test".into()]
    );
}

/// What `veil-crds` runs on a Strategy's own args.
#[test]
fn validate_mode_accepts_placeholders_and_refuses_what_the_agent_owns() {
    let config = parse(
        &argv(&[
            "--filter-tcp=443",
            "--hostlist={hostlist:blocked}",
            "--hostlist-exclude={hostlist:skip}",
            "--ipset={file:nets}",
            "--dpi-desync=fake,multisplit",
            "--dpi-desync-fake-tls=@{file:tls}",
            "--dpi-desync-fake-http={file:http}",
            "--dpi-desync-autottl=2",
            "--new",
            "--filter-udp=443",
            "--dpi-desync=fake",
            "--dpi-desync-fake-quic={file:quic}",
        ]),
        ParseMode::Validate,
    )
    .unwrap();
    let p1 = &config.profiles[0];
    // L7 protocols only nfqws recognises are fine for a Strategy (kept for nfqws).
    let l7 = parse(
        &argv(&["--filter-udp=50000-50100", "--filter-l7=discord,stun"]),
        ParseMode::Validate,
    )
    .unwrap();
    assert_eq!(l7.profiles[0].l7, vec![L7::Discord, L7::Stun]);
    assert_eq!(
        l7.profiles[0].external,
        vec!["--filter-l7=discord,stun".to_string()]
    );
    assert_eq!(
        p1.hosts.include_files,
        vec![PathBuf::from("{hostlist:blocked}")]
    );
    assert_eq!(p1.ips.include_files, vec![PathBuf::from("{file:nets}")]);
    assert_eq!(
        (p1.desync.fake_tls.clone(), p1.desync.fake_http.clone()),
        (None, None)
    );
    assert_eq!(p1.external, vec!["--dpi-desync-autottl=2".to_string()]);
    assert_eq!(
        config.profiles[1].external,
        vec!["--dpi-desync-fake-quic={file:quic}".to_string()]
    );

    let refused: &[Refused] = &[
        (
            &["--filter-tcp=443", "--qnum=200"],
            "ForbiddenOption",
            Some(1),
            Some("--qnum"),
        ),
        (
            &["--filter-tcp=443", "--dpi-desync-fwmark=0x40000000"],
            "ForbiddenOption",
            Some(1),
            Some("--dpi-desync-fwmark"),
        ),
        (
            &["--filter-tcp=443", "--daemon"],
            "ForbiddenOption",
            Some(1),
            Some("--daemon"),
        ),
        (
            &["--filter-tcp=443", "--pidfile", "/run/x.pid"],
            "ForbiddenOption",
            Some(1),
            Some("--pidfile"),
        ),
        (
            &["--filter-tcp=443", "--uid=1:1"],
            "ForbiddenOption",
            Some(1),
            Some("--uid"),
        ),
        (
            &["--filter-tcp=443", "--user=nobody"],
            "ForbiddenOption",
            Some(1),
            Some("--user"),
        ),
        (
            &["--filter-tcp=443", "--debug"],
            "ForbiddenOption",
            Some(1),
            Some("--debug"),
        ),
        (
            &["--filter-tcp=443", "--dry-run"],
            "ForbiddenOption",
            Some(1),
            Some("--dry-run"),
        ),
        (
            &["--filter-tcp=443", "--version"],
            "ForbiddenOption",
            Some(1),
            Some("--version"),
        ),
        (
            &["--filter-tcp=443", "--ctrack-timeouts=60:300:60"],
            "ForbiddenOption",
            Some(1),
            Some("--ctrack-timeouts"),
        ),
        (
            &["--filter-tcp=443", "--ipcache-hostname"],
            "ForbiddenOption",
            Some(1),
            Some("--ipcache-hostname"),
        ),
        (
            &["--filter-tcp=443", "--bind-fix4"],
            "ForbiddenOption",
            Some(1),
            Some("--bind-fix4"),
        ),
        (
            &["--filter-tcp=443", "--wf-tcp=443"],
            "ForbiddenOption",
            Some(1),
            Some("--wf-tcp"),
        ),
        (
            &["--filter-tcp=443", "--ssid-filter=home"],
            "ForbiddenOption",
            Some(1),
            Some("--ssid-filter"),
        ),
        (
            &["--filter-tcp=443", "--nlm-list"],
            "ForbiddenOption",
            Some(1),
            Some("--nlm-list"),
        ),
        (&["@/etc/zapret.conf"], "ForbiddenOption", Some(0), None),
        (
            &["--filter-tcp=443", "$zapret.conf"],
            "ForbiddenOption",
            Some(1),
            None,
        ),
        (
            &["--filter-tcp=443", "--dpi-desync-tll=3"],
            "UnknownOption",
            Some(1),
            Some("--dpi-desync-tll"),
        ),
        (
            &["--filter-tcp=443", "-dpi-desync=fake"],
            "UnexpectedArgument",
            Some(1),
            None,
        ),
        (
            &["--filter-tcp=443", "fake"],
            "UnexpectedArgument",
            Some(1),
            None,
        ),
        (&["--dpi-desync=fake"], "InvalidProfile", None, None),
        (
            &["--filter-tcp=443", "--new", "--filter-l7=tls"],
            "InvalidProfile",
            None,
            None,
        ),
    ];
    for &(args, reason, index, option) in refused {
        let err = parse(&argv(args), ParseMode::Validate).unwrap_err();
        assert_eq!(
            (err.reason(), err.index(), err.option()),
            (reason, index, option),
            "{args:?}: {err}"
        );
    }
    let err = parse(
        &argv(&["--filter-tcp=443", "--new", "--filter-l7=tls"]),
        ParseMode::Validate,
    )
    .unwrap_err();
    assert_eq!(err.profile(), Some(2));
    assert!(
        err.to_string().contains("--filter-tcp or --filter-udp"),
        "{err}"
    );
}

#[test]
fn new_must_separate_non_empty_profiles() {
    let cases: &[(&[&str], usize, usize)] = &[
        (&["--new", "--filter-tcp=80"], 0, 1),
        (&["--filter-tcp=80", "--new"], 1, 2),
        (
            &["--filter-tcp=80", "--new", "--new", "--filter-tcp=443"],
            2,
            2,
        ),
        (
            &[
                "--filter-tcp=80",
                "--new",
                "--comment=x",
                "--new",
                "--filter-tcp=443",
            ],
            3,
            2,
        ),
    ];
    for &(args, index, profile) in cases {
        for mode in [ParseMode::Builtin, ParseMode::External, ParseMode::Validate] {
            let err = parse(&argv(args), mode).unwrap_err();
            assert!(
                matches!(err, ArgsError::EmptyProfile { .. }),
                "{args:?} {mode:?}: {err}"
            );
            assert_eq!(
                (err.index(), err.profile(), err.option()),
                (Some(index), Some(profile), Some("--new")),
                "{args:?}"
            );
        }
    }
    // Globals may sit anywhere; they do not make a profile.
    let config = parse(
        &argv(&["--filter-tcp=80", "--new", "--qnum=1", "--filter-tcp=443"]),
        ParseMode::Builtin,
    )
    .unwrap();
    assert_eq!(config.profiles.len(), 2);
    assert_eq!(config.globals.qnum, 1);
}

#[test]
fn value_forms_and_arity() {
    let cases: &[(&[&str], Option<&str>)] = &[
        (&["--filter-tcp", "443"], None),
        (&["--filter-tcp=443"], None),
        (&["--filter-tcp"], Some("MissingValue")),
        (&["--filter-tcp", "--new"], Some("MissingValue")),
        (
            &["--filter-tcp=443", "--new=1", "--filter-tcp=80"],
            Some("UnexpectedValue"),
        ),
        // Optional values only after `=`: `1` is then a stray argument.
        (
            &["--filter-tcp=443", "--dpi-desync-any-protocol", "1"],
            Some("UnexpectedArgument"),
        ),
    ];
    for &(args, expected) in cases {
        let result = parse(&argv(args), ParseMode::Builtin);
        let got = result.as_ref().err().map(|e| match e {
            ArgsError::MissingValue { .. } => "MissingValue",
            ArgsError::UnexpectedValue { .. } => "UnexpectedValue",
            ArgsError::UnexpectedArgument { .. } => "UnexpectedArgument",
            _ => "other",
        });
        assert_eq!(got, expected, "{args:?}: {result:?}");
    }
}

#[test]
fn builtin_refuses_external_options_by_name() {
    for (arg, option) in [
        ("--dpi-desync-autottl=2", "--dpi-desync-autottl"),
        ("--hostlist-auto=/tmp/auto.txt", "--hostlist-auto"),
        ("--dpi-desync-split-seqovl=1", "--dpi-desync-split-seqovl"),
        (
            "--dpi-desync-fake-tls-mod=rnd,dupsid",
            "--dpi-desync-fake-tls-mod",
        ),
        ("--dpi-desync-fooling=ts", "--dpi-desync-fooling"),
        ("--dpi-desync-fooling=none", "--dpi-desync-fooling"),
        ("--filter-l7=tls,stun", "--filter-l7"),
        ("--filter-l7=unknown", "--filter-l7"),
        ("--daemon", "--daemon"),
        ("--wf-tcp=443", "--wf-tcp"),
    ] {
        let err = parse(&argv(&["--filter-tcp=443", arg]), ParseMode::Builtin).unwrap_err();
        assert_eq!(
            (err.reason(), err.option()),
            ("UnsupportedOption", Some(option)),
            "{arg}: {err}"
        );
        assert!(err.to_string().contains("install nfqws"), "{err}");
    }
}

#[test]
fn files_are_read_outside_validate_mode() {
    let dir = tempfile::tempdir().unwrap();
    let empty = file(dir.path(), "empty.bin", b"");
    let list = file(dir.path(), "empty-list.txt", b"");
    let fake = file(dir.path(), "fake.bin", b"fake!");
    let big = file(dir.path(), "big.bin", &[7u8; 2000]);
    let missing = dir.path().join("missing.txt");
    let d = |p: &Path| p.display().to_string();

    // An empty hostlist parses (the agent guards that case); an empty fake does not.
    let ok = parse(
        &argv(&["--filter-tcp=443", &format!("--hostlist={}", d(&list))]),
        ParseMode::External,
    );
    assert!(ok.is_ok(), "{ok:?}");
    let cases: &[(String, &str)] = &[
        (format!("--hostlist={}", d(&missing)), "--hostlist"),
        (
            format!("--ipset-exclude={}", d(&missing)),
            "--ipset-exclude",
        ),
        (format!("--hostlist={}", d(dir.path())), "--hostlist"),
        (
            format!("--dpi-desync-fake-tls={}", d(&empty)),
            "--dpi-desync-fake-tls",
        ),
        (
            format!("--dpi-desync-fake-http=@{}", d(&missing)),
            "--dpi-desync-fake-http",
        ),
    ];
    for (arg, option) in cases {
        for mode in [ParseMode::Builtin, ParseMode::External, ParseMode::Process] {
            let err = parse(&argv(&["--filter-tcp=443", arg]), mode).unwrap_err();
            assert_eq!(
                (err.reason(), err.option(), err.index()),
                ("FileError", Some(*option), Some(1)),
                "{arg}: {err}"
            );
        }
        // Validate never opens files.
        parse(&argv(&["--filter-tcp=443", arg]), ParseMode::Validate).unwrap();
    }

    let config = parse(
        &argv(&[
            "--filter-tcp=443",
            &format!("--dpi-desync-fake-tls={}", d(&fake)),
            &format!("--dpi-desync-fake-http={}", d(&big)),
        ]),
        ParseMode::Builtin,
    )
    .unwrap();
    let desync = &config.profiles[0].desync;
    assert_eq!(desync.fake_tls.as_deref(), Some(&b"fake!"[..]));
    // Like nfqws, a fake is at most one segment.
    assert_eq!(desync.fake_http.as_ref().map(Vec::len), Some(FAKE_MAX_TCP));

    // `+OFFSET@file` and a second fake are for nfqws only.
    let offset = format!("--dpi-desync-fake-tls=+2@{}", d(&fake));
    let err = parse(&argv(&["--filter-tcp=443", &offset]), ParseMode::Builtin).unwrap_err();
    assert_eq!(err.reason(), "UnsupportedOption");
    let config = parse(&argv(&["--filter-tcp=443", &offset]), ParseMode::External).unwrap();
    assert_eq!(config.profiles[0].external, vec![offset.clone()]);
    let twice = argv(&[
        "--filter-tcp=443",
        "--dpi-desync-fake-tls=0x01",
        "--dpi-desync-fake-tls=0x02",
    ]);
    assert_eq!(
        parse(&twice, ParseMode::Builtin).unwrap_err().index(),
        Some(2)
    );
    let config = parse(&twice, ParseMode::External).unwrap();
    assert_eq!(config.profiles[0].desync.fake_tls, Some(vec![1]));
    assert_eq!(
        config.profiles[0].external,
        vec!["--dpi-desync-fake-tls=0x02".to_string()]
    );
}

#[test]
fn process_mode_takes_every_agent_global() {
    let config = parse(
        &argv(&[
            "--qnum=201",
            "--dpi-desync-fwmark=1073741824",
            "--uid=1000:1000",
            "--user=nobody",
            "--ctrack-timeouts=60:300:60:60",
            "--debug=1",
            "--filter-tcp=443",
            "--dpi-desync=fake",
        ]),
        ParseMode::Process,
    )
    .unwrap();
    let g = &config.globals;
    assert_eq!((g.qnum, g.fwmark, g.debug), (201, 0x4000_0000, true));
    assert_eq!(
        g.agent_owned,
        vec![
            "--uid=1000:1000",
            "--user=nobody",
            "--ctrack-timeouts=60:300:60:60"
        ]
    );
    for bad in [
        "--qnum=65536",
        "--qnum=-1",
        "--dpi-desync-fwmark=0",
        "--dpi-desync-fwmark=0xg",
    ] {
        let err = parse(&argv(&[bad, "--filter-tcp=443"]), ParseMode::Process).unwrap_err();
        assert_eq!(err.reason(), "InvalidValue", "{bad}: {err}");
    }
}

#[test]
fn an_empty_command_line_is_one_empty_profile() {
    let config = parse(&[], ParseMode::Builtin).unwrap();
    assert_eq!(config.profiles.len(), 1);
    assert!(!config.profiles[0].desync.is_active());
    assert!(matches!(
        parse(&[], ParseMode::Validate),
        Err(ArgsError::MissingPortFilter { profile: 1 })
    ));
}
