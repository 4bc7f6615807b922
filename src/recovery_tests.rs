//! Recovery on the in-memory storage seam: damaged, torn, stale and foreign journals.
//!
//! Each test is named after the way an earlier store of this design lost data (the numbers
//! refer to `shared/FIELD-NOTES.md`) and fails if that way comes back.

use crate::journal::format::{self, FRAME_SIZE, HEADER_SIZE};
use crate::journal::storage::{DiskOp, MemBackend, Slot};
use crate::options::Builder;
use crate::test_support::wait_until;
use crate::{Error, Event, KVStore, Value};

fn open(disk: &MemBackend) -> crate::Result<KVStore> {
    KVStore::open_on(
        Builder::new(std::path::Path::new("mem")).buffer_size(16 * 1024),
        disk,
    )
}

fn fill(store: &KVStore, range: std::ops::Range<i64>) {
    for i in range {
        store.insert(format!("k{i}"), Value::Integer(i)).unwrap();
    }
}

/// Slot of the journal with the highest committed generation.
fn active_slot(disk: &MemBackend) -> Slot {
    let generation = |slot| match format::decode_header(&disk.file(slot).lock()) {
        format::HeaderRead::Valid(h) if h.state == format::STATE_COMMITTED => h.generation,
        _ => 0,
    };
    if generation(Slot::A) >= generation(Slot::B) {
        Slot::A
    } else {
        Slot::B
    }
}

/// Zeroes the active journal's header (written after 20 keys and a compaction, then "newest")
/// and checks that a reopen still finds all 21 keys, "newest" among them.
fn newest_survives_zeroing_the_active_header(disk: &MemBackend) {
    zero_header(disk, active_slot(disk));
    let store = open(disk).unwrap();
    assert_eq!(store.get("newest").unwrap(), Some(Value::Integer(1)));
    assert_eq!(store.len(), 21);
}

/// Zeroes the header of the journal in `slot`.
fn zero_header(disk: &MemBackend, slot: Slot) {
    disk.file(slot).lock()[..HEADER_SIZE]
        .iter_mut()
        .for_each(|b| *b = 0);
}

/// Offsets of the records in the active journal.
fn record_offsets(disk: &MemBackend, slot: Slot, generation: u64) -> Vec<usize> {
    let bytes = disk.file(slot).lock().clone();
    let mut offsets = Vec::new();
    let mut pos = HEADER_SIZE;
    while let format::FrameRead::Record { len } = format::read_frame(&bytes[pos..], generation) {
        offsets.push(pos);
        pos += FRAME_SIZE + len;
    }
    offsets
}

/// The slot of the journal that is not active (the next compaction writes there).
pub(crate) fn inactive_slot(disk: &MemBackend) -> Slot {
    if active_slot(disk) == Slot::A {
        Slot::B
    } else {
        Slot::A
    }
}

/// Starts `store.compact()` on another thread, holds it at its first write to the inactive
/// journal, runs `during` (which may start threads of its own on the scope), then lets the
/// compaction go on and returns its result. Threads `during` started are joined when the
/// scope ends, before this returns.
pub(crate) fn hold_compaction<'env>(
    disk: &'env MemBackend,
    store: &'env KVStore,
    during: impl for<'scope> FnOnce(&'scope std::thread::Scope<'scope, 'env>),
) -> crate::Result<()> {
    let inactive = inactive_slot(disk);
    disk.pause_when(Some(Box::new(move |op| op.slot() == inactive)));
    std::thread::scope(|scope| {
        let compaction = scope.spawn(|| store.compact());
        wait_until("the compaction to be held", || disk.held() > 0);
        during(scope);
        disk.pause_when(None);
        compaction.join().unwrap()
    })
}

/// [`hold_compaction`], checking that the compaction succeeded.
fn with_compaction_held<'env>(
    disk: &'env MemBackend,
    store: &'env KVStore,
    during: impl for<'scope> FnOnce(&'scope std::thread::Scope<'scope, 'env>),
) {
    hold_compaction(disk, store, during).unwrap();
}

