//! Probes, scoring and failover of a strategy (seed 000: weights 0.5/0.3/0.15/0.05,
//! the worst of N passes, hysteresis when switching).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::is_false;
use crate::validate::{ByteSize, DnsName, Duration, FieldErrors, HttpUrl, Port};

/// Periodic checks through the strategy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probes {
    /// What to check (at least one).
    pub targets: Vec<ProbeTarget>,
    /// Time between probe rounds. Default: `5m`.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Time allowed for one target. Default: `10s`.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Rounds per evaluation; the score is the worst of them. Default: `3`.
    #[serde(default = "default_passes")]
    pub passes: u32,
}

fn default_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_passes() -> u32 {
    3
}

/// One probe target: an HTTP(S) `url` or a `udp` exchange. Exactly one of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeTarget {
    /// URL fetched with GET (e.g. `https://www.youtube.com/generate_204`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<HttpUrl>,
    /// A UDP exchange (voice and QUIC paths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpProbe>,
    /// A critical target counts in `criticalSuccess`; the strategy fails when any critical target fails. Default: `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub critical: bool,
    /// Bytes that must arrive for a pass. Use at least `65536` to catch the
    /// 16–20 KB stall that plain HEAD checks miss. Default: headers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bytes: Option<ByteSize>,
    /// TLS versions to fetch an `https` url with, each a separate sample
    /// (DPI often treats TLS 1.2 and 1.3 differently): `["1.2", "1.3"]`.
    /// `auto` lets the server choose. Default: one sample, `auto`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<ProbeTls>,
}

/// A TLS version a probe sample uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, JsonSchema)]
pub enum ProbeTls {
    /// Whatever the server negotiates.
    #[serde(rename = "auto")]
    Auto,
    /// TLS 1.2 only.
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

impl ProbeTls {
    /// The spelling in YAML: `auto`, `1.2`, `1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeTls::Auto => "auto",
            ProbeTls::V1_2 => "1.2",
            ProbeTls::V1_3 => "1.3",
        }
    }
}

/// Accepts `"1.2"` and, since YAML reads an unquoted `1.2` as a number,
/// `1.2` too.
impl<'de> Deserialize<'de> for ProbeTls {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ProbeTls;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a TLS version: \"1.2\", \"1.3\" or \"auto\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ProbeTls, E> {
                match v {
                    "auto" => Ok(ProbeTls::Auto),
                    "1.2" => Ok(ProbeTls::V1_2),
                    "1.3" => Ok(ProbeTls::V1_3),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ProbeTls, E> {
                if v == 1.2 {
                    Ok(ProbeTls::V1_2)
                } else if v == 1.3 {
                    Ok(ProbeTls::V1_3)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A UDP probe: send a datagram, expect any answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UdpProbe {
    /// Host name or IP address (e.g. `stun.l.google.com`).
    pub host: String,
    /// UDP port (e.g. `19302`).
    pub port: Port,
    /// Payload as hex. Default: a STUN binding request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
}

impl Probes {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if self.targets.is_empty() {
            errors.push(
                format!("{path}.targets"),
                "no target listed; add e.g. `- url: https://www.youtube.com/generate_204` or remove `probes`",
            );
        }
        for (i, t) in self.targets.iter().enumerate() {
            let at = format!("{path}.targets[{i}]");
            match (&t.url, &t.udp) {
                (Some(_), Some(_)) => errors.push(
                    at.clone(),
                    "both `url` and `udp` are set; use one target per entry",
                ),
                (None, None) => errors.push(
                    at.clone(),
                    "neither `url` nor `udp` is set; write e.g. `url: https://example.com/`",
                ),
                _ => {}
            }
            if !t.tls.is_empty()
                && !t
                    .url
                    .as_ref()
                    .is_some_and(|u| u.as_str().starts_with("https://"))
            {
                errors.push(
                    format!("{at}.tls"),
                    "TLS versions apply to `https://` urls only; remove `tls` or use an https url",
                );
            }
            for (j, version) in t.tls.iter().enumerate() {
                if t.tls[..j].contains(version) {
                    errors.push(
                        format!("{at}.tls[{j}]"),
                        format!(
                            "`{}` is listed twice; list each version once",
                            version.as_str()
                        ),
                    );
                }
            }
            if let Some(udp) = &t.udp {
                let host_ok = udp.host.parse::<std::net::IpAddr>().is_ok()
                    || DnsName::parse(&udp.host).is_ok();
                if !host_ok {
                    errors.push(
                        format!("{at}.udp.host"),
                        format!(
                            "`{}` is not a host name or IP address; write e.g. `stun.l.google.com`",
                            udp.host
                        ),
                    );
                }
                if let Some(hex) = &udp.payload_hex
                    && (hex.is_empty()
                        || hex.len() % 2 != 0
                        || !hex.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    errors.push(
                        format!("{at}.udp.payloadHex"),
                        "not an even number of hex digits; write e.g. `000100002112a442` or remove it",
                    );
                }
            }
        }
        if self.passes == 0 {
            errors.push(
                format!("{path}.passes"),
                "0 rounds give no score; write at least 1 (default 3)",
            );
        }
        if self.timeout.as_std().is_zero() || self.interval.as_std().is_zero() {
            errors.push(path, "`interval` and `timeout` must be longer than zero, e.g. `interval: 5m`, `timeout: 10s`");
        } else if self.timeout.as_std() >= self.interval.as_std() {
            errors.push(
                format!("{path}.timeout"),
                format!("`{}` is not shorter than `interval` (`{}`); shorten the timeout or lengthen the interval", self.timeout, self.interval),
            );
        }
    }
}

/// How probe results become a score between 0 and 1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scoring {
    /// Weights of the score's parts; they must add up to 1.
    #[serde(default)]
    pub weights: ScoringWeights,
}

/// Weights of the score's parts (defaults from field experience, seed 000).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoringWeights {
    /// Weight of the share of targets that passed. Default: `0.5`.
    #[serde(default = "w_success")]
    pub success_rate: f64,
    /// Weight of the share of critical targets that passed. Default: `0.3`.
    #[serde(default = "w_critical")]
    pub critical_success: f64,
    /// Weight of low latency. Default: `0.15`.
    #[serde(default = "w_latency")]
    pub latency: f64,
    /// Weight of low jitter. Default: `0.05`.
    #[serde(default = "w_jitter")]
    pub jitter: f64,
}

fn w_success() -> f64 {
    0.5
}
fn w_critical() -> f64 {
    0.3
}
fn w_latency() -> f64 {
    0.15
}
fn w_jitter() -> f64 {
    0.05
}

impl Default for ScoringWeights {
    fn default() -> Self {
        ScoringWeights {
            success_rate: w_success(),
            critical_success: w_critical(),
            latency: w_latency(),
            jitter: w_jitter(),
        }
    }
}

impl Scoring {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let w = &self.weights;
        let parts = [
            ("successRate", w.success_rate),
            ("criticalSuccess", w.critical_success),
            ("latency", w.latency),
            ("jitter", w.jitter),
        ];
        for (name, value) in parts {
            if !(0.0..=1.0).contains(&value) {
                errors.push(
                    format!("{path}.weights.{name}"),
                    format!("{value} is not between 0 and 1; write e.g. 0.5"),
                );
            }
        }
        let sum: f64 = parts.iter().map(|(_, v)| v).sum();
        if (sum - 1.0).abs() > 1e-6 {
            errors.push(
                format!("{path}.weights"),
                format!("the weights add up to {sum}, not 1; adjust them (defaults: 0.5, 0.3, 0.15, 0.05)"),
            );
        }
    }
}

