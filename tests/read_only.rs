//! Read-only opens: no lock, no writes, and `refresh` while a writer keeps going.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use resilient_kv::{Batch, Error, Event, KVStore, Value};

fn files(base: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let read = |ext: &str| std::fs::read(format!("{}.{ext}", base.display())).unwrap();
    (read("jrna"), read("jrnb"))
}

/// A writer on 16 KiB journals holding `k` = 0, and a read-only store on the same files.
fn writer_and_reader(dir: &tempfile::TempDir) -> (KVStore, KVStore) {
    let base = dir.path().join("app");
    let writer = KVStore::builder(&base)
        .buffer_size(16 * 1024)
        .open()
        .unwrap();
    writer.insert("k".into(), Value::Integer(0)).unwrap();
    let reader = KVStore::open_read_only(&base).unwrap();
    (writer, reader)
}

#[test]
fn read_only_open_works_while_a_writer_holds_the_lock_and_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("app");
    let writer = KVStore::new(&base, 64 * 1024, None, None).unwrap();
    writer.insert("a".into(), Value::Integer(1)).unwrap();
    writer.insert("b".into(), Value::from("two")).unwrap();
    writer.sync().unwrap();

    let before = files(&base);
    let reader = KVStore::open_read_only(&base).unwrap();
    assert_eq!(reader.get("a").unwrap(), Some(Value::Integer(1)));
    assert_eq!(reader.len(), 2);
    for result in [
        reader.insert("c".into(), Value::Integer(3)).map(drop),
        reader.remove("a").map(drop),
        reader.write_batch({
            let mut batch = Batch::new();
            batch.insert("d", Value::Integer(4));
            batch
        }),
        reader.write_batch(Batch::new()),
        reader.clear(),
        reader.compact(),
    ] {
        assert!(matches!(result, Err(Error::ReadOnly { .. })), "{result:?}");
    }
    reader.sync().unwrap();
    assert_eq!(reader.len(), 2, "a refused write changed the reader");
    drop(reader);
    assert!(
        files(&base) == before,
        "a read-only store wrote to its files"
    );
    // The writer is unaffected and still holds its lock.
    assert!(matches!(
        KVStore::new(&base, 64 * 1024, None, None),
        Err(Error::Locked { .. })
    ));
}

#[test]
fn read_only_open_of_a_missing_store_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("missing");
    match KVStore::open_read_only(&base) {
        Err(Error::Io { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected NotFound, got {:?}", other.map(|s| s.len())),
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A store with one file missing (the second file of a first open cut short, or deleted) opens
/// read-only from the other, as `verify` reads it and as a writable open would, and the missing
/// file is not created.
#[test]
fn read_only_open_with_one_file_missing_reads_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("half");
    {
        let store = KVStore::new(&base, 64 * 1024, None, None).unwrap();
        store.insert("k".into(), Value::Integer(7)).unwrap();
    }
    let missing = dir.path().join("half.jrnb");
    std::fs::remove_file(&missing).unwrap();
    let reader = KVStore::open_read_only(&base).unwrap();
    assert_eq!(reader.get("k").unwrap(), Some(Value::Integer(7)));
    assert!(!missing.exists(), "a read-only open created a file");
}

#[test]
fn refresh_sees_new_writes_across_compactions_and_keeps_old_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, reader) = writer_and_reader(&dir);
    let old = reader.snapshot();
    assert!(!reader.refresh().unwrap(), "nothing changed yet");

    for i in 1..=2_000 {
        writer
            .insert(format!("key{}", i % 50), Value::Integer(i))
            .unwrap();
    }
    writer.compact().unwrap();
    writer.insert("k".into(), Value::Integer(1)).unwrap();
    assert!(writer.stats().compactions > 1);

    assert!(reader.refresh().unwrap());
    assert_eq!(reader.as_hashmap(), writer.as_hashmap());
    assert_eq!(old.get("k"), Some(Value::Integer(0)), "a snapshot changed");
    assert_eq!(old.len(), 1);
    assert!(reader.snapshot().seq() > old.seq());
}

