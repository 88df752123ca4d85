//! Composing the engine's command line for many Strategies with the
//! agent's own pure functions, as its zapret actor does per change: each
//! member's args checked (`args::parse`, Validate), its hostlists written
//! (`files::materialise`: atomic, only when the content differs), the
//! placeholders replaced and guards added (`compose::profile_args`), the
//! result parsed as the built-in engine would (Builtin: files opened);
//! then all profiles ordered, joined, fingerprinted and the argv built.

use std::time::{Duration, Instant};

use veil_agent::drivers::zapret::compose::{self, ProfileArgs};
use veil_agent::drivers::zapret::{DEFAULT_MARK, DEFAULT_QUEUE_BASE, files};
use veil_crds::strategy::{ZapretImplementation, ZapretSyntax};
use veil_crds::wire::{ResolvedHostList, StrategyId, ZapretMember};
use veil_desync::args::{self, ParseMode};

use super::verdict;
use crate::ms;

const TARGET: Duration = Duration::from_secs(1);

/// 1,000 Strategies, each with its own 10,000-domain hostlist: the first
/// composition (every list written), an unchanged recomposition (every
/// list compared, none written) and one list edited.
pub fn thousand_strategies(strategies: usize, domains: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let list: Vec<String> = (0..domains)
        .map(|i| format!("site-{i:05}.example"))
        .collect();
    let mut members: Vec<(StrategyId, ZapretMember)> = (0..strategies)
        .map(|i| (id(i), member(i, list.clone())))
        .collect();
    let bytes: usize = list.iter().map(|d| d.len() + 1).sum::<usize>() * strategies;

    let (took, files_took, argc) = compose_all(dir.path(), &members);
    println!(
        "strategy_compose_first: {strategies} Strategies × own {domains}-domain hostlist ({:.0} MB written, fsync each): {:.0}ms, of which writing lists {:.0}ms; argv {argc} args (target < 1 s) {}",
        bytes as f64 / 1e6,
        ms(took),
        ms(files_took),
        verdict(took < TARGET)
    );
    let (took, files_took, _) = compose_all(dir.path(), &members);
    println!(
        "strategy_compose_unchanged: {strategies} Strategies, nothing changed (every list compared, none written): {:.0}ms, of which comparing lists {:.0}ms (target < 1 s) {}",
        ms(took),
        ms(files_took),
        verdict(took < TARGET)
    );
    members[strategies / 2].1.hostlists[0]
        .domains
        .push("one-more.example".to_owned());
    let (took, _, _) = compose_all(dir.path(), &members);
    println!(
        "strategy_compose_one_list_edited: {strategies} Strategies, one hostlist changed: {:.0}ms (target < 1 s) {}",
        ms(took),
        verdict(took < TARGET)
    );
}

fn id(i: usize) -> StrategyId {
    StrategyId {
        namespace: format!("ns-{:02}", i % 10),
        name: format!("strategy-{i:04}"),
    }
}

fn member(i: usize, domains: Vec<String>) -> ZapretMember {
    ZapretMember {
        args: [
            "--filter-tcp=443",
            "--hostlist={hostlist:sites}",
            "--dpi-desync=multisplit",
            "--dpi-desync-split-pos=1,midsld",
        ]
        .map(String::from)
        .to_vec(),
        syntax: ZapretSyntax::V1,
        priority: (i % 7) as i32,
        implementation: ZapretImplementation::Builtin,
        hostlists: vec![ResolvedHostList {
            name: "sites".to_owned(),
            domains,
            secret: false,
        }],
        files: Vec::new(),
    }
}

/// One composition of `members` into `root`: elapsed time, the part of it
/// spent in `files::materialise`, and the argv's length.
fn compose_all(
    root: &std::path::Path,
    members: &[(StrategyId, ZapretMember)],
) -> (Duration, Duration, usize) {
    let started = Instant::now();
    let mut files_took = Duration::ZERO;
    let mut profiles = Vec::with_capacity(members.len());
    for (id, member) in members {
        args::parse(&member.args, ParseMode::Validate).expect("valid args");
        let writing = Instant::now();
        let written = files::materialise(root, id, member).expect("lists written");
        files_took += writing.elapsed();
        let args = compose::profile_args(&member.args, &written.paths).expect("composed");
        args::parse(&args, ParseMode::Builtin).expect("built-in args");
        profiles.push(ProfileArgs {
            strategy: id.clone(),
            priority: member.priority,
            args,
        });
    }
    compose::order(&mut profiles);
    let joined = compose::joined(&profiles);
    let fingerprint = compose::fingerprint("veil-agent desync", DEFAULT_MARK, &joined);
    let argv = compose::argv(DEFAULT_QUEUE_BASE, DEFAULT_MARK, &joined);
    let took = started.elapsed();
    assert_eq!(fingerprint.len(), 24);
    (took, files_took, argv.len())
}
