//! The nfqws v1 option table.
//!
//! Contract: [`lookup`] knows every long option of nfqws/winws v1 that Veil
//! accepts or refuses by name. An option absent from the table is unknown
//! (a typo or a newer zapret) and is refused as such. Each entry says
//! whether the option takes a value, whether it is global or belongs to the
//! current profile (`--new` starts the next one), and who may set it:
//!
//! - [`OptionClass::AgentOwned`]: the agent sets it (queue, mark, user,
//!   daemon mode, capture filters, config files); a Strategy may not.
//! - [`OptionClass::Builtin`]: the built-in engine implements it.
//! - [`OptionClass::External`]: only real nfqws/winws implement it; with
//!   the built-in engine a Strategy using it is refused by name.

/// Whether an option takes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// `--flag` only.
    Flag,
    /// `--opt=value` or `--opt value`.
    Required,
    /// `--opt` or `--opt=value`.
    Optional,
}

/// Where an option applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Once per process, anywhere on the command line.
    Global,
    /// To the profile being described (`--new` starts the next profile).
    Profile,
}

/// Who may set an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionClass {
    /// Set by the agent only; refused in `Strategy.spec.zapret.args`.
    AgentOwned,
    /// Implemented by the built-in engine (and by nfqws/winws).
    Builtin,
    /// Implemented by nfqws/winws only.
    External,
}

/// One long option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionSpec {
    /// Name without the leading `--`.
    pub name: &'static str,
    pub arity: Arity,
    pub scope: Scope,
    pub class: OptionClass,
}

const fn opt(name: &'static str, arity: Arity, scope: Scope, class: OptionClass) -> OptionSpec {
    OptionSpec {
        name,
        arity,
        scope,
        class,
    }
}

use Arity::{Flag, Optional, Required};
use OptionClass::{AgentOwned, Builtin, External};
use Scope::{Global, Profile};

/// The table, sorted by name (checked by a test) for binary search.
pub static OPTIONS: &[OptionSpec] = &[
    opt("bind-fix4", Flag, Global, AgentOwned),
    opt("bind-fix6", Flag, Global, AgentOwned),
    opt("comment", Optional, Global, Builtin),
    opt("ctrack-disable", Optional, Global, AgentOwned),
    opt("ctrack-timeouts", Required, Global, AgentOwned),
    opt("daemon", Flag, Global, AgentOwned),
    opt("debug", Optional, Global, AgentOwned),
    opt("dpi-desync", Required, Profile, Builtin),
    opt("dpi-desync-any-protocol", Optional, Profile, Builtin),
    opt("dpi-desync-autottl", Optional, Profile, External),
    opt("dpi-desync-autottl6", Optional, Profile, External),
    opt("dpi-desync-badack-increment", Required, Profile, External),
    opt("dpi-desync-badseq-increment", Required, Profile, Builtin),
    opt("dpi-desync-cutoff", Required, Profile, Builtin),
    opt("dpi-desync-fake-http", Required, Profile, Builtin),
    opt("dpi-desync-fake-quic", Required, Profile, External),
    opt("dpi-desync-fake-syndata", Required, Profile, External),
    opt("dpi-desync-fake-tls", Required, Profile, Builtin),
    opt("dpi-desync-fake-tls-mod", Required, Profile, External),
    opt("dpi-desync-fake-unknown", Required, Profile, External),
    opt("dpi-desync-fake-unknown-udp", Required, Profile, External),
    opt("dpi-desync-fooling", Required, Profile, Builtin),
    opt("dpi-desync-fwmark", Required, Global, AgentOwned),
    opt("dpi-desync-repeats", Required, Profile, Builtin),
    opt("dpi-desync-split-pos", Required, Profile, Builtin),
    opt("dpi-desync-split-seqovl", Required, Profile, External),
    opt("dpi-desync-start", Required, Profile, Builtin),
    opt("dpi-desync-ttl", Required, Profile, Builtin),
    opt("dpi-desync-ttl6", Required, Profile, Builtin),
    opt("dry-run", Flag, Global, AgentOwned),
    opt("filter-l3", Required, Profile, Builtin),
    opt("filter-l7", Required, Profile, Builtin),
    opt("filter-tcp", Required, Profile, Builtin),
    opt("filter-udp", Required, Profile, Builtin),
    opt("hostlist", Required, Profile, Builtin),
    opt("hostlist-auto", Required, Profile, External),
    opt("hostlist-domains", Required, Profile, Builtin),
    opt("hostlist-exclude", Required, Profile, Builtin),
    opt("hostlist-exclude-domains", Required, Profile, Builtin),
    opt("ipcache-hostname", Optional, Global, AgentOwned),
    opt("ipcache-lifetime", Required, Global, AgentOwned),
    opt("ipset", Required, Profile, Builtin),
    opt("ipset-exclude", Required, Profile, Builtin),
    opt("ipset-exclude-ip", Required, Profile, Builtin),
    opt("ipset-ip", Required, Profile, Builtin),
    opt("new", Flag, Profile, Builtin),
    opt("nlm-filter", Required, Global, AgentOwned),
    opt("nlm-list", Optional, Global, AgentOwned),
    opt("pidfile", Required, Global, AgentOwned),
    opt("qnum", Required, Global, AgentOwned),
    opt("ssid-filter", Required, Global, AgentOwned),
    opt("uid", Required, Global, AgentOwned),
    opt("user", Required, Global, AgentOwned),
    opt("version", Flag, Global, AgentOwned),
    opt("wf-filter-lan", Required, Global, AgentOwned),
    opt("wf-iface", Required, Global, AgentOwned),
    opt("wf-l3", Required, Global, AgentOwned),
    opt("wf-raw", Required, Global, AgentOwned),
    opt("wf-raw-part", Required, Global, AgentOwned),
    opt("wf-save", Required, Global, AgentOwned),
    opt("wf-tcp", Required, Global, AgentOwned),
    opt("wf-udp", Required, Global, AgentOwned),
];

/// The entry for `name` (without `--`), or `None` for an unknown option.
pub fn lookup(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS
        .binary_search_by(|spec| spec.name.cmp(name))
        .ok()
        .map(|i| &OPTIONS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_without_duplicates() {
        for pair in OPTIONS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn agent_owned_options_are_found() {
        for name in ["qnum", "dpi-desync-fwmark", "daemon", "wf-tcp", "dry-run"] {
            assert_eq!(lookup(name).map(|s| s.class), Some(AgentOwned), "{name}");
        }
        assert_eq!(lookup("no-such-option"), None);
    }
}
