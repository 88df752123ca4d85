//! The watched-directory source against a real temporary directory, with
//! the real parser: driven by `reload()` step by step, and through `spawn`
//! with real file events.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;
use veil_operator::source::SourceSnapshot;
use veil_operator::source::dir::{DirLimits, DirOptions, DirSource};

/// Long enough for a loaded CI machine, short enough to fail fast.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

fn node(name: &str, cordoned: bool) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: VeilNode\nmetadata:\n  name: {name}\nspec:\n  cordoned: {cordoned}\n"
    )
}

fn secret(name: &str) -> String {
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  k: v\n")
}

fn node_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::VeilNode, "", name)
}

fn secret_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Secret, "default", name)
}

fn cordoned(snapshot: &SourceSnapshot, name: &str) -> Option<bool> {
    let object = &snapshot.objects.get(&node_key(name))?.object;
    // `cordoned: false` is the default and may be left out when serialised.
    Some(
        object.to_value()["spec"]["cordoned"]
            .as_bool()
            .unwrap_or(false),
    )
}

fn file_errors(snapshot: &SourceSnapshot, file: &str) -> Vec<String> {
    snapshot
        .errors
        .iter()
        .filter(|e| e.file.as_deref() == Some(Path::new(file)))
        .map(ToString::to_string)
        .collect()
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn source(root: &Path) -> DirSource {
    DirSource::new(root.to_path_buf(), DirOptions::default())
}

#[test]
fn add_change_break_fix_remove_object_and_delete_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut source = source(root);
    assert!(source.reload().objects.is_empty());

    write(
        root,
        "nodes/x.yaml",
        &format!("{}---\n{}", node("n1", false), secret("s")),
    );
    let snapshot = source.reload();
    assert_eq!(snapshot.objects.len(), 2, "{:?}", snapshot.errors);
    assert_eq!(
        snapshot.objects[&secret_key("s")].origin.file,
        PathBuf::from("nodes/x.yaml")
    );
    // The second document starts at its `---` separator (line 7) or right after it.
    assert!((7..=8).contains(&snapshot.objects[&secret_key("s")].origin.line));

    write(
        root,
        "nodes/x.yaml",
        &format!("{}---\n{}", node("n1", true), secret("s")),
    );
    assert_eq!(cordoned(&source.reload(), "n1"), Some(true));

    // Broken YAML: an error with the line, and the last good version stays.
    write(
        root,
        "nodes/x.yaml",
        &format!("{}   bad: indentation\n", node("n1", false)),
    );
    let snapshot = source.reload();
    let errors: Vec<_> = snapshot.errors.iter().filter(|e| e.line > 0).collect();
    assert!(!errors.is_empty(), "{:?}", snapshot.errors);
    assert_eq!(errors[0].file.as_deref(), Some(Path::new("nodes/x.yaml")));
    assert_eq!(cordoned(&snapshot, "n1"), Some(true));
    assert!(snapshot.objects.contains_key(&secret_key("s")));

    // Fixed, and the Secret removed from the file: it is pruned.
    write(root, "nodes/x.yaml", &node("n1", false));
    let snapshot = source.reload();
    assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
    assert_eq!(cordoned(&snapshot, "n1"), Some(false));
    assert!(!snapshot.objects.contains_key(&secret_key("s")));

    fs::remove_file(root.join("nodes/x.yaml")).unwrap();
    assert!(source.reload().objects.is_empty());
}

#[test]
fn invalid_object_keeps_the_whole_file_at_its_last_good_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = source(dir.path());
    write(
        dir.path(),
        "x.yaml",
        &format!("{}---\n{}", node("n1", false), secret("s")),
    );
    source.reload();
    write(
        dir.path(),
        "x.yaml",
        &format!(
            "{}---\n{}",
            node("n1", true),
            node("n2", false).replace("VeilNode", "NoSuchKind")
        ),
    );
    let snapshot = source.reload();
    assert_eq!(
        cordoned(&snapshot, "n1"),
        Some(false),
        "one refused document keeps the whole file"
    );
    assert!(snapshot.objects.contains_key(&secret_key("s")));
    assert!(!file_errors(&snapshot, "x.yaml").is_empty());
}

#[test]
fn duplicate_across_files_is_an_error_on_the_later_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &node("n1", false));
    write(
        dir.path(),
        "b.yaml",
        &format!("{}---\n{}", secret("only-in-b"), node("n1", true)),
    );
    let snapshot = source(dir.path()).reload();
    assert_eq!(cordoned(&snapshot, "n1"), Some(false));
    assert_eq!(
        snapshot.objects[&node_key("n1")].origin.file,
        PathBuf::from("a.yaml")
    );
    assert!(!snapshot.objects.contains_key(&secret_key("only-in-b")));
    let errors = file_errors(&snapshot, "b.yaml");
    assert!(
        errors[0].contains("VeilNode n1: already defined in a.yaml:1"),
        "{errors:?}"
    );
    assert!(file_errors(&snapshot, "a.yaml").is_empty());
}

