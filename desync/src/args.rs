//! The nfqws v1 command-line parser: argv → [`Config`].
//!
//! One parser serves four callers, told apart by [`ParseMode`]: the
//! built-in engine (`veil-agent desync`), the agent's view of a profile for
//! real nfqws, `veil-crds` validating a Strategy's own `args`, and the test
//! stand-in that plays nfqws. Options are looked up in [`crate::options`];
//! `--opt=value` and `--opt value` are both accepted for options that take a
//! value (an optional value only after `=`, as with getopt). Names must be
//! exact (no getopt abbreviations, no single dash).
//!
//! It never touches the network; in [`ParseMode::Validate`] it touches no
//! file either.

mod error;
mod payload;
mod values;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use error::{ArgsError, At};
pub use payload::{FAKE_MAX_TCP, FakeSource};
pub use values::{DesyncMode, DesyncPhases, FoolingMethod, ValueError, parse_cidr};

use crate::options::{self, Arity, OptionClass, OptionSpec, Scope};
use crate::spec::{Config, L7, Profile, SplitMode};

/// Who the parse is for; decides which option classes are accepted and
/// whether files are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseMode {
    /// The built-in engine's own argv: agent-owned options it implements
    /// (`--qnum`, `--dpi-desync-fwmark`, `--dry-run`, `--debug`, `--version`)
    /// and the built-in subset; anything else real nfqws has is refused by
    /// name ("install nfqws or …"). Files are read.
    Builtin,
    /// A profile meant for real nfqws/winws: every option but the agent-owned
    /// ones; external-only ones are kept verbatim in [`Profile::external`].
    /// Files are read.
    External,
    /// A Strategy's own `args` (what `veil-crds` checks): like `External`,
    /// and every profile needs `--filter-tcp` or `--filter-udp`. No file is
    /// read: any path, including the placeholders `{hostlist:NAME}` and
    /// `{file:NAME}`, is accepted where a path goes, and payloads from files
    /// are left `None`.
    Validate,
    /// A whole nfqws process command line (the test stand-in): like
    /// `External` plus every agent-owned option; those nfqws globals Veil
    /// models go to [`crate::spec::Globals`], the rest to
    /// `Globals::agent_owned`. Files are read.
    Process,
}

impl ParseMode {
    fn reads_files(self) -> bool {
        self != ParseMode::Validate
    }
}

/// Agent-owned options the built-in engine implements.
const BUILTIN_GLOBALS: &[&str] = &["qnum", "dpi-desync-fwmark", "dry-run", "debug", "version"];

/// What the built-in engine offers instead of an unsupported desync mode.
const BUILTIN_MODES: &str =
    "fake, multisplit, multidisorder, fakedsplit, fakeddisorder or fake,<split mode>";

/// Parses `argv` (the arguments after the program name).
///
/// Errors name the argument index, the option, the profile and what to
/// change; the first error found is returned.
pub fn parse(argv: &[String], mode: ParseMode) -> Result<Config, ArgsError> {
    let mut parser = Parser::new(mode);
    let mut i = 0;
    while i < argv.len() {
        let index = i;
        let arg = argv[i].as_str();
        if options::is_config_file_reference(arg) {
            return Err(ArgsError::ConfigFile {
                index,
                arg: arg.to_owned(),
            });
        }
        let Some(body) = arg.strip_prefix("--") else {
            return Err(ArgsError::UnexpectedArgument {
                index,
                arg: arg.to_owned(),
            });
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let at = At {
            index,
            option: format!("--{name}"),
            profile: parser.number(),
        };
        let Some(spec) = options::lookup(name) else {
            return Err(ArgsError::UnknownOption { at });
        };
        let value = match (spec.arity, inline) {
            (Arity::Flag, Some(_)) => return Err(ArgsError::UnexpectedValue { at }),
            (Arity::Flag, None) => None,
            (Arity::Optional, value) => value,
            (Arity::Required, Some(value)) => Some(value),
            (Arity::Required, None) => match argv.get(i + 1) {
                Some(next) if !next.starts_with("--") => {
                    i += 1;
                    Some(next.as_str())
                }
                _ => return Err(ArgsError::MissingValue { at }),
            },
        };
        parser.option(spec, value, at)?;
        i += 1;
    }
    parser.finish()
}

/// `--name` or `--name=value`, the form kept in `external`/`agent_owned`.
fn verbatim(spec: &OptionSpec, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("--{}={v}", spec.name),
        None => format!("--{}", spec.name),
    }
}

