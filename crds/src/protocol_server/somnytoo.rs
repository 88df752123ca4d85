//! `protocol: somnytoo` settings: the built-in secure binary protocol server
//! (seed 003): X25519+PSK handshake, AES-256-GCM frames, AIMD congestion
//! control and IP reputation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretKeyRef;
use crate::validate::{Duration, FieldErrors};

/// Settings of the built-in protocol server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SomnytooServer {
    /// Secret key holding the pre-shared key: 64 hex characters (32 bytes),
    /// e.g. made with `openssl rand -hex 32`.
    pub psk_secret_ref: SecretKeyRef,
    /// Per-client-IP request limit. Default: 1000 per minute, burst 100.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// Adaptive per-connection packet-rate limit (Additive Increase / Multiplicative Decrease).
    #[serde(default)]
    pub congestion: AimdCongestion,
    /// Scores at which a misbehaving client IP is throttled or banned.
    #[serde(default)]
    pub reputation: IpReputation,
}

impl SomnytooServer {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        self.congestion
            .validate(&format!("{path}.congestion"), errors);
        self.reputation
            .validate(&format!("{path}.reputation"), errors);
        if self.rate_limit.requests_per_minute == 0 {
            errors.push(
                format!("{path}.rateLimit.requestsPerMinute"),
                "0 would refuse every request; write a positive number, e.g. 1000",
            );
        }
    }
}

/// Token-bucket limit per client IP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per minute per client IP. Default: 1000.
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
    /// Requests allowed in a burst above the sustained rate. Default: 100.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Most concurrent connections from one IP. Default: 32.
    #[serde(default = "default_conns")]
    pub max_connections_per_ip: u32,
}

fn default_rpm() -> u32 {
    1000
}
fn default_burst() -> u32 {
    100
}
fn default_conns() -> u32 {
    32
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            requests_per_minute: default_rpm(),
            burst: default_burst(),
            max_connections_per_ip: default_conns(),
        }
    }
}

/// AIMD packet-rate limit: +`additiveIncrease` per interval without overload,
/// ×`multiplicativeDecrease` on overload, kept within `[minLimit, maxLimit]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AimdCongestion {
    /// Starting limit, packets per second. Default: 100.
    #[serde(default = "default_initial")]
    pub initial_limit: u32,
    /// Lowest limit, packets per second. Default: 10.
    #[serde(default = "default_min")]
    pub min_limit: u32,
    /// Highest limit, packets per second. Default: 10000.
    #[serde(default = "default_max")]
    pub max_limit: u32,
    /// Packets per second added after a good interval. Default: 10.
    #[serde(default = "default_increase")]
    pub additive_increase: u32,
    /// Factor (between 0 and 1) the limit is multiplied by on overload. Default: 0.7.
    #[serde(default = "default_decrease")]
    pub multiplicative_decrease: f64,
}

fn default_initial() -> u32 {
    100
}
fn default_min() -> u32 {
    10
}
fn default_max() -> u32 {
    10_000
}
fn default_increase() -> u32 {
    10
}
fn default_decrease() -> f64 {
    0.7
}

impl Default for AimdCongestion {
    fn default() -> Self {
        AimdCongestion {
            initial_limit: default_initial(),
            min_limit: default_min(),
            max_limit: default_max(),
            additive_increase: default_increase(),
            multiplicative_decrease: default_decrease(),
        }
    }
}

impl AimdCongestion {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if !(self.min_limit <= self.initial_limit && self.initial_limit <= self.max_limit) {
            errors.push(
                path,
                format!(
                    "limits must satisfy minLimit ≤ initialLimit ≤ maxLimit (have {} ≤ {} ≤ {}); e.g. 10 ≤ 100 ≤ 10000",
                    self.min_limit, self.initial_limit, self.max_limit
                ),
            );
        }
        if !(self.multiplicative_decrease > 0.0 && self.multiplicative_decrease < 1.0) {
            errors.push(
                format!("{path}.multiplicativeDecrease"),
                format!(
                    "{} is not between 0 and 1 (exclusive); write e.g. 0.7",
                    self.multiplicative_decrease
                ),
            );
        }
    }
}

/// Reputation thresholds. Anomalies (packet floods, bursts, odd sizes) add to
/// a client IP's score between 0 and 1, which decays over time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpReputation {
    /// Score from which the IP is rate-limited. Default: 0.3.
    #[serde(default = "default_throttle")]
    pub throttle_score: f64,
    /// Score from which the IP is banned for `tempBanDuration`. Default: 0.6.
    #[serde(default = "default_temp_ban")]
    pub temp_ban_score: f64,
    /// Score from which the IP is banned until the server restarts. Default: 0.9.
    #[serde(default = "default_perm_ban")]
    pub permanent_ban_score: f64,
    /// Length of a temporary ban. Default: `15m`.
    #[serde(default = "default_ban_duration")]
    pub temp_ban_duration: Duration,
    /// Time for a score to halve without new anomalies. Default: `10m`.
    #[serde(default = "default_half_life")]
    pub score_half_life: Duration,
}

fn default_throttle() -> f64 {
    0.3
}
fn default_temp_ban() -> f64 {
    0.6
}
fn default_perm_ban() -> f64 {
    0.9
}
fn default_ban_duration() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_half_life() -> Duration {
    Duration::from_secs(10 * 60)
}

impl Default for IpReputation {
    fn default() -> Self {
        IpReputation {
            throttle_score: default_throttle(),
            temp_ban_score: default_temp_ban(),
            permanent_ban_score: default_perm_ban(),
            temp_ban_duration: default_ban_duration(),
            score_half_life: default_half_life(),
        }
    }
}

impl IpReputation {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let scores = [
            ("throttleScore", self.throttle_score),
            ("tempBanScore", self.temp_ban_score),
            ("permanentBanScore", self.permanent_ban_score),
        ];
        for (name, score) in scores {
            if !(0.0..=1.0).contains(&score) {
                errors.push(
                    format!("{path}.{name}"),
                    format!("{score} is not between 0 and 1; write e.g. 0.5"),
                );
            }
        }
        if !(self.throttle_score <= self.temp_ban_score
            && self.temp_ban_score <= self.permanent_ban_score)
        {
            errors.push(
                path,
                "scores must satisfy throttleScore ≤ tempBanScore ≤ permanentBanScore (e.g. 0.3, 0.6, 0.9)",
            );
        }
    }
}
