//! [`Throttle`]: at most one expensive whole-state write per interval.
//!
//! Some files hold a node's whole state — the assignment kept for a start
//! without the operator, xray's fallback config — and rendering one with
//! 100,000 users costs about as much as everything else a change does. A
//! change after a quiet interval is written at once (leading edge); changes
//! that follow within the interval are written together when it ends
//! (trailing edge), so nothing is left unwritten and a burst costs one
//! write per interval, not one per change.

use tokio::time::{Duration, Instant};

/// Leading- and trailing-edge limit on one kind of write. Pure state: the
/// caller reads the clock and performs the write.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    pending: bool,
}

impl Throttle {
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            last: None,
            pending: false,
        }
    }

    /// The state changed at `now`: `true` when the write is to happen now
    /// (counted as done), `false` when it waits for [`Throttle::due_at`].
    pub fn changed(&mut self, now: Instant) -> bool {
        if self.last.is_some_and(|last| now < last + self.interval) {
            self.pending = true;
            return false;
        }
        self.last = Some(now);
        self.pending = false;
        true
    }

    /// When the waiting write is due; `None` when nothing waits.
    pub fn due_at(&self) -> Option<Instant> {
        match (self.pending, self.last) {
            (true, Some(last)) => Some(last + self.interval),
            _ => None,
        }
    }

    /// Whether a write waits (to be done before stopping).
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    /// The waiting write was done at `now`.
    pub fn wrote(&mut self, now: Instant) {
        self.last = Some(now);
        self.pending = false;
    }
}

/// Waits until `at`; forever when `None` (a `select!` branch that is off).
pub async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_change_writes_at_once_and_a_burst_once_more_at_the_end() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut throttle = Throttle::new(second);
        assert_eq!(throttle.due_at(), None);
        assert!(throttle.changed(start), "leading edge");
        assert!(!throttle.is_pending());
        for ms in [100, 300, 900] {
            assert!(!throttle.changed(start + Duration::from_millis(ms)));
        }
        assert!(throttle.is_pending());
        assert_eq!(throttle.due_at(), Some(start + second), "trailing edge");
        throttle.wrote(start + second);
        assert_eq!(throttle.due_at(), None);
        assert!(!throttle.changed(start + Duration::from_millis(1500)));
        assert_eq!(throttle.due_at(), Some(start + 2 * second));
        assert!(
            throttle.changed(start + 3 * second),
            "a change a whole interval after the last write goes at once"
        );
        assert_eq!(throttle.due_at(), None);
    }
}