/// Writes what an unfinished compaction attempt at `generation` leaves in `slot`: a flushed
/// `PENDING` header, then `records` put records of that generation.
fn leave_unfinished_attempt(
    disk: &MemBackend,
    slot: Slot,
    generation: u64,
    records: &[(String, Value)],
) {
    let file = disk.file(slot);
    let mut bytes = file.lock();
    let header = format::Header {
        version: 1,
        state: format::STATE_PENDING,
        generation,
    };
    bytes[..format::HEADER_USED].copy_from_slice(&format::encode_header(&header));
    let mut pos = HEADER_SIZE;
    for (key, value) in records {
        let mut body = Vec::new();
        format::encode_put(key, value, &Default::default(), &mut body).unwrap();
        bytes[pos..pos + FRAME_SIZE].copy_from_slice(&format::frame(generation, &body));
        bytes[pos + FRAME_SIZE..pos + FRAME_SIZE + body.len()].copy_from_slice(&body);
        pos += FRAME_SIZE + body.len();
    }
}

#[test]
fn field_note_1_cleared_data_never_comes_back_from_a_stale_journal() {
    let disk = MemBackend::new();
    {
        let store = open(&disk).unwrap();
        fill(&store, 0..50);
        store.compact().unwrap();
        fill(&store, 50..60);
        store.clear().unwrap();
        store.compact().unwrap();
        store.insert("survivor".into(), Value::Integer(1)).unwrap();
    }
    let store = open(&disk).unwrap();
    assert_eq!(store.keys(), vec!["survivor".to_string()]);
}

#[test]
fn field_note_2_compaction_keeps_triggering_after_clear_and_oversized_state() {
    let disk = MemBackend::new();
    let store = open(&disk).unwrap();
    fill(&store, 0..200);
    store.clear().unwrap();
    let before = store.stats().compactions;
    // Journals may grow when writers had to wait for a compaction (up to 16 x 16 KiB), so
    // write until four more compactions ran, or far more than four of the largest journals.
    let mut round = 0;
    while store.stats().compactions <= before + 3 && round < 100_000 {
        store
            .insert(format!("again{}", round % 50), Value::Integer(round))
            .unwrap();
        round += 1;
    }
    assert!(
        store.stats().compactions > before + 3,
        "{:?}",
        store.stats()
    );
}

#[test]
fn field_note_4_mid_journal_corruption_is_reported_not_silent() {
    let disk = MemBackend::new();
    {
        let store = open(&disk).unwrap();
        fill(&store, 0..40);
    }
    let slot = active_slot(&disk);
    let offsets = record_offsets(&disk, slot, 1);
    let victim = offsets[offsets.len() / 2];
    disk.file(slot).lock()[victim + FRAME_SIZE + 2] ^= 0x40;
    let store = open(&disk).unwrap();
    let events: Vec<Event> = store.subscribe().try_iter().collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::DataLoss { offset, lost_bytes, .. }
            if *offset == victim as u64 && *lost_bytes > 0)),
        "{events:?}"
    );
    assert_eq!(store.stats().data_loss_events, 1);
}

#[test]
fn field_note_6_a_journal_filled_to_the_last_byte_reopens() {
    let disk = MemBackend::new();
    {
        let store = open(&disk).unwrap();
        fill(&store, 0..100);
    }
    // Append one record, sized so that it ends exactly at the file's last byte.
    let slot = active_slot(&disk);
    let generation = match format::decode_header(&disk.file(slot).lock()) {
        format::HeaderRead::Valid(h) => h.generation,
        other => panic!("{other:?}"),
    };
    let end = record_offsets(&disk, slot, generation)
        .last()
        .map(|&at| {
            let file = disk.file(slot);
            let bytes = file.lock();
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            at + FRAME_SIZE + len
        })
        .unwrap();
    let capacity = disk.file(slot).lock().len();
    let mut body = Vec::new();
    let mut filler = capacity - end - FRAME_SIZE;
    loop {
        body.clear();
        let value = Value::from("f".repeat(filler));
        format::encode_put("last", &value, &Default::default(), &mut body).unwrap();
        match (end + FRAME_SIZE + body.len()).cmp(&capacity) {
            std::cmp::Ordering::Equal => break,
            std::cmp::Ordering::Greater => filler -= 1,
            std::cmp::Ordering::Less => filler += 1,
        }
    }
    {
        let file = disk.file(slot);
        let mut bytes = file.lock();
        bytes[end..end + FRAME_SIZE].copy_from_slice(&format::frame(generation, &body));
        bytes[end + FRAME_SIZE..].copy_from_slice(&body);
    }
    let store = open(&disk).unwrap();
    assert_eq!(store.len(), 101);
    assert_eq!(
        store
            .get("last")
            .unwrap()
            .and_then(|v| v.as_str().map(str::len)),
        Some(filler)
    );
    // And the full journal keeps taking writes (a compaction makes room).
    store.insert("after".into(), Value::Integer(1)).unwrap();
    drop(store);
    assert_eq!(open(&disk).unwrap().len(), 102);
}

