//! Torn tails and corruption (issue 4, item 4), on real files through the public API.
//!
//! A fixture store is built once with a known sequence of writes spread over several
//! generations (explicit compactions, a `clear()`), so both journal files hold content: the
//! newest generation `g` (a compacted snapshot of the map after write `c`, its commit marker,
//! then one record per later write) and the retired generation `g - 1`, which still holds every
//! write up to `c` and older, overwritten values. For each case a copy of the two files is
//! damaged and reopened:
//!
//! - `torn_tail_*`: the newest journal cut at every byte offset of its last records, both by
//!   truncating the file there and by zero-filling from there to the end (the files are
//!   preallocated, so a cut tail usually reads as zeros, not as a short file);
//! - `random_bit_flips`: one flipped bit at a random offset of either file (seeded xorshift;
//!   `RKV_CORRUPTION_CASES` sets the count, `RKV_CORRUPTION_SEED` the seed, and
//!   `RKV_CORRUPTION_CASE_SEED` reruns the single case a failure names);
//! - `truncated_files`: either or both files truncated to 0, to less than a header, to odd sizes
//!   inside the header, the snapshot, the marker and the tail, past the data, and extended;
//! - `zeroed_header_pages`: the header page of either or both files zeroed (both also with the
//!   file names swapped, so the older generation is in `.jrna` once);
//! - `swapped_file_names`: `.jrna` and `.jrnb` exchanged;
//! - `future_format_version_*`: a header of format version 2 (and `u32::MAX`) with its CRC
//!   recomputed as `docs/format.md` says, so it is a clean future-version file.
//!
//! The oracle, for every case: open never panics or hangs (a watchdog aborts the run, naming the
//! case, after 60 s without progress). It either returns exactly the typed error the case
//! allows, leaving both files byte for byte and in length as they were, or a store whose
//! contents equal the model after a prefix of `P` writes, where:
//!
//! - `P` is at least the index of the first damaged write: damage to the record of write `w`
//!   may lose writes `w..`, never an earlier one. Damage to the snapshot or the commit marker of
//!   the newest journal may lose the writes after `c`, but not those up to `c`: the retired
//!   journal holds them intact. Damage to a header alone, to the retired journal, or to bytes
//!   past the data loses nothing.
//! - Equality with the model after a prefix is what excludes stale data: a value overwritten or
//!   deleted before the prefix's end, or a half-applied batch, is never equal to it.
//! - Whenever writes were lost and an intact record of the newest generation survives beyond
//!   the damage (so the loss is provable, format.md's rule 5), an `Event::DataLoss` must be
//!   delivered to `subscribe()`, and `stats().data_loss_events` must count the same events. For
//!   damage in the records after the commit marker, the event must point at the damaged record
//!   and cover every byte up to the last intact record. A loss nothing in the files can prove
//!   (a cut tail, a file truncated to nothing) is allowed to be silent: the bytes left are exactly
//!   those a crash before those writes leaves (format.md: a torn record was never acknowledged).
//!
//! Then the store must accept writes: the write that comes after the prefix is issued again
//! (byte for byte the record that was damaged, so a journal that kept the orphaned records
//! behind the damage would replay them on the next open) and must survive a reopen exactly,
//! without any new `DataLoss` report; then a compaction, a write and a reopen must give exactly
//! the expected map and no report.
//!
//! Every case runs on the same fixture, so each failure's description reproduces it (within the
//! snapshot, whose record order follows the map's seeded hash, an offset may fall in another
//! key's record from one run to the next; the region and the outcome stay the same). Case counts
//! are printed (`cargo test --release --test corruption -- --nocapture`): 578 torn-tail cuts
//! (289 offsets, truncated and zero-filled), 20,000 bit flips by default, 43 truncations, 5
//! zeroed-header cases, 1 swap, 7 future-version cases, and 8 minimal reproductions of the
//! defects the sweeps found. Runtime of the whole file with `cargo test --release --test
//! corruption` on this 2-core machine (files in `/dev/shm` when it exists, other builds running):
//! 21 s while the defects make many cases stop early; when every case runs to the end (a fixed
//! library), the 20,000 flips alone take 28 s (measured with flips that damage nothing), so the
//! file stays near 30 s.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use resilient_kv::testing::Rng;
use resilient_kv::{Error, Event, KVStore, Value};

#[path = "../support/mod.rs"]
mod support;
use support::{Model, Write, apply_model, apply_store};

