//! The public API on real files: reads, writes, reopen, compaction, batches, clear, locking.

use std::sync::Arc;

use resilient_kv::{Batch, Error, Event, KVStore, Value};

fn base(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("app.db")
}

#[test]
fn insert_get_remove_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
        assert_eq!(store.insert("a".into(), Value::Integer(1)).unwrap(), None);
        assert_eq!(
            store.insert("a".into(), Value::Integer(2)).unwrap(),
            Some(Value::Integer(1))
        );
        store.insert("b".into(), Value::from("text")).unwrap();
        store.insert("u".into(), Value::from(u64::MAX)).unwrap();
        assert_eq!(store.remove("b").unwrap(), Some(Value::from("text")));
        store.insert("c".into(), Value::from(true)).unwrap();
        store.insert("c".into(), Value::Null).unwrap();
        assert_eq!(store.len(), 2);
    }
    assert!(
        dir.path().join("app.db.jrna").exists(),
        "files append the extension"
    );
    assert!(dir.path().join("app.db.jrnb").exists());
    let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
    assert_eq!(store.get("a").unwrap(), Some(Value::Integer(2)));
    assert_eq!(store.get("u").unwrap(), Some(Value::Unsigned(u64::MAX)));
    assert_eq!(store.get("b").unwrap(), None);
    assert!(!store.contains_key("c"));
    assert_eq!(store.len(), 2);
}

/// Removing a key that is absent (with `remove`, by inserting `Null`, or in a batch of such
/// removals) writes nothing: no record in the journal, no new version for readers; removing a
/// present key still does both, also in a batch with absent ones. In both durability modes.
#[test]
fn removing_an_absent_key_writes_nothing() {
    for durability in [
        resilient_kv::Durability::Process,
        resilient_kv::Durability::Sync,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = KVStore::builder(base(&dir))
            .buffer_size(64 * 1024)
            .durability(durability)
            .open()
            .unwrap();
        store.insert("kept".into(), Value::Integer(1)).unwrap();
        let (used, seq) = (store.stats().active_used, store.snapshot().seq());
        assert_eq!(store.remove("absent").unwrap(), None);
        assert_eq!(store.insert("absent".into(), Value::Null).unwrap(), None);
        let mut removals = Batch::new();
        removals.remove("absent").remove("also absent");
        store.write_batch(removals).unwrap();
        assert_eq!(store.stats().active_used, used, "{durability:?}");
        assert_eq!(store.snapshot().seq(), seq, "{durability:?}");
        // A batch that removes one present key among absent ones is written whole.
        let mut mixed = Batch::new();
        mixed.remove("absent").remove("kept");
        store.write_batch(mixed).unwrap();
        assert!(store.stats().active_used > used, "{durability:?}");
        assert!(store.snapshot().seq() > seq, "{durability:?}");
        assert!(store.is_empty());
        store.insert("kept".into(), Value::Integer(1)).unwrap();
        let (used, seq) = (store.stats().active_used, store.snapshot().seq());
        assert_eq!(store.remove("kept").unwrap(), Some(Value::Integer(1)));
        assert!(store.stats().active_used > used);
        assert!(store.snapshot().seq() > seq);
        drop(store);
        let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
        assert!(store.is_empty());
    }
}

#[test]
fn compaction_keeps_everything_across_many_generations() {
    let dir = tempfile::tempdir().unwrap();
    let store = KVStore::builder(base(&dir))
        .buffer_size(16 * 1024)
        .open()
        .unwrap();
    let events = store.subscribe();
    for i in 0..20_000 {
        store
            .insert(format!("key_{:03}", i % 300), Value::Integer(i))
            .unwrap();
    }
    let stats = store.stats();
    assert!(stats.compactions > 5, "{stats:?}");
    assert!(stats.generation > 5);
    let finished = events
        .try_iter()
        .filter(|e| matches!(e, Event::CompactionFinished { .. }))
        .count();
    assert!(finished > 5);
    let expected = store.as_hashmap();
    assert_eq!(expected.len(), 300);
    drop(store);
    let store = KVStore::builder(base(&dir))
        .buffer_size(16 * 1024)
        .open()
        .unwrap();
    assert_eq!(store.as_hashmap(), expected);
    for i in 19_700..20_000 {
        assert_eq!(
            store.get(&format!("key_{:03}", i % 300)).unwrap(),
            Some(Value::Integer(i))
        );
    }
}