#[test]
fn field_note_7_future_versions_and_unreadable_files_are_errors_not_wiped() {
    let disk = MemBackend::new();
    {
        let store = open(&disk).unwrap();
        fill(&store, 0..5);
    }
    let slot = active_slot(&disk);
    let original = disk.file(slot).lock().clone();
    let header = format::Header {
        version: 99,
        state: format::STATE_COMMITTED,
        generation: 1,
    };
    disk.file(slot).lock()[..format::HEADER_USED].copy_from_slice(&format::encode_header(&header));
    assert!(matches!(
        open(&disk),
        Err(Error::UnsupportedVersion { found: 99, .. })
    ));
    // Also with a generation this version could not write: a later version's rules may differ.
    let header = format::Header {
        generation: format::MAX_GENERATION + 1,
        ..header
    };
    disk.file(slot).lock()[..format::HEADER_USED].copy_from_slice(&format::encode_header(&header));
    assert!(matches!(
        open(&disk),
        Err(Error::UnsupportedVersion { found: 99, .. })
    ));
    // A header of generation 1 in a state this version does not know, over a blank second
    // file, is not a creation cut short (only creation writes generation 1, and it writes
    // `PENDING`): refused and left as it is, not made into a new store.
    let unknown_state = format::Header {
        version: format::FORMAT_VERSION,
        state: 7,
        generation: 1,
    };
    let mut first = vec![0_u8; original.len()];
    first[..format::HEADER_USED].copy_from_slice(&format::encode_header(&unknown_state));
    *disk.file(Slot::A).lock() = first.clone();
    *disk.file(Slot::B).lock() = vec![0_u8; original.len()];
    assert!(matches!(open(&disk), Err(Error::Unreadable { .. })));
    assert_eq!(*disk.file(Slot::A).lock(), first);

    let garbage: Vec<u8> = (0..original.len()).map(|i| (i * 7 + 3) as u8).collect();
    *disk.file(Slot::A).lock() = garbage.clone();
    *disk.file(Slot::B).lock() = garbage.clone();
    assert!(matches!(open(&disk), Err(Error::Unreadable { .. })));
    assert_eq!(
        *disk.file(Slot::A).lock(),
        garbage,
        "an unreadable file is never rewritten"
    );
}

#[test]
fn field_note_11_a_torn_last_record_is_dropped_and_the_rest_kept() {
    let disk = MemBackend::new();
    {
        let store = open(&disk).unwrap();
        fill(&store, 0..10);
    }
    let slot = active_slot(&disk);
    let offsets = record_offsets(&disk, slot, 1);
    let last = *offsets.last().unwrap();
    // Cut the last record at every byte of its body: it disappears, nothing else does.
    let original = disk.file(slot).lock().clone();
    for cut in last + 1..last + FRAME_SIZE + 4 {
        let mut bytes = original.clone();
        bytes[cut..].iter_mut().for_each(|b| *b = 0);
        *disk.file(slot).lock() = bytes;
        let store = open(&disk).unwrap();
        assert_eq!(store.len(), 9, "cut at {cut}");
        assert_eq!(store.get("k9").unwrap(), None);
        assert_eq!(
            store.stats().data_loss_events,
            0,
            "a torn tail is not data loss"
        );
    }
}

#[test]
fn a_zeroed_header_of_the_newest_journal_does_not_elect_stale_data() {
    let disk = MemBackend::new();
    {
        let store = open(&disk).unwrap();
        fill(&store, 0..20);
        store.compact().unwrap();
        store.insert("newest".into(), Value::Integer(1)).unwrap();
    }
    newest_survives_zeroing_the_active_header(&disk);
}

