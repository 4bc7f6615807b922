//! Field note 10: compaction ran on the writer's thread, so the write that crossed the mark
//! stalled for a time proportional to the whole state. This test runs alone in its own binary
//! because it counts the process's threads.

use resilient_kv::{KVStore, Value};

/// Note 10: compaction runs on its own named thread, which exists while the store is open
/// and is joined when it closes; the writer that crosses the mark only sends it a message.
#[test]
fn field_note_10_compaction_runs_in_the_background() {
    fn compactor_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
            .filter(|name| name.trim() == "rkv-compactor")
            .count()
    }
    // A new thread names itself as it starts, and an ended one takes a moment to be reaped:
    // wait for the count (up to a minute on a loaded machine; it returns as soon as it holds).
    fn settle(expected: usize) -> usize {
        let started = std::time::Instant::now();
        while compactor_threads() != expected
            && started.elapsed() < std::time::Duration::from_secs(60)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        compactor_threads()
    }
    let dir = tempfile::tempdir().unwrap();
    let before = compactor_threads();
    let store = KVStore::builder(dir.path().join("notes"))
        .buffer_size(16 * 1024)
        .open()
        .unwrap();
    assert_eq!(settle(before + 1), before + 1);
    let events = store.subscribe();
    for i in 0..2_000 {
        store
            .insert(format!("k{}", i % 20), Value::Integer(i))
            .unwrap();
    }
    assert!(store.stats().compactions > 0);
    assert!(
        events
            .try_iter()
            .any(|e| matches!(e, resilient_kv::Event::CompactionFinished { .. }))
    );
    drop(store);
    assert_eq!(settle(before), before, "Drop joins the compactor");
}
