#![allow(clippy::unwrap_used, reason = "tests")]

use super::*;
use veil_crds::strategy::{ZapretImplementation, ZapretSyntax};
use veil_crds::wire::{ResolvedFile, ResolvedHostList, SecretValue};

fn id(ns: &str, name: &str) -> StrategyId {
    StrategyId {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn member(domains: &[&str], secret_file: bool) -> ZapretMember {
    ZapretMember {
        args: vec!["--filter-tcp=443".into()],
        syntax: ZapretSyntax::V1,
        priority: 100,
        implementation: ZapretImplementation::Auto,
        hostlists: vec![ResolvedHostList {
            name: "blocked".into(),
            domains: domains.iter().map(|&d| d.to_owned()).collect(),
            secret: false,
        }],
        files: vec![ResolvedFile {
            name: "tls.bin".into(),
            // "\x16\x03\x01"
            data_base64: SecretValue("FgMB".into()),
            secret: secret_file,
        }],
    }
}

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn lists_and_files_land_at_stable_paths_with_their_modes() {
    let root = tempfile::tempdir().unwrap();
    let out = materialise(
        root.path(),
        &id("edge", "yt"),
        &member(&["a.com", "b.org"], true),
    )
    .unwrap();
    let list = root.path().join("edge/yt/blocked.txt");
    let file = root.path().join("edge/yt/files/tls.bin");
    assert_eq!(out.paths["hostlist:blocked"], list);
    assert_eq!(out.paths["file:tls.bin"], file);
    assert_eq!(std::fs::read_to_string(&list).unwrap(), "a.com\nb.org\n");
    assert_eq!(std::fs::read(&file).unwrap(), vec![0x16, 0x03, 0x01]);
    #[cfg(unix)]
    {
        assert_eq!(mode_of(&list), MODE_PLAIN);
        assert_eq!(mode_of(&file), MODE_SECRET);
    }
    // No temporary file is left next to them.
    let names: Vec<_> = std::fs::read_dir(root.path().join("edge/yt"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn an_unchanged_list_is_not_rewritten_and_a_changed_one_is_replaced_in_place() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("l.txt");
    assert!(write_if_changed(&path, b"a.com\n", MODE_PLAIN).unwrap());
    assert!(!write_if_changed(&path, b"a.com\n", MODE_PLAIN).unwrap());
    assert!(write_if_changed(&path, b"a.com\nb.com\n", MODE_PLAIN).unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), b"a.com\nb.com\n");
    // Same content, other mode (the list moved to a Secret): rewritten.
    assert!(write_if_changed(&path, b"a.com\nb.com\n", MODE_SECRET).unwrap());
}

#[test]
fn an_empty_hostlist_is_refused_and_nothing_is_written() {
    let root = tempfile::tempdir().unwrap();
    let error = materialise(root.path(), &id("edge", "yt"), &member(&[], false)).unwrap_err();
    assert_eq!(error.reason(), "EmptyHostList");
    assert_eq!(
        error.to_string(),
        "hostlist `blocked` is empty; zapret would treat an empty list as every host"
    );
    assert!(!root.path().join("edge").exists());
    // Blank entries only count as empty too.
    let error =
        materialise(root.path(), &id("edge", "yt"), &member(&[" ", ""], false)).unwrap_err();
    assert_eq!(error.reason(), "EmptyHostList");
}

#[test]
fn names_that_would_leave_the_directory_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut bad = member(&["a.com"], false);
    bad.hostlists[0].name = "../../etc/passwd".into();
    let error = materialise(root.path(), &id("edge", "yt"), &bad).unwrap_err();
    assert_eq!(error.reason(), "InvalidName");
}

#[test]
fn prune_removes_what_is_not_kept_but_not_the_pid_records() {
    let root = tempfile::tempdir().unwrap();
    let kept = materialise(root.path(), &id("edge", "kept"), &member(&["a.com"], false)).unwrap();
    materialise(root.path(), &id("edge", "gone"), &member(&["a.com"], false)).unwrap();
    materialise(
        root.path(),
        &id("other", "gone"),
        &member(&["a.com"], false),
    )
    .unwrap();
    std::fs::write(root.path().join(".engine-200.pid"), "1 1\n").unwrap();
    let keep: BTreeSet<PathBuf> = kept.paths.values().cloned().collect();
    prune(root.path(), &keep).unwrap();
    assert!(root.path().join("edge/kept/blocked.txt").exists());
    assert!(root.path().join("edge/kept/files/tls.bin").exists());
    assert!(!root.path().join("edge/gone").exists());
    assert!(!root.path().join("other").exists());
    assert!(root.path().join(".engine-200.pid").exists());
    // Keeping nothing empties the tree.
    prune(root.path(), &BTreeSet::new()).unwrap();
    assert!(!root.path().join("edge").exists());
}
