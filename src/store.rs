//! [`KVStore`]: the public API over the journals, the published map and the compactor.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::bonjson::{DecodeOptions, Limits};
use crate::compactor::{self, Command};
use crate::events::Event;
use crate::journal::Journal;
use crate::journal::format::{self, HEADER_SIZE, Op};
use crate::journal::mmap::FileBackend;
use crate::journal::recovery::{self, Tail};
use crate::journal::storage::Backend;
use crate::options::{Builder, Durability};
use crate::snapshot::{Change, Map, Publisher, Snapshot, Version};
use crate::{Error, Result, Value};

/// A crash-resilient, thread-safe key-value store. Share it as `Arc<KVStore>`.
///
/// ```
/// # fn main() -> resilient_kv::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use resilient_kv::{KVStore, Value};
///
/// let store = KVStore::new(dir.path().join("settings"), 64 * 1024, None, None)?;
/// store.insert("volume".to_string(), Value::Integer(30))?;
/// assert_eq!(store.get("volume")?, Some(Value::Integer(30)));
/// # Ok(()) }
/// ```
///
/// `KVStore` is `Send + Sync`:
/// ```
/// fn shareable<T: Send + Sync>() {}
/// shareable::<resilient_kv::KVStore>();
/// shareable::<resilient_kv::Snapshot>();
/// ```
pub struct KVStore {
    pub(crate) shared: Arc<Shared>,
    compactor: Option<std::thread::JoinHandle<()>>,
}

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
    subscribers: Mutex<Vec<Sender<Event>>>,
    open_events: Vec<Event>,
    poison: Mutex<Option<String>>,
    poisoned: AtomicBool,
    pub(crate) shutting_down: AtomicBool,
    sync_lock: Mutex<()>,
    pub(crate) stats: Counters,
}

/// Everything the single writer lock protects.
pub(crate) struct Writer {
    pub(crate) active: Arc<Journal>,
    pub(crate) publisher: Publisher,
    /// A reusable buffer for the changes of one write.
    changes: Vec<Change>,
    pub(crate) seq: u64,
    /// A compaction has been requested and has not finished.
    pub(crate) compacting: bool,
    /// Compactions that ended in failure (writers waiting for room watch this).
    pub(crate) failures: u64,
    /// The generation whose high-water mark already fired the callback.
    hwm_fired: u64,
    /// Position past which the next automatic compaction starts.
    pub(crate) trigger: usize,
    /// Room the writers waiting for a compaction need in the next journal.
    pub(crate) room_needed: usize,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) compactions: AtomicU64,
    pub(crate) last_compaction_nanos: AtomicU64,
    pub(crate) inactive_capacity: AtomicU64,
    pub(crate) inactive_used: AtomicU64,
    pub(crate) data_loss: AtomicU64,
}

/// Figures from [`KVStore::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The active journal's generation.
    pub generation: u64,
    /// Bytes used in the active journal.
    pub active_used: u64,
    /// Size of the active journal.
    pub active_capacity: u64,
    /// Size of the inactive journal.
    pub inactive_capacity: u64,
    /// Bytes used in the inactive journal (what it held when it was retired; the next
    /// compaction overwrites it).
    pub inactive_used: u64,
    /// Live keys.
    pub live_keys: u64,
    /// Compactions finished since open.
    pub compactions: u64,
    /// Duration of the last compaction.
    pub last_compaction: Option<Duration>,
    /// Damage found and worked around at open (see [`Event::DataLoss`]).
    pub data_loss_events: u64,
}

