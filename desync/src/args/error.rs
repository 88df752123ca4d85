//! Errors of the argument parser. Each names where on the command line the
//! problem is (argument index, option, profile) and what to change, so the
//! agent can put it verbatim into a Strategy's status.

use std::fmt;
use std::path::PathBuf;

use super::values::ValueError;
use crate::lists::ListError;

/// Where an error is: the 0-based index into the parsed argument list (the
/// agent's `args[i]`), the option as written (`--name`), and the 1-based
/// profile number (`--new` starts the next one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    pub index: usize,
    pub option: String,
    pub profile: usize,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "args[{}] `{}` (profile {})",
            self.index, self.option, self.profile
        )
    }
}

/// Why a command line was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// Not an nfqws v1 option at all (a typo or a newer zapret).
    #[error("{at}: unknown option; check the spelling against nfqws --help (zapret v72)")]
    UnknownOption { at: At },

    /// An option only the agent may set.
    #[error(
        "{at}: the agent sets this option itself (queue, mark, user, daemon, capture filter); remove it from the Strategy"
    )]
    ForbiddenOption { at: At },

    /// `@FILE`/`$FILE`: nfqws would read (and shell-expand) options from a file.
    #[error(
        "args[{index}] `{arg}`: config files are not allowed; write the options into args directly"
    )]
    ConfigFile { index: usize, arg: String },

    /// An argument that is not an option (nfqws would silently ignore it).
    #[error(
        "args[{index}] `{arg}`: not an option; options start with `--` (a value goes after `=` or in the next argument)"
    )]
    UnexpectedArgument { index: usize, arg: String },

    /// A real nfqws option the built-in engine does not implement.
    #[error(
        "{at}: UnsupportedOption: the built-in engine does not implement it; install nfqws (zapret.implementation: external) or remove the option"
    )]
    UnsupportedOption { at: At },

    /// A valid nfqws value outside the built-in engine's subset.
    #[error(
        "{at}: UnsupportedOption: `{value}` is not implemented by the built-in engine; install nfqws (zapret.implementation: external) or use {instead}"
    )]
    UnsupportedValue {
        at: At,
        value: String,
        /// What the built-in engine offers instead.
        instead: &'static str,
    },

    /// A value-taking option without a value.
    #[error("{at}: needs a value (`{}=VALUE`)", at.option)]
    MissingValue { at: At },

    /// A flag given a value.
    #[error("{at}: takes no value; write `{}` alone", at.option)]
    UnexpectedValue { at: At },

    /// A value nfqws would refuse.
    #[error("{at}: invalid value `{value}`: {source}")]
    InvalidValue {
        at: At,
        value: String,
        #[source]
        source: ValueError,
    },

    /// `--new` with nothing before it, twice in a row, or at the end.
    #[error(
        "args[{index}] `--new`: profile {profile} is empty; remove the extra `--new` or give the profile its options"
    )]
    EmptyProfile { index: usize, profile: usize },

    /// A Strategy profile without a port filter (capture rules come from them).
    #[error(
        "profile {profile}: needs --filter-tcp or --filter-udp (the capture rules are derived from them)"
    )]
    MissingPortFilter { profile: usize },

    /// A list or payload file that cannot be read (or is empty where it must not be).
    #[error("{at}: cannot use file {}: {reason}", path.display())]
    File {
        at: At,
        path: PathBuf,
        reason: String,
    },

    /// A host or address list file that is malformed.
    #[error("{at}: {source}")]
    List {
        at: At,
        #[source]
        source: ListError,
    },
}

impl ArgsError {
    /// A stable, CamelCase category for status `reason` fields and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ArgsError::UnknownOption { .. } => "UnknownOption",
            ArgsError::ForbiddenOption { .. } | ArgsError::ConfigFile { .. } => "ForbiddenOption",
            ArgsError::UnexpectedArgument { .. } => "UnexpectedArgument",
            ArgsError::UnsupportedOption { .. } | ArgsError::UnsupportedValue { .. } => {
                "UnsupportedOption"
            }
            ArgsError::MissingValue { .. }
            | ArgsError::UnexpectedValue { .. }
            | ArgsError::InvalidValue { .. } => "InvalidValue",
            ArgsError::EmptyProfile { .. } | ArgsError::MissingPortFilter { .. } => {
                "InvalidProfile"
            }
            ArgsError::File { .. } | ArgsError::List { .. } => "FileError",
        }
    }

    fn at(&self) -> Option<&At> {
        match self {
            ArgsError::UnknownOption { at }
            | ArgsError::ForbiddenOption { at }
            | ArgsError::UnsupportedOption { at }
            | ArgsError::UnsupportedValue { at, .. }
            | ArgsError::MissingValue { at }
            | ArgsError::UnexpectedValue { at }
            | ArgsError::InvalidValue { at, .. }
            | ArgsError::File { at, .. }
            | ArgsError::List { at, .. } => Some(at),
            ArgsError::ConfigFile { .. }
            | ArgsError::UnexpectedArgument { .. }
            | ArgsError::EmptyProfile { .. }
            | ArgsError::MissingPortFilter { .. } => None,
        }
    }

    /// The option as written (`--dpi-desync`), when the error is about one.
    pub fn option(&self) -> Option<&str> {
        match self {
            ArgsError::EmptyProfile { .. } => Some("--new"),
            _ => self.at().map(|at| at.option.as_str()),
        }
    }

    /// The 1-based profile the error is in, when it is in one.
    pub fn profile(&self) -> Option<usize> {
        match self {
            ArgsError::EmptyProfile { profile, .. } | ArgsError::MissingPortFilter { profile } => {
                Some(*profile)
            }
            _ => self.at().map(|at| at.profile),
        }
    }

    /// The 0-based argument index, when the error is about one argument.
    pub fn index(&self) -> Option<usize> {
        match self {
            ArgsError::ConfigFile { index, .. }
            | ArgsError::UnexpectedArgument { index, .. }
            | ArgsError::EmptyProfile { index, .. } => Some(*index),
            ArgsError::MissingPortFilter { .. } => None,
            _ => self.at().map(|at| at.index),
        }
    }
}
