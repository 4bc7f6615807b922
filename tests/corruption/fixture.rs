//! The fixture: a store on real files with a known history (a seeded sequence of writes over
//! several generations), and reading the bytes of its journals.

use std::path::Path;
use std::sync::OnceLock;

use resilient_kv::testing::Rng;
use resilient_kv::{KVStore, Value};

use crate::support::{Model, Write, apply_model, apply_store};
use crate::{
    BUFFER, FRAME_SIZE, GENERATION_OFFSET, HEADER_CRC_OFFSET, HEADER_SIZE, HEADER_USED, MAGIC,
    MAX_SIZE, NAMES, OP_BATCH, OP_COMMIT, OP_PUT, STATE_COMMITTED, STATE_OFFSET, VERSION_OFFSET,
};

/// The fixture's write sequence.
const FIXTURE_SEED: u64 = 0x00c0_ffee_d00d_f00d;

// ---------------------------------------------------------------------------------------------
// Random writes.

fn random_key(rng: &mut Rng) -> String {
    if rng.below(8) == 0 {
        // Longer than the replay table's inline keys.
        format!("a-rather-longer-key-name-number-{:02}", rng.below(6))
    } else {
        format!("key{:02}", rng.below(24))
    }
}

fn random_value(rng: &mut Rng) -> Value {
    match rng.below(7) {
        0 => Value::Integer(rng.next_u64() as i64),
        1 => Value::Unsigned(u64::MAX - rng.below(1000)),
        2 => Value::Float(rng.below(100_000) as f64 / 7.0),
        3 => Value::Boolean(rng.below(2) == 0),
        4 => Value::from(vec![
            Value::Integer(rng.below(100) as i64),
            Value::from("x".repeat(rng.below(20) as usize)),
        ]),
        5 => [
            ("n", Value::Integer(rng.below(1000) as i64)),
            ("s", Value::from("y".repeat(rng.below(30) as usize))),
        ]
        .into_iter()
        .collect(),
        _ => Value::from("v".repeat(rng.below(90) as usize)),
    }
}

