//! `verify` reports what opening works around on the file where it found it, at the byte it
//! found it, not on the elected file at offset 0.

use resilient_kv::verify::verify;
use resilient_kv::{KVStore, Value};

#[test]
fn a_fallback_to_the_older_journal_is_reported_on_the_damaged_newer_file_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("store");
    {
        let store = KVStore::builder(&base)
            .buffer_size(64 * 1024)
            .open()
            .unwrap();
        for i in 0..100 {
            store
                .insert(format!("key{i:03}"), Value::Integer(i))
                .unwrap();
        }
        // The new generation's snapshot and commit marker go to the other file; the older
        // journal stays whole until the next compaction.
        store.compact().unwrap();
    }
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
    // The note sits on the damaged file, at the start of the damaged record.
    assert_eq!(damaged.damage.len(), 1, "{after:#?}");
    let offset = damaged.damage[0].offset as usize;
    assert!(offset > 4096 && offset <= at, "{after:#?}");
    assert!(damaged.damage[0].lost_bytes > 0, "{after:#?}");
    // The elected file is intact and reported so.
    assert!(older.damage.is_empty(), "{after:#?}");
}
