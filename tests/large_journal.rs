//! A journal large enough that open replays it on two threads, split by position (the first
//! worker up to a record start near the middle of the data, the second from there on): the
//! store reopens to exactly the model of its writes, and damage in either half loses exactly
//! the records from the damaged one on, never more and never fewer.

#[allow(
    dead_code,
    reason = "this test makes no `Write::Clear`: a clear compacts, which would move the records"
)]
mod support;

use std::path::{Path, PathBuf};

use resilient_kv::testing::Rng;
use resilient_kv::{KVStore, Value};

use support::{Model, Write, apply_model, apply_store};

/// Journal size: the writes below fill about 9 MiB of it, well above the 4 MiB from which
/// replay splits, and with the high-water mark at the end no compaction moves the records.
const BUFFER: usize = 16 << 20;
const DATA: u64 = 9 << 20;

fn random_write(rng: &mut Rng) -> Write {
    let key = |rng: &mut Rng| format!("key-{}", rng.below(3000));
    let value = |rng: &mut Rng| match rng.below(4) {
        0 => Value::Integer(rng.next_u64() as i64),
        _ => Value::from("v".repeat(8 + rng.below(120) as usize)),
    };
    match rng.below(20) {
        0..=2 => Write::Remove(key(rng)),
        3 | 4 => Write::Batch(
            (0..2 + rng.below(4))
                .map(|_| {
                    let k = key(rng);
                    let v = (rng.below(4) != 0).then(|| value(rng));
                    (k, v)
                })
                .collect(),
        ),
        _ => Write::Insert(key(rng), value(rng)),
    }
}

fn open(base: &Path) -> KVStore {
    KVStore::builder(base)
        .buffer_size(BUFFER)
        .high_water_mark(1.0)
        // No compaction may move the records: a fast writer would otherwise start one early.
        .pace_compactions(false)
        .open()
        .unwrap()
}

/// Checks that `store` holds exactly `expected`; on a mismatch, names a few differing keys
/// rather than printing thousands of entries.
fn assert_holds(store: &KVStore, expected: &Model, context: &str) {
    let actual: Model = store.as_hashmap().into_iter().collect();
    if &actual != expected {
        let differing: Vec<&String> = actual
            .keys()
            .chain(expected.keys())
            .filter(|k| actual.get(*k) != expected.get(*k))
            .take(5)
            .collect();
        panic!(
            "{context}: {} keys held, {} expected; differing keys include {differing:?}",
            actual.len(),
            expected.len()
        );
    }
}

/// The model after the first `n` writes.
fn model_after(writes: &[Write], n: usize) -> Model {
    let mut model = Model::new();
    writes[..n].iter().for_each(|w| apply_model(&mut model, w));
    model
}

struct History {
    base: PathBuf,
    writes: Vec<Write>,
    /// `ends[i]`: where the record of write `i` ends in the journal.
    ends: Vec<usize>,
    /// The journal holding the records, and both files' bytes as written.
    active: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
}

fn history(dir: &Path) -> History {
    let base = dir.join("large");
    let store = open(&base);
    let mut rng = Rng::new(0x5eed_1a4e);
    let (mut writes, mut ends) = (Vec::new(), Vec::new());
    while store.stats().active_used < DATA {
        let write = random_write(&mut rng);
        apply_store(&store, &write).unwrap();
        writes.push(write);
        ends.push(store.stats().active_used as usize);
    }
    assert_eq!(
        store.stats().compactions,
        0,
        "records must stay where written"
    );
    drop(store);
    let files: Vec<(PathBuf, Vec<u8>)> = ["jrna", "jrnb"]
        .iter()
        .map(|ext| {
            let path = PathBuf::from(format!("{}.{ext}", base.display()));
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    let active = files
        .iter()
        .find(|(_, bytes)| bytes[ends[0] - 1] != 0)
        .map(|(path, _)| path.clone())
        .unwrap();
    History {
        base,
        writes,
        ends,
        active,
        files,
    }
}

impl History {
    fn restore(&self) {
        for (path, bytes) in &self.files {
            std::fs::write(path, bytes).unwrap();
        }
    }

    /// Damages the frame of write `i`'s record, reopens, and checks that exactly the writes
    /// before it survive and that the loss is reported.
    fn damage_record(&self, i: usize) {
        self.restore();
        let mut bytes = std::fs::read(&self.active).unwrap();
        bytes[self.ends[i - 1] + 1] ^= 0x40;
        std::fs::write(&self.active, &bytes).unwrap();
        let store = open(&self.base);
        let context = format!("damage in the record of write {i} of {}", self.writes.len());
        assert_holds(&store, &model_after(&self.writes, i), &context);
        assert!(store.stats().data_loss_events > 0);
    }

    /// The first write whose record starts at or after `fraction` of the data.
    fn write_at(&self, fraction: f64) -> usize {
        let first = self.ends[0];
        let at = first + ((self.ends[self.ends.len() - 1] - first) as f64 * fraction) as usize;
        self.ends.iter().position(|&end| end > at).unwrap() + 1
    }
}

#[test]
fn a_large_journal_reopens_to_its_writes_and_loses_only_what_damage_hides() {
    let dir = tempfile::tempdir().unwrap();
    let history = history(dir.path());
    let all = model_after(&history.writes, history.writes.len());
    assert!(all.len() > 1000);
    {
        let store = open(&history.base);
        assert_holds(&store, &all, "intact");
        assert_eq!(store.stats().data_loss_events, 0);
    }
    // In the second worker's part, near its start, and in the first worker's part.
    for fraction in [0.8, 0.51, 0.2] {
        history.damage_record(history.write_at(fraction));
    }
}