#[test]
fn an_unfinished_compaction_is_never_elected() {
    let disk = MemBackend::new();
    {
        let store = open(&disk).unwrap();
        fill(&store, 0..20);
    }
    // Simulate a crash during a compaction: the inactive file holds a PENDING header of the
    // next generation and some of its records.
    leave_unfinished_attempt(
        &disk,
        inactive_slot(&disk),
        2,
        &[("k0".into(), Value::Integer(-1))],
    );
    let store = open(&disk).unwrap();
    assert_eq!(store.len(), 20);
    assert_eq!(store.get("k0").unwrap(), Some(Value::Integer(0)));
}

#[test]
fn a_failed_flush_poisons_the_store_for_good() {
    let disk = MemBackend::new();
    let store = open(&disk).unwrap();
    store.insert("before".into(), Value::Integer(1)).unwrap();
    disk.fail_flushes
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(store.sync().is_err(), "the failed flush is reported");
    // Even after the disk recovers, the store never claims durability again.
    disk.fail_flushes
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(store.sync(), Err(Error::Poisoned { .. })));
    assert!(matches!(
        store.insert("after".into(), Value::Integer(2)),
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(store.get("after").unwrap(), None);
    assert_eq!(
        store.get("before").unwrap(),
        Some(Value::Integer(1)),
        "reads still work"
    );
    drop(store);
    let store = open(&disk).unwrap();
    assert_eq!(
        store.get("before").unwrap(),
        Some(Value::Integer(1)),
        "reopening recovers"
    );
}

#[test]
fn sync_durability_reports_a_failed_flush_on_the_write() {
    let disk = MemBackend::new();
    let store = KVStore::open_on(
        Builder::new(std::path::Path::new("mem"))
            .buffer_size(16 * 1024)
            .durability(crate::Durability::Sync),
        &disk,
    )
    .unwrap();
    store.insert("ok".into(), Value::Integer(1)).unwrap();
    disk.fail_flushes
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(store.insert("unsure".into(), Value::Integer(2)).is_err());
    assert!(matches!(
        store.insert("later".into(), Value::Integer(3)),
        Err(Error::Poisoned { .. })
    ));
}

/// `Durability::Sync` writers that arrive while another one flushes share the next flush
/// (group commit): five concurrent writes cost two syncs, not five, and all five are durable
/// when they return.
#[test]
fn concurrent_sync_writers_share_flushes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let disk = MemBackend::recording(&crate::journal::storage::DiskImage::default());
    let config = Builder::new(std::path::Path::new("mem"))
        .buffer_size(64 * 1024)
        .durability(crate::Durability::Sync);
    let store = KVStore::open_on(config, &disk).unwrap();
    store.insert("warm".into(), Value::Integer(0)).unwrap();
    // Hold the first sync: its writer keeps the flush to itself while the other four append
    // their records and queue behind it.
    let first = AtomicBool::new(true);
    disk.pause_when(Some(Box::new(move |op| {
        matches!(op, DiskOp::Sync { .. }) && first.swap(false, Ordering::SeqCst)
    })));
    let before = disk.ops_done();
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..5)
            .map(|t| {
                let store = &store;
                scope.spawn(move || store.insert(format!("t{t}"), Value::Integer(t)))
            })
            .collect();
        wait_until("the first sync to be held", || disk.held() > 0);
        wait_until("all five records to be appended", || store.len() == 6);
        disk.release();
        for writer in writers {
            writer.join().unwrap().unwrap();
        }
    });
    disk.pause_when(None);
    let syncs = disk.ops()[before..]
        .iter()
        .filter(|op| matches!(op, DiskOp::Sync { .. }))
        .count();
    assert!(
        (1..=2).contains(&syncs),
        "five concurrent writes, {syncs} syncs"
    );
    // Each returned durable: a power cut now keeps all of them.
    let image = disk.image_at(disk.ops_done()).durable_only();
    let after = MemBackend::recording(&image);
    let store = open(&after).unwrap();
    assert_eq!(store.len(), 6);
}

