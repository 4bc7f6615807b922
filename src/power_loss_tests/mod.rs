//! Power loss and named crash points, on the storage seam (issue 4, items 2 and 3).
//!
//! The in-memory disk (`journal::storage::MemBackend`, made with `recording`) keeps every
//! write, flush, sync and grow in the order it took effect, so the disk as it was after any
//! number `n` of storage operations can be rebuilt afterwards: that is a crash "frozen" at
//! operation `n`, while the store itself ran on undisturbed. Its durability model (the module
//! docs of `journal::memory` give the details and the reasons):
//!
//! - a process crash keeps everything written (the page cache survives);
//! - power loss keeps what is durable: pages covered by a `flush` (msync) since they were last
//!   written, or anything before a `sync` (fdatasync) or `grow`. Every other page is volatile
//!   and, independently of the others and in any order, reached the disk whole, not at all,
//!   torn (a prefix of its 512-byte sectors) or, in some images, with garbage sectors.
//!
//! Each image is reopened on a fresh store and checked against a model of the acknowledged
//! writes: the recovered map must equal the model after some prefix of the writes, at least
//! every write acknowledged before the last `sync()` that returned (every acknowledged write
//! in `Durability::Sync` mode, and everything before a clean close), at most the acknowledged
//! ones plus the one in flight. After a process crash it must be exactly the acknowledged
//! writes or those plus the one in flight. Opening must succeed and never panic, and the
//! reopened store must keep working (see `afterlife`).
//!
//! Acknowledgement is measured in storage operations: after each write returns, the writer
//! reads the operation count `c`; a crash at `n >= c` happened after the write returned.
//!
//! Garbage sectors are "powersafe overwrite" garbage (as SQLite assumes by default): a sector
//! being written when the power went may hold garbage where it was being changed, never in
//! bytes it already held durably. Without that assumption an append-only journal loses a
//! synced record whenever the next, unsynced record shares its sector and that sector is
//! garbled (measured: about 2% of garbage images then lose synced writes); surviving that
//! would need sector-aligned flushes. The one refusal accepted: a garbled first header
//! before anything was acknowledged is `Unreadable`, as any damaged header with no records is
//! (docs/format.md, "Opening").
//!
//! Tests and what they run, measured on the 2-core machine while other builds ran, with
//! `CARGO_TARGET_DIR=/work/target-helper-d CARGO_BUILD_JOBS=1 nice cargo test --release --lib
//! power_loss` (all of them: 16 to 33 s of wall time, depending on the load):
//!
//! - `power_loss_images_recover_a_prefix_holding_every_synced_write`: seeded random runs, each
//!   a chain of three lives of one store (16 KiB journals, so compactions, swaps and growth
//!   happen all the time; `max_size`, the high-water mark, `Durability` and thread jitter
//!   vary by seed). Each life ends in crashes at 8 sampled operation counts (half of them
//!   next to a header write, a sync or a growth); each is checked as a power-loss image
//!   (pages resolved independently, in a random writeback order cut by the power, or with
//!   garbage sectors), a durable-only image and a process-crash image. Each power-loss image
//!   also gets an afterlife: more writes, a clean close and a reopen that must hold exactly
//!   what was recovered plus the new writes. The next life starts from one of the images, so
//!   a process crash, then a reopen, then a power loss is covered too. Default 200 runs:
//!   4,800 power-loss images (about 1,400 recover fewer writes than were acknowledged, about
//!   200 report a data-loss event at open), 4,800 durable-only images, 4,800 process-crash
//!   images and 4,800 afterlives, in about 13 s. `RKV_POWER_LOSS_RUNS` sets the runs,
//!   `RKV_POWER_LOSS_SEED` the first seed (every failure message names its seed; the threads'
//!   interleaving is not reproduced by it, so the message also describes the image),
//!   `RKV_POWER_LOSS_KEEP_GOING` collects every failure instead of stopping at the first.
//! - `crash_at_every_op_of_*`: one scenario each (creating a store; a compaction started by
//!   `compact()` with a concurrent writer, held until its catch-up must copy records outside
//!   the lock; the swap after writes past the high-water mark; a growth to `max_size` with
//!   writers blocked on a full journal; a `clear()`), crashed at every storage operation it
//!   performs: as a process crash, as a process crash with the frame or header write in
//!   flight cut short, and as a power loss keeping only durable data. About 3,900 crash
//!   points (the compaction's and the growth's vary a little with the threads' timing): 3,900
//!   process-crash images, 6,100 cut short and 3,900 power-loss images, in about 11 s.
//! - One regression test per bug these found, named after it (at the end): a crash while
//!   creating a store (a `PENDING` header of generation 1 left behind, or the first header
//!   write cut short by a kill) left it unopenable; a `sync()` after reopening from a process
//!   crash did not flush what the crash had left in the page cache (at worst, after a crash
//!   right after a swap, a power loss during the next compaction left no committed journal);
//!   records beyond damage replayed again once new records lined up with them; a `sync()`
//!   racing the end of a compaction returned before the new journal's header was durable.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::time::Instant;