/// Switching to alternatives when the strategy stops working.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    /// Names of Strategies (same namespace) for the same purpose, tried one at a time.
    pub backups: Vec<DnsName>,
    /// `ordered` (the first backup that passes) or `bestScore` (the best-scoring one). Default: `ordered`.
    #[serde(default)]
    pub mode: FailoverMode,
    /// Failed probe rounds in a row before switching. Default: `3`.
    #[serde(default = "default_threshold")]
    pub failure_threshold: u32,
    /// Least time between two switches (hysteresis; the current strategy wins ties). Default: `10m`.
    #[serde(default = "default_switch")]
    pub min_switch_interval: Duration,
}

fn default_threshold() -> u32 {
    3
}
fn default_switch() -> Duration {
    Duration::from_secs(600)
}

/// How a failover alternative is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FailoverMode {
    /// The first alternative, in `backups` order, that passes its probes.
    #[default]
    Ordered,
    /// The alternative with the best score.
    BestScore,
}

impl Failover {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if self.backups.is_empty() {
            errors.push(
                format!("{path}.backups"),
                "no backup listed; name at least one Strategy or remove `failover`",
            );
        }
        if self.failure_threshold == 0 {
            errors.push(
                format!("{path}.failureThreshold"),
                "0 would switch without any failure; write at least 1 (default 3)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_versions_read_quoted_or_as_yaml_numbers_and_write_quoted() {
        let target: ProbeTarget =
            serde_yaml_ng::from_str("url: https://example.com/\ntls: [1.2, \"1.3\", auto]\n")
                .expect("a target");
        assert_eq!(target.tls, [ProbeTls::V1_2, ProbeTls::V1_3, ProbeTls::Auto]);
        let written = serde_json::to_value(&target).expect("json");
        assert_eq!(written["tls"], serde_json::json!(["1.2", "1.3", "auto"]));
        let wrong = serde_yaml_ng::from_str::<ProbeTarget>("url: https://e.com/\ntls: [1.1]\n")
            .expect_err("1.1 is no version we probe");
        assert!(
            wrong.to_string().contains("\"1.2\", \"1.3\" or \"auto\""),
            "{wrong}"
        );
    }
}
