//! Reload rules, pinned with a stand-in parser so they do not depend on the
//! real kinds: each non-empty line `name` is a Secret `default/name`; a
//! line `!message` is refused with that message at that line.

use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use veil_crds::document::{DocumentError, Limits, ParsedObject};
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};

use super::{DirLimits, DirOptions, DirSource};
use crate::source::SourceSnapshot;

thread_local! {
    /// Texts parsed by this test's thread (reload runs on the test thread).
    static PARSES: Cell<usize> = const { Cell::new(0) };
}

fn fake_parse(
    text: &str,
    _: &str,
    limits: &Limits,
) -> Result<Vec<ParsedObject>, Vec<DocumentError>> {
    PARSES.with(|p| p.set(p.get() + 1));
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim();
        if let Some(message) = line.strip_prefix('!') {
            errors.push(DocumentError {
                line: line_no,
                column: 1,
                object: None,
                path: String::new(),
                message: message.to_owned(),
            });
        } else if !line.is_empty() {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(line.to_owned()),
                    ..ObjectMeta::default()
                },
                ..Secret::default()
            };
            objects.push(ParsedObject {
                object: Object::Secret(Box::new(secret)),
                line: line_no,
            });
        }
    }
    if objects.len() > limits.max_objects {
        errors.push(DocumentError {
            line: 0,
            column: 0,
            object: None,
            path: String::new(),
            message: format!("more than {} objects", limits.max_objects),
        });
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}

fn parses() -> usize {
    PARSES.with(Cell::get)
}

fn mk_source(root: &Path, limits: DirLimits) -> DirSource {
    let mut source = DirSource::new(
        root.to_path_buf(),
        DirOptions {
            limits,
            ..DirOptions::default()
        },
    );
    source.parse = fake_parse;
    source
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Secret, "default", name)
}

fn names(snapshot: &SourceSnapshot) -> Vec<String> {
    snapshot.objects.keys().map(|k| k.name.clone()).collect()
}

fn errors_of(snapshot: &SourceSnapshot, file: &str) -> Vec<String> {
    snapshot
        .errors
        .iter()
        .filter(|e| e.file.as_deref() == Some(Path::new(file)))
        .map(ToString::to_string)
        .collect()
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, text).unwrap();
}

#[test]
fn objects_are_namespaced_and_located() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "sub/a.yaml", "\nalpha\n");
    let snapshot = mk_source(dir.path(), DirLimits::default()).reload();
    let object = &snapshot.objects[&key("alpha")];
    assert_eq!(object.origin.file, PathBuf::from("sub/a.yaml"));
    assert_eq!(object.origin.line, 2);
    assert_eq!(object.object.meta().namespace.as_deref(), Some("default"));
    assert_eq!(snapshot.version, 1);
}

#[test]
fn refused_file_keeps_its_last_good_version_and_other_files_move_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = mk_source(dir.path(), DirLimits::default());
    write(dir.path(), "a.yaml", "a1\na2\n");
    write(dir.path(), "b.yaml", "b1\n");
    source.reload();
    write(dir.path(), "a.yaml", "a1\n!bad indentation\n");
    write(dir.path(), "b.yaml", "b2\n");
    let snapshot = source.reload();
    assert_eq!(names(&snapshot), ["a1", "a2", "b2"]);
    let errors = errors_of(&snapshot, "a.yaml");
    assert_eq!(errors[0], "a.yaml:2:1: bad indentation");
    assert!(
        errors[1].contains("last good version (2 objects) stays in effect"),
        "{errors:?}"
    );
    write(dir.path(), "a.yaml", "a1\n");
    let snapshot = source.reload();
    assert_eq!(names(&snapshot), ["a1", "b2"]);
    assert!(snapshot.errors.is_empty());
}

