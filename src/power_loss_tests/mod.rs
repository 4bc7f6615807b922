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
//! - One regression test per bug these found, named after it (in `regressions`): a crash while
//!   creating a store (a `PENDING` header of generation 1 left behind, or the first header
//!   write cut short by a kill) left it unopenable; a `sync()` after reopening from a process
//!   crash did not flush what the crash had left in the page cache (at worst, after a crash
//!   right after a swap, a power loss during the next compaction left no committed journal);
//!   records beyond damage replayed again once new records lined up with them; a `sync()`
//!   racing the end of a compaction returned before the new journal's header was durable.
//!
//! The submodules: `model` (the writes, the state after each prefix of them, and the writer
//! that records when each was acknowledged), `workload` (the random lives of the seeded runs),
//! `images` (power-loss images, afterlives and the seeded test), `crash_points` (the
//! `crash_at_every_op_of_*` scenarios) and `regressions`. This file holds what they share:
//! reopening an image and checking it against the history, and describing a crash point.

mod crash_points;
mod images;
mod model;
mod regressions;
mod workload;

use std::path::Path;

use crate::journal::format;
use crate::journal::storage::{DiskImage, DiskOp, MemBackend, Slot};
use crate::options::Builder;
use crate::{Error, Event, KVStore};

use model::{History, Map, map_print};

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

// ---------------------------------------------------------------------------------------------
// Describing a crash point, for failure messages.

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

// ---------------------------------------------------------------------------------------------
// Shared by the crash-point scenarios and the regression tests.

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

/// A 16 KiB store on the in-memory disk, for the scenarios and regression tests.
fn tiny() -> Builder {
    // Compactions at the high-water mark, as the scenarios describe them: on this in-memory
    // disk the writers' rate (gigabytes per second) would make the pace start them earlier.
    Builder::new(Path::new("mem"))
        .buffer_size(16 * 1024)
        .pace_compactions(false)
}
