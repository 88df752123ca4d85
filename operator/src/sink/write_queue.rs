//! The queue behind the background writers (statuses, credentials
//! Secrets): the newest value per key, the keys ready to write in the order
//! they became ready, and the keys waiting for a retry.
//!
//! Contract: a key is in the queue until its newest value is written or
//! dropped; submitting a newer value for a queued key (ready, waiting for a
//! retry or in flight) replaces the value without queueing the key twice.
//! The writer decides what a failure means and how long to wait.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Keys with the value to write, ready or waiting for a retry.
pub struct WriteQueue<K, V> {
    pending: HashMap<K, Queued<V>>,
    ready: VecDeque<K>,
    delayed: BinaryHeap<Reverse<(Instant, K)>>,
}

/// A key's newest value and its failed attempts in a row.
struct Queued<V> {
    value: V,
    failures: u32,
}

impl<K: Clone + Eq + Hash + Ord, V: Clone> WriteQueue<K, V> {
    /// An empty queue.
    pub fn new() -> Self {
        WriteQueue {
            pending: HashMap::new(),
            ready: VecDeque::new(),
            delayed: BinaryHeap::new(),
        }
    }

    /// Queues `value` for `key`; a queued key keeps its place and gets the
    /// newer value.
    pub fn submit(&mut self, key: K, value: V) {
        match self.pending.get_mut(&key) {
            Some(queued) => queued.value = value,
            None => {
                self.pending
                    .insert(key.clone(), Queued { value, failures: 0 });
                self.ready.push_back(key);
            }
        }
    }

    /// The next ready key and its current value (it stays queued until
    /// [`WriteQueue::written`] or [`WriteQueue::remove`]).
    pub fn pop_ready(&mut self) -> Option<(K, V)> {
        while let Some(key) = self.ready.pop_front() {
            if let Some(queued) = self.pending.get(&key) {
                return Some((key, queued.value.clone()));
            }
        }
        None
    }

    /// The value now queued for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.pending.get(key).map(|queued| &queued.value)
    }

    /// `key` was written with the value the writer took: done, unless
    /// `replaced` (a newer value came meanwhile), which is ready at once.
    pub fn written(&mut self, key: K, replaced: bool) {
        if !replaced {
            self.pending.remove(&key);
        } else if let Some(queued) = self.pending.get_mut(&key) {
            queued.failures = 0;
            self.ready.push_back(key);
        }
    }

    /// `key` failed once more: it is ready again after `delay(failures)`
    /// (failures in a row, from 1), which is returned.
    pub fn retry(&mut self, key: K, delay: impl FnOnce(u32) -> Duration) -> Option<Duration> {
        let queued = self.pending.get_mut(&key)?;
        queued.failures += 1;
        let delay = delay(queued.failures);
        self.delayed.push(Reverse((Instant::now() + delay, key)));
        Some(delay)
    }

    /// Drops `key` and its value.
    pub fn remove(&mut self, key: &K) {
        self.pending.remove(key);
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.pending.clear();
        self.ready.clear();
        self.delayed.clear();
    }

    /// Keys queued (ready, waiting or in flight).
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// When the earliest waiting key becomes ready.
    pub fn next_retry(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((at, _))| *at)
    }

    /// Makes every key whose retry time has come ready.
    pub fn promote_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.delayed.peek()
            && *at <= now
        {
            if let Some(Reverse((_, key))) = self.delayed.pop() {
                self.ready.push_back(key);
            }
        }
    }
}

impl<K: Clone + Eq + Hash + Ord, V: Clone> Default for WriteQueue<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_value_replaces_a_queued_one_without_queueing_twice() {
        let mut queue = WriteQueue::new();
        queue.submit("a", 1);
        queue.submit("b", 1);
        queue.submit("a", 2);
        assert_eq!(queue.pop_ready(), Some(("a", 2)));
        assert_eq!(queue.pop_ready(), Some(("b", 1)));
        assert_eq!(queue.pop_ready(), None);
        queue.written("b", false);
        queue.written("a", true);
        assert_eq!(queue.pop_ready(), Some(("a", 2)), "replaced: ready again");
        assert_eq!(queue.len(), 1);
    }

    #[tokio::test]
    async fn a_failed_key_is_ready_again_after_its_delay() {
        let step = |failures: u32| Duration::from_millis(40 * u64::from(failures));
        let mut queue = WriteQueue::new();
        queue.submit("a", 1);
        assert_eq!(queue.pop_ready(), Some(("a", 1)));
        let delay = queue.retry("a", step);
        assert_eq!(delay, Some(Duration::from_millis(40)));
        queue.promote_due();
        assert_eq!(queue.pop_ready(), None, "not before its time");
        tokio::time::sleep(Duration::from_millis(50)).await;
        queue.promote_due();
        assert_eq!(queue.pop_ready(), Some(("a", 1)));
        let delay = queue.retry("a", step);
        assert_eq!(delay, Some(Duration::from_millis(80)), "failures count up");
    }
}
