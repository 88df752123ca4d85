//! Engine settings: zapret arguments with materialised hostlists/files, or a
//! VLESS client proxy.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ConfigMapKeyRef, SecretKeyRef};
use crate::validate::{ArgList, DnsLabel, DnsName, FieldErrors, Port};

/// zapret (winws/nfqws) settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZapretEngine {
    /// Arguments of this strategy's profile, one per entry, no shell (e.g.
    /// `["--filter-tcp=443", "--hostlist={hostlist:ru}", "--dpi-desync=fake"]`).
    /// `{hostlist:NAME}` and `{file:NAME}` are replaced by paths of the files
    /// the agent writes from `hostlists` and `files`.
    pub args: ArgList,
    /// Argument dialect: `v1` (zapret) or `v2` (zapret2). Default: `v1`.
    #[serde(default)]
    pub syntax: ZapretSyntax,
    /// Domain lists the arguments refer to as `{hostlist:NAME}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostlists: Vec<HostList>,
    /// Other files (fake payloads, ip sets) referred to as `{file:NAME}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSource>,
    /// Order of this strategy's profile in the node's engine: lower first
    /// (nfqws takes the first profile that matches a connection); ties are
    /// ordered by namespace, then name. Default: `100`.
    #[serde(default = "default_priority")]
    pub priority: i32,
    /// Which engine runs the profile: `auto` (nfqws/winws when the node has
    /// it, else Veil's built-in engine), `external` (nfqws/winws only) or
    /// `builtin` (Veil's built-in engine only, Linux). Default: `auto`.
    #[serde(default)]
    pub implementation: ZapretImplementation,
}

fn default_priority() -> i32 {
    100
}

/// Which program runs zapret profiles on a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ZapretImplementation {
    /// nfqws/winws when found on the node, else the built-in engine.
    #[default]
    Auto,
    /// nfqws (Linux) or winws (Windows) only.
    External,
    /// Veil's built-in nfqws-compatible engine (`veil-agent desync`, Linux) only.
    Builtin,
}

/// zapret argument dialect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ZapretSyntax {
    /// zapret (v1) `winws`/`nfqws` options.
    #[default]
    V1,
    /// zapret2 options.
    V2,
}

/// A list of domains written to a file. Exactly one of `domains`,
/// `configMapKeyRef`, `secretKeyRef`. Never written empty (an empty list
/// means "match everything" to zapret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostList {
    /// Name used in `{hostlist:NAME}` (e.g. `ru-blocked`).
    pub name: DnsLabel,
    /// The domains, inline (e.g. `[youtube.com, googlevideo.com]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Take the list (one domain per line) from a ConfigMap key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeyRef>,
    /// Take the list (one domain per line) from a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A file written for the engine. Exactly one of `content`,
/// `configMapKeyRef`, `secretKeyRef`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileSource {
    /// Name used in `{file:NAME}` (e.g. `quic-initial`).
    pub name: DnsLabel,
    /// Text content, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Take the content from a ConfigMap key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeyRef>,
    /// Take the content from a Secret key (binary payloads go here, base64 in the Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

impl ZapretEngine {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let mut hostlists = BTreeSet::new();
        for (i, list) in self.hostlists.iter().enumerate() {
            let at = format!("{path}.hostlists[{i}]");
            if !hostlists.insert(list.name.as_str()) {
                errors.push(
                    format!("{at}.name"),
                    format!("`{}` is used twice; give each list its own name", list.name),
                );
            }
            let sources = usize::from(!list.domains.is_empty())
                + usize::from(list.config_map_key_ref.is_some())
                + usize::from(list.secret_key_ref.is_some());
            if sources != 1 {
                errors.push(
                    at.clone(),
                    "set exactly one of `domains` (non-empty), `configMapKeyRef` and `secretKeyRef`",
                );
            }
            for (j, domain) in list.domains.iter().enumerate() {
                if DnsName::parse(domain).is_err() {
                    errors.push(
                        format!("{at}.domains[{j}]"),
                        format!(
                            "`{domain}` is not a lower-case domain name; write e.g. `youtube.com`"
                        ),
                    );
                }
            }
        }
        let mut files = BTreeSet::new();
        for (i, file) in self.files.iter().enumerate() {
            let at = format!("{path}.files[{i}]");
            if !files.insert(file.name.as_str()) {
                errors.push(
                    format!("{at}.name"),
                    format!("`{}` is used twice; give each file its own name", file.name),
                );
            }
            let sources = usize::from(file.content.is_some())
                + usize::from(file.config_map_key_ref.is_some())
                + usize::from(file.secret_key_ref.is_some());
            if sources != 1 {
                errors.push(
                    at,
                    "set exactly one of `content`, `configMapKeyRef` and `secretKeyRef`",
                );
            }
        }
        if self.syntax == ZapretSyntax::V1 {
            super::zapret_args::validate(self.args.as_slice(), &format!("{path}.args"), errors);
        }
        for (i, arg) in self.args.as_slice().iter().enumerate() {
            for (kind, names) in [("hostlist", &hostlists), ("file", &files)] {
                let open = format!("{{{kind}:");
                let mut rest = arg.as_str();
                while let Some(start) = rest.find(&open) {
                    let after = &rest[start + open.len()..];
                    let Some(end) = after.find('}') else { break };
                    let name = &after[..end];
                    if !names.contains(name) {
                        errors.push(
                            format!("{path}.args[{i}]"),
                            format!("`{{{kind}:{name}}}` names no entry in `{kind}s`; add `{{name: {name}, …}}` to `{kind}s` or fix the name"),
                        );
                    }
                    rest = &after[end..];
                }
            }
        }
    }
}

/// A local SOCKS proxy through a VLESS server. Exactly one of `keyRef` and `urlSecretRef`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VlessEngine {
    /// A `VlessKey` in the same namespace whose credentials the proxy uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ref: Option<KeyRef>,
    /// A Secret key holding a `vless://` link (for servers Veil does not manage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// Client program: `sing-box` or `xray`. Default: `sing-box`.
    #[serde(default)]
    pub client: VlessClient,
    /// Local SOCKS5 port on 127.0.0.1. Default: a free port from 10800–10899,
    /// shown in the node status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socks_port: Option<Port>,
}

/// A reference to a `VlessKey` in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRef {
    /// Name of the VlessKey.
    pub name: DnsName,
}

/// The VLESS client program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VlessClient {
    /// sing-box.
    #[default]
    SingBox,
    /// xray-core.
    Xray,
}

impl VlessEngine {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        match (&self.key_ref, &self.url_secret_ref) {
            (Some(_), Some(_)) => {
                errors.push(path, "both `keyRef` and `urlSecretRef` are set; keep one")
            }
            (None, None) => errors.push(
                path,
                "neither `keyRef` nor `urlSecretRef` is set; write e.g. `keyRef: {name: alice}`",
            ),
            _ => {}
        }
    }
}
