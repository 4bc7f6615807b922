//! Store benchmarks: each figure is printed beside a baseline measured in the same process.
//!
//! - insert: 10,000 keys overwritten at random with 32-byte strings, 256 KiB journals so
//!   compaction runs many times; with no reader and with one busy reader thread; against a bare
//!   loop appending the same bytes to a memory-mapped file.
//! - get: random keys, against `HashMap<String, Value>::get`; one reader thread against two.
//! - writer latency while 100,000 keys are compacted in the background: p50/p99/p99.9/max.
//! - open: replaying a full 64 MiB journal, in MB/s.
//!
//! Criterion measures the inner loops; the scaling, latency and open figures are printed as
//! plain lines ("store: ...") because they are not per-iteration timings.
#![expect(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use resilient_kv::{KVStore, Value};

const KEYS: usize = 10_000;

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key_{i:06}")).collect()
}

fn value32(i: u64) -> Value {
    Value::from(format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))[..32].to_string())
}

fn open_store(dir: &tempfile::TempDir, name: &str, buffer: usize) -> KVStore {
    KVStore::builder(dir.path().join(name))
        .buffer_size(buffer)
        .open()
        .unwrap()
}

fn insert(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir, "insert", 256 * 1024);
    let keys = keys(KEYS);
    let values: Vec<Value> = (0..1024).map(value32).collect();
    for (i, k) in keys.iter().enumerate() {
        store.insert(k.clone(), values[i % 1024].clone()).unwrap();
    }
    let mut group = c.benchmark_group("insert");
    group.throughput(Throughput::Elements(1));
    let mut rng = Rng(7);
    group.bench_function("resilient_kv", |b| {
        b.iter(|| {
            let i = rng.below(KEYS);
            store
                .insert(keys[i].clone(), values[i % 1024].clone())
                .unwrap()
        })
    });

    // Baseline: append the same record bytes (frame + body) to a memory-mapped file.
    let record_len = 12 + 1 + 1 + 10 + 1 + 32 + 1;
    let file = tempfile::tempfile().unwrap();
    file.set_len(256 * 1024).unwrap();
    #[expect(unsafe_code, reason = "the baseline maps a private temporary file")]
    // SAFETY: the temporary file is private to this process and never truncated while mapped.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file).unwrap() };
    let record = vec![0x5a_u8; record_len];
    let mut pos = 0;
    group.bench_function("bare_mmap_append", |b| {
        b.iter(|| {
            if pos + record_len > map.len() {
                pos = 0;
            }
            map[pos..pos + record_len].copy_from_slice(black_box(&record));
            pos += record_len;
        })
    });

    // The same insert loop with one busy reader thread on the other core.
    let store = Arc::new(store);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop, keys) = (Arc::clone(&store), Arc::clone(&stop), keys.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(11);
            let mut n = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                black_box(store.get(&keys[rng.below(KEYS)]).unwrap());
                n += 1;
            }
            n
        })
    };
    group.bench_function("resilient_kv_with_busy_reader", |b| {
        b.iter(|| {
            let i = rng.below(KEYS);
            store
                .insert(keys[i].clone(), values[i % 1024].clone())
                .unwrap()
        })
    });
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    group.finish();
    println!(
        "store: insert compactions during the run: {}",
        store.stats().compactions
    );
}