/// Several inserts and removes applied all-or-nothing, also across a crash.
///
/// ```
/// # fn main() -> resilient_kv::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use resilient_kv::{Batch, KVStore, Value};
/// let store = KVStore::new(dir.path().join("app"), 64 * 1024, None, None)?;
/// let mut batch = Batch::new();
/// batch.insert("from", Value::Integer(90)).insert("to", Value::Integer(10)).remove("pending");
/// store.write_batch(batch)?;
/// assert_eq!(store.get("to")?, Some(Value::Integer(10)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Adds an insert (`Value::Null` removes the key).
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        let key = key.into();
        self.ops.push(if value.is_null() {
            Op::Delete(key)
        } else {
            Op::Put(key, value)
        });
        self
    }

    /// Adds a removal.
    pub fn remove(&mut self, key: impl Into<String>) -> &mut Self {
        self.ops.push(Op::Delete(key.into()));
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl KVStore {
    /// Opens (or creates) the store at `base_path` (files `<base_path>.jrna` and `.jrnb`) with
    /// journals of `buffer_size` bytes. `high_water_mark_ratio` defaults to 0.8; `callback` is
    /// called with `(current_pos, buffer_size, hwm_pos)` each time a journal generation
    /// crosses its high-water mark.
    pub fn new(
        base_path: impl AsRef<Path>,
        buffer_size: usize,
        high_water_mark_ratio: Option<f32>,
        callback: Option<fn(usize, usize, usize)>,
    ) -> Result<KVStore> {
        let mut builder = Builder::new(base_path.as_ref()).buffer_size(buffer_size);
        if let Some(ratio) = high_water_mark_ratio {
            builder = builder.high_water_mark(ratio);
        }
        if let Some(callback) = callback {
            builder = builder.on_high_water_mark(callback);
        }
        builder.open()
    }

    /// A builder for every setting.
    pub fn builder(base_path: impl AsRef<Path>) -> Builder {
        Builder::new(base_path.as_ref())
    }

    pub(crate) fn open_with(config: Builder) -> Result<KVStore> {
        config.validate()?;
        let backend = FileBackend::new(&config.base);
        Self::open_on(config, &backend)
    }

    pub(crate) fn open_on(config: Builder, backend: &dyn Backend) -> Result<KVStore> {
        config.validate()?;
        let limits = Limits::default();
        let decode = DecodeOptions::default();
        let opened = recovery::open(backend, config.buffer_size, &decode)?;
        let map: Map = opened
            .entries
            .into_iter()
            .map(|(k, v)| (Arc::from(k), Arc::new(v)))
            .collect();
        let open_events = loss_events(&opened.active, &opened.tail, &opened.notes);
        let stats = Counters::default();
        stats
            .data_loss
            .store(open_events.len() as u64, Ordering::Relaxed);
        stats
            .inactive_capacity
            .store(opened.inactive.capacity() as u64, Ordering::Relaxed);
        let active = Arc::new(opened.active);
        let trigger = hwm_pos(&config, active.capacity());
        let (commands, receiver) = crossbeam_channel::unbounded();
        let (published, publisher) = Publisher::new(map);
        let shared = Arc::new(Shared {
            published: ArcSwap::new(published),
            writer: Mutex::new(Writer {
                active,
                publisher,
                changes: Vec::new(),
                seq: 0,
                compacting: false,
                failures: 0,
                hwm_fired: 0,
                trigger,
                room_needed: 0,
            }),
            swapped: Condvar::new(),
            inactive: Mutex::new(Some(Arc::new(opened.inactive))),
            config,
            limits,
            commands,
            subscribers: Mutex::new(Vec::new()),
            open_events,
            poison: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            sync_lock: Mutex::new(()),
            stats,
        });
        let compactor = compactor::spawn(Arc::clone(&shared), receiver)
            .map_err(crate::error::io_err("spawn compactor", &shared.config.base))?;
        let store = KVStore {
            shared,
            compactor: Some(compactor),
        };
        // A journal left above its mark (e.g. by a crash before compaction) compacts now.
        store.shared.maybe_request_compaction();
        Ok(store)
    }

    /// The value under `key`. Never blocks and never touches the disk.
    pub fn get(&self, key: &str) -> Result<Option<Value>> {
        Ok(self
            .shared
            .published
            .load()
            .map
            .get(key)
            .map(|v| Value::clone(v)))
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.shared.published.load().map.contains_key(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.shared.published.load().map.len()
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All keys, in no particular order.
    pub fn keys(&self) -> Vec<String> {
        self.snapshot().keys()
    }

    /// All values, in no particular order.
    pub fn values(&self) -> Vec<Value> {
        self.snapshot().iter().map(|(_, v)| v.clone()).collect()
    }

    /// A copy of the whole store.
    pub fn as_hashmap(&self) -> HashMap<String, Value> {
        self.snapshot().to_hashmap()
    }

    /// An O(1) immutable view of the whole store; see [`Snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.shared.published.load_full())
    }

    /// Stores `value` under `key` and returns the previous value. Inserting `Value::Null`
    /// removes the key. On error nothing changed.
    pub fn insert(&self, key: String, value: Value) -> Result<Option<Value>> {
        let op = if value.is_null() {
            Op::Delete(key)
        } else {
            Op::Put(key, value)
        };
        self.shared.write(vec![op], true)
    }

    /// Removes `key` and returns its value.
    pub fn remove(&self, key: &str) -> Result<Option<Value>> {
        self.shared.write(vec![Op::Delete(key.to_owned())], true)
    }

    /// Applies every operation of `batch`, or none of them (also across a crash).
    pub fn write_batch(&self, batch: Batch) -> Result<()> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        self.shared.write(batch.ops, false).map(drop)
    }

    /// Removes every key. A crash afterwards never brings them back.
    pub fn clear(&self) -> Result<()> {
        self.shared.write(vec![Op::Clear], false)?;
        self.shared.request_compaction(None);
        Ok(())
    }

    /// Makes every write acknowledged so far survive power loss (msync, then fdatasync).
    pub fn sync(&self) -> Result<()> {
        self.shared.sync_through(None)
    }

    /// Compacts now and waits for the switch to the new journal.
    pub fn compact(&self) -> Result<()> {
        let (reply, done) = crossbeam_channel::bounded(1);
        self.shared.request_compaction(Some(reply));
        match done.recv() {
            Ok(result) => result,
            Err(_) => Err(self.shared.poison_error()),
        }
    }

    /// Notifications about compactions, growth and data loss found at open (those are
    /// delivered to every new subscriber first).
    pub fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = crossbeam_channel::unbounded();
        for event in &self.shared.open_events {
            let _ = tx.send(event.clone());
        }
        self.shared.subscribers.lock().push(tx);
        rx
    }

    /// Current figures.
    pub fn stats(&self) -> Stats {
        let (generation, used, capacity, live) = {
            let w = self.shared.writer.lock();
            (
                w.active.generation(),
                w.active.end(),
                w.active.capacity(),
                self.shared.published.load().map.len(),
            )
        };
        let s = &self.shared.stats;
        let last = s.last_compaction_nanos.load(Ordering::Relaxed);
        Stats {
            generation,
            active_used: used as u64,
            active_capacity: capacity as u64,
            inactive_capacity: s.inactive_capacity.load(Ordering::Relaxed),
            inactive_used: s.inactive_used.load(Ordering::Relaxed),
            live_keys: live as u64,
            compactions: s.compactions.load(Ordering::Relaxed),
            last_compaction: (last > 0).then(|| Duration::from_nanos(last)),
            data_loss_events: s.data_loss.load(Ordering::Relaxed),
        }
    }
}

