//! Threads: one `Arc<KVStore>` shared by writer and reader threads, snapshots, and the events
//! the background compactor sends.
//!
//! `cargo run --release --example threads`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use resilient_kv::{Event, KVStore, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Small journals (64 KiB) so that compaction runs often.
    let store = Arc::new(
        KVStore::builder(dir.path().join("threads"))
            .buffer_size(64 * 1024)
            .open()?,
    );
    // Subscribe before writing: events arrive on this channel from the compactor thread.
    let events = store.subscribe();

    // Two readers: lock-free gets, and snapshots that never change under them.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop, reads) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&reads));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = store.snapshot(); // O(1)
                    let a = snapshot.get("writer0/count");
                    // However long we hold it, the snapshot still shows the same value.
                    assert_eq!(snapshot.get("writer0/count"), a);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Three writers, each counting up under its own key.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> resilient_kv::Result<()> {
                for i in 0..20_000 {
                    store.insert(format!("writer{w}/count"), Value::Integer(i))?;
                }
                Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.join().map_err(|_| "a writer panicked")??;
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().map_err(|_| "a reader panicked")?;
    }

    for w in 0..3 {
        assert_eq!(
            store.get(&format!("writer{w}/count"))?,
            Some(Value::Integer(19_999))
        );
    }
    println!(
        "60,000 writes and {} snapshot reads done",
        reads.load(Ordering::Relaxed)
    );

    // What the compactor did meanwhile.
    let mut compactions = 0;
    for event in events.try_iter() {
        match event {
            Event::CompactionFinished {
                generation,
                bytes_before,
                bytes_after,
                ..
            } => {
                compactions += 1;
                if compactions <= 3 {
                    println!(
                        "compacted into generation {generation}: {bytes_before} -> {bytes_after} bytes"
                    );
                }
            }
            Event::DataLoss { detail, .. } => println!("data loss at open: {detail}"),
            _ => {}
        }
    }
    let stats = store.stats();
    println!(
        "{compactions} compactions; generation {}; {} live keys",
        stats.generation, stats.live_keys
    );
    Ok(())
}
