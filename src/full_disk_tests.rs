//! A full disk and failing compactions, on the in-memory storage seam: a write that needs
//! room the disk cannot give fails alone, compactions go on without the headroom they wanted,
//! and failed compactions are not retried at every write.

use std::sync::atomic::Ordering;

use crate::journal::storage::MemBackend;
use crate::options::Builder;
use crate::recovery_tests::{hold_compaction, inactive_slot};
use crate::test_support::wait_until;
use crate::{Error, Event, KVStore, Value};

const JOURNAL: usize = 16 * 1024;

fn open(disk: &MemBackend) -> KVStore {
    KVStore::open_on(
        Builder::new(std::path::Path::new("mem")).buffer_size(JOURNAL),
        disk,
    )
    .unwrap()
}

/// A store whose journals may never grow past the size they start at.
fn open_at_max_size(disk: &MemBackend) -> KVStore {
    open_sized(disk, JOURNAL)
}

/// A store whose journals are `size` bytes and may never grow.
fn open_sized(disk: &MemBackend, size: usize) -> KVStore {
    KVStore::open_on(
        Builder::new(std::path::Path::new("mem"))
            .buffer_size(size)
            .max_size(size),
        disk,
    )
    .unwrap()
}

/// Writes and waits until any compaction the write started has ended; returns how many
/// compactions failed meanwhile. (A write that asks for a compaction marks it requested under
/// the writer lock before it returns, and a failed compaction sends its event before it clears
/// that mark, so no failure is missed however late the compactor runs.)
fn insert_and_settle(
    store: &KVStore,
    events: &crate::sync::channel::Receiver<Event>,
    i: usize,
) -> usize {
    store
        .insert(
            format!("key{:03}", i % 40),
            Value::from(format!("value {i:06}")),
        )
        .unwrap();
    wait_until("the compaction to end", || {
        !store.shared.writer.lock().compacting
    });
    events
        .try_iter()
        .filter(|event| matches!(event, Event::CompactionFailed { .. }))
        .count()
}

/// A write that needs the journals to grow on a disk that cannot give the room fails with
/// `Full` and changes nothing, and leaves no claim behind: later compactions neither try to
/// grow for it nor fail, and small writes go on (field note 2's "compaction stopped for good
/// after a failed oversized batch", through a full disk).
#[test]
fn a_write_the_full_disk_cannot_hold_fails_alone() {
    let disk = MemBackend::new();
    let store = open(&disk);
    store.insert("small".into(), Value::Integer(1)).unwrap();
    disk.grow_limit.store(64 * 1024, Ordering::SeqCst);
    let big = Value::from("b".repeat(40 * 1024));
    assert!(matches!(
        store.insert("big".into(), big),
        Err(Error::Full { .. })
    ));
    assert_eq!(store.get("big").unwrap(), None);
    let events = store.subscribe();
    let mut failed = 0;
    for i in 0..3000 {
        failed += insert_and_settle(&store, &events, i);
    }
    store.compact().unwrap();
    assert_eq!(
        failed, 0,
        "compactions after the refused write must succeed"
    );
    assert!(store.stats().compactions > 3);
    drop(store);
    let store = open(&disk);
    assert_eq!(store.get("big").unwrap(), None);
    assert_eq!(store.get("small").unwrap(), Some(Value::Integer(1)));
    assert_eq!(store.len(), 41);
}

/// Live data above half the high-water mark makes a compaction want a bigger journal. On a
/// disk that cannot grow the file, it compacts at the size it has instead of failing (the
/// data fits), so writes go on.
#[test]
fn a_compaction_that_cannot_grow_compacts_at_the_size_it_has() {
    let disk = MemBackend::new();
    let store = open(&disk);
    disk.grow_limit.store(JOURNAL, Ordering::SeqCst);
    let events = store.subscribe();
    // About 7.5 KiB of live data: above 6.5 KiB (half the mark), well below 16 KiB.
    let value = |i: usize| Value::from(format!("{i:0>150}"));
    for i in 0..45 {
        store.insert(format!("wide{i:02}"), value(i)).unwrap();
    }
    let mut failed = 0;
    let mut compactions = 0;
    for i in 0..400 {
        store
            .insert(format!("wide{:02}", i % 45), value(i))
            .unwrap();
        for event in events.try_iter() {
            match event {
                Event::CompactionFailed { .. } => failed += 1,
                Event::CompactionFinished { .. } => compactions += 1,
                _ => {}
            }
        }
    }
    store.compact().unwrap();
    assert_eq!(failed, 0);
    assert!(compactions > 2, "{compactions} compactions");
    assert_eq!(store.stats().active_capacity, JOURNAL as u64);
    drop(store);
    let store = open(&disk);
    assert_eq!(store.len(), 45);
    assert_eq!(store.get("wide00").unwrap(), Some(value(360)));
}

