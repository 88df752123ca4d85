//! `protocol: vless` settings: xray with one VLESS inbound secured by Reality.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::fence;
use crate::common::SecretKeyRef;
use crate::validate::{Cidr, Duration, FieldErrors};

/// xray VLESS+Reality inbound settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VlessServer {
    /// Reality (TLS camouflage) settings.
    pub reality: Reality,
    /// Default flow for users that set none. Default: `xtls-rprx-vision`.
    #[serde(default)]
    pub flow: VlessFlow,
    /// Host name or IP address put into client links (`vless://id@HOST:port`).
    /// Default: each node's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<String>,
    /// xray connection policy (timeouts, buffer); the defaults of xray apply
    /// where unset. Tune for mobile clients, e.g. `{handshake: 4s, connIdle: 300s, uplinkOnly: 2s, downlinkOnly: 5s}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<XrayPolicy>,
}

impl VlessServer {
    /// Checks the settings; `allow` is the server's `spec.allowCidrs`.
    pub(crate) fn validate(&self, path: &str, allow: &[Cidr], errors: &mut FieldErrors) {
        self.reality
            .validate(&format!("{path}.reality"), allow, errors);
        if let Some(address) = &self.public_address
            && (address.is_empty()
                || address.contains(char::is_whitespace)
                || address.contains('/'))
        {
            errors.push(
                format!("{path}.publicAddress"),
                format!("`{address}` is not a host name or IP address; write e.g. `vpn.example.com` or `203.0.113.7`"),
            );
        }
        if let Some(policy) = &self.policy {
            policy.validate(&format!("{path}.policy"), errors);
        }
    }
}

/// Reality settings of the inbound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reality {
    /// Secret key holding the x25519 private key (base64url, as `xray x25519`
    /// prints it). Default: a key pair is generated and kept in a Secret the
    /// operator owns (`<server>-reality`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_secret_ref: Option<SecretKeyRef>,
    /// Real TLS site Reality borrows its handshake from, `host:port`
    /// (e.g. `www.microsoft.com:443`).
    pub dest: String,
    /// SNI names clients may use; the first one goes into links (e.g. `[www.microsoft.com]`).
    pub server_names: Vec<String>,
    /// Short ids clients may use: hex strings of even length up to 16 characters
    /// (e.g. `["", "6ba85179e30d4fc2"]`). Default: `[""]`.
    #[serde(default = "default_short_ids")]
    pub short_ids: Vec<String>,
    /// uTLS fingerprint clients imitate, written into links. Default: `chrome`.
    #[serde(default)]
    pub fingerprint: Fingerprint,
}

fn default_short_ids() -> Vec<String> {
    vec![String::new()]
}

impl Reality {
    fn validate(&self, path: &str, allow: &[Cidr], errors: &mut FieldErrors) {
        let host = self.dest.rsplit_once(':').and_then(|(host, port)| {
            (!host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)).then_some(host)
        });
        match host {
            None => errors.push(
                format!("{path}.dest"),
                format!(
                    "`{}` is not `host:port`; write e.g. `www.microsoft.com:443`",
                    self.dest
                ),
            ),
            Some(host) => {
                if let Some(fenced) = fence::fenced_destination(host, allow) {
                    errors.push(
                        format!("{path}.dest"),
                        format!(
                            "`{}` is fenced off ({}: {}): Reality forwards every connection that is not a VLESS client there, so anyone could reach it; use a public TLS site such as `www.microsoft.com:443`, or list the address in `spec.allowCidrs` (e.g. `{}`) if exposing it is intended",
                            self.dest,
                            fenced.address,
                            fenced.what,
                            host_cidr(fenced.address)
                        ),
                    );
                }
            }
        }
        if self.server_names.is_empty() {
            errors.push(
                format!("{path}.serverNames"),
                "at least one server name is needed; write e.g. `[www.microsoft.com]`",
            );
        }
        for (i, name) in self.server_names.iter().enumerate() {
            if crate::validate::DnsName::parse(name).is_err() {
                errors.push(
                    format!("{path}.serverNames[{i}]"),
                    format!(
                        "`{name}` is not a lower-case DNS name; write e.g. `www.microsoft.com`"
                    ),
                );
            }
        }
        for (i, id) in self.short_ids.iter().enumerate() {
            if id.len() > 16 || id.len() % 2 != 0 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                errors.push(
                    format!("{path}.shortIds[{i}]"),
                    format!("`{id}` is not a short id; write an even number (0–16) of hex digits, e.g. `6ba85179e30d4fc2`"),
                );
            }
        }
    }
}

/// The single-address range of `ip` (`127.0.0.1/32`, `::1/128`).
fn host_cidr(ip: std::net::IpAddr) -> String {
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    format!("{ip}/{bits}")
}

/// VLESS flow (xtls) of a user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VlessFlow {
    /// XTLS Vision: the recommended flow for TCP+Reality.
    #[default]
    #[serde(rename = "xtls-rprx-vision")]
    XtlsRprxVision,
    /// No flow (plain VLESS); only for clients without Vision support.
    #[serde(rename = "none")]
    None,
}

impl VlessFlow {
    /// The flow as specs and `vless://` links spell it (`none` for none).
    pub fn as_str(self) -> &'static str {
        match self {
            VlessFlow::XtlsRprxVision => "xtls-rprx-vision",
            VlessFlow::None => "none",
        }
    }

    /// The flow as xray's VLESS accounts spell it (`""` for none).
    pub fn xray_name(self) -> &'static str {
        match self {
            VlessFlow::XtlsRprxVision => "xtls-rprx-vision",
            VlessFlow::None => "",
        }
    }
}

/// uTLS fingerprint that clients imitate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Fingerprint {
    /// Google Chrome.
    #[default]
    Chrome,
    /// Mozilla Firefox.
    Firefox,
    /// Apple Safari.
    Safari,
    /// iOS system TLS.
    Ios,
    /// Android system TLS.
    Android,
    /// Microsoft Edge.
    Edge,
    /// A random browser fingerprint per connection.
    Random,
    /// A randomised fingerprint.
    Randomized,
}

/// xray `policy.levels.0` settings. Durations are whole seconds in xray.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct XrayPolicy {
    /// Time allowed for a connection's handshake (xray default `4s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake: Option<Duration>,
    /// Idle time after which a connection is closed (xray default `300s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_idle: Option<Duration>,
    /// Time a connection stays open after the downlink closed (xray default `2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_only: Option<Duration>,
    /// Time a connection stays open after the uplink closed (xray default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downlink_only: Option<Duration>,
    /// Per-connection buffer in KiB (xray default depends on the platform; `4` suits mobile clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_size: Option<u32>,
}

impl XrayPolicy {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let fields = [
            ("handshake", &self.handshake),
            ("connIdle", &self.conn_idle),
            ("uplinkOnly", &self.uplink_only),
            ("downlinkOnly", &self.downlink_only),
        ];
        for (name, value) in fields {
            if let Some(d) = value
                && d.as_std().subsec_millis() != 0
            {
                errors.push(
                    format!("{path}.{name}"),
                    format!(
                        "xray counts this in whole seconds; write e.g. `{}s` instead of `{}`",
                        d.as_std().as_secs().max(1),
                        d
                    ),
                );
            }
        }
    }
}
