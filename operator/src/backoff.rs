//! The one retry schedule of the operator's writers: a first delay,
//! doubled per failure, capped, optionally jittered so retries of many
//! objects do not arrive together.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff: `first` before the first retry, doubling per
/// failure, never above `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: bool,
}

impl Backoff {
    /// `first`, doubling, capped at `max`; no jitter.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            jitter: false,
        }
    }

    /// The same schedule, each delay scattered over ±20 %.
    pub const fn jittered(self) -> Backoff {
        Backoff {
            jitter: true,
            ..self
        }
    }

    /// The wait before retry number `failures` (1-based; 0 counts as 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doubled = self
            .first
            .saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(self.max);
        if self.jitter {
            doubled.mul_f64(rand::rng().random_range(0.8..1.2))
        } else {
            doubled
        }
    }

    /// The longest delay before jitter.
    pub const fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

    #[test]
    fn delays_double_from_the_first_up_to_the_cap() {
        assert_eq!(PLAIN.delay(0), Duration::from_secs(1));
        assert_eq!(PLAIN.delay(1), Duration::from_secs(1));
        assert_eq!(PLAIN.delay(3), Duration::from_secs(4));
        assert_eq!(PLAIN.delay(5), Duration::from_secs(16));
        assert_eq!(PLAIN.delay(6), Duration::from_secs(30));
        assert_eq!(PLAIN.delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_a_fifth_either_way() {
        let jittered = Backoff::new(Duration::from_millis(200), Duration::from_secs(30)).jittered();
        for _ in 0..200 {
            let first = jittered.delay(1);
            assert!(first >= Duration::from_millis(160) && first <= Duration::from_millis(240));
            let fourth = jittered.delay(4);
            assert!(fourth >= Duration::from_millis(1280) && fourth <= Duration::from_millis(1920));
            assert!(jittered.delay(40) <= jittered.max().mul_f64(1.2));
        }
    }
}