#[test]
fn journals_grow_when_live_data_outgrows_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = KVStore::builder(base(&dir))
        .buffer_size(16 * 1024)
        .open()
        .unwrap();
    let events = store.subscribe();
    for i in 0..3_000 {
        store
            .insert(format!("key_{i:05}"), Value::from("x".repeat(40)))
            .unwrap();
    }
    assert!(
        events
            .try_iter()
            .any(|e| matches!(e, Event::JournalGrown { .. }))
    );
    drop(store);
    let store = KVStore::builder(base(&dir))
        .buffer_size(16 * 1024)
        .open()
        .unwrap();
    assert_eq!(store.len(), 3_000);
}

#[test]
fn full_store_refuses_writes_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = KVStore::builder(base(&dir))
        .buffer_size(16 * 1024)
        .max_size(32 * 1024)
        .open()
        .unwrap();
    let mut refused = None;
    for i in 0..10_000 {
        match store.insert(format!("key_{i:05}"), Value::from("y".repeat(50))) {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = refused.expect("a 32 KiB store cannot hold 10,000 values");
    assert!(matches!(e, Error::Full { .. }), "{e}");
    assert_eq!(store.len(), i as usize);
    assert_eq!(store.get(&format!("key_{i:05}")).unwrap(), None);
    // A full store can always be emptied: removals use a reserve that inserts may not.
    for k in 0..i.min(20) {
        assert!(store.remove(&format!("key_{k:05}")).unwrap().is_some());
    }
    store.insert("key_00000".into(), Value::Integer(1)).unwrap();
}

#[test]
fn batches_apply_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
    store
        .insert("pending".into(), Value::Boolean(true))
        .unwrap();
    let mut batch = Batch::new();
    batch
        .insert("x", Value::Integer(1))
        .insert("y", Value::Integer(2))
        .remove("pending");
    store.write_batch(batch).unwrap();
    let mut bad = Batch::new();
    bad.insert("z", Value::Integer(3))
        .insert("w", Value::Float(f64::NAN));
    assert!(matches!(
        store.write_batch(bad),
        Err(Error::InvalidValue(_))
    ));
    assert_eq!(
        store.get("z").unwrap(),
        None,
        "a rejected batch applies nothing"
    );
    drop(store);
    let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
    assert_eq!(store.get("x").unwrap(), Some(Value::Integer(1)));
    assert_eq!(store.get("y").unwrap(), Some(Value::Integer(2)));
    assert_eq!(store.get("pending").unwrap(), None);
    assert_eq!(store.get("z").unwrap(), None);
}

