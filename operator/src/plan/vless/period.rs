//! Traffic reset periods: when the current period of a `trafficResetPeriod`
//! began and when the next one begins, at 00:00 in the key's time zone.
//!
//! DST: a midnight that does not exist (the clock jumps from 23:59:59 to
//! 01:00, as in Chile or Lebanon) starts the period at the first wall-clock
//! time that does exist, i.e. the instant of the jump; a midnight that
//! happens twice (the clock goes back from 01:00 to 00:00) starts it at the
//! first of the two. Periods are therefore always contiguous and strictly
//! increasing in UTC.

use chrono::{DateTime, Datelike, Days, LocalResult, Months, NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use veil_crds::vless_key::TrafficResetPeriod;

/// How far past midnight a DST gap may reach (the longest ever used is 2 h).
const LONGEST_GAP: TimeDelta = TimeDelta::hours(3);

/// The start of the period that contains `now`; `None` for `never`.
pub fn current_start(
    period: TrafficResetPeriod,
    tz: Tz,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let today = now.with_timezone(&tz).date_naive();
    let first_day = first_day(period, today)?;
    let start = local_midnight(tz, first_day);
    // A day whose midnight lies in a gap starts at the jump; `now` can be
    // before that only if it is in the previous period.
    if start > now {
        return Some(local_midnight(tz, first_day_before(period, first_day)?));
    }
    Some(start)
}

/// The start of the period after the one that contains `now`; `None` for `never`.
pub fn next_start(period: TrafficResetPeriod, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let today = now.with_timezone(&tz).date_naive();
    let next = first_day_after(period, first_day(period, today)?)?;
    let start = local_midnight(tz, next);
    if start <= now {
        return Some(local_midnight(tz, first_day_after(period, next)?));
    }
    Some(start)
}

/// The first day of the period containing `day`.
fn first_day(period: TrafficResetPeriod, day: NaiveDate) -> Option<NaiveDate> {
    match period {
        TrafficResetPeriod::Never => None,
        TrafficResetPeriod::Daily => Some(day),
        TrafficResetPeriod::Weekly => {
            day.checked_sub_days(Days::new(day.weekday().num_days_from_monday().into()))
        }
        TrafficResetPeriod::Monthly => day.with_day(1),
    }
}

/// The first day of the next period, given the first day of one.
fn first_day_after(period: TrafficResetPeriod, first: NaiveDate) -> Option<NaiveDate> {
    match period {
        TrafficResetPeriod::Never => None,
        TrafficResetPeriod::Daily => first.checked_add_days(Days::new(1)),
        TrafficResetPeriod::Weekly => first.checked_add_days(Days::new(7)),
        TrafficResetPeriod::Monthly => first.checked_add_months(Months::new(1)),
    }
}

/// The first day of the previous period, given the first day of one.
fn first_day_before(period: TrafficResetPeriod, first: NaiveDate) -> Option<NaiveDate> {
    match period {
        TrafficResetPeriod::Never => None,
        TrafficResetPeriod::Daily => first.checked_sub_days(Days::new(1)),
        TrafficResetPeriod::Weekly => first.checked_sub_days(Days::new(7)),
        TrafficResetPeriod::Monthly => first.checked_sub_months(Months::new(1)),
    }
}

/// The instant `day` begins in `tz` (see the module doc for DST).
fn local_midnight(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_time(chrono::NaiveTime::MIN);
    match tz.from_local_datetime(&midnight) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => at.with_timezone(&Utc),
        LocalResult::None => {
            // In a gap: the first whole minute after midnight that exists is
            // the instant the clock jumped (gaps start and end on minutes).
            let mut wall = midnight;
            while wall - midnight < LONGEST_GAP {
                wall += TimeDelta::minutes(1);
                if let LocalResult::Single(at) | LocalResult::Ambiguous(at, _) =
                    tz.from_local_datetime(&wall)
                {
                    return at.with_timezone(&Utc);
                }
            }
            // No tz database has a gap this long; read midnight as UTC.
            midnight.and_utc()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap()
    }

    #[test]
    fn never_has_no_periods() {
        let now = utc("2026-11-23T12:00:00Z");
        assert_eq!(current_start(TrafficResetPeriod::Never, Tz::UTC, now), None);
        assert_eq!(next_start(TrafficResetPeriod::Never, Tz::UTC, now), None);
    }

    #[test]
    fn daily_weekly_monthly_start_at_local_midnight() {
        // Monday 2026-11-23, 12:00 UTC = 15:00 in Moscow (UTC+3, no DST).
        let now = utc("2026-11-23T12:00:00Z");
        let moscow = chrono_tz::Europe::Moscow;
        let cases = [
            (
                TrafficResetPeriod::Daily,
                "2026-11-22T21:00:00Z",
                "2026-11-23T21:00:00Z",
            ),
            (
                TrafficResetPeriod::Weekly,
                "2026-11-22T21:00:00Z",
                "2026-11-29T21:00:00Z",
            ),
            (
                TrafficResetPeriod::Monthly,
                "2026-10-31T21:00:00Z",
                "2026-11-30T21:00:00Z",
            ),
        ];
        for (period, start, next) in cases {
            assert_eq!(
                current_start(period, moscow, now),
                Some(utc(start)),
                "{period:?}"
            );
            assert_eq!(
                next_start(period, moscow, now),
                Some(utc(next)),
                "{period:?}"
            );
        }
    }

    #[test]
    fn a_boundary_belongs_to_the_period_it_starts() {
        let boundary = utc("2026-12-01T00:00:00Z");
        let monthly = TrafficResetPeriod::Monthly;
        assert_eq!(current_start(monthly, Tz::UTC, boundary), Some(boundary));
        assert_eq!(
            current_start(monthly, Tz::UTC, boundary - TimeDelta::seconds(1)),
            Some(utc("2026-11-01T00:00:00Z"))
        );
        assert_eq!(
            next_start(monthly, Tz::UTC, boundary - TimeDelta::seconds(1)),
            Some(boundary)
        );
        assert_eq!(
            next_start(monthly, Tz::UTC, boundary),
            Some(utc("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn a_midnight_in_a_dst_gap_starts_the_day_at_the_jump() {
        // Chile moves its clocks from 00:00 to 01:00 on 2026-09-06: that day
        // begins at 01:00 local, 04:00 UTC (the offset was −4 until then).
        let santiago = chrono_tz::America::Santiago;
        let daily = TrafficResetPeriod::Daily;
        let after_jump = utc("2026-09-06T12:00:00Z");
        assert_eq!(
            current_start(daily, santiago, after_jump),
            Some(utc("2026-09-06T04:00:00Z"))
        );
        let before_jump = utc("2026-09-06T03:59:59Z");
        assert_eq!(
            next_start(daily, santiago, before_jump),
            Some(utc("2026-09-06T04:00:00Z"))
        );
        assert_eq!(
            current_start(daily, santiago, before_jump),
            Some(utc("2026-09-05T04:00:00Z"))
        );
    }

    #[test]
    fn a_midnight_that_happens_twice_starts_the_day_at_the_first() {
        // Cuba moves its clocks back from 01:00 to 00:00 on 2026-11-01: the
        // first 00:00 (UTC−4) is the start, not the second (UTC−5).
        let havana = chrono_tz::America::Havana;
        let daily = TrafficResetPeriod::Daily;
        let first = utc("2026-11-01T04:00:00Z");
        assert_eq!(current_start(daily, havana, first), Some(first));
        assert_eq!(
            current_start(daily, havana, utc("2026-11-01T05:30:00Z")),
            Some(first)
        );
        assert_eq!(
            next_start(daily, havana, first - TimeDelta::seconds(1)),
            Some(first)
        );
    }
}
