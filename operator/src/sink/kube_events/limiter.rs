//! At most one new Event per object and reason in a window.
//!
//! The first transition of a key is published; further ones within
//! [`EventLimiter::window`] of it are counted and dropped; the first one
//! after the window is published again, reporting how many were dropped.
//! Time is passed in, so the limiter is tested without waiting.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Per key: when its last Event was published and what was dropped since.
#[derive(Debug)]
pub struct EventLimiter<K> {
    window: Duration,
    last: HashMap<K, Published>,
}

#[derive(Debug)]
struct Published {
    at: Instant,
    dropped: u32,
}

/// What to do with one transition.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Publish it; `dropped` transitions of the same key were dropped
    /// since the previous Event.
    Publish { dropped: u32 },
    /// Within the window of the key's last Event: drop it (counted).
    Drop,
}

impl<K: Hash + Eq> EventLimiter<K> {
    /// A limiter allowing one Event per key per `window`.
    pub fn new(window: Duration) -> EventLimiter<K> {
        EventLimiter {
            window,
            last: HashMap::new(),
        }
    }

    /// The window this limiter enforces.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Decides a transition of `key` at `now`. Keys whose window has
    /// passed are forgotten along the way, so memory stays bounded by the
    /// keys published within one window.
    pub fn admit(&mut self, key: K, now: Instant) -> Admission {
        let window = self.window;
        let expired = |published: &Published| now.saturating_duration_since(published.at) >= window;
        if let Some(published) = self.last.get_mut(&key)
            && !expired(published)
        {
            published.dropped = published.dropped.saturating_add(1);
            return Admission::Drop;
        }
        let dropped = self.last.get(&key).map_or(0, |p| p.dropped);
        self.last.retain(|_, published| !expired(published));
        self.last.insert(
            key,
            Published {
                at: now,
                dropped: 0,
            },
        );
        Admission::Publish { dropped }
    }

    /// How many keys are remembered (for tests).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(300);

    #[test]
    fn one_event_per_key_per_window_and_the_dropped_are_counted() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut limiter = EventLimiter::new(WINDOW);
        assert_eq!(limiter.admit("a", at(0)), Admission::Publish { dropped: 0 });
        assert_eq!(limiter.admit("a", at(10)), Admission::Drop);
        assert_eq!(limiter.admit("a", at(299)), Admission::Drop);
        // Another key has its own window.
        assert_eq!(
            limiter.admit("b", at(20)),
            Admission::Publish { dropped: 0 }
        );
        // The window of "a" has passed: published, with what was dropped.
        assert_eq!(
            limiter.admit("a", at(300)),
            Admission::Publish { dropped: 2 }
        );
        assert_eq!(limiter.admit("a", at(301)), Admission::Drop);
        assert_eq!(
            limiter.admit("a", at(700)),
            Admission::Publish { dropped: 1 }
        );
        assert_eq!(
            limiter.admit("a", at(1100)),
            Admission::Publish { dropped: 0 }
        );
    }

    #[test]
    fn keys_past_their_window_are_forgotten() {
        let start = Instant::now();
        let mut limiter = EventLimiter::new(WINDOW);
        for key in 0..100 {
            limiter.admit(key, start);
        }
        assert_eq!(limiter.remembered(), 100);
        limiter.admit(1000, start + WINDOW);
        assert_eq!(limiter.remembered(), 1);
    }
}
