//! The workloads W1..W5, run by a child process for one peer in one mode, and the line format
//! in which the child reports each result to the parent.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::peers::{Mode, Peer, Store};
use crate::{Result, sys};

/// Fixed seed of every random sequence.
const SEED: u64 = 0x5EED_2026_0005;

/// Length of every value, in bytes.
pub const VALUE_LEN: usize = 32;

/// How many operations each workload does, and how long a timed loop may run at most.
#[derive(Debug, Clone)]
pub struct Counts {
    /// W1 in mode (a): new keys inserted.
    pub w1_a: usize,
    /// W1 in mode (b).
    pub w1_b: usize,
    /// W2: keys overwritten (and W5's key space).
    pub w2_keys: usize,
    /// W2 in mode (a): random overwrites.
    pub w2_a: usize,
    /// W2 in mode (b).
    pub w2_b: usize,
    /// W3: random gets in all, split over the threads.
    pub w3: usize,
    /// W5: writer threads.
    pub w5_threads: usize,
    /// W5: writes per thread.
    pub w5_per_thread: usize,
    /// Longest a timed write loop in mode (a) may run; the ops done by then are reported.
    pub cap_a: Duration,
    /// The same in mode (b).
    pub cap_b: Duration,
    /// Longest a W3 read loop may run.
    pub cap_read: Duration,
}

impl Counts {
    /// The counts of the issue.
    pub fn full() -> Counts {
        Counts {
            w1_a: 100_000,
            w1_b: 10_000,
            w2_keys: 10_000,
            w2_a: 1_000_000,
            w2_b: 10_000,
            w3: 1_000_000,
            w5_threads: 4,
            w5_per_thread: 2_500,
            cap_a: Duration::from_secs(6),
            cap_b: Duration::from_secs(4),
            cap_read: Duration::from_secs(3),
        }
    }

    /// Small counts for a smoke run that takes seconds.
    pub fn quick() -> Counts {
        Counts {
            w1_a: 2_000,
            w1_b: 40,
            w2_keys: 500,
            w2_a: 5_000,
            w2_b: 40,
            w3: 20_000,
            w5_threads: 4,
            w5_per_thread: 10,
            cap_a: Duration::from_secs(2),
            cap_b: Duration::from_secs(1),
            cap_read: Duration::from_secs(1),
        }
    }
}

/// Everything one child process needs to know.
#[derive(Debug, Clone)]
pub struct Session {
    /// The store.
    pub peer: Peer,
    /// The durability mode.
    pub mode: Mode,
    /// Whether a thread spins on the other core throughout (mmkv, item 6 of the issue).
    pub busy: bool,
    /// Whether this is a `--quick` run.
    pub quick: bool,
    /// Directory for this session's stores; emptied before and after.
    pub dir: PathBuf,
}

impl Session {
    /// The counts this session runs with.
    pub fn counts(&self) -> Counts {
        if self.quick {
            Counts::quick()
        } else {
            Counts::full()
        }
    }

    /// Whether this session measures reads (W3) and reopening (W4). They do not depend on
    /// the write mode, so they run once per peer: in mode (a), or for redb in its reference
    /// session (mode (a) slot), whose store is built like the others.
    pub fn measures_reads(&self) -> bool {
        self.mode == Mode::Process && !self.busy && self.peer.measures_reads()
    }
}

/// One measured result, as sent from the child to the parent: a workload name and named
/// numbers.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// `W1`, `W2`, `W3x1`, `W3x2`, `W4w1`, `W4w2` or `W5`.
    pub workload: String,
    /// Named figures: `n`, `ns`, `p50`, `p99`, `p999`, `max` (nanoseconds), `capped`,
    /// `mem_kib`, `disk`, `apparent`.
    pub values: BTreeMap<String, f64>,
}

impl Record {
    fn new(workload: &str) -> Record {
        Record {
            workload: workload.to_string(),
            values: BTreeMap::new(),
        }
    }

    fn set(&mut self, key: &str, value: f64) -> &mut Record {
        self.values.insert(key.to_string(), value);
        self
    }

    /// A figure, if present.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }

    /// The line the child prints: `@@ W1 n=100000 ns=...`.
    pub fn to_line(&self) -> String {
        let mut line = format!("@@ {}", self.workload);
        for (k, v) in &self.values {
            let _ = write!(line, " {k}={v}");
        }
        line
    }

