//! Fire times of a spec: cron occurrences in a time zone (DST-safe, always
//! strictly increasing in UTC) or the one `runAt` instant.
//!
//! Owns only occurrence arithmetic; knows nothing about runs or policies.

use chrono::{DateTime, DurationRound, LocalResult, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::errors::CronError;
use veil_crds::schedule::ScheduleSpec;

use super::ScheduleError;

/// Steps walked one by one before jumping close to the end of the window
/// (one more than the missed-times limit, so the count is exact up to it).
const WALK_BEFORE_JUMP: usize = super::TOO_MANY_MISSED + 1;

/// After a jump, the walk restarts this far before the occurrence croner finds
/// searching backwards: backward and forward search treat DST gaps
/// differently, so the forward walk must start before both (gaps are ≤ 2 h).
const JUMP_MARGIN: TimeDelta = TimeDelta::days(1);

/// How often one forward step may land on an earlier twin of an ambiguous
/// wall-clock time before giving up (each retry moves past one such time).
const MAX_AMBIGUOUS_RETRIES: usize = 8;

/// The fire times of one schedule.
pub(super) enum Timetable<'a> {
    /// A cron expression read in a time zone.
    Cron {
        /// The parsed expression.
        cron: &'a Cron,
        /// The expression as written (for messages).
        text: &'a str,
        /// Where wall-clock fields are read.
        tz: Tz,
    },
    /// A single `runAt` instant.
    Once(DateTime<Utc>),
}

/// The due times found in a window.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Due {
    /// The most recent fire time in the window.
    pub latest: Option<DateTime<Utc>>,
    /// How many fire times the window holds, exact up to
    /// [`WALK_BEFORE_JUMP`] (a larger count reads as "more than the limit").
    pub count: usize,
}