#[test]
fn duplicate_is_an_error_on_the_file_that_did_not_own_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = mk_source(dir.path(), DirLimits::default());
    write(dir.path(), "b.yaml", "shared\n");
    source.reload();
    // a.yaml sorts first, but b.yaml already owns the key.
    write(dir.path(), "a.yaml", "own\nshared\n");
    let snapshot = source.reload();
    assert_eq!(
        snapshot.objects[&key("shared")].origin.file,
        PathBuf::from("b.yaml")
    );
    assert!(
        !snapshot.objects.contains_key(&key("own")),
        "a.yaml is atomic"
    );
    let errors = errors_of(&snapshot, "a.yaml");
    assert!(
        errors[0].starts_with("a.yaml:2: Secret default/shared: already defined in b.yaml:1"),
        "{errors:?}"
    );
    assert!(errors_of(&snapshot, "b.yaml").is_empty());

    // The owner lets go: the other file's version goes into effect.
    write(dir.path(), "b.yaml", "");
    let snapshot = source.reload();
    assert_eq!(names(&snapshot), ["own", "shared"]);
    assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
}

#[test]
fn on_first_load_the_later_file_in_path_order_gets_the_duplicate_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", "shared\n");
    write(dir.path(), "z/b.yaml", "shared\n");
    let snapshot = mk_source(dir.path(), DirLimits::default()).reload();
    assert_eq!(
        snapshot.objects[&key("shared")].origin.file,
        PathBuf::from("a.yaml")
    );
    assert!(!errors_of(&snapshot, "z/b.yaml").is_empty());
}

#[test]
fn key_moved_between_files_in_one_reload_is_not_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = mk_source(dir.path(), DirLimits::default());
    write(dir.path(), "b.yaml", "moving\n");
    write(dir.path(), "a.yaml", "");
    source.reload();
    write(dir.path(), "a.yaml", "moving\n");
    write(dir.path(), "b.yaml", "");
    let snapshot = source.reload();
    assert_eq!(
        snapshot.objects[&key("moving")].origin.file,
        PathBuf::from("a.yaml")
    );
    assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
}

#[test]
fn same_key_twice_in_one_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", "x\nx\n");
    let snapshot = mk_source(dir.path(), DirLimits::default()).reload();
    assert!(snapshot.objects.is_empty());
    assert!(
        errors_of(&snapshot, "a.yaml")[0].contains("defined twice in this file (first at line 1)")
    );
}

#[test]
fn missing_root_prunes_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write(&root, "a.yaml", "a\n");
    let mut source = mk_source(&root, DirLimits::default());
    assert_eq!(names(&source.reload()), ["a"]);
    fs::remove_dir_all(&root).unwrap();
    let snapshot = source.reload();
    assert_eq!(names(&snapshot), ["a"]);
    assert!(
        snapshot.errors[0]
            .message
            .contains("is missing: nothing pruned"),
        "{:?}",
        snapshot.errors
    );
    write(&root, "b.yaml", "b\n");
    let snapshot = source.reload();
    assert_eq!(names(&snapshot), ["b"]);
    assert!(snapshot.errors.is_empty());
}

#[test]
fn dangling_symlink_keeps_what_was_loaded_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write(dir.path(), "target/sub/a.yaml", "a\n");
    fs::create_dir(&root).unwrap();
    std::os::unix::fs::symlink(dir.path().join("target/sub"), root.join("linked")).unwrap();
    let mut source = mk_source(&root, DirLimits::default());
    assert_eq!(names(&source.reload()), ["a"]);
    fs::rename(dir.path().join("target"), dir.path().join("elsewhere")).unwrap();
    let snapshot = source.reload();
    assert_eq!(names(&snapshot), ["a"]);
    assert!(errors_of(&snapshot, "linked")[0].contains("symlink target is missing"));
}

#[test]
fn symlink_loop_is_reported_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", "a\n");
    std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
    let snapshot = mk_source(dir.path(), DirLimits::default()).reload();
    assert_eq!(names(&snapshot), ["a"]);
    assert!(errors_of(&snapshot, "loop")[0].contains("already read as"));
}