#[test]
fn bad_input_is_refused_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
    assert!(matches!(
        store.insert(String::new(), Value::Integer(1)),
        Err(Error::InvalidKey { .. })
    ));
    // The documented limit is inclusive.
    let longest = "k".repeat(resilient_kv::MAX_KEY_LEN);
    store.insert(longest.clone(), Value::Integer(1)).unwrap();
    assert_eq!(store.get(&longest).unwrap(), Some(Value::Integer(1)));
    assert!(store.remove(&longest).unwrap().is_some());
    assert!(matches!(
        store.insert("k".repeat(resilient_kv::MAX_KEY_LEN + 1), Value::Integer(1)),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        store.insert("a\0b".into(), Value::Integer(1)),
        Err(Error::InvalidKey { .. })
    ));
    for bad in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
        assert!(matches!(
            store.insert("f".into(), Value::Float(bad)),
            Err(Error::InvalidValue(_))
        ));
    }
    let mut deep = Value::Null;
    for _ in 0..1000 {
        deep = Value::Array(vec![deep]);
    }
    assert!(matches!(
        store.insert("deep".into(), deep),
        Err(Error::InvalidValue(_))
    ));
    let huge = Value::from("h".repeat(2 * 1024 * 1024));
    let small = KVStore::builder(dir.path().join("small"))
        .max_size(1024 * 1024)
        .open()
        .unwrap();
    assert!(matches!(
        small.insert("huge".into(), huge),
        Err(Error::TooLarge { .. })
    ));
    // Below `max_size` but above what a journal of `max_size` has for data after its reserve
    // (1/32, kept for removals): refused at once, without growing the journals first.
    let capacity = small.stats().active_capacity;
    let almost = Value::from("a".repeat(1024 * 1024 - 16 * 1024));
    assert!(matches!(
        small.insert("almost".into(), almost),
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(small.stats().active_capacity, capacity);
    assert!(store.is_empty() && small.is_empty());
}

#[test]
fn clear_removes_everything_for_good() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
        for i in 0..100 {
            store.insert(format!("k{i}"), Value::Integer(i)).unwrap();
        }
        store.clear().unwrap();
        assert!(store.is_empty());
        store.insert("after".into(), Value::Integer(1)).unwrap();
    }
    let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
    assert_eq!(store.keys(), vec!["after".to_string()]);
}

#[test]
fn a_second_open_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
    store.insert("mine".into(), Value::Integer(1)).unwrap();
    match KVStore::new(base(&dir), 64 * 1024, None, None) {
        Err(Error::Locked { .. }) => {}
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    assert_eq!(store.get("mine").unwrap(), Some(Value::Integer(1)));
}

#[test]
fn explicit_compact_and_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(KVStore::new(base(&dir), 64 * 1024, None, None).unwrap());
    store.insert("a".into(), Value::Integer(1)).unwrap();
    let g = store.stats().generation;
    store.compact().unwrap();
    let stats = store.stats();
    assert!(stats.generation > g);
    assert!(
        stats.inactive_used > 0 && stats.inactive_capacity >= 64 * 1024,
        "{stats:?}"
    );
    assert!(stats.active_used > 0 && stats.last_compaction.is_some());
    store.sync().unwrap();
    assert_eq!(store.get("a").unwrap(), Some(Value::Integer(1)));
}

static CALLBACKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn on_mark(current: usize, size: usize, mark: usize) {
    assert!(current > mark && mark < size);
    CALLBACKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

static ABOVE_MARK_CALLBACKS: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

fn count_above_mark(_: usize, _: usize, _: usize) {
    ABOVE_MARK_CALLBACKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// A generation that starts above its mark (live data over it, journals at their largest
/// size) never crosses it, so the callback does not fire for it. It fired at the first write
/// after every such swap, so a callback that compacts (as the docs suggest) compacted at
/// every such write.
#[test]
fn a_generation_that_starts_above_its_mark_does_not_fire_the_callback() {
    let dir = tempfile::tempdir().unwrap();
    let store = KVStore::builder(base(&dir))
        .buffer_size(16 * 1024)
        .max_size(16 * 1024)
        .high_water_mark(0.5)
        .on_high_water_mark(count_above_mark)
        .open()
        .unwrap();
    for i in 0..90 {
        store
            .insert(format!("k{i:02}"), Value::from("v".repeat(80)))
            .unwrap();
    }
    store.compact().unwrap();
    let after_swap = store.stats();
    assert!(after_swap.active_used > 8 * 1024, "{after_swap:?}");
    let fired = || ABOVE_MARK_CALLBACKS.load(std::sync::atomic::Ordering::SeqCst);
    let before = fired();
    store.insert("k00".into(), Value::Integer(1)).unwrap();
    assert_eq!(store.stats().generation, after_swap.generation);
    assert_eq!(
        fired(),
        before,
        "the callback fired in a generation that began above its mark"
    );
}

#[test]
fn the_high_water_callback_fires_once_per_generation_and_again_after_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let store = KVStore::new(base(&dir), 16 * 1024, Some(0.5), Some(on_mark)).unwrap();
    let fired = || CALLBACKS.load(std::sync::atomic::Ordering::SeqCst) as u64;
    // Compactions may start before the mark when writers had to wait for room (`docs/design.md`,
    // "Room for the writers"), so a generation need not cross it: write until the callback
    // fired for several generations (the earlier store's flag fired once, ever).
    let mut i = 0;
    let mut fired_in = std::collections::HashSet::new();
    while fired() < 4 && i < 200_000 {
        let (calls, generation) = (fired(), store.stats().generation);
        store
            .insert(format!("k{}", i % 50), Value::Integer(i))
            .unwrap();
        // A call during a write that no swap interrupted belongs to that generation: it must
        // be the generation's first.
        if fired() > calls && store.stats().generation == generation {
            assert!(
                fired_in.insert(generation),
                "fired twice in generation {generation}"
            );
        }
        i += 1;
    }
    // At most once per generation: every journal before the current one, and the current one.
    let journals = store.stats().compactions + 1;
    assert!(fired() >= 4, "{} calls after {i} writes", fired());
    assert!(
        fired() <= journals,
        "{} calls for {journals} journals",
        fired()
    );
}

/// `Durability::Sync` writers on four threads: every write is kept, each key holding the last
/// value its thread wrote, after a reopen. (That each write is flushed before it returns, and
/// that concurrent writers share flushes, is counted on the storage seam:
/// `recovery_tests::concurrent_sync_writers_share_flushes` and the power-loss
/// tests.)
#[test]
fn sync_writers_on_four_threads_keep_every_last_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        KVStore::builder(base(&dir))
            .buffer_size(64 * 1024)
            .durability(resilient_kv::Durability::Sync)
            .open()
            .unwrap(),
    );
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..200 {
                    store
                        .insert(format!("t{t}_{}", i % 20), Value::Integer(i))
                        .unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(store.len(), 80);
    drop(store);
    let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
    for t in 0..4 {
        for k in 0..20 {
            let last = 180 + k;
            assert_eq!(
                store.get(&format!("t{t}_{k}")).unwrap(),
                Some(Value::Integer(last)),
                "t{t}_{k}"
            );
        }
    }
}

#[test]
fn a_different_buffer_size_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
        for i in 0..500 {
            store.insert(format!("k{i}"), Value::Integer(i)).unwrap();
        }
    }
    {
        let store = KVStore::new(base(&dir), 16 * 1024, None, None).unwrap();
        assert_eq!(store.len(), 500);
    }
    let store = KVStore::new(base(&dir), 256 * 1024, None, None).unwrap();
    assert_eq!(store.len(), 500);
    assert!(store.stats().active_capacity >= 256 * 1024);
}

#[test]
fn a_value_larger_than_the_journal_grows_it() {
    let dir = tempfile::tempdir().unwrap();
    let big = Value::from("b".repeat(3 * 1024 * 1024));
    {
        let store = KVStore::new(base(&dir), 16 * 1024, None, None).unwrap();
        store.insert("small".into(), Value::Integer(1)).unwrap();
        store.insert("big".into(), big.clone()).unwrap();
        store.insert("after".into(), Value::Integer(2)).unwrap();
        assert!(store.stats().active_capacity > 3 * 1024 * 1024);
    }
    let store = KVStore::new(base(&dir), 16 * 1024, None, None).unwrap();
    assert_eq!(store.get("big").unwrap(), Some(big));
    assert_eq!(store.len(), 3);
}

