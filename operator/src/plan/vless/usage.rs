//! A key's traffic in its current period: lifetime counters minus the
//! baseline taken when the period began.
//!
//! A baseline counts while it belongs to the same counters (server and
//! email) and its period start is not older than the current one. Otherwise
//! — a new period, a new key, a changed email — the period counts as zero
//! and a new baseline (the counters now) is returned for the controller to
//! persist. Traffic reported between a boundary and that pass (the
//! controller wakes at the boundary, so seconds) counts in the old period.
//!
//! With `trafficResetPeriod: never` the period is the key's life: it begins
//! at the key's creation, so a key reusing a deleted key's email starts at
//! zero. A baseline whose period start is newer than the current one (the
//! period was made longer) is kept: the count runs from the last reset.

use chrono::{DateTime, Utc};
use veil_crds::vless_key::VlessKey;

use super::TrafficState;
use super::inputs::Counters;
use super::period;
use crate::records::TrafficBaselineRecord;

/// Bytes of the current period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodUsage {
    pub uplink: u64,
    pub downlink: u64,
    /// Start of what is counted.
    pub period_start: DateTime<Utc>,
    /// When the user's traffic was last reported.
    pub last_seen: Option<DateTime<Utc>>,
}

impl PeriodUsage {
    /// Uplink + downlink, the figure the limit is compared with.
    pub fn total(&self) -> u64 {
        self.uplink.saturating_add(self.downlink)
    }
}

/// The usage of `key` (counters of `server`/`email`) at `now`, and the
/// baseline to persist when a new period began.
pub fn period_usage(
    key: &VlessKey,
    created: Option<DateTime<Utc>>,
    server: &str,
    email: &str,
    traffic: &TrafficState,
    now: DateTime<Utc>,
) -> (PeriodUsage, Option<TrafficBaselineRecord>) {
    let tz = key
        .spec
        .time_zone
        .as_ref()
        .map_or(chrono_tz::Tz::UTC, |zone| zone.tz());
    let current = period::current_start(key.spec.traffic_reset_period, tz, now)
        .or(created)
        .unwrap_or(DateTime::UNIX_EPOCH);
    let uid = key.metadata.uid.as_deref().unwrap_or_default();
    let totals = traffic.total(server, email);
    let last_seen = traffic.seen(server, email);
    let baseline = traffic
        .baseline(uid)
        .filter(|b| b.server == server && b.email == email && b.period_start >= current);
    match baseline {
        Some(baseline) => (
            PeriodUsage {
                uplink: totals.uplink.saturating_sub(baseline.uplink.max(0) as u64),
                downlink: totals
                    .downlink
                    .saturating_sub(baseline.downlink.max(0) as u64),
                period_start: baseline.period_start,
                last_seen,
            },
            None,
        ),
        None => (
            PeriodUsage {
                uplink: 0,
                downlink: 0,
                period_start: current,
                last_seen,
            },
            Some(new_baseline(uid, server, email, current, totals)),
        ),
    }
}

fn new_baseline(
    uid: &str,
    server: &str,
    email: &str,
    period_start: DateTime<Utc>,
    totals: Counters,
) -> TrafficBaselineRecord {
    TrafficBaselineRecord {
        key_uid: uid.to_owned(),
        server: server.to_owned(),
        email: email.to_owned(),
        period_start,
        uplink: i64::try_from(totals.uplink).unwrap_or(i64::MAX),
        downlink: i64::try_from(totals.downlink).unwrap_or(i64::MAX),
    }
}
