//! The state shared by a store handle and its compactor, and the write and flush paths.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::bonjson::Limits;
use crate::compactor::Command;
use crate::events::Event;
use crate::journal::Journal;
use crate::journal::format::{self, HEADER_SIZE, Op};
use crate::options::{Builder, Durability};
use crate::pace::Pace;
use crate::prefault::PrefaultAhead;
use crate::snapshot::{Change, ChangeKey, Publisher, Version};
use crate::stats::Counters;
use crate::sync::channel::Sender;
use crate::sync::{Arc, ArcSwap, AtomicBool, Condvar, Mutex};
use crate::{Error, Result, Value};

/// State shared by the store handle and the compactor thread.
pub(crate) struct Shared {
    pub(crate) writer: Mutex<Writer>,
    /// Signalled after every swap or failed compaction, for writers waiting for room.
    pub(crate) swapped: Condvar,
    pub(crate) published: ArcSwap<Version>,
    /// The journal the compactor writes next; `None` while it is being written.
    pub(crate) inactive: Mutex<Option<Arc<Journal>>>,
    pub(crate) config: Builder,
    pub(crate) limits: Limits,
    pub(crate) commands: Sender<Command>,
    pub(crate) subscribers: Mutex<Vec<Sender<Event>>>,
    pub(crate) open_events: Vec<Event>,
    pub(crate) poison: Mutex<Option<String>>,
    pub(crate) poisoned: AtomicBool,
    /// The poison came from a failed flush (Linux then marks the pages clean without writing
    /// them, so no later flush can be trusted). Any other poison (a panicking compactor, a
    /// failed append) leaves the active journal's flushes sound: dropping the store still
    /// flushes it.
    pub(crate) flush_failed: AtomicBool,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) sync_lock: Mutex<()>,
    /// Held by a read-only store's `refresh` from copying the files to publishing what they
    /// hold, so that a slower refresh never publishes an older copy after a newer one.
    pub(crate) refresh_lock: Mutex<()>,
    pub(crate) stats: Counters,
    /// Callers of `sync_through` that reached the flush lock (tests wait for a `sync()` to be
    /// queued behind a held flush instead of sleeping).
    #[cfg(test)]
    pub(crate) syncers_at_the_lock: std::sync::atomic::AtomicUsize,
}

/// Everything the single writer lock protects.
pub(crate) struct Writer {
    pub(crate) active: Arc<Journal>,
    pub(crate) publisher: Publisher,
    /// A reusable buffer for the changes of one write.
    pub(crate) changes: Vec<Change>,
    pub(crate) seq: u64,
    /// A compaction has been requested and has not finished.
    pub(crate) compacting: bool,
    /// A clear queued a compaction that no compaction has taken its start after yet: if one
    /// that started before the clear ends, `compacting` stays set for the one queued.
    pub(crate) compaction_queued: bool,
    /// Compactions that ended in failure (writers waiting for room watch this).
    pub(crate) failures: u64,
    /// Compactions that could not grow the journals as far as they wanted (a full disk) and
    /// went on at the size they had: a writer waiting for room it still does not have after
    /// one of them gets `Full` instead of waiting for growth that is not coming.
    pub(crate) growth_refused: u64,
    /// Compactions numbered so far (the compactor numbers each as it picks it up, before it
    /// takes its start position), and the number of the last one that swapped: a writer
    /// waiting for room gives up (with `Full`, or a failed compaction's error) only after a
    /// compaction numbered after it began waiting has swapped or failed, never on one that
    /// was already running (which may not have seen the garbage its overwrites made, nor the
    /// room it needs).
    pub(crate) compactions_started: u64,
    pub(crate) last_swapped: u64,
    /// Where the last swap's journal ends with only the live data and the commit marker (the
    /// records its compaction copied over from while it ran, mostly overwrites, left out): the
    /// room a waiting writer can count on once those are compacted too.
    pub(crate) end_at_swap: usize,
    /// How far ahead of the writers the compactor was asked to map the journal writable.
    pub(crate) prefault: PrefaultAhead,
    /// The number of the last compaction that failed (see `compactions_started`).
    pub(crate) last_failed: u64,
    /// Its error, which the writers that waited for it get.
    pub(crate) last_failure: Option<Error>,
    /// The generation whose high-water mark already fired the callback.
    pub(crate) hwm_fired: u64,
    /// Position past which the next automatic compaction starts.
    pub(crate) trigger: usize,
    /// The smallest generation a compaction may use next: above every generation that may
    /// have records in either file, so a number is never reused.
    pub(crate) next_generation: u64,
    /// Room the writers waiting for a compaction need in the next journal.
    pub(crate) room_needed: usize,
    /// A writer found the active journal full and waited for the running compaction: later
    /// ones then start earlier (see `compactor::EarlyStart`), so that compactions that cannot
    /// keep up with the writers do not stall them again and again.
    pub(crate) waited_for_room: bool,
    /// How much earlier than usual automatic compactions start.
    pub(crate) early: crate::compactor::EarlyStart,
    /// The writers' rate and the latest start it implies (see `pace`).
    pub(crate) pace: Pace,
}

