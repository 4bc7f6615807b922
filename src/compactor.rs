//! The background compactor: rewrites the live map into the inactive journal while writers keep
//! appending, then switches journals under the writer lock for a moment that does not grow with
//! the size of the map.
//!
//! Steps (see `docs/design.md` for the crash analysis of each):
//! 1. Under the writer lock, take the active journal's end position `start` (and the number of
//!    live keys, which sizes the table that resolves them).
//! 2. Without the lock: find the live keys of the active journal's records below `start` (they
//!    never change, and they are the map as of `start`), mark the inactive journal `PENDING`
//!    for a new generation `g'` above every one used before (flushed, so it can never be
//!    elected half-written), and copy the live keys' puts, packed into batch records of up to
//!    64 KiB, growing the file first if the live data would not sit comfortably under the
//!    high-water mark. No version of the in-memory map is held, so writers keep
//!    updating it in place. Only if those records do not read back (damage under the running
//!    store) is the map written instead, as of a new `start`.
//! 3. Without the lock: copy the records appended since `start` (they are immutable once
//!    written), in rounds, until little remains; flush.
//! 4. Under the lock: copy the last few records, append the commit marker, write the
//!    `COMMITTED` header, and swap the journals. Writers waiting for room are woken.
//! 5. Without the lock: flush the new journal (records, then header, then fdatasync).

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::bonjson::DecodeOptions;
use crate::events::Event;
use crate::journal::Journal;
use crate::journal::format::{self, HEADER_SIZE};
use crate::journal::pack::{self, Packer};
use crate::journal::recovery::append_commit_marker;
use crate::journal::replay::LiveRecord;
use crate::pace::Room;
use crate::prefault::{PrefaultAhead, PrefaultRequest, prefault_ahead};
use crate::shared::Shared;
use crate::snapshot::Map;
use crate::sync::channel::{Receiver, Sender};
use crate::sync::{Arc, JoinHandle};
use crate::{Error, Result};

/// Messages to the compactor thread.
pub(crate) enum Command {
    /// Compact now; report the outcome on `reply` if given.
    Compact { reply: Option<Sender<Result<()>>> },
    /// Map the next stretch of the active journal writable before the writers reach it.
    Prefault(PrefaultRequest),
    /// Stop (sent by `Drop`).
    Shutdown,
}

/// Stop copying catch-up records outside the lock once fewer than this many bytes remain (one
/// byte under loom, so that the models exercise the rounds outside the lock).
const CATCH_UP_UNDER_LOCK: usize = if cfg!(loom) { 1 } else { 16 * 1024 };

/// At most this many catch-up rounds outside the lock (each copies what writers appended
/// during the previous one and flushes it); whatever is left after them is copied under it.
const CATCH_UP_ROUNDS: usize = 8;

pub(crate) fn spawn(
    shared: Arc<Shared>,
    commands: Receiver<Command>,
) -> io::Result<JoinHandle<()>> {
    crate::sync::spawn("rkv-compactor", move || run(&shared, &commands))
}

