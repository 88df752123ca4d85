use super::*;

fn wish(name: &str, implementation: ZapretImplementation, refusal: Option<&str>) -> Wish {
    Wish {
        strategy: StrategyId {
            namespace: "edge".into(),
            name: name.into(),
        },
        implementation,
        builtin_refusal: refusal.map(str::to_owned),
    }
}

const LINUX_WITH_NFQWS: Available = Available {
    external: true,
    builtin: true,
};
const LINUX_ONLY_BUILTIN: Available = Available {
    external: false,
    builtin: true,
};

fn reasons(verdicts: &[(StrategyId, Result<(), Failure>)]) -> Vec<Option<&str>> {
    verdicts
        .iter()
        .map(|(_, v)| v.as_ref().err().map(|f| f.reason.as_str()))
        .collect()
}

use ZapretImplementation::{Auto, Builtin, External};

#[test]
fn auto_prefers_nfqws_and_falls_back_to_builtin() {
    let wishes = [wish("a", Auto, None), wish("b", Auto, None)];
    assert_eq!(
        choose(&wishes, LINUX_WITH_NFQWS).engine,
        Some(EngineKind::External)
    );
    let Choice {
        engine: kind,
        verdicts,
    } = choose(&wishes, LINUX_ONLY_BUILTIN);
    assert_eq!(kind, Some(EngineKind::Builtin));
    assert_eq!(reasons(&verdicts), vec![None, None]);
}

#[test]
fn external_without_nfqws_is_engine_missing_and_the_others_still_run() {
    let wishes = [wish("a", External, None), wish("b", Auto, None)];
    let Choice {
        engine: kind,
        verdicts,
    } = choose(&wishes, LINUX_ONLY_BUILTIN);
    assert_eq!(kind, Some(EngineKind::Builtin));
    assert_eq!(reasons(&verdicts), vec![Some("EngineMissing"), None]);
}

#[test]
fn builtin_with_an_option_outside_the_subset_is_unsupported_with_the_parsers_message() {
    let message = "args[1] `--dpi-desync` (profile 1): UnsupportedOption: `--dpi-desync=ipfrag2` …";
    let wishes = [wish("a", Builtin, Some(message)), wish("b", Builtin, None)];
    let Choice {
        engine: kind,
        verdicts,
    } = choose(&wishes, LINUX_WITH_NFQWS);
    assert_eq!(kind, Some(EngineKind::Builtin));
    assert_eq!(
        verdicts[0].1,
        Err(Failure::new("UnsupportedOption", message))
    );
    assert_eq!(verdicts[1].1, Ok(()));
}

#[test]
fn auto_with_an_unsupported_option_needs_nfqws() {
    let wishes = [wish("a", Auto, Some("UnsupportedOption: --x"))];
    assert_eq!(
        choose(&wishes, LINUX_WITH_NFQWS).engine,
        Some(EngineKind::External)
    );
    let Choice {
        engine: kind,
        verdicts,
    } = choose(&wishes, LINUX_ONLY_BUILTIN);
    assert_eq!(kind, None);
    assert_eq!(reasons(&verdicts), vec![Some("UnsupportedOption")]);
}

#[test]
fn disagreeing_strategies_follow_the_first_by_priority_and_the_other_is_told_why() {
    let wishes = [wish("first", External, None), wish("second", Builtin, None)];
    let Choice {
        engine: kind,
        verdicts,
    } = choose(&wishes, LINUX_WITH_NFQWS);
    assert_eq!(kind, Some(EngineKind::External));
    let failure = verdicts[1].1.clone().unwrap_err();
    assert_eq!(failure.reason, "ImplementationConflict");
    assert!(
        failure.message.contains("`edge/first`"),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("external"), "{}", failure.message);
}

#[test]
fn on_windows_builtin_is_missing_and_auto_needs_winws() {
    let windows = Available {
        external: false,
        builtin: false,
    };
    let Choice {
        engine: kind,
        verdicts,
    } = choose(&[wish("a", Builtin, None), wish("b", Auto, None)], windows);
    assert_eq!(kind, None);
    assert_eq!(
        reasons(&verdicts),
        vec![Some("EngineMissing"), Some("EngineMissing")]
    );
}
