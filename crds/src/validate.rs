//! "Parse, don't validate": newtypes that can only hold valid values.
//!
//! Every type here deserializes from the plain string or number a person
//! writes, refuses anything else with a message that says what is wrong *and*
//! what to write instead, and describes itself to schemars as a plain
//! `string`/`integer` (with `pattern`, `format`, `minimum`, `maximum` where they
//! help `kubectl explain` and the API server). Once a spec deserialized, its
//! fields are valid; cross-field rules that serde cannot express live in each
//! spec's `validate()`, which reports [`FieldError`]s.
//!
//! Messages never echo values that may be secret (VLESS ids).

use std::fmt;

mod cidr;
mod cron;
mod lists;
mod names;
mod net;
mod numbers;
mod time;

pub use cidr::Cidr;
pub use cron::CronSchedule;
pub use lists::{ArgList, MAX_ARG_BYTES, MAX_ARGS};
pub use names::{DnsLabel, DnsName, LabelKey, LabelValue, XrayEmail};
pub use net::{HttpUrl, Port, VlessId};
pub use numbers::ByteSize;
pub use time::{Duration, Rfc3339, TimeZone};

/// Why a value was refused: what is wrong, and what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{problem}; {fix}")]
pub struct InvalidValue {
    /// What is wrong with the value (never the secret value itself).
    pub problem: String,
    /// What to write instead, with an example.
    pub fix: String,
}

impl InvalidValue {
    /// Builds an error from its two halves.
    pub fn new(problem: impl Into<String>, fix: impl Into<String>) -> InvalidValue {
        InvalidValue {
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// A cross-field rule broken in a spec: where (`spec.task.shell`) and what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Field path from the object root, e.g. `spec.schedule`.
    pub path: String,
    /// What is wrong and what to change.
    pub message: String,
}

impl FieldError {
    /// Builds an error for `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects [`FieldError`]s while a spec checks its cross-field rules.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// Records one error.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    /// Appends errors found by a nested check.
    pub fn extend(&mut self, errors: Vec<FieldError>) {
        self.0.extend(errors);
    }

    /// `Ok` when nothing was recorded.
    pub fn into_result(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// Implements `Deserialize` (from a string, so that YAML reports the value's own
/// line and column), `Serialize`, `Display`, `FromStr`, `TryFrom<String>` and a
/// plain-string `JsonSchema` for a newtype with `fn parse(&str) -> Result<Self, InvalidValue>`
/// and `fn as_str(&self) -> &str`.
macro_rules! string_newtype {
    ($ty:ident, expecting = $expecting:literal, schema = $schema:tt) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        $ty::parse(v).map_err(E::custom)
                    }
                }
                de.deserialize_str(V)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::validate::InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::parse(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = $crate::validate::InvalidValue;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $ty::parse(&s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($schema)
            }
        }
    };
}
pub(crate) use string_newtype;