fn get(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir, "get", 1024 * 1024);
    let keys = keys(KEYS);
    let mut baseline = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        store.insert(k.clone(), value32(i as u64)).unwrap();
        baseline.insert(k.clone(), value32(i as u64));
    }
    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(1));
    let mut rng = Rng(3);
    group.bench_function("resilient_kv", |b| {
        b.iter(|| store.get(&keys[rng.below(KEYS)]).unwrap())
    });
    group.bench_function("std_hashmap", |b| {
        b.iter(|| baseline.get(&keys[rng.below(KEYS)]).cloned())
    });
    group.finish();

    // One reader thread against two, interleaved, fixed work per thread.
    let store = Arc::new(store);
    let keys = Arc::new(keys);
    let run = |threads: usize| {
        let per_thread = 2_000_000 / threads;
        let started = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (store, keys) = (Arc::clone(&store), Arc::clone(&keys));
                std::thread::spawn(move || {
                    let mut rng = Rng(100 + t as u64);
                    for _ in 0..per_thread {
                        black_box(store.get(&keys[rng.below(KEYS)]).unwrap());
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        2_000_000.0 / started.elapsed().as_secs_f64()
    };
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        one.push(run(1));
        two.push(run(2));
    }
    one.sort_by(f64::total_cmp);
    two.sort_by(f64::total_cmp);
    println!(
        "store: get scaling: 1 thread {:.2} M/s, 2 threads {:.2} M/s -> {:.2}x",
        one[2] / 1e6,
        two[2] / 1e6,
        two[2] / one[2]
    );
}

fn compaction_latency() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_store(&dir, "latency", 16 * 1024 * 1024));
    let keys = keys(100_000);
    for (i, k) in keys.iter().enumerate() {
        store.insert(k.clone(), value32(i as u64)).unwrap();
    }
    // Values are made before the clock starts (as in `insert`): formatting a fresh string per
    // write inside the timed region measured the benchmark's own allocations, which with
    // glibc's malloc periodically stalled for milliseconds merging freed chunks.
    let values: Vec<Value> = (0..1024).map(|i| value32(i + 1)).collect();
    let events = store.subscribe();
    let mut latencies = Vec::with_capacity(1_000_000);
    let mut rng = Rng(5);
    let mut compactions = 0;
    let started = Instant::now();
    while compactions < 3 && started.elapsed() < Duration::from_secs(60) {
        let i = rng.below(keys.len());
        let t = Instant::now();
        store
            .insert(keys[i].clone(), values[latencies.len() % 1024].clone())
            .unwrap();
        latencies.push(t.elapsed());
        compactions += events
            .try_iter()
            .filter(|e| matches!(e, resilient_kv::Event::CompactionFinished { .. }))
            .count();
    }
    let writes = latencies.len();
    let store_line = percentiles(&mut latencies);

    // Baseline in the same process: the same keys and values, the same clones, into a plain
    // `HashMap` on this thread (no journal, no compactor): what this machine does to a loop
    // that never waits for anything.
    let mut baseline: HashMap<String, Value> = HashMap::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        baseline.insert(k.clone(), value32(i as u64));
    }
    let mut rng = Rng(5);
    latencies.clear();
    for n in 0..writes {
        let i = rng.below(keys.len());
        let t = Instant::now();
        black_box(baseline.insert(keys[i].clone(), values[n % 1024].clone()));
        latencies.push(t.elapsed());
    }
    println!(
        "store: writer latency over {writes} writes spanning {compactions} compactions of \
         100,000 keys: {store_line}, {} waited for room; baseline HashMap insert, same writes: \
         {}",
        store.stats().waits_for_room,
        percentiles(&mut latencies)
    );
}

fn percentiles(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    let over_1ms = latencies
        .iter()
        .filter(|&&d| d > Duration::from_millis(1))
        .count();
    format!(
        "p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?} ({over_1ms} over 1 ms)",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        latencies[latencies.len() - 1]
    )
}

fn open_rate() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * 1024 * 1024;
    let used = {
        let store = KVStore::builder(dir.path().join("open"))
            .buffer_size(size)
            .high_water_mark(1.0)
            .pace_compactions(false)
            .open()
            .unwrap();
        let mut i = 0_u64;
        while store.stats().active_used < (size as u64) * 95 / 100 {
            for _ in 0..1000 {
                store
                    .insert(format!("key_{:06}", i % 100_000), value32(i))
                    .unwrap();
                i += 1;
            }
        }
        store.stats().active_used
    };
    let mut rates = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let store = KVStore::builder(dir.path().join("open"))
            .buffer_size(size)
            .high_water_mark(1.0)
            .pace_compactions(false)
            .open()
            .unwrap();
        let elapsed = t.elapsed();
        assert_eq!(store.len(), 100_000);
        rates.push(used as f64 / elapsed.as_secs_f64() / 1e6);
        drop(store);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "store: open replayed {:.1} MiB of journal at {:.0} MB/s (median of 3)",
        used as f64 / 1048576.0,
        rates[1]
    );
}

/// The latency and open measurements take a minute; `RKV_BENCH_EXTRAS=0` skips them.
fn extras(_: &mut Criterion) {
    if std::env::var("RKV_BENCH_EXTRAS").as_deref() == Ok("0") {
        return;
    }
    compaction_latency();
    open_rate();
}

criterion_group!(benches, insert, get, extras);
criterion_main!(benches);
