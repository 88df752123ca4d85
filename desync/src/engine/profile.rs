//! Choosing the profile for a flow, nfqws' way: hard filters (L3, ports,
//! ipset), then L7, then hostlist; the first profile that matches wins; a
//! profile with a host include list is skipped while the host is unknown;
//! no match means the flow passes untouched.
//!
//! Host and address lists are not read here: the engine asks a
//! [`ProfileFilter`], which the list matchers implement.

use std::net::IpAddr;

use super::locate::Proto;
use super::packet::{FlowKey, Transport};
use crate::spec::{Config, IpFamily, L7, Profile};

/// Host name and address list checks for profile `profile` (index into
/// [`Config::profiles`]). Implementations apply the profile's include and
/// exclude lists; a profile without lists allows everything.
pub trait ProfileFilter {
    /// Whether `host` (lower-case, no port) passes the profile's hostlists.
    fn host_allowed(&self, profile: usize, host: &str) -> bool;
    /// Whether the destination `ip` passes the profile's ipsets.
    fn ip_allowed(&self, profile: usize, ip: IpAddr) -> bool;
}

/// A filter for configurations without lists: everything passes.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLists;

impl ProfileFilter for NoLists {
    fn host_allowed(&self, _profile: usize, _host: &str) -> bool {
        true
    }
    fn ip_allowed(&self, _profile: usize, _ip: IpAddr) -> bool {
        true
    }
}

/// What is known about a flow when choosing.
#[derive(Clone, Copy, Debug)]
pub struct FlowFacts<'a> {
    pub key: &'a FlowKey,
    /// Protocol of the first payload; `None` before any payload.
    pub proto: Option<Proto>,
    pub host: Option<&'a str>,
}

/// Index of the first profile that takes the flow, if any.
pub fn select(config: &Config, filter: &impl ProfileFilter, facts: FlowFacts<'_>) -> Option<usize> {
    config
        .profiles
        .iter()
        .enumerate()
        .find(|(index, profile)| matches(*index, profile, filter, facts))
        .map(|(index, _)| index)
}

/// Whether a profile might take the flow once its host is known (the hard
/// filters and L7 pass). Used to decide whether a request is worth holding
/// for reassembly.
pub fn may_take(config: &Config, facts: FlowFacts<'_>) -> bool {
    config.profiles.iter().any(|p| {
        p.desync.is_active() && hard_filters_pass(p, facts.key) && l7_passes(p, facts.proto)
    })
}

fn matches(
    index: usize,
    profile: &Profile,
    filter: &impl ProfileFilter,
    facts: FlowFacts<'_>,
) -> bool {
    if !hard_filters_pass(profile, facts.key) || !filter.ip_allowed(index, facts.key.dst) {
        return false;
    }
    if !l7_passes(profile, facts.proto) {
        return false;
    }
    match facts.host {
        Some(host) => filter.host_allowed(index, host),
        None => !profile.hosts.has_include(),
    }
}

fn hard_filters_pass(profile: &Profile, key: &FlowKey) -> bool {
    let family = if key.dst.is_ipv6() {
        IpFamily::V6
    } else {
        IpFamily::V4
    };
    if profile.l3.is_some_and(|l3| l3 != family) {
        return false;
    }
    let (mine, other) = match key.transport {
        Transport::Tcp => (&profile.tcp, &profile.udp),
        Transport::Udp => (&profile.udp, &profile.tcp),
    };
    match mine {
        Some(ports) => ports.matches(key.dst_port),
        // Only a filter for the other protocol: this one is not taken.
        None => other.is_none(),
    }
}

fn l7_passes(profile: &Profile, proto: Option<Proto>) -> bool {
    if profile.l7.is_empty() {
        return true;
    }
    let wanted = match proto {
        Some(Proto::Tls) => L7::Tls,
        Some(Proto::Http) => L7::Http,
        Some(Proto::Unknown) => L7::Unknown,
        // Before the first payload the protocol is open: keep the profile.
        None => return true,
    };
    profile.l7.contains(&wanted)
}

#[cfg(test)]
#[path = "profile/tests.rs"]
mod tests;
