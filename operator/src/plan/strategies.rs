//! Strategies: which Strategy runs on which node as part of which failover
//! group, the resolved settings each node's agent gets, and every
//! Strategy's status from what the agents report.
//!
//! Rules (docs/kinds/strategy.md):
//! - A Strategy named in another's `failover.backups` is a *backup*: it is
//!   a candidate on its primary's nodes (∩ its own selector) and never runs
//!   on its own; its own `failover` is ignored while it is a backup.
//! - A Strategy that is nobody's backup is a *primary*: it runs on every
//!   selected node that can run its engine, with its backups as one group.
//! - Backups that name each other in a circle have no primary: all of them
//!   are `Stalled` (`FailoverCycle`).
//! - `engine: zapret` needs nfqws/winws on the node, or Linux for the
//!   built-in engine (`zapret.implementation` narrows the choice).
//!
//! Pure: reads the world and the node views, performs no I/O.

use std::collections::BTreeMap;

use serde_json::Value;
use veil_crds::object::ObjectKey;
use veil_crds::wire::StrategyGroup;

use super::memo::Conditions;
use super::tasks::NodeView;

mod groups;
pub(crate) mod members;
mod placement;
mod status;
#[cfg(test)]
mod tests;

/// What Strategy planning decided.
#[derive(Debug, Default)]
pub struct StrategyPlan {
    /// Status bodies (without conditions and generation) of every Strategy, with their conditions.
    pub statuses: BTreeMap<ObjectKey, (Value, Conditions)>,
    /// The groups each node must run, in primary order.
    pub assignments: BTreeMap<String, Vec<StrategyGroup>>,
}

/// Plans every Strategy of the world.
pub fn plan_strategies(
    sources: members::Sources<'_>,
    views: &BTreeMap<&str, NodeView<'_>>,
) -> StrategyPlan {
    let world = sources.world;
    let roles = groups::roles(world);
    let resolved = members::resolve(sources, &roles);
    let placed = placement::place(&roles, &resolved, views);
    let mut plan = StrategyPlan::default();
    for group in &placed.groups {
        for node in &group.nodes {
            plan.assignments
                .entry(node.clone())
                .or_default()
                .push(group.wire.clone());
        }
    }
    for (key, strategy) in &roles.strategies {
        plan.statuses.insert(
            (*key).clone(),
            status::strategy_status(strategy, &resolved, &placed, views),
        );
    }
    plan
}
