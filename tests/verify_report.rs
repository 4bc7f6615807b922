//! `verify` reports what opening works around on the file where it found it, at the byte it
//! found it, not on the elected file at offset 0.

use resilient_kv::verify::verify;
use resilient_kv::{KVStore, Value};

/// A closed store at `<dir>/store` with 64 KiB journals: `keys` keys written with `value`,
/// then compacted. The new generation's snapshot and commit marker go to the other file; the
/// older journal stays whole until the next compaction.
fn compacted_store(
    keys: i64,
    value: impl Fn(i64) -> Value,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("store");
    let store = KVStore::builder(&base)
        .buffer_size(64 * 1024)
        .open()
        .unwrap();
    for i in 0..keys {
        store.insert(format!("key{i:03}"), value(i)).unwrap();
    }
    store.compact().unwrap();
    (dir, base)
}

#[test]
fn a_fallback_to_the_older_journal_is_reported_on_the_damaged_newer_file_at_its_offset() {
    let (_dir, base) = compacted_store(100, Value::Integer);
    let before = verify(&base).unwrap();
    let newer = before.files.iter().position(|f| f.elected).unwrap();
    assert!(
        before.files.iter().all(|f| f.damage.is_empty()),
        "{before:#?}"
    );

    // Damage a record of the newer journal's snapshot, before its commit marker.
    let path = before.files[newer].path.clone();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = 4096 + 300;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let after = verify(&base).unwrap();
    let damaged = &after.files[newer];
    let older = &after.files[1 - newer];
    assert!(older.elected, "{after:#?}");
    assert!(!damaged.elected, "{after:#?}");
    assert_eq!(after.live_keys, Some(100), "{after:#?}");
    // The note sits on the damaged file, at the start of the damaged record (the snapshot's
    // keys are packed into one batch record, which starts right after the header).
    assert_eq!(damaged.damage.len(), 1, "{after:#?}");
    let offset = damaged.damage[0].offset as usize;
    assert_eq!(offset, 4096, "{after:#?}");
    assert!(damaged.damage[0].lost_bytes > 0, "{after:#?}");
    // The elected file is intact and reported so.
    assert!(older.damage.is_empty(), "{after:#?}");
}

/// `verify` on a store another thread keeps writing and compacting: a copy can catch a record
/// half written while a later page already holds newer ones, which looks like damage. Such a
/// report is taken again; damage is believed only when two copies in a row show it at the
/// same places. A healthy live store verifies clean.
#[test]
fn a_live_store_being_written_verifies_clean() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("store");
    let store = KVStore::builder(&base).buffer_size(1 << 20).open().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let value = Value::from("x".repeat(300));
        std::thread::spawn(move || {
            let mut i = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                store
                    .insert(format!("key{:05}", i % 3_000), value.clone())
                    .unwrap();
                i += 1;
            }
            store.stats().compactions
        })
    };
    let mut damaged = Vec::new();
    for _ in 0..200 {
        let report = verify(&base).unwrap();
        if report.files.iter().any(|f| !f.damage.is_empty()) {
            damaged.push(report);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let compactions = writer.join().unwrap();
    assert!(compactions > 0);
    assert!(
        damaged.is_empty(),
        "{} of 200: {:#?}",
        damaged.len(),
        damaged.first()
    );
}

/// A file with a `PENDING` header is an unfinished (or failed) compaction: opening never
/// elects it and nothing acknowledged lives only there, so a hole in its records (a power loss
/// that wrote some of its pages back and not others) is not damage: the store verifies clean.
#[test]
fn a_hole_in_a_pending_file_is_not_damage() {
    let (_dir, base) = compacted_store(300, |_| Value::from("v".repeat(100)));
    let before = verify(&base).unwrap();
    assert_eq!(
        before.status,
        resilient_kv::verify::Status::Clean,
        "{before:#?}"
    );
    let other = before.files.iter().position(|f| !f.elected).unwrap();
    let path = before.files[other].path.clone();
    let mut bytes = std::fs::read(&path).unwrap();
    // docs/format.md: the state at byte 12, the header's CRC-32C of bytes 0..24 at byte 24.
    bytes[12..16].copy_from_slice(&0x5045_4e44_u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    // A page of its records never written back; records after it still verify.
    bytes[8192..12288].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let after = verify(&base).unwrap();
    let pending = &after.files[other];
    assert_eq!(pending.header.to_string(), "pending", "{after:#?}");
    assert!(pending.damage.is_empty(), "{after:#?}");
    assert_eq!(
        after.status,
        resilient_kv::verify::Status::Clean,
        "{after:#?}"
    );
    assert_eq!(after.live_keys, Some(300), "{after:#?}");
}