/// A compaction that fails (here: its flushes fail) is not started again at the very next
/// write: the next attempt waits until half of the journal's remaining room is used, so a
/// failing disk sees a handful of attempts, not one per write.
#[test]
fn failed_compactions_back_off() {
    let disk = MemBackend::new();
    let store = open(&disk);
    let events = store.subscribe();
    disk.fail_flushes.store(true, Ordering::SeqCst);
    let mut failed = 0;
    // Stop well before the journal is full (writers would then wait for room and fail).
    let mut i = 0;
    while store.stats().active_used < (JOURNAL - 1024) as u64 {
        failed += insert_and_settle(&store, &events, i);
        i += 1;
    }
    assert!(failed >= 1, "the flushes fail, so compactions must");
    assert!(
        failed <= 10,
        "{failed} failed compactions over {i} writes: no back-off"
    );
    // The pace, which measured these writes, keeps out of the back-off's way.
    assert_eq!(store.shared.writer.lock().pace.latest_start, usize::MAX);
    disk.fail_flushes.store(false, Ordering::SeqCst);
}

/// Makes the next flush of records into the inactive journal fail, once (the next
/// compaction's).
fn fail_the_next_records_flush(disk: &MemBackend) {
    let inactive = inactive_slot(disk);
    let mut failed_once = false;
    *disk.fail_flush_when.lock() = Some(Box::new(move |slot, offset, _| {
        let fail = slot == inactive && offset > 0 && !failed_once;
        failed_once |= fail;
        fail
    }));
}

/// Holds the next compaction at its first write to the inactive journal, has a writer overwrite
/// one key 300 times with 100-byte values (more than the journal holds, so it waits for room),
/// then lets the compaction go on. Returns the compaction's result and the writer's.
fn overwrite_through_a_held_compaction(
    disk: &MemBackend,
    store: &KVStore,
) -> (crate::Result<()>, crate::Result<()>) {
    let written = std::sync::Mutex::new(None);
    let compacted = hold_compaction(disk, store, |scope| {
        scope.spawn(|| {
            let result = (1..=300).try_for_each(|i| {
                store
                    .insert("k".into(), Value::from(format!("{i:0>100}")))
                    .map(drop)
            });
            *written.lock().unwrap() = Some(result);
        });
        wait_until("the writer to wait for room", || {
            store.shared.writer.lock().waited_for_room
        });
    });
    let written = written.into_inner().unwrap().expect("the writer ran");
    (compacted, written)
}

/// At `max_size`, a write that finds the journal full while a compaction is already running
/// waits for one that starts after it, instead of failing with `Full` when the running one
/// (which copies every overwrite made while it ran) leaves no room: the next compaction drops
/// those overwrites and makes room, so the write must succeed.
#[test]
fn a_write_at_max_size_waits_for_a_compaction_that_started_after_it() {
    let disk = MemBackend::new();
    let store = open_at_max_size(&disk);
    store.insert("k".into(), Value::Integer(0)).unwrap();
    // The held compaction has next to nothing to copy but what the writer appends meanwhile.
    store.compact().unwrap();
    assert_eq!(store.stats().waits_for_room, 0);
    let (compaction, writer) = overwrite_through_a_held_compaction(&disk, &store);
    compaction.unwrap();
    writer.unwrap();
    // The writer waited for room (30 kB of overwrites through a 16 KiB journal: more than
    // once, each wait counted once).
    let waits = store.stats().waits_for_room;
    assert!((1..300).contains(&waits), "{:?}", store.stats());
    assert_eq!(
        store.get("k").unwrap(),
        Some(Value::from(format!("{:0>100}", 300)))
    );
}

/// A write that found the journal full while a compaction was running does not fail with
/// `Full` when that compaction fails (here: one injected flush error): it waits for the next
/// compaction, which makes the room.
#[test]
fn a_write_waiting_on_a_compaction_that_fails_waits_for_the_next_one() {
    let disk = MemBackend::new();
    let store = open(&disk);
    store.insert("k".into(), Value::Integer(0)).unwrap();
    fail_the_next_records_flush(&disk);
    let (compaction, writer) = overwrite_through_a_held_compaction(&disk, &store);
    assert!(compaction.is_err(), "the held compaction fails");
    writer.unwrap();
    assert_eq!(
        store.get("k").unwrap(),
        Some(Value::from(format!("{:0>100}", 300)))
    );
}

