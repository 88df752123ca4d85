//! `VlessKey`: one VLESS user on one `vless` `ProtocolServer`.
//!
//! The id is a credential: it is generated when absent (and kept in the
//! store), written with the `vless://` link only into the Secret named in
//! `status.credentialsSecret`, and never shown in status or logs.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, NodeWorkloadStatus, default_true, impl_object_status, is_true};
use crate::protocol_server::VlessFlow;
use crate::validate::{
    ByteSize, DnsName, FieldError, FieldErrors, Rfc3339, TimeZone, VlessId, XrayEmail,
};

/// One VLESS user on a `vless` ProtocolServer.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "veil.dev",
    version = "v1alpha1",
    kind = "VlessKey",
    doc = "One VLESS user on a vless ProtocolServer, with optional expiry and traffic limit. The id and vless:// link live only in the Secret named in status.credentialsSecret.",
    plural = "vlesskeys",
    shortname = "vk",
    category = "veil",
    namespaced,
    status = "VlessKeyStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VlessKeySpec {
    /// The `ProtocolServer` (with `protocol: vless`, same namespace) this user belongs to.
    pub server_ref: ServerRef,
    /// The user's UUID (e.g. from `uuidgen`). Default: generated once and kept
    /// stable. A credential: never shown in status or logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<VlessId>,
    /// The key xray knows the user by; unique per server. Any text without
    /// whitespace or `>>>`. Default: `<namespace>.<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<XrayEmail>,
    /// VLESS flow for this user. Default: the server's `vless.flow` (`xtls-rprx-vision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::optional_enum_schema::<VlessFlow>")]
    pub flow: Option<VlessFlow>,
    /// `false` removes the user from xray and closes its open connections,
    /// keeping the key and its traffic counters. Default: `true`.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// When the key stops working (RFC 3339, e.g. `2026-12-31T23:59:59Z`). Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Rfc3339>,
    /// Uplink+downlink bytes allowed per reset period; the key becomes
    /// `LimitExceeded` when it is used up (e.g. `107374182400` for 100 GiB).
    /// Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_limit_bytes: Option<ByteSize>,
    /// When the traffic counter for the limit starts again: `never`, `daily`,
    /// `weekly` (Mondays) or `monthly` (the 1st), at 00:00 in `timeZone`. Default: `never`.
    #[serde(default, skip_serializing_if = "TrafficResetPeriod::is_never")]
    pub traffic_reset_period: TrafficResetPeriod,
    /// IANA time zone for reset periods (e.g. `Europe/Moscow`). Default: `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZone>,
}

/// A reference to a `ProtocolServer` in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerRef {
    /// Name of the ProtocolServer (e.g. `edge-vless`).
    pub name: DnsName,
}

/// When a key's traffic counter (for `trafficLimitBytes`) starts again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrafficResetPeriod {
    /// The limit covers the key's whole life.
    #[default]
    Never,
    /// Every day at 00:00.
    Daily,
    /// Every Monday at 00:00.
    Weekly,
    /// On the 1st of every month at 00:00.
    Monthly,
}

impl TrafficResetPeriod {
    fn is_never(&self) -> bool {
        *self == TrafficResetPeriod::Never
    }
}

impl VlessKeySpec {
    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = FieldErrors::default();
        if self.traffic_reset_period != TrafficResetPeriod::Never
            && self.traffic_limit_bytes.is_none()
        {
            errors.push(
                "spec.trafficResetPeriod",
                "a reset period without `trafficLimitBytes` has no effect; set a limit or remove the period",
            );
        }
        errors.into_result()
    }
}

/// Lifecycle of a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VlessKeyPhase {
    /// Not yet applied on the server's nodes.
    #[default]
    Pending,
    /// Applied; the user can connect.
    Active,
    /// `enabled: false`; the user is removed from xray.
    Disabled,
    /// Past `expiresAt`; the user is removed from xray.
    Expired,
    /// `trafficLimitBytes` used up in this period; the user is removed until the next reset.
    LimitExceeded,
    /// Cannot be applied (server missing, duplicate email, …); see the `Ready` condition.
    Error,
}

impl VlessKeyPhase {
    /// The phase as it reads in a status (its serialized name).
    pub fn as_str(self) -> &'static str {
        match self {
            VlessKeyPhase::Pending => "Pending",
            VlessKeyPhase::Active => "Active",
            VlessKeyPhase::Disabled => "Disabled",
            VlessKeyPhase::Expired => "Expired",
            VlessKeyPhase::LimitExceeded => "LimitExceeded",
            VlessKeyPhase::Error => "Error",
        }
    }
}

/// Observed state of a key. Never contains the id or the link.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VlessKeyStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `Pending`, `Active`, `Disabled`, `Expired`, `LimitExceeded` or `Error`.
    #[serde(default)]
    pub phase: VlessKeyPhase,
    /// The user key in effect (spec `email` or the default `<namespace>.<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The first 8 characters of the id, to tell keys apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_prefix: Option<String>,
    /// Bytes sent by the client in the current period.
    #[serde(default)]
    pub uplink_bytes: u64,
    /// Bytes received by the client in the current period.
    #[serde(default)]
    pub downlink_bytes: u64,
    /// `uplinkBytes + downlinkBytes`, the figure `trafficLimitBytes` is compared with.
    #[serde(default)]
    pub traffic_bytes: u64,
    /// Start of the current traffic period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start: Option<Rfc3339>,
    /// When traffic from this user was last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Rfc3339>,
    /// Name of the Secret (same namespace) holding the id and the `vless://` link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Whether the user is applied on each of the server's nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeWorkloadStatus>,
}

impl_object_status!(VlessKeyStatus);

#[cfg(test)]
mod tests {
    use super::VlessKeyPhase;

    #[test]
    fn a_phase_reads_as_it_serializes() {
        for phase in [
            VlessKeyPhase::Pending,
            VlessKeyPhase::Active,
            VlessKeyPhase::Disabled,
            VlessKeyPhase::Expired,
            VlessKeyPhase::LimitExceeded,
            VlessKeyPhase::Error,
        ] {
            assert_eq!(
                serde_json::to_value(phase).unwrap(),
                phase.as_str(),
                "{phase:?}"
            );
        }
    }
}
