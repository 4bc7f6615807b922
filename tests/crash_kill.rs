//! Real SIGKILL: a child process (this test binary, re-executed) applies a seeded sequence of
//! inserts, removes, batches and clears through an `Arc<KVStore>` with reader threads and tiny
//! journals (so compactions and swaps happen constantly), and prints the index of every write
//! once it is acknowledged. The parent kills it at a random moment, reopens the store, and
//! checks that it equals the model after exactly the acknowledged writes, or that plus the one
//! write in flight; never anything else (nothing lost, nothing resurrected, no half batch).
//!
//! `RKV_CRASH_KILLS` sets the number of kills (default 300, what CI runs; the issue asks for
//! 10,000 on demand: `RKV_CRASH_KILLS=10000`); `RKV_CRASH_SEED` the first seed. Every failure
//! names its seed and the command that reruns it alone.
//!
//! Runtime of the default 300 kills with `cargo test --release --test crash_kill` on this 2-core
//! machine: 27 to 29 s, measured while other builds ran (load average 5 to 8), about 90 ms per
//! kill: the child's start, a random wait of 0.5 to 60 ms after its first acknowledged write,
//! the reopen and the check (about 1,100 acknowledged writes checked per kill).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use resilient_kv::testing::Rng;
use resilient_kv::{KVStore, Value};

mod support;
use support::{Model, Write, apply_model, apply_store};

const CHILD_ENV: &str = "RKV_CRASH_CHILD";

/// The deterministic sequence of writes for `seed` (mixed: consecutive seeds give unrelated
/// sequences; unmixed, seeds 2k and 2k + 1 gave the same one).
fn steps(seed: u64) -> impl Iterator<Item = Write> {
    let mut rng = Rng::new(seed);
    std::iter::from_fn(move || {
        let key = |rng: &mut Rng| format!("key{:03}", rng.below(150));
        let value = |rng: &mut Rng| match rng.below(3) {
            0 => Value::Integer(rng.next_u64() as i64),
            1 => Value::from("v".repeat(rng.below(200) as usize)),
            _ => Value::from(vec![
                Value::Boolean(true),
                Value::Integer(rng.below(1000) as i64),
            ]),
        };
        Some(match rng.below(100) {
            0 => Write::Clear,
            1..=15 => Write::Remove(key(&mut rng)),
            16..=25 => Write::Batch(
                (0..2 + rng.below(4))
                    .map(|_| {
                        let k = key(&mut rng);
                        let v = if rng.below(4) == 0 {
                            None
                        } else {
                            Some(value(&mut rng))
                        };
                        (k, v)
                    })
                    .collect(),
            ),
            _ => {
                let k = key(&mut rng);
                Write::Insert(k, value(&mut rng))
            }
        })
    })
}

fn open(base: &std::path::Path) -> KVStore {
    KVStore::builder(base)
        .buffer_size(16 * 1024)
        .open()
        .unwrap()
}

/// The child: the test below re-executes itself with `RKV_CRASH_CHILD` set to `seed:base`,
/// and this writes that seed's steps, saying "ack N" after each, until it is killed.
fn crash_child(spec: &str) {
    let (seed, base) = spec.split_once(':').unwrap();
    let seed: u64 = seed.parse().unwrap();
    let store = Arc::new(open(std::path::Path::new(base)));
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..2 {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let snapshot = store.snapshot();
                let _ = snapshot.get("key001");
                let _ = store.get("key002");
            }
        });
    }
    for (i, step) in steps(seed).enumerate() {
        apply_store(&store, &step).unwrap();
        // Acknowledged: writes 0..=i have returned.
        println!("ack {}", i + 1);
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        crash_child(&spec);
        return;
    }
    let kills: u64 = std::env::var("RKV_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let first_seed: u64 = std::env::var("RKV_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let exe = std::env::current_exe().unwrap();
    let mut timing = Rng::from_state(first_seed.wrapping_mul(0x9e37_79b9));
    let mut total_acked = 0;
    for round in 0..kills {
        let seed = first_seed + round;
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("crash");
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "sigkill_at_random_moments_loses_nothing_acknowledged",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, format!("{seed}:{}", base.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reader = {
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    // The first may share a line with the test harness's "test ... ".
                    let count = line.find("ack ").map(|at| &line[at + 4..]);
                    if let Some(n) = count.and_then(|n| n.parse().ok()) {
                        acked.store(n, Ordering::Release);
                    }
                }
            })
        };
        // Wait for the child to get going, then kill it at a random moment.
        let started = Instant::now();
        while acked.load(Ordering::Acquire) == 0 && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_micros(500 + timing.below(60_000)));
        // The child writes forever: if it is gone already, a write failed or it panicked.
        let exited = child.try_wait().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let errors = errors.join().unwrap();
        assert!(
            exited.is_none(),
            "seed {seed}: the child stopped by itself ({exited:?}) before the kill: {errors}; \
             rerun with RKV_CRASH_SEED={seed} RKV_CRASH_KILLS=1"
        );
        let n = acked.load(Ordering::Acquire);
        assert!(n > 0, "seed {seed}: the child never acknowledged a write");
        total_acked += n;

        let steps: Vec<Write> = steps(seed).take(n as usize + 1).collect();
        let mut model = Model::new();
        for step in &steps[..n as usize] {
            apply_model(&mut model, step);
        }
        let mut with_next = model.clone();
        apply_model(&mut with_next, &steps[n as usize]);

        let store = KVStore::builder(&base)
            .buffer_size(16 * 1024)
            .open()
            .unwrap_or_else(|e| {
                panic!(
                    "seed {seed}: reopening after the kill failed: {e:?}; rerun with \
                     RKV_CRASH_SEED={seed} RKV_CRASH_KILLS=1"
                )
            });
        let found: Model = store.as_hashmap().into_iter().collect();
        assert!(
            found == model || found == with_next,
            "seed {seed}: after {n} acknowledged writes the store holds neither the model nor \
             the model plus the write in flight ({} keys vs {} or {}); rerun with RKV_CRASH_SEED={seed} RKV_CRASH_KILLS=1",
            found.len(),
            model.len(),
            with_next.len()
        );
        assert_eq!(
            store.stats().data_loss_events,
            0,
            "seed {seed}: a kill is not damage"
        );
    }
    println!("crash: {kills} SIGKILLs, {total_acked} acknowledged writes checked");
}