fn run(shared: &Shared, commands: &Receiver<Command>) {
    // The journal the store opened on: have its pages ready before writers reach them. (Not
    // under loom: its storage has no pages, and the extra lock would only multiply the models'
    // interleavings.)
    if !cfg!(loom) {
        let opened = Arc::clone(&shared.writer.lock().active);
        opened.prefault_tail();
    }
    while let Ok(command) = commands.recv() {
        let reply = match command {
            Command::Compact { reply } => reply,
            Command::Prefault(request) => {
                prefault_ahead(shared, &request);
                continue;
            }
            Command::Shutdown => break,
        };
        // Requests that piled up during the last compaction are served by this one.
        let mut replies = vec![reply];
        let mut stop = false;
        while let Ok(more) = commands.try_recv() {
            match more {
                Command::Compact { reply } => replies.push(reply),
                // Dropped: the journal it names is about to be retired, and the first write to
                // the new one asks again.
                Command::Prefault(_) => {}
                Command::Shutdown => stop = true,
            }
        }
        // Numbered before it takes its start position: a writer waiting for room trusts
        // only the outcome of a compaction numbered after it began waiting.
        let (number, unassigned) = {
            let mut w = shared.writer.lock();
            w.compactions_started += 1;
            (w.compactions_started, w.next_generation)
        };
        let outcome = match catch_unwind(AssertUnwindSafe(|| compact(shared, number))) {
            Ok(outcome) => outcome,
            Err(_) => {
                shared.poison("the compactor thread panicked".into());
                Err(shared.poison_error())
            }
        };
        if let Err(e) = &outcome {
            // The generation of the attempt that failed: the last one handed out, or, if it
            // failed before taking one (a poisoned store), the one it would have taken.
            let generation = {
                let w = shared.writer.lock();
                if w.next_generation > unassigned {
                    w.next_generation - 1
                } else {
                    w.next_generation.max(w.active.generation() + 1)
                }
            };
            shared.emit(Event::CompactionFailed {
                generation,
                reason: e.to_string(),
            });
            let mut w = shared.writer.lock();
            // A clear queued behind this attempt keeps the flag, if its request is still to
            // be served (this attempt may have taken it up before it took its start).
            w.compacting = std::mem::take(&mut w.compaction_queued) && !commands.is_empty();
            w.failures += 1;
            w.last_failed = number;
            w.last_failure = Some(duplicate_error(e));
            // The writers that needed room get this error (they watch `failures`); a later
            // write that needs room says so again. Left set, the room would make every later
            // compaction try to grow for a write nobody is making any more.
            w.room_needed = 0;
            w.waited_for_room = false;
            // Back off: the next automatic attempt waits until half of the journal's remaining
            // room is used, instead of starting again at the very next write (a full disk or a
            // failing device would otherwise see compaction after compaction).
            let (end, capacity) = (w.active.end(), w.active.capacity());
            w.trigger = w.trigger.max(end + capacity.saturating_sub(end) / 2);
            w.pace.suspend();
            shared.swapped.notify_all();
        }
        for reply in replies.into_iter().flatten() {
            let _ = reply.send(duplicate(&outcome));
        }
        if stop {
            break;
        }
    }
    // Nobody compacts any more: writers waiting for room must not wait forever.
    let mut w = shared.writer.lock();
    w.compacting = false;
    w.failures += 1;
    w.last_failed = u64::MAX;
    w.last_failure = Some(shared.poison_error());
    shared.swapped.notify_all();
}

fn duplicate(outcome: &Result<()>) -> Result<()> {
    outcome.as_ref().map_err(duplicate_error).copied()
}

/// A copy of a compaction's error, for each caller that waited for it.
pub(crate) fn duplicate_error(error: &Error) -> Error {
    match error {
        Error::Full { needed, max_size } => Error::Full {
            needed: *needed,
            max_size: *max_size,
        },
        Error::Poisoned { reason } => Error::Poisoned {
            reason: reason.clone(),
        },
        // The operating system's error kind and the file survive the copy (an `io::Error`
        // cannot be cloned), so callers can still match on, say, `StorageFull`.
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        other => Error::Io {
            op: "compact",
            path: std::path::PathBuf::new(),
            source: io::Error::other(other.to_string()),
        },
    }
}

/// Why writing into the inactive journal stopped.
enum Stop {
    NoRoom,
    Failed(Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Failed(Error::Io {
            op: "compaction write",
            path: std::path::PathBuf::new(),
            source: e,
        })
    }
}

fn compact(shared: &Shared, number: u64) -> Result<()> {
    shared.check_poison()?;
    let started = Instant::now();
    let Some(mut target) = shared.inactive.lock().take() else {
        return Err(Error::Config(
            "no inactive journal (a compaction is already running)".into(),
        ));
    };
    match compact_into(shared, &mut target, started, number) {
        Ok(swapped) => swapped,
        Err((e, journal)) => {
            *shared.inactive.lock() = Some(journal);
            Err(e)
        }
    }
}