/// A writer storms through compactions while a reader refreshes in a loop: every refresh shows
/// a state the writer really had (batches whole, the counter never going backwards) and never
/// reports data loss.
#[test]
fn refresh_during_a_compaction_storm_sees_only_whole_states() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("app");
    let writer = Arc::new(
        KVStore::builder(&base)
            .buffer_size(16 * 1024)
            .open()
            .unwrap(),
    );
    let mut first = Batch::new();
    first
        .insert("n", Value::Integer(0))
        .insert("n_copy", Value::Integer(0));
    writer.write_batch(first).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let handle = {
        let (writer, done) = (Arc::clone(&writer), Arc::clone(&done));
        std::thread::spawn(move || {
            for n in 1..=20_000_i64 {
                let filler = "x".repeat((n % 97) as usize);
                let mut batch = Batch::new();
                batch
                    .insert("n", Value::Integer(n))
                    .insert(format!("f{}", n % 40), Value::from(filler))
                    .insert("n_copy", Value::Integer(n));
                writer.write_batch(batch).unwrap();
            }
            done.store(true, Ordering::Release);
        })
    };
    let reader = KVStore::open_read_only(&base).unwrap();
    let events = reader.subscribe();
    let (mut last, mut refreshes) = (0_i64, 0_u64);
    while !done.load(Ordering::Acquire) {
        if reader.refresh().unwrap() {
            refreshes += 1;
        }
        let snapshot = reader.snapshot();
        let n = snapshot.get("n").and_then(|v| v.as_i64()).unwrap();
        assert_eq!(snapshot.get("n_copy").and_then(|v| v.as_i64()), Some(n));
        assert!(n >= last, "went backwards from {last} to {n}");
        last = n;
    }
    handle.join().unwrap();
    reader.refresh().unwrap();
    assert_eq!(reader.get("n").unwrap(), Some(Value::Integer(20_000)));
    let losses: Vec<Event> = events.try_iter().collect();
    assert!(losses.is_empty(), "{losses:?}");
    println!(
        "{refreshes} refreshes changed the view; the writer compacted {} times",
        writer.stats().compactions
    );
    assert!(writer.stats().compactions > 5);
    // The checks above ran on views published during the storm, not only on the first one.
    assert!(
        refreshes >= 3,
        "only {refreshes} refreshes changed the view"
    );
}

/// A read-only open retakes its copy a few times when the copy looks damaged (a live writer's
/// half-written record next to newer records on a later page looks like damage), but damage
/// that stays is believed and reported.
#[test]
fn read_only_open_reports_damage_that_stays() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("app");
    {
        let writer = KVStore::builder(&base)
            .buffer_size(64 * 1024)
            // The first file must stay the only journal: no compaction started by the pace.
            .pace_compactions(false)
            .open()
            .unwrap();
        for i in 0..100 {
            writer.insert(format!("k{i}"), Value::Integer(i)).unwrap();
        }
        assert_eq!(writer.stats().compactions, 0);
    }
    // The first file is the only journal so far: damage a record in the middle of it.
    let path = dir.path().join("app.jrna");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4096 + 1000] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let reader = KVStore::open_read_only(&base).unwrap();
    assert!(reader.stats().data_loss_events > 0, "{:?}", reader.stats());
    assert!(reader.len() < 100);
}

/// Damage inside the newest generation's snapshot (before its commit marker) while the writer,
/// unaware, keeps appending: every copy shows it at the same place, with more records beyond
/// it each time. It is real and stays, so it is reported (it used to count as damage that
/// moved, because the bytes beyond it grew, and the reader showed the older generation with
/// no loss reported).
#[test]
fn damage_a_live_writer_keeps_appending_after_is_reported() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("app");
    let writer = KVStore::builder(&base)
        .buffer_size(8 << 20)
        .pace_compactions(false)
        .open()
        .unwrap();
    for i in 0..200 {
        writer.insert(format!("k{i}"), Value::Integer(i)).unwrap();
    }
    writer.compact().unwrap();
    assert_eq!(writer.stats().generation, 2);
    let newest = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("app.jrnb"))
        .unwrap();
    let mut byte = [0_u8; 1];
    std::fs::File::open(dir.path().join("app.jrnb"))
        .unwrap()
        .read_exact_at(&mut byte, 4096 + 50)
        .unwrap();
    newest.write_at(&[byte[0] ^ 0x55], 4096 + 50).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = {
        let (stop, ticks) = (Arc::clone(&stop), Arc::clone(&ticks));
        std::thread::spawn(move || {
            let mut tick = 0_i64;
            while !stop.load(Ordering::Relaxed) && tick < 200_000 {
                writer.insert("tick".into(), Value::Integer(tick)).unwrap();
                tick += 1;
                ticks.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            writer
        })
    };
    while ticks.load(Ordering::SeqCst) < 10 {
        std::thread::yield_now();
    }
    // Every open must report the damage; the case this test exists for is an open during
    // which the writer appended, so open until one overlapped a write.
    let mut overlapped = false;
    for _ in 0..50 {
        let before = ticks.load(Ordering::SeqCst);
        let reader = KVStore::open_read_only(&base).unwrap();
        let after = ticks.load(Ordering::SeqCst);
        assert!(reader.stats().data_loss_events > 0, "{:?}", reader.stats());
        if after > before {
            overlapped = true;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let writer = ticker.join().unwrap();
    assert!(overlapped, "no open overlapped a write of the ticker");
    assert_eq!(
        writer.stats().generation,
        2,
        "no compaction moved past the damage"
    );
}

/// Refreshes from several threads never publish an older state after a newer one: a counter
/// a writer keeps raising never goes down in the reader, whichever refresh finishes last.
#[test]
fn concurrent_refreshes_never_go_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("app");
    let writer = Arc::new(KVStore::new(&base, 256 * 1024, None, None).unwrap());
    writer.insert("counter".into(), Value::Integer(0)).unwrap();
    let reader = Arc::new(KVStore::open_read_only(&base).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut i = 1;
            while !stop.load(Ordering::Relaxed) {
                writer.insert("counter".into(), Value::Integer(i)).unwrap();
                // Filler so that the files take a moment to copy and compactions happen.
                writer
                    .insert(format!("filler{}", i % 500), Value::from("f".repeat(100)))
                    .unwrap();
                i += 1;
            }
        });
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    reader.refresh().unwrap();
                }
            });
        }
        let (mut last, mut backwards) = (0, None);
        let started = std::time::Instant::now();
        // Three seconds of refreshes, longer (up to a minute) until one has published a write.
        let watching = |last: i64| {
            let elapsed = started.elapsed();
            elapsed < std::time::Duration::from_secs(3)
                || last == 0 && elapsed < std::time::Duration::from_secs(60)
        };
        while watching(last) && backwards.is_none() {
            if let Some(Value::Integer(now)) = reader.get("counter").unwrap() {
                if now < last {
                    backwards = Some((last, now));
                }
                last = now;
            }
        }
        // Stop the other threads before asserting, or the scope would wait for them forever.
        stop.store(true, Ordering::Relaxed);
        assert_eq!(backwards, None, "the counter went back (from, to)");
        assert!(last > 0, "the reader never saw a write");
    });
}