/// A journal that is a sparse file (restored or copied that way) gets its holes allocated at
/// open, so that no store into the map can meet a hole on a full disk (SIGBUS).
#[cfg(unix)]
#[test]
fn a_sparse_journal_is_allocated_at_open() {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let base = base(&dir);
    {
        let store = KVStore::new(&base, 256 * 1024, None, None).unwrap();
        store.insert("kept".into(), Value::Integer(7)).unwrap();
    }
    let paths: Vec<String> = ["jrna", "jrnb"]
        .iter()
        .map(|ext| format!("{}.{ext}", base.display()))
        .collect();
    let allocated = |path: &str| std::fs::metadata(path).unwrap().blocks() * 512;
    for path in &paths {
        // Rewrite the file sparse: only its non-zero pages are written.
        let bytes = std::fs::read(path).unwrap();
        let mut file = std::fs::File::create(path).unwrap();
        file.set_len(bytes.len() as u64).unwrap();
        for (i, page) in bytes.chunks(4096).enumerate() {
            if page.iter().any(|&b| b != 0) {
                file.seek(SeekFrom::Start((i * 4096) as u64)).unwrap();
                file.write_all(page).unwrap();
            }
        }
        file.sync_all().unwrap();
        assert!(allocated(path) < bytes.len() as u64, "{path} is not sparse");
    }
    let store = KVStore::new(&base, 256 * 1024, None, None).unwrap();
    assert_eq!(store.get("kept").unwrap(), Some(Value::Integer(7)));
    for path in &paths {
        let len = std::fs::metadata(path).unwrap().len();
        assert!(
            allocated(path) >= len,
            "{path}: {} of {len} bytes allocated",
            allocated(path)
        );
    }
}

/// A compaction is announced before it runs and reported after it with what it did: the
/// generation it wrote, the retired journal's bytes and the new one's, and the live keys.
#[test]
fn compaction_events_say_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
    // Ten keys overwritten a hundred times each: the retired journal is mostly garbage.
    for round in 0..100 {
        for k in 0..10 {
            store
                .insert(format!("k{k}"), Value::Integer(round))
                .unwrap();
        }
    }
    let events = store.subscribe();
    let used_before = store.stats().active_used;
    store.compact().unwrap();
    let stats = store.stats();
    let events: Vec<Event> = events.try_iter().collect();
    let current = stats.generation;
    let position = |wanted: &dyn Fn(&Event) -> bool| {
        let found = events.iter().position(wanted);
        found.unwrap_or_else(|| panic!("generation {current}: {events:?}"))
    };
    let started = position(
        &|e| matches!(e, Event::CompactionStarted { generation } if *generation == current),
    );
    let finished = position(
        &|e| matches!(e, Event::CompactionFinished { generation, .. } if *generation == current),
    );
    assert!(started < finished, "{events:?}");
    let Event::CompactionFinished {
        bytes_before,
        bytes_after,
        live_keys,
        duration,
        ..
    } = &events[finished]
    else {
        unreachable!()
    };
    assert_eq!(*live_keys, 10);
    assert!(*bytes_before >= used_before, "{events:?}");
    // Both count the 4 KiB header page.
    assert!(*bytes_after < *bytes_before / 4, "{events:?}");
    assert!(*bytes_after > 4096 + 10 * 4, "{events:?}");
    assert_eq!(stats.active_used, *bytes_after);
    assert!(*duration > std::time::Duration::ZERO);
    assert_eq!(stats.last_compaction, Some(*duration));
}

/// `update` is an atomic read-modify-write: counters incremented from several threads lose
/// nothing, through compactions of a small journal, and a reopen finds the final counts.
#[test]
fn update_counts_from_many_threads_without_losing_increments() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        KVStore::builder(base(&dir))
            .buffer_size(16 * 1024)
            .open()
            .unwrap()
    };
    let store = Arc::new(open());
    let increment = |current: Option<&Value>| {
        Some(Value::Integer(
            current.and_then(Value::as_i64).unwrap_or(0) + 1,
        ))
    };
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    store.update("shared", increment).unwrap();
                    store.update(&format!("own{}", i % 4), increment).unwrap();
                    // Plain writes in between, so that updates race other writers too.
                    store
                        .insert(format!("noise{t}"), Value::Integer(i))
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(store.stats().compactions > 0, "{:?}", store.stats());
    let check = |store: &KVStore| {
        assert_eq!(store.get("shared").unwrap(), Some(Value::Integer(8_000)));
        for k in 0..4 {
            assert_eq!(
                store.get(&format!("own{k}")).unwrap(),
                Some(Value::Integer(2_000))
            );
        }
    };
    check(&store);
    drop(store);
    check(&open());
}