use crate::journal::format::{self, FRAME_SIZE};
use crate::journal::storage::{DiskImage, DiskOp, MemBackend, PAGE, SECTOR, SectorFate, Slot};
use crate::options::{Builder, Durability};
use crate::testing::Rng;
use crate::{Batch, Error, Event, KVStore, Value};

/// Random runs by default (see the module docs for what they run and how long).
const DEFAULT_RUNS: u64 = 200;

// ---------------------------------------------------------------------------------------------
// The model: writes, and the state after each prefix of them.

#[derive(Debug, Clone)]
enum Write {
    Insert(String, Value),
    Remove(String),
    Batch(Vec<(String, Option<Value>)>),
    Clear,
}

type Map = HashMap<String, Value>;

fn entry_print(key: &str, value: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    format!("{value:?}").hash(&mut h);
    h.finish()
}

fn map_print(map: &Map) -> u64 {
    map.iter()
        .fold(0_u64, |acc, (k, v)| acc.wrapping_add(entry_print(k, v)))
}

/// Applies `write` to `map`, keeping `print` (the sum of the entries' hashes) up to date.
fn apply(map: &mut Map, print: &mut u64, write: &Write) {
    let mut put = |map: &mut Map, k: &String, v: Option<&Value>| {
        if let Some(old) = map.remove(k) {
            *print = print.wrapping_sub(entry_print(k, &old));
        }
        if let Some(v) = v {
            *print = print.wrapping_add(entry_print(k, v));
            map.insert(k.clone(), v.clone());
        }
    };
    match write {
        Write::Insert(k, v) => put(map, k, Some(v)),
        Write::Remove(k) => put(map, k, None),
        Write::Batch(ops) => {
            for (k, v) in ops {
                put(map, k, v.as_ref());
            }
        }
        Write::Clear => {
            map.clear();
            *print = 0;
        }
    }
}

/// Every write acknowledged so far, in order, with a fingerprint of the state after each
/// prefix (so a recovered map is matched against all prefixes at once).
#[derive(Clone, Default)]
struct History {
    writes: Vec<Write>,
    /// `prints[j]`: fingerprint of the state after the first `j` writes.
    prints: Vec<u64>,
    state: Map,
    print: u64,
}

impl History {
    fn new() -> Self {
        History {
            prints: vec![0],
            ..History::default()
        }
    }

    fn len(&self) -> usize {
        self.writes.len()
    }

    fn push(&mut self, write: Write) {
        apply(&mut self.state, &mut self.print, &write);
        self.writes.push(write);
        self.prints.push(self.print);
    }

    fn state_at(&self, j: usize) -> Map {
        let mut map = Map::new();
        let mut print = 0;
        for w in &self.writes[..j] {
            apply(&mut map, &mut print, w);
        }
        map
    }

    /// Keeps only the first `j` writes (what a crash left; the next life goes on from there).
    fn truncate(&mut self, j: usize) {
        self.writes.truncate(j);
        self.prints.truncate(j + 1);
        self.state = self.state_at(j);
        self.print = self.prints[j];
    }
}

/// What one life of a store acknowledged, in storage-operation counts.
#[derive(Clone, Default)]
struct Acks {
    /// History length when the life began.
    base: usize,
    /// Writes that must survive any crash of this life (durable before it began).
    inherited: usize,
    /// `write_acks[i]`: operation count when write `base + i` returned.
    write_acks: Vec<usize>,
    /// `(history length when sync() was called, operation count when it returned)`.
    syncs: Vec<(usize, usize)>,
}

impl Acks {
    fn new(base: usize, inherited: usize) -> Self {
        Acks {
            base,
            inherited,
            ..Acks::default()
        }
    }

    /// Writes that had returned before the crash at operation `n`.
    fn acked(&self, n: usize) -> usize {
        self.base + self.write_acks.partition_point(|&at| at <= n)
    }

    /// Writes that must survive power loss at operation `n`.
    fn required(&self, n: usize) -> usize {
        self.syncs
            .iter()
            .filter(|&&(_, at)| at <= n)
            .map(|&(len, _)| len)
            .fold(self.inherited, usize::max)
    }
}

/// The store's writer side: performs writes, records them and when they were acknowledged.
struct Writer<'a> {
    store: &'a KVStore,
    disk: &'a MemBackend,
    history: History,
    acks: Acks,
    sync_mode: bool,
}