/// Runs the compaction into `target`. On failure before the swap returns the journal that must
/// go back into the inactive slot (its `PENDING` header keeps it from ever being elected); after
/// the swap, `Ok` with the outcome of the new journal's last flush.
fn compact_into(
    shared: &Shared,
    target: &mut Arc<Journal>,
    started: Instant,
    number: u64,
) -> std::result::Result<Result<()>, (Error, Arc<Journal>)> {
    let (mut start, active, room_needed, mut generation, keys_at_start) = {
        let mut w = shared.writer.lock();
        // A generation is never used twice: a failed attempt may have left records of its
        // generation in the file, and a later attempt reusing the number would replay them.
        let generation = w.next_generation.max(w.active.generation() + 1);
        w.next_generation = generation + 1;
        // Every clear so far is before this start, so this compaction serves it.
        w.compaction_queued = false;
        (
            w.active.end(),
            Arc::clone(&w.active),
            w.room_needed,
            generation,
            shared.published.load().map.len(),
        )
    };
    shared.emit(Event::CompactionStarted { generation });

    // A reader of the retired journal (a `sync` in flight) may still hold it briefly.
    let journal = loop {
        if let Some(journal) = Arc::get_mut(target) {
            break journal;
        }
        crate::sync::back_off();
    };
    let fail = |e: Error, t: &Arc<Journal>| (e, Arc::clone(t));
    // The active journal's records below `start` are the map as of `start`: copy its live
    // records. No version of the published map is held meanwhile, so writers keep updating it
    // in place (holding one made every write copy tree nodes, and freeing the values it kept
    // alive, all at once when the compaction ended, stalled the writer in the allocator).
    let decode = DecodeOptions::default();
    let from_records = active.with_live_records(start, &decode, keys_at_start, |records| {
        records.map(|records| {
            let end = HEADER_SIZE
                + pack::packed_size(
                    records
                        .iter()
                        .map(|r| format::put_raw_len(r.key().len(), r.value().len())),
                );
            write_snapshot(
                shared,
                journal,
                generation,
                room_needed,
                Some(end),
                &mut |j| write_records(shared, j, &records),
            )
        })
    });
    let written = match from_records {
        Ok(Some(outcome)) => outcome,
        // The records below the end did not read back (the file was damaged under the store):
        // the map in memory is the truth; write it, as of a new start.
        Ok(None) | Err(_) => {
            let snapshot = {
                let w = shared.writer.lock();
                start = w.active.end();
                shared.published.load_full()
            };
            write_snapshot(shared, journal, generation, room_needed, None, &mut |j| {
                write_entries(shared, j, &snapshot.map)
            })
        }
    };
    match written {
        Ok(used) => generation = used,
        Err(e) => return Err(fail(e, target)),
    }
    // Where the live data and the commit marker end before the records appended meanwhile are
    // copied over (those may be mostly overwrites): what a writer waiting for room can count
    // on once they too are compacted. (Without the marker, a record that fits after the
    // snapshot but not after the marker made its writer wait through compaction after
    // compaction.)
    let snapshot_end = journal.end() + Journal::record_size(format::encode_commit(0).len());
    // Bring the rest of the new journal into memory now: the catch-up below (part of it under
    // the writer lock) and, after the swap, the writers store into those pages, and a first
    // store to a never-written page makes the kernel allocate and zero it inside the fault.
    journal.prefault_tail();
    // Flush the snapshot now (its write-back was queued while it was written), then catch up
    // outside the lock in rounds, each flushed, until little is left: records appended since
    // `start` never change. Whatever is appended during the last round and its flush is
    // copied under the lock, so that part stays small however large the map and however slow
    // the disk (flushing everything after the rounds left what writers appended during that
    // one long flush to be copied, and in `Sync` mode flushed, under the lock).
    let flush = |journal: &Journal| {
        journal.flush_records().map_err(|source| Error::Io {
            op: "msync",
            path: journal.storage().path().into(),
            source,
        })
    };
    if let Err(e) = flush(journal) {
        return Err(fail(e, target));
    }
    let mut copied = start;
    for _ in 0..CATCH_UP_ROUNDS {
        let end = active.end();
        if end - copied < CATCH_UP_UNDER_LOCK {
            break;
        }
        if let Err(e) = make_room(shared, journal, end - copied)
            .and_then(|()| copy_records(&active, journal, copied, end))
            .and_then(|()| flush(journal))
        {
            return Err(fail(e, target));
        }
        copied = end;
    }

    let mut w = shared.writer.lock();
    let end = w.active.end();
    shared
        .stats
        .last_copied_under_lock
        .store((end - copied) as u64, Ordering::Relaxed);
    let switched = make_room(shared, journal, end - copied)
        .and_then(|()| copy_records(&active, journal, copied, end))
        .and_then(|()| {
            // Records a `sync()` already promised must be durable before the header that
            // makes this journal the one elected. Flushed before the commit marker goes in, so
            // that a failed flush leaves no marker in a file that stays `PENDING` (recovery
            // takes a marker as proof that its generation committed). The marker itself
            // reaches the disk with step 5's flush; a power loss that wrote the header back
            // before it makes recovery fall back to the previous journal, which still holds
            // every promised record (it is reused only after that flush).
            if active.synced() > copied {
                journal.flush_records().map_err(io_error(journal))
            } else {
                Ok(())
            }
        })
        .and_then(|()| append_commit_marker(journal).map_err(io_error(journal)))
        .and_then(|()| journal.commit().map_err(io_error(journal)));
    if let Err(e) = switched {
        drop(w);
        return Err(fail(e, target));
    }
    let bytes_after = journal.end();
    let capacity = journal.capacity();
    let live_keys = shared.published.load().map.len() as u64;
    let new_active = Arc::clone(target);
    let retired = std::mem::replace(&mut w.active, Arc::clone(&new_active));
    // Counted under the lock, so `stats()` never sees the new generation without it, nor the
    // new journal as both the active and the inactive one (its size stood for the inactive
    // journal's while it grew: a store whose two journals were growing looked grown once one
    // had).
    shared.stats.compactions.fetch_add(1, Ordering::Relaxed);
    let bytes_before = retired.end() as u64;
    shared
        .stats
        .inactive_capacity
        .store(retired.capacity() as u64, Ordering::Relaxed);
    shared
        .stats
        .inactive_used
        .store(bytes_before, Ordering::Relaxed);
    w.compacting = std::mem::take(&mut w.compaction_queued);
    w.last_swapped = number;
    w.end_at_swap = snapshot_end;
    // The first write to the new journal asks for its first stretch to be mapped writable;
    // this thread serves that after this compaction, hence after its last flush (which leaves
    // every page clean, so write-protected, again).
    w.prefault = PrefaultAhead::after_swap(generation, bytes_after);
    w.room_needed = 0;
    let hwm = ((capacity as f64) * f64::from(shared.config.high_water_mark)) as usize;
    let waited = std::mem::take(&mut w.waited_for_room);
    w.early = w.early.next(waited);
    w.trigger = next_trigger(bytes_after, hwm, capacity, w.early.level);
    if bytes_after > hwm {
        // A generation that starts above its mark never crosses it: no callback for it (one
        // that compacts would otherwise compact at every first write after each swap).
        w.hwm_fired = generation;
    }
    if shared.config.pace_compactions && !cfg!(loom) {
        let journal = Room {
            end: bytes_after,
            capacity,
            room_end: capacity - new_active.reserve(),
            floor: earliest_start(bytes_after, hwm, capacity),
            copied_keys: keys_at_start,
            live_keys: usize::try_from(live_keys).unwrap_or(usize::MAX),
        };
        let now = Instant::now();
        w.pace
            .swapped(now.saturating_duration_since(started), journal, now);
    }
    drop(w);
    shared.swapped.notify_all();

    *shared.inactive.lock() = Some(retired);
    // The new journal's last flush (its committed header) is one flusher among the syncers:
    // under their lock, poisoning before it is released. A writeback error is reported to one
    // msync only and the pages are then clean, so a `sync` running at the same time as an
    // unlocked flush that failed would find nothing left to write and return `Ok` for records
    // the disk does not hold. For the same reason a failure a syncer met first is checked
    // here, under the lock: the old journal, this generation's fallback, must never be reused
    // once the new one may be damaged on disk.
    {
        let _one_flusher = shared.sync_lock.lock();
        if let Err(e) = new_active.flush() {
            shared.flush_failed.store(true, Ordering::Release);
            shared.poison(format!("flushing the new journal failed: {e}"));
            return Ok(Err(crate::error::io_err(
                "msync",
                new_active.storage().path(),
            )(e)));
        }
        if let Err(e) = shared.check_poison() {
            return Ok(Err(e));
        }
    }
    let duration = started.elapsed();
    shared.stats.last_compaction_nanos.store(
        u64::try_from(duration.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1),
        Ordering::Relaxed,
    );
    shared.emit(Event::CompactionFinished {
        generation,
        bytes_before,
        bytes_after: bytes_after as u64,
        live_keys,
        duration,
    });
    Ok(Ok(()))
}

