//! The closed set of kinds Veil reads, and the names people use for them.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::printer::PrinterColumn;

/// A kind Veil reads from a source: the seven `veil.dev` kinds plus core `v1/Secret`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    VeilNode,
    ProtocolServer,
    VlessKey,
    Strategy,
    Runner,
    Schedule,
    TaskRun,
    Secret,
}

impl Kind {
    /// The seven `veil.dev/v1alpha1` kinds, in the order CRDs are printed.
    pub const VEIL: [Kind; 7] = [
        Kind::VeilNode,
        Kind::ProtocolServer,
        Kind::VlessKey,
        Kind::Strategy,
        Kind::Runner,
        Kind::Schedule,
        Kind::TaskRun,
    ];

    /// Every kind, Veil's first, then `Secret`.
    pub const ALL: [Kind; 8] = [
        Kind::VeilNode,
        Kind::ProtocolServer,
        Kind::VlessKey,
        Kind::Strategy,
        Kind::Runner,
        Kind::Schedule,
        Kind::TaskRun,
        Kind::Secret,
    ];

    /// The `kind` field as written in YAML (`VlessKey`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VeilNode => "VeilNode",
            Kind::ProtocolServer => "ProtocolServer",
            Kind::VlessKey => "VlessKey",
            Kind::Strategy => "Strategy",
            Kind::Runner => "Runner",
            Kind::Schedule => "Schedule",
            Kind::TaskRun => "TaskRun",
            Kind::Secret => "Secret",
        }
    }

    /// `apiVersion` of this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Secret => "v1",
            _ => crate::API_VERSION,
        }
    }

    /// Lower-case plural resource name (`vlesskeys`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::VeilNode => "veilnodes",
            Kind::ProtocolServer => "protocolservers",
            Kind::VlessKey => "vlesskeys",
            Kind::Strategy => "strategies",
            Kind::Runner => "runners",
            Kind::Schedule => "schedules",
            Kind::TaskRun => "taskruns",
            Kind::Secret => "secrets",
        }
    }

    /// Short names, as `kubectl get vk` accepts them.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::VeilNode => &["vn"],
            Kind::ProtocolServer => &["ps"],
            Kind::VlessKey => &["vk"],
            Kind::Strategy => &["strat"],
            Kind::Runner => &["rn"],
            Kind::Schedule => &["sched"],
            Kind::TaskRun => &["tr"],
            Kind::Secret => &[],
        }
    }

    /// Whether objects of this kind live in a namespace (`VeilNode` does not).
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::VeilNode)
    }

    /// Finds a kind from what a person types after `get`: the kind, its
    /// singular, plural or short name, case-insensitively, optionally
    /// qualified with the group (`vlesskeys.veil.dev`).
    pub fn from_cli_name(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        let bare = lower
            .strip_suffix(".veil.dev")
            .or_else(|| lower.strip_suffix(".v1alpha1.veil.dev"))
            .unwrap_or(&lower);
        Kind::ALL.into_iter().find(|kind| {
            bare == kind.as_str().to_ascii_lowercase()
                || bare == kind.plural()
                || kind.short_names().contains(&bare)
        })
    }

    /// Finds a kind from a document's `apiVersion` and `kind`.
    pub fn from_type_meta(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.as_str() == kind)
    }

    /// Printer columns (`kubectl get` and `veil-operator get`), without `NAME`/`NAMESPACE`.
    pub fn printer_columns(self) -> &'static [PrinterColumn] {
        crate::printer::columns(self)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