impl<'a> Timetable<'a> {
    /// The timetable of `spec`, or why it has none.
    pub fn from_spec(spec: &'a ScheduleSpec) -> Result<Timetable<'a>, ScheduleError> {
        match (&spec.schedule, &spec.run_at) {
            (Some(schedule), None) => Ok(Timetable::Cron {
                cron: schedule.cron(),
                text: schedule.as_str(),
                tz: spec.time_zone.as_ref().map_or(Tz::UTC, |zone| zone.tz()),
            }),
            (None, Some(at)) => Ok(Timetable::Once(at.utc())),
            (None, None) => Err(ScheduleError::NoTimes),
            (Some(_), Some(_)) => Err(ScheduleError::BothTimes),
        }
    }

    /// The first fire time strictly after `after` (`None`: a one-shot already past).
    pub fn next_after(&self, after: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ScheduleError> {
        match self {
            Timetable::Once(at) => Ok((*at > after).then_some(*at)),
            Timetable::Cron { cron, text, tz } => {
                cron_next(cron, *tz, after)
                    .map(Some)
                    .map_err(|source| ScheduleError::NoNextTime {
                        schedule: (*text).to_owned(),
                        zone: tz.name().to_owned(),
                        after,
                        source,
                    })
            }
        }
    }

    /// The fire times `t` with `after < t <= until` (`after: None` means no
    /// lower bound, which only a one-shot may use).
    pub fn walk(
        &self,
        after: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
    ) -> Result<Due, ScheduleError> {
        let (cron, tz) = match self {
            Timetable::Once(at) => {
                let inside = after.is_none_or(|a| *at > a) && *at <= until;
                return Ok(Due {
                    latest: inside.then_some(*at),
                    count: usize::from(inside),
                });
            }
            Timetable::Cron { cron, tz, .. } => (*cron, *tz),
        };
        let Some(mut cursor) = after else {
            return Ok(Due::default());
        };
        let mut due = Due::default();
        let mut jumped = false;
        loop {
            let Some(next) = self.next_after(cursor)? else {
                return Ok(due);
            };
            if next > until {
                return Ok(due);
            }
            due.latest = Some(next);
            cursor = next;
            if !jumped {
                due.count += 1;
                if due.count >= WALK_BEFORE_JUMP {
                    jumped = true;
                    // Long downtime: only the latest time matters now; skip ahead.
                    let anchor = cron
                        .find_previous_occurrence(&until.with_timezone(&tz), true)
                        .map(|t| t.with_timezone(&Utc));
                    if let Ok(anchor) = anchor {
                        cursor = cursor.max(anchor - JUMP_MARGIN);
                    }
                }
            }
        }
    }
}

/// The first occurrence of `cron` in `tz` strictly after `after`.
///
/// croner searches in wall-clock time, which goes wrong around a fall-back
/// overlap in two ways, both corrected here so the result is always the
/// earliest instant later than `after`:
/// - for an ambiguous wall-clock time it answers the earlier instant even when
///   `after` lies between the two;
/// - searching from the first pass of the overlap, it never returns to the
///   wall-clock times of the second pass that are not later than `after`'s
///   (schedules with wildcard or stepped hours/minutes fire in both passes).
fn cron_next(cron: &Cron, tz: Tz, after: DateTime<Utc>) -> Result<DateTime<Utc>, CronError> {
    // Occurrences fall on whole seconds, so flooring keeps "strictly after".
    let after = after.duration_trunc(TimeDelta::seconds(1)).unwrap_or(after);
    let fixed_time = cron.determine_job_type() == croner::JobType::FixedTime;
    let ahead = next_later_wall_clock(cron, tz, after, fixed_time)?;
    if fixed_time {
        return Ok(ahead);
    }
    Ok(match second_pass(cron, tz, after)? {
        Some(repeat) => repeat.min(ahead),
        None => ahead,
    })
}

/// The first occurrence after `after` whose wall-clock time is later than
/// `after`'s, taking the later twin of an ambiguous time when the earlier one
/// is past (fixed-time schedules only ever run at the earlier twin).
fn next_later_wall_clock(
    cron: &Cron,
    tz: Tz,
    after: DateTime<Utc>,
    fixed_time: bool,
) -> Result<DateTime<Utc>, CronError> {
    let mut from = after.with_timezone(&tz);
    for _ in 0..MAX_AMBIGUOUS_RETRIES {
        let candidate = cron.find_next_occurrence(&from, false)?;
        if candidate.with_timezone(&Utc) > after {
            return Ok(candidate.with_timezone(&Utc));
        }
        let later = tz
            .from_local_datetime(&candidate.naive_local())
            .latest()
            .unwrap_or(candidate);
        if !fixed_time && later.with_timezone(&Utc) > after {
            return Ok(later.with_timezone(&Utc));
        }
        from = later;
    }
    Err(CronError::TimeSearchLimitExceeded)
}

/// When `after` lies in the first pass of a fall-back overlap: the first
/// occurrence in the second pass whose wall-clock time is not later than
/// `after`'s (those are invisible to a wall-clock search from `after`).
fn second_pass(
    cron: &Cron,
    tz: Tz,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, CronError> {
    let wall = after.with_timezone(&tz).naive_local();
    let LocalResult::Ambiguous(first, second) = tz.from_local_datetime(&wall) else {
        return Ok(None);
    };
    if first.with_timezone(&Utc) != after {
        return Ok(None);
    }
    // The instant the clock is turned back: the first with the second pass's offset.
    let offset_at = |t: DateTime<Utc>| t.with_timezone(&tz).offset().fix();
    let (mut lo, mut hi) = (after, second.with_timezone(&Utc));
    while hi - lo > TimeDelta::seconds(1) {
        let mid = lo + (hi - lo) / 2;
        if offset_at(mid) == first.offset().fix() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let found = cron.find_next_occurrence(&hi.with_timezone(&tz), true)?;
    if found.naive_local() > wall {
        return Ok(None);
    }
    Ok(tz
        .from_local_datetime(&found.naive_local())
        .latest()
        .map(|twin| twin.with_timezone(&Utc))
        .filter(|twin| *twin > after))
}