/// `refresh` never publishes a copy older than what it shows: here the files themselves are
/// put back to an older state (as a copy taken across a switch could look), and the reader
/// keeps the newer view instead of going back.
#[test]
fn refresh_never_publishes_an_older_copy() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("app");
    {
        let writer = KVStore::new(&base, 64 * 1024, None, None).unwrap();
        writer.insert("counter".into(), Value::Integer(1)).unwrap();
    }
    let older = files(&base);
    {
        let writer = KVStore::new(&base, 64 * 1024, None, None).unwrap();
        writer.insert("counter".into(), Value::Integer(2)).unwrap();
        writer.compact().unwrap();
        writer.insert("counter".into(), Value::Integer(3)).unwrap();
    }
    let reader = KVStore::open_read_only(&base).unwrap();
    assert_eq!(reader.get("counter").unwrap(), Some(Value::Integer(3)));
    std::fs::write(format!("{}.jrna", base.display()), &older.0).unwrap();
    std::fs::write(format!("{}.jrnb", base.display()), &older.1).unwrap();
    assert!(!reader.refresh().unwrap(), "an older copy was published");
    assert_eq!(reader.get("counter").unwrap(), Some(Value::Integer(3)));
}

/// A store whose files exist but were never initialised (another process is creating it, or
/// its creation was cut short) opens read-only as an empty store, writing nothing, and sees
/// the data once a writer has created it.
#[test]
fn a_read_only_open_of_files_never_initialised_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("app");
    for ext in ["jrna", "jrnb"] {
        std::fs::write(format!("{}.{ext}", base.display()), vec![0_u8; 16 * 1024]).unwrap();
    }
    let before = files(&base);
    let reader = KVStore::open_read_only(&base).unwrap();
    assert!(reader.is_empty());
    assert_eq!(files(&base), before, "a read-only open wrote");
    let writer = KVStore::new(&base, 16 * 1024, None, None).unwrap();
    writer.insert("a".into(), Value::Integer(1)).unwrap();
    assert!(reader.refresh().unwrap());
    assert_eq!(reader.get("a").unwrap(), Some(Value::Integer(1)));
}

/// Sizes on the builder are the writer's: a read-only open ignores them, as documented.
#[test]
fn a_read_only_open_ignores_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("app");
    let writer = KVStore::new(&base, 64 * 1024, None, None).unwrap();
    writer.insert("a".into(), Value::Integer(1)).unwrap();
    let reader = KVStore::builder(&base)
        .read_only(true)
        .buffer_size(1000)
        .high_water_mark(7.0)
        .open()
        .unwrap();
    assert_eq!(reader.get("a").unwrap(), Some(Value::Integer(1)));
}

/// After the writer's journals grew, a refresh reports the sizes the files have now, the
/// inactive one included.
#[test]
fn refresh_reports_the_journals_new_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, reader) = writer_and_reader(&dir);
    assert_eq!(reader.stats().inactive_capacity, 16 * 1024);
    // About 100 KiB of live data: both journals must grow.
    for i in 0..100 {
        writer
            .insert(format!("big{i}"), Value::from("x".repeat(1000)))
            .unwrap();
    }
    writer.compact().unwrap();
    writer.compact().unwrap();
    let (active, inactive) = (
        writer.stats().active_capacity,
        writer.stats().inactive_capacity,
    );
    assert!(
        active > 16 * 1024 && inactive > 16 * 1024,
        "{:?}",
        writer.stats()
    );
    assert!(reader.refresh().unwrap());
    let seen = reader.stats();
    assert_eq!(
        (seen.active_capacity, seen.inactive_capacity),
        (active, inactive)
    );
}