fn io_error(journal: &Journal) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::Io {
        op: "compaction write",
        path: journal.storage().path().into(),
        source,
    }
}

/// Writes every live key into `journal` as generation `generation`, growing the file when the
/// live data would not fit comfortably (at most half of the high-water mark). Each restart after
/// growing takes a fresh generation; returns the one finally written.
fn write_snapshot(
    shared: &Shared,
    journal: &mut Journal,
    mut generation: u64,
    room_needed: usize,
    expected_end: Option<usize>,
    write: &mut dyn FnMut(&Journal) -> std::result::Result<(), Stop>,
) -> Result<u64> {
    let ratio = f64::from(shared.config.high_water_mark);
    let max_size = shared.config.max_size;
    // When the size of what will be written is known (copying records), grow first, exactly as
    // the check after writing would, instead of writing everything twice.
    // Growing for headroom is best effort: if the disk refuses it, the live data is written at
    // the size the journal has (more frequent compactions beat none); only data that does not
    // fit at all fails the compaction.
    if let Some(end) = expected_end {
        let used = end + room_needed;
        let capacity = journal.capacity();
        let comfortable = ((capacity as f64) * ratio / 2.0) as usize;
        if used > comfortable
            && capacity < max_size
            && grow(shared, journal, wanted_capacity(used, ratio, max_size)).is_err()
        {
            shared.writer.lock().growth_refused += 1;
        }
    }
    let mut first = true;
    loop {
        let capacity = journal.capacity();
        if !first {
            let mut w = shared.writer.lock();
            generation = w.next_generation;
            w.next_generation += 1;
        }
        first = false;
        journal.begin(generation).map_err(io_error(journal))?;
        match write(journal) {
            Ok(()) => {
                let used = journal.end() + room_needed;
                let comfortable = ((capacity as f64) * ratio / 2.0) as usize;
                if used <= comfortable || capacity >= max_size {
                    return Ok(generation);
                }
                if grow(shared, journal, wanted_capacity(used, ratio, max_size)).is_err() {
                    shared.writer.lock().growth_refused += 1;
                    return Ok(generation);
                }
                if journal.capacity() <= capacity {
                    // Nothing grew: writing again would write the same thing.
                    return Ok(generation);
                }
            }
            Err(Stop::NoRoom) if capacity < max_size => {
                let used = journal.end().max(capacity);
                grow(shared, journal, wanted_capacity(used, ratio, max_size))?;
            }
            Err(Stop::NoRoom) => {
                return Err(Error::Full {
                    needed: journal.end() as u64,
                    max_size: max_size as u64,
                });
            }
            Err(Stop::Failed(e)) => return Err(naming(e, journal)),
        }
    }
}

