use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::args::parse_cidr;
use crate::spec::{HostFilter, IpFilter, Profile};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

/// Replaces `path` the way the agent does: temp file, then rename.
fn replace_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

fn mk_profile(hosts: HostFilter, ips: IpFilter) -> Profile {
    Profile {
        number: 1,
        hosts,
        ips,
        ..Profile::default()
    }
}

#[test]
fn host_answers_follow_include_and_exclude_lists() {
    let dir = tempfile::tempdir().unwrap();
    let include = write(dir.path(), "inc.txt", "blocked.test\n^only.test\n");
    let exclude = write(dir.path(), "exc.txt", "ok.blocked.test\n");
    let lists = ProfileLists::load(&mk_profile(
        HostFilter {
            include_files: vec![include],
            include_domains: vec!["fixed.test".into()],
            exclude_files: vec![exclude],
            exclude_domains: vec!["^skip.fixed.test".into()],
        },
        IpFilter::default(),
    ))
    .unwrap();
    let cases = [
        ("blocked.test", true),
        ("www.blocked.test", true),
        ("ok.blocked.test", false),
        ("a.ok.blocked.test", false),
        ("only.test", true),
        ("www.only.test", false),
        ("fixed.test", true),
        ("skip.fixed.test", false),
        ("a.skip.fixed.test", true),
        ("allowed.test", false),
    ];
    for (host, expected) in cases {
        assert_eq!(lists.host_allowed(host), expected, "{host}");
    }
    assert_eq!(lists.counts(), (3, 2, 0, 0));
}

#[test]
fn empty_include_lists_let_every_host_through_like_nfqws() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "empty.txt", "# nothing yet\n");
    let unguarded = ProfileLists::load(&mk_profile(
        HostFilter {
            include_files: vec![empty.clone()],
            ..HostFilter::default()
        },
        IpFilter::default(),
    ))
    .unwrap();
    assert!(unguarded.host_allowed("anything.test"));

    // The agent's guard entry keeps an empty file from meaning "every host".
    let guarded = ProfileLists::load(&mk_profile(
        HostFilter {
            include_files: vec![empty],
            include_domains: vec!["guard.veil.invalid".into()],
            ..HostFilter::default()
        },
        IpFilter::default(),
    ))
    .unwrap();
    assert!(!guarded.host_allowed("anything.test"));
}

#[test]
fn address_answers_follow_ipsets() {
    let dir = tempfile::tempdir().unwrap();
    let include = write(dir.path(), "ips.txt", "192.0.2.0/24\n2001:db8::/32\n");
    let lists = ProfileLists::load(&mk_profile(
        HostFilter::default(),
        IpFilter {
            include_files: vec![include],
            include: vec![parse_cidr("198.51.100.1").unwrap()],
            exclude_files: vec![],
            exclude: vec![parse_cidr("192.0.2.128/25").unwrap()],
        },
    ))
    .unwrap();
    let cases = [
        ("192.0.2.1", true),
        ("192.0.2.200", false),
        ("198.51.100.1", true),
        ("198.51.100.2", false),
        ("2001:db8::7", true),
        ("2001:db9::7", false),
    ];
    for (addr, expected) in cases {
        assert_eq!(lists.ip_allowed(addr.parse().unwrap()), expected, "{addr}");
    }
}

#[test]
fn an_atomically_replaced_hostlist_is_picked_up_at_most_once_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "list.txt", "first.test\n");
    let mut lists = ProfileLists::load(&mk_profile(
        HostFilter {
            include_files: vec![path.clone()],
            ..HostFilter::default()
        },
        IpFilter::default(),
    ))
    .unwrap();
    let t0 = Instant::now();
    assert_eq!(lists.refresh(t0).0, 0);
    assert!(lists.host_allowed("first.test"));

    replace_atomically(&path, "second.test\n");
    // Within the interval: not looked at yet.
    assert_eq!(lists.refresh(t0 + Duration::from_millis(500)).0, 0);
    assert!(lists.host_allowed("first.test"));
    // After it: reloaded.
    let (reloaded, errors) = lists.refresh(t0 + RELOAD_INTERVAL);
    assert_eq!((reloaded, errors.len()), (1, 0));
    assert!(lists.host_allowed("second.test"));
    assert!(!lists.host_allowed("first.test"));
}

#[test]
fn an_in_place_edit_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "ips.txt", "192.0.2.1\n");
    let mut lists = ProfileLists::load(&mk_profile(
        HostFilter::default(),
        IpFilter {
            include_files: vec![path.clone()],
            ..IpFilter::default()
        },
    ))
    .unwrap();
    fs::write(&path, "192.0.2.1\n203.0.113.0/24\n").unwrap();
    assert_eq!(lists.refresh_now().0, 1);
    assert!(lists.ip_allowed("203.0.113.5".parse().unwrap()));
}

#[test]
fn a_vanished_or_broken_file_keeps_the_previous_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "list.txt", "kept.test\n");
    let mut lists = ProfileLists::load(&mk_profile(
        HostFilter {
            include_files: vec![path.clone()],
            ..HostFilter::default()
        },
        IpFilter::default(),
    ))
    .unwrap();
    fs::remove_file(&path).unwrap();
    let (reloaded, errors) = lists.refresh_now();
    assert_eq!(reloaded, 0);
    assert!(matches!(errors.as_slice(), [ListError::Io { .. }]));
    assert!(lists.host_allowed("kept.test"));

    fs::write(&path, [0x1f, 0x8b, 0x08, 0x00]).unwrap();
    let (_, errors) = lists.refresh_now();
    assert!(matches!(errors.as_slice(), [ListError::Gzip { .. }]));
    assert!(lists.host_allowed("kept.test"));
}
