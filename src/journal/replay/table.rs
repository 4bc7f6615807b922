//! Replay's key table: the last operation seen for each key, in an open-addressing table whose
//! slot for a key is known from its hash before the key is applied.
//!
//! Replay reads records in file order and their keys are scattered over a table far larger
//! than the CPU's caches, so nearly every insert into a general-purpose map waited for memory
//! (perf: a third of an open). Here the slot a key probes first is `hash & mask`, so the scan
//! computes the hashes of a run of records, [`prefetch`](KeyTable::prefetch)es their slots,
//! and only then applies them: the loads overlap instead of queueing one after another.
//!
//! A worker that reads from the first record removes deleted keys (entries after them move
//! back to close the gap, so probes stay short); one that starts further on keeps deletions as
//! entries (`Pending::value == None`), which everything reading a table skips.

use super::{Hashed, Pending};

/// One slot: empty while `key.hash == EMPTY`.
type Slot<'a> = (Hashed<'a>, Pending<'a>);

/// The hash value that marks an empty slot; a key whose hash is this is stored as [`REMAP`].
const EMPTY: u64 = 0;
const REMAP: u64 = 1;

/// Slots a new table starts with (a power of two): small, since a clear record starts a new
/// table and a journal may hold millions of them.
const INITIAL_SLOTS: usize = 16;

/// The keys one replay worker has seen, and the last operation for each.
pub(super) struct KeyTable<'a> {
    slots: Vec<Slot<'a>>,
    len: usize,
    /// The keys it was sized for, which a table started over after a clear is sized for too.
    expected: usize,
}

impl<'a> KeyTable<'a> {
    #[cfg(test)]
    pub(super) fn new() -> Self {
        KeyTable::with_capacity(0)
    }

    /// A table that holds `keys` keys without growing (a hint: it grows past them as needed;
    /// hints above 2^32 keys are taken as 2^32).
    pub(super) fn with_capacity(keys: usize) -> Self {
        let keys = keys.min(1 << 32);
        let slots = keys
            .saturating_mul(8)
            .div_ceil(7)
            .saturating_add(1)
            .checked_next_power_of_two()
            .unwrap_or(INITIAL_SLOTS)
            .max(INITIAL_SLOTS);
        KeyTable {
            slots: vec![vacant(); slots],
            len: 0,
            expected: keys,
        }
    }