/// `e`, naming `journal`'s file if it is an I/O error that does not name one yet (errors
/// converted from `io::Error` inside the copy loops do not know the file).
fn naming(e: Error, journal: &Journal) -> Error {
    match e {
        Error::Io { op, path, source } if path.as_os_str().is_empty() => Error::Io {
            op,
            path: journal.storage().path().to_path_buf(),
            source,
        },
        other => other,
    }
}

/// Where the next automatic compaction starts in a journal whose data ends at `live_end` (the
/// live data and the records the swap copied over): at the high-water mark, or halfway between
/// that and the end if that is later and `live_end` is above half the mark (the journal is at
/// its largest size, or writers appended much during the compaction). At `early` level
/// `n` (see [`EarlyStart`]) it starts after only 1/2^n of that distance instead: with more room
/// left for the writers while it runs, and less to scan, instead of the journal growing beyond
/// its configured size.
fn next_trigger(live_end: usize, hwm: usize, capacity: usize, early: u8) -> usize {
    let halfway = live_end + capacity.saturating_sub(live_end) / 2;
    // Live data above half the mark means the journal could not grow (compaction grows it
    // until the live data fits under half the mark): then never start before halfway, or
    // live data ending just below the mark would start a compaction at nearly every write.
    let normal = if live_end > hwm / 2 {
        hwm.max(halfway)
    } else {
        hwm
    };
    live_end + ((normal - live_end) >> early)
}