/// A compaction attempt that failed (or was cut short by a crash) leaves records of its
/// generation in the inactive file. If a later compaction reused that generation number, those
/// leftovers would verify: replay could run into them (resurrecting stale values) and damage
/// detection would report them as lost data. Generations are therefore never reused.
#[test]
fn leftovers_of_a_failed_compaction_never_replay() {
    let disk = MemBackend::new();
    {
        let store = open(&disk).unwrap();
        fill(&store, 0..20);
    }
    // What a failed attempt at generation 2 leaves behind: a PENDING header and records.
    let ghosts: Vec<(String, Value)> = (0..200)
        .map(|i| (format!("ghost{i}"), Value::from(format!("ghost value {i}"))))
        .collect();
    leave_unfinished_attempt(&disk, inactive_slot(&disk), 2, &ghosts);
    {
        let store = open(&disk).unwrap();
        store.compact().unwrap();
        assert!(
            store.stats().generation > 2,
            "generation 2 must not be reused"
        );
        store.insert("after".into(), Value::Integer(1)).unwrap();
    }
    let store = open(&disk).unwrap();
    assert_eq!(store.len(), 21);
    assert!(!store.contains_key("ghost0") && !store.contains_key("ghost199"));
    assert_eq!(
        store.stats().data_loss_events,
        0,
        "leftovers are not lost data"
    );
}

/// A compaction whose catch-up (records written while it ran) does not fit in the room left in
/// the new journal grows that journal instead of failing. Here the new journal is the small
/// file (the active one grew at the compaction before) and a writer appends more during the
/// compaction than the small file holds.
#[test]
fn a_catch_up_larger_than_the_new_journal_grows_it_instead_of_failing() {
    let disk = MemBackend::new();
    let config = || {
        Builder::new(std::path::Path::new("mem"))
            .buffer_size(16 * 1024)
            .max_size(1 << 20)
            // The burst below would start a compaction early (on this in-memory disk its rate
            // is gigabytes per second); this test needs the one compaction it asks for.
            .pace_compactions(false)
    };
    let store = KVStore::open_on(config(), &disk).unwrap();
    let kib = |i: usize| Value::from(format!("{i:0>1000}"));
    // 8 KiB of live data, below the first journal's mark; the compaction grows the new one.
    for i in 0..8 {
        store.insert(format!("big{i}"), kib(i)).unwrap();
    }
    store.compact().unwrap();
    for i in 0..8 {
        store.remove(&format!("big{i}")).unwrap();
    }
    let before = store.stats();
    assert_eq!(before.compactions, 1, "{before:?}");
    assert_eq!(before.inactive_capacity, 16 * 1024, "{before:?}");
    assert!(before.active_capacity >= 32 * 1024, "{before:?}");

    let events = store.subscribe();
    // The compactor waits at its first write to the small file while 14 KiB are written: more
    // than the small file has room for.
    with_compaction_held(&disk, &store, |_| {
        for round in 0..14 {
            store.insert("hot".into(), kib(round)).unwrap();
        }
    });
    let after = store.stats();
    assert_eq!(after.compactions, 2, "{after:?}");
    assert!(after.active_capacity > 16 * 1024, "{after:?}");
    assert!(
        events
            .try_iter()
            .any(|e| matches!(e, Event::JournalGrown { .. })),
        "no growth event"
    );
    assert_eq!(store.get("hot").unwrap(), Some(kib(13)));
    drop(store);
    let store = KVStore::open_on(config(), &disk).unwrap();
    assert_eq!(store.get("hot").unwrap(), Some(kib(13)));
    assert_eq!(store.len(), 1);
}

/// A compaction holds no version of the published map while writers go on: they keep updating
/// it in place. (A held version made every write copy tree nodes, and freeing the values it
/// kept alive, all at once when the compaction ended, stalled the next writer in the allocator
/// for milliseconds.)
#[test]
fn a_compaction_pins_no_version_of_the_map() {
    let disk = MemBackend::new();
    let store = open(&disk).unwrap();
    fill(&store, 0..100);
    with_compaction_held(&disk, &store, |_| {
        for i in 0..100 {
            store.insert(format!("k{i}"), Value::Integer(-i)).unwrap();
        }
    });
    assert_eq!(store.shared.writer.lock().publisher.pinned_spares, 0);
    assert_eq!(store.stats().compactions, 1);
    drop(store);
    let store = open(&disk).unwrap();
    for i in 0..100 {
        assert_eq!(
            store.get(&format!("k{i}")).unwrap(),
            Some(Value::Integer(-i))
        );
    }
}