impl Writer {
    /// Whether an automatic compaction is due: the journal passed its trigger, or the point
    /// past which a compaction would not end before the writers fill the journal.
    pub(crate) fn compaction_due(&self) -> bool {
        !self.compacting && self.active.end() > self.trigger.min(self.pace.latest_start)
    }

    /// Lets the pace read the clock if the journal passed the end of its window; `keys`
    /// counts the live keys (called only then).
    fn measure_pace(&mut self, keys: impl FnOnce() -> usize) {
        let end = self.active.end();
        if !cfg!(loom) && self.pace.due(end) {
            let capacity = self.active.capacity();
            let room_end = capacity - self.active.reserve();
            let now = std::time::Instant::now();
            self.pace.check(end, capacity, room_end, keys(), now);
        }
    }
}

/// What must still hold, under the writer lock, for a write of `ops` to append; if it does
/// not, nothing is written and the write returns `Ok(None)` (an update's remembers it: a
/// wrapper around the return value cost every write ~20 instructions).
trait Precondition {
    fn holds(&self, published: &ArcSwap<Version>, ops: &[Op]) -> bool;
}

/// Plain writes: nothing to check (compiled away).
struct Always;

impl Precondition for Always {
    #[inline(always)]
    fn holds(&self, _: &ArcSwap<Version>, _: &[Op]) -> bool {
        true
    }
}

/// An update's precondition: `key` still holds the very value (the same allocation) it held
/// when the write was computed, or is still absent. Every put makes a new allocation and
/// `seen` keeps the old one alive, so its address cannot come back for another value.
struct Unchanged<'a> {
    key: &'a str,
    seen: Option<std::sync::Arc<Value>>,
    /// Set when the check failed and nothing was written.
    failed: std::cell::Cell<bool>,
}

impl Precondition for Unchanged<'_> {
    fn holds(&self, published: &ArcSwap<Version>, _: &[Op]) -> bool {
        let holds = match (published.load().map.get(self.key), &self.seen) {
            (None, None) => true,
            (Some(now), Some(seen)) => std::sync::Arc::ptr_eq(now, seen),
            _ => false,
        };
        self.failed.set(!holds);
        holds
    }
}

/// The precondition of a write of removals only: one of them removes a key that is present.
/// If none does, nothing is appended (no record, no new version), and it remembers that.
#[derive(Default)]
struct RemovesSomething {
    removes: std::cell::Cell<bool>,
}

impl Precondition for RemovesSomething {
    fn holds(&self, published: &ArcSwap<Version>, ops: &[Op]) -> bool {
        let version = published.load();
        let removes = ops
            .iter()
            .any(|op| matches!(op, Op::Delete(key) if version.map.contains_key(key.as_str())));
        self.removes.set(removes);
        removes
    }
}

/// The largest encode buffer a writing thread keeps between writes.
const KEEP_BODY_CAPACITY: usize = 1024 * 1024;