    /// Parses a line printed by [`to_line`](Self::to_line); other lines give `None`.
    pub fn parse(line: &str) -> Option<Record> {
        let mut fields = line.strip_prefix("@@ ")?.split_whitespace();
        let mut record = Record::new(fields.next()?);
        for field in fields {
            let (k, v) = field.split_once('=')?;
            record.set(k, v.parse().ok()?);
        }
        Some(record)
    }
}

/// splitmix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn new(stream: u64) -> Rng {
        Rng(SEED ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

/// The keys `key_000000`, `key_000001`, ... and a pool of distinct 32-byte values, made before
/// any timing starts.
struct Data {
    keys: Vec<String>,
    values: Vec<String>,
}

impl Data {
    fn new(keys: usize) -> Data {
        let mut rng = Rng::new(1);
        let values = (0..256)
            .map(|_| {
                (0..VALUE_LEN)
                    .map(|_| char::from(b'a' + rng.below(26) as u8))
                    .collect()
            })
            .collect();
        Data {
            keys: (0..keys).map(|i| format!("key_{i:06}")).collect(),
            values,
        }
    }
}

/// One write: indexes into [`Data::keys`] and [`Data::values`].
#[derive(Clone, Copy)]
struct Op {
    key: u32,
    value: u16,
}

/// `n` writes over `keys` keys: every key once in shuffled order when `n == keys` and
/// `fresh`, else uniformly random keys.
fn write_ops(stream: u64, keys: usize, n: usize, fresh: bool) -> Vec<Op> {
    let mut rng = Rng::new(stream);
    let mut ops: Vec<Op> = if fresh {
        (0..keys as u32)
            .map(|key| Op {
                key,
                value: rng.below(256) as u16,
            })
            .collect()
    } else {
        (0..n)
            .map(|_| Op {
                key: rng.below(keys) as u32,
                value: rng.below(256) as u16,
            })
            .collect()
    };
    if fresh {
        for i in (1..ops.len()).rev() {
            ops.swap(i, rng.below(i + 1));
        }
        ops.truncate(n);
    }
    ops
}

/// What a timed write loop measured.
struct Writes {
    done: usize,
    elapsed: Duration,
    latencies: Vec<u32>,
    capped: bool,
}

/// Runs `ops` against `store`, timing each write, until done or `cap` has passed.
/// `latencies` must hold one slot per op; it is allocated (and touched) by the caller so that
/// it does not count in the store's memory.
fn timed_writes(
    store: &dyn Store,
    data: &Data,
    ops: &[Op],
    mut latencies: Vec<u32>,
    cap: Duration,
) -> Result<Writes> {
    latencies.resize(ops.len(), u32::MAX);
    let start = Instant::now();
    let mut done = 0;
    let mut capped = false;
    for (op, slot) in ops.iter().zip(latencies.iter_mut()) {
        let t0 = Instant::now();
        if t0 - start > cap {
            capped = true;
            break;
        }
        store.put(&data.keys[op.key as usize], &data.values[op.value as usize])?;
        *slot = u32::try_from(t0.elapsed().as_nanos()).unwrap_or(u32::MAX);
        done += 1;
    }
    let elapsed = start.elapsed();
    latencies.truncate(done);
    Ok(Writes {
        done,
        elapsed,
        latencies,
        capped,
    })
}

/// Fills `record` with ops/s inputs and latency percentiles.
fn latency_record(record: &mut Record, done: usize, elapsed: Duration, lat: &mut [u32]) {
    lat.sort_unstable();
    let pick = |q: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
        f64::from(lat[i])
    };
    record
        .set("n", done as f64)
        .set("ns", elapsed.as_nanos() as f64)
        .set("p50", pick(0.50))
        .set("p99", pick(0.99))
        .set("p999", pick(0.999))
        .set("max", lat.last().map_or(f64::NAN, |&m| f64::from(m)));
}

/// Memory figures around one workload: resident memory before it, then the peak during it.
struct MemProbe {
    before_kib: u64,
}

impl MemProbe {
    fn start() -> MemProbe {
        sys::reset_peak();
        MemProbe {
            before_kib: sys::rss_kib(),
        }
    }

    /// Records the peak RSS since [`start`](Self::start) (`mem_kib`) and its growth over the
    /// RSS then (`mem_growth_kib`).
    fn finish(&self, record: &mut Record) {
        let peak = sys::peak_rss_kib();
        record.set("mem_kib", peak as f64).set(
            "mem_growth_kib",
            peak.saturating_sub(self.before_kib) as f64,
        );
    }
}

