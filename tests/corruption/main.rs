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
//! zeroed-header cases, 1 swap, 7 future-version cases, and 11 minimal reproductions of
//! defects (most of them found by the sweeps). Runtime of the whole target with `cargo test
//! --release --test corruption` on this 2-core machine (files in `/dev/shm` when it exists, other builds running):
//! 21 s while the defects make many cases stop early; when every case runs to the end (a fixed
//! library), the 20,000 flips alone take 28 s (measured with flips that damage nothing), so the
//! target stays near 30 s.
//!
//! The files of this test target: `fixture.rs` (the fixture store and reading its bytes),
//! `oracle.rs` (cases, what each allows, and the checks above), `runner.rs` (running many cases
//! under a watchdog, failures grouped), then one file per harness: `tail.rs`, `bit_flips.rs`,
//! `truncation.rs`, `headers.rs` (zeroed headers, swapped names, future versions), and
//! `regressions.rs` (minimal reproductions, one per defect). This file holds the byte layout
//! they share and the oracle's control.

#[path = "../support/mod.rs"]
mod support;

mod bit_flips;
mod fixture;
mod headers;
mod oracle;
mod regressions;
mod runner;
mod tail;
mod truncation;

use fixture::pristine;
use oracle::{Case, Expect};
use runner::Runner;

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
const STATE_PENDING: u32 = 0x5045_4e44;
const OP_PUT: u8 = 1;
const OP_BATCH: u8 = 3;
const OP_COMMIT: u8 = 4;
const NAMES: [&str; 2] = ["store.jrna", "store.jrnb"];

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
