//! The capture rules, as text (design §4a.3). Pure: the [`firewall`]
//! module runs them.
//!
//! Veil's rules live in its own chain [`CHAIN`] of the `mangle` table,
//! reached by exactly one jump from `POSTROUTING`. Every change is one
//! `iptables-restore --noflush` transaction per family: the chain is
//! declared (created, or flushed when it exists), refilled, and every
//! existing jump is deleted before one is inserted — so applying twice, or
//! after a crashed agent left rules behind, never duplicates anything, and
//! the queue number switches atomically.
//!
//! [`firewall`]: super::firewall

use veil_desync::spec::{PortFilter, Profile};

/// Veil's chain in the `mangle` table.
pub const CHAIN: &str = "VEIL_ZAPRET";
/// The built-in chain that jumps to [`CHAIN`].
pub const HOOK: &str = "POSTROUTING";
/// Most ports one `-m multiport` match takes (a range counts as two).
pub const MULTIPORT_MAX: usize = 15;
/// Packets per connection (original direction) the engine sees: enough for
/// the handshake and a request split over several segments, the kernel
/// cuts off the rest (zapret's "intercept required minimum").
pub const CONNBYTES: &str = "1:6";

/// Which destination ports of one protocol are captured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Ports {
    /// None.
    #[default]
    Nothing,
    /// Every port (a profile used `*` or `~…`).
    All,
    /// These inclusive ranges, sorted and merged.
    Ranges(Vec<(u16, u16)>),
}

/// What the rules capture: the union of the profiles' port filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    pub tcp: Ports,
    pub udp: Ports,
}

impl Capture {
    /// The union of the port filters of `profiles`. A negated filter (`~`)
    /// captures the whole protocol (the engine applies the exception); a
    /// profile with no port filter at all takes every TCP and UDP flow in
    /// nfqws, so it captures both protocols whole.
    pub fn of<'a>(profiles: impl IntoIterator<Item = &'a Profile>) -> Capture {
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        let (mut tcp_all, mut udp_all) = (false, false);
        for profile in profiles {
            if profile.tcp.is_none() && profile.udp.is_none() {
                tcp_all = true;
                udp_all = true;
            }
            add(&mut tcp, &mut tcp_all, profile.tcp.as_ref());
            add(&mut udp, &mut udp_all, profile.udp.as_ref());
        }
        Capture {
            tcp: ports(tcp, tcp_all),
            udp: ports(udp, udp_all),
        }
    }

    /// Whether nothing is captured.
    pub fn is_empty(&self) -> bool {
        self.tcp == Ports::Nothing && self.udp == Ports::Nothing
    }
}

fn add(ranges: &mut Vec<(u16, u16)>, all: &mut bool, filter: Option<&PortFilter>) {
    if let Some(filter) = filter {
        if filter.negate {
            *all = true;
        } else {
            ranges.extend(filter.ranges.iter().copied());
        }
    }
}

