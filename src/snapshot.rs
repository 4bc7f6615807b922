//! The in-memory map and its publication to lock-free readers.
//!
//! Readers `load` the published version through `arc-swap` and look up in it without locking;
//! a [`Snapshot`] is a counted reference to one version. The writer keeps two versions, left-
//! right style: the published one and a spare. A write applies its change to the spare *in
//! place* (a persistent map mutates nodes it owns alone without copying them) and swaps it in;
//! the version it replaced becomes the spare and gets the same change at once if no reader
//! holds it any more, or at the next write if one does (the change waits as the *lag*). If a
//! reader or a snapshot still holds the spare when a write needs it, the writer takes an O(1)
//! clone of it instead and the persistent map copies only the nodes it then changes, each at
//! most once: no write ever copies the whole map, however long a snapshot is held.
//! `docs/design.md` has the measurements behind this choice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::sync::{Arc, ArcSwap};

use crate::Value;

/// The map type behind every version.
///
/// Hashed with foldhash's quality variant, randomly seeded per map: about 380 instructions per
/// write cheaper than SipHash across the two inserts of a write (`docs/design.md`). It is the
/// hasher `hashbrown` ships by default; like it, it resists hash flooding through its random
/// seed, without SipHash's cryptographic argument.
pub(crate) type Map = imbl::GenericHashMap<
    std::sync::Arc<str>,
    std::sync::Arc<Value>,
    foldhash::quality::RandomState,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// One published version: the map after `seq` writes since open (writes that appended a
/// record).
pub(crate) struct Version {
    pub(crate) map: Map,
    pub(crate) seq: u64,
}

/// One change, applied to both copies of the map (values are reference-counted, so applying
/// it twice copies nothing).
pub(crate) enum Change {
    Put(ChangeKey, std::sync::Arc<Value>),
    Delete(ChangeKey),
    Clear,
}

/// A key as a change carries it: the caller's string, and the map's shared `Arc<str>` once a
/// copy of the map needed one (the key was new). Overwriting or removing a present key never
/// allocates one: the map keeps the key it has.
pub(crate) struct ChangeKey {
    text: String,
    shared: Option<std::sync::Arc<str>>,
}

impl ChangeKey {
    pub(crate) fn new(text: String) -> Self {
        ChangeKey { text, shared: None }
    }
}

/// How long the writer waits for a reader to let go of the spare before cloning it instead.
const SPARE_SPIN: Duration = Duration::from_micros(1);

/// The writer's side of publication: the spare version and the changes it lags by (none
/// when it was caught up right after the swap).
pub(crate) struct Publisher {
    spare: Option<Arc<Version>>,
    lag: Vec<Change>,
    /// Writes that found the spare held and cloned it (for the design notes and stats).
    pub(crate) pinned_spares: u64,
    /// Maps a clear replaced, for the writer to drop once it has released the writer lock:
    /// freeing a whole map is O(n) and must not stall the other writers.
    pub(crate) garbage: Vec<Map>,
}

impl Publisher {
    /// Starts publication of `map` as version `seq`; returns the first published version.
    pub(crate) fn new(map: Map, seq: u64) -> (Arc<Version>, Publisher) {
        let published = Arc::new(Version {
            map: map.clone(),
            seq,
        });
        let spare = Arc::new(Version { map, seq });
        (
            published,
            Publisher {
                spare: Some(spare),
                lag: Vec::new(),
                pinned_spares: 0,
                garbage: Vec::new(),
            },
        )
    }

    /// Applies `changes` as version `seq` and publishes it in `cell`. Returns the value the
    /// first change replaced when `want_previous` (a single insert or remove). `changes` is
    /// handed back empty, so its allocation is reused. Must be called with the writer lock
    /// held (one publisher at a time).
    pub(crate) fn publish(
        &mut self,
        cell: &ArcSwap<Version>,
        changes: &mut Vec<Change>,
        seq: u64,
        want_previous: bool,
    ) -> Option<Value> {
        let mut spare = match self.spare.take() {
            Some(spare) => spare,
            None => cell.load_full(),
        };
        if Arc::get_mut(&mut spare).is_none() && !cfg!(loom) {
            let started = Instant::now();
            while Arc::get_mut(&mut spare).is_none() && started.elapsed() < SPARE_SPIN {
                std::hint::spin_loop();
            }
        }
        if Arc::get_mut(&mut spare).is_none() {
            // Still held (a slow reader or a snapshot): clone it in O(1); the map copies only
            // the nodes it changes from here on.
            self.pinned_spares += 1;
            spare = Arc::new(Version {
                map: spare.map.clone(),
                seq: spare.seq,
            });
        }
        let mut previous = None;
        if let Some(version) = Arc::get_mut(&mut spare) {
            for mut change in self.lag.drain(..) {
                apply(&mut version.map, &mut change, &mut self.garbage);
            }
            for (i, change) in changes.iter_mut().enumerate() {
                let old = apply(&mut version.map, change, &mut self.garbage);
                if let Some(old) = &old {
                    // The value this change replaced is touched again below, when the other
                    // copy lets go of it and it is handed back or freed; it was written long
                    // ago and is out of the cache by now (perf: ~10% of a write waited for it).
                    // Fetch it while the swap runs. Its counts sit just before the value.
                    let at = std::sync::Arc::as_ptr(old).cast::<u8>();
                    crate::prefetch::prefetch(at.wrapping_sub(16));
                    crate::prefetch::prefetch(at.wrapping_add(size_of::<Value>() - 1));
                }
                if i == 0 && want_previous {
                    previous = old;
                }
            }
            version.seq = seq;
        }
        let mut old = cell.swap(spare);
        // Catch the version just replaced up now if no reader holds it any more (the usual
        // case without a busy reader): the next write then finds its spare current, and the
        // value this write replaced is held by nobody else, so it is handed to the caller
        // as is instead of cloned. If a reader still holds it, the changes wait as the lag.
        if let Some(version) = Arc::get_mut(&mut old) {
            for change in changes.iter_mut() {
                apply(&mut version.map, change, &mut self.garbage);
            }
            version.seq = seq;
            changes.clear();
        } else {
            std::mem::swap(&mut self.lag, changes);
        }
        self.spare = Some(old);
        previous.map(|v| std::sync::Arc::try_unwrap(v).unwrap_or_else(|v| Value::clone(&v)))
    }
}

