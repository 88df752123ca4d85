//! A group's failover settings, read from the Strategy API (the seed's
//! defaults come with it: `failureThreshold` 3, `minSwitchInterval` 10m,
//! `passes` 3, `mode: ordered`).

use std::time::Duration;

use veil_crds::strategy::{Failover, FailoverMode, Probes};
use veil_crds::wire::StrategyGroup;

/// Why a group has no failover state machine.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The group has no members at all (an operator bug).
    #[error("the strategy group has no members")]
    NoMembers,
    /// Without probes nothing tells whether a member works.
    #[error("strategy group `{primary}` has no `probes`; nothing can tell whether it works")]
    NoProbes { primary: String },
}

/// `failedRounds` a group without `failover` counts up to before its
/// member is "failing" (the API's default threshold; nothing switches).
const WATCH_ONLY_THRESHOLD: u32 = 3;

/// A group's failover settings, as the state machine uses them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverConfig {
    pub(super) spec_hash: String,
    pub(super) members: Vec<String>,
    pub(super) mode: FailoverMode,
    pub(super) passes: usize,
    pub(super) failure_threshold: u32,
    pub(super) min_switch_interval: Duration,
}

impl FailoverConfig {
    /// Settings from the Strategy API: `members` are names in failover
    /// order (the primary first, then `failover.backups`). `passes` and
    /// `failureThreshold` below 1 (refused by validation) count as 1.
    pub fn new(
        spec_hash: impl Into<String>,
        members: Vec<String>,
        probes: &Probes,
        failover: &Failover,
    ) -> Result<FailoverConfig, ConfigError> {
        if members.is_empty() {
            return Err(ConfigError::NoMembers);
        }
        Ok(FailoverConfig {
            spec_hash: spec_hash.into(),
            members,
            mode: failover.mode,
            passes: usize::try_from(probes.passes.max(1)).unwrap_or(usize::MAX),
            failure_threshold: failover.failure_threshold.max(1),
            min_switch_interval: failover.min_switch_interval.as_std(),
        })
    }

    /// Settings of a group from an assignment (member names without their
    /// namespace: a group lives in one namespace). A group with probes but
    /// no `failover` is watched alone: its primary is its only member, so
    /// nothing is ever switched to.
    pub fn from_group(group: &StrategyGroup) -> Result<FailoverConfig, ConfigError> {
        let primary = group.primary.name.clone();
        let probes = group.probes.as_ref().ok_or_else(|| ConfigError::NoProbes {
            primary: primary.clone(),
        })?;
        match &group.failover {
            Some(failover) => {
                let members = group
                    .members
                    .iter()
                    .map(|m| m.strategy.name.clone())
                    .collect();
                FailoverConfig::new(group.spec_hash.clone(), members, probes, failover)
            }
            None => Ok(FailoverConfig {
                spec_hash: group.spec_hash.clone(),
                members: vec![primary],
                mode: FailoverMode::Ordered,
                passes: usize::try_from(probes.passes.max(1)).unwrap_or(usize::MAX),
                failure_threshold: WATCH_ONLY_THRESHOLD,
                min_switch_interval: Duration::ZERO,
            }),
        }
    }

    /// The member named first.
    pub fn primary(&self) -> &str {
        self.members.first().map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests;