fn ports(mut ranges: Vec<(u16, u16)>, all: bool) -> Ports {
    if all {
        return Ports::All;
    }
    if ranges.is_empty() {
        return Ports::Nothing;
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    // Port 0 is never a destination: 0-65535 and 1-65535 are "every port".
    if merged.len() == 1 && merged[0].0 <= 1 && merged[0].1 == u16::MAX {
        return Ports::All;
    }
    Ports::Ranges(merged)
}

/// The rule lines (`-A VEIL_ZAPRET …`) that send `capture` to `queue`,
/// skipping packets carrying `mark` (the engine's own).
pub fn chain_rules(capture: &Capture, queue: u16, mark: u32) -> Vec<String> {
    rules_matching(capture, queue, &format!("! --mark {mark:#x}/{mark:#x}"))
}

/// The candidate slot's lines: `capture` to the side `queue`, but only
/// packets that carry `probe_mark` and not the engines' `mark` — the
/// candidate's probes, never users' traffic nor an engine's own packets.
/// They go before [`chain_rules`]' lines, which would take them otherwise.
pub fn side_rules(capture: &Capture, queue: u16, mark: u32, probe_mark: u32) -> Vec<String> {
    let mask = probe_mark | mark;
    rules_matching(capture, queue, &format!("--mark {probe_mark:#x}/{mask:#x}"))
}

/// The lines sending `capture` to `queue` for packets whose mark matches
/// `mark_match` (`-m mark` arguments).
fn rules_matching(capture: &Capture, queue: u16, mark_match: &str) -> Vec<String> {
    let tail = format!(
        "-m connbytes --connbytes-dir original --connbytes-mode packets --connbytes {CONNBYTES} \
         -m mark {mark_match} -j NFQUEUE --queue-num {queue} --queue-bypass"
    );
    let mut rules = Vec::new();
    for (proto, ports) in [("tcp", &capture.tcp), ("udp", &capture.udp)] {
        match ports {
            Ports::Nothing => {}
            Ports::All => rules.push(format!("-A {CHAIN} -p {proto} {tail}")),
            Ports::Ranges(ranges) => {
                for chunk in multiport_chunks(ranges) {
                    rules.push(format!(
                        "-A {CHAIN} -p {proto} -m multiport --dports {chunk} {tail}"
                    ));
                }
            }
        }
    }
    rules
}

/// `80,443,1000:2000` lists of at most [`MULTIPORT_MAX`] ports each.
fn multiport_chunks(ranges: &[(u16, u16)]) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut used = 0;
    for &(lo, hi) in ranges {
        let (text, cost) = if lo == hi {
            (lo.to_string(), 1)
        } else {
            (format!("{lo}:{hi}"), 2)
        };
        if used + cost > MULTIPORT_MAX {
            chunks.push(current.join(","));
            current.clear();
            used = 0;
        }
        current.push(text);
        used += cost;
    }
    if !current.is_empty() {
        chunks.push(current.join(","));
    }
    chunks
}

/// What a previous run left in the `mangle` table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    /// [`CHAIN`] exists.
    pub chain: bool,
    /// Jumps from [`HOOK`] to [`CHAIN`].
    pub jumps: usize,
}

impl Installed {
    /// Reads `iptables-save -t mangle` output.
    pub fn from_save(text: &str) -> Installed {
        let declaration = format!(":{CHAIN} ");
        let jump = format!("-A {HOOK} -j {CHAIN}");
        let mut installed = Installed::default();
        for line in text.lines().map(str::trim_end) {
            if line.starts_with(&declaration) {
                installed.chain = true;
            } else if line == jump {
                installed.jumps += 1;
            }
        }
        installed
    }
}

/// The `iptables-restore --noflush` input that makes [`CHAIN`] hold exactly
/// `rules` and [`HOOK`] jump to it exactly once, given what is `installed`.
pub fn restore_apply(rules: &[String], installed: Installed) -> String {
    let mut text = format!("*mangle\n:{CHAIN} - [0:0]\n-F {CHAIN}\n");
    for _ in 0..installed.jumps {
        text.push_str(&format!("-D {HOOK} -j {CHAIN}\n"));
    }
    text.push_str(&format!("-I {HOOK} 1 -j {CHAIN}\n"));
    for rule in rules {
        text.push_str(rule);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

/// The input that removes every jump and the chain; `None` when nothing of
/// Veil's is installed.
pub fn restore_remove(installed: Installed) -> Option<String> {
    if !installed.chain && installed.jumps == 0 {
        return None;
    }
    let mut text = String::from("*mangle\n");
    for _ in 0..installed.jumps {
        text.push_str(&format!("-D {HOOK} -j {CHAIN}\n"));
    }
    if installed.chain {
        text.push_str(&format!("-F {CHAIN}\n-X {CHAIN}\n"));
    }
    text.push_str("COMMIT\n");
    Some(text)
}

#[cfg(test)]
mod tests;