fn apply(
    map: &mut Map,
    change: &mut Change,
    garbage: &mut Vec<Map>,
) -> Option<std::sync::Arc<Value>> {
    match change {
        Change::Put(key, value) => match map.get_mut(key.text.as_str()) {
            Some(slot) => Some(std::mem::replace(slot, std::sync::Arc::clone(value))),
            None => {
                let shared = key
                    .shared
                    .get_or_insert_with(|| std::sync::Arc::from(key.text.as_str()));
                map.insert(std::sync::Arc::clone(shared), std::sync::Arc::clone(value))
            }
        },
        Change::Delete(key) => map.remove(key.text.as_str()),
        Change::Clear => {
            garbage.push(std::mem::take(map));
            None
        }
    }
}

/// An immutable, consistent view of the whole store at one moment.
///
/// Taking one is O(1) and holding one is cheap: later writes never change it and never copy
/// the map because of it. It is `Send + Sync`; share it across threads freely.
///
/// ```
/// # fn main() -> resilient_kv::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use resilient_kv::{KVStore, Value};
/// let store = KVStore::new(dir.path().join("app"), 64 * 1024, None, None)?;
/// store.insert("a".into(), Value::Integer(1))?;
/// let before = store.snapshot();
/// store.insert("a".into(), Value::Integer(2))?;
/// assert_eq!(before.get("a"), Some(Value::Integer(1)));
/// assert_eq!(store.get("a")?, Some(Value::Integer(2)));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Snapshot {
    version: Arc<Version>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("len", &self.len())
            .field("seq", &self.seq())
            .finish()
    }
}

impl Snapshot {
    pub(crate) fn new(version: Arc<Version>) -> Self {
        Snapshot { version }
    }

    /// The value under `key`, cloned.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.version.map.get(key).map(|v| Value::clone(v))
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.version.map.contains_key(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.version.map.len()
    }

    /// Whether the snapshot holds no keys.
    pub fn is_empty(&self) -> bool {
        self.version.map.is_empty()
    }

    /// All keys, in no particular order.
    pub fn keys(&self) -> Vec<String> {
        self.version.map.keys().map(|k| k.to_string()).collect()
    }

    /// Iterates over `(key, value)` pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.version.map.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Copies the whole snapshot into a `HashMap`.
    pub fn to_hashmap(&self) -> HashMap<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect()
    }

    /// How many writes (since the store was opened) this snapshot includes, counting those
    /// that appended a record (removing an absent key appends none and is not counted);
    /// later snapshots never have a smaller number. For a read-only store, how many
    /// refreshes published a newer copy of the files.
    pub fn seq(&self) -> u64 {
        self.version.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clear hands the maps it replaces to the writer (who frees them after releasing the
    /// writer lock) instead of freeing them in place, in both copies: at once when the old
    /// version is free, or with the lag at the next write when a reader still holds it.
    #[test]
    fn a_clear_leaves_the_old_maps_to_be_freed_outside_the_lock() {
        let map: Map = (0..1000)
            .map(|i| {
                let key: std::sync::Arc<str> = format!("k{i}").into();
                (key, std::sync::Arc::new(Value::Integer(i)))
            })
            .collect();
        for held in [false, true] {
            let (published, mut publisher) = Publisher::new(map.clone(), 0);
            let cell = ArcSwap::new(published);
            let reader = held.then(|| cell.load_full());
            let mut changes = vec![Change::Clear];
            publisher.publish(&cell, &mut changes, 1, false);
            let freed: Vec<usize> = publisher.garbage.drain(..).map(|m| m.len()).collect();
            assert_eq!(cell.load().map.len(), 0);
            if held {
                assert_eq!(freed, vec![1000]);
                drop(reader);
                changes.push(Change::Put(
                    ChangeKey::new("new".into()),
                    Value::Null.into(),
                ));
                publisher.publish(&cell, &mut changes, 2, false);
                let freed: Vec<usize> = publisher.garbage.drain(..).map(|m| m.len()).collect();
                assert_eq!(freed, vec![1000], "the lagging clear");
            } else {
                assert_eq!(freed, vec![1000, 1000]);
            }
        }
    }
}