impl Drop for KVStore {
    fn drop(&mut self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        let _ = self.shared.commands.send(Command::Shutdown);
        if let Some(handle) = self.compactor.take() {
            let _ = handle.join();
        }
        if !self.shared.poisoned.load(Ordering::Acquire) {
            let _ = self.shared.sync_through(None);
        }
    }
}

thread_local! {
    /// Each writing thread's buffer for encoding record bodies (no allocation per write).
    static BODY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn hwm_pos(config: &Builder, capacity: usize) -> usize {
    ((capacity as f64) * f64::from(config.high_water_mark)) as usize
}

fn loss_events(active: &Journal, tail: &Tail, notes: &[String]) -> Vec<Event> {
    let path = active.storage().path().to_path_buf();
    let mut events: Vec<Event> = notes
        .iter()
        .map(|note| Event::DataLoss {
            path: path.clone(),
            offset: 0,
            lost_bytes: 0,
            detail: note.clone(),
        })
        .collect();
    if let Tail::Damaged {
        offset,
        valid_until,
    } = *tail
    {
        events.push(Event::DataLoss {
            path,
            offset: offset as u64,
            lost_bytes: (valid_until - offset) as u64,
            detail: format!(
                "damaged record at byte {offset}; {} bytes of later records of generation {} \
                 were not replayed",
                valid_until - offset,
                active.generation()
            ),
        });
    }
    events
}

impl Shared {
    pub(crate) fn check_poison(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            Err(self.poison_error())
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

    fn maybe_request_compaction(&self) {
        let due = {
            let w = self.writer.lock();
            !w.compacting && w.active.end() > w.trigger
        };
        if due {
            self.request_compaction(None);
        }
    }

    /// Appends one record with `ops` and publishes the new map: the heart of every write.
    fn write(&self, ops: Vec<Op>, want_previous: bool) -> Result<Option<Value>> {
        self.check_poison()?;
        for op in &ops {
            if let Op::Put(key, _) | Op::Delete(key) = op {
                format::check_key(key)?;
            }
        }
        let mut body = BODY.with(|b| std::mem::take(&mut *b.borrow_mut()));
        body.clear();
        let encoded = format::encode_body(&ops, &self.limits, &mut body);
        let result = encoded.and_then(|()| self.append_and_publish(&body, ops, want_previous));
        BODY.with(|b| *b.borrow_mut() = body);
        result
    }

    fn append_and_publish(
        &self,
        body: &[u8],
        mut ops: Vec<Op>,
        want_previous: bool,
    ) -> Result<Option<Value>> {
        let size = Journal::record_size(body.len());
        let max_records = self.config.max_size.saturating_sub(HEADER_SIZE + 64);
        if size > max_records {
            return Err(Error::TooLarge {
                size: size as u64,
                max_size: self.config.max_size as u64,
            });
        }

        // Removals may use the journal's reserve; anything that can add data may not.
        let removal_only = ops.iter().all(|op| matches!(op, Op::Delete(_) | Op::Clear));
        let mut w = self.writer.lock();
        let mut compacted_once = false;
        loop {
            self.check_poison()?;
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
            // compaction at the largest allowed size still leaves no room.
            if compacted_once && w.active.capacity() >= self.config.max_size {
                return Err(Error::Full {
                    needed: (w.active.end() + size) as u64,
                    max_size: self.config.max_size as u64,
                });
            }
            w.room_needed = w.room_needed.max(size);
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
            let generation = w.active.generation();
            while w.compacting && w.failures == failures && !self.poisoned.load(Ordering::Acquire) {
                self.swapped.wait_for(&mut w, Duration::from_millis(5));
            }
            if w.failures != failures && w.active.generation() == generation {
                return Err(Error::Full {
                    needed: (w.active.end() + size) as u64,
                    max_size: self.config.max_size as u64,
                });
            }
            compacted_once = true;
        }

        let mut changes = std::mem::take(&mut w.changes);
        changes.extend(ops.drain(..).map(|op| match op {
            Op::Put(key, value) => Change::Put(Arc::from(key), Arc::new(value)),
            Op::Delete(key) => Change::Delete(Arc::from(key)),
            Op::Clear => Change::Clear,
        }));
        w.seq += 1;
        let seq = w.seq;
        let previous = w
            .publisher
            .publish(&self.published, &mut changes, seq, want_previous);
        w.changes = changes;

        let end = w.active.end();
        let capacity = w.active.capacity();
        let hwm = hwm_pos(&self.config, capacity);
        let mut fire = None;
        if end > hwm && w.hwm_fired != w.active.generation() {
            w.hwm_fired = w.active.generation();
            fire = self.config.callback;
        }
        let compact = end > w.trigger && !w.compacting;
        if compact {
            w.compacting = true;
        }
        let journal = (self.config.durability == Durability::Sync).then(|| Arc::clone(&w.active));
        drop(w);

        if compact
            && self
                .commands
                .send(Command::Compact { reply: None })
                .is_err()
        {
            self.writer.lock().compacting = false;
        }
        if let Some(callback) = fire {
            callback(end, capacity, hwm);
        }
        if let Some(journal) = journal {
            self.sync_through(Some((journal, end)))?;
        }
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
                let _one_flusher = self.sync_lock.lock();
                self.check_poison()?;
                if (journal.synced() < end || journal.header_dirty())
                    && let Err(e) = journal.flush()
                {
                    self.poison(format!("flush failed: {e}"));
                    return Err(crate::error::io_err("msync", journal.storage().path())(e));
                }
            }
            // If a swap happened meanwhile, the records now live in the new journal, which
            // must be flushed too.
            let w = self.writer.lock();
            if Arc::ptr_eq(&w.active, &journal) || journal.generation() > w.active.generation() {
                return Ok(());
            }
            journal = Arc::clone(&w.active);
            end = w.active.end();
        }
    }
}