/// What `update` stores, returns and refuses.
#[test]
fn update_stores_removes_and_refuses_like_insert() {
    let dir = tempfile::tempdir().unwrap();
    let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
    let set = |v: i64| move |_: Option<&Value>| Some(Value::Integer(v));
    assert_eq!(store.update("k", set(1)).unwrap(), Some(Value::Integer(1)));
    let mut seen = None;
    let doubled = store
        .update("k", |current| {
            seen = current.cloned();
            Some(Value::Integer(current?.as_i64()? * 2))
        })
        .unwrap();
    assert_eq!(
        (seen, doubled),
        (Some(Value::Integer(1)), Some(Value::Integer(2)))
    );
    // Nothing to remove: nothing written.
    let used = store.stats().active_used;
    assert_eq!(store.update("absent", |_| None).unwrap(), None);
    assert_eq!(store.stats().active_used, used);
    // `None` and `Null` remove.
    assert_eq!(store.update("k", |_| None).unwrap(), None);
    assert!(!store.contains_key("k"));
    store.update("k", set(3)).unwrap();
    assert_eq!(store.update("k", |_| Some(Value::Null)).unwrap(), None);
    assert!(!store.contains_key("k"));
    // Refused like insert, and nothing changes.
    store.update("k", set(4)).unwrap();
    let nan = store.update("k", |_| Some(Value::Float(f64::NAN)));
    assert!(matches!(nan, Err(Error::InvalidValue(_))), "{nan:?}");
    let empty = store.update("", set(5));
    assert!(matches!(empty, Err(Error::InvalidKey { .. })), "{empty:?}");
    assert_eq!(store.get("k").unwrap(), Some(Value::Integer(4)));
    assert_eq!(store.len(), 1);
    drop(store);
    let reader = KVStore::open_read_only(base(&dir)).unwrap();
    assert!(matches!(
        reader.update("k", set(6)),
        Err(Error::ReadOnly { .. })
    ));
    assert_eq!(reader.get("k").unwrap(), Some(Value::Integer(4)));
}

/// When another write changes the key between the value `update` computed from and its
/// append, `update` computes again from the newer value instead of overwriting it.
#[test]
fn update_recomputes_after_a_conflicting_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(KVStore::new(base(&dir), 64 * 1024, None, None).unwrap());
    store.insert("k".into(), Value::Integer(10)).unwrap();
    let mut calls = Vec::new();
    let stored = store
        .update("k", |current| {
            let current = current.and_then(Value::as_i64).unwrap_or(0);
            if calls.is_empty() {
                // Another thread writes the key while this update is being computed.
                let other = Arc::clone(&store);
                std::thread::spawn(move || other.insert("k".into(), Value::Integer(100)))
                    .join()
                    .unwrap()
                    .unwrap();
            }
            calls.push(current);
            Some(Value::Integer(current + 1))
        })
        .unwrap();
    assert_eq!(calls, vec![10, 100]);
    assert_eq!(stored, Some(Value::Integer(101)));
    assert_eq!(store.get("k").unwrap(), Some(Value::Integer(101)));
}