/// A compaction copies the live records of the active journal. If they no longer read back
/// (the file was damaged under the running store), it writes the map in memory instead: nothing
/// acknowledged is lost, and the new generation no longer has the damage.
#[test]
fn a_compaction_over_damaged_records_writes_the_map_instead() {
    let disk = MemBackend::new();
    let store = open(&disk).unwrap();
    fill(&store, 0..50);
    let slot = active_slot(&disk);
    let generation = store.stats().generation;
    let offsets = record_offsets(&disk, slot, generation);
    disk.file(slot).lock()[offsets[offsets.len() / 2] + FRAME_SIZE + 1] ^= 0x40;
    assert!(record_offsets(&disk, slot, generation).len() < offsets.len());
    store.compact().unwrap();
    assert_eq!(store.stats().compactions, 1);
    drop(store);
    let store = open(&disk).unwrap();
    assert_eq!(store.len(), 50);
    for i in 0..50 {
        assert_eq!(
            store.get(&format!("k{i}")).unwrap(),
            Some(Value::Integer(i))
        );
    }
}

/// A writer that found the active journal full and waited for a compaction makes the next
/// compaction start earlier (halfway between the live data and the high-water mark), so that
/// the writers have more room while it runs; the journals keep their size.
#[test]
fn writers_that_waited_for_room_make_the_next_compaction_start_earlier() {
    let disk = MemBackend::new();
    let store = open(&disk).unwrap();
    let hwm = 16 * 1024 * 8 / 10;
    // Hold the compactor at its first write to the other journal while a writer fills the
    // active one (16 KiB) and has to wait for the swap.
    with_compaction_held(&disk, &store, |scope| {
        scope.spawn(|| {
            // Write until a write returns after the swap (it waited for it), then stop, before
            // any later compaction moves the trigger again.
            for i in 0.. {
                let before = store.stats().compactions;
                store
                    .insert(format!("k{}", i % 10), Value::from("x".repeat(40)))
                    .unwrap();
                if store.stats().compactions > before {
                    break;
                }
            }
        });
        wait_until("a writer waiting for room", || {
            store.shared.writer.lock().waited_for_room
        });
    });
    let trigger = store.shared.writer.lock().trigger;
    let stats = store.stats();
    assert!(trigger < hwm, "trigger {trigger}, {stats:?}");
    assert!(
        trigger > stats.active_used as usize / 2,
        "trigger {trigger}, {stats:?}"
    );
    assert_eq!(stats.active_capacity, 16 * 1024, "{stats:?}");
    assert_eq!(stats.inactive_capacity, 16 * 1024, "{stats:?}");
    assert_eq!(store.len(), 10);
}

/// A compaction that must grow the new journal for the live data grows it before writing
/// (the size of the records it copies is known), so it writes them once, under one new
/// generation; it used to write them, find them too large, grow, and write them again under a
/// second generation.
#[test]
fn a_compaction_that_must_grow_writes_the_live_data_once() {
    let disk = MemBackend::new();
    // Not paced: eight quick writes measure a rate at which a paced compaction would start at
    // once, and race the one below (2 of 30 runs).
    let config = Builder::new(std::path::Path::new("mem"))
        .buffer_size(16 * 1024)
        .pace_compactions(false);
    let store = KVStore::open_on(config, &disk).unwrap();
    let events = store.subscribe();
    // About 8 KiB of live data: above half the mark of a 16 KiB journal, and below the mark
    // itself, so that no compaction starts on its own (with 9 KiB, the ninth write crossed
    // the mark and its compaction raced the one below).
    for i in 0..8 {
        store
            .insert(format!("big{i}"), Value::from("x".repeat(1000)))
            .unwrap();
    }
    let before = store.stats();
    // Count the `PENDING` headers written from here on (the pause hook sees every operation;
    // it holds none).
    let pending = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&pending);
    disk.pause_when(Some(Box::new(move |op| {
        if let DiskOp::Write {
            offset: 0, data, ..
        } = op
            && matches!(
                format::decode_header(data),
                format::HeaderRead::Valid(h) if h.state == format::STATE_PENDING
            )
        {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        false
    })));
    store.compact().unwrap();
    disk.pause_when(None);
    let after = store.stats();
    assert!(after.active_capacity > before.active_capacity, "{after:?}");
    assert_eq!(after.generation, before.generation + 1, "{after:?}");
    let pending_headers = pending.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(pending_headers, 1);
    assert!(
        events
            .try_iter()
            .any(|e| matches!(e, Event::JournalGrown { .. }))
    );
    drop(store);
    let store = open(&disk).unwrap();
    assert_eq!(store.len(), 8);
}

