//! Regression tests: one per bug the harnesses found, each named after it.

use std::path::Path;
use std::sync::atomic::Ordering;

use crate::journal::storage::{DiskImage, DiskOp, MemBackend, PAGE, SECTOR, SectorFate};
use crate::options::Builder;
use crate::test_support::wait_until;
use crate::{KVStore, Value};

use super::model::Map;
use super::{describe_headers, diff, inactive_slot, open_on, tiny};

/// A crash during the very first open left a `PENDING` header of generation 1 (written and
/// flushed by the creation before its `COMMITTED` header): reopening said "only an unfinished
/// compaction was found" and refused the store forever, although nothing had been written.
#[test]
fn a_crash_while_creating_a_store_leaves_it_openable_and_empty() {
    let disk = MemBackend::recording(&DiskImage::default());
    drop(open_on(&disk, &tiny()).unwrap());
    let ops = disk.ops();
    // Just after the PENDING header of generation 1 was flushed.
    let n = 1 + ops
        .iter()
        .position(|op| matches!(op, DiskOp::Flush { offset: 0, .. }))
        .unwrap();
    let image = disk.image_at(n);
    for (kind, image) in [
        ("process crash", image.process_crash()),
        ("power loss", image.durable_only()),
    ] {
        let store = open_on(&MemBackend::recording(&image), &tiny())
            .unwrap_or_else(|e| panic!("{kind} after {n} operations of creating a store: {e}"));
        assert!(store.is_empty());
    }
}

/// A process killed while creating a store, in the middle of copying its first header into
/// the map (a 28-byte copy is several stores; any subset of them may have landed), left a
/// header page that is neither blank nor valid and no record anywhere. Opening refused it as
/// `Unreadable` ("no journal has a valid committed header or provable records") for good,
/// although nothing had been written.
#[test]
fn a_kill_while_creating_a_store_writes_its_first_header_leaves_it_openable() {
    let disk = MemBackend::recording(&DiskImage::default());
    drop(open_on(&disk, &tiny()).unwrap());
    let ops = disk.ops();
    let n = ops
        .iter()
        .position(|op| matches!(op, DiskOp::Write { offset: 0, .. }))
        .unwrap();
    let DiskOp::Write { slot, data, .. } = &ops[n] else {
        unreachable!()
    };
    for (from, to) in [(0, 16), (16, data.len()), (0, 1)] {
        let mut image = disk.image_at(n);
        image.apply(&DiskOp::Write {
            slot: *slot,
            offset: from,
            data: data[from..to].into(),
        });
        let store = open_on(&MemBackend::recording(&image), &tiny())
            .unwrap_or_else(|e| panic!("header bytes {from}..{to} written: {e}"));
        assert!(store.is_empty());
    }
}

/// `sync()` returned without making its writes durable when it raced the end of a
/// compaction. The compaction's last flush of the new journal takes the "header changed" flag
/// before it flushes the header. A `sync()` arriving in between found the new journal's
/// records already flushed (copied records that an earlier `sync()` had promised are flushed
/// under the writer lock, and with them every record copied so far) and the flag clear, so it
/// returned at once. A power loss then left the new journal's header `PENDING`: the old
/// journal won, without the write made after that earlier `sync()`, which the later `sync()`
/// had promised.
#[test]
fn sync_racing_the_end_of_a_compaction_waits_for_the_new_header() {
    let disk = MemBackend::recording(&DiskImage::default());
    let store = open_on(&disk, &tiny()).unwrap();
    for i in 0..20 {
        store.insert(format!("k{i}"), Value::Integer(i)).unwrap();
    }
    store.sync().unwrap();
    let target = inactive_slot(&disk);
    // Hold the compaction at each header flush of its journal: the PENDING one (step 1, after
    // it took its snapshot) and the COMMITTED one (step 5, after the swap).
    disk.pause_when(Some(Box::new(
        move |op| matches!(op, DiskOp::Flush { slot, offset: 0, .. } if *slot == target),
    )));
    std::thread::scope(|scope| {
        let compaction = scope.spawn(|| store.compact().unwrap());
        wait_until("the compaction held at its PENDING header", || {
            disk.held() >= 1
        });
        // Past the compaction's start: one write made durable in the old journal, one not.
        store.insert("synced".into(), Value::Integer(1)).unwrap();
        store.sync().unwrap();
        store.insert("promised".into(), Value::Integer(2)).unwrap();
        disk.release();
        // The compaction copies both under the lock, flushes them (the first was promised),
        // swaps, and waits again just before flushing the new COMMITTED header.
        wait_until("the compaction held at its COMMITTED header", || {
            disk.held() >= 2
        });
        let queued = store.shared.syncers_at_the_lock.load(Ordering::SeqCst);
        let sync = scope.spawn(|| {
            store.sync().unwrap();
            disk.ops_done()
        });
        // Released only once the sync has returned (the bug) or waits behind the held flush.
        wait_until("the sync to return or queue behind the held flush", || {
            sync.is_finished() || store.shared.syncers_at_the_lock.load(Ordering::SeqCst) > queued
        });
        disk.pause_when(None);
        let returned_at = sync.join().unwrap();
        compaction.join().unwrap();
        // The power goes right after that sync() returned.
        let lost = disk.image_at(returned_at).durable_only();
        let reopened = open_on(&MemBackend::recording(&lost), &tiny()).unwrap();
        assert_eq!(reopened.get("synced").unwrap(), Some(Value::Integer(1)));
        assert_eq!(
            reopened.get("promised").unwrap(),
            Some(Value::Integer(2)),
            "a write made before sync() was called is lost; headers at that point: {}",
            describe_headers(&lost)
        );
    });
}

