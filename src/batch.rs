//! [`Batch`]: several writes applied all-or-nothing.

use crate::Value;
use crate::journal::format::Op;

/// Several inserts and removes applied all-or-nothing, also across a crash.
///
/// ```
/// # fn main() -> resilient_kv::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use resilient_kv::{Batch, KVStore, Value};
/// let store = KVStore::new(dir.path().join("app"), 64 * 1024, None, None)?;
/// let mut batch = Batch::new();
/// batch.insert("from", Value::Integer(90)).insert("to", Value::Integer(10)).remove("pending");
/// store.write_batch(batch)?;
/// assert_eq!(store.get("to")?, Some(Value::Integer(10)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub(crate) ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Adds an insert (`Value::Null` removes the key).
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        let key = key.into();
        self.ops.push(if value.is_null() {
            Op::Delete(key)
        } else {
            Op::Put(key, value)
        });
        self
    }

    /// Adds a removal.
    pub fn remove(&mut self, key: impl Into<String>) -> &mut Self {
        self.ops.push(Op::Delete(key.into()));
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
