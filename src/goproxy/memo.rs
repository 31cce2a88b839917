//! A bounded in-memory map in front of the index, so a hit on a hot module
//! costs neither an SQLite read nor a file open. Holds only copies of what the
//! store already has: losing any entry at any time is harmless. One that
//! copies rows pointing at blobs follows the index's deletion generation and
//! empties when it moves (an eviction, `mirror cache gc` in another process).
//! Entries another replica replaces are forgotten when the store hears of it
//! (`forget`, `clear`); an entry read before then is not kept (`insert_read`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::Generation;
use crate::sync::Unpoisoned;

/// Bookkeeping bytes charged per entry besides the key and the value's own weight.
const ENTRY_OVERHEAD: usize = 96;

pub struct Memo<V> {
    inner: Mutex<Inner<V>>,
    budget: usize,
    /// The generation followed, and the one the entries were read under.
    generation: Option<Generation>,
    seen: AtomicU64,
    /// Entries forgotten on another replica's word: a read before one is not kept.
    heard: AtomicU64,
}

struct Inner<V> {
    map: HashMap<String, (V, usize)>,
    weight: usize,
}

impl<V: Clone> Memo<V> {
    /// A memo holding at most about `budget` bytes.
    pub fn new(budget: usize) -> Memo<V> {
        Memo {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                weight: 0,
            }),
            budget,
            generation: None,
            seen: AtomicU64::new(0),
            heard: AtomicU64::new(0),
        }
    }

    /// A memo of rows that blob deletions may remove: emptied whenever
    /// `generation` moves.
    pub fn following(budget: usize, generation: Generation) -> Memo<V> {
        Memo {
            seen: AtomicU64::new(generation.current()),
            generation: Some(generation),
            ..Memo::new(budget)
        }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        let mut inner = self.inner.lock().unpoisoned();
        if let Some(generation) = &self.generation {
            let current = generation.current();
            if self.seen.load(Ordering::Acquire) != current {
                inner.map.clear();
                inner.weight = 0;
                self.seen.store(current, Ordering::Release);
            }
        }
        inner.map.get(key).map(|(value, _)| value.clone())
    }

    /// Adds or replaces `key`; `weight` is the value's size in bytes. When the
    /// budget is exceeded, about a quarter of the entries go, in the map's
    /// (random) order: cheaper than LRU bookkeeping on every hit, and as good
    /// for a cache whose misses cost one indexed read.
    pub fn insert(&self, key: String, value: V, weight: usize) {
        self.insert_unless(None, key, value, weight);
    }

    /// Taken before reading what is then inserted with `insert_read`.
    pub fn stamp(&self) -> u64 {
        self.heard.load(Ordering::Acquire)
    }

    /// `insert`, unless an entry was forgotten or the memo cleared since `read`.
    pub fn insert_read(&self, read: u64, key: String, value: V, weight: usize) {
        self.insert_unless(Some(read), key, value, weight);
    }

    fn insert_unless(&self, read: Option<u64>, key: String, value: V, weight: usize) {
        let weight = weight + key.len() + ENTRY_OVERHEAD;
        if weight > self.budget / 8 {
            // Too big to keep, but an older value must not stand in for it.
            self.remove(&key);
            return;
        }
        let mut inner = self.inner.lock().unpoisoned();
        if read.is_some_and(|read| read != self.heard.load(Ordering::Acquire)) {
            return;
        }
        if let Some((_, old)) = inner.map.insert(key, (value, weight)) {
            inner.weight -= old;
        }
        inner.weight += weight;
        if inner.weight > self.budget {
            let target = self.budget / 4 * 3;
            let mut total = inner.weight;
            inner.map.retain(|_, (_, w)| {
                if total <= target {
                    return true;
                }
                total -= *w;
                false
            });
            inner.weight = total;
        }
    }

    pub fn remove(&self, key: &str) {
        let mut inner = self.inner.lock().unpoisoned();
        if let Some((_, weight)) = inner.map.remove(key) {
            inner.weight -= weight;
        }
    }

    /// Removes `key` because it changed elsewhere.
    pub fn forget(&self, key: &str) {
        self.heard.fetch_add(1, Ordering::AcqRel);
        self.remove(key);
    }

    /// Drops everything, because changes elsewhere may have been missed.
    pub fn clear(&self) {
        self.heard.fetch_add(1, Ordering::AcqRel);
        let mut inner = self.inner.lock().unpoisoned();
        inner.map.clear();
        inner.weight = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Origin;

    #[test]
    fn the_budget_holds_and_replacements_are_counted_once() {
        let memo = Memo::new(100_000);
        for i in 0..10_000 {
            memo.insert(format!("key-{i}"), i, 100);
        }
        let inner = memo.inner.lock().unwrap();
        assert!(inner.weight <= 100_000);
        let actual: usize = inner.map.values().map(|(_, w)| *w).sum();
        assert_eq!(actual, inner.weight);
        drop(inner);
        memo.insert("same".into(), 1, 10);
        memo.insert("same".into(), 2, 10);
        assert_eq!(memo.get("same"), Some(2));
        memo.remove("same");
        assert_eq!(memo.get("same"), None);
        assert!(!memo.inner.lock().unwrap().map.is_empty());
    }

    #[tokio::test]
    async fn a_following_memo_empties_when_rows_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).await.unwrap();
        let memo = Memo::following(100_000, store.generation());
        store.blobs().put(b"cached", Origin::Cached).await.unwrap();
        memo.insert("kept".into(), 1, 10);
        assert_eq!(memo.get("kept"), Some(1));
        store.evict_to(0, false).await.unwrap();
        assert_eq!(memo.get("kept"), None);
        memo.insert("kept".into(), 2, 10);
        assert_eq!(
            memo.get("kept"),
            Some(2),
            "refilled under the new generation"
        );
    }

    #[test]
    fn an_entry_read_before_it_was_forgotten_is_not_kept() {
        let memo = Memo::new(100_000);
        let read = memo.stamp();
        memo.forget("list m");
        memo.insert_read(read, "list m".into(), 1, 10);
        assert_eq!(memo.get("list m"), None);
        memo.insert_read(memo.stamp(), "list m".into(), 2, 10);
        assert_eq!(memo.get("list m"), Some(2));
        memo.clear();
        assert_eq!(memo.get("list m"), None);
        assert_eq!(memo.inner.lock().unwrap().weight, 0);
    }

    #[test]
    fn oversized_values_are_not_kept() {
        let memo = Memo::new(8_000);
        memo.insert("big".into(), 0, 5_000);
        assert_eq!(memo.get("big"), None);
    }
}