/// The profile being built and what has been said about it so far.
#[derive(Default)]
struct Draft {
    profile: Profile,
    /// Any profile option given (an empty profile is an error).
    touched: bool,
    /// `--dpi-desync-split-pos` given (replaces the default `2`, then appends).
    split_pos_given: bool,
    /// `--dpi-desync-fake-tls` / `-http` given.
    fake_tls_given: bool,
    fake_http_given: bool,
}

struct Parser {
    mode: ParseMode,
    config: Config,
    draft: Draft,
    /// Index of the last `--new`, for an empty trailing profile.
    last_new: Option<usize>,
}

impl Parser {
    fn new(mode: ParseMode) -> Parser {
        let mut draft = Draft::default();
        draft.profile.number = 1;
        Parser {
            mode,
            config: Config::default(),
            draft,
            last_new: None,
        }
    }

    fn number(&self) -> usize {
        self.draft.profile.number
    }

    fn option(&mut self, spec: &OptionSpec, value: Option<&str>, at: At) -> Result<(), ArgsError> {
        match spec.class {
            OptionClass::AgentOwned => return self.agent_owned(spec, value, at),
            OptionClass::External if self.mode == ParseMode::Builtin => {
                return Err(ArgsError::UnsupportedOption { at });
            }
            OptionClass::External => {
                self.draft.touched |= spec.scope == Scope::Profile;
                self.draft.profile.external.push(verbatim(spec, value));
                return Ok(());
            }
            OptionClass::Builtin => {}
        }
        match spec.name {
            "new" => return self.new_profile(at.index),
            "comment" => return Ok(()),
            _ => {}
        }
        self.draft.touched = true;
        let value = value.unwrap_or_default();
        self.profile_option(spec, value)
            .map_err(|e| e.into_args_error(at, value))
    }

    fn agent_owned(
        &mut self,
        spec: &OptionSpec,
        value: Option<&str>,
        at: At,
    ) -> Result<(), ArgsError> {
        let builtin_known = BUILTIN_GLOBALS.contains(&spec.name);
        match self.mode {
            ParseMode::Validate | ParseMode::External => {
                return Err(ArgsError::ForbiddenOption { at });
            }
            ParseMode::Builtin if !builtin_known => {
                return Err(ArgsError::UnsupportedOption { at });
            }
            ParseMode::Builtin | ParseMode::Process => {}
        }
        let invalid = |source| ArgsError::InvalidValue {
            at: at.clone(),
            value: value.unwrap_or_default().to_owned(),
            source,
        };
        let globals = &mut self.config.globals;
        match spec.name {
            "qnum" => {
                let q = values::parse_range(value.unwrap_or_default(), 0, u32::from(u16::MAX))
                    .map_err(invalid)?;
                globals.qnum = u16::try_from(q).unwrap_or(u16::MAX);
            }
            "dpi-desync-fwmark" => {
                globals.fwmark =
                    values::parse_fwmark(value.unwrap_or_default()).map_err(invalid)?;
            }
            "dry-run" => globals.dry_run = true,
            "debug" => globals.debug = value != Some("0"),
            "version" => globals.version = true,
            _ => globals.agent_owned.push(verbatim(spec, value)),
        }
        Ok(())
    }

    fn new_profile(&mut self, index: usize) -> Result<(), ArgsError> {
        if !self.draft.touched {
            return Err(ArgsError::EmptyProfile {
                index,
                profile: self.number(),
            });
        }
        let next = Draft {
            profile: Profile {
                number: self.number() + 1,
                ..Profile::default()
            },
            ..Draft::default()
        };
        let done = std::mem::replace(&mut self.draft, next);
        self.config.profiles.push(done.profile);
        self.last_new = Some(index);
        Ok(())
    }

    fn finish(mut self) -> Result<Config, ArgsError> {
        if let Some(index) = self.last_new
            && !self.draft.touched
        {
            return Err(ArgsError::EmptyProfile {
                index,
                profile: self.number(),
            });
        }
        self.config.profiles.push(self.draft.profile);
        if self.mode == ParseMode::Validate
            && let Some(p) = self
                .config
                .profiles
                .iter()
                .find(|p| p.tcp.is_none() && p.udp.is_none())
        {
            return Err(ArgsError::MissingPortFilter { profile: p.number });
        }
        Ok(self.config)
    }