/// Spins on a core until dropped: the "other core busy" condition.
struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    fn start() -> Spinner {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        Spinner {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs every workload this session measures and returns the results.
pub fn run(session: &Session) -> Result<Vec<Record>> {
    let counts = session.counts();
    let _ = std::fs::remove_dir_all(&session.dir);
    let result = run_in(session, &counts);
    let _ = std::fs::remove_dir_all(&session.dir);
    result
}

fn run_in(session: &Session, counts: &Counts) -> Result<Vec<Record>> {
    let peer = session.peer;
    let mode = session.mode;
    let (w1_n, w2_n, cap) = match mode {
        Mode::Process => (counts.w1_a, counts.w2_a, counts.cap_a),
        Mode::Power => (counts.w1_b, counts.w2_b, counts.cap_b),
    };
    let reads = session.measures_reads();
    // The store read by W3 and reopened by W4 always holds W1's full key count.
    let w1_keys = if reads { counts.w1_a } else { w1_n };
    let data = Data::new(w1_keys.max(counts.w2_keys));
    let mut records = Vec::new();
    // The other core is kept busy during the timed write loops only.
    let spin = || session.busy.then(Spinner::start);

    // W1: insert new keys.
    let dir1 = session.dir.join("w1");
    let ops = write_ops(11, w1_keys, w1_keys, true);
    let latencies = vec![u32::MAX; ops.len()];
    let w1_probe = MemProbe::start();
    let mut store = peer.open(&dir1, mode)?;
    if peer.measures_writes() {
        let spinner = spin();
        let mut w = timed_writes(&*store, &data, &ops, latencies, cap)?;
        drop(spinner);
        store.finish()?;
        let mut record = Record::new("W1");
        latency_record(&mut record, w.done, w.elapsed, &mut w.latencies);
        record.set("capped", f64::from(u8::from(w.capped)));
        if w.done < ops.len() && reads {
            // Capped: load the rest untimed, so W3 and W4 see the same store everywhere.
            let rest = &ops[w.done..];
            store.preload(&mut rest.iter().map(|op| {
                (
                    data.keys[op.key as usize].as_str(),
                    data.values[op.value as usize].as_str(),
                )
            }))?;
        }
        w1_probe.finish(&mut record);
        records.push(record);
    } else {
        store.preload(&mut ops.iter().map(|op| {
            (
                data.keys[op.key as usize].as_str(),
                data.values[op.value as usize].as_str(),
            )
        }))?;
    }
    let expected: Vec<u16> = {
        let mut v = vec![u16::MAX; w1_keys];
        for op in &ops {
            v[op.key as usize] = op.value;
        }
        v
    };

    // Disk use after W1, measured once the store is closed.
    let mut w1_disk = None;
    if reads {
        // Memory while reading: from before the reopen (or before the store was built, for
        // the HashMap) to the end of W3.
        let read_probe;
        // W4 after W1: close, reopen, first get.
        if peer.measures_reopen() {
            store.close()?;
            w1_disk = Some(sys::disk_usage(&dir1));
            read_probe = MemProbe::start();
            let t0 = Instant::now();
            store = peer.open(&dir1, mode)?;
            let first = store.reader()?.get_len(&data.keys[0])?;
            let elapsed = t0.elapsed();
            if first != Some(VALUE_LEN) {
                return Err(format!("{}: key_000000 missing after reopen", peer.id()).into());
            }
            let mut record = Record::new("W4w1");
            record.set("ns", elapsed.as_nanos() as f64);
            read_probe.finish(&mut record);
            records.push(record);
        } else {
            read_probe = w1_probe;
        }
        // Every key holds what W1 wrote (also warms the caches equally for every peer).
        {
            let mut reader = store.reader()?;
            for (i, key) in data.keys[..w1_keys].iter().enumerate() {
                let want = &data.values[expected[i] as usize];
                match reader.get_bytes(key)? {
                    Some(v) if v == want.as_bytes() => {}
                    other => {
                        return Err(format!(
                            "{}: {key} reads {:?} after W1, not {want}",
                            peer.id(),
                            other.map(|v| String::from_utf8_lossy(&v).into_owned())
                        )
                        .into());
                    }
                }
            }
        }
        // W3: random gets with 1 and 2 threads.
        for threads in [1, 2] {
            let (n, elapsed, capped) =
                timed_reads(&*store, &data, w1_keys, counts.w3, threads, counts.cap_read)?;
            let mut record = Record::new(&format!("W3x{threads}"));
            record
                .set("n", n as f64)
                .set("ns", elapsed.as_nanos() as f64)
                .set("capped", f64::from(u8::from(capped)));
            read_probe.finish(&mut record);
            records.push(record);
        }
    }
    store.close()?;
    if !peer.measures_writes() {
        return Ok(records);
    }
    let (disk, apparent) = w1_disk.unwrap_or_else(|| sys::disk_usage(&dir1));
    if let Some(w1) = records.iter_mut().find(|r| r.workload == "W1") {
        w1.set("disk", disk as f64).set("apparent", apparent as f64);
    }
    let _ = std::fs::remove_dir_all(&dir1);

    // W2: overwrites of a preloaded key set.
    let dir2 = session.dir.join("w2");
    let keys = counts.w2_keys;
    let ops = write_ops(22, keys, w2_n, false);
    let latencies = vec![u32::MAX; ops.len()];
    let probe = MemProbe::start();
    let store = peer.open(&dir2, mode)?;
    store.preload(
        &mut data.keys[..keys]
            .iter()
            .map(|k| (k.as_str(), data.values[0].as_str())),
    )?;
    let spinner = spin();
    let mut w = timed_writes(&*store, &data, &ops, latencies, cap)?;
    drop(spinner);
    store.finish()?;
    let mut record = Record::new("W2");
    latency_record(&mut record, w.done, w.elapsed, &mut w.latencies);
    record.set("capped", f64::from(u8::from(w.capped)));
    probe.finish(&mut record);
    let mut expected = vec![0u16; keys];
    for op in &ops[..w.done] {
        expected[op.key as usize] = op.value;
    }
    store.close()?;
    let (disk, apparent) = sys::disk_usage(&dir2);
    record
        .set("disk", disk as f64)
        .set("apparent", apparent as f64);
    records.push(record);

    // W4 after W2, and a check of the last values written.
    if peer.measures_reopen() {
        let t0 = Instant::now();
        let store = peer.open(&dir2, mode)?;
        let first = store.reader()?.get_len(&data.keys[0])?;
        let elapsed = t0.elapsed();
        if first != Some(VALUE_LEN) {
            return Err(format!("{}: key_000000 missing after reopen (W2)", peer.id()).into());
        }
        if reads {
            let mut record = Record::new("W4w2");
            record.set("ns", elapsed.as_nanos() as f64);
            records.push(record);
        }
        check_values(&*store, &data, &expected, "W2")?;

        // W5: concurrent writers in mode (b).
        if mode == Mode::Power {
            let probe = MemProbe::start();
            let (mut record, expected) = concurrent_writes(&*store, &data, counts, cap)?;
            probe.finish(&mut record);
            check_any_of(&*store, &data, &expected)?;
            records.push(record);
        }
        store.close()?;
    } else if mode == Mode::Power {
        let store = peer.open(&session.dir.join("w5"), mode)?;
        let probe = MemProbe::start();
        let (mut record, _) = concurrent_writes(&*store, &data, counts, cap)?;
        probe.finish(&mut record);
        records.push(record);
        store.close()?;
    }
    Ok(records)
}

/// Checks that every key holds the value `expected` says (an index into the value pool).
fn check_values(store: &dyn Store, data: &Data, expected: &[u16], after: &str) -> Result<()> {
    let mut reader = store.reader()?;
    for (key, &value) in data.keys.iter().zip(expected) {
        let want = data.values[value as usize].as_bytes();
        if reader.get_bytes(key)?.as_deref() != Some(want) {
            return Err(format!("{key} does not hold its last value after {after}").into());
        }
    }
    Ok(())
}

/// After concurrent writers: every key holds one of the values written to it last by some
/// thread (or its earlier value when no thread wrote it).
fn check_any_of(store: &dyn Store, data: &Data, expected: &[Vec<u16>]) -> Result<()> {
    let mut reader = store.reader()?;
    for (key, allowed) in data.keys.iter().zip(expected) {
        if allowed.is_empty() {
            continue;
        }
        let got = reader.get_bytes(key)?;
        let ok = allowed
            .iter()
            .any(|&v| got.as_deref() == Some(data.values[v as usize].as_bytes()));
        if !ok {
            return Err(format!("{key} holds no value a W5 writer left in it").into());
        }
    }
    Ok(())
}

/// W3: `total` random gets over the first `keys` keys, split over `threads` threads that
/// start together, each stopping early once `cap` has passed. Returns the gets done, the wall
/// time and whether the cap cut the loop short.
fn timed_reads(
    store: &dyn Store,
    data: &Data,
    keys: usize,
    total: usize,
    threads: usize,
    cap: Duration,
) -> Result<(usize, Duration, bool)> {
    let per_thread = total / threads;
    let barrier = Barrier::new(threads);
    // Each thread notes its own start and end: the wall time runs from the first start to
    // the last end, whatever the scheduler does to the thread that spawned them.
    std::thread::scope(|scope| -> Result<(usize, Duration, bool)> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || -> Result<(usize, Instant, Instant)> {
                    let mut rng = Rng::new(300 + t as u64);
                    let picks: Vec<u32> = (0..per_thread).map(|_| rng.below(keys) as u32).collect();
                    let mut reader = store.reader()?;
                    barrier.wait();
                    let start = Instant::now();
                    let mut done = 0usize;
                    for chunk in picks.chunks(1024) {
                        for &k in chunk {
                            match reader.get_len(&data.keys[k as usize])? {
                                Some(len) if black_box(len) == VALUE_LEN => {}
                                other => {
                                    return Err(format!(
                                        "{} reads {other:?} bytes",
                                        data.keys[k as usize]
                                    )
                                    .into());
                                }
                            }
                        }
                        done += chunk.len();
                        if start.elapsed() > cap {
                            break;
                        }
                    }
                    Ok((done, start, Instant::now()))
                })
            })
            .collect();
        let mut done = 0;
        let mut span: Option<(Instant, Instant)> = None;
        for h in handles {
            let (d, start, end) = h.join().map_err(|_| "reader thread panicked")??;
            done += d;
            span = Some(span.map_or((start, end), |(s, e)| (s.min(start), e.max(end))));
        }
        let (start, end) = span.ok_or("no reader thread")?;
        Ok((done, end - start, done < per_thread * threads))
    })
}

