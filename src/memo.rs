//! A bounded memo for pure functions of a string. In a storm thousands of tickets come from
//! a few alert rules and carry the same rule text (a generator URL, a PromQL expression):
//! the work derived from it is done once per rule, not once per ticket.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug)]
pub(crate) struct Memo<V> {
    max: usize,
    entries: Mutex<HashMap<String, V>>,
}

impl<V: Clone> Memo<V> {
    /// Remembers at most `max` inputs; past that it starts again empty, which keeps the
    /// bound without bookkeeping (the storm's handful of rules is back after one miss each).
    pub(crate) fn new(max: usize) -> Self {
        Memo {
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `f(key)`, computed at most once while `key` is remembered. `f` must be pure: a
    /// remembered value is returned for as long as the entry lives.
    pub(crate) fn get(&self, key: &str, f: impl FnOnce(&str) -> V) -> V {
        if let Some(v) = self.lock().get(key) {
            return v.clone();
        }
        // Computed outside the lock: two racing misses both compute, and agree.
        let value = f(key);
        let mut entries = self.lock();
        if entries.len() >= self.max {
            entries.clear();
        }
        entries.insert(key.to_string(), value.clone());
        value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, V>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn computes_once_per_key_and_stays_bounded() {
        let memo = Memo::new(2);
        let calls = Cell::new(0);
        let len = |s: &str| {
            calls.set(calls.get() + 1);
            s.len()
        };
        assert_eq!(memo.get("abc", len), 3);
        assert_eq!(memo.get("abc", len), 3);
        assert_eq!(calls.get(), 1);
        assert_eq!(memo.get("de", len), 2);
        // A third key clears the memo rather than growing it.
        assert_eq!(memo.get("f", len), 1);
        assert_eq!(memo.lock().len(), 1);
        assert_eq!(memo.get("abc", len), 3);
        assert_eq!(calls.get(), 4);
    }
}
