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
///
/// It lists every long option of nfqws/winws v72.x (`nfq/nfqws.c`
/// `long_options`), including the platform-specific ones: `--qnum`,
/// `--dpi-desync-fwmark`, `--bind-fix4/6` (Linux), `--port`,
/// `--dpi-desync-sockarg` (dvtws, BSD) and the `--wf-*`/`--ssid-filter`/
/// `--nlm-*` capture options (winws). Classes follow the Strategy design
/// (§1 item 4 for agent-owned options, §4b P1 for the built-in subset).
pub static OPTIONS: &[OptionSpec] = &[
    opt("bind-fix4", Flag, Global, AgentOwned),
    opt("bind-fix6", Flag, Global, AgentOwned),
    opt("comment", Optional, Global, Builtin),
    opt("ctrack-disable", Optional, Global, AgentOwned),
    opt("ctrack-timeouts", Required, Global, AgentOwned),
    opt("daemon", Flag, Global, AgentOwned),
    opt("debug", Optional, Global, AgentOwned),
    opt("domcase", Flag, Profile, External),
    opt("dpi-desync", Required, Profile, Builtin),
    opt("dpi-desync-any-protocol", Optional, Profile, Builtin),
    opt("dpi-desync-autottl", Optional, Profile, External),
    opt("dpi-desync-autottl6", Optional, Profile, External),
    opt("dpi-desync-badack-increment", Required, Profile, External),
    opt("dpi-desync-badseq-increment", Required, Profile, Builtin),
    opt("dpi-desync-cutoff", Required, Profile, Builtin),
    opt("dpi-desync-fake-dht", Required, Profile, External),
    opt("dpi-desync-fake-discord", Required, Profile, External),
    opt("dpi-desync-fake-http", Required, Profile, Builtin),
    opt("dpi-desync-fake-quic", Required, Profile, External),
    opt("dpi-desync-fake-stun", Required, Profile, External),
    opt("dpi-desync-fake-syndata", Required, Profile, External),
    opt("dpi-desync-fake-tcp-mod", Required, Profile, External),
    opt("dpi-desync-fake-tls", Required, Profile, Builtin),
    opt("dpi-desync-fake-tls-mod", Required, Profile, External),
    opt("dpi-desync-fake-unknown", Required, Profile, External),
    opt("dpi-desync-fake-unknown-udp", Required, Profile, External),
    opt("dpi-desync-fake-wireguard", Required, Profile, External),
    opt("dpi-desync-fakedsplit-mod", Required, Profile, External),
    opt("dpi-desync-fakedsplit-pattern", Required, Profile, External),
    opt("dpi-desync-fooling", Required, Profile, Builtin),
    opt("dpi-desync-fwmark", Required, Global, AgentOwned),
    opt(
        "dpi-desync-hostfakesplit-midhost",
        Required,
        Profile,
        External,
    ),
    opt("dpi-desync-hostfakesplit-mod", Required, Profile, External),
    opt("dpi-desync-ipfrag-pos-tcp", Required, Profile, External),
    opt("dpi-desync-ipfrag-pos-udp", Required, Profile, External),
    opt("dpi-desync-repeats", Required, Profile, Builtin),
    opt("dpi-desync-skip-nosni", Optional, Profile, External),
    opt("dpi-desync-sockarg", Required, Global, AgentOwned),
    opt("dpi-desync-split-http-req", Required, Profile, External),
    opt("dpi-desync-split-pos", Required, Profile, Builtin),
    opt("dpi-desync-split-seqovl", Required, Profile, External),
    opt(
        "dpi-desync-split-seqovl-pattern",
        Required,
        Profile,
        External,
    ),
    opt("dpi-desync-split-tls", Required, Profile, External),
    opt("dpi-desync-start", Required, Profile, Builtin),
    opt("dpi-desync-tcp-flags-set", Optional, Profile, External),
    opt("dpi-desync-tcp-flags-unset", Optional, Profile, External),
    opt("dpi-desync-ts-increment", Required, Profile, External),
    opt("dpi-desync-ttl", Required, Profile, Builtin),
    opt("dpi-desync-ttl6", Required, Profile, Builtin),
    opt("dpi-desync-udplen-increment", Required, Profile, External),
    opt("dpi-desync-udplen-pattern", Required, Profile, External),
    opt("dry-run", Flag, Global, AgentOwned),
    opt("dup", Required, Profile, External),
    opt("dup-autottl", Optional, Profile, External),
    opt("dup-autottl6", Optional, Profile, External),
    opt("dup-badack-increment", Required, Profile, External),
    opt("dup-badseq-increment", Required, Profile, External),
    opt("dup-cutoff", Required, Profile, External),
    opt("dup-fooling", Required, Profile, External),
    opt("dup-ip-id", Required, Profile, External),
    opt("dup-replace", Optional, Profile, External),
    opt("dup-start", Required, Profile, External),
    opt("dup-tcp-flags-set", Optional, Profile, External),
    opt("dup-tcp-flags-unset", Optional, Profile, External),
    opt("dup-ts-increment", Required, Profile, External),
    opt("dup-ttl", Required, Profile, External),
    opt("dup-ttl6", Required, Profile, External),
    opt("filter-l3", Required, Profile, Builtin),
    opt("filter-l7", Required, Profile, Builtin),
    opt("filter-ssid", Required, Profile, External),
    opt("filter-tcp", Required, Profile, Builtin),
    opt("filter-udp", Required, Profile, Builtin),
    opt("hostcase", Flag, Profile, External),
    opt("hostlist", Required, Profile, Builtin),
    opt("hostlist-auto", Required, Profile, External),
    opt("hostlist-auto-debug", Required, Global, External),
    opt("hostlist-auto-fail-threshold", Required, Profile, External),
    opt("hostlist-auto-fail-time", Required, Profile, External),
    opt(
        "hostlist-auto-retrans-threshold",
        Required,
        Profile,
        External,
    ),
    opt("hostlist-domains", Required, Profile, Builtin),
    opt("hostlist-exclude", Required, Profile, Builtin),
    opt("hostlist-exclude-domains", Required, Profile, Builtin),
    opt("hostnospace", Flag, Profile, External),
    opt("hostspell", Required, Profile, External),
    opt("ip-id", Required, Profile, External),
    opt("ipcache-hostname", Optional, Global, AgentOwned),
    opt("ipcache-lifetime", Required, Global, AgentOwned),
    opt("ipset", Required, Profile, Builtin),
    opt("ipset-exclude", Required, Profile, Builtin),
    opt("ipset-exclude-ip", Required, Profile, Builtin),
    opt("ipset-ip", Required, Profile, Builtin),
    opt("methodeol", Flag, Profile, External),
    opt("new", Flag, Profile, Builtin),
    opt("nlm-filter", Required, Global, AgentOwned),
    opt("nlm-list", Optional, Global, AgentOwned),
    opt("orig-autottl", Optional, Profile, External),
    opt("orig-autottl6", Optional, Profile, External),
    opt("orig-mod-cutoff", Required, Profile, External),
    opt("orig-mod-start", Required, Profile, External),
    opt("orig-tcp-flags-set", Optional, Profile, External),
    opt("orig-tcp-flags-unset", Optional, Profile, External),
    opt("orig-ttl", Required, Profile, External),
    opt("orig-ttl6", Required, Profile, External),
    opt("pidfile", Required, Global, AgentOwned),
    opt("port", Required, Global, AgentOwned),
    opt("qnum", Required, Global, AgentOwned),
    opt("skip", Flag, Profile, External),
    opt("ssid-filter", Required, Global, AgentOwned),
    opt("synack-split", Optional, Profile, External),
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
    opt("wsize", Required, Profile, External),
    opt("wssize", Required, Profile, External),
    opt("wssize-cutoff", Required, Profile, External),
    opt("wssize-forced-cutoff", Required, Profile, External),
];