/// The earliest the next automatic compaction may start in a journal whose live data ends at
/// `live_end`: where it starts at the highest early-start level.
pub(crate) fn earliest_start(live_end: usize, hwm: usize, capacity: usize) -> usize {
    next_trigger(live_end, hwm, capacity, EarlyStart::MAX_LEVEL)
}

/// How much earlier than usual compactions start: one level more after every compaction
/// during which writers had to wait for room (up to 3, i.e. an eighth of the usual distance),
/// one level less after `CALM` compactions in a row without a wait. Sticky, so that a store
/// whose compactions cannot keep up settles at a level where writers stop waiting instead of
/// waiting at every other compaction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EarlyStart {
    pub(crate) level: u8,
    calm: u8,
}

impl EarlyStart {
    const MAX_LEVEL: u8 = 3;
    const CALM: u8 = 8;

    /// The state after a compaction; `waited`: a writer waited for room during it.
    pub(crate) fn next(self, waited: bool) -> Self {
        if waited {
            EarlyStart {
                level: (self.level + 1).min(Self::MAX_LEVEL),
                calm: 0,
            }
        } else if self.level > 0 && self.calm + 1 >= Self::CALM {
            EarlyStart {
                level: self.level - 1,
                calm: 0,
            }
        } else {
            EarlyStart {
                level: self.level,
                calm: if self.level > 0 { self.calm + 1 } else { 0 },
            }
        }
    }
}

/// The journal size that keeps `used` bytes under half the mark: a power of two, at most
/// `max_size` (saturating: a ratio near 0 asks for `max_size`, never for a wrapped size).
fn wanted_capacity(used: usize, ratio: f64, max_size: usize) -> usize {
    let want = ((used as f64) * 2.0 / ratio) as usize;
    want.saturating_add(HEADER_SIZE)
        .checked_next_power_of_two()
        .unwrap_or(usize::MAX)
        .clamp(HEADER_SIZE, max_size)
}

fn grow(shared: &Shared, journal: &mut Journal, new_size: usize) -> Result<()> {
    if new_size <= journal.capacity() {
        return Ok(());
    }
    journal
        .storage_mut()
        .grow(new_size)
        .map_err(io_error(journal))?;
    // The event first, so that whoever sees the new size (`Acquire` in `stats()`) can have
    // received it.
    shared.emit(Event::JournalGrown {
        new_size: new_size as u64,
    });
    // It is the inactive journal, and stays this size if the compaction fails.
    shared
        .stats
        .inactive_capacity
        .store(new_size as u64, Ordering::Release);
    Ok(())
}

