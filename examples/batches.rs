//! Batches: several inserts and removes applied all-or-nothing, also across a crash.
//!
//! `cargo run --release --example batches`

use resilient_kv::{Batch, Error, KVStore, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = KVStore::new(dir.path().join("bank"), 1024 * 1024, None, None)?;
    store.insert("alice".to_string(), Value::Integer(100))?;
    store.insert("bob".to_string(), Value::Integer(20))?;

    // Move 30 from alice to bob and log it: one record on disk, so after any crash either
    // all three changes are there or none is.
    let mut batch = Batch::new();
    batch
        .insert("alice", Value::Integer(70))
        .insert("bob", Value::Integer(50))
        .insert("log/1", Value::from("alice -> bob: 30"));
    store.write_batch(batch)?;
    println!(
        "alice = {}, bob = {}",
        store.get("alice")?.unwrap_or_default(),
        store.get("bob")?.unwrap_or_default()
    );

    // Removals mix with inserts (`Value::Null` also removes).
    let mut batch = Batch::new();
    batch
        .remove("log/1")
        .insert("log/2", Value::from("log rotated"));
    store.write_batch(batch)?;
    assert!(!store.contains_key("log/1"));

    // One invalid operation and nothing is applied.
    let mut batch = Batch::new();
    batch
        .insert("alice", Value::Integer(0))
        .insert("", Value::Integer(1)); // empty keys are invalid
    match store.write_batch(batch) {
        Err(Error::InvalidKey { reason }) => println!("batch refused ({reason}); nothing changed"),
        other => return Err(format!("expected InvalidKey, got {other:?}").into()),
    }
    assert_eq!(store.get("alice")?, Some(Value::Integer(70)));
    Ok(())
}
