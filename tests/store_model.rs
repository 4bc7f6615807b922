//! The store against an obviously correct model (`BTreeMap`): random sequences of inserts,
//! removes, batches, clears, compactions, reopens and held snapshots on tiny journals, compared
//! after every step and every reopen (each held snapshot against the model when it was taken).

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use resilient_kv::{Batch, KVStore, Value};

#[derive(Debug, Clone)]
enum Step {
    Insert(u8, Value),
    Remove(u8),
    Batch(Vec<(u8, Option<Value>)>),
    Clear,
    Compact,
    Reopen,
    Sync,
    /// Take a snapshot and hold it (up to three at once; the oldest is let go).
    TakeSnapshot,
    /// Let go of the newest snapshot held.
    DropSnapshot,
}

/// Every kind of value, nested one level: what compaction's raw copy and replay must carry.
/// (Unsigned values that fit an `i64` come back as `Integer`, equal under `==`, which is how
/// the store compares.)
fn value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        any::<u64>().prop_map(Value::Unsigned),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        Just(Value::Float(-0.0)),
        "[a-zé]{0,12}".prop_map(Value::from),
        any::<bool>().prop_map(Value::Boolean),
    ];
    prop_oneof![
        3 => scalar.clone(),
        1 => proptest::collection::vec(scalar.clone(), 0..4).prop_map(Value::Array),
        1 => proptest::collection::hash_map("[a-z]{1,6}", scalar, 0..4).prop_map(Value::Object),
        1 => "[a-z]{0,40}".prop_map(Value::from),
        1 => (0_usize..400).prop_map(|n| Value::from("v".repeat(n))),
        1 => Just(Value::Null),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0_u8..40, value()).prop_map(|(k, v)| Step::Insert(k, v)),
        3 => (0_u8..40).prop_map(Step::Remove),
        2 => proptest::collection::vec((0_u8..40, proptest::option::of(value())), 1..6)
            .prop_map(Step::Batch),
        1 => Just(Step::Clear),
        1 => Just(Step::Compact),
        1 => Just(Step::Reopen),
        1 => Just(Step::Sync),
        2 => Just(Step::TakeSnapshot),
        1 => Just(Step::DropSnapshot),
    ]
}

fn key(k: u8) -> String {
    format!("key_{k:03}")
}

fn open(base: &std::path::Path) -> KVStore {
    KVStore::builder(base)
        .buffer_size(16 * 1024)
        .open()
        .unwrap()
}

fn model_insert(model: &mut BTreeMap<String, Value>, k: u8, v: Value) {
    if v.is_null() {
        model.remove(&key(k));
    } else {
        model.insert(key(k), v);
    }
}

fn check(store: &KVStore, model: &BTreeMap<String, Value>) -> Result<(), TestCaseError> {
    let expected: HashMap<String, Value> = model.clone().into_iter().collect();
    prop_assert_eq!(store.as_hashmap(), expected);
    prop_assert_eq!(store.len(), model.len());
    Ok(())
}

/// Cases run by default (`MODEL_CASES` overrides); about 20 s here.
const DEFAULT_CASES: u32 = 3000;

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("model");
    let mut store = open(&base);
    let mut model = BTreeMap::new();
    // Held snapshots with the model they were taken at: later writes must never change them.
    let mut held: Vec<(resilient_kv::Snapshot, BTreeMap<String, Value>)> = Vec::new();
    for step in steps {
        match step {
            Step::Insert(k, v) => {
                let previous = store.insert(key(k), v.clone()).unwrap();
                prop_assert_eq!(previous, model.get(&key(k)).cloned());
                model_insert(&mut model, k, v);
            }
            Step::Remove(k) => {
                prop_assert_eq!(store.remove(&key(k)).unwrap(), model.remove(&key(k)));
            }
            Step::Batch(ops) => {
                let mut batch = Batch::new();
                for (k, v) in &ops {
                    match v {
                        Some(v) => batch.insert(key(*k), v.clone()),
                        None => batch.remove(key(*k)),
                    };
                }
                store.write_batch(batch).unwrap();
                for (k, v) in ops {
                    model_insert(&mut model, k, v.unwrap_or(Value::Null));
                }
            }
            Step::Clear => {
                store.clear().unwrap();
                model.clear();
            }
            Step::Compact => store.compact().unwrap(),
            Step::Sync => store.sync().unwrap(),
            Step::Reopen => {
                drop(store);
                store = open(&base);
            }
            Step::TakeSnapshot => {
                if held.len() == 3 {
                    held.remove(0);
                }
                held.push((store.snapshot(), model.clone()));
            }
            Step::DropSnapshot => {
                held.pop();
            }
        }
        check(&store, &model)?;
        for (snapshot, then) in &held {
            let expected: HashMap<String, Value> = then.clone().into_iter().collect();
            prop_assert_eq!(snapshot.to_hashmap(), expected);
            prop_assert_eq!(snapshot.len(), then.len());
        }
    }
    drop(store);
    let store = open(&base);
    check(&store, &model)?;
    Ok(())
}

#[test]
fn store_matches_a_btreemap() {
    let cases = std::env::var("MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let started = std::time::Instant::now();
    let config = ProptestConfig {
        cases,
        // A failure prints its minimal sequence; nothing is saved to a file.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(step(), 1..80), run);
    if let Err(e) = result {
        panic!("{e}");
    }
    println!(
        "model test: {cases} random sequences of up to 79 steps (insert, remove, batch, clear, \
         compact, sync, reopen) matched a BTreeMap in {:.1?}",
        started.elapsed()
    );
}
