//! Regression tests named after the ways an earlier store of this design lost data
//! (`shared/FIELD-NOTES.md`). Notes 1, 2, 4, 6, 7 and 11 are covered on the storage seam in
//! `src/recovery_tests.rs`, note 10 in `tests/field_note_10.rs` (it counts threads, so it
//! runs alone in its own test binary); the ones that need real files, threads or the public API are here.

use resilient_kv::{Error, KVStore, Value};

fn open(dir: &tempfile::TempDir) -> KVStore {
    KVStore::builder(dir.path().join("notes"))
        .buffer_size(16 * 1024)
        .open()
        .unwrap()
}

/// Note 3: a write that fails must not have been applied (cache and disk must agree). Each
/// refusal comes at a later point of a write: a bad key, a value that does not encode, a
/// record no journal could hold, and a write that waited for compactions at `max_size` and
/// found no room (the last point before its record would be appended).
#[test]
fn field_note_3_a_failed_write_changes_nothing_in_memory_or_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let open_small = || {
        KVStore::builder(dir.path().join("notes"))
            .buffer_size(16 * 1024)
            .max_size(64 * 1024)
            .open()
            .unwrap()
    };
    let mut acknowledged = Vec::new();
    {
        let store = open_small();
        store.insert("k".into(), Value::Integer(1)).unwrap();
        let refused = [
            store.insert(String::new(), Value::Integer(2)),
            store.insert("k".into(), Value::from(vec![Value::Float(f64::NAN)])),
            store.insert("k".into(), Value::from("x".repeat(64 * 1024))),
        ];
        assert!(matches!(refused[0], Err(Error::InvalidKey { .. })));
        assert!(matches!(refused[1], Err(Error::InvalidValue(_))));
        assert!(matches!(refused[2], Err(Error::TooLarge { .. })));
        assert_eq!(store.get("k").unwrap(), Some(Value::Integer(1)));
        // Distinct keys of 1 KiB until the journals at `max_size` hold no more.
        let full = loop {
            let key = format!("fill{:03}", acknowledged.len());
            assert!(acknowledged.len() < 200, "no Full after 200 KiB");
            match store.insert(key.clone(), Value::from("v".repeat(1024))) {
                Ok(_) => acknowledged.push(key),
                Err(e) => break (key, e),
            }
        };
        assert!(matches!(full.1, Error::Full { .. }), "{:?}", full.1);
        assert_eq!(store.get(&full.0).unwrap(), None);
        assert_eq!(store.len(), acknowledged.len() + 1);
        acknowledged.push(full.0);
    }
    let store = open_small();
    let refused_key = acknowledged.pop().unwrap();
    assert_eq!(store.get(&refused_key).unwrap(), None);
    assert_eq!(store.get("k").unwrap(), Some(Value::Integer(1)));
    for key in &acknowledged {
        assert!(store.contains_key(key), "{key} lost");
    }
    assert_eq!(store.len(), acknowledged.len() + 1);
}

/// Note 5: small buffers and deep values are typed errors, never panics or aborts.
#[test]
fn field_note_5_small_buffers_and_deep_values_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let small = KVStore::new(dir.path().join("tiny"), 100, None, None);
    assert!(matches!(small, Err(Error::Config(_))));
    let store = open(&dir);
    // Deep enough to overflow a recursive encoder (the store refuses it at depth 501); not so
    // deep that dropping the test's own value recursively overflows the test thread.
    let mut deep = Value::Null;
    for _ in 0..5_000 {
        deep = Value::Array(vec![deep]);
    }
    assert!(matches!(
        store.insert("deep".into(), deep),
        Err(Error::InvalidValue(_))
    ));
}

/// Note 8: a second instance on the same files must be refused, not silently share them.
#[test]
fn field_note_8_two_instances_cannot_open_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&dir);
    let second = KVStore::builder(dir.path().join("notes"))
        .buffer_size(16 * 1024)
        .open();
    assert!(matches!(second, Err(Error::Locked { .. })));
    drop(first);
    assert!(
        KVStore::builder(dir.path().join("notes"))
            .buffer_size(16 * 1024)
            .open()
            .is_ok()
    );
}

/// Note 9: values keep their type across a restart (unsigned stays unsigned, floats stay
/// floats, -0.0 stays negative).
#[test]
fn field_note_9_values_keep_their_type_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let values = [
        ("u", Value::Unsigned(u64::MAX)),
        ("i", Value::Integer(i64::MIN)),
        ("f", Value::Float(1.0)),
        ("z", Value::Float(-0.0)),
        ("s", Value::from("1")),
    ];
    {
        let store = open(&dir);
        for (k, v) in &values {
            store.insert((*k).into(), v.clone()).unwrap();
        }
        store.compact().unwrap();
    }
    let store = open(&dir);
    for (k, v) in &values {
        let back = store.get(k).unwrap().unwrap();
        assert_eq!(
            std::mem::discriminant(&back),
            std::mem::discriminant(v),
            "{k}"
        );
        assert_eq!(&back, v);
    }
    assert!(
        store
            .get("z")
            .unwrap()
            .unwrap()
            .as_f64()
            .unwrap()
            .is_sign_negative()
    );
}

/// Note 2 (the cases the seam tests do not cover): a ratio of 0.0 is refused instead of
/// silently disabling compaction, and a refused oversized batch does not stop it either.
#[test]
fn field_note_2_compaction_survives_bad_ratios_and_refused_batches() {
    let dir = tempfile::tempdir().unwrap();
    let zero = KVStore::builder(dir.path().join("zero"))
        .high_water_mark(0.0)
        .open();
    assert!(matches!(zero, Err(Error::Config(_))));
    // A tiny ratio once overflowed the journal size the first compaction wanted: a compactor
    // rewriting the same generation forever (release) or a poisoned store (debug). Refused
    // now, and nothing is created.
    for ratio in [1e-16, 0.01, f32::NAN, 1.5] {
        let tiny = KVStore::builder(dir.path().join("tiny"))
            .high_water_mark(ratio)
            .open();
        assert!(matches!(tiny, Err(Error::Config(_))), "{ratio}: {tiny:?}");
        assert!(!dir.path().join("tiny.jrna").exists(), "{ratio}");
    }
    let lowest = KVStore::builder(dir.path().join("lowest"))
        .buffer_size(16 * 1024)
        .max_size(1024 * 1024)
        .high_water_mark(resilient_kv::MIN_HIGH_WATER_MARK)
        .open()
        .unwrap();
    for i in 0..2_000 {
        lowest
            .insert(format!("k{}", i % 50), Value::Integer(i))
            .unwrap();
    }
    lowest.compact().unwrap();
    assert_eq!(lowest.len(), 50);
    drop(lowest);

    let store = KVStore::builder(dir.path().join("notes"))
        .buffer_size(16 * 1024)
        .max_size(64 * 1024)
        .open()
        .unwrap();
    let mut huge = resilient_kv::Batch::new();
    huge.insert("huge", Value::from("x".repeat(100 * 1024)));
    assert!(matches!(
        store.write_batch(huge),
        Err(Error::TooLarge { .. })
    ));
    let before = store.stats().compactions;
    for i in 0..3_000 {
        store
            .insert(format!("k{}", i % 30), Value::Integer(i))
            .unwrap();
    }
    assert!(
        store.stats().compactions > before + 2,
        "{:?}",
        store.stats()
    );
}
