//! The engine's command line, composed from the node's active zapret
//! profiles (design §4a.2). Pure: no file, process or clock is touched, so
//! every rule here is pinned by golden tests.
//!
//! - globals first (`--qnum=Q --dpi-desync-fwmark=0x…`), then each profile,
//!   ordered by (priority, namespace, name), joined by `--new`;
//! - `{hostlist:NAME}` / `{file:NAME}` replaced by the materialised paths;
//! - every profile that includes a hostlist file gets
//!   `--hostlist-domains=guard.veil.invalid`, every profile that includes an
//!   ipset file gets `--ipset-ip=192.0.2.0/32`, so an empty list can never
//!   turn into "every host";
//! - the fingerprint covers the profiles, not the queue (which alternates
//!   on every blue/green switch) nor the lists' contents (picked up by the
//!   engine's own reload, same pid).

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use veil_crds::wire::StrategyId;

/// Domain appended to every profile with a hostlist file: reserved
/// (`.invalid`, RFC 2606), so it never matches a real host.
pub const HOSTLIST_GUARD: &str = "--hostlist-domains=guard.veil.invalid";
/// Address appended to every profile with an ipset file: TEST-NET-1
/// (RFC 5737), never routed.
pub const IPSET_GUARD: &str = "--ipset-ip=192.0.2.0/32";

/// Why a member's arguments could not be composed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ComposeError {
    /// A `{hostlist:NAME}` or `{file:NAME}` naming nothing the member has.
    #[error(
        "args[{index}] `{arg}`: `{{{placeholder}}}` names no hostlist or file of this Strategy"
    )]
    UnknownPlaceholder {
        index: usize,
        arg: String,
        placeholder: String,
    },
}

/// One Strategy's profile(s), ready to join with the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileArgs {
    pub strategy: StrategyId,
    pub priority: i32,
    /// Placeholders replaced, guards appended; may itself hold `--new`.
    pub args: Vec<String>,
}

/// Replaces every `{hostlist:NAME}` and `{file:NAME}` in `args` by the path
/// `paths` maps it to (keys `hostlist:NAME`, `file:NAME`), then appends the
/// never-empty guards to each profile (`--new` separates profiles).
pub fn profile_args(
    args: &[String],
    paths: &BTreeMap<String, PathBuf>,
) -> Result<Vec<String>, ComposeError> {
    let mut out = Vec::with_capacity(args.len() + 2);
    for (index, arg) in args.iter().enumerate() {
        out.push(substitute(index, arg, paths)?);
    }
    Ok(with_guards(out))
}

fn substitute(
    index: usize,
    arg: &str,
    paths: &BTreeMap<String, PathBuf>,
) -> Result<String, ComposeError> {
    let mut result = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let key = &rest[start + 1..start + len];
        if !(key.starts_with("hostlist:") || key.starts_with("file:")) {
            result.push_str(&rest[..=start]);
            rest = &rest[start + 1..];
            continue;
        }
        let path = paths
            .get(key)
            .ok_or_else(|| ComposeError::UnknownPlaceholder {
                index,
                arg: arg.to_owned(),
                placeholder: key.to_owned(),
            })?;
        result.push_str(&rest[..start]);
        result.push_str(&path.to_string_lossy());
        rest = &rest[start + len + 1..];
    }
    result.push_str(rest);
    Ok(result)
}

/// Appends the guards to every profile of `args` that includes a hostlist
/// or ipset file.
fn with_guards(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len() + 2);
    let mut segment: Vec<String> = Vec::new();
    for arg in args {
        if arg == "--new" {
            close_segment(&mut out, std::mem::take(&mut segment));
            out.push(arg);
        } else {
            segment.push(arg);
        }
    }
    close_segment(&mut out, segment);
    out
}

fn close_segment(out: &mut Vec<String>, segment: Vec<String>) {
    let has = |option: &str| {
        let with_value = format!("{option}=");
        segment
            .iter()
            .any(|a| a == option || a.starts_with(&with_value))
    };
    let hostlist = has("--hostlist");
    let ipset = has("--ipset");
    out.extend(segment);
    if hostlist {
        out.push(HOSTLIST_GUARD.to_owned());
    }
    if ipset {
        out.push(IPSET_GUARD.to_owned());
    }
}

/// Sorts profiles into nfqws order: priority, then namespace, then name
/// (the first matching profile wins).
pub fn order(profiles: &mut [ProfileArgs]) {
    profiles.sort_by(|a, b| (a.priority, &a.strategy).cmp(&(b.priority, &b.strategy)));
}

/// The profiles of `profiles` (already ordered) joined by `--new`.
pub fn joined(profiles: &[ProfileArgs]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, profile) in profiles.iter().enumerate() {
        if i > 0 {
            out.push("--new".to_owned());
        }
        out.extend(profile.args.iter().cloned());
    }
    out
}

/// The process-wide options the agent owns, for NFQUEUE `queue`.
pub fn globals(queue: u16, mark: u32) -> Vec<String> {
    vec![
        format!("--qnum={queue}"),
        format!("--dpi-desync-fwmark={mark:#x}"),
    ]
}

/// The whole command line after the program (and its prefix arguments).
pub fn argv(queue: u16, mark: u32, profiles: &[String]) -> Vec<String> {
    let mut out = globals(queue, mark);
    out.extend(profiles.iter().cloned());
    out
}

/// Fingerprint of what the engine runs, excluding the queue: the engine is
/// restarted only when this changes. `engine` names the program (and its
/// prefix) so that switching implementations restarts too.
pub fn fingerprint(engine: &str, mark: u32, profiles: &[String]) -> String {
    let mut hash = Sha256::new();
    hash.update(engine.as_bytes());
    hash.update([0]);
    hash.update(mark.to_be_bytes());
    for arg in profiles {
        hash.update(arg.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