/// A last record whose checksum holds but whose body is malformed (a bug or a forged file) was
/// written whole, so it may have been acknowledged: opening reports it as data loss, unlike a
/// torn last record, and keeps everything before it.
#[test]
fn a_malformed_last_record_is_reported_not_taken_for_a_torn_one() {
    let disk = MemBackend::new();
    let end = {
        let store = open(&disk).unwrap();
        fill(&store, 0..10);
        store.stats().active_used as usize
    };
    let file = disk.file(active_slot(&disk));
    let body = [format::OP_PUT, 0xff];
    let frame = format::frame(1, &body);
    {
        let mut bytes = file.lock();
        bytes[end..end + FRAME_SIZE].copy_from_slice(&frame);
        bytes[end + FRAME_SIZE..end + FRAME_SIZE + body.len()].copy_from_slice(&body);
    }
    let store = open(&disk).unwrap();
    assert_eq!(store.len(), 10);
    let events: Vec<Event> = store.subscribe().try_iter().collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::DataLoss { offset, lost_bytes, .. }
            if *offset == end as u64 && *lost_bytes == (FRAME_SIZE + body.len()) as u64)),
        "{events:?}"
    );
}

/// A damaged header over a journal of an *older* generation (the stale file every store
/// keeps) must not push the next generation up by 2^32: frames store only the low 32 bits
/// of their generation, so a number that far up could not be recovered from records, and a
/// later damaged header of the newest journal then elected stale data over it.
#[test]
fn a_damaged_header_over_stale_records_does_not_jump_the_generation() {
    let disk = MemBackend::new();
    {
        let store = open(&disk).unwrap();
        fill(&store, 0..20);
        store.compact().unwrap();
    }
    zero_header(&disk, inactive_slot(&disk));
    {
        let store = open(&disk).unwrap();
        assert_eq!(store.len(), 20);
        store.compact().unwrap();
        assert!(
            store.stats().generation < 1 << 32,
            "generation {}",
            store.stats().generation
        );
        store.insert("newest".into(), Value::Integer(1)).unwrap();
    }
    newest_survives_zeroing_the_active_header(&disk);
}

/// A store poisoned by a panicking compactor still flushes its active journal when it is
/// dropped, so the writes it acknowledged survive a power loss afterwards (a panic is not a
/// failed flush; the drop used to skip its flush for any poison). One poisoned by a failed
/// flush tries nothing more: Linux has marked the pages clean, so a flush proves nothing.
#[test]
fn a_store_poisoned_by_a_panic_still_flushes_when_dropped() {
    use crate::journal::storage::DiskImage;
    for flush_fails in [false, true] {
        let disk = MemBackend::recording(&DiskImage::default());
        let store = open(&disk).unwrap();
        store.sync().unwrap();
        fill(&store, 0..20);
        if flush_fails {
            disk.fail_flushes
                .store(true, std::sync::atomic::Ordering::SeqCst);
            assert!(store.sync().is_err());
            disk.fail_flushes
                .store(false, std::sync::atomic::Ordering::SeqCst);
        } else {
            let inactive = inactive_slot(&disk);
            *disk.fail_flush_when.lock() = Some(Box::new(move |slot, _, _| {
                assert!(slot != inactive, "injected panic in the compactor");
                false
            }));
            assert!(store.compact().is_err());
        }
        *disk.fail_flush_when.lock() = None;
        let before_drop = disk.ops_done();
        drop(store);
        let flushed_at_drop = disk.ops()[before_drop..]
            .iter()
            .any(|op| matches!(op, DiskOp::Sync { .. } | DiskOp::Flush { .. }));
        assert_eq!(flushed_at_drop, !flush_fails, "flush_fails {flush_fails}");
        let image = disk.image_at(disk.ops_done()).durable_only();
        let reopened = open(&MemBackend::recording(&image)).unwrap();
        let expected = if flush_fails { 0 } else { 20 };
        assert_eq!(reopened.len(), expected, "flush_fails {flush_fails}");
    }
}

