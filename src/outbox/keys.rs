//! A Bloom filter over the keys the store holds (delivery ids, delivery keys, ticket ids), so
//! an accept deciding under the ingest log's lock can tell "certainly new" without a lookup:
//! during a burst almost every key is new, and a B-tree lookup per key is most of that
//! decision's work. "Maybe present" still goes to the tables, so the filter only ever saves
//! work, never changes an answer.

use std::hash::{BuildHasher, Hasher};

/// Bits per expected key: about a 1 % false-positive rate with `HASHES` probes.
const BITS_PER_KEY: usize = 10;
const HASHES: u64 = 7;

#[derive(Debug)]
pub(super) struct KeyFilter {
    bits: Vec<u64>,
    capacity: usize,
    len: usize,
    hasher: std::hash::RandomState,
}

impl KeyFilter {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1024);
        let words = (capacity * BITS_PER_KEY).div_ceil(64);
        KeyFilter {
            bits: vec![0; words],
            capacity,
            len: 0,
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Past its capacity the false-positive rate climbs; the owner rebuilds a larger one.
    pub(super) fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// Two independent halves of one 64-bit hash give every probe (Kirsch and Mitzenmacher).
    fn probes(&self, kind: u8, key: &str) -> impl Iterator<Item = usize> + use<> {
        let mut h = self.hasher.build_hasher();
        h.write_u8(kind);
        h.write(key.as_bytes());
        let hash = h.finish();
        let (a, b) = (hash & 0xffff_ffff, (hash >> 32) | 1);
        let n = (self.bits.len() * 64) as u64;
        (0..HASHES).map(move |i| (a.wrapping_add(i.wrapping_mul(b)) % n) as usize)
    }

    pub(super) fn insert(&mut self, kind: u8, key: &str) {
        for bit in self.probes(kind, key) {
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
        self.len += 1;
    }

    /// `false` means the key was never inserted.
    pub(super) fn may_contain(&self, kind: u8, key: &str) -> bool {
        self.probes(kind, key)
            .all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_keys_are_always_found_and_few_others_are() {
        let mut filter = KeyFilter::with_capacity(10_000);
        for i in 0..10_000 {
            filter.insert(1, &format!("key-{i}"));
        }
        assert!((0..10_000).all(|i| filter.may_contain(1, &format!("key-{i}"))));
        let false_positives = (0..10_000)
            .filter(|i| filter.may_contain(1, &format!("other-{i}")))
            .count();
        assert!(false_positives < 300, "{false_positives} of 10,000");
        // The kind is part of the key: a delivery id is not a ticket id.
        let kinds = (0..1_000)
            .filter(|i| filter.may_contain(2, &format!("key-{i}")))
            .count();
        assert!(kinds < 60, "{kinds} of 1,000");
        assert!(filter.is_full());
    }
}