/// Writes every live key of `map`, packed into batch records (compaction from memory).
fn write_entries(shared: &Shared, journal: &Journal, map: &Map) -> std::result::Result<(), Stop> {
    write_packed(shared, journal, map.iter(), |(key, value), op| {
        format::encode_put_stored(key, value, &shared.limits, op).map_err(Stop::Failed)
    })
}

/// Writes the live keys found in the previous generation's records, packed into batch
/// records (`journal/pack.rs`).
fn write_records(
    shared: &Shared,
    journal: &Journal,
    records: &[LiveRecord<'_>],
) -> std::result::Result<(), Stop> {
    write_packed(shared, journal, records.iter(), |record, op| {
        format::encode_put_raw(record.key(), record.value(), op);
        Ok(())
    })
}

/// Appends one put per item (`encode` writes its body), packed into batch records, checking
/// between batches for a shutdown and starting the write-back of what is done.
fn write_packed<I: Iterator>(
    shared: &Shared,
    journal: &Journal,
    items: I,
    mut encode: impl FnMut(I::Item, &mut Vec<u8>) -> std::result::Result<(), Stop>,
) -> std::result::Result<(), Stop> {
    let mut op = Vec::with_capacity(256);
    let mut packer = Packer::default();
    let mut written_back = journal.end();
    for (i, item) in items.enumerate() {
        between_batches(shared, journal, i, &mut written_back)?;
        op.clear();
        encode(item, &mut op)?;
        if let Some(body) = packer.push(&op) {
            append_live(journal, body)?;
        }
    }
    match packer.finish_last() {
        Some(body) => append_live(journal, body),
        None => Ok(()),
    }
}

/// Every few thousand records: stop if the store is closing, and once a
/// [`WRITEBACK_CHUNK`] of whole pages was written since the last time (`written_back`), start
/// writing them back, so that the flush before the swap, which writers may end up waiting for,
/// finds little left to write.
fn between_batches(
    shared: &Shared,
    journal: &Journal,
    i: usize,
    written_back: &mut usize,
) -> std::result::Result<(), Stop> {
    if !i.is_multiple_of(4096) {
        return Ok(());
    }
    if shared.shutting_down.load(Ordering::Acquire) {
        return Err(Stop::Failed(Error::Poisoned {
            reason: "the store is closing".into(),
        }));
    }
    let whole_pages = journal.end() / WRITEBACK_PAGE * WRITEBACK_PAGE;
    if whole_pages >= *written_back + WRITEBACK_CHUNK {
        journal
            .storage()
            .start_writeback(*written_back, whole_pages - *written_back);
        *written_back = whole_pages;
    }
    Ok(())
}

/// Granularity of the early writeback (a page: a partly written page would only be written
/// twice).
const WRITEBACK_PAGE: usize = 4096;

/// The least the early writeback starts at a time. Each start unmaps its pages first (one TLB
/// shootdown, an interrupt to the writers' CPU), so it waits for this much; the flush before
/// the swap then finds at most this much, plus the last records, still to write.
const WRITEBACK_CHUNK: usize = 1 << 20;

/// Appends one live key's record, leaving the removal-only reserve free as writers must.
fn append_live(journal: &Journal, body: &[u8]) -> std::result::Result<(), Stop> {
    if journal.append_within(body, journal.capacity() - journal.reserve())? {
        Ok(())
    } else {
        Err(Stop::NoRoom)
    }
}

/// Grows `journal` (up to `max_size`) if `bytes` more of catch-up records and the commit
/// marker would not fit: writers may have appended more during the compaction than the new
/// journal, sized for the live data, has left (e.g. when it is still smaller than the active
/// one). Beyond `max_size` the copy fails and the compaction with it, as before.
fn make_room(shared: &Shared, journal: &mut Journal, bytes: usize) -> Result<()> {
    let needed = journal.end() + bytes + COMMIT_ROOM;
    if needed <= journal.capacity() {
        return Ok(());
    }
    let ratio = f64::from(shared.config.high_water_mark);
    grow(
        shared,
        journal,
        wanted_capacity(needed, ratio, shared.config.max_size),
    )
}

/// Room kept for the commit marker after the catch-up (a frame and a nine-byte body, rounded
/// up).
const COMMIT_ROOM: usize = 64;

/// Copies the records in `[from, to)` of `source` into `target`.
fn copy_records(source: &Journal, target: &Journal, from: usize, to: usize) -> Result<()> {
    source
        .for_each_record(from, to, |body| {
            if target.append(body)? {
                Ok(())
            } else {
                Err(io::Error::other(
                    "the new journal has no room for the records written during compaction",
                ))
            }
        })
        .map_err(io_error(target))
}

#[cfg(test)]
mod tests {
    use super::{EarlyStart, next_trigger, wanted_capacity};
    use crate::journal::format::HEADER_SIZE;

    /// A power of two keeping the data under half the mark, clamped to `max_size`; a ratio
    /// near 0 saturates to `max_size` instead of wrapping to a tiny size.
    #[test]
    fn wanted_capacity_saturates_instead_of_wrapping() {
        let mib = 1024 * 1024;
        assert_eq!(wanted_capacity(300 * 1024, 0.8, 64 * mib), mib);
        assert_eq!(wanted_capacity(300 * 1024, 0.8, 512 * 1024), 512 * 1024);
        assert_eq!(wanted_capacity(8234, 1e-16, 64 * mib), 64 * mib);
        assert_eq!(wanted_capacity(usize::MAX / 2, 0.5, usize::MAX), usize::MAX);
        assert_eq!(wanted_capacity(0, 0.8, 64 * mib), HEADER_SIZE);
    }

    #[test]
    fn a_compaction_that_made_writers_wait_moves_the_next_trigger_earlier() {
        let kib = 1024;
        assert_eq!(next_trigger(200 * kib, 800 * kib, 1024 * kib, 0), 800 * kib);
        assert_eq!(next_trigger(200 * kib, 800 * kib, 1024 * kib, 1), 500 * kib);
        assert_eq!(next_trigger(200 * kib, 800 * kib, 1024 * kib, 3), 275 * kib);
        // Live data above the mark: halfway to the end, and a quarter of the way at level 1.
        assert_eq!(next_trigger(900 * kib, 800 * kib, 1000 * kib, 0), 950 * kib);
        assert_eq!(next_trigger(900 * kib, 800 * kib, 1000 * kib, 1), 925 * kib);
        // Data past the end (the header of a file shorter than a page, opened read-only).
        assert_eq!(next_trigger(4096, 0, 100, 3), 4096);
        // Live data just below the mark of a journal at its largest size: halfway to the end,
        // not the mark 28 bytes away (a compaction at nearly every write).
        assert_eq!(next_trigger(52_400, 52_428, 65_536, 0), 58_968);
        // Below half the mark: the mark, even if halfway is later (a low configured mark).
        assert_eq!(next_trigger(100 * kib, 300 * kib, 1024 * kib, 0), 300 * kib);
    }

    #[test]
    fn early_start_rises_with_each_wait_and_falls_after_calm_compactions() {
        let mut early = EarlyStart::default();
        for expected in [1, 2, 3, 3] {
            early = early.next(true);
            assert_eq!(early.level, expected);
        }
        for _ in 0..EarlyStart::CALM - 1 {
            early = early.next(false);
            assert_eq!(early.level, 3);
        }
        early = early.next(false);
        assert_eq!(early.level, 2);
        // A wait resets the calm count.
        for _ in 0..EarlyStart::CALM - 1 {
            early = early.next(false);
        }
        early = early.next(true);
        assert_eq!(early.level, 3);
        let mut calm = EarlyStart::default();
        for _ in 0..20 {
            calm = calm.next(false);
        }
        assert_eq!(calm, EarlyStart::default());
    }
}
