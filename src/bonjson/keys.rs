//! Duplicate-key detection after NFC normalization (the "secure" compliance level).
//!
//! Keys already in NFC (all ASCII keys are) are their own normal form, so the map itself
//! detects their duplicates. Only keys that are not in NFC need their normal form computed and
//! remembered, which keeps the common case free of extra work.

use std::collections::{HashMap, HashSet};

use unicode_normalization::UnicodeNormalization;

/// Whether `key` is already in Unicode Normalization Form C.
pub(crate) fn is_nfc(key: &str) -> bool {
    key.is_ascii() || unicode_normalization::is_nfc(key)
}

/// `key` in Unicode Normalization Form C.
pub(crate) fn to_nfc(key: &str) -> String {
    key.nfc().collect()
}

/// Normal forms of the non-NFC keys seen so far in one object.
#[derive(Default)]
pub(crate) struct NfcKeys {
    normalized: Option<HashSet<String>>,
}

impl NfcKeys {
    /// Checks a key about to join `map` (which holds keys as stored) against the keys already
    /// there; returns `false` if it collides after normalization. Exact repeats are left to
    /// the map itself.
    pub(crate) fn admit<V>(&mut self, key: &str, map: &HashMap<String, V>) -> bool {
        if is_nfc(key) {
            return !self
                .normalized
                .as_ref()
                .is_some_and(|set| set.contains(key));
        }
        let normal = to_nfc(key);
        if map.contains_key(&normal) {
            return false;
        }
        self.normalized
            .get_or_insert_with(HashSet::new)
            .insert(normal)
    }
}
