//! Minimal reproductions of what the sweeps found, one per defect.

use std::path::Path;

use resilient_kv::{Error, KVStore, Value};

use crate::fixture::{header, open_at, scratch, walk};
use crate::headers::set_version;
use crate::{
    BUFFER, FRAME_SIZE, GENERATION_OFFSET, HEADER_CRC_OFFSET, HEADER_SIZE, HEADER_USED, NAMES,
    STATE_OFFSET, STATE_PENDING,
};

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

/// The newest journal's header as a copy sees it when it catches the store of the
/// `COMMITTED` header over the `PENDING` one half done: its first 16 bytes (up to the state)
/// already stored, the checksum still the `PENDING` header's. `then` changes it further.
fn commit_caught_half_written(work: &Path, then: impl FnOnce(&mut Vec<u8>)) -> u64 {
    let (file, generation) = newest(work);
    damage(work, file, |bytes| {
        let committed = bytes[..HEADER_USED].to_vec();
        bytes[STATE_OFFSET..STATE_OFFSET + 4].copy_from_slice(&STATE_PENDING.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..HEADER_CRC_OFFSET]);
        bytes[HEADER_CRC_OFFSET..HEADER_USED].copy_from_slice(&crc.to_le_bytes());
        bytes[..16].copy_from_slice(&committed[..16]);
        assert_eq!(header(bytes), None, "the mix must fail its checksum");
        then(bytes);
    });
    generation
}

/// What `ten_keys_compacted_then_one_more` wrote.
fn holds_ten_keys_and_after(store: &KVStore) -> bool {
    (0..10).all(|i| store.get(&format!("k{i}")).unwrap() == int(i))
        && store.get("after").unwrap() == int(10)
        && store.len() == 11
}

/// A read-only open (or `verify`) of a live store can copy the newest journal while the
/// compactor is storing its `COMMITTED` header over the `PENDING` one, and a writer killed
/// within that store leaves the same bytes. Its records hold the generation's commit marker,
/// so nothing is lost: it is a commit cut short, like a torn record, not damage, and no open
/// reports data loss for it (CI saw a read-only refresh report one:
/// `refresh_during_a_compaction_storm_sees_only_whole_states`). A writable open still compacts
/// into a new generation. A header that is not such a mix is still reported.
#[test]
fn a_commit_header_caught_half_written_is_not_reported_as_loss() {
    let dir = scratch();
    let work = dir.path();
    ten_keys_compacted_then_one_more(work);
    let generation = commit_caught_half_written(work, |_| {});
    let reader = KVStore::open_read_only(work.join("store")).unwrap();
    assert_eq!(reader.stats().data_loss_events, 0);
    assert!(holds_ten_keys_and_after(&reader));
    drop(reader);
    let report = resilient_kv::verify::verify(work.join("store")).unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(
        report.elected().map(|f| f.header),
        Some(resilient_kv::verify::HeaderState::HalfWritten)
    );
    let store = open_at(work, BUFFER).unwrap();
    assert_eq!(store.stats().data_loss_events, 0);
    assert!(holds_ten_keys_and_after(&store));
    drop(store);
    assert!(
        newest(work).1 > generation,
        "the open compacted into no newer generation"
    );

    // The controls: damage no half-done store leaves, one byte flipped in the generation of
    // the mix, or one bit of a whole `COMMITTED` header's state ('T' to 'D').
    let flip_generation = |bytes: &mut Vec<u8>| bytes[GENERATION_OFFSET + 7] ^= 0x40;
    let flip_state = |bytes: &mut Vec<u8>| bytes[STATE_OFFSET] ^= 0x10;
    for (mix, flip) in [
        (true, &flip_generation as &dyn Fn(&mut Vec<u8>)),
        (false, &flip_state),
    ] {
        let dir = scratch();
        let work = dir.path();
        ten_keys_compacted_then_one_more(work);
        if mix {
            commit_caught_half_written(work, flip);
        } else {
            let (file, _) = newest(work);
            damage(work, file, |bytes| {
                flip(bytes);
                assert_eq!(header(bytes), None);
            });
        }
        let reader = KVStore::open_read_only(work.join("store")).unwrap();
        assert_eq!(reader.stats().data_loss_events, 1, "mix: {mix}");
        assert!(holds_ten_keys_and_after(&reader));
        drop(reader);
        let report = resilient_kv::verify::verify(work.join("store")).unwrap();
        assert!(!report.is_clean(), "{report:#?}");
    }
}

/// The first compaction's `PENDING` header caught half written in the second file, which
/// was never written before: no records lie behind it, so nothing was lost and no open says
/// otherwise (a read-only copy of a live store saw this, with the header's store slowed). The
/// control: the generation field alone, which a flipped bit in a blank header page gives, is
/// reported.
#[test]
fn a_half_written_header_over_a_blank_file_is_not_reported_as_loss() {
    // Either half of the header's copy may land first.
    let generation_only = GENERATION_OFFSET..GENERATION_OFFSET + 8;
    for (half, reported) in [(0..16, 0), (12..HEADER_USED, 0), (generation_only, 1)] {
        let dir = scratch();
        let work = dir.path();
        {
            let store = open_at(work, BUFFER).unwrap();
            store.insert("k".into(), Value::Integer(1)).unwrap();
        }
        let first = std::fs::read(work.join(NAMES[0])).unwrap();
        assert_eq!(header(&first).map(|h| h.2), Some(1));
        damage(work, 1, |bytes| {
            assert!(bytes.iter().all(|&b| b == 0), "the second file was written");
            let mut pending = first[..HEADER_USED].to_vec();
            pending[STATE_OFFSET..STATE_OFFSET + 4].copy_from_slice(&STATE_PENDING.to_le_bytes());
            pending[GENERATION_OFFSET..GENERATION_OFFSET + 8].copy_from_slice(&2_u64.to_le_bytes());
            let crc = crc32c::crc32c(&pending[..HEADER_CRC_OFFSET]);
            pending[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
            bytes[half.clone()].copy_from_slice(&pending[half.clone()]);
        });
        let reader = KVStore::open_read_only(work.join("store")).unwrap();
        assert_eq!(reader.stats().data_loss_events, reported, "{half:?}");
        assert_eq!(reader.get("k").unwrap(), int(1));
        drop(reader);
        let store = open_at(work, BUFFER).unwrap();
        assert_eq!(store.stats().data_loss_events, reported, "{half:?}");
        assert_eq!(store.get("k").unwrap(), int(1));
    }
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

/// A refused open creates nothing either: with one file missing and the other refused, the
/// missing one (which the open creates to lock it) is gone again afterwards.
#[test]
fn a_refused_open_leaves_no_file_it_created() {
    let dir = scratch();
    let work = dir.path();
    {
        let store = open_at(work, BUFFER).unwrap();
        store.compact().unwrap();
    }
    // The newest journal is the second file; the first is opened (created) first.
    assert_eq!(newest(work).0, 1);
    std::fs::remove_file(work.join(NAMES[0])).unwrap();
    damage(work, 1, |bytes| set_version(bytes, 2));
    let store = open_at(work, BUFFER);
    assert!(matches!(
        store,
        Err(Error::UnsupportedVersion { found: 2, .. })
    ));
    assert!(
        !work.join(NAMES[0]).exists(),
        "a refused open left {} behind",
        NAMES[0]
    );
    // The file that was there is untouched, and an open that succeeds still creates the other.
    damage(work, 1, |bytes| set_version(bytes, 1));
    drop(open_at(work, BUFFER).unwrap());
    assert!(work.join(NAMES[0]).exists());
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
