//! Shared by the integration tests that replay a seeded sequence of writes against a map model
//! (`corruption/`, `crash_kill.rs`): the writes, and applying one to the model or to a store.

use std::collections::BTreeMap;

use resilient_kv::{Batch, KVStore, Value};

/// One write through the public API.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    /// `KVStore::insert`.
    Insert(String, Value),
    /// `KVStore::remove`.
    Remove(String),
    /// `KVStore::write_batch`: `Some` inserts, `None` removes.
    Batch(Vec<(String, Option<Value>)>),
    /// `KVStore::clear`.
    Clear,
}

/// The expected contents of a store.
pub(crate) type Model = BTreeMap<String, Value>;

/// Applies `write` to `model`.
pub(crate) fn apply_model(model: &mut Model, write: &Write) {
    match write {
        Write::Insert(k, v) => {
            model.insert(k.clone(), v.clone());
        }
        Write::Remove(k) => {
            model.remove(k);
        }
        Write::Batch(ops) => {
            for (k, v) in ops {
                match v {
                    Some(v) => model.insert(k.clone(), v.clone()),
                    None => model.remove(k),
                };
            }
        }
        Write::Clear => model.clear(),
    }
}

/// Applies `write` to `store`.
pub(crate) fn apply_store(store: &KVStore, write: &Write) -> resilient_kv::Result<()> {
    match write {
        Write::Insert(k, v) => store.insert(k.clone(), v.clone()).map(drop),
        Write::Remove(k) => store.remove(k).map(drop),
        Write::Batch(ops) => {
            let mut batch = Batch::new();
            for (k, v) in ops {
                match v {
                    Some(v) => batch.insert(k.clone(), v.clone()),
                    None => batch.remove(k.clone()),
                };
            }
            store.write_batch(batch)
        }
        Write::Clear => store.clear(),
    }
}