/// After a process crash the page cache still holds the acknowledged writes, but not
/// necessarily the disk. Reopening trusted them as already durable (the journal's flushed
/// mark started at the recovered end), so the first `sync()` returned without flushing them:
/// a power loss after that `sync()` lost writes it had promised.
#[test]
fn sync_after_reopening_from_a_process_crash_makes_the_recovered_writes_durable() {
    let disk = MemBackend::recording(&DiskImage::default());
    let store = open_on(&disk, &tiny()).unwrap();
    store.insert("a".into(), Value::Integer(1)).unwrap();
    store.insert("b".into(), Value::Integer(2)).unwrap();
    // The process dies here (the store's own close would sync).
    let crashed = disk.image_at(disk.ops_done()).process_crash();
    drop(store);

    let disk = MemBackend::recording(&crashed);
    let store = open_on(&disk, &tiny()).unwrap();
    assert_eq!(store.len(), 2);
    store.sync().unwrap();
    // The power goes right after sync() returned.
    let lost = disk.image_at(disk.ops_done()).durable_only();
    std::mem::forget(store);
    let store = open_on(&MemBackend::recording(&lost), &tiny()).unwrap();
    assert_eq!(store.get("b").unwrap(), Some(Value::Integer(2)));
    assert_eq!(store.len(), 2);
}

/// The same bug at its worst: a process crash right after a swap leaves the new journal's
/// `COMMITTED` header in the page cache only. The reopened store elected that journal but never
/// flushed its header, and its next compaction overwrote the other journal's header with
/// `PENDING`, flushed: a power loss then left two `PENDING` headers, and the store refused to
/// open ("only an unfinished compaction was found"), losing everything.
#[test]
fn a_process_crash_after_a_swap_then_power_loss_in_the_next_compaction_keeps_the_store() {
    let disk = MemBackend::recording(&DiskImage::default());
    let store = open_on(&disk, &tiny()).unwrap();
    for i in 0..20 {
        store.insert(format!("k{i}"), Value::Integer(i)).unwrap();
    }
    store.sync().unwrap();
    let start = disk.ops_done();
    store.compact().unwrap();
    // Just after the swap wrote the new COMMITTED header, before the new journal is flushed.
    let ops = disk.ops();
    let swap = start
        + ops[start..]
            .iter()
            .rposition(|op| matches!(op, DiskOp::Write { offset: 0, .. }))
            .unwrap();
    let crashed = disk.image_at(swap + 1).process_crash();
    drop(store);

    let disk = MemBackend::recording(&crashed);
    let store = open_on(&disk, &tiny()).unwrap();
    assert_eq!(store.len(), 20);
    store.compact().unwrap();
    // Just after the next compaction's PENDING header was flushed over the other journal.
    let ops = disk.ops();
    let pending = ops
        .iter()
        .position(|op| matches!(op, DiskOp::Flush { offset: 0, .. }))
        .unwrap();
    let lost = disk.image_at(pending + 1).durable_only();
    drop(store);
    let store = open_on(&MemBackend::recording(&lost), &tiny())
        .unwrap_or_else(|e| panic!("power loss during the compaction after the reopen: {e}"));
    assert_eq!(store.len(), 20);
}

/// Recovery stops at damage and replays nothing beyond it, but left the valid records of the
/// same generation beyond it in place. New writes are appended at the damage and, when their
/// records have the sizes of the old ones (fixed-size records are common), they end exactly
/// where an old record begins: the next open replays the new writes and then the stale old
/// ones after them, putting back values older than the new writes.
#[test]
fn records_beyond_damage_never_replay_after_new_writes() {
    let disk = MemBackend::recording(&DiskImage::default());
    let config = Builder::new(Path::new("mem")).buffer_size(64 * 1024);
    let store = open_on(&disk, &config).unwrap();
    let put = |store: &KVStore, i: usize, round: usize| {
        store
            .insert(format!("f{i:03}"), Value::from(format!("{round:016}")))
            .unwrap();
    };
    for i in 0..300 {
        put(&store, i, 1);
    }
    // Power loss: the second page of records never reached the disk, the others did.
    let image = disk.image_at(disk.ops_done()).power_loss(|_, page| {
        if page == 2 {
            [SectorFate::Old; PAGE / SECTOR]
        } else {
            [SectorFate::New; PAGE / SECTOR]
        }
    });
    drop(store);
    let disk = MemBackend::recording(&image);
    let recovered = {
        let store = open_on(&disk, &config).unwrap();
        let recovered = store.len();
        assert!(
            (50..200).contains(&recovered),
            "the lost page must cost writes: {recovered} recovered"
        );
        // New fixed-size writes from where replay stopped, past the lost page but not past
        // the last old record.
        for i in 0..150 {
            put(&store, i, 2);
        }
        recovered
    };
    let store = open_on(&disk, &config).unwrap();
    let want: Map = (0..150)
        .map(|i| (format!("f{i:03}"), Value::from(format!("{:016}", 2))))
        .collect();
    let got: Map = store.as_hashmap().into_iter().collect();
    assert!(
        got == want,
        "after recovering {recovered} writes and 150 more: {}",
        diff(&got, &want)
    );
}