    /// Keys held (deletions included).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Asks the CPU to fetch the slot `key` probes first (a hint: changes nothing).
    #[inline]
    pub(super) fn prefetch(&self, hash: u64) {
        let at = self
            .slots
            .as_ptr()
            .wrapping_add(index(stored(hash), self.mask()));
        crate::prefetch::prefetch(at.cast::<u8>());
        // A slot may straddle two cache lines.
        crate::prefetch::prefetch(at.cast::<u8>().wrapping_add(size_of::<Slot<'a>>() - 1));
    }

    /// Sets the last operation for `key`.
    pub(super) fn insert(&mut self, mut key: Hashed<'a>, pending: Pending<'a>) {
        key.hash = stored(key.hash);
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = index(key.hash, mask);
        loop {
            let Some(slot) = self.slots.get_mut(i) else {
                // Unreachable: `i` is masked to the table's power-of-two length.
                return;
            };
            if slot.0.hash == EMPTY {
                *slot = (key, pending);
                self.len += 1;
                return;
            }
            if slot.0 == key {
                slot.1 = pending;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Whether `key` has an entry (a kept deletion counts).
    pub(super) fn contains_key(&self, key: &Hashed<'_>) -> bool {
        self.find(key).is_some()
    }

    /// Forgets `key`, moving later entries of its probe run back into the gap (backward-shift
    /// deletion: no markers are left behind, so probes stay as short as the entries make them).
    pub(super) fn remove(&mut self, key: &Hashed<'_>) {
        let Some(mut gap) = self.find(key) else {
            return;
        };
        let mask = self.mask();
        let mut next = (gap + 1) & mask;
        loop {
            let Some(&moved) = self.slots.get(next) else {
                return;
            };
            if moved.0.hash == EMPTY {
                break;
            }
            // An entry may move back into the gap only if the gap lies on its probe path: its
            // home slot is not cyclically within (gap, next].
            let home = index(moved.0.hash, mask);
            let stays = if gap <= next {
                gap < home && home <= next
            } else {
                gap < home || home <= next
            };
            if !stays {
                if let Some(slot) = self.slots.get_mut(gap) {
                    *slot = moved;
                }
                gap = next;
            }
            next = (next + 1) & mask;
        }
        if let Some(slot) = self.slots.get_mut(gap) {
            *slot = vacant();
        }
        self.len -= 1;
    }

    /// Forgets every key (a clear record).
    pub(super) fn clear(&mut self) {
        if self.len > 0 {
            *self = KeyTable::with_capacity(self.expected);
        }
    }

    /// The slot holding `key`, if any.
    fn find(&self, key: &Hashed<'_>) -> Option<usize> {
        let hash = stored(key.hash);
        let mask = self.mask();
        let mut i = index(hash, mask);
        loop {
            let slot = self.slots.get(i)?;
            if slot.0.hash == EMPTY {
                return None;
            }
            if slot.0.hash == hash && slot.0.key == key.key {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Every entry, deletions included, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Hashed<'a>, &Pending<'a>)> {
        self.slots
            .iter()
            .filter(|slot| slot.0.hash != EMPTY)
            .map(|(key, pending)| (key, pending))
    }

    /// Every entry, deletions included, in no particular order.
    pub(super) fn into_entries(self) -> impl Iterator<Item = (Hashed<'a>, Pending<'a>)> {
        let len = self.len;
        Entries {
            inner: self.slots.into_iter(),
            left: len,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn grow(&mut self) {
        let doubled = vec![vacant(); self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, doubled);
        let mask = self.mask();
        // The keys are distinct and their hashes already stored: each goes into the first
        // empty slot of its probe run, with no comparison.
        for slot in old.into_iter().filter(|slot| slot.0.hash != EMPTY) {
            let mut i = index(slot.0.hash, mask);
            while self.slots.get(i).is_some_and(|s| s.0.hash != EMPTY) {
                i = (i + 1) & mask;
            }
            if let Some(empty) = self.slots.get_mut(i) {
                *empty = slot;
            }
        }
    }
}

/// The occupied slots of a table, by value, with an exact length.
struct Entries<'a> {
    inner: std::vec::IntoIter<Slot<'a>>,
    left: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Slot<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let slot = self.inner.find(|slot| slot.0.hash != EMPTY)?;
        self.left -= 1;
        Some(slot)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

fn vacant<'a>() -> Slot<'a> {
    (
        Hashed {
            hash: EMPTY,
            key: super::Key::Inline(0, [0; super::INLINE_KEY]),
        },
        Pending {
            value: None,
            offset: 0,
        },
    )
}

fn stored(hash: u64) -> u64 {
    if hash == EMPTY { REMAP } else { hash }
}

/// The slot a hash probes first: its high bits, since the low ones of a multiplicative hash
/// are the weakest.
fn index(hash: u64, mask: usize) -> usize {
    (hash.rotate_left(26) as usize) & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hashed(key: &[u8], hash: u64) -> Hashed<'_> {
        Hashed {
            hash,
            key: super::super::Key::new(key),
        }
    }

    fn put(offset: usize) -> Pending<'static> {
        Pending {
            value: Some(b"v"),
            offset,
        }
    }

    /// Checks `table` against `model` after the same operations on keys hashed by `hash_of`.
    fn check(table: KeyTable<'_>, model: &HashMap<Vec<u8>, usize>, hash_of: impl Fn(&[u8]) -> u64) {
        assert_eq!(table.len(), model.len());
        for key in model.keys() {
            assert!(table.contains_key(&hashed(key, hash_of(key))));
        }
        assert!(!table.contains_key(&hashed(b"never-inserted", hash_of(b"never-inserted"))));
        let seen: HashMap<Vec<u8>, usize> = table
            .iter()
            .map(|(k, p)| (k.key.as_bytes().to_vec(), p.offset))
            .collect();
        assert_eq!(&seen, model);
        let entries = table.into_entries();
        assert_eq!(entries.size_hint(), (model.len(), Some(model.len())));
        let seen: HashMap<Vec<u8>, usize> = entries
            .map(|(k, p)| (k.key.as_bytes().to_vec(), p.offset))
            .collect();
        assert_eq!(&seen, model);
    }

    #[test]
    fn agrees_with_a_hash_map_through_collisions_and_a_clear() {
        // Few distinct hashes: long probe runs, different keys with equal hashes, and hash 0
        // (the empty marker) stored and found. Keys long and short (inline and not).
        let hash_of = |key: &[u8]| key.iter().map(|&b| u64::from(b)).sum::<u64>() % 97;
        let keys: Vec<Vec<u8>> = (0..1500_u32)
            .map(|i| format!("k{i}{}", "x".repeat((i % 40) as usize)).into_bytes())
            .collect();
        assert!(keys.iter().any(|k| hash_of(k) == 0));
        let mut table = KeyTable::new();
        let mut model = HashMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for step in 0..10_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = &keys[(state % keys.len() as u64) as usize];
            if step == 6_000 {
                table.clear();
                model.clear();
            }
            if state.is_multiple_of(3) {
                table.remove(&hashed(key, hash_of(key)));
                model.remove(key);
            } else {
                table.insert(hashed(key, hash_of(key)), put(step));
                model.insert(key.clone(), step);
            }
        }
        check(table, &model, hash_of);
    }

    /// A hash whose first slot in a 16-slot table is `home`.
    fn homed(home: usize) -> u64 {
        (home as u64).rotate_right(26)
    }

    /// Probe runs that wrap past the last slot: removing any entry leaves every other one
    /// findable. Entries move back across the wrap only onto their probe path (one whose
    /// first slot is just past the gap stays), and one whose first slot is the gap moves in.
    #[test]
    fn removal_closes_gaps_in_runs_that_wrap_around() {
        // Runs filling slots 14, 15, 0, 1, 2(, 3): entries homed at 0 sit at 0 and 1 in the
        // first; in the second, entries homed at 15 wrap to 0 and 1.
        for homes in [&[14, 14, 0, 0, 1][..], &[14, 14, 15, 15, 0, 1]] {
            let keys: Vec<String> = (0..homes.len()).map(|i| format!("w{i}")).collect();
            for victim in 0..keys.len() {
                let mut table = KeyTable::new();
                assert_eq!(table.slots.len(), 16);
                for (key, &home) in keys.iter().zip(homes) {
                    table.insert(hashed(key.as_bytes(), homed(home)), put(home));
                }
                table.remove(&hashed(keys[victim].as_bytes(), homed(homes[victim])));
                assert_eq!(table.len(), keys.len() - 1);
                for (i, (key, &home)) in keys.iter().zip(homes).enumerate() {
                    let found = table.contains_key(&hashed(key.as_bytes(), homed(home)));
                    assert_eq!(found, i != victim, "{homes:?}, {victim} removed: key {i}");
                }
                // No empty slot between any entry's first slot and where it sits.
                for (at, slot) in table.slots.iter().enumerate() {
                    if slot.0.hash != EMPTY {
                        let mut probe = index(slot.0.hash, table.mask());
                        while probe != at {
                            assert!(table.slots[probe].0.hash != EMPTY, "gap before {at}");
                            probe = (probe + 1) % 16;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn clearing_an_empty_table_allocates_nothing_and_a_clear_starts_small() {
        let mut table = KeyTable::new();
        let slots = table.slots.as_ptr();
        table.clear();
        assert_eq!(table.slots.as_ptr(), slots);
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        for (i, key) in keys.iter().enumerate() {
            table.insert(hashed(key.as_bytes(), i as u64), put(0));
        }
        table.clear();
        assert_eq!((table.len(), table.slots.len()), (0, INITIAL_SLOTS));
    }

    #[test]
    fn grows_past_many_thousands_of_keys() {
        let state = foldhash::fast::RandomState::default();
        let hash_of = |key: &[u8]| std::hash::BuildHasher::hash_one(&state, key);
        let keys: Vec<Vec<u8>> = (0..100_000_u32)
            .map(|i| format!("key_{i:06}").into_bytes())
            .collect();
        let mut table = KeyTable::new();
        let mut model = HashMap::new();
        for round in 0..2 {
            for (i, key) in keys.iter().enumerate() {
                table.insert(hashed(key, hash_of(key)), put(round * keys.len() + i));
                model.insert(key.clone(), round * keys.len() + i);
            }
        }
        // Removing every third key leaves probe runs the others are still found through.
        for key in keys.iter().step_by(3) {
            table.remove(&hashed(key, hash_of(key)));
            model.remove(key);
        }
        check(table, &model, hash_of);
    }
}