#[test]
fn oversized_file_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "big.yaml",
        &format!("{}# {}\n", node("n1", false), "x".repeat(2000)),
    );
    write(dir.path(), "small.yaml", &secret("s"));
    let limits = DirLimits {
        max_file_bytes: 1024,
        ..DirLimits::default()
    };
    let snapshot = DirSource::new(
        dir.path().into(),
        DirOptions {
            limits,
            ..DirOptions::default()
        },
    )
    .reload();
    assert!(snapshot.objects.contains_key(&secret_key("s")));
    assert!(!snapshot.objects.contains_key(&node_key("n1")));
    assert!(file_errors(&snapshot, "big.yaml")[0].contains("larger than 1024 bytes"));
}

#[test]
fn non_manifest_and_editor_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "n.yaml", &node("n1", false));
    for name in [
        "README.md",
        "notes.txt",
        ".n.yaml.swp",
        "n.yaml~",
        "#n.yaml#",
        ".#n.yaml",
        "4913",
        "n.yaml.tmp",
    ] {
        write(dir.path(), name, "this: [is not valid");
    }
    let snapshot = source(dir.path()).reload();
    assert_eq!(snapshot.objects.len(), 1);
    assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
}

#[test]
fn removed_directory_prunes_nothing_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("desired");
    write(&root, "n.yaml", &node("n1", false));
    let mut source = source(&root);
    assert_eq!(source.reload().objects.len(), 1);
    fs::remove_dir_all(&root).unwrap();
    let snapshot = source.reload();
    assert_eq!(snapshot.objects.len(), 1);
    assert!(
        snapshot.errors[0]
            .to_string()
            .contains("is missing: nothing pruned until it is back")
    );
    write(&root, "m.yaml", &node("m1", false));
    let snapshot = source.reload();
    assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
    assert_eq!(
        snapshot.objects.keys().cloned().collect::<Vec<_>>(),
        [node_key("m1")]
    );
}

/// Kubernetes ConfigMap / git-sync layout: `x.yaml -> ..data/x.yaml`,
/// `..data -> ..2026_a`, swapped by renaming a new `..data` link over it.
fn k8s_layout(root: &Path, generation: &str, text: &str) {
    write(root, &format!("{generation}/x.yaml"), text);
}

fn k8s_swap(root: &Path, from: &str, to: &str, text: &str) {
    k8s_layout(root, to, text);
    symlink(to, root.join("..data_tmp")).unwrap();
    fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    fs::remove_dir_all(root.join(from)).unwrap();
}

#[test]
fn kubernetes_symlink_swap_replaces_content_without_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    k8s_layout(root, "..2026_a", &node("n1", false));
    symlink("..2026_a", root.join("..data")).unwrap();
    symlink("..data/x.yaml", root.join("x.yaml")).unwrap();
    let mut source = source(root);
    let snapshot = source.reload();
    assert_eq!(
        cordoned(&snapshot, "n1"),
        Some(false),
        "{:?}",
        snapshot.errors
    );
    assert_eq!(
        snapshot.objects.len(),
        1,
        "..data and ..2026_a are not read twice"
    );

    k8s_layout(root, "..2026_b", &node("n1", true));
    symlink("..2026_b", root.join("..data_tmp")).unwrap();
    assert_eq!(cordoned(&source.reload(), "n1"), Some(false));
    fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    assert_eq!(cordoned(&source.reload(), "n1"), Some(true));
    fs::remove_dir_all(root.join("..2026_a")).unwrap();
    let snapshot = source.reload();
    assert_eq!(cordoned(&snapshot, "n1"), Some(true));
    assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
}

// ---- through `spawn`, with real file events ----

struct Watched {
    rx: watch::Receiver<Arc<SourceSnapshot>>,
    _handle: veil_operator::source::dir::DirSourceHandle,
}

fn spawn(root: &Path) -> Watched {
    let options = DirOptions {
        // Events alone must do the work: the safety net never fires in these tests.
        rescan_interval: Duration::from_secs(3600),
        ..DirOptions::default()
    };
    let (tx, rx) = watch::channel(Arc::new(SourceSnapshot::default()));
    let handle = DirSource::new(root.to_path_buf(), options)
        .spawn(tx)
        .unwrap();
    Watched {
        rx,
        _handle: handle,
    }
}

impl Watched {
    /// Waits for a snapshot satisfying `check`, checking `invariant` on
    /// every snapshot seen meanwhile.
    async fn until(
        &mut self,
        check: impl Fn(&SourceSnapshot) -> bool,
        invariant: impl Fn(&SourceSnapshot) -> bool,
    ) -> Arc<SourceSnapshot> {
        let wait = self.rx.wait_for(|s| {
            assert!(
                s.version == 0 || invariant(s),
                "invariant broken by {:?}",
                s.errors
            );
            s.version > 0 && check(s)
        });
        let found = tokio::time::timeout(EVENT_TIMEOUT, wait)
            .await
            .map(|found| found.map(|snapshot| Arc::clone(&snapshot)));
        match found {
            Ok(Ok(snapshot)) => snapshot,
            _ => panic!(
                "no matching snapshot; last errors: {:?}",
                self.rx.borrow().errors
            ),
        }
    }

