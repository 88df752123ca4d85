use serde_json::json;

use super::*;

fn group(probes: bool, failover: bool) -> StrategyGroup {
    let member = |name: &str| json!({"strategy": {"namespace": "edge", "name": name}});
    let mut group = json!({
        "primary": {"namespace": "edge", "name": "youtube"},
        "members": [member("youtube"), member("youtube-fake"), member("youtube-split")],
        "specHash": "sha256:1",
    });
    if probes {
        group["probes"] = json!({"targets": [{"url": "https://www.youtube.com/generate_204"}]});
    }
    if failover {
        group["failover"] =
            json!({"backups": ["youtube-fake", "youtube-split"], "mode": "bestScore"});
    }
    serde_json::from_value(group).unwrap()
}

#[test]
fn a_group_gives_members_in_failover_order_and_the_api_defaults() {
    let config = FailoverConfig::from_group(&group(true, true)).unwrap();
    assert_eq!(config.spec_hash, "sha256:1");
    assert_eq!(config.members, ["youtube", "youtube-fake", "youtube-split"]);
    assert_eq!(config.primary(), "youtube");
    assert_eq!(config.mode, FailoverMode::BestScore);
    assert_eq!(config.passes, 3);
    assert_eq!(config.failure_threshold, 3);
    assert_eq!(config.min_switch_interval, Duration::from_secs(600));
}

#[test]
fn a_group_without_failover_is_watched_alone() {
    let config = FailoverConfig::from_group(&group(true, false)).unwrap();
    assert_eq!(config.members, ["youtube"], "nothing to switch to");
    assert_eq!(config.passes, 3);
}

#[test]
fn a_group_without_probes_or_members_has_no_state_machine() {
    assert_eq!(
        FailoverConfig::from_group(&group(false, true)),
        Err(ConfigError::NoProbes {
            primary: "youtube".into(),
        })
    );
    let mut empty = group(true, true);
    empty.members.clear();
    assert_eq!(
        FailoverConfig::from_group(&empty),
        Err(ConfigError::NoMembers)
    );
}
