//! Quick start: open a store, write, read, delete, reopen.
//!
//! `cargo run --release --example quick_start`

use resilient_kv::{KVStore, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A temporary directory, removed when `dir` is dropped.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("settings"); // files: settings.jrna and settings.jrnb

    {
        // The seed's signature: base path, journal size in bytes, high-water mark ratio
        // (None: 0.8), high-water-mark callback (None).
        let store = KVStore::new(&path, 1024 * 1024, None, None)?;

        // `insert` returns the previous value.
        assert_eq!(
            store.insert("theme".to_string(), Value::from("dark"))?,
            None
        );
        store.insert("volume".to_string(), Value::Integer(30))?;
        store.insert("volume".to_string(), Value::Integer(35))?;

        // Reads never lock and never touch the disk.
        println!("theme  = {}", store.get("theme")?.unwrap_or_default());
        println!("volume = {}", store.get("volume")?.unwrap_or_default());

        // Inserting Null deletes, like `remove`.
        store.insert("theme".to_string(), Value::Null)?;
        assert!(!store.contains_key("theme"));
        println!("{} key(s) before closing", store.len());
    } // Dropping the store closes it (and flushes it to disk).

    // Every write survived: reopen and read it back.
    let store = KVStore::new(&path, 1024 * 1024, None, None)?;
    assert_eq!(store.get("volume")?, Some(Value::Integer(35)));
    assert_eq!(store.get("theme")?, None);
    println!(
        "after reopening: volume = {}",
        store.get("volume")?.unwrap_or_default()
    );
    Ok(())
}
