//! The main demo: threads on one store, compaction events, then a real SIGKILL mid-write and
//! the proof that every acknowledged write survived.
//!
//! `cargo run --release --example demo`

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use resilient_kv::{Event, KVStore, Value, bonjson};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(args.get(2).ok_or("missing path")?);
    }
    let dir = tempfile::tempdir()?;
    threads_and_events(&dir.path().join("threads"))?;
    crash_and_recover(&dir.path().join("crash"))?;
    codec_sizes()?;
    println!("\nDone; the demo's files are removed.");
    Ok(())
}

/// Part 1: writer and reader threads on one `Arc<KVStore>`, with tiny journals so the
/// background compactor runs constantly.
fn threads_and_events(base: &std::path::Path) -> Result<(), Error> {
    println!("== 1. Three writer threads and two reader threads on one Arc<KVStore> ==");
    let store = Arc::new(KVStore::builder(base).buffer_size(64 * 1024).open()?);
    let events = store.subscribe();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop, reads) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&reads));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = store.snapshot();
                    let _ = snapshot.get("writer0/counter");
                    let _ = store.get("writer1/counter");
                    reads.fetch_add(2, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> resilient_kv::Result<i64> {
                let mut i = 0;
                while started.elapsed() < Duration::from_secs(2) {
                    store.insert(format!("writer{w}/counter"), Value::Integer(i))?;
                    store.insert(
                        format!("writer{w}/session{}", i % 100),
                        Value::from("active"),
                    )?;
                    // One counter shared by all writers: `update` is an atomic
                    // read-modify-write, so no increment is lost to another thread's.
                    store.update("total", |n| {
                        Some(Value::Integer(n.and_then(Value::as_i64).unwrap_or(0) + 1))
                    })?;
                    i += 1;
                }
                Ok(i)
            })
        })
        .collect();
    let mut shown = 0;
    while started.elapsed() < Duration::from_secs(2) {
        if let Ok(event) = events.recv_timeout(Duration::from_millis(50))
            && let Event::CompactionFinished {
                generation,
                bytes_before,
                bytes_after,
                live_keys,
                duration,
            } = event
        {
            if shown < 5 {
                println!(
                    "  compaction -> generation {generation}: {bytes_before} -> {bytes_after} bytes, \
                     {live_keys} live keys, {duration:?} in the background"
                );
            }
            shown += 1;
        }
    }
    let mut writes = 0;
    let mut increments = 0;
    for writer in writers {
        let rounds = writer.join().map_err(|_| "writer panicked")??;
        writes += 3 * rounds;
        increments += rounds;
    }
    let total = store.get("total")?.and_then(|v| v.as_i64()).unwrap_or(0);
    println!("  shared counter (update from 3 threads): {total}, increments made: {increments}");
    if total != increments {
        return Err("the shared counter lost increments".into());
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().map_err(|_| "reader panicked")?;
    }
    shown += events
        .try_iter()
        .filter(|e| matches!(e, Event::CompactionFinished { .. }))
        .count();
    let stats = store.stats();
    println!(
        "  {writes} writes and {} reads in 2 s; {shown} compactions; {} live keys; generation {}",
        reads.load(Ordering::Relaxed),
        stats.live_keys,
        stats.generation
    );
    Ok(())
}

/// Part 2: a child process writes as fast as it can and reports each acknowledged write; we
/// kill it with SIGKILL mid-write, reopen, and check that every acknowledged write is there.
fn crash_and_recover(base: &std::path::Path) -> Result<(), Error> {
    println!("\n== 2. A child process writing, killed with SIGKILL ==");
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("--child")
        .arg(base)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let acked = Arc::new(AtomicU64::new(0));
    let reader = {
        let acked = Arc::clone(&acked);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("ack ").and_then(|n| n.parse().ok()) {
                    acked.store(n, Ordering::Release);
                }
            }
        })
    };
    // Let it get going, then kill it at an arbitrary moment.
    while acked.load(Ordering::Acquire) < 20_000 {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(137));
    child.kill()?; // SIGKILL on Unix: no destructors, no flush
    child.wait()?;
    reader.join().map_err(|_| "reader panicked")?;
    let last = acked.load(Ordering::Acquire);
    println!("  killed the child; the last write it acknowledged was item {last}");

    let store = KVStore::builder(base).buffer_size(256 * 1024).open()?;
    let mut missing = 0;
    for n in 1..=last {
        if store.get(&format!("item{n:08}"))?.is_none() {
            missing += 1;
        }
    }
    let counter = store.get("counter")?.and_then(|v| v.as_u64()).unwrap_or(0);
    println!(
        "  reopened: {} keys; counter = {counter}; items 1..={last} missing: {missing}",
        store.len()
    );
    if missing > 0 || counter < last {
        return Err("an acknowledged write was lost".into());
    }
    println!("  every acknowledged write survived (the one in flight may or may not have)");
    let stats = store.stats();
    println!(
        "  stats: generation {}, {} of {} journal bytes used, {} live keys",
        stats.generation, stats.active_used, stats.active_capacity, stats.live_keys
    );
    Ok(())
}

/// The child: writes numbered items and a counter, printing each acknowledged number.
fn child(base: &str) -> Result<(), Error> {
    let store = KVStore::builder(base).buffer_size(256 * 1024).open()?;
    let mut out = std::io::stdout().lock();
    for n in 1_u64.. {
        store.insert(format!("item{n:08}"), Value::from(format!("payload {n}")))?;
        store.insert("counter".into(), Value::from(n))?;
        writeln!(out, "ack {n}")?;
        out.flush()?;
    }
    Ok(())
}

/// Part 3: what values look like on disk.
fn codec_sizes() -> Result<(), Error> {
    println!("\n== 3. Values are stored as BONJSON ==");
    let settings: Value = [
        ("theme", Value::from("dark")),
        ("volume", Value::Integer(30)),
        ("beta", Value::Boolean(false)),
        ("tags", Value::from(vec!["a", "b", "c"])),
        ("big", Value::from(u64::MAX)),
    ]
    .into_iter()
    .collect();
    let bytes = bonjson::encode(&settings)?;
    let json = settings.to_string();
    println!("  {json}");
    println!(
        "  {} bytes as BONJSON, {} as JSON text",
        bytes.len(),
        json.len()
    );
    assert_eq!(bonjson::decode(&bytes)?, settings);
    Ok(())
}
