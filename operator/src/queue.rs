//! The placement work queue: a set of rooms to (re)decide, deduplicated, in arrival order.
//!
//! Watch handlers and the node loop push; the placer takes batches. Pushing the same room many
//! times before the placer runs costs one decision, which is what keeps a burst of node events
//! from turning into a storm of writes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::keys::RoomKey;

#[derive(Default)]
struct Inner {
    queued: HashSet<RoomKey>,
    order: VecDeque<RoomKey>,
    /// When each room was first seen needing a decision, for the latency histogram.
    first_seen: HashMap<RoomKey, Instant>,
}

#[derive(Clone, Default)]
pub struct WorkQueue {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

impl WorkQueue {
    pub fn push(&self, key: RoomKey) {
        self.push_many(std::iter::once(key));
    }

    pub fn push_many(&self, keys: impl IntoIterator<Item = RoomKey>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let now = Instant::now();
        let mut pushed = false;
        for key in keys {
            inner.first_seen.entry(key.clone()).or_insert(now);
            if inner.queued.insert(key.clone()) {
                inner.order.push_back(key);
                pushed = true;
            }
        }
        drop(inner);
        if pushed {
            self.notify.notify_one();
        }
    }

    /// Pushes the keys again after `delay`, for conflicts and transient errors.
    pub fn push_after(&self, keys: Vec<RoomKey>, delay: Duration) {
        if keys.is_empty() {
            return;
        }
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.push_many(keys);
        });
    }

    /// Takes up to `max` keys, waiting until there is at least one.
    pub async fn take(&self, max: usize) -> Vec<RoomKey> {
        loop {
            let notified = self.notify.notified();
            if let Ok(mut inner) = self.inner.lock() {
                let n = inner.order.len().min(max);
                if n > 0 {
                    let batch: Vec<RoomKey> = inner.order.drain(..n).collect();
                    for key in &batch {
                        inner.queued.remove(key);
                    }
                    if !inner.order.is_empty() {
                        self.notify.notify_one();
                    }
                    return batch;
                }
            }
            notified.await;
        }
    }

    /// Ends the latency clock of a room, returning how long it waited.
    pub fn finish(&self, key: &RoomKey) -> Option<Duration> {
        let mut inner = self.inner.lock().ok()?;
        inner.first_seen.remove(key).map(|t| t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> RoomKey {
        RoomKey::new("ns", n)
    }

    #[tokio::test]
    async fn deduplicates_and_keeps_order() {
        let q = WorkQueue::default();
        q.push_many([key("a"), key("b"), key("a"), key("c")]);
        assert_eq!(q.take(2).await, vec![key("a"), key("b")]);
        q.push(key("a"));
        assert_eq!(q.take(10).await, vec![key("c"), key("a")]);
        assert!(q.finish(&key("a")).is_some());
        assert!(q.finish(&key("a")).is_none());
    }
}
