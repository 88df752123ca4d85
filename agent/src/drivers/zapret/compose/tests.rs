#![allow(clippy::unwrap_used, reason = "tests")]

use super::*;

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|&a| a.to_owned()).collect()
}

fn id(ns: &str, name: &str) -> StrategyId {
    StrategyId {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn paths() -> BTreeMap<String, PathBuf> {
    BTreeMap::from([
        (
            "hostlist:blocked".to_owned(),
            PathBuf::from("/var/lib/veil/zapret/edge/youtube/blocked.txt"),
        ),
        (
            "file:tls".to_owned(),
            PathBuf::from("/var/lib/veil/zapret/edge/youtube/files/tls"),
        ),
        (
            "file:nets".to_owned(),
            PathBuf::from("/var/lib/veil/zapret/edge/youtube/files/nets"),
        ),
    ])
}

#[test]
fn placeholders_are_replaced_and_a_hostlist_profile_gets_the_guard() {
    let args = s(&[
        "--filter-tcp=443",
        "--hostlist={hostlist:blocked}",
        "--dpi-desync=fake,multisplit",
        "--dpi-desync-fake-tls={file:tls}",
    ]);
    assert_eq!(
        profile_args(&args, &paths()).unwrap(),
        s(&[
            "--filter-tcp=443",
            "--hostlist=/var/lib/veil/zapret/edge/youtube/blocked.txt",
            "--dpi-desync=fake,multisplit",
            "--dpi-desync-fake-tls=/var/lib/veil/zapret/edge/youtube/files/tls",
            "--hostlist-domains=guard.veil.invalid",
        ])
    );
}

#[test]
fn guards_go_to_each_profile_that_includes_a_list_in_either_form() {
    // `--hostlist FILE` (separate value) in the first profile, `--ipset=` in
    // the second, nothing in the third.
    let args = s(&[
        "--filter-tcp=80",
        "--hostlist",
        "{hostlist:blocked}",
        "--dpi-desync=multisplit",
        "--new",
        "--filter-tcp=443",
        "--ipset={file:nets}",
        "--dpi-desync=fake",
        "--new",
        "--filter-udp=443",
        "--dpi-desync=fake",
    ]);
    assert_eq!(
        profile_args(&args, &paths()).unwrap(),
        s(&[
            "--filter-tcp=80",
            "--hostlist",
            "/var/lib/veil/zapret/edge/youtube/blocked.txt",
            "--dpi-desync=multisplit",
            HOSTLIST_GUARD,
            "--new",
            "--filter-tcp=443",
            "--ipset=/var/lib/veil/zapret/edge/youtube/files/nets",
            "--dpi-desync=fake",
            IPSET_GUARD,
            "--new",
            "--filter-udp=443",
            "--dpi-desync=fake",
        ])
    );
}

#[test]
fn exclude_lists_and_inline_domains_get_no_guard() {
    let args = s(&[
        "--filter-tcp=443",
        "--hostlist-exclude={hostlist:blocked}",
        "--hostlist-domains=example.org",
        "--ipset-exclude={file:nets}",
        "--dpi-desync=fake",
    ]);
    let out = profile_args(&args, &paths()).unwrap();
    assert!(!out.contains(&HOSTLIST_GUARD.to_owned()), "{out:?}");
    assert!(!out.contains(&IPSET_GUARD.to_owned()), "{out:?}");
}

#[test]
fn an_unknown_placeholder_is_refused_with_its_position() {
    let args = s(&["--filter-tcp=443", "--hostlist={hostlist:other}"]);
    assert_eq!(
        profile_args(&args, &paths()),
        Err(ComposeError::UnknownPlaceholder {
            index: 1,
            arg: "--hostlist={hostlist:other}".into(),
            placeholder: "hostlist:other".into(),
        })
    );
}

#[test]
fn braces_that_are_not_placeholders_stay() {
    let args = s(&["--dpi-desync-fake-tls=0x{}{x}"]);
    assert_eq!(profile_args(&args, &paths()).unwrap(), args);
}

#[test]
fn profiles_are_ordered_by_priority_then_namespace_then_name_and_joined_by_new() {
    let mut profiles = vec![
        ProfileArgs {
            strategy: id("b", "z"),
            priority: 100,
            args: s(&["--filter-tcp=443", "--dpi-desync=fake"]),
        },
        ProfileArgs {
            strategy: id("a", "y"),
            priority: 100,
            args: s(&["--filter-tcp=80", "--dpi-desync=multisplit"]),
        },
        ProfileArgs {
            strategy: id("c", "x"),
            priority: 10,
            args: s(&["--filter-udp=443", "--dpi-desync=fake"]),
        },
    ];
    order(&mut profiles);
    let profiles = joined(&profiles);
    // The shape of zapret's config.default NFQWS_OPT: three profiles.
    assert_eq!(
        argv(200, 0x4000_0000, &profiles),
        s(&[
            "--qnum=200",
            "--dpi-desync-fwmark=0x40000000",
            "--filter-udp=443",
            "--dpi-desync=fake",
            "--new",
            "--filter-tcp=80",
            "--dpi-desync=multisplit",
            "--new",
            "--filter-tcp=443",
            "--dpi-desync=fake",
        ])
    );
}

#[test]
fn the_fingerprint_ignores_the_queue_and_follows_profiles_engine_and_mark() {
    let a = s(&["--filter-tcp=443", "--dpi-desync=fake"]);
    let b = s(&["--filter-tcp=443", "--dpi-desync=multisplit"]);
    let base = fingerprint("builtin", 0x4000_0000, &a);
    assert_eq!(base, fingerprint("builtin", 0x4000_0000, &a));
    assert_ne!(base, fingerprint("builtin", 0x4000_0000, &b));
    assert_ne!(base, fingerprint("nfqws", 0x4000_0000, &a));
    assert_ne!(base, fingerprint("builtin", 0x10, &a));
    // Argument boundaries count: ["ab","c"] is not ["a","bc"].
    assert_ne!(
        fingerprint("e", 0, &s(&["ab", "c"])),
        fingerprint("e", 0, &s(&["a", "bc"]))
    );
}
