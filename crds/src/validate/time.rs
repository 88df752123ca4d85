//! Time zones, timestamps and durations.

use chrono::{DateTime, FixedOffset, Utc};

use super::{InvalidValue, string_newtype};

/// An IANA time zone name (`Europe/Moscow`, `UTC`), checked against the
/// tz database compiled into Veil (chrono-tz).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeZone {
    text: String,
    tz: chrono_tz::Tz,
}

impl TimeZone {
    /// Parses an IANA name.
    pub fn parse(text: &str) -> Result<TimeZone, InvalidValue> {
        let tz: chrono_tz::Tz = text.parse().map_err(|_| {
            let hint = if text.contains('+') || text.to_ascii_uppercase().starts_with("GMT") {
                " (fixed offsets like `GMT+3` are ambiguous; name the place)"
            } else {
                ""
            };
            InvalidValue::new(
                format!("`{text}` is not an IANA time zone name{hint}"),
                "write a name from the tz database, e.g. `Europe/Moscow`, `America/New_York` or `UTC`",
            )
        })?;
        Ok(TimeZone {
            text: text.to_owned(),
            tz,
        })
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The zone, for computing local times (DST aware).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.tz
    }
}

string_newtype!(
    TimeZone,
    expecting = "an IANA time zone name such as `Europe/Moscow`",
    schema = { "type": "string", "minLength": 1, "example": "Europe/Moscow" }
);

/// An RFC 3339 timestamp with an explicit offset (`2026-03-01T00:00:00Z`,
/// `2026-03-01T03:00:00+03:00`). Keeps the offset as written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rfc3339 {
    text: String,
    time: DateTime<FixedOffset>,
}

impl Rfc3339 {
    /// Parses a timestamp.
    pub fn parse(text: &str) -> Result<Rfc3339, InvalidValue> {
        let time = DateTime::parse_from_rfc3339(text).map_err(|error| {
            InvalidValue::new(
                format!("`{text}` is not an RFC 3339 timestamp ({error})"),
                "write a date, time and offset, e.g. `2026-03-01T00:00:00Z` or `2026-03-01T03:00:00+03:00`",
            )
        })?;
        Ok(Rfc3339 {
            text: text.to_owned(),
            time,
        })
    }

    /// A timestamp for `time`, written in UTC with second precision (`…Z`).
    pub fn from_utc(time: DateTime<Utc>) -> Rfc3339 {
        let text = time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        Rfc3339 {
            text,
            time: time.fixed_offset(),
        }
    }

    /// The timestamp as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The instant in UTC.
    pub fn utc(&self) -> DateTime<Utc> {
        self.time.with_timezone(&Utc)
    }
}

string_newtype!(
    Rfc3339,
    expecting = "an RFC 3339 timestamp such as `2026-03-01T00:00:00Z`",
    schema = { "type": "string", "format": "date-time" }
);

/// A duration written with units: `250ms`, `30s`, `5m`, `1h30m`, `2d`.
/// Units are `ms`, `s`, `m`, `h`, `d`; parts are summed. Keeps the text as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

const DURATION_FORM: &str =
    "write a number with a unit (ms, s, m, h, d), e.g. `250ms`, `30s`, `5m` or `1h30m`";

impl Duration {
    /// Parses a duration.
    pub fn parse(text: &str) -> Result<Duration, InvalidValue> {
        let bad = |why: String| InvalidValue::new(why, DURATION_FORM);
        if text.is_empty() {
            return Err(bad("the duration is empty".into()));
        }
        let mut total: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad(format!("`{text}` is not a duration")));
            }
            let (number, tail) = rest.split_at(digits);
            let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
            let (unit, tail) = tail.split_at(unit_len);
            let millis_per_unit: u128 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => {
                    return Err(bad(format!("`{text}` has a number without a unit")));
                }
                other => return Err(bad(format!("`{other}` in `{text}` is not a unit"))),
            };
            let number: u128 = number
                .parse()
                .map_err(|_| bad(format!("`{text}` is too large")))?;
            total = total.saturating_add(number.saturating_mul(millis_per_unit));
            rest = tail;
        }
        let millis = u64::try_from(total).map_err(|_| bad(format!("`{text}` is too large")))?;
        Ok(Duration {
            text: text.to_owned(),
            value: std::time::Duration::from_millis(millis),
        })
    }

    /// A whole number of seconds, written compactly (`90` → `1m30s`).
    pub fn from_secs(secs: u64) -> Duration {
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let mut text = String::new();
        if h > 0 {
            text.push_str(&format!("{h}h"));
        }
        if m > 0 {
            text.push_str(&format!("{m}m"));
        }
        if s > 0 || text.is_empty() {
            text.push_str(&format!("{s}s"));
        }
        Duration {
            text,
            value: std::time::Duration::from_secs(secs),
        }
    }

    /// The duration as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The duration as a [`std::time::Duration`].
    pub fn as_std(&self) -> std::time::Duration {
        self.value
    }
}

string_newtype!(
    Duration,
    expecting = "a duration such as `30s`, `5m` or `1h30m`",
    schema = {
        "type": "string",
        "pattern": "^([0-9]+(ms|s|m|h|d))+$",
        "example": "30s"
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sum_their_parts() {
        assert_eq!(Duration::parse("1h30m").unwrap().as_std().as_secs(), 5400);
        assert_eq!(Duration::parse("250ms").unwrap().as_std().as_millis(), 250);
        assert_eq!(Duration::parse("2d").unwrap().as_std().as_secs(), 172_800);
        for bad in ["", "5", "5x", "m5", "1.5s", "-3s", "5 m"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_zones_and_timestamps() {
        assert!(TimeZone::parse("Europe/Moscow").is_ok());
        let e = TimeZone::parse("Moscow").unwrap_err().to_string();
        assert!(e.contains("Europe/Moscow"), "{e}");
        assert!(Rfc3339::parse("2026-03-01T00:00:00Z").is_ok());
        assert!(Rfc3339::parse("2026-03-01").is_err());
    }
}
