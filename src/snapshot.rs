//! The in-memory map and its publication to lock-free readers.
//!
//! Each write produces a new immutable version of the map and publishes it through
//! `arc-swap`; `get` loads the current version without locking, and a [`Snapshot`] is just a
//! counted reference to one version. Versions share structure (a persistent hash map), so a
//! write copies only the path to the changed entry, never the whole map, whether or not old
//! versions are still held. `docs/design.md` records why this structure was chosen.

use std::collections::HashMap;
use std::sync::Arc;

use crate::Value;

/// The map type behind every version.
pub(crate) type Map = imbl::HashMap<Arc<str>, Arc<Value>>;

/// One published version: the map after `seq` writes since open.
pub(crate) struct Version {
    pub(crate) map: Map,
    pub(crate) seq: u64,
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

    /// How many writes (since the store was opened) this snapshot includes; later snapshots
    /// never have a smaller number.
    pub fn seq(&self) -> u64 {
        self.version.seq
    }
}