/// A write that waited for room and failed because the compaction it waited for failed gets
/// that compaction's error (not `Full`: the store may have room once a compaction succeeds),
/// and leaves no claim on the next journal behind: once the disk works again, the next
/// compaction does not grow the journals for a write nobody is making any more.
#[test]
fn a_failed_compaction_forgets_the_room_a_writer_claimed() {
    let disk = MemBackend::new();
    let store = open(&disk);
    store.insert("k".into(), Value::Integer(0)).unwrap();
    // The compaction the big write asks for can neither grow the journal (it goes on at the
    // size it has) nor flush what it wrote (it fails).
    disk.grow_limit.store(JOURNAL, Ordering::SeqCst);
    fail_the_next_records_flush(&disk);
    // More than the 16 KiB journal has left, less than it holds once compacted.
    let big = Value::from("b".repeat(12 * 1024));
    let refused = store.insert("big".into(), big);
    assert!(
        matches!(refused, Err(Error::Io { op: "msync", .. })),
        "{refused:?}"
    );
    assert_eq!(store.get("big").unwrap(), None);
    *disk.fail_flush_when.lock() = None;
    disk.grow_limit.store(0, Ordering::SeqCst);
    let events = store.subscribe();
    store.compact().unwrap();
    let grown: Vec<Event> = events
        .try_iter()
        .filter(|e| matches!(e, Event::JournalGrown { .. }))
        .collect();
    assert!(grown.is_empty(), "grown for a claim left behind: {grown:?}");
    assert_eq!(store.stats().active_capacity, JOURNAL as u64);
    assert_eq!(store.get("k").unwrap(), Some(Value::Integer(0)));
}

/// A compaction that fails because the live data does not fit at `max_size` gives the
/// writers that waited for it their own `Full`: `needed` counts the refused record, so two
/// refused writes 10 bytes apart need 10 bytes more (the compaction's own `Full` names where
/// its journal ran out, the same for both). Compaction packs live keys into batch records of
/// at most 64 KiB of operations (`journal/pack.rs`), so one user batch of nearly 1 MiB comes
/// out as 16 records, 224 bytes larger: sized to leave less than that free, it cannot be
/// compacted into the journal it fits.
#[test]
fn a_compaction_that_finds_no_room_gives_waiting_writers_their_own_full() {
    const SIZE: usize = 1024 * 1024;
    let disk = MemBackend::new();
    let store = open_sized(&disk, SIZE);
    // 101,163 puts of 10 bytes each (`k000000` = 1): one record of 12 + 4 + 1,011,630
    // bytes after the new store's commit marker, ending 45 bytes before the writers' limit
    // (the size less its removal reserve).
    let mut batch = crate::Batch::new();
    for i in 0..101_163 {
        batch.insert(format!("k{i:06}"), Value::Integer(i % 100));
    }
    store.write_batch(batch).unwrap();
    assert_eq!(store.stats().active_used as usize, SIZE - SIZE / 32 - 45);
    let events = store.subscribe();
    let mut refused = Vec::new();
    for (i, len) in [(0, 100), (1, 110)] {
        loop {
            let used = store.stats().active_used;
            match store.insert(format!("x{i}"), Value::from("y".repeat(len))) {
                Ok(_) => {
                    store.remove(&format!("x{i}")).unwrap();
                }
                Err(Error::Full { needed, .. }) => {
                    assert!(needed > used, "needed {needed}, journal at {used}");
                    refused.push(needed);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(
        events.try_iter().any(
            |e| matches!(&e, Event::CompactionFailed { reason, .. } if reason.contains("full"))
        ),
        "no compaction failed for lack of room"
    );
    assert_eq!(refused[1] - refused[0], 10, "{refused:?}");
    assert_eq!(store.len(), 101_163);
}

/// A batch of many small puts that fits a journal at its largest size compacts into the same
/// size: compaction packs live keys into batch records. Written back one record per key (12
/// bytes of frame each) it needed twice the room, every compaction failed with `Full`, and
/// the store took no more writes but removals until those filled the reserve too.
#[test]
fn a_large_batch_of_small_puts_compacts_where_it_fits() {
    const SIZE: usize = 64 * 1024;
    let disk = MemBackend::new();
    let store = open_sized(&disk, SIZE);
    let mut batch = crate::Batch::new();
    for i in 0..7_000 {
        batch.insert(format!("k{i:04}"), Value::Integer(1));
    }
    store.write_batch(batch).unwrap();
    store.compact().unwrap();
    for i in 0..2_000 {
        store
            .insert(format!("k{:04}", i % 50), Value::Integer(2))
            .unwrap();
    }
    assert_eq!(store.len(), 7_000);
    assert_eq!(store.get("k0049").unwrap(), Some(Value::Integer(2)));
    assert_eq!(store.get("k6999").unwrap(), Some(Value::Integer(1)));
    drop(store);
    let reopened = open_sized(&disk, SIZE);
    assert_eq!(reopened.len(), 7_000);
    assert_eq!(reopened.stats().data_loss_events, 0);
}