impl Writer<'_> {
    /// Performs `write`; `Full` (nothing changed) is tolerated, any other error is a failure.
    fn write(&mut self, write: Write) {
        let result = match &write {
            Write::Insert(k, v) => self.store.insert(k.clone(), v.clone()).map(drop),
            Write::Remove(k) => self.store.remove(k).map(drop),
            Write::Batch(ops) => {
                let mut batch = Batch::new();
                for (k, v) in ops {
                    match v {
                        Some(v) => batch.insert(k.clone(), v.clone()),
                        None => batch.remove(k.clone()),
                    };
                }
                self.store.write_batch(batch)
            }
            Write::Clear => self.store.clear(),
        };
        match result {
            Ok(()) => {
                let at = self.disk.ops_done();
                self.history.push(write);
                self.acks.write_acks.push(at);
                if self.sync_mode {
                    self.acks.syncs.push((self.history.len(), at));
                }
            }
            Err(Error::Full { .. }) => {}
            Err(e) => panic!("write {write:?} failed: {e}"),
        }
    }

    fn sync(&mut self) {
        let len = self.history.len();
        self.store.sync().unwrap();
        self.acks.syncs.push((len, self.disk.ops_done()));
    }

    fn compact(&mut self) {
        match self.store.compact() {
            Ok(()) | Err(Error::Full { .. }) => {}
            Err(e) => panic!("compact failed: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads.

#[derive(Debug, Clone, Copy)]
struct Profile {
    buffer: usize,
    max_size: usize,
    hwm: f32,
    durability: Durability,
    /// Keys of the variable-size records (ramps up from 10 over a life).
    keys: u64,
    value_max: u64,
}

impl Profile {
    fn config(&self) -> Builder {
        Builder::new(Path::new("mem"))
            .buffer_size(self.buffer)
            .max_size(self.max_size)
            .high_water_mark(self.hwm)
            .durability(self.durability)
    }

    fn random(rng: &mut Rng) -> Self {
        let (max_size, keys, value_max) = match rng.below(3) {
            0 => (16 * 1024, 40, 60),
            1 => (64 * 1024, 120, 200),
            _ => (256 * 1024, 160, 300),
        };
        Profile {
            buffer: 16 * 1024,
            max_size,
            hwm: [0.5, 0.8, 1.0][rng.index(3)],
            durability: if rng.chance(25) {
                Durability::Sync
            } else {
                Durability::Process
            },
            keys,
            value_max,
        }
    }
}

/// A record of fixed size (fixed key and value lengths): journals full of equal-sized records
/// are where a record boundary after damage lines up with an old one.
fn fixed_write(rng: &mut Rng) -> Write {
    Write::Insert(
        format!("f{:03}", rng.below(60)),
        Value::from(format!("{:016}", rng.below(10_000_000_000_000_000))),
    )
}

fn random_value(rng: &mut Rng, max: u64) -> Value {
    match rng.below(3) {
        0 => Value::Integer(rng.next_u64() as i64),
        1 => Value::from("v".repeat(rng.below(max) as usize)),
        _ => Value::from(vec![
            Value::Boolean(true),
            Value::Integer(rng.below(1000) as i64),
        ]),
    }
}

fn random_write(rng: &mut Rng, keys: u64, value_max: u64) -> Write {
    let key = |rng: &mut Rng| format!("k{:03}", rng.below(keys));
    match rng.below(200) {
        0 => Write::Clear,
        1..=30 => Write::Remove(key(rng)),
        31..=50 => Write::Batch(
            (0..2 + rng.below(4))
                .map(|_| {
                    let k = key(rng);
                    let v = (!rng.chance(25)).then(|| random_value(rng, value_max));
                    (k, v)
                })
                .collect(),
        ),
        51..=120 => fixed_write(rng),
        _ => {
            let k = key(rng);
            Write::Insert(k, random_value(rng, value_max))
        }
    }
}

/// One life: `count` random writes with occasional `sync()` and `compact()`.
fn random_life(w: &mut Writer<'_>, rng: &mut Rng, profile: &Profile, count: usize) {
    for i in 0..count {
        let keys = 10 + profile.keys * i as u64 / count as u64;
        match rng.below(100) {
            0..=3 => w.sync(),
            4 => w.compact(),
            _ => w.write(random_write(rng, keys, profile.value_max)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checking an image.

/// What a reopened image recovered.
struct Recovered {
    /// The history prefix it equals.
    prefix: usize,
    data_loss_events: usize,
    /// Bytes of valid records the open reported it could not replay.
    lost_bytes: u64,
    /// The open refused the image as `Unreadable`, which `may_refuse` allowed.
    refused: bool,
}

fn diff(got: &Map, want: &Map) -> String {
    let mut lines = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => lines.push(format!("missing {k} = {v:?}")),
            Some(g) if g != v => lines.push(format!("{k}: got {g:?}, want {v:?}")),
            Some(_) => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            lines.push(format!("extra {k} = {v:?}"));
        }
    }
    lines.sort();
    let more = lines.len().saturating_sub(8);
    lines.truncate(8);
    if more > 0 {
        lines.push(format!("... and {more} more"));
    }
    lines.join("; ")
}

fn open_on(disk: &MemBackend, config: &Builder) -> crate::Result<KVStore> {
    KVStore::open_on(config.clone(), disk)
}

/// Opens `image` and checks that it holds the history after some prefix in `lo..=hi`.
fn check_image(
    image: &DiskImage,
    history: &History,
    lo: usize,
    hi: usize,
    config: &Builder,
) -> Result<Recovered, String> {
    check_image_or_refusal(image, history, lo, hi, config, false)
}

/// As `check_image`; with `may_refuse`, an `Unreadable` refusal is accepted too.
fn check_image_or_refusal(
    image: &DiskImage,
    history: &History,
    lo: usize,
    hi: usize,
    config: &Builder,
    may_refuse: bool,
) -> Result<Recovered, String> {
    let hi = hi.min(history.len());
    let disk = MemBackend::recording(image);
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open_on(&disk, config)));
    let store = match opened {
        Ok(Ok(store)) => store,
        Ok(Err(Error::Unreadable { .. })) if may_refuse => {
            return Ok(Recovered {
                prefix: 0,
                data_loss_events: 0,
                lost_bytes: 0,
                refused: true,
            });
        }
        Ok(Err(e)) => return Err(format!("open failed: {e}")),
        Err(_) => return Err("open panicked".into()),
    };
    let events: Vec<Event> = store.subscribe().try_iter().collect();
    let data_loss_events = events
        .iter()
        .filter(|e| matches!(e, Event::DataLoss { .. }))
        .count();
    let lost_bytes = events
        .iter()
        .map(|e| match e {
            Event::DataLoss { lost_bytes, .. } => *lost_bytes,
            _ => 0,
        })
        .sum();
    let got: Map = store.as_hashmap().into_iter().collect();
    let print = map_print(&got);
    // Fingerprints are sums of 64-bit hashes of the entries: equal fingerprints are taken
    // as equal states (the failure message compares the maps themselves).
    let found = (lo..=hi).rev().find(|&j| history.prints[j] == print);
    let Some(prefix) = found else {
        // The closest prefix, for the message.
        let nearest = (0..=history.len())
            .rev()
            .find(|&j| history.prints[j] == print);
        return Err(format!(
            "recovered state is not the history after {lo}..={hi} writes (of {}); it {}; \
             against the state after {hi}: {}; events at open: {events:?}",
            history.len(),
            match nearest {
                Some(j) => format!("equals the state after {j} writes"),
                None => "equals no prefix of the history".into(),
            },
            diff(&got, &history.state_at(hi)),
        ));
    };
    if let Err(e) = store.sync() {
        return Err(format!("the reopened store cannot sync: {e}"));
    }
    drop(store);
    Ok(Recovered {
        prefix,
        data_loss_events,
        lost_bytes,
        refused: false,
    })
}

/// Goes on from a recovered image: writes more (equal-sized records, which line up with
/// records left beyond a damaged spot; past the damage if the open reported some), closes
/// cleanly and reopens, which must give exactly the recovered state plus the new writes.
/// Catches recovery that leaves stale records where new ones will be appended.
fn afterlife(
    image: &DiskImage,
    history: &History,
    recovered: &Recovered,
    config: &Builder,
    rng: &mut Rng,
) -> Result<(), String> {
    let prefix = recovered.prefix;
    let disk = MemBackend::recording(image);
    let mut want = history.state_at(prefix);
    let mut print = 0;
    // A fixed-size record takes about 35 bytes: end anywhere up to where the records the open
    // could not replay end.
    let writes: Vec<Write> = (0..1 + rng.below(recovered.lost_bytes / 35 + 12))
        .map(|_| fixed_write(rng))
        .collect();
    {
        let store = open_on(&disk, config).map_err(|e| format!("afterlife open: {e}"))?;
        for w in &writes {
            let Write::Insert(k, v) = w else {
                unreachable!()
            };
            match store.insert(k.clone(), v.clone()) {
                Ok(_) => apply(&mut want, &mut print, w),
                Err(Error::Full { .. }) => {}
                Err(e) => return Err(format!("afterlife write: {e}")),
            }
        }
    }
    let store = open_on(&disk, config).map_err(|e| format!("afterlife reopen: {e}"))?;
    let got: Map = store.as_hashmap().into_iter().collect();
    if got != want {
        return Err(format!(
            "after recovering {prefix} writes, {} more and a clean close, reopening gave: {}",
            writes.len(),
            diff(&got, &want)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Power-loss images.

/// How the volatile pages of one power-loss image are resolved.
#[derive(Debug, Clone, Copy)]
enum Fates {
    /// Each page independently: whole, lost, or torn at a sector boundary.
    Independent,
    /// The kernel wrote pages back in a random order and the power went during one of them:
    /// the pages before it whole, that one torn, the rest lost.
    Ordered,
    /// As `Independent`, and some sectors hold garbage where they were being changed.
    Garbage,
}

fn torn(sectors: usize) -> [SectorFate; PAGE / SECTOR] {
    std::array::from_fn(|i| {
        if i < sectors {
            SectorFate::New
        } else {
            SectorFate::Old
        }
    })
}

fn power_loss(image: &DiskImage, rng: &mut Rng, fates: Fates) -> DiskImage {
    let sectors = PAGE / SECTOR;
    match fates {
        Fates::Independent | Fates::Garbage => image.power_loss(|_, _| match rng.below(10) {
            0..=3 => torn(sectors),
            4..=7 => torn(0),
            8 if matches!(fates, Fates::Garbage) => std::array::from_fn(|_| match rng.below(3) {
                0 => SectorFate::Old,
                1 => SectorFate::New,
                _ => SectorFate::Garbage {
                    seed: rng.next_u64(),
                    whole: false,
                },
            }),
            _ => torn(1 + rng.index(sectors - 1)),
        }),
        Fates::Ordered => {
            let mut pages = image.volatile_pages();
            for i in (1..pages.len()).rev() {
                pages.swap(i, rng.index(i + 1));
            }
            let cut = rng.index(pages.len() + 1);
            let order: HashMap<(Slot, usize), usize> =
                pages.iter().enumerate().map(|(i, &p)| (p, i)).collect();
            let torn_at = rng.index(sectors + 1);
            image.power_loss(|slot, page| match order[&(slot, page)].cmp(&cut) {
                std::cmp::Ordering::Less => torn(sectors),
                std::cmp::Ordering::Equal => torn(torn_at),
                std::cmp::Ordering::Greater => torn(0),
            })
        }
    }
}

/// A crash point worth sampling more often than its share: the operations around a header
/// write, a sync or a growth (where the protocol orders its steps).
fn interesting_points(ops: &[DiskOp]) -> Vec<usize> {
    ops.iter()
        .enumerate()
        .filter(|(_, op)| {
            matches!(
                op,
                DiskOp::Write { offset: 0, .. } | DiskOp::Sync { .. } | DiskOp::Grow { .. }
            )
        })
        .flat_map(|(i, _)| i.saturating_sub(2)..i + 3)
        .collect()
}

/// No committed header in either file, and a damaged one.
fn first_header_garbled(image: &DiskImage) -> bool {
    let headers = [Slot::A, Slot::B].map(|slot| format::decode_header(&image.file(slot).current));
    headers.contains(&format::HeaderRead::Invalid)
        && !headers.iter().any(
            |h| matches!(h, format::HeaderRead::Valid(h) if h.state == format::STATE_COMMITTED),
        )
}

fn describe_headers(image: &DiskImage) -> String {
    [Slot::A, Slot::B]
        .map(|slot| {
            let f = image.file(slot);
            format!(
                "{slot:?} ({} bytes): {:?} (durable {:?})",
                f.current.len(),
                format::decode_header(&f.current),
                format::decode_header(&f.durable)
            )
        })
        .join(", ")
}

fn describe_op(ops: &[DiskOp], n: usize) -> String {
    match ops.get(n) {
        None => "after the last operation".into(),
        Some(DiskOp::Write { slot, offset, data }) if *offset == 0 => {
            format!(
                "before header write to {slot:?}: {:?}",
                format::decode_header(data)
            )
        }
        Some(DiskOp::Write { slot, offset, data }) => {
            format!(
                "before write of {} bytes at {offset} of {slot:?}",
                data.len()
            )
        }
        Some(op) => format!("before {op:?}"),
    }
}

#[derive(Default, Debug)]
struct Counts {
    power_loss: usize,
    durable_only: usize,
    process: usize,
    afterlives: usize,
    /// Power-loss images that recovered fewer writes than were acknowledged.
    lost_unsynced: usize,
    /// Power-loss images refused as `Unreadable` (only allowed when the first header write
    /// was garbled before anything was acknowledged).
    refused: usize,
    data_loss_events: usize,
    failures: Vec<String>,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Records a failure: panics at once, unless `RKV_POWER_LOSS_KEEP_GOING` is set (then they are
/// collected and the test fails at the end with all of them).
fn fail(counts: &mut Counts, message: String) {
    if std::env::var_os("RKV_POWER_LOSS_KEEP_GOING").is_some() {
        eprintln!("FAILURE: {message}");
        counts.failures.push(message);
    } else {
        panic!("{message}");
    }
}

/// One seeded run: a chain of lives of one store, each ending in crashes.
fn run_chain(seed: u64, counts: &mut Counts) {
    let mut rng = Rng::new(seed);
    let profile = Profile::random(&mut rng);
    let config = profile.config();
    let jitter = [0, 4, 16, 64][rng.index(4)];
    let mut image = DiskImage::default();
    let mut history = History::new();
    let mut inherited = 0;
    let mut lineage = String::new();
    for life in 0..3 {
        let disk = MemBackend::recording(&image);
        disk.set_jitter(jitter);
        let store = open_on(&disk, &config).unwrap_or_else(|e| {
            panic!("seed {seed} life {life}: opening the chosen crash image failed: {e}")
        });
        let mut w = Writer {
            store: &store,
            disk: &disk,
            history: history.clone(),
            acks: Acks::new(history.len(), inherited),
            sync_mode: profile.durability == Durability::Sync,
        };
        // The open itself may have recovered fewer writes than the history holds: that was
        // checked when the image was chosen (`history` is already cut to it).
        random_life(
            &mut w,
            &mut rng,
            &profile,
            if life == 0 { 300 } else { 150 },
        );
        let (history_now, mut acks) = (w.history, w.acks);
        drop(store);
        // A clean close syncs everything.
        let closed_at = disk.ops_done();
        acks.syncs.push((history_now.len(), closed_at));

        let ops = disk.ops();
        let interesting = interesting_points(&ops);
        let mut points: Vec<usize> = (0..8)
            .map(|i| {
                if i % 2 == 0 || interesting.is_empty() {
                    rng.index(ops.len() + 1)
                } else {
                    interesting[rng.index(interesting.len())].min(ops.len())
                }
            })
            .collect();
        points.sort_unstable();
        let images = disk.images_at(&points);
        let mut next = None;
        for (&n, image_n) in points.iter().zip(&images) {
            let acked = acks.acked(n);
            let required = acks.required(n);
            let context = |kind: &str| {
                format!(
                    "seed {seed} life {life} ({profile:?}, jitter {jitter}{lineage}): {kind} \
                     at operation {n} of {} ({}): acknowledged {acked}, required {required}; \
                     headers {}",
                    ops.len(),
                    describe_op(&ops, n),
                    describe_headers(image_n)
                )
            };
            // Power loss, resolved at random.
            let fates = [Fates::Independent, Fates::Ordered, Fates::Garbage][rng.index(3)];
            let lost = power_loss(image_n, &mut rng, fates);
            counts.power_loss += 1;
            // The one refusal allowed: nothing acknowledged yet and the first header garbled
            // as it was written. A damaged header with no committed journal anywhere is
            // `Unreadable` by the opening rules (docs/format.md), never taken for a new store.
            let may_refuse = acked == 0 && first_header_garbled(&lost);
            match check_image_or_refusal(
                &lost,
                &history_now,
                required,
                acked + 1,
                &config,
                may_refuse,
            ) {
                Ok(r) if r.refused => counts.refused += 1,
                Ok(r) => {
                    counts.data_loss_events += r.data_loss_events;
                    if r.prefix < acked {
                        counts.lost_unsynced += 1;
                    }
                    counts.afterlives += 1;
                    if let Err(e) = afterlife(&lost, &history_now, &r, &config, &mut rng) {
                        fail(
                            counts,
                            format!(
                                "{}: {e}",
                                context(&format!("power loss ({fates:?}), afterlife"))
                            ),
                        );
                    }
                    if next.is_none() || rng.chance(30) {
                        let how = format!("power loss ({fates:?}) at {n}, recovered {}", r.prefix);
                        next = Some((lost, r.prefix, r.prefix, how));
                    }
                }
                Err(e) => fail(
                    counts,
                    format!("{}: {e}", context(&format!("power loss ({fates:?})"))),
                ),
            }
            // Power loss where nothing volatile reached the disk.
            counts.durable_only += 1;
            if let Err(e) = check_image(
                &image_n.durable_only(),
                &history_now,
                required,
                acked + 1,
                &config,
            ) {
                fail(
                    counts,
                    format!("{}: {e}", context("power loss (durable only)")),
                );
            }
            // Process crash: the page cache survives.
            counts.process += 1;
            let crashed = image_n.process_crash();
            match check_image(&crashed, &history_now, acked, acked + 1, &config) {
                Ok(r) => {
                    if rng.chance(30) {
                        let how = format!("process crash at {n}, recovered {}", r.prefix);
                        next = Some((crashed, r.prefix, required.min(r.prefix), how));
                    }
                }
                Err(e) => fail(counts, format!("{}: {e}", context("process crash"))),
            }
        }
        let Some((chosen, prefix, durable, how)) = next else {
            return;
        };
        lineage.push_str(&format!("; life {life} ended in {how}"));
        image = chosen;
        history = history_now;
        history.truncate(prefix);
        inherited = durable;
    }
}

#[test]
fn power_loss_images_recover_a_prefix_holding_every_synced_write() {
    let runs = env_u64("RKV_POWER_LOSS_RUNS").unwrap_or(DEFAULT_RUNS);
    let first = env_u64("RKV_POWER_LOSS_SEED").unwrap_or(1);
    let started = Instant::now();
    let mut counts = Counts::default();
    for seed in first..first + runs {
        run_chain(seed, &mut counts);
    }
    println!(
        "power loss: {runs} seeded runs from seed {first}: {} power-loss images ({} lost \
         unsynced writes, {} data-loss events at open, {} refused with a garbled first \
         header), {} durable-only images, {} process-crash images, {} afterlives, in {:.1?}",
        counts.power_loss,
        counts.lost_unsynced,
        counts.data_loss_events,
        counts.refused,
        counts.durable_only,
        counts.process,
        counts.afterlives,
        started.elapsed()
    );
    if let Some(first) = counts.failures.first() {
        panic!("{} failures, first: {first}", counts.failures.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Regression tests: one per bug these harnesses found, each named after it.

fn tiny() -> Builder {
    Builder::new(Path::new("mem")).buffer_size(16 * 1024)
}

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
        while disk.held() < 1 {
            std::thread::yield_now();
        }
        // Past the compaction's start: one write made durable in the old journal, one not.
        store.insert("synced".into(), Value::Integer(1)).unwrap();
        store.sync().unwrap();
        store.insert("promised".into(), Value::Integer(2)).unwrap();
        disk.release();
        // The compaction copies both under the lock, flushes them (the first was promised),
        // swaps, and waits again just before flushing the new COMMITTED header.
        while disk.held() < 2 {
            std::thread::yield_now();
        }
        let sync = scope.spawn(|| {
            store.sync().unwrap();
            disk.ops_done()
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
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

// ---------------------------------------------------------------------------------------------
// Named crash points: every storage operation of one step of the protocol.

/// A recorded run of one step of the protocol, with the writes around it.
struct Scenario {
    disk: MemBackend,
    history: History,
    acks: Acks,
    config: Builder,
    /// The operations of the step under test (crash points `step.start..=step.end`).
    step: std::ops::Range<usize>,
}

/// A recording disk with a store open on it.
fn recorded(config: &Builder) -> (MemBackend, KVStore) {
    let disk = MemBackend::recording(&DiskImage::default());
    let store = open_on(&disk, config).unwrap();
    (disk, store)
}

impl<'a> Writer<'a> {
    fn new(store: &'a KVStore, disk: &'a MemBackend) -> Self {
        Writer {
            store,
            disk,
            history: History::new(),
            acks: Acks::new(0, 0),
            sync_mode: false,
        }
    }

    fn ops_done(&self) -> usize {
        self.disk.ops_done()
    }

    /// The scenario these writes make, with `step` under test.
    fn scenario(self, config: Builder, step: std::ops::Range<usize>) -> Scenario {
        Scenario {
            disk: self.disk.clone(),
            history: self.history,
            acks: self.acks,
            config,
            step,
        }
    }
}

/// Crashes `scenario` at every operation of its step: a process crash (everything written
/// survives: exactly the acknowledged writes, or those and the one in flight), the same with
/// the write in flight cut short, and a power loss where only durable data survives.
fn crash_at_every_op(name: &str, s: &Scenario) {
    let started = Instant::now();
    let ops = s.disk.ops();
    let points: Vec<usize> = (s.step.start..=s.step.end.min(ops.len())).collect();
    assert!(
        points.len() > 1,
        "{name}: the step performed no storage operation"
    );
    let (mut process, mut cut_short, mut power) = (0, 0, 0);
    s.disk.each_image(&points, |n, image| {
        let acked = s.acks.acked(n);
        let required = s.acks.required(n);
        let check = |kind: &str, image: &DiskImage, lo: usize| {
            if let Err(e) = check_image(image, &s.history, lo, acked + 1, &s.config) {
                panic!(
                    "{name}: {kind} at operation {n} ({}; operations {:?} are the step): \
                     acknowledged {acked}, required {required}; headers {}: {e}",
                    describe_op(&ops, n),
                    s.step,
                    describe_headers(image)
                );
            }
        };
        check("process crash", &image.process_crash(), acked);
        process += 1;
        // A write cut short matters where it is all of a record's validity: a frame (the
        // body before it is inert without it) or a header.
        if let Some(DiskOp::Write { slot, offset, data }) = ops.get(n).filter(|op| {
            matches!(op, DiskOp::Write { offset: 0, .. })
                || matches!(op, DiskOp::Write { data, .. } if data.len() == FRAME_SIZE)
        }) {
            let mut cuts = vec![1, data.len() / 2, data.len().saturating_sub(1)];
            cuts.retain(|&c| c > 0 && c < data.len());
            cuts.dedup();
            for cut in cuts {
                let mut torn = image.clone();
                torn.apply(&DiskOp::Write {
                    slot: *slot,
                    offset: *offset,
                    data: data[..cut].into(),
                });
                check(
                    &format!("process crash with {cut} bytes of the write"),
                    &torn,
                    acked,
                );
                cut_short += 1;
            }
        }
        check(
            "power loss (durable data only)",
            &image.durable_only(),
            required,
        );
        power += 1;
    });
    println!(
        "{name}: crashed at each of the {} storage operations of the step ({}..={}): {process} \
         process-crash images, {cut_short} more with the write in flight cut short, {power} \
         power-loss images, in {:.1?}",
        points.len(),
        s.step.start,
        s.step.end,
        started.elapsed()
    );
}

fn small_writes(w: &mut Writer<'_>, keys: std::ops::Range<usize>, round: usize) {
    for i in keys {
        w.write(Write::Insert(
            format!("k{i:04}"),
            Value::from(format!("{round}-{}", "x".repeat(i % 7))),
        ));
    }
}

#[test]
fn crash_at_every_op_of_creating_a_store() {
    let disk = MemBackend::recording(&DiskImage::default());
    drop(open_on(&disk, &tiny()).unwrap());
    let s = Scenario {
        step: 0..disk.ops_done(),
        disk,
        history: History::new(),
        acks: Acks::new(0, 0),
        config: tiny(),
    };
    crash_at_every_op("creating a store", &s);
}

/// Steps 1 to 5 of a compaction started by `compact()`, with a writer appending all along:
/// the compaction is held at its first write until more than the 16 KiB the catch-up copies
/// under the lock have piled up, so it also copies records outside the lock.
#[test]
fn crash_at_every_op_of_a_compaction() {
    let config = Builder::new(Path::new("mem"))
        .buffer_size(64 * 1024)
        .max_size(64 * 1024);
    let (disk, store) = recorded(&config);
    let mut w = Writer::new(&store, &disk);
    small_writes(&mut w, 0..300, 1);
    w.sync();
    small_writes(&mut w, 0..20, 2);
    let live = store.len();
    let start = w.ops_done();
    let inactive = inactive_slot(&disk);
    let done = std::sync::atomic::AtomicBool::new(false);
    let big = |w: &mut Writer<'_>, round: usize| {
        w.write(Write::Insert(
            format!("big{}", round % 8),
            Value::from(format!("{round:0>1000}")),
        ));
    };
    disk.pause_when(Some(Box::new(move |op| op.slot() == inactive)));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            store.compact().unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        // The compactor took its snapshot and waits at its first write.
        while disk.held() == 0 {
            std::thread::yield_now();
        }
        for round in 0..20 {
            big(&mut w, round);
        }
        disk.pause_when(None);
        let mut round = 20;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            big(&mut w, round);
            round += 1;
        }
    });
    small_writes(&mut w, 0..5, 0);
    let s = w.scenario(config, start..disk.ops_done());
    drop(store);
    let ops = s.disk.ops();
    let records_before_flush = ops[start..]
        .iter()
        .filter(|op| op.slot() == inactive)
        .take_while(|op| !matches!(op, DiskOp::Flush { offset, .. } if *offset > 0))
        .filter(|op| matches!(op, DiskOp::Write { offset, .. } if *offset > 0))
        .count()
        / 2;
    assert!(
        records_before_flush > live + 16,
        "the catch-up copied {} records outside the lock",
        records_before_flush - live
    );
    crash_at_every_op(
        &format!(
            "a compaction (compact() with a concurrent writer; {} records copied outside the \
             lock)",
            records_before_flush - live
        ),
        &s,
    );
}

/// The slot whose header is not the newest committed one.
fn inactive_slot(disk: &MemBackend) -> Slot {
    let committed = |slot| match format::decode_header(&disk.file(slot).lock()) {
        format::HeaderRead::Valid(h) if h.state == format::STATE_COMMITTED => h.generation,
        _ => 0,
    };
    if committed(Slot::A) >= committed(Slot::B) {
        Slot::B
    } else {
        Slot::A
    }
}

/// The swap of an automatic compaction started by writes past the high-water mark, including
/// the writes that go on meanwhile and right after it.
#[test]
fn crash_at_every_op_of_the_swap_after_writes_past_the_high_water_mark() {
    let (disk, store) = recorded(&tiny());
    let mut w = Writer::new(&store, &disk);
    small_writes(&mut w, 0..40, 1);
    w.sync();
    let hwm = (16 * 1024) * 8 / 10;
    let mut round = 2;
    while store.stats().active_used < (hwm - 2048) as u64 {
        small_writes(&mut w, 0..10, round);
        round += 1;
    }
    let start = w.ops_done();
    while store.stats().compactions == 0 {
        small_writes(&mut w, 0..10, round);
        round += 1;
    }
    small_writes(&mut w, 0..20, round);
    let s = w.scenario(tiny(), start..disk.ops_done());
    drop(store);
    crash_at_every_op("the swap after writes past the high-water mark", &s);
}

/// A compaction that grows the journals (the live data no longer fits comfortably), up to
/// `max_size`, with writers blocked on a full journal (high-water mark 1.0: nothing starts a
/// compaction before a write does not fit).
#[test]
fn crash_at_every_op_of_a_growth() {
    let config = Builder::new(Path::new("mem"))
        .buffer_size(16 * 1024)
        .max_size(64 * 1024)
        .high_water_mark(1.0);
    let (disk, store) = recorded(&config);
    let mut w = Writer::new(&store, &disk);
    let big = |w: &mut Writer<'_>, keys: std::ops::Range<usize>| {
        for i in keys {
            w.write(Write::Insert(
                format!("g{i:03}"),
                Value::from(format!("{i:0>200}")),
            ));
        }
    };
    big(&mut w, 0..20);
    w.sync();
    small_writes(&mut w, 0..10, 1);
    let start = w.ops_done();
    let mut next = 20;
    let grown = |s: crate::Stats| s.active_capacity.min(s.inactive_capacity) >= 64 * 1024;
    while !grown(store.stats()) {
        assert!(next < 300, "the journals never grew: {:?}", store.stats());
        big(&mut w, next..next + 5);
        next += 5;
    }
    small_writes(&mut w, 0..10, 2);
    let s = w.scenario(config, start..disk.ops_done());
    drop(store);
    let grows = s.disk.ops()[s.step.clone()]
        .iter()
        .filter(|op| matches!(op, DiskOp::Grow { .. }))
        .count();
    assert!(grows >= 2, "both journals grow");
    crash_at_every_op("a growth to max_size", &s);
}

/// `clear()` and the compaction it starts.
#[test]
fn crash_at_every_op_of_a_clear() {
    let (disk, store) = recorded(&tiny());
    let mut w = Writer::new(&store, &disk);
    small_writes(&mut w, 0..60, 1);
    w.sync();
    small_writes(&mut w, 0..10, 2);
    let start = w.ops_done();
    w.write(Write::Clear);
    w.compact();
    small_writes(&mut w, 0..10, 3);
    let s = w.scenario(tiny(), start..disk.ops_done());
    drop(store);
    crash_at_every_op("a clear", &s);
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