thread_local! {
    /// Each writing thread's buffer for encoding record bodies (no allocation per write).
    static BODY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The size of the record for a body of `body_len` bytes, or `TooLarge` if no journal of
/// `max_size` could ever hold it: removals may use the journal's reserve (1/32 of it), anything
/// that can add data may not, so such a record is refused now rather than after growing the
/// journals and waiting for compactions. A frame's length field has 32 bits, which bounds the
/// body too, whatever `max_size` allows.
fn check_record_size(body_len: usize, removal_only: bool, max_size: usize) -> Result<usize> {
    let size = Journal::record_size(body_len);
    let reserve = if removal_only { 0 } else { max_size / 32 };
    let max_records = max_size.saturating_sub(HEADER_SIZE + 64 + reserve);
    if size > max_records || u32::try_from(body_len).is_err() {
        return Err(Error::TooLarge {
            size: size as u64,
            max_size: max_size as u64,
        });
    }
    Ok(size)
}

pub(crate) fn hwm_pos(config: &Builder, capacity: usize) -> usize {
    ((capacity as f64) * f64::from(config.high_water_mark)) as usize
}

impl Shared {
    pub(crate) fn check_poison(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            Err(self.poison_error())
        } else {
            Ok(())
        }
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.config.read_only {
            Err(Error::ReadOnly {
                path: self.config.base.clone(),
            })
        } else {
            Ok(())
        }
    }

    pub(crate) fn poison_error(&self) -> Error {
        let reason = self
            .poison
            .lock()
            .clone()
            .unwrap_or_else(|| "the store was closed".into());
        Error::Poisoned { reason }
    }

    pub(crate) fn poison(&self, reason: String) {
        let mut slot = self.poison.lock();
        if slot.is_none() {
            *slot = Some(reason);
        }
        self.poisoned.store(true, Ordering::Release);
        drop(slot);
        // Wake writers waiting for room so they see the poison. This may be called with the
        // writer lock held, so it does not take it; waiting writers also re-check every few
        // milliseconds, so a wake-up that races their check is never lost for long.
        self.swapped.notify_all();
    }

    /// The last flush of a store being dropped: everything appended to the active journal,
    /// also when the store is poisoned, unless by a failed flush (then nothing is trusted and
    /// nothing is tried). Errors are dropped with the store.
    pub(crate) fn final_flush(&self) {
        if !self.poisoned.load(Ordering::Acquire) {
            let _ = self.sync_through(None);
            return;
        }
        if self.flush_failed.load(Ordering::Acquire) {
            return;
        }
        let _one_flusher = self.sync_lock.lock();
        let journal = Arc::clone(&self.writer.lock().active);
        if journal.flush().is_err() {
            self.flush_failed.store(true, Ordering::Release);
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        self.subscribers
            .lock()
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    pub(crate) fn request_compaction(&self, reply: Option<Sender<Result<()>>>) {
        {
            let mut w = self.writer.lock();
            if reply.is_none() && w.compacting {
                return;
            }
            w.compacting = true;
        }
        if self.commands.send(Command::Compact { reply }).is_err() {
            self.writer.lock().compacting = false;
        }
    }

    /// Queues a compaction even if one is running: that one may have started before the
    /// change that asks for this (a clear), so it cannot serve it.
    pub(crate) fn queue_compaction(&self) {
        {
            let mut w = self.writer.lock();
            // Cleared by the compaction that takes its start after this point.
            w.compaction_queued = true;
            w.compacting = true;
        }
        if self
            .commands
            .send(Command::Compact { reply: None })
            .is_err()
        {
            let mut w = self.writer.lock();
            w.compacting = false;
            w.compaction_queued = false;
        }
    }

    pub(crate) fn maybe_request_compaction(&self) {
        let due = self.writer.lock().compaction_due();
        if due {
            self.request_compaction(None);
        }
    }

    /// Appends one record with `ops` and publishes the new map: the heart of every write.
    /// `ops` is an array for single operations (no allocation) or a batch's `Vec`.
    pub(crate) fn write<O>(&self, ops: O, want_previous: bool) -> Result<Option<Value>>
    where
        O: AsRef<[Op]> + IntoIterator<Item = Op>,
    {
        self.check_write(ops.as_ref())?;
        self.encode_and_write(ops, want_previous, &Always)
    }

    /// As `write`, but `ops` that change nothing (removals of absent keys only) append nothing;
    /// in `Durability::Sync` mode they return once what they saw is durable (`wrote_nothing`).
    pub(crate) fn write_unless_no_op<O>(&self, ops: O, want_previous: bool) -> Result<Option<Value>>
    where
        O: AsRef<[Op]> + IntoIterator<Item = Op>,
    {
        self.check_write(ops.as_ref())?;
        // Decided outside the lock: a write that puts anything changes something.
        if ops.as_ref().iter().any(|op| !matches!(op, Op::Delete(_))) {
            return self.encode_and_write(ops, want_previous, &Always);
        }
        let precondition = RemovesSomething::default();
        let previous = self.encode_and_write(ops, want_previous, &precondition)?;
        if !precondition.removes.get() {
            self.wrote_nothing()?;
        }
        Ok(previous)
    }

    /// What every write checks first: the store takes writes, and the keys are valid.
    #[inline]
    fn check_write(&self, ops: &[Op]) -> Result<()> {
        self.check_writable()?;
        self.check_poison()?;
        for op in ops {
            if let Op::Put(key, _) | Op::Delete(key) = op {
                format::check_key(key)?;
            }
        }
        Ok(())
    }

    /// For a write that found nothing to change: in `Durability::Sync` mode, returns once what
    /// it saw is durable (another thread's write it saw may still wait for its flush).
    fn wrote_nothing(&self) -> Result<()> {
        if self.config.durability == Durability::Sync {
            self.sync_through(None)?;
        }
        Ok(())
    }

    /// Replaces the value of `key` with what `f` computes from the current one, atomically
    /// with respect to every other write; returns the value stored (`None`: removed, or left
    /// absent). Optimistic: `f` runs without the writer lock, and if another write changed
    /// `key` before this one could append, `f` runs again on the newer value.
    pub(crate) fn update(
        &self,
        key: &str,
        mut f: impl FnMut(Option<&Value>) -> Option<Value>,
    ) -> Result<Option<Value>> {
        self.check_writable()?;
        self.check_poison()?;
        format::check_key(key)?;
        loop {
            let seen = self.published.load().map.get(key).cloned();
            let new = f(seen.as_deref()).filter(|value| !value.is_null());
            let op = match &new {
                Some(value) => Op::Put(key.to_owned(), value.clone()),
                // Nothing to write, as for a removal of an absent key.
                None if seen.is_none() => {
                    self.wrote_nothing()?;
                    return Ok(None);
                }
                None => Op::Delete(key.to_owned()),
            };
            let unchanged = Unchanged {
                key,
                seen,
                failed: std::cell::Cell::new(false),
            };
            self.encode_and_write([op], false, &unchanged)?;
            if !unchanged.failed.get() {
                return Ok(new);
            }
        }
    }

    /// Encodes `ops` and appends them if `precondition` holds under the writer lock (if it
    /// does not, nothing is written and the precondition says so).
    fn encode_and_write<O, P>(
        &self,
        ops: O,
        want_previous: bool,
        precondition: &P,
    ) -> Result<Option<Value>>
    where
        O: AsRef<[Op]> + IntoIterator<Item = Op>,
        P: Precondition,
    {
        let mut body = BODY.with(|b| std::mem::take(&mut *b.borrow_mut()));
        body.clear();
        let encoded = format::encode_body(ops.as_ref(), &self.limits, &mut body);
        let result =
            encoded.and_then(|()| self.append_and_publish(&body, ops, want_previous, precondition));
        // Kept for the thread's next write, unless one large value grew it: a thread must not
        // hold on to the largest record it ever encoded (or was refused).
        if body.capacity() > KEEP_BODY_CAPACITY {
            body = Vec::new();
        }
        BODY.with(|b| *b.borrow_mut() = body);
        result
    }

    fn append_and_publish<O, P>(
        &self,
        body: &[u8],
        ops: O,
        want_previous: bool,
        precondition: &P,
    ) -> Result<Option<Value>>
    where
        O: AsRef<[Op]> + IntoIterator<Item = Op>,
        P: Precondition,
    {
        let removal_only = ops
            .as_ref()
            .iter()
            .all(|op| matches!(op, Op::Delete(_) | Op::Clear));
        let size = check_record_size(body.len(), removal_only, self.config.max_size)?;

        let mut w = self.writer.lock();
        // Set when this write first finds no room: the compactions started by then.
        let mut waiting_since: Option<u64> = None;
        let mut growth_refused = w.growth_refused;
        loop {
            self.check_poison()?;
            // Under the lock (again after any wait for room, which released it), so that no
            // write can come between this check and the append.
            if !precondition.holds(&self.published, ops.as_ref()) {
                return Ok(None);
            }
            let limit = if removal_only {
                w.active.capacity()
            } else {
                w.active.capacity() - w.active.reserve()
            };
            let appended = w.active.append_within(body, limit).map_err(|e| {
                self.poison(format!("append failed: {e}"));
                crate::error::io_err("append", w.active.storage().path())(e)
            })?;
            if appended {
                break;
            }
            // The journal is full: a compaction must make room. Writers wait; a write never
            // fails only because compaction is behind. It fails with `Full` only when a
            // compaction at the largest allowed size still leaves no room, and with the
            // compaction's own error when one failed.
            // Only compactions numbered after this write began waiting decide it: one of them
            // failed, or swapped and still left no room at the largest size (or could not
            // grow). Checked after the append failed again, so a swap that made room always
            // gets its chance first.
            let failed_since = waiting_since.is_some_and(|since| w.last_failed > since);
            let mut compacted_since = waiting_since.is_some_and(|since| w.last_swapped > since);
            if compacted_since && !failed_since && w.end_at_swap + size <= limit {
                // That swap made room for this write, but other writers took it before this
                // one got the lock back, or the compaction copied over what they appended
                // while it ran: it decides nothing. Wait for the next compaction as a new wait
                // (with 6 writers at the largest size, about 1 write in 40 got `Full` this way
                // while the journal was mostly garbage).
                waiting_since = None;
                compacted_since = false;
            }
            // A compaction that failed for any reason but a lack of room passes its error on
            // (the store may well have room once a compaction succeeds); one that found no
            // room gives this write its own `Full`, which counts this record.
            if failed_since
                && let Some(failure) = &w.last_failure
                && !matches!(failure, Error::Full { .. })
            {
                return Err(crate::compactor::duplicate_error(failure));
            }
            if failed_since
                || compacted_since
                    && (w.active.capacity() >= self.config.max_size
                        || w.growth_refused != growth_refused)
            {
                return Err(Error::Full {
                    needed: (w.active.end() + size) as u64,
                    max_size: self.config.max_size as u64,
                });
            }
            if waiting_since.is_none() {
                self.stats.waits_for_room.fetch_add(1, Ordering::Relaxed);
            }
            let since = *waiting_since.get_or_insert(w.compactions_started);
            if w.last_swapped <= since {
                // The refusals that count are those of compactions this write waited for.
                growth_refused = w.growth_refused;
            }
            w.room_needed = w.room_needed.max(size);
            w.waited_for_room = true;
            let failures = w.failures;
            if !w.compacting {
                w.compacting = true;
                if self
                    .commands
                    .send(Command::Compact { reply: None })
                    .is_err()
                {
                    w.compacting = false;
                    return Err(self.poison_error());
                }
            }
            // Woken by any swap (the room may be there now, or this write must say again what
            // it needs: a swap forgets the claims it served), by a failure, or by poison.
            let swapped = w.last_swapped;
            while w.compacting
                && w.failures == failures
                && w.last_swapped == swapped
                && !self.poisoned.load(Ordering::Acquire)
            {
                self.swapped.wait_for(&mut w, Duration::from_millis(5));
            }
        }

        let mut changes = std::mem::take(&mut w.changes);
        changes.extend(ops.into_iter().map(|op| match op {
            Op::Put(key, value) => Change::Put(ChangeKey::new(key), std::sync::Arc::new(value)),
            Op::Delete(key) => Change::Delete(ChangeKey::new(key)),
            Op::Clear => Change::Clear,
        }));
        w.seq += 1;
        let seq = w.seq;
        let previous = w
            .publisher
            .publish(&self.published, &mut changes, seq, want_previous);
        w.changes = changes;
        // Maps a clear replaced are freed below, after the writer lock is released.
        let garbage = std::mem::take(&mut w.publisher.garbage);

        let end = w.active.end();
        let capacity = w.active.capacity();
        let hwm = hwm_pos(&self.config, capacity);
        let mut fire = None;
        if end > hwm && w.hwm_fired != w.active.generation() {
            w.hwm_fired = w.active.generation();
            fire = self.config.callback;
        }
        if self.config.pace_compactions {
            w.measure_pace(|| self.published.load().map.len());
        }
        let compact = w.compaction_due();
        if compact {
            w.compacting = true;
        }
        let journal = (self.config.durability == Durability::Sync).then(|| Arc::clone(&w.active));
        // Not in `Sync` mode, whose flush at every write leaves the pages write-protected
        // again; not under loom, whose storage has no pages.
        let prefault = if journal.is_none() && !cfg!(loom) {
            let generation = w.active.generation();
            w.prefault.due(generation, end)
        } else {
            None
        };
        drop(w);
        if let Some(request) = prefault {
            // A hint: if the compactor is gone, there is nothing to map for.
            let _ = self.commands.send(Command::Prefault(request));
        }
        if compact
            && self
                .commands
                .send(Command::Compact { reply: None })
                .is_err()
        {
            self.writer.lock().compacting = false;
        }
        // After the requests: freeing a cleared map of millions of keys takes a while, and
        // writers waiting for room rely on the compaction request being on its way.
        drop(garbage);
        // Synced before the callback runs, and the journal let go of: the compactor waits for
        // every holder of a journal before it reuses the file, so a callback that compacts or
        // writes (and waits for that compaction) must not run while this write holds one.
        let synced = match journal {
            Some(journal) => self.sync_through(Some((journal, end))),
            None => Ok(()),
        };
        if let Some(callback) = fire {
            callback(end, capacity, hwm);
        }
        synced?;
        Ok(previous)
    }

    /// Flushes until the write ending at `target` (or everything so far) is durable, sharing
    /// one flush among concurrent callers (group commit).
    pub(crate) fn sync_through(&self, target: Option<(Arc<Journal>, usize)>) -> Result<()> {
        self.check_poison()?;
        let (mut journal, mut end) = match target {
            Some(t) => t,
            None => {
                let w = self.writer.lock();
                (Arc::clone(&w.active), w.active.end())
            }
        };
        loop {
            {
                #[cfg(test)]
                self.syncers_at_the_lock.fetch_add(1, Ordering::SeqCst);
                let _one_flusher = self.sync_lock.lock();
                self.check_poison()?;
                if (journal.synced() < end || journal.header_dirty())
                    && let Err(e) = journal.flush()
                {
                    self.flush_failed.store(true, Ordering::Release);
                    self.poison(format!("flush failed: {e}"));
                    return Err(crate::error::io_err("msync", journal.storage().path())(e));
                }
            }
            // If a swap happened meanwhile, the records now live in the new journal, which
            // must be flushed too.
            let w = self.writer.lock();
            if Arc::ptr_eq(&w.active, &journal) {
                return Ok(());
            }
            journal = Arc::clone(&w.active);
            end = w.active.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::format::FRAME_SIZE;

    /// In `Sync` mode a removal that finds its key absent returns only once that absence is
    /// durable: here the key is absent because another thread's removal is published and its
    /// flush is held.
    #[test]
    fn a_removal_of_an_absent_key_waits_for_the_flush_of_the_removal_it_saw() {
        // The second removal alone, and as a batch of removals of absent keys.
        for batch in [false, true] {
            removal_waits_for_the_flush_it_saw(batch);
        }
    }

    fn removal_waits_for_the_flush_it_saw(batch: bool) {
        use crate::journal::storage::{DiskOp, MemBackend};
        let disk = MemBackend::new();
        let store = crate::KVStore::open_on(
            Builder::new(std::path::Path::new("mem"))
                .buffer_size(64 * 1024)
                .durability(Durability::Sync),
            &disk,
        )
        .unwrap();
        store.insert("k".into(), Value::Integer(1)).unwrap();
        /// Lets held flushes go however the test ends: a failed assertion must not leave the
        /// first removal held and the scope waiting for it.
        struct Release<'a>(&'a MemBackend);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.pause_when(None);
            }
        }
        disk.pause_when(Some(Box::new(|op| {
            matches!(op, DiskOp::Flush { .. } | DiskOp::Sync { .. })
        })));
        std::thread::scope(|scope| {
            let release = Release(&disk);
            let first = scope.spawn(|| store.remove("k"));
            crate::test_support::wait_until("the first removal's flush to be held", || {
                disk.held() > 0
            });
            assert!(!store.contains_key("k"), "the first removal is published");
            let queued = store.shared.syncers_at_the_lock.load(Ordering::SeqCst);
            let second = scope.spawn(|| {
                if batch {
                    let mut removals = crate::Batch::new();
                    removals.remove("k").remove("never there");
                    store.write_batch(removals).map(|()| None)
                } else {
                    store.remove("k")
                }
            });
            // The second removal must queue behind the held flush: it reaches the flushers'
            // lock (which the first removal holds) and cannot return before it is released.
            // A removal that skipped the wait would return without ever reaching it.
            crate::test_support::wait_until("the second removal to wait for the flush", || {
                second.is_finished()
                    || store.shared.syncers_at_the_lock.load(Ordering::SeqCst) > queued
            });
            std::thread::sleep(Duration::from_millis(10));
            let returned_early = second.is_finished();
            drop(release);
            assert!(
                !returned_early,
                "a removal (batch: {batch}) returned before the removal it saw was durable"
            );
            assert_eq!(first.join().unwrap().unwrap(), Some(Value::Integer(1)));
            assert_eq!(second.join().unwrap().unwrap(), None);
        });
    }

    /// A writing thread does not keep the buffer a large value grew, accepted or refused.
    #[test]
    fn a_large_value_leaves_no_large_buffer_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::KVStore::builder(dir.path().join("buffer"))
            .buffer_size(64 * 1024)
            .max_size(64 * 1024)
            .open()
            .unwrap();
        let capacity = || BODY.with(|b| b.borrow().capacity());
        store
            .insert("small".into(), crate::Value::Integer(1))
            .unwrap();
        assert!(capacity() > 0 && capacity() <= KEEP_BODY_CAPACITY);
        let large = crate::Value::from("x".repeat(4 * KEEP_BODY_CAPACITY));
        assert!(matches!(
            store.insert("large".into(), large),
            Err(Error::TooLarge { .. })
        ));
        assert!(capacity() <= KEEP_BODY_CAPACITY, "{}", capacity());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_body_past_the_frames_32_bit_length_is_too_large_whatever_max_size_allows() {
        let max_size = 16 << 30;
        let largest = u32::MAX as usize;
        assert!(check_record_size(largest, false, max_size).is_ok());
        assert!(matches!(
            check_record_size(largest + 1, false, max_size),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            check_record_size(largest + 1, true, max_size),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn only_removals_may_use_the_reserve() {
        let max_size = 1 << 20;
        let fits_reserve = max_size - HEADER_SIZE - 64 - FRAME_SIZE - 100;
        assert!(check_record_size(fits_reserve, true, max_size).is_ok());
        assert!(check_record_size(fits_reserve, false, max_size).is_err());
        assert!(check_record_size(100, false, max_size).is_ok());
    }
}