    /// A built-in profile option with its value (`""` for a flag).
    fn profile_option(&mut self, spec: &OptionSpec, value: &str) -> Result<(), Refusal> {
        let mode = self.mode;
        let draft = &mut self.draft;
        let p = &mut draft.profile;
        match spec.name {
            "filter-l3" => p.l3 = values::parse_l3(value)?,
            "filter-l7" => {
                p.l7 = values::parse_l7(value)?;
                let recognised = [L7::Http, L7::Tls, L7::Quic];
                if p.l7.iter().any(|l| !recognised.contains(l)) {
                    if mode == ParseMode::Builtin {
                        return Err(Refusal::Unsupported {
                            instead: "http, tls and/or quic (the protocols it recognises)",
                        });
                    }
                    p.external.push(verbatim(spec, Some(value)));
                }
            }
            "filter-tcp" => merge_ports(&mut p.tcp, values::parse_ports(value)?)?,
            "filter-udp" => merge_ports(&mut p.udp, values::parse_ports(value)?)?,
            "hostlist" => p.hosts.include_files.push(list_path(mode, value)?),
            "hostlist-exclude" => p.hosts.exclude_files.push(list_path(mode, value)?),
            "ipset" => p.ips.include_files.push(list_path(mode, value)?),
            "ipset-exclude" => p.ips.exclude_files.push(list_path(mode, value)?),
            "hostlist-domains" => p
                .hosts
                .include_domains
                .extend(values::parse_domain_list(value)?),
            "hostlist-exclude-domains" => p
                .hosts
                .exclude_domains
                .extend(values::parse_domain_list(value)?),
            "ipset-ip" => p.ips.include.extend(values::parse_cidr_list(value)?),
            "ipset-exclude-ip" => p.ips.exclude.extend(values::parse_cidr_list(value)?),
            "dpi-desync" => desync_modes(mode, p, spec, value)?,
            "dpi-desync-split-pos" => {
                let list = values::parse_split_pos_list(value)?;
                if !draft.split_pos_given {
                    p.desync.split_pos.clear();
                    draft.split_pos_given = true;
                }
                p.desync.split_pos.extend(list);
                if p.desync.split_pos.len() > values::MAX_SPLIT_POS {
                    return Err(ValueError::TooManySplitPos {
                        max: values::MAX_SPLIT_POS,
                    }
                    .into());
                }
            }
            "dpi-desync-ttl" => p.desync.ttl = Some(values::parse_ttl(value)?),
            "dpi-desync-ttl6" => p.desync.ttl6 = Some(values::parse_ttl(value)?),
            "dpi-desync-fooling" => fooling(mode, p, spec, value)?,
            "dpi-desync-badseq-increment" => {
                p.desync.badseq_increment = values::parse_signed32(value)?
            }
            "dpi-desync-repeats" => p.desync.repeats = values::parse_range(value, 1, 1024)?,
            "dpi-desync-cutoff" => p.desync.cutoff = Some(values::parse_limit(value)?),
            "dpi-desync-start" => p.desync.start = Some(values::parse_limit(value)?),
            "dpi-desync-any-protocol" => {
                let given = (!value.is_empty()).then_some(value);
                p.desync.any_protocol = values::parse_bool01(given)?
            }
            "dpi-desync-fake-tls" => fake_payload(mode, p, spec, value, &mut draft.fake_tls_given)?,
            "dpi-desync-fake-http" => {
                fake_payload(mode, p, spec, value, &mut draft.fake_http_given)?
            }
            // A Builtin option without a handler is a table/parser mismatch;
            // refuse it rather than silently ignore it.
            _ => {
                return Err(Refusal::Unsupported {
                    instead: "real nfqws",
                });
            }
        }
        Ok(())
    }
}

