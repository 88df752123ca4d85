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
    let mut placer = Placer {
        roles,
        resolved,
        placement: Placement::default(),
        groups: BTreeMap::new(),
    };
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
                placer.incapable(key, view, why);
                continue;
            }
            let mut members: Vec<(&ObjectKey, StrategyMember)> = vec![(key, primary.clone())];
            members.extend(placer.backups_on(view, backups));
            placer.add_group(key, view, &members);
        }
    }
    let mut placement = placer.placement;
    placement.groups = placer.groups.into_values().collect();
    placement
}

/// The placement being built, with the groups by spec hash.
struct Placer<'r, 'a> {
    roles: &'r Roles<'a>,
    resolved: &'r Resolved<'a>,
    placement: Placement<'a>,
    groups: BTreeMap<String, PlacedGroup>,
}

impl<'a> Placer<'_, 'a> {
    fn incapable(&mut self, key: &'a ObjectKey, view: &NodeView<'_>, why: String) {
        self.placement
            .strategies
            .entry(key)
            .or_default()
            .incapable
            .push((view.name.to_owned(), why));
    }

    /// The backups whose own selector picks `view`'s node and that can run there.
    fn backups_on(
        &mut self,
        view: &NodeView<'_>,
        backups: &[&'a ObjectKey],
    ) -> Vec<(&'a ObjectKey, StrategyMember)> {
        let mut members = Vec::new();
        for &backup in backups {
            let Some(Ok(member)) = self.resolved.get(backup) else {
                continue;
            };
            let Some(entry) = self.roles.strategies.get(backup) else {
                continue;
            };
            if !entry.object.spec.node_selector.matches(&view.labels) {
                continue;
            }
            if let Err(why) = can_run(view, member) {
                self.incapable(backup, view, why);
                continue;
            }
            members.push((backup, member.clone()));
        }
        members
    }

    /// The primary's group on `view`'s node, shared with every node whose
    /// group is equal (same spec hash).
    fn add_group(
        &mut self,
        primary: &'a ObjectKey,
        view: &NodeView<'_>,
        members: &[(&'a ObjectKey, StrategyMember)],
    ) {
        let Some(entry) = self.roles.strategies.get(primary) else {
            return;
        };
        let spec = &entry.object.spec;
        let wire = StrategyGroup {
            primary: entry.id.clone(),
            members: members.iter().map(|(_, m)| m.clone()).collect(),
            probes: spec.probes.clone(),
            scoring: spec.scoring.clone(),
            failover: spec.failover.clone(),
            spec_hash: String::new(),
        };
        let hash = spec_hash(&wire);
        for (member_key, _) in members {
            self.placement
                .strategies
                .entry(member_key)
                .or_default()
                .members
                .push((view.name.to_owned(), hash.clone(), primary.name.clone()));
        }
        self.groups
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