#[test]
fn unchanged_content_is_not_parsed_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = mk_source(dir.path(), DirLimits::default());
    write(dir.path(), "a.yaml", "a\n");
    write(dir.path(), "b.yaml", "b\n");
    let first = source.reload();
    let before = parses();
    write(dir.path(), "a.yaml", "a\n"); // same bytes, new mtime
    write(dir.path(), "b.yaml", "b\nc\n");
    let second = source.reload();
    assert_eq!(parses() - before, 1);
    assert_eq!(second.version, first.version + 1);
    let third = source.reload();
    assert_eq!(
        third.version, second.version,
        "nothing changed: same version"
    );
}

#[test]
fn limits_are_errors_that_name_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", "a\n");
    write(dir.path(), "b.yaml", &"#".repeat(100));
    write(dir.path(), "c.yaml", "c1\nc2\nc3\n");
    write(dir.path(), "d.yaml", "d1\nd2\n");
    let limits = DirLimits {
        max_file_bytes: 50,
        max_objects_per_file: 2,
        max_total_objects: 2,
        ..DirLimits::default()
    };
    let snapshot = mk_source(dir.path(), limits).reload();
    assert_eq!(names(&snapshot), ["a"]);
    assert!(
        errors_of(&snapshot, "b.yaml")[0].contains("larger than 50 bytes (limit max_file_bytes)")
    );
    assert!(errors_of(&snapshot, "c.yaml")[0].contains("more than 2 objects"));
    assert!(
        errors_of(&snapshot, "d.yaml")[0]
            .contains("over the limit of 2: remove objects or raise the limit (`--max-objects`")
    );
}

#[test]
fn too_many_files_loads_the_first_ones_and_prunes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "c.yaml", "c\n");
    let mut source = mk_source(
        dir.path(),
        DirLimits {
            max_files: 2,
            ..DirLimits::default()
        },
    );
    source.reload();
    write(dir.path(), "a.yaml", "a\n");
    write(dir.path(), "b.yaml", "b\n");
    let snapshot = source.reload();
    assert_eq!(names(&snapshot), ["a", "b", "c"]);
    assert!(
        snapshot.errors[0]
            .message
            .contains("more than 2 YAML/JSON files"),
        "{:?}",
        snapshot.errors
    );
}

#[test]
fn editor_files_and_other_extensions_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        ".a.yaml.swp",
        "a.yaml~",
        "#a.yaml#",
        ".#a.yaml",
        "4913",
        "a.yaml.tmp",
        "notes.txt",
        ".hidden/x.yaml",
    ] {
        write(dir.path(), name, "!never parsed\n");
    }
    write(dir.path(), "a.yml", "a\n");
    write(dir.path(), "b.json", "b\n");
    let snapshot = mk_source(dir.path(), DirLimits::default()).reload();
    assert_eq!(names(&snapshot), ["a", "b"]);
    assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
}

/// Not a timing assertion: prints how long a one-file edit takes to reload
/// in a 10,000-file directory (`cargo test -- --nocapture` to see it).
#[test]
fn edit_in_a_ten_thousand_file_directory_reparses_one_file() {
    let dir = tempfile::tempdir().unwrap();
    // Files written an hour ago: their stat stamps are trusted, as in a real checkout.
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for i in 0..10_000 {
        let rel = format!("d{:02}/o{i:05}.yaml", i % 100);
        write(dir.path(), &rel, &format!("o{i}\n"));
        fs::File::options()
            .write(true)
            .open(dir.path().join(rel))
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
    }
    let mut source = mk_source(dir.path(), DirLimits::default());
    let start = Instant::now();
    assert_eq!(source.reload().objects.len(), 10_000);
    let initial = start.elapsed();
    write(dir.path(), "d07/o00007.yaml", "o7\nextra\n");
    let before = parses();
    let start = Instant::now();
    let snapshot = source.reload();
    let edit = start.elapsed();
    assert_eq!(snapshot.objects.len(), 10_001);
    assert_eq!(parses() - before, 1);
    println!("10,000 files: initial load {initial:?}, reload after one edit {edit:?}");
}