/// A high-water-mark callback may use the store. With `Durability::Sync`, the write that
/// crossed the mark used to hold its journal while the callback ran, and the compactor waits
/// for every holder of a journal before reusing its file: a callback that compacted waited
/// forever for a compaction that waited for it.
#[test]
fn a_high_water_mark_callback_may_compact_the_store() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static STORE: std::sync::OnceLock<KVStore> = std::sync::OnceLock::new();
    static EVENTS: std::sync::OnceLock<std::sync::Mutex<crossbeam_channel::Receiver<Event>>> =
        std::sync::OnceLock::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    /// Waits until the compaction this write asked for has started (so the request below is
    /// not merged into it), then asks for another one and waits for it.
    fn compact_now(_: usize, _: usize, _: usize) {
        CALLS.fetch_add(1, Ordering::SeqCst);
        let (Some(store), Some(events)) = (STORE.get(), EVENTS.get()) else {
            return;
        };
        let active = store.stats().generation;
        let events = events.lock().unwrap();
        while let Ok(event) = events.recv_timeout(std::time::Duration::from_secs(10)) {
            if matches!(event, Event::CompactionStarted { generation } if generation > active) {
                break;
            }
        }
        store.compact().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let store = KVStore::builder(base(&dir))
        .buffer_size(64 * 1024)
        .durability(resilient_kv::Durability::Sync)
        .pace_compactions(false)
        .on_high_water_mark(compact_now)
        .open()
        .unwrap();
    let events = store.subscribe();
    assert!(EVENTS.set(std::sync::Mutex::new(events)).is_ok());
    assert!(STORE.set(store).is_ok());
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let store = STORE.get().unwrap();
        let value = Value::from("v".repeat(1000));
        for i in 0..200 {
            store.insert(format!("k{}", i % 20), value.clone()).unwrap();
        }
        done.send(store.stats().compactions).unwrap();
    });
    let compactions = finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the writes finish");
    assert!(CALLS.load(Ordering::SeqCst) >= 2);
    assert!(compactions >= 4, "{compactions}");
}

/// `KVStore` is `Debug`, as public types are expected to be: its base path and size.
#[test]
fn a_store_prints_its_path_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
    store.insert("a".into(), Value::Integer(1)).unwrap();
    let printed = format!("{store:?}");
    assert!(printed.starts_with("KVStore {"), "{printed}");
    assert!(
        printed.contains("app.db") && printed.contains("len: 1"),
        "{printed}"
    );
}

/// Negative big numbers inside a batch survive a reopen, also after a compaction (which packs
/// live keys into batches): replay once read such a value a byte short and lost the record.
#[test]
fn negative_big_numbers_in_batches_survive_reopen_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let minus_five = Value::BigNumber(resilient_kv::bonjson::BigNumber::parse("-5").unwrap());
    let minus_small = Value::BigNumber(resilient_kv::bonjson::BigNumber::parse("-1.50").unwrap());
    {
        let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
        let mut batch = Batch::new();
        batch
            .insert("a", minus_five.clone())
            .insert("b", Value::Integer(1))
            .insert("c", minus_small.clone());
        store.write_batch(batch).unwrap();
    }
    for round in 0..2 {
        let store = KVStore::new(base(&dir), 64 * 1024, None, None).unwrap();
        assert_eq!(store.stats().data_loss_events, 0, "round {round}");
        assert_eq!(
            store.get("a").unwrap(),
            Some(minus_five.clone()),
            "round {round}"
        );
        assert_eq!(
            store.get("b").unwrap(),
            Some(Value::Integer(1)),
            "round {round}"
        );
        assert_eq!(
            store.get("c").unwrap(),
            Some(minus_small.clone()),
            "round {round}"
        );
        store.compact().unwrap();
    }
}

/// A record that fits after the compacted live data but not after its commit marker gets
/// `Full` at the largest size, once: it made its writer wait through compaction after
/// compaction for ever.
#[test]
fn a_record_that_fits_only_without_the_commit_marker_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        KVStore::builder(base(&dir))
            .buffer_size(64 * 1024)
            .max_size(64 * 1024)
            .open()
            .unwrap(),
    );
    store
        .insert("a".into(), Value::from("x".repeat(29_983)))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = {
        let store = std::sync::Arc::clone(&store);
        std::thread::spawn(move || {
            let _ = tx.send(store.insert("b".into(), Value::from("y".repeat(29_363))));
        })
    };
    let outcome = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the write waited for room for 30 s");
    assert!(matches!(outcome, Err(Error::Full { .. })), "{outcome:?}");
    writer.join().unwrap();
    assert_eq!(store.len(), 1);
}
