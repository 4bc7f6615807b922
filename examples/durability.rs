//! Durability: what a write survives when it returns, and how `sync()` and `Durability::Sync`
//! extend that to power loss.
//!
//! `cargo run --release --example durability`

use std::time::Instant;

use resilient_kv::{Durability, KVStore, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;

    // Default, `Durability::Process`: a write survives a crash or kill of this process as soon
    // as it returns (it is in the page cache); it survives power loss once `sync()` returns.
    let store = KVStore::builder(dir.path().join("process")).open()?;
    let started = Instant::now();
    for i in 0..1_000 {
        store.insert(format!("event{i:04}"), Value::Integer(i))?;
    }
    let written = started.elapsed();
    store.sync()?; // msync + fdatasync: everything above now survives power loss too
    println!(
        "Process: 1,000 writes in {written:?}, then one sync() in {:?}",
        started.elapsed() - written
    );

    // `Durability::Sync`: every write is flushed before it returns (concurrent writers share
    // a flush). Slower per write; for the few writes that must never be lost.
    let store = KVStore::builder(dir.path().join("sync"))
        .durability(Durability::Sync)
        .open()?;
    let started = Instant::now();
    for i in 0..50 {
        store.insert(format!("payment{i:02}"), Value::from("confirmed"))?;
    }
    println!(
        "Sync: 50 writes, each durable on return, in {:?}",
        started.elapsed()
    );

    // A common pattern: Process mode, and sync() at the points that matter.
    let store = KVStore::builder(dir.path().join("checkpoints")).open()?;
    store.insert("draft".to_string(), Value::from("autosaved"))?;
    store.insert("document".to_string(), Value::from("saved by the user"))?;
    store.sync()?; // the user pressed "save": make it survive power loss now
    println!(
        "checkpoint synced: {}",
        store.get("document")?.unwrap_or_default()
    );
    Ok(())
}