/// W5: `w5_threads` threads each doing `w5_per_thread` random overwrites, all starting
/// together. Returns the record and, per key, the values some thread wrote to it last.
fn concurrent_writes(
    store: &dyn Store,
    data: &Data,
    counts: &Counts,
    cap: Duration,
) -> Result<(Record, Vec<Vec<u16>>)> {
    let threads = counts.w5_threads;
    let barrier = Barrier::new(threads);
    let (results, elapsed) = std::thread::scope(|scope| -> Result<_> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || -> Result<(Writes, Vec<Op>, Instant)> {
                    let ops =
                        write_ops(500 + t as u64, counts.w2_keys, counts.w5_per_thread, false);
                    let latencies = vec![u32::MAX; ops.len()];
                    barrier.wait();
                    let start = Instant::now();
                    let w = timed_writes(store, data, &ops, latencies, cap)?;
                    Ok((w, ops, start))
                })
            })
            .collect();
        let mut results = Vec::new();
        let mut span: Option<(Instant, Instant)> = None;
        for h in handles {
            let (w, ops, start) = h.join().map_err(|_| "writer thread panicked")??;
            let end = start + w.elapsed;
            span = Some(span.map_or((start, end), |(s, e)| (s.min(start), e.max(end))));
            results.push((w, ops));
        }
        let (start, end) = span.ok_or("no writer thread")?;
        Ok((results, end - start))
    })?;
    let mut record = Record::new("W5");
    let mut all: Vec<u32> = Vec::new();
    let mut done = 0;
    let mut capped = false;
    let mut expected = vec![Vec::new(); counts.w2_keys];
    for (w, ops) in &results {
        done += w.done;
        capped |= w.capped;
        all.extend_from_slice(&w.latencies);
        let mut last = vec![None; counts.w2_keys];
        for op in &ops[..w.done] {
            last[op.key as usize] = Some(op.value);
        }
        for (slot, v) in expected.iter_mut().zip(last) {
            slot.extend(v);
        }
    }
    latency_record(&mut record, done, elapsed, &mut all);
    record
        .set("capped", f64::from(u8::from(capped)))
        .set("threads", threads as f64);
    Ok((record, expected))
}

/// Measures what one `Instant::now()` costs here, in nanoseconds: every timed write pays two.
pub fn clock_cost_ns() -> f64 {
    let n = 1_000_000u32;
    let start = Instant::now();
    for _ in 0..n {
        black_box(Instant::now());
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

/// The directory of one session's stores under `data`.
pub fn session_dir(data: &Path, peer: Peer, mode: Mode, busy: bool) -> PathBuf {
    data.join(format!(
        "{}-{}{}",
        peer.id(),
        mode.letter(),
        if busy { "-busy" } else { "" }
    ))
}