/// A compactor that panics poisons the store: the `compact()` that ran it and every later
/// write get `Poisoned` and change nothing, reads go on, and a reopen finds every
/// acknowledged write.
#[test]
fn a_panicking_compactor_poisons_the_store() {
    let disk = MemBackend::new();
    let store = open(&disk).unwrap();
    fill(&store, 0..20);
    let inactive = inactive_slot(&disk);
    *disk.fail_flush_when.lock() = Some(Box::new(move |slot, _, _| {
        assert!(slot != inactive, "injected panic in the compactor");
        false
    }));
    let compacted = store.compact();
    assert!(
        matches!(&compacted, Err(Error::Poisoned { reason }) if reason.contains("panicked")),
        "{compacted:?}"
    );
    *disk.fail_flush_when.lock() = None;
    let refused = store.insert("after".into(), Value::Integer(1));
    assert!(
        matches!(refused, Err(Error::Poisoned { .. })),
        "{refused:?}"
    );
    assert!(matches!(store.remove("k0"), Err(Error::Poisoned { .. })));
    assert_eq!(store.get("after").unwrap(), None);
    assert_eq!(store.get("k3").unwrap(), Some(Value::Integer(3)));
    drop(store);
    let store = open(&disk).unwrap();
    assert_eq!(store.len(), 20);
    assert_eq!(store.get("after").unwrap(), None);
}

/// A file with a valid `PENDING` header is never elected on the records of an older
/// generation it still holds (a compaction cut short right after its header, over the journal
/// two generations back), even when the other file's header and records are both damaged so
/// that nothing else can be proven: that open is `Unreadable` and changes nothing (it elected
/// the stale journal, bringing back overwritten values, and rewrote the newer file).
#[test]
fn a_pending_file_is_not_elected_on_stale_records() {
    let disk = MemBackend::new();
    {
        let store = open(&disk).unwrap();
        fill(&store, 0..30);
        store.compact().unwrap();
        for i in 0..30 {
            store.insert(format!("k{i}"), Value::Integer(-i)).unwrap();
        }
        store.compact().unwrap();
        // Newer values in the newest journal only: the other file's are stale.
        for i in 0..30 {
            store
                .insert(format!("k{i}"), Value::Integer(100 + i))
                .unwrap();
        }
    }
    let active = active_slot(&disk);
    let stale = inactive_slot(&disk);
    let format::HeaderRead::Valid(header) = format::decode_header(&disk.file(active).lock()) else {
        panic!("the active journal's header does not read");
    };
    let generation = header.generation;
    // The stale file: a compaction to the next generation wrote its header and no record.
    {
        let file = disk.file(stale);
        let mut bytes = file.lock();
        let header = format::Header {
            version: 1,
            state: format::STATE_PENDING,
            generation: generation + 1,
        };
        bytes[..format::HEADER_USED].copy_from_slice(&format::encode_header(&header));
    }
    // The newest file: header zeroed, its first record damaged.
    {
        let file = disk.file(active);
        let mut bytes = file.lock();
        bytes[..HEADER_SIZE].fill(0);
        bytes[HEADER_SIZE + FRAME_SIZE + 2] ^= 0x40;
    }
    let before = [
        disk.file(Slot::A).lock().clone(),
        disk.file(Slot::B).lock().clone(),
    ];
    let opened = open(&disk);
    assert!(
        matches!(opened, Err(Error::Unreadable { .. })),
        "{:?}",
        opened.map(|s| s.get("k3"))
    );
    let after = [
        disk.file(Slot::A).lock().clone(),
        disk.file(Slot::B).lock().clone(),
    ];
    assert!(before == after, "a refused open changed the files");
}
