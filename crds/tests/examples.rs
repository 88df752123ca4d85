//! Every file in `examples/standalone/` parses without error, and together
//! they hold one object of every kind.

use std::collections::BTreeSet;
use std::path::PathBuf;

use veil_crds::document::{Limits, parse_documents};
use veil_crds::kind::Kind;

fn example_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/standalone");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/standalone exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_file_parses_and_every_kind_is_shown() {
    let mut kinds = BTreeSet::new();
    for file in example_files() {
        let text = std::fs::read_to_string(&file).expect("readable");
        match parse_documents(&text, "default", &Limits::default()) {
            Ok(objects) => kinds.extend(objects.iter().map(|o| o.object.kind())),
            Err(errors) => {
                let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                panic!("{}:\n{}", file.display(), list.join("\n"));
            }
        }
    }
    for kind in Kind::ALL {
        assert!(kinds.contains(&kind), "no {kind} in examples/standalone");
    }
}

#[test]
fn the_quick_start_schedule_fires_every_minute_on_a_matching_runner() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/standalone/tasks.yaml"),
    )
    .expect("tasks.yaml");
    let objects = parse_documents(&text, "default", &Limits::default()).expect("parses");
    let mut schedule = None;
    let mut runner = None;
    for o in objects {
        match o.object {
            veil_crds::object::Object::Schedule(s) => schedule = Some(s),
            veil_crds::object::Object::Runner(r) => runner = Some(r),
            _ => {}
        }
    }
    let (schedule, runner) = (schedule.expect("schedule"), runner.expect("runner"));
    assert_eq!(
        schedule.spec.schedule.as_ref().map(|s| s.as_str()),
        Some("* * * * *")
    );
    let selector = schedule.spec.runner_selector.clone().unwrap_or_default();
    let labels = runner.metadata.labels.clone().unwrap_or_default();
    assert!(selector.matches(&labels, &runner.spec.tags));
    assert!(runner.spec.executors.contains(&schedule.spec.task.executor));
}
