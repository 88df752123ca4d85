//! Deterministic run names: the name of a run is the lock that keeps a
//! scheduled time from running twice, across restarts and leader changes.
//!
//! Owns only the naming rule; never looks at existing runs.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// Longest valid run name: a DNS-1123 label (names also end up in label values).
pub const MAX_RUN_NAME_LEN: usize = 63;

/// Hex characters of the schedule-name hash kept when a name is shortened.
const HASH_LEN: usize = 8;

/// The name of the run a schedule makes for `scheduled_time`:
/// `<schedule>-<minutes since the Unix epoch>`, like CronJob's Jobs.
///
/// Guarantees: the same inputs always give the same name; two times in
/// different minutes give different names; the result is at most
/// [`MAX_RUN_NAME_LEN`] characters and a valid DNS-1123 label when
/// `schedule` is a valid object name. When `<schedule>-<minutes>` would be
/// too long (CronJob refuses names over 52 characters instead), the schedule
/// part is cut and followed by `-` and the first [`HASH_LEN`] hex characters
/// of its SHA-256, so long names sharing a prefix stay distinct.
pub fn run_name(schedule: &str, scheduled_time: DateTime<Utc>) -> String {
    let suffix = format!("-{}", scheduled_time.timestamp().div_euclid(60));
    if schedule.len() + suffix.len() <= MAX_RUN_NAME_LEN {
        return format!("{schedule}{suffix}");
    }
    let hash = hex::encode(Sha256::digest(schedule.as_bytes()));
    let keep = MAX_RUN_NAME_LEN.saturating_sub(suffix.len() + 1 + HASH_LEN);
    // Object names are ASCII; stay on a character boundary regardless.
    let cut = (0..=keep.min(schedule.len()))
        .rev()
        .find(|&i| schedule.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}-{}{suffix}", &schedule[..cut], &hash[..HASH_LEN])
}
