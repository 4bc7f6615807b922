//! Named crash points: every storage operation of one step of the protocol
//! (`crash_at_every_op_of_*`), as a process crash, a process crash with the write in flight cut
//! short, and a power loss keeping only durable data.

use std::path::Path;
use std::time::Instant;

use crate::journal::format::FRAME_SIZE;
use crate::journal::storage::{DiskImage, DiskOp, MemBackend};
use crate::options::Builder;
use crate::test_support::wait_until;
use crate::{KVStore, Value};

use super::model::{Acks, History, Write, Writer};
use super::{check_image, describe_headers, describe_op, inactive_slot, open_on, tiny};

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
        wait_until("the compaction to be held", || disk.held() > 0);
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
    // Records written outside the lock: those before the last flush of records that precedes
    // the commit header (the snapshot's flush and each catch-up round's come before it; what
    // is copied under the lock is flushed after the swap).
    let on_inactive: Vec<&DiskOp> = ops[start..]
        .iter()
        .filter(|op| op.slot() == inactive)
        .collect();
    let commit = on_inactive
        .iter()
        .rposition(|op| matches!(op, DiskOp::Write { offset: 0, .. }))
        .unwrap();
    let is_records_flush = |op: &&DiskOp| matches!(op, DiskOp::Flush { offset, .. } if *offset > 0);
    let snapshot_flush = on_inactive[..commit]
        .iter()
        .position(is_records_flush)
        .unwrap();
    let last_flush = on_inactive[..commit]
        .iter()
        .rposition(is_records_flush)
        .unwrap();
    // The records written after the snapshot's flush and before the last flush: the
    // catch-up's, copied outside the lock (each record is two writes, body then frame).
    let copied_outside = on_inactive[snapshot_flush..last_flush]
        .iter()
        .filter(|op| matches!(op, DiskOp::Write { offset, .. } if *offset > 0))
        .count()
        / 2;
    assert!(
        copied_outside > 16,
        "the catch-up copied {copied_outside} records outside the lock"
    );
    crash_at_every_op(
        &format!(
            "a compaction (compact() with a concurrent writer; {copied_outside} records copied \
             outside the lock)"
        ),
        &s,
    );
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
        .high_water_mark(1.0)
        .pace_compactions(false);
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
    assert!(
        grows >= 2,
        "both journals grow: {grows} grows in {} ops, {next} keys",
        s.step.len()
    );
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
