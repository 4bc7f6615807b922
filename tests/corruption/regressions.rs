//! Minimal reproductions of what the sweeps found, one per defect.

use std::path::Path;

use resilient_kv::{Error, KVStore, Value};

use crate::fixture::{header, open_at, scratch, walk};
use crate::headers::set_version;
use crate::{BUFFER, FRAME_SIZE, HEADER_SIZE, NAMES};

/// The index (into `NAMES`) and generation of the newest committed journal in `work`.
fn newest(work: &Path) -> (usize, u64) {
    let generation = |i: usize| {
        std::fs::read(work.join(NAMES[i]))
            .ok()
            .and_then(|b| header(&b))
            .map_or(0, |h| h.2)
    };
    let (a, b) = (generation(0), generation(1));
    if a >= b { (0, a) } else { (1, b) }
}

fn damage(work: &Path, file: usize, f: impl FnOnce(&mut Vec<u8>)) {
    let path = work.join(NAMES[file]);
    let mut bytes = std::fs::read(&path).unwrap();
    f(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
}

fn int(i: i64) -> Option<Value> {
    Some(Value::Integer(i))
}

/// Ten keys, compacted, then one more write: the newest journal is a snapshot of `k0..k9`,
/// its commit marker and `after`; the retired one still holds `k0..k9`.
fn ten_keys_compacted_then_one_more(work: &Path) {
    let store = open_at(work, BUFFER).unwrap();
    for i in 0..10 {
        store.insert(format!("k{i}"), Value::Integer(i)).unwrap();
    }
    store.compact().unwrap();
    store.insert("after".into(), Value::Integer(10)).unwrap();
}

/// Damage in the middle of the journal stops replay there and is reported; the store then
/// appends at the damaged record's offset. A write whose record has the damaged one's size
/// (here: the same write again) lines up with the records behind the damage, which still verify
/// (same generation), so the next open replays them: writes reported lost come back and
/// override the acknowledged write made since.
#[test]
fn records_behind_mid_journal_damage_never_replay_after_the_next_write() {
    let dir = scratch();
    let work = dir.path();
    {
        let store = open_at(work, BUFFER).unwrap();
        for (k, v) in [("counter", 1), ("counter", 2), ("counter", 3), ("other", 4)] {
            store.insert(k.into(), Value::Integer(v)).unwrap();
        }
    }
    let (file, generation) = newest(work);
    damage(work, file, |bytes| {
        let (records, _) = walk(bytes, generation);
        // records[0] is the commit marker, records[2] the write `counter = 2`.
        bytes[records[2].1 - 1] ^= 0x01;
    });
    {
        let store = open_at(work, BUFFER).unwrap();
        assert_eq!(store.get("counter").unwrap(), int(1));
        assert_eq!(store.stats().data_loss_events, 1);
        store.insert("counter".into(), Value::Integer(2)).unwrap();
    }
    let store = open_at(work, BUFFER).unwrap();
    assert_eq!(
        (
            store.get("counter").unwrap(),
            store.get("other").unwrap(),
            store.stats().data_loss_events
        ),
        (int(2), None, 0),
        "the last acknowledged write was counter = 2; counter = 3 and other = 4 were reported \
         lost by the previous open"
    );
}

/// A committed newest journal whose records are gone (the file cut right after its header)
/// opens as an empty store, silently, although the retired journal holds every key.
#[test]
fn a_newest_journal_cut_after_its_header_does_not_open_empty() {
    let dir = scratch();
    let work = dir.path();
    ten_keys_compacted_then_one_more(work);
    let (file, _) = newest(work);
    damage(work, file, |bytes| bytes.truncate(HEADER_SIZE));
    let store = open_at(work, BUFFER).unwrap();
    let keys = store.len();
    assert!(
        (10..=11).contains(&keys) && store.get("k9").unwrap() == int(9),
        "{keys} keys, {} DataLoss events; the retired journal holds k0..k9",
        store.stats().data_loss_events
    );
}

/// One flipped bit in a record of the newest journal's snapshot opens a partial map: the keys
/// before it, none after it, none of the writes after the compaction. That is the map after no
/// prefix of the writes, although the retired journal holds every key.
#[test]
fn a_damaged_snapshot_record_does_not_open_a_partial_map() {
    let dir = scratch();
    let work = dir.path();
    ten_keys_compacted_then_one_more(work);
    let (file, generation) = newest(work);
    damage(work, file, |bytes| {
        // The snapshot's ten keys are one packed batch record: flip a bit in its middle.
        let (records, _) = walk(bytes, generation);
        let (start, end, _) = records[0];
        bytes[(start + FRAME_SIZE + end) / 2] ^= 0x10;
    });
    let store = open_at(work, BUFFER).unwrap();
    let keys = store.len();
    assert!(
        (10..=11).contains(&keys),
        "{keys} keys: {:?}; the map after a prefix of the writes has 10 or 11",
        store.keys()
    );
    // Exactly the map after those writes: k0..k9 as written, and `after` if it survived.
    for i in 0..10 {
        assert_eq!(store.get(&format!("k{i}")).unwrap(), int(i), "k{i}");
    }
    if keys == 10 {
        // `after` was lost, and its record of the newest generation, intact behind the
        // damage, proves it: the loss must be reported.
        assert!(
            store.stats().data_loss_events > 0,
            "`after` lost without a report: {:?}",
            store.stats()
        );
    } else {
        assert_eq!(store.get("after").unwrap(), int(10));
    }
}

/// With both header pages zeroed, each journal proves its generation from its records; the
/// newest must win, not whichever is `.jrna`.
#[test]
fn both_headers_zeroed_elects_the_newest_generation_not_jrna() {
    let dir = scratch();
    let work = dir.path();
    {
        let store = open_at(work, BUFFER).unwrap();
        store.insert("a".into(), Value::Integer(1)).unwrap();
        store.compact().unwrap();
        store.insert("a".into(), Value::Integer(2)).unwrap();
    }
    assert_eq!(newest(work).0, 1, "the newest journal is .jrnb");
    for file in [0, 1] {
        damage(work, file, |bytes| bytes[..HEADER_SIZE].fill(0));
    }
    let store = open_at(work, BUFFER).unwrap();
    assert_eq!(store.get("a").unwrap(), int(2), "stale generation elected");
}

/// A zeroed header page together with the first record's frame (two zeroed pages' worth at the
/// start of the file) hides the newest journal entirely: the retired one is elected and the
/// writes since the compaction are lost without a report, although their records are intact.
#[test]
fn a_zeroed_header_and_first_frame_do_not_hide_the_newest_journal_silently() {
    let dir = scratch();
    let work = dir.path();
    ten_keys_compacted_then_one_more(work);
    let (file, _) = newest(work);
    damage(work, file, |bytes| {
        bytes[..HEADER_SIZE + FRAME_SIZE].fill(0)
    });
    let store = open_at(work, BUFFER).unwrap();
    assert!(
        store.get("after").unwrap().is_some() || store.stats().data_loss_events > 0,
        "`after` lost without a DataLoss report; its record is intact"
    );
}

/// A refused open writes nothing (format.md, "Opening", rules 1 and 4), but the files are
/// first grown to the requested `buffer_size`.
#[test]
fn a_future_version_file_is_not_grown_by_a_refused_open() {
    let dir = scratch();
    let work = dir.path();
    drop(open_at(work, BUFFER).unwrap());
    damage(work, 0, |bytes| set_version(bytes, 2));
    let store = KVStore::builder(work.join("store"))
        .buffer_size(4 * BUFFER)
        .open();
    assert!(matches!(
        store,
        Err(Error::UnsupportedVersion { found: 2, .. })
    ));
    for name in NAMES {
        let len = std::fs::metadata(work.join(name)).unwrap().len();
        assert_eq!(len, BUFFER as u64, "{name} was resized by a refused open");
    }
}

/// As above for files that hold no valid journal (`Unreadable`).
#[test]
fn unreadable_files_are_not_grown_by_a_refused_open() {
    let dir = scratch();
    let work = dir.path();
    for name in NAMES {
        std::fs::write(work.join(name), b"RKVJRNL\x01 not a header").unwrap();
    }
    let store = open_at(work, BUFFER);
    assert!(
        matches!(store, Err(Error::Unreadable { .. })),
        "{:?}",
        store.as_ref().err()
    );
    for name in NAMES {
        let bytes = std::fs::read(work.join(name)).unwrap();
        assert_eq!(
            bytes, b"RKVJRNL\x01 not a header",
            "{name} was changed by a refused open"
        );
    }
}

/// A header repaired from its records at open stays damaged on disk: every later open reports
/// the same damage again (until a compaction happens to replace the journal).
#[test]
fn a_repaired_header_is_not_reported_again_at_the_next_open() {
    let dir = scratch();
    let work = dir.path();
    ten_keys_compacted_then_one_more(work);
    let (file, _) = newest(work);
    damage(work, file, |bytes| bytes[..HEADER_SIZE].fill(0));
    {
        let store = open_at(work, BUFFER).unwrap();
        assert_eq!(store.len(), 11);
        assert_eq!(store.stats().data_loss_events, 1);
        store.insert("later".into(), Value::Integer(12)).unwrap();
    }
    let store = open_at(work, BUFFER).unwrap();
    assert_eq!(store.len(), 12);
    assert_eq!(
        store.stats().data_loss_events,
        0,
        "the damage was reported by the previous open"
    );
}
