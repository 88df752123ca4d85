//! Cron schedules: five fields or an `@hourly`-style macro, as Kubernetes CronJob accepts.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::{InvalidValue, string_newtype};

/// Macros accepted in place of five fields, with their five-field meaning.
const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const FORM: &str = "write five fields `MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK` \
    (e.g. `*/5 * * * *` or `0 3 * * 1-5`) or one of @hourly, @daily, @midnight, \
    @weekly, @monthly, @yearly, @annually";

/// A cron schedule: five fields (`minute hour day-of-month month day-of-week`)
/// or a macro (`@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`,
/// `@yearly`, `@annually`). Seconds and years are refused, as in Kubernetes
/// CronJob. Day-of-month and day-of-week combine with OR when both are set
/// (Vixie cron). Keeps the text as written.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    text: String,
    cron: Cron,
}

impl CronSchedule {
    /// Parses a schedule.
    pub fn parse(text: &str) -> Result<CronSchedule, InvalidValue> {
        let trimmed = text.trim();
        let five = if trimmed.starts_with('@') {
            MACROS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
                .map(|(_, fields)| *fields)
                .ok_or_else(|| {
                    InvalidValue::new(format!("`{trimmed}` is not a known cron macro"), FORM)
                })?
        } else {
            let fields = trimmed.split_whitespace().count();
            if fields != 5 {
                let why = match fields {
                    0 => "the schedule is empty".to_owned(),
                    6 | 7 => format!(
                        "`{trimmed}` has {fields} fields; seconds and years are not supported"
                    ),
                    n => format!("`{trimmed}` has {n} fields, not 5"),
                };
                return Err(InvalidValue::new(why, FORM));
            }
            trimmed
        };
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(five).map_err(|error| {
            InvalidValue::new(
                format!("`{trimmed}` is not a valid cron expression ({error})"),
                FORM,
            )
        })?;
        Ok(CronSchedule {
            text: text.to_owned(),
            cron,
        })
    }

    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed schedule, for computing occurrences.
    pub fn cron(&self) -> &Cron {
        &self.cron
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for CronSchedule {}

string_newtype!(
    CronSchedule,
    expecting = "a cron schedule such as `*/5 * * * *` or `@daily`",
    schema = {
        "type": "string",
        "minLength": 1,
        "example": "*/5 * * * *"
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_and_macros_parse() {
        for ok in [
            "* * * * *",
            "*/5 0-6 1,15 * MON-FRI",
            "@daily",
            "@midnight",
            "@Hourly",
        ] {
            assert!(CronSchedule::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn seconds_and_garbage_are_refused_with_the_expected_form() {
        let six = CronSchedule::parse("0 */5 * * * *")
            .unwrap_err()
            .to_string();
        assert!(
            six.contains("seconds") && six.contains("five fields"),
            "{six}"
        );
        let junk = CronSchedule::parse("every minute").unwrap_err().to_string();
        assert!(junk.contains("2 fields"), "{junk}");
        let range = CronSchedule::parse("61 * * * *").unwrap_err().to_string();
        assert!(range.contains("not a valid cron"), "{range}");
        assert!(CronSchedule::parse("@often").is_err());
    }
}
