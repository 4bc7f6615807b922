//! Several writer and reader threads through a compaction storm (tiny journals), on real files.
//!
//! Invariants checked while it runs: a snapshot never changes once taken; snapshots taken by
//! one thread never go backwards; a batch is never seen half applied; and after reopen the
//! store holds exactly the last value each writer wrote.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use resilient_kv::{Batch, Event, KVStore, Value};

const WRITERS: i64 = 3;
const WRITES_PER_WRITER: i64 = 6_000;

#[test]
fn writers_and_readers_through_a_compaction_storm() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("storm");
    let store = Arc::new(
        KVStore::builder(&base)
            .buffer_size(16 * 1024)
            .open()
            .unwrap(),
    );
    let events = store.subscribe();
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let mut last_seq = 0;
                // Each writer's counter only grows, so the values a reader sees in successive
                // snapshots never go down (a check on the data, not only on the sequence
                // number the writer stamps on each version).
                let mut last_counters = [-1_i64; WRITERS as usize];
                let mut checks = 0_u64;
                while !done.load(Ordering::Acquire) {
                    let snap = store.snapshot();
                    assert!(snap.seq() >= last_seq, "snapshots went backwards");
                    last_seq = snap.seq();
                    for (w, last) in last_counters.iter_mut().enumerate() {
                        if let Some(Value::Integer(now)) = snap.get(&format!("w{w}_counter")) {
                            assert!(now >= *last, "w{w}_counter went from {last} to {now}");
                            *last = now;
                        }
                    }
                    let frozen = snap.to_hashmap();
                    // A batch writes pair_a and pair_b with the same number, always together.
                    for w in 0..WRITERS {
                        let a = snap.get(&format!("w{w}_pair_a"));
                        let b = snap.get(&format!("w{w}_pair_b"));
                        assert_eq!(a, b, "half a batch is visible");
                    }
                    // Later writes never change a snapshot.
                    thread::yield_now();
                    assert_eq!(snap.to_hashmap(), frozen, "a snapshot changed");
                    let _ = store.get("w0_counter").unwrap();
                    checks += 1;
                }
                checks
            })
        })
        .collect();

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for i in 0..WRITES_PER_WRITER {
                    store
                        .insert(format!("w{w}_counter"), Value::Integer(i))
                        .unwrap();
                    store
                        .insert(format!("w{w}_key{}", i % 40), Value::Integer(i))
                        .unwrap();
                    if i % 10 == 0 {
                        let mut batch = Batch::new();
                        batch
                            .insert(format!("w{w}_pair_a"), Value::Integer(i))
                            .insert(format!("w{w}_pair_b"), Value::Integer(i));
                        store.write_batch(batch).unwrap();
                    }
                    if i % 1000 == 999 {
                        store.remove(&format!("w{w}_key0")).unwrap();
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let checks: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(checks > 0);

    let compactions = events
        .try_iter()
        .filter(|e| matches!(e, Event::CompactionFinished { .. }))
        .count();
    assert!(
        compactions >= 10,
        "only {compactions} compactions: not a storm"
    );
    let expected = store.as_hashmap();
    for w in 0..WRITERS {
        assert_eq!(
            expected.get(&format!("w{w}_counter")),
            Some(&Value::Integer(WRITES_PER_WRITER - 1))
        );
    }
    drop(store);
    let reopened = KVStore::builder(&base)
        .buffer_size(16 * 1024)
        .open()
        .unwrap();
    assert_eq!(reopened.as_hashmap(), expected);
    println!("concurrency: {checks} reader checks, {compactions} compactions");
}

/// A write waiting for room at the largest allowed size fails with `Full` only when the live
/// data leaves it no room, not because other writers took the room a compaction made before
/// it got the lock back (the journal here is mostly garbage at every compaction).
#[test]
fn writers_racing_for_room_at_max_size_never_get_full() {
    const THREADS: usize = 6;
    const WRITES: usize = 1_500;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        KVStore::builder(dir.path().join("race"))
            .buffer_size(64 * 1024)
            .max_size(64 * 1024)
            .open()
            .unwrap(),
    );
    // About 8 KiB live: each thread overwrites one key with a 1 KiB string.
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                let mut fulls = 0;
                for i in 0..WRITES {
                    let value = Value::from(format!("{t}{i:0>1023}"));
                    match store.insert(format!("t{t}"), value) {
                        Ok(_) => {}
                        Err(resilient_kv::Error::Full { .. }) => fulls += 1,
                        Err(e) => panic!("thread {t}, write {i}: {e:?}"),
                    }
                }
                fulls
            })
        })
        .collect();
    let fulls: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let compactions = store.stats().compactions;
    assert_eq!(
        fulls, 0,
        "{fulls} writes got Full over {compactions} compactions"
    );
    for t in 0..THREADS {
        let expected = format!("{t}{:0>1023}", WRITES - 1);
        assert_eq!(
            store.get(&format!("t{t}")).unwrap(),
            Some(Value::from(expected))
        );
    }
    println!("racing for room: {compactions} compactions, no Full");
}