fn random_write(rng: &mut Rng) -> Write {
    match rng.below(10) {
        0..=5 => Write::Insert(random_key(rng), random_value(rng)),
        6 | 7 => Write::Remove(random_key(rng)),
        _ => Write::Batch(
            (0..2 + rng.below(4))
                .map(|_| {
                    let k = random_key(rng);
                    let v = (rng.below(4) != 0).then(|| random_value(rng));
                    (k, v)
                })
                .collect(),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The fixture: a store on real files with a known history.

/// What a record of the newest journal holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Live keys of the compacted snapshot (the map after write `c`): one put, or a batch of
    /// them (compaction packs live keys into batch records).
    Snapshot,
    /// The commit marker after the snapshot.
    Marker,
    /// Write number `w` (0-based), appended after the compaction.
    Tail(usize),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Rec {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) kind: Kind,
}

pub(crate) struct Fixture {
    pub(crate) writes: Vec<Write>,
    /// `models[p]`: the map after the first `p` writes.
    pub(crate) models: Vec<Model>,
    /// Writes before the last compaction (the newest journal's snapshot is `models[c]`).
    pub(crate) c: usize,
    /// Contents of `store.jrna` and `store.jrnb`.
    pub(crate) files: [Vec<u8>; 2],
    /// Index (into `files`) of the newest journal.
    pub(crate) active: usize,
    /// Records of the newest journal.
    pub(crate) records: Vec<Rec>,
    /// End of the newest journal's records.
    pub(crate) data_end: usize,
    /// End of the retired journal's records.
    pub(crate) inactive_end: usize,
}

impl Fixture {
    pub(crate) fn n(&self) -> usize {
        self.writes.len()
    }
}

pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

/// A scratch directory: in `/dev/shm` when it exists (real files on tmpfs, so the fsyncs of
/// tens of thousands of opens cost nothing), else the default temporary directory.
pub(crate) fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("rkv-corruption")
            .tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

pub(crate) fn open_at(work: &Path, buffer: usize) -> resilient_kv::Result<KVStore> {
    KVStore::builder(work.join("store"))
        .buffer_size(buffer)
        .max_size(MAX_SIZE)
        .open()
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// `(version, state, generation)` of a header whose magic and CRC hold.
pub(crate) fn header(bytes: &[u8]) -> Option<(u32, u32, u64)> {
    let h = bytes.get(..HEADER_USED)?;
    if &h[..8] != MAGIC || crc32c::crc32c(&h[..HEADER_CRC_OFFSET]) != read_u32(h, HEADER_CRC_OFFSET)
    {
        return None;
    }
    Some((
        read_u32(h, VERSION_OFFSET),
        read_u32(h, STATE_OFFSET),
        u64::from_le_bytes(
            h[GENERATION_OFFSET..GENERATION_OFFSET + 8]
                .try_into()
                .unwrap(),
        ),
    ))
}

/// `(start, end, first body byte)` of each record of `generation` in a pristine journal, and
/// the end of the last one. Past it lie zeros or leftovers of older generations.
/// The operation count at the start of a batch body's rest (LEB128).
fn batch_count(rest: &[u8]) -> usize {
    let mut count = 0;
    for (i, &byte) in rest.iter().enumerate() {
        count |= usize::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return count;
        }
    }
    panic!("fixture: a batch without a count")
}

pub(crate) fn walk(bytes: &[u8], generation: u64) -> (Vec<(usize, usize, u8)>, usize) {
    let seed = crc32c::crc32c(&generation.to_le_bytes());
    let mut out = Vec::new();
    let mut pos = HEADER_SIZE;
    while pos + FRAME_SIZE <= bytes.len() {
        let len = read_u32(bytes, pos) as usize;
        let end = pos + FRAME_SIZE + len;
        if len == 0
            || end > bytes.len()
            || read_u32(bytes, pos + 4) != generation as u32
            || crc32c::crc32c_append(seed, &bytes[pos + FRAME_SIZE..end])
                != read_u32(bytes, pos + 8)
        {
            break;
        }
        out.push((pos, end, bytes[pos + FRAME_SIZE]));
        pos = end;
    }
    (out, pos)
}

fn build_fixture() -> Fixture {
    let dir = scratch();
    let base = dir.path().join("fixture");
    let store = KVStore::builder(&base)
        .buffer_size(BUFFER)
        .max_size(MAX_SIZE)
        .open()
        .unwrap();
    let mut rng = Rng::from_state(FIXTURE_SEED);
    let mut writes = Vec::new();
    // Removing an absent key writes no record, nor does a batch of such removals: such a
    // write is left out, so that every write of the sequence has its record.
    let write = |writes: &mut Vec<Write>, w: Write| {
        let changes_nothing = match &w {
            Write::Remove(key) => !store.contains_key(key),
            Write::Batch(entries) => entries
                .iter()
                .all(|(key, value)| value.is_none() && !store.contains_key(key)),
            _ => false,
        };
        if changes_nothing {
            return;
        }
        apply_store(&store, &w).unwrap();
        writes.push(w);
    };
    for _ in 0..40 {
        write(&mut writes, random_write(&mut rng));
    }
    store.compact().unwrap();
    for _ in 0..20 {
        write(&mut writes, random_write(&mut rng));
    }
    write(&mut writes, Write::Clear);
    for _ in 0..30 {
        write(&mut writes, random_write(&mut rng));
    }
    store.compact().unwrap();
    for _ in 0..40 {
        write(&mut writes, random_write(&mut rng));
    }
    store.compact().unwrap();
    let c = writes.len();
    let generation = store.stats().generation;
    for _ in 0..35 {
        write(&mut writes, random_write(&mut rng));
    }
    // The last records: one of each kind, so the cuts go through all of them.
    write(
        &mut writes,
        Write::Insert("key03".into(), Value::Integer(-3)),
    );
    write(
        &mut writes,
        Write::Batch(vec![
            ("key04".into(), Some(Value::from("batched"))),
            ("key05".into(), None),
            ("key06".into(), Some(Value::Float(6.5))),
        ]),
    );
    // A key the batch above just stored, so that the removal writes its record.
    write(&mut writes, Write::Remove("key06".into()));
    write(
        &mut writes,
        Write::Insert("key08".into(), Value::from("z".repeat(150))),
    );
    write(
        &mut writes,
        Write::Batch(vec![
            ("key09".into(), None),
            ("key10".into(), Some(Value::Boolean(false))),
        ]),
    );
    assert_eq!(
        store.stats().generation,
        generation,
        "fixture: a compaction ran during the tail writes; make them fewer"
    );
    drop(store);

    let mut models = vec![Model::new()];
    for w in &writes {
        let mut next = models.last().unwrap().clone();
        apply_model(&mut next, w);
        models.push(next);
    }
    let files = [0, 1]
        .map(|i| std::fs::read(dir.path().join(NAMES[i].replace("store", "fixture"))).unwrap());
    let headers = [0, 1].map(|i| header(&files[i]).expect("fixture: both headers valid"));
    assert!(headers.iter().all(|h| h.0 == 1 && h.1 == STATE_COMMITTED));
    let active = if headers[0].2 > headers[1].2 { 0 } else { 1 };
    assert_eq!(headers[active].2, generation);
    let (raw, data_end) = walk(&files[active], generation);
    let mut records = Vec::new();
    let mut marker = None;
    let mut snapshot_keys = 0;
    for (i, &(start, end, op)) in raw.iter().enumerate() {
        let kind = match marker {
            None if op == OP_COMMIT => {
                marker = Some(i);
                Kind::Marker
            }
            None => {
                snapshot_keys += match op {
                    OP_PUT => 1,
                    OP_BATCH => batch_count(&files[active][start + FRAME_SIZE + 1..end]),
                    _ => panic!("fixture: the snapshot holds puts and batches of them only"),
                };
                Kind::Snapshot
            }
            Some(m) => Kind::Tail(c + i - m - 1),
        };
        records.push(Rec { start, end, kind });
    }
    let marker = marker.expect("fixture: the newest journal has its commit marker");
    assert_eq!(
        snapshot_keys,
        models[c].len(),
        "fixture: the snapshot holds every live key"
    );
    assert_eq!(
        raw.len() - marker - 1,
        writes.len() - c,
        "fixture: one record per tail write"
    );
    let (_, inactive_end) = walk(&files[1 - active], headers[1 - active].2);
    let n = writes.len();
    assert_ne!(models[c], models[n]);
    assert!(!models[c].is_empty());
    Fixture {
        writes,
        models,
        c,
        files,
        active,
        records,
        data_end,
        inactive_end,
    }
}

/// Fresh copies of the fixture's two files, to damage.
pub(crate) fn pristine(fx: &Fixture) -> [Vec<u8>; 2] {
    fx.files.clone()
}