/// Why a built-in option's value was refused, before the location is added.
enum Refusal {
    Invalid(ValueError),
    Unsupported { instead: &'static str },
    File { path: PathBuf, reason: String },
}

impl From<ValueError> for Refusal {
    fn from(e: ValueError) -> Self {
        Refusal::Invalid(e)
    }
}

impl Refusal {
    fn into_args_error(self, at: At, value: &str) -> ArgsError {
        match self {
            Refusal::Invalid(source) => ArgsError::InvalidValue {
                at,
                value: value.to_owned(),
                source,
            },
            Refusal::Unsupported { instead } => ArgsError::UnsupportedValue {
                value: format!("{}={value}", at.option),
                at,
                instead,
            },
            Refusal::File { path, reason } => ArgsError::File { at, path, reason },
        }
    }
}

fn merge_ports(
    slot: &mut Option<crate::spec::PortFilter>,
    new: crate::spec::PortFilter,
) -> Result<(), ValueError> {
    match slot {
        None => *slot = Some(new),
        Some(old) => {
            if old.negate || new.negate {
                return Err(ValueError::NegatedList);
            }
            old.ranges.extend(new.ranges);
        }
    }
    Ok(())
}

/// A hostlist/ipset path: must name a readable regular file when files are
/// read (an empty list file is fine here; the agent guards against those).
fn list_path(mode: ParseMode, value: &str) -> Result<PathBuf, Refusal> {
    if value.is_empty() {
        return Err(ValueError::Empty.into());
    }
    let path = PathBuf::from(value);
    if mode.reads_files() {
        let fail = |reason: String| Refusal::File {
            path: path.clone(),
            reason,
        };
        let meta = std::fs::metadata(&path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        if !meta.is_file() {
            return Err(fail("not a regular file".to_owned()));
        }
        std::fs::File::open(&path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    }
    Ok(path)
}

fn desync_modes(
    mode: ParseMode,
    p: &mut Profile,
    spec: &OptionSpec,
    value: &str,
) -> Result<(), Refusal> {
    let phases = values::parse_desync(value)?;
    let split = phases.second.and_then(split_mode);
    let in_subset = phases.zero.is_none()
        && matches!(phases.first, None | Some(DesyncMode::Fake))
        && (phases.second.is_none() || split.is_some());
    if !in_subset {
        if mode == ParseMode::Builtin {
            return Err(Refusal::Unsupported {
                instead: BUILTIN_MODES,
            });
        }
        p.external.push(verbatim(spec, Some(value)));
    }
    p.desync.fake = phases.first == Some(DesyncMode::Fake);
    p.desync.split = split;
    Ok(())
}

fn split_mode(mode: DesyncMode) -> Option<SplitMode> {
    Some(match mode {
        DesyncMode::Multisplit => SplitMode::Multisplit,
        DesyncMode::Multidisorder => SplitMode::Multidisorder,
        DesyncMode::FakedSplit => SplitMode::Fakedsplit,
        DesyncMode::FakedDisorder => SplitMode::Fakeddisorder,
        _ => return None,
    })
}

fn fooling(
    mode: ParseMode,
    p: &mut Profile,
    spec: &OptionSpec,
    value: &str,
) -> Result<(), Refusal> {
    let methods = values::parse_fooling(value)?;
    let mut outside = false;
    for m in methods {
        match m {
            FoolingMethod::BadSum => p.desync.fooling.badsum = true,
            FoolingMethod::BadSeq => p.desync.fooling.badseq = true,
            _ => outside = true,
        }
    }
    if outside {
        if mode == ParseMode::Builtin {
            return Err(Refusal::Unsupported {
                instead: "badsum and/or badseq",
            });
        }
        p.external.push(verbatim(spec, Some(value)));
    }
    Ok(())
}

/// A fake payload: `None` = the built-in default (`!`), or a file not read
/// in [`ParseMode::Validate`]. Outside `Builtin`, a second fake of the same
/// kind in one profile (nfqws sends each) or one with `+OFFSET` is checked
/// and then kept verbatim in `external`, leaving the field as it was.
fn fake_payload(
    mode: ParseMode,
    p: &mut Profile,
    spec: &OptionSpec,
    value: &str,
    given: &mut bool,
) -> Result<(), Refusal> {
    let source = payload::parse_fake(value, spec.name == "dpi-desync-fake-tls")?;
    let offset = match &source {
        FakeSource::Default { offset } | FakeSource::File { offset, .. } => *offset,
        FakeSource::Hex(_) => 0,
    };
    let opaque = *given || offset != 0;
    if mode == ParseMode::Builtin && opaque {
        return Err(Refusal::Unsupported {
            instead: "one fake per protocol and profile, without +OFFSET",
        });
    }
    *given = true;
    let data = match source {
        FakeSource::Default { .. } => None,
        FakeSource::Hex(bytes) => Some(bytes),
        FakeSource::File { path, offset } if mode.reads_files() => Some(
            payload::load_fake_file(&path, offset)
                .map_err(|reason| Refusal::File { path, reason })?,
        ),
        FakeSource::File { .. } => None,
    };
    if opaque {
        p.external.push(verbatim(spec, Some(value)));
    } else if spec.name == "dpi-desync-fake-tls" {
        p.desync.fake_tls = data;
    } else {
        p.desync.fake_http = data;
    }
    Ok(())
}

/// Whether the profile can run on the built-in engine as parsed (nothing
/// was kept for real nfqws only).
pub fn builtin_compatible(profile: &Profile) -> bool {
    profile.external.is_empty()
}