/// Journal size of the fixture: small, so that a bit flip lands in data often.
const BUFFER: usize = 32 * 1024;
/// Largest journal: small, so each open reserves little address space.
const MAX_SIZE: usize = 16 * BUFFER;
// The byte layout, from docs/format.md.
const HEADER_SIZE: usize = 4096;
const HEADER_USED: usize = 28;
const FRAME_SIZE: usize = 12;
const VERSION_OFFSET: usize = 8;
const STATE_OFFSET: usize = 12;
const GENERATION_OFFSET: usize = 16;
const HEADER_CRC_OFFSET: usize = 24;
const MAGIC: &[u8; 8] = b"RKVJRNL\x01";
const STATE_COMMITTED: u32 = 0x434f_4d54;
const OP_PUT: u8 = 1;
const OP_COMMIT: u8 = 4;
/// The fixture's write sequence.
const FIXTURE_SEED: u64 = 0x00c0_ffee_d00d_f00d;
/// Records at the end of the newest journal cut at every byte.
const TAIL_RECORDS_CUT: usize = 5;
/// Bit flips run by default (`RKV_CORRUPTION_CASES` overrides).
const DEFAULT_FLIPS: u64 = 20_000;
const NAMES: [&str; 2] = ["store.jrna", "store.jrnb"];

// ---------------------------------------------------------------------------------------------
// Writes and the model.

/// splitmix64: a well-mixed seed for case `i` of a run, so each case can be rerun alone.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

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
enum Kind {
    /// One live key of the compacted snapshot (the map after write `c`).
    Snapshot,
    /// The commit marker after the snapshot.
    Marker,
    /// Write number `w` (0-based), appended after the compaction.
    Tail(usize),
}

#[derive(Debug, Clone, Copy)]
struct Rec {
    start: usize,
    end: usize,
    kind: Kind,
}

struct Fixture {
    writes: Vec<Write>,
    /// `models[p]`: the map after the first `p` writes.
    models: Vec<Model>,
    /// Writes before the last compaction (the newest journal's snapshot is `models[c]`).
    c: usize,
    /// Contents of `store.jrna` and `store.jrnb`.
    files: [Vec<u8>; 2],
    /// Index (into `files`) of the newest journal.
    active: usize,
    /// Records of the newest journal.
    records: Vec<Rec>,
    /// End of the newest journal's records.
    data_end: usize,
    /// End of the retired journal's records.
    inactive_end: usize,
}