    async fn wait(&mut self, check: impl Fn(&SourceSnapshot) -> bool) -> Arc<SourceSnapshot> {
        self.until(check, |_| true).await
    }
}

#[tokio::test]
async fn watched_directory_follows_edits_breakage_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "x.yaml", &node("n1", false));
    let mut watched = spawn(root);
    watched.wait(|s| cordoned(s, "n1") == Some(false)).await;

    write(root, "x.yaml", &node("n1", true));
    watched.wait(|s| cordoned(s, "n1") == Some(true)).await;

    write(
        root,
        "x.yaml",
        "apiVersion: veil.dev/v1alpha1\nkind: VeilNode\nmetadata: [\n",
    );
    let snapshot = watched.wait(|s| !s.errors.is_empty()).await;
    assert_eq!(cordoned(&snapshot, "n1"), Some(true));
    assert!(snapshot.errors.iter().any(|e| e.line > 0));

    write(root, "x.yaml", &node("n1", false));
    watched
        .wait(|s| s.errors.is_empty() && cordoned(s, "n1") == Some(false))
        .await;

    write(root, "sub/y.yaml", &secret("s"));
    watched
        .wait(|s| s.objects.contains_key(&secret_key("s")))
        .await;
    fs::remove_dir_all(root.join("sub")).unwrap();
    watched
        .wait(|s| !s.objects.contains_key(&secret_key("s")))
        .await;
    fs::remove_file(root.join("x.yaml")).unwrap();
    watched.wait(|s| s.objects.is_empty()).await;
}

#[tokio::test]
async fn editor_style_save_through_a_temp_file_and_rename() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "x.yaml", &node("n1", false));
    let mut watched = spawn(root);
    watched.wait(|s| cordoned(s, "n1") == Some(false)).await;
    write(root, ".x.yaml.swp", "swap");
    write(root, "x.yaml.tmp", &node("n1", true));
    fs::rename(root.join("x.yaml.tmp"), root.join("x.yaml")).unwrap();
    fs::remove_file(root.join(".x.yaml.swp")).unwrap();
    let snapshot = watched
        .until(
            |s| cordoned(s, "n1") == Some(true),
            |s| s.objects.len() == 1,
        )
        .await;
    assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
}

#[tokio::test]
async fn kubernetes_symlink_swap_is_seen_and_never_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    k8s_layout(root, "..2026_a", &node("n1", false));
    symlink("..2026_a", root.join("..data")).unwrap();
    symlink("..data/x.yaml", root.join("x.yaml")).unwrap();
    let mut watched = spawn(root);
    watched.wait(|s| cordoned(s, "n1") == Some(false)).await;
    k8s_swap(root, "..2026_a", "..2026_b", &node("n1", true));
    watched
        .until(
            |s| cordoned(s, "n1") == Some(true),
            |s| cordoned(s, "n1").is_some(),
        )
        .await;
    k8s_swap(root, "..2026_b", "..2026_c", &node("n1", false));
    watched
        .until(
            |s| cordoned(s, "n1") == Some(false),
            |s| cordoned(s, "n1").is_some(),
        )
        .await;
}

#[tokio::test]
async fn removed_root_prunes_nothing_and_recovers_when_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("desired");
    write(&root, "x.yaml", &node("n1", false));
    let mut watched = spawn(&root);
    watched.wait(|s| cordoned(s, "n1") == Some(false)).await;
    fs::remove_dir_all(&root).unwrap();
    let snapshot = watched
        .until(|s| !s.errors.is_empty(), |s| s.objects.len() == 1)
        .await;
    assert!(
        snapshot.errors[0]
            .message
            .contains("is missing: nothing pruned")
    );
    write(&root, "x.yaml", &node("n1", true));
    watched
        .wait(|s| s.errors.is_empty() && cordoned(s, "n1") == Some(true))
        .await;
    // The re-created root is watched again.
    write(&root, "y.yaml", &secret("s"));
    watched
        .wait(|s| s.objects.contains_key(&secret_key("s")))
        .await;
}

#[tokio::test]
async fn burst_of_writes_coalesces_into_few_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut watched = spawn(root);
    let first = watched.wait(|_| true).await.version;
    for i in 0..100 {
        write(
            root,
            &format!("n{i:03}.yaml"),
            &node(&format!("n{i:03}"), false),
        );
    }
    let last = watched.wait(|s| s.objects.len() == 100).await.version;
    assert!(
        last - first <= 10,
        "100 writes published {} snapshots",
        last - first
    );
}