/// The entry for `name` (without `--`), or `None` for an unknown option.
pub fn lookup(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS
        .binary_search_by(|spec| spec.name.cmp(name))
        .ok()
        .map(|i| &OPTIONS[i])
}

/// Whether `arg`, standing as a whole command-line argument (not as the
/// value of an option), names a config file: nfqws reads its options from
/// `@FILE` or `$FILE` given as the first argument (`config_from_file`, which
/// expands the text with `wordexp`). The agent passes argv directly and
/// never a config file, so a Strategy may not use one.
pub fn is_config_file_reference(arg: &str) -> bool {
    arg.len() > 1 && (arg.starts_with('@') || arg.starts_with('$'))
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
    fn table_has_every_nfqws_v72_option() {
        // nfqws v72.12 declares 124 long options across Linux, BSD and Windows.
        assert_eq!(OPTIONS.len(), 124);
        for name in [
            "dup",
            "orig-ttl",
            "wsize",
            "synack-split",
            "dpi-desync-split-seqovl-pattern",
            "hostlist-auto-debug",
            "skip",
            "filter-ssid",
            "port",
            "dpi-desync-sockarg",
        ] {
            assert!(lookup(name).is_some(), "{name}");
        }
    }

    #[test]
    fn classes_follow_the_design() {
        let cases: &[(&str, OptionClass)] = &[
            ("qnum", AgentOwned),
            ("dpi-desync-fwmark", AgentOwned),
            ("daemon", AgentOwned),
            ("pidfile", AgentOwned),
            ("user", AgentOwned),
            ("uid", AgentOwned),
            ("debug", AgentOwned),
            ("dry-run", AgentOwned),
            ("version", AgentOwned),
            ("bind-fix4", AgentOwned),
            ("bind-fix6", AgentOwned),
            ("ssid-filter", AgentOwned),
            ("new", Builtin),
            ("comment", Builtin),
            ("filter-tcp", Builtin),
            ("filter-udp", Builtin),
            ("filter-l7", Builtin),
            ("filter-l3", Builtin),
            ("hostlist", Builtin),
            ("hostlist-domains", Builtin),
            ("hostlist-exclude", Builtin),
            ("hostlist-exclude-domains", Builtin),
            ("ipset", Builtin),
            ("ipset-ip", Builtin),
            ("ipset-exclude", Builtin),
            ("ipset-exclude-ip", Builtin),
            ("dpi-desync", Builtin),
            ("dpi-desync-split-pos", Builtin),
            ("dpi-desync-ttl", Builtin),
            ("dpi-desync-ttl6", Builtin),
            ("dpi-desync-fooling", Builtin),
            ("dpi-desync-badseq-increment", Builtin),
            ("dpi-desync-repeats", Builtin),
            ("dpi-desync-fake-tls", Builtin),
            ("dpi-desync-fake-http", Builtin),
            ("dpi-desync-cutoff", Builtin),
            ("dpi-desync-start", Builtin),
            ("dpi-desync-any-protocol", Builtin),
            ("hostlist-auto", External),
            ("dpi-desync-autottl", External),
            ("dpi-desync-split-seqovl", External),
            ("dpi-desync-fake-tls-mod", External),
            ("dpi-desync-fake-quic", External),
            ("dup", External),
            ("wssize", External),
            ("skip", External),
        ];
        for &(name, class) in cases {
            assert_eq!(lookup(name).map(|s| s.class), Some(class), "{name}");
        }
    }

    #[test]
    fn capture_cache_and_network_options_are_agent_owned_by_prefix() {
        for spec in OPTIONS {
            let owned_prefix = ["wf-", "ctrack-", "ipcache-", "nlm-"]
                .iter()
                .any(|p| spec.name.starts_with(p));
            if owned_prefix {
                assert_eq!(spec.class, AgentOwned, "{}", spec.name);
                assert_eq!(spec.scope, Global, "{}", spec.name);
            }
        }
    }

    #[test]
    fn config_file_references_are_recognised() {
        let cases = [
            ("@/etc/zapret/nfqws.conf", true),
            ("$nfqws.conf", true),
            ("@", false),
            ("--qnum=200", false),
            ("fake", false),
            ("", false),
        ];
        for (arg, expected) in cases {
            assert_eq!(is_config_file_reference(arg), expected, "{arg:?}");
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