impl Fixture {
    fn n(&self) -> usize {
        self.writes.len()
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

/// A scratch directory: in `/dev/shm` when it exists (real files on tmpfs, so the fsyncs of
/// tens of thousands of opens cost nothing), else the default temporary directory.
fn scratch() -> tempfile::TempDir {
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

fn open_at(work: &Path, buffer: usize) -> resilient_kv::Result<KVStore> {
    KVStore::builder(work.join("store"))
        .buffer_size(buffer)
        .max_size(MAX_SIZE)
        .open()
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// `(version, state, generation)` of a header whose magic and CRC hold.
fn header(bytes: &[u8]) -> Option<(u32, u32, u64)> {
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
fn walk(bytes: &[u8], generation: u64) -> (Vec<(usize, usize, u8)>, usize) {
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
    let write = |writes: &mut Vec<Write>, w: Write| {
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
    write(&mut writes, Write::Remove("key07".into()));
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
    for (i, &(start, end, op)) in raw.iter().enumerate() {
        let kind = match marker {
            None if op == OP_COMMIT => {
                marker = Some(i);
                Kind::Marker
            }
            None => {
                assert_eq!(op, OP_PUT, "fixture: the snapshot holds puts only");
                Kind::Snapshot
            }
            Some(m) => Kind::Tail(c + i - m - 1),
        };
        records.push(Rec { start, end, kind });
    }
    let marker = marker.expect("fixture: the newest journal has its commit marker");
    assert_eq!(
        marker,
        models[c].len(),
        "fixture: one snapshot record per live key"
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

// ---------------------------------------------------------------------------------------------
// Cases and the oracle.

/// What a case allows.
enum Expect {
    /// The store opens with the model after `P >= lower` writes.
    Recover {
        lower: usize,
        /// A loss must be reported (an intact record of the newest generation survives
        /// beyond the damage).
        must_report: bool,
        /// For damage after the snapshot: the report must point into `[record_start,
        /// damage_at]` and cover everything up to `valid_until`.
        at: Option<(usize, usize, usize)>,
    },
    /// Open must fail with this error (and change nothing); `what` names it.
    Refuse {
        accept: fn(&Error) -> bool,
        what: &'static str,
    },
    /// Either of the above (both are defensible for this damage).
    Either {
        lower: usize,
        accept: fn(&Error) -> bool,
    },
}

struct Case {
    /// Describes the damage, enough to reproduce it.
    name: String,
    /// Where the damage is, to group failures.
    region: String,
    /// Bytes of `store.jrna` and `store.jrnb`.
    files: [Vec<u8>; 2],
    buffer: usize,
    expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Intact,
    LossReported,
    LossSilent,
    Refused,
}

struct Failure {
    kind: String,
    detail: String,
}

fn failure(kind: &str, detail: impl Into<String>) -> Failure {
    Failure {
        kind: kind.to_owned(),
        detail: detail.into(),
    }
}

/// The region of `offset` in the newest journal, for grouping.
fn region_of(fx: &Fixture, file: usize, offset: usize) -> String {
    let which = if file == fx.active {
        "newest"
    } else {
        "retired"
    };
    let end = if file == fx.active {
        fx.data_end
    } else {
        fx.inactive_end
    };
    let part = if offset < HEADER_USED {
        "header".to_owned()
    } else if offset < HEADER_SIZE {
        "header padding".to_owned()
    } else if offset >= end {
        "past the data".to_owned()
    } else if file != fx.active {
        "records".to_owned()
    } else {
        match fx.records.iter().find(|r| r.end > offset).unwrap().kind {
            Kind::Snapshot => "snapshot record".to_owned(),
            Kind::Marker => "commit marker".to_owned(),
            Kind::Tail(_) => "record after the marker".to_owned(),
        }
    };
    format!("{which} journal, {part}")
}

/// The expectation for damage to bytes `[from, to)` of one file (the other intact).
fn assess(fx: &Fixture, file: usize, from: usize, to: usize) -> Expect {
    let n = fx.n();
    if file != fx.active {
        // The newest journal is intact and holds everything.
        return Expect::Recover {
            lower: n,
            must_report: false,
            at: None,
        };
    }
    let Some(first) = fx.records.iter().find(|r| r.end > from && r.start < to) else {
        // Only the header (provable from the records), padding, or bytes past the data.
        return Expect::Recover {
            lower: n,
            must_report: false,
            at: None,
        };
    };
    let must_report = fx.records.iter().any(|r| r.start >= to);
    match first.kind {
        Kind::Snapshot | Kind::Marker => Expect::Recover {
            lower: fx.c,
            must_report,
            at: (must_report && first.kind == Kind::Marker).then_some((
                first.start,
                from,
                fx.data_end,
            )),
        },
        Kind::Tail(w) => Expect::Recover {
            lower: w,
            must_report,
            at: must_report.then_some((first.start, from, fx.data_end)),
        },
    }
}

fn contents(store: &KVStore) -> Model {
    store.as_hashmap().into_iter().collect()
}

/// Compares two maps briefly, for messages.
fn diff(found: &Model, expected: &Model) -> String {
    let mut out = Vec::new();
    for (k, v) in found {
        match expected.get(k) {
            None => out.push(format!("extra {k}")),
            Some(e) if e != v => out.push(format!("{k}: {v:?} instead of {e:?}")),
            Some(_) => {}
        }
    }
    for k in expected.keys() {
        if !found.contains_key(k) {
            out.push(format!("missing {k}"));
        }
    }
    let total = out.len();
    out.truncate(4);
    format!("{total} differences: {}", out.join("; "))
}

fn loss_events(store: &KVStore) -> Vec<(PathBuf, u64, u64)> {
    store
        .subscribe()
        .try_iter()
        .filter_map(|e| match e {
            Event::DataLoss {
                path,
                offset,
                lost_bytes,
                ..
            } => Some((path, offset, lost_bytes)),
            _ => None,
        })
        .collect()
}

fn untouched(work: &Path, files: &[Vec<u8>; 2]) -> Result<(), Failure> {
    for (name, expected) in NAMES.iter().zip(files) {
        let now = std::fs::read(work.join(name)).unwrap_or_default();
        if now.len() != expected.len() {
            return Err(failure(
                "refused but changed a file",
                format!("{name}: length {} became {}", expected.len(), now.len()),
            ));
        }
        if let Some(at) = now.iter().zip(expected).position(|(a, b)| a != b) {
            return Err(failure(
                "refused but changed a file",
                format!("{name}: byte {at} changed"),
            ));
        }
    }
    Ok(())
}

fn run_case(fx: &Fixture, work: &Path, case: &Case) -> Result<Outcome, Failure> {
    for (name, bytes) in NAMES.iter().zip(&case.files) {
        std::fs::write(work.join(name), bytes).unwrap();
    }
    match (open_at(work, case.buffer), &case.expect) {
        (Err(e), Expect::Refuse { accept, .. } | Expect::Either { accept, .. }) if accept(&e) => {
            untouched(work, &case.files)?;
            Ok(Outcome::Refused)
        }
        (Err(e), _) => Err(failure("open failed", format!("{e:?}"))),
        (Ok(_), Expect::Refuse { what, .. }) => Err(failure(
            "opened instead of refusing",
            format!("expected {what}"),
        )),
        (
            Ok(store),
            Expect::Recover {
                lower,
                must_report,
                at,
            },
        ) => check_store(fx, work, case, store, *lower, *must_report, *at),
        (Ok(store), Expect::Either { lower, .. }) => {
            check_store(fx, work, case, store, *lower, false, None)
        }
    }
}

fn check_store(
    fx: &Fixture,
    work: &Path,
    case: &Case,
    store: KVStore,
    lower: usize,
    must_report: bool,
    at: Option<(usize, usize, usize)>,
) -> Result<Outcome, Failure> {
    let n = fx.n();
    let found = contents(&store);
    let Some(p) = (lower..=n).rev().find(|&p| fx.models[p] == found) else {
        return Err(match (0..lower).rev().find(|&p| fx.models[p] == found) {
            Some(p) => failure(
                "lost more than the damage covers",
                format!(
                    "the model after {p} writes ({} keys); at least {lower} of {n} writes must \
                     survive",
                    found.len()
                ),
            ),
            None => failure(
                "not the model after any prefix (stale or partial data)",
                format!(
                    "vs all {n} writes: {}; vs the {} before the compaction: {}",
                    diff(&found, &fx.models[n]),
                    fx.c,
                    diff(&found, &fx.models[fx.c])
                ),
            ),
        });
    };
    let events = loss_events(&store);
    let counted = store.stats().data_loss_events;
    if counted != events.len() as u64 {
        return Err(failure(
            "stats and events disagree",
            format!("stats {counted}, events {events:?}"),
        ));
    }
    let lost = p < n && fx.models[p] != fx.models[n];
    if lost && must_report && events.is_empty() {
        return Err(failure(
            "silent loss although intact records follow the damage",
            format!("recovered {p} of {n} writes, no DataLoss event"),
        ));
    }
    if let (true, Some((record_start, damage_at, valid_until))) = (lost, at) {
        let path = work.join(NAMES[fx.active]);
        let points = events.iter().any(|(file, offset, lost_bytes)| {
            let offset = *offset as usize;
            *file == path
                && (record_start..=damage_at).contains(&offset)
                && offset + *lost_bytes as usize >= valid_until
        });
        if !points {
            return Err(failure(
                "the DataLoss report does not say what was lost",
                format!(
                    "expected {} at an offset in [{record_start}, {damage_at}] covering up to \
                     {valid_until}; got {events:?}",
                    path.display()
                ),
            ));
        }
    }
    let outcome = match (lost, events.is_empty()) {
        (false, _) => Outcome::Intact,
        (true, false) => Outcome::LossReported,
        (true, true) => Outcome::LossSilent,
    };

    // The store takes writes: first the write after the prefix, again (its record is byte for
    // byte the one that was damaged, if it was).
    let (next, mut expected) = if p < n {
        (fx.writes[p].clone(), fx.models[p + 1].clone())
    } else {
        let w = Write::Insert("after-damage".into(), Value::Integer(1));
        let mut m = fx.models[n].clone();
        apply_model(&mut m, &w);
        (w, m)
    };
    if let Err(e) = apply_store(&store, &next) {
        return Err(failure(
            "a write after the damaged open failed",
            format!("{e:?}"),
        ));
    }
    drop(store);
    let store = open_at(work, case.buffer)
        .map_err(|e| failure("the reopen after a write failed", format!("{e:?}")))?;
    let again = contents(&store);
    if again != expected {
        return Err(failure(
            "after one more write, the reopen differs (orphaned records replayed?)",
            format!(
                "recovered {p} of {n}, wrote write {p} again; {}",
                diff(&again, &expected)
            ),
        ));
    }
    let repeated = loss_events(&store);
    if !repeated.is_empty() {
        return Err(failure(
            "the reopen after a write reports data loss again",
            format!("{repeated:?}"),
        ));
    }
    // Then a compaction, a write and a reopen.
    store
        .compact()
        .map_err(|e| failure("compact after the damaged open failed", format!("{e:?}")))?;
    let w = Write::Insert("after-compaction".into(), Value::Integer(2));
    apply_store(&store, &w)
        .map_err(|e| failure("a write after compacting failed", format!("{e:?}")))?;
    apply_model(&mut expected, &w);
    drop(store);
    let store = open_at(work, case.buffer)
        .map_err(|e| failure("the reopen after compacting failed", format!("{e:?}")))?;
    let last = contents(&store);
    if last != expected {
        return Err(failure(
            "after compacting, the reopen differs",
            diff(&last, &expected),
        ));
    }
    let reported = loss_events(&store);
    if !reported.is_empty() {
        return Err(failure(
            "after compacting, the reopen reports data loss",
            format!("{reported:?}"),
        ));
    }
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------------
// Running many cases: a watchdog against hangs, panics caught, failures grouped.

struct Watchdog {
    state: Arc<(AtomicU64, Mutex<String>, AtomicBool)>,
}

impl Watchdog {
    fn new(test: &'static str) -> Self {
        let state = Arc::new((
            AtomicU64::new(0),
            Mutex::new(String::new()),
            AtomicBool::new(false),
        ));
        let watched = Arc::clone(&state);
        std::thread::spawn(move || {
            let (mut seen, mut since) = (u64::MAX, Instant::now());
            while !watched.2.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(200));
                let now = watched.0.load(Ordering::Acquire);
                if now != seen {
                    (seen, since) = (now, Instant::now());
                } else if since.elapsed() > Duration::from_secs(60) {
                    eprintln!(
                        "{test}: no progress for 60 s (open hangs?) in case: {}",
                        watched.1.lock().unwrap()
                    );
                    std::process::abort();
                }
            }
        });
        Watchdog { state }
    }

    fn case(&self, name: &str) {
        name.clone_into(&mut self.state.1.lock().unwrap());
        self.state.0.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.state.2.store(true, Ordering::Release);
    }
}

/// Runs cases, counts outcomes and groups failures by region and kind.
struct Runner {
    test: &'static str,
    fx: &'static Fixture,
    work: tempfile::TempDir,
    watchdog: Watchdog,
    started: Instant,
    cases: u64,
    outcomes: BTreeMap<&'static str, u64>,
    failures: BTreeMap<String, (u64, String)>,
}

impl Runner {
    fn new(test: &'static str) -> Self {
        Runner {
            test,
            fx: fixture(),
            work: scratch(),
            watchdog: Watchdog::new(test),
            started: Instant::now(),
            cases: 0,
            outcomes: BTreeMap::new(),
            failures: BTreeMap::new(),
        }
    }

    fn run(&mut self, case: Case) {
        self.watchdog.case(&case.name);
        self.cases += 1;
        let (fx, work) = (self.fx, self.work.path());
        let result =
            catch_unwind(AssertUnwindSafe(|| run_case(fx, work, &case))).unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                Err(failure("panicked", msg))
            });
        match result {
            Ok(outcome) => {
                let name = match outcome {
                    Outcome::Intact => "nothing lost",
                    Outcome::LossReported => "loss reported",
                    Outcome::LossSilent => "unprovable loss, silent",
                    Outcome::Refused => "refused with the expected error",
                };
                *self.outcomes.entry(name).or_default() += 1;
            }
            Err(f) => {
                let entry = self
                    .failures
                    .entry(format!("{}: {}", case.region, f.kind))
                    .or_insert((0, format!("{}: {}", case.name, f.detail)));
                entry.0 += 1;
            }
        }
    }

    fn finish(self) {
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        println!(
            "{}: {} cases in {:.1} s ({})",
            self.test,
            self.cases,
            self.started.elapsed().as_secs_f64(),
            outcomes.join(", ")
        );
        if !self.failures.is_empty() {
            let failed: u64 = self.failures.values().map(|f| f.0).sum();
            let mut report = format!(
                "{}: {failed} of {} cases failed, by region and kind (first example each):\n",
                self.test, self.cases
            );
            for (class, (count, example)) in &self.failures {
                report.push_str(&format!("- {count} x {class}\n    e.g. {example}\n"));
            }
            panic!("{report}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

fn pristine(fx: &Fixture) -> [Vec<u8>; 2] {
    fx.files.clone()
}

/// The oracle's control: the undamaged copy reopens with every write and no report.
#[test]
fn pristine_copy_reopens_exactly() {
    let mut runner = Runner::new("pristine_copy_reopens_exactly");
    let fx = runner.fx;
    runner.run(Case {
        name: "no damage".into(),
        region: "none".into(),
        files: pristine(fx),
        buffer: BUFFER,
        expect: Expect::Recover {
            lower: fx.n(),
            must_report: false,
            at: None,
        },
    });
    assert_eq!(runner.outcomes.get("nothing lost"), Some(&1));
    runner.finish();
}

/// Cuts the newest journal at every byte offset of its last records: the file truncated there,
/// and (separately) zero-filled from there to its end.
#[test]
fn torn_tail_cut_at_every_byte_of_the_last_records() {
    let mut runner = Runner::new("torn_tail_cut_at_every_byte_of_the_last_records");
    let fx = runner.fx;
    let from = fx.records[fx.records.len() - TAIL_RECORDS_CUT].start;
    for cut in from..=fx.data_end {
        for truncate in [true, false] {
            let mut files = pristine(fx);
            let file = &mut files[fx.active];
            if truncate {
                file.truncate(cut);
            } else {
                file[cut..].fill(0);
            }
            let how = if truncate { "truncated" } else { "zero-filled" };
            runner.run(Case {
                name: format!("{} {how} at byte {cut}", NAMES[fx.active]),
                region: format!("{how} cut in the {}", region_of(fx, fx.active, cut)),
                files,
                buffer: BUFFER,
                expect: assess(fx, fx.active, cut, usize::MAX),
            });
        }
    }
    runner.finish();
}

/// One flipped bit at a random offset of either file, tens of thousands of times.
#[test]
fn random_bit_flips() {
    let env = |name: &str| {
        std::env::var(name).ok().map(|s| {
            let s = s.trim();
            s.strip_prefix("0x")
                .map_or_else(|| s.parse(), |hex| u64::from_str_radix(hex, 16))
                .unwrap_or_else(|_| panic!("{name}={s} is not a number"))
        })
    };
    let seed = env("RKV_CORRUPTION_SEED").unwrap_or(0x5eed_f11b);
    let count = env("RKV_CORRUPTION_CASES").unwrap_or(DEFAULT_FLIPS);
    let case_seeds: Vec<u64> = match env("RKV_CORRUPTION_CASE_SEED") {
        Some(one) => {
            println!("random_bit_flips: the single case RKV_CORRUPTION_CASE_SEED={one:#x}");
            vec![one]
        }
        None => {
            println!("random_bit_flips: RKV_CORRUPTION_SEED={seed:#x}, {count} cases");
            (0..count).map(|i| mix(seed.wrapping_add(i))).collect()
        }
    };
    let mut runner = Runner::new("random_bit_flips");
    let fx = runner.fx;
    for case_seed in case_seeds {
        let mut rng = Rng::from_state(case_seed);
        let file = if rng.below(4) == 0 {
            1 - fx.active
        } else {
            fx.active
        };
        let len = fx.files[file].len();
        let end = if file == fx.active {
            fx.data_end
        } else {
            fx.inactive_end
        };
        // Mostly where the data is; some in the header, some anywhere.
        let offset = match rng.below(16) {
            0 => rng.below(HEADER_USED as u64) as usize,
            1..=3 => rng.below(len as u64) as usize,
            _ => HEADER_SIZE + rng.below((end + FRAME_SIZE - HEADER_SIZE) as u64) as usize,
        };
        let bit = rng.below(8) as u8;
        let mut files = pristine(fx);
        files[file][offset] ^= 1 << bit;
        runner.run(Case {
            name: format!(
                "bit {bit} of byte {offset} of {} flipped (RKV_CORRUPTION_CASE_SEED={case_seed:#x})",
                NAMES[file]
            ),
            region: region_of(fx, file, offset),
            files,
            buffer: BUFFER,
            expect: assess(fx, file, offset, offset + 1),
        });
    }
    runner.finish();
}

fn is_unreadable(e: &Error) -> bool {
    matches!(e, Error::Unreadable { .. })
}

/// Files truncated to 0, to less than a header, and to odd sizes; one file or both.
#[test]
fn truncated_files() {
    let mut runner = Runner::new("truncated_files");
    let fx = runner.fx;
    let (active, retired) = (fx.active, 1 - fx.active);
    let marker = fx.records.iter().find(|r| r.kind == Kind::Marker).unwrap();
    let snapshot_middle = fx.records[fx.records.len() / 4].start + 5;
    let sizes_active = [
        0,
        1,
        7,
        HEADER_USED - 1,
        HEADER_USED,
        1000,
        HEADER_SIZE - 1,
        HEADER_SIZE,
        HEADER_SIZE + 1,
        HEADER_SIZE + FRAME_SIZE + 3,
        snapshot_middle,
        marker.start,
        marker.start + 5,
        marker.end,
        marker.end + 9,
        fx.data_end - 1,
        fx.data_end,
        fx.data_end + 13,
        BUFFER / 2 + 3,
        BUFFER - 1,
        BUFFER + 5,
        BUFFER + HEADER_SIZE + 1,
    ];
    for size in sizes_active {
        let mut files = pristine(fx);
        files[active].resize(size, 0);
        runner.run(Case {
            name: format!("{} (newest) truncated to {size} bytes", NAMES[active]),
            region: format!(
                "newest journal truncated into the {}",
                region_of(fx, active, size)
            ),
            files,
            buffer: BUFFER,
            expect: assess(fx, active, size, usize::MAX),
        });
    }
    let sizes_retired = [
        0,
        1,
        HEADER_USED - 1,
        HEADER_USED,
        HEADER_SIZE - 1,
        HEADER_SIZE + 7,
        fx.inactive_end / 2 + 1,
        fx.inactive_end - 1,
        fx.inactive_end,
        BUFFER - 3,
        BUFFER + 3,
    ];
    for size in sizes_retired {
        let mut files = pristine(fx);
        files[retired].resize(size, 0);
        runner.run(Case {
            name: format!("{} (retired) truncated to {size} bytes", NAMES[retired]),
            region: "retired journal truncated".into(),
            files,
            buffer: BUFFER,
            expect: assess(fx, retired, size, usize::MAX),
        });
    }
    // Both files: what a case allows depends on what is left of either.
    let both: [(usize, Expect, &str); 8] = [
        (
            0,
            // Two empty files are a new store: the loss is total and unprovable.
            Expect::Recover {
                lower: 0,
                must_report: false,
                at: None,
            },
            "both empty",
        ),
        (
            1,
            Expect::Refuse {
                accept: is_unreadable,
                what: "Unreadable",
            },
            "both headers damaged, no records",
        ),
        (
            HEADER_USED - 1,
            Expect::Refuse {
                accept: is_unreadable,
                what: "Unreadable",
            },
            "both headers damaged, no records",
        ),
        (
            HEADER_USED,
            // Committed headers without records: indistinguishable from a power cut right
            // after compacting an empty map; refusing is as defensible.
            Expect::Either {
                lower: 0,
                accept: is_unreadable,
            },
            "both headers intact, no records",
        ),
        (
            HEADER_SIZE,
            Expect::Either {
                lower: 0,
                accept: is_unreadable,
            },
            "both headers intact, no records",
        ),
        (
            HEADER_SIZE + 7,
            Expect::Either {
                lower: 0,
                accept: is_unreadable,
            },
            "both headers intact, first records torn",
        ),
        (
            BUFFER - 1,
            Expect::Recover {
                lower: fx.n(),
                must_report: false,
                at: None,
            },
            "both cut past their data",
        ),
        (
            BUFFER + 11,
            Expect::Recover {
                lower: fx.n(),
                must_report: false,
                at: None,
            },
            "both extended",
        ),
    ];
    for (size, expect, what) in both {
        let mut files = pristine(fx);
        for f in &mut files {
            f.resize(size, 0);
        }
        runner.run(Case {
            name: format!("both files truncated to {size} bytes"),
            region: format!("both files: {what}"),
            files,
            buffer: BUFFER,
            expect,
        });
    }
    // The same damage opened with a larger journal size: a refusal must still change nothing.
    for size in [1, HEADER_USED - 1] {
        let mut files = pristine(fx);
        for f in &mut files {
            f.resize(size, 0);
        }
        runner.run(Case {
            name: format!(
                "both files truncated to {size} bytes, opened with buffer_size {}",
                4 * BUFFER
            ),
            region: "both files: headers damaged, no records, larger buffer_size".into(),
            files,
            buffer: 4 * BUFFER,
            expect: Expect::Refuse {
                accept: is_unreadable,
                what: "Unreadable",
            },
        });
    }
    runner.finish();
}

/// The header page of the newest, the retired, or both journals zeroed.
#[test]
fn zeroed_header_pages() {
    let mut runner = Runner::new("zeroed_header_pages");
    let fx = runner.fx;
    let n = fx.n();
    let intact = || Expect::Recover {
        lower: n,
        must_report: false,
        at: None,
    };
    for (which, targets) in [
        ("newest", vec![fx.active]),
        ("retired", vec![1 - fx.active]),
        ("both", vec![0, 1]),
    ] {
        for swap in [false, true] {
            if swap && which != "both" {
                continue;
            }
            let mut files = pristine(fx);
            for &t in &targets {
                files[t][..HEADER_SIZE].fill(0);
            }
            if swap {
                files.swap(0, 1);
            }
            // Every record is intact: each file's generation is provable from its records,
            // so the newest must win and nothing is lost.
            runner.run(Case {
                name: format!(
                    "header page of {which} journal zeroed{}",
                    if swap { ", file names swapped" } else { "" }
                ),
                region: format!(
                    "zeroed header page of {which} journal{}",
                    if swap { ", names swapped" } else { "" }
                ),
                files,
                buffer: BUFFER,
                expect: intact(),
            });
        }
    }
    // And the newest header zeroed together with the start of its records: the retired
    // journal, which holds every write up to the compaction, must win.
    let mut files = pristine(fx);
    files[fx.active][..HEADER_SIZE + FRAME_SIZE].fill(0);
    runner.run(Case {
        name: "header page and first frame of the newest journal zeroed".into(),
        region: "newest journal: header and first frame zeroed".into(),
        files,
        buffer: BUFFER,
        expect: assess(fx, fx.active, 0, HEADER_SIZE + FRAME_SIZE),
    });
    runner.finish();
}

/// `.jrna` and `.jrnb` exchanged: the election is by generation, never by name.
#[test]
fn swapped_file_names() {
    let mut runner = Runner::new("swapped_file_names");
    let fx = runner.fx;
    let mut files = pristine(fx);
    files.swap(0, 1);
    runner.run(Case {
        name: "file names swapped".into(),
        region: "swapped names".into(),
        files,
        buffer: BUFFER,
        expect: Expect::Recover {
            lower: fx.n(),
            must_report: false,
            at: None,
        },
    });
    runner.finish();
}

/// Writes `version` into a header and recomputes its CRC: a clean future-version file.
fn set_version(file: &mut [u8], version: u32) {
    file[VERSION_OFFSET..VERSION_OFFSET + 4].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&file[..HEADER_CRC_OFFSET]);
    file[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(header(file).map(|h| h.0), Some(version));
}

/// A header of a future format version stops the open with `UnsupportedVersion` naming it, and
/// neither file changes (not even its length when the caller asks for larger journals).
#[test]
fn future_format_version_is_refused_and_untouched() {
    let mut runner = Runner::new("future_format_version_is_refused_and_untouched");
    let fx = runner.fx;
    for (which, target) in [("newest", fx.active), ("retired", 1 - fx.active)] {
        for (version, buffer) in [(2, BUFFER), (u32::MAX, BUFFER), (2, 4 * BUFFER)] {
            let mut files = pristine(fx);
            set_version(&mut files[target], version);
            let accept: fn(&Error) -> bool = match (target == 0, version) {
                (true, 2) => |e| {
                    matches!(e, Error::UnsupportedVersion { path, found: 2, supported: 1 }
                        if path.ends_with(NAMES[0]))
                },
                (true, _) => |e| {
                    matches!(e, Error::UnsupportedVersion { path, found: u32::MAX, supported: 1 }
                        if path.ends_with(NAMES[0]))
                },
                (false, 2) => |e| {
                    matches!(e, Error::UnsupportedVersion { path, found: 2, supported: 1 }
                        if path.ends_with(NAMES[1]))
                },
                (false, _) => |e| {
                    matches!(e, Error::UnsupportedVersion { path, found: u32::MAX, supported: 1 }
                        if path.ends_with(NAMES[1]))
                },
            };
            runner.run(Case {
                name: format!(
                    "{} ({which}) at format version {version}, opened with buffer_size {buffer}",
                    NAMES[target]
                ),
                region: format!("future version in the {which} journal, buffer_size {buffer}"),
                files,
                buffer,
                expect: Expect::Refuse {
                    accept,
                    what: "UnsupportedVersion naming the file",
                },
            });
        }
    }
    // After the refusal, the restored files open normally (nothing was left locked).
    let mut files = pristine(fx);
    set_version(&mut files[fx.active], 2);
    for (name, bytes) in NAMES.iter().zip(&files) {
        std::fs::write(runner.work.path().join(name), bytes).unwrap();
    }
    assert!(matches!(
        open_at(runner.work.path(), BUFFER),
        Err(Error::UnsupportedVersion { .. })
    ));
    runner.run(Case {
        name: "restored after a refusal".into(),
        region: "restored".into(),
        files: pristine(fx),
        buffer: BUFFER,
        expect: Expect::Recover {
            lower: fx.n(),
            must_report: false,
            at: None,
        },
    });
    runner.finish();
}

// ---------------------------------------------------------------------------------------------
// Minimal reproductions of what the sweeps above found, one per defect.

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
        let (records, _) = walk(bytes, generation);
        bytes[records[5].0 + FRAME_SIZE + 2] ^= 0x10;
    });
    let store = open_at(work, BUFFER).unwrap();
    let keys = store.len();
    assert!(
        (10..=11).contains(&keys),
        "{keys} keys: {:?}; the map after a prefix of the writes has 10 or 11",
        store.keys()
    );
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
