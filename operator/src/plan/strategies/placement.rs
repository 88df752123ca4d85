//! Where each failover group runs, and which members it has on each node.
//!
//! A primary runs on every node its selector picks that can run its engine
//! (cordoned nodes get nothing). On each such node its group holds the
//! primary and every backup whose own selector also picks the node (and
//! that can run there). Nodes whose groups are equal share one
//! [`StrategyGroup`] value (same `specHash`).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use veil_crds::object::ObjectKey;
use veil_crds::strategy::{Engine, ZapretImplementation};
use veil_crds::wire::{StrategyGroup, StrategyMember};

use super::groups::{Role, Roles};
use super::members::Resolved;
use crate::plan::tasks::NodeView;

/// Every group and every Strategy's nodes.
#[derive(Debug, Default)]
pub struct Placement<'a> {
    /// Groups by spec hash.
    pub groups: Vec<PlacedGroup>,
    /// For each Strategy: where it is a member, and where it cannot run.
    pub strategies: BTreeMap<&'a ObjectKey, StrategyNodes>,
}

/// One group value and the nodes that run it.
#[derive(Debug)]
pub struct PlacedGroup {
    pub nodes: Vec<String>,
    pub wire: StrategyGroup,
}

/// A Strategy's nodes.
#[derive(Debug, Default)]
pub struct StrategyNodes {
    /// (node, spec hash of the group it is in there, primary's name).
    pub members: Vec<(String, String, String)>,
    /// Selected nodes that cannot run its engine, with why.
    pub incapable: Vec<(String, String)>,
}

/// Places every primary with its backups.
pub fn place<'a>(
    roles: &Roles<'a>,
    resolved: &Resolved<'a>,
    views: &BTreeMap<&str, NodeView<'_>>,
) -> Placement<'a> {
    let mut placement = Placement::default();
    let mut groups: BTreeMap<String, PlacedGroup> = BTreeMap::new();
    for (&key, entry) in &roles.strategies {
        let Role::Primary { backups, .. } = &entry.role else {
            continue;
        };
        let Some(Ok(primary)) = resolved.get(key) else {
            continue;
        };
        let spec = &entry.object.spec;
        if spec.engine != Engine::Zapret {
            continue;
        }
        for view in views.values() {
            if view.cordoned || !spec.node_selector.matches(&view.labels) {
                continue;
            }
            if let Err(why) = can_run(view, primary) {
                placement
                    .strategies
                    .entry(key)
                    .or_default()
                    .incapable
                    .push((view.name.to_owned(), why));
                continue;
            }
            let mut members: Vec<(&ObjectKey, StrategyMember)> = vec![(key, primary.clone())];
            for &backup in backups {
                let Some(Ok(member)) = resolved.get(backup) else {
                    continue;
                };
                let Some(backup_entry) = roles.strategies.get(backup) else {
                    continue;
                };
                if !backup_entry.object.spec.node_selector.matches(&view.labels) {
                    continue;
                }
                if let Err(why) = can_run(view, member) {
                    placement
                        .strategies
                        .entry(backup)
                        .or_default()
                        .incapable
                        .push((view.name.to_owned(), why));
                    continue;
                }
                members.push((backup, member.clone()));
            }
            let wire = StrategyGroup {
                primary: entry.id.clone(),
                members: members.iter().map(|(_, m)| m.clone()).collect(),
                probes: spec.probes.clone(),
                scoring: spec.scoring.clone(),
                failover: spec.failover.clone(),
                spec_hash: String::new(),
            };
            let hash = spec_hash(&wire);
            for (member_key, _) in &members {
                placement
                    .strategies
                    .entry(member_key)
                    .or_default()
                    .members
                    .push((view.name.to_owned(), hash.clone(), key.name.clone()));
            }
            groups
                .entry(hash.clone())
                .or_insert_with(|| PlacedGroup {
                    nodes: Vec::new(),
                    wire: StrategyGroup {
                        spec_hash: hash,
                        ..wire
                    },
                })
                .nodes
                .push(view.name.to_owned());
        }
    }
    placement.groups = groups.into_values().collect();
    placement
}

/// Whether `view`'s node can run `member`'s engine. A node whose agent has
/// not registered is given the work (its status says it waits for the agent).
fn can_run(view: &NodeView<'_>, member: &StrategyMember) -> Result<(), String> {
    let Some(zapret) = &member.zapret else {
        return Ok(());
    };
    let Some(observation) = view.observation else {
        return Ok(());
    };
    let registration = &observation.registration;
    let external = registration
        .capabilities
        .iter()
        .any(|c| c.name == "nfqws" || c.name == "winws");
    let builtin = registration.os == "linux";
    let node = view.name;
    match zapret.implementation {
        ZapretImplementation::Auto if external || builtin => Ok(()),
        ZapretImplementation::External if external => Ok(()),
        ZapretImplementation::Builtin if builtin => Ok(()),
        ZapretImplementation::Auto => Err(format!(
            "node {node} has neither nfqws/winws on its agent's PATH nor Linux for Veil's built-in engine"
        )),
        ZapretImplementation::External => Err(format!(
            "node {node} has no nfqws/winws on its agent's PATH (implementation: external); install zapret there or use implementation: auto"
        )),
        ZapretImplementation::Builtin => Err(format!(
            "node {node} runs {}; Veil's built-in engine needs Linux (implementation: builtin)",
            registration.os
        )),
    }
}

/// Fingerprint of a group: members (files included), probes, scoring, failover.
fn spec_hash(group: &StrategyGroup) -> String {
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(group).unwrap_or_default());
    hex::encode(&hasher.finalize()[..16])
}
