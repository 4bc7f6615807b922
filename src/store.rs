//! [`KVStore`]: the public API over the journals, the published map and the compactor.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::batch::Batch;
use crate::bonjson::{DecodeOptions, Limits};
use crate::compactor::{self, Command};
use crate::events::Event;
use crate::journal::Journal;
use crate::journal::copied::CopiedBackend;
use crate::journal::format::Op;
use crate::journal::mmap::FileBackend;
use crate::journal::recovery::{self, Note, Tail};
use crate::journal::storage::{Backend, Slot};
use crate::options::Builder;
use crate::pace::Pace;
use crate::prefault::PrefaultAhead;
use crate::shared::{Shared, Writer, hwm_pos};
use crate::snapshot::{Map, Publisher, Snapshot};
use crate::stats::{Counters, Stats};
use crate::sync::channel::{self, Receiver};
use crate::sync::{Arc, ArcSwap, AtomicBool, Condvar, JoinHandle, Mutex};
use crate::{Result, Value};

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
///
/// Its `Debug` shows the base path and the published map's size, without taking a lock.
pub struct KVStore {
    pub(crate) shared: Arc<Shared>,
    compactor: Option<JoinHandle<()>>,
}

impl KVStore {
    /// Opens (or creates) the store at `base_path` (files `<base_path>.jrna` and `.jrnb`) with
    /// journals of `buffer_size` bytes. `high_water_mark_ratio` defaults to 0.8; `callback` is
    /// called with `(current_pos, capacity, hwm_pos)` each time a journal generation crosses
    /// its high-water mark, where `capacity` is the journal's size (`buffer_size` until the
    /// journals grow), on the writing thread, before that write returns.
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

    /// Opens the store at `base_path` read-only: no lock, no writes, works while another
    /// process writes it. See [`Builder::read_only`].
    ///
    /// ```
    /// # fn main() -> resilient_kv::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use resilient_kv::{Error, KVStore, Value};
    /// let base = dir.path().join("app");
    /// let writer = KVStore::new(&base, 64 * 1024, None, None)?;
    /// writer.insert("a".into(), Value::Integer(1))?;
    ///
    /// let reader = KVStore::open_read_only(&base)?; // the writer still holds the lock
    /// assert_eq!(reader.get("a")?, Some(Value::Integer(1)));
    /// assert!(matches!(reader.insert("b".into(), Value::Null), Err(Error::ReadOnly { .. })));
    ///
    /// writer.insert("a".into(), Value::Integer(2))?;
    /// assert!(reader.refresh()?); // saw a newer write
    /// assert_eq!(reader.get("a")?, Some(Value::Integer(2)));
    /// # Ok(()) }
    /// ```
    pub fn open_read_only(base_path: impl AsRef<Path>) -> Result<KVStore> {
        Builder::new(base_path.as_ref()).read_only(true).open()
    }

    /// The two journal files of a store at `base_path`: the extensions `.jrna` and `.jrnb`
    /// are appended to it. For backups and tools; a copy of a store is both files, taken
    /// while no process writes it (or with [`KVStore::sync`] called and writes paused).
    ///
    /// ```
    /// let [a, b] = resilient_kv::KVStore::journal_paths("data/app.db");
    /// assert_eq!(a, std::path::Path::new("data/app.db.jrna"));
    /// assert_eq!(b, std::path::Path::new("data/app.db.jrnb"));
    /// ```
    pub fn journal_paths(base_path: impl AsRef<Path>) -> [std::path::PathBuf; 2] {
        let base = base_path.as_ref();
        [Slot::A.path(base), Slot::B.path(base)]
    }

    pub(crate) fn open_with(config: Builder) -> Result<KVStore> {
        if config.read_only {
            // Sizes are the writer's business: a read-only open takes the files as they are.
            let opened = recover_copied(&config.base)?;
            return Self::start(config, opened);
        }
        let backend = FileBackend::new(&config.base, config.max_size);
        Self::open_on(config, &backend)
    }

    /// For a read-only store, reads the files again and publishes what they hold now; returns
    /// whether a newer copy was published (the writer wrote or compacted since, even if no
    /// key changed). Data loss it finds is counted in [`Stats`] and sent to the current
    /// subscribers (not kept for later ones, unlike what opening found). It never publishes a
    /// copy behind what it shows, so a store deleted and created anew behind a reader's back
    /// (its generations start over) is not seen until the reader is opened again. Snapshots
    /// taken before keep their view. Calls from several threads take turns, so the published
    /// state never goes back to an older copy. A writable store always sees its own writes, so
    /// this returns `Ok(false)` for it.
    pub fn refresh(&self) -> Result<bool> {
        if !self.shared.config.read_only {
            return Ok(false);
        }
        let _one_refresh = self.shared.refresh_lock.lock();
        let opened = recover_copied(&self.shared.config.base)?;
        let mut w = self.shared.writer.lock();
        // Generations only grow, and within one the records only grow: a copy that is not
        // ahead of what is published (the same one, or an older one, e.g. a copy of a file
        // that had already been switched out) is not published.
        let copied = (opened.active.generation(), opened.active.end());
        if copied <= (w.active.generation(), w.active.end()) {
            return Ok(false);
        }
        let events = loss_events(&opened.active, &opened.tail, &opened.notes);
        let map = map_of(opened.entries);
        w.seq += 1;
        let (published, publisher) = Publisher::new(map, w.seq);
        w.publisher = publisher;
        w.active = Arc::new(opened.active);
        self.shared
            .stats
            .inactive_capacity
            .store(opened.inactive.capacity() as u64, Ordering::Relaxed);
        *self.shared.inactive.lock() = Some(Arc::new(opened.inactive));
        self.shared.published.store(published);
        drop(w);
        self.shared
            .stats
            .data_loss
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        for event in events {
            self.shared.emit(event);
        }
        Ok(true)
    }

    pub(crate) fn open_on(config: Builder, backend: &dyn Backend) -> Result<KVStore> {
        // A read-only open takes the files as they are (its sizes are not used).
        if !config.read_only {
            config.validate()?;
        }
        let min_len = if config.read_only {
            0
        } else {
            config.buffer_size
        };
        // A failed open leaves no file behind that it created (nothing in it was acknowledged).
        recovery::open(backend, min_len, &DecodeOptions::default())
            .and_then(|opened| Self::start(config, opened))
            .inspect_err(|_| backend.remove_created())
    }

    /// Starts a store on what recovery elected and replayed.
    fn start(config: Builder, opened: recovery::Opened) -> Result<KVStore> {
        let limits = Limits::default();
        // After any damage or cut-short write, the next writes must not land in a journal
        // whose later bytes may still hold records of the same generation: the open compacts
        // into a new generation first (below).
        let rewrite = opened.tail != Tail::Clean || !opened.notes.is_empty();
        if !config.read_only {
            // The elected journal may hold pages a crashed process wrote and never flushed
            // (e.g. the header of a swap it made just before dying). They must reach the disk
            // before this process reuses the other file, which may be the only durable copy:
            // otherwise a power loss could leave no committed journal at all.
            let storage = opened.active.storage();
            storage
                .sync()
                .map_err(crate::error::io_err("fdatasync", storage.path()))?;
        }
        let map = map_of(opened.entries);
        let open_events = loss_events(&opened.active, &opened.tail, &opened.notes);
        let opened_highest = opened.highest_generation;
        let stats = Counters::default();
        stats
            .data_loss
            .store(open_events.len() as u64, Ordering::Relaxed);
        stats
            .inactive_capacity
            .store(opened.inactive.capacity() as u64, Ordering::Relaxed);
        let active = Arc::new(opened.active);
        let trigger = hwm_pos(&config, active.capacity());
        // A journal opened above its mark starts above it, like a generation after a swap that
        // starts above its mark: no callback for it (it crossed the mark before this open, or
        // the mark was set lower since).
        let hwm_fired = if active.end() > trigger {
            active.generation()
        } else {
            0
        };
        let floor = compactor::earliest_start(active.end(), trigger, active.capacity());
        let pace = Pace::new(
            active.end(),
            active.capacity(),
            floor,
            std::time::Instant::now(),
        );
        let prefault = PrefaultAhead::at_open(active.generation(), active.end());
        let (commands, receiver) = channel::unbounded();
        let (published, publisher) = Publisher::new(map, 0);
        let shared = Arc::new(Shared {
            published: ArcSwap::new(published),
            writer: Mutex::new(Writer {
                active,
                publisher,
                changes: Vec::new(),
                seq: 0,
                compacting: false,
                compaction_queued: false,
                failures: 0,
                hwm_fired,
                trigger,
                next_generation: opened_highest.saturating_add(1),
                room_needed: 0,
                growth_refused: 0,
                compactions_started: 0,
                last_swapped: 0,
                end_at_swap: 0,
                prefault,
                last_failed: 0,
                last_failure: None,
                waited_for_room: false,
                early: Default::default(),
                pace,
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
            flush_failed: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            sync_lock: Mutex::new(()),
            refresh_lock: Mutex::new(()),
            #[cfg(test)]
            syncers_at_the_lock: Default::default(),
            stats,
        });
        if shared.config.read_only {
            // Nothing to compact: the store never writes.
            return Ok(KVStore {
                shared,
                compactor: None,
            });
        }
        let compactor = compactor::spawn(Arc::clone(&shared), receiver)
            .map_err(crate::error::io_err("spawn compactor", &shared.config.base))?;
        let store = KVStore {
            shared,
            compactor: Some(compactor),
        };
        if rewrite {
            if let Err(e) = store.compact() {
                // Appending to the damaged generation could revive records beyond the damage,
                // so refuse writes instead; reads work and nothing is lost.
                store.shared.poison(format!(
                    "the journal could not be rewritten after recovering from damage ({e}); \
                     reopen to try again"
                ));
            }
        } else {
            // A journal left above its mark (e.g. by a crash before compaction) compacts now.
            store.shared.maybe_request_compaction();
        }
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
    /// removes the key, as [`remove`](Self::remove) does (nothing is written if it is
    /// absent). On error nothing changed, except after a failed flush in
    /// [`Durability::Sync`](crate::Durability::Sync) mode (see there).
    pub fn insert(&self, key: String, value: Value) -> Result<Option<Value>> {
        if value.is_null() {
            return self.shared.write_unless_no_op([Op::Delete(key)], true);
        }
        self.shared.write([Op::Put(key, value)], true)
    }

    /// Removes `key` and returns its value. Removing a key that is absent writes nothing and
    /// returns `Ok(None)`; in [`Durability::Sync`](crate::Durability::Sync) mode it first
    /// waits until what it saw is durable (the key may be absent because of another thread's
    /// removal still waiting for its flush), so it can return that flush's error, or
    /// `Poisoned`.
    pub fn remove(&self, key: &str) -> Result<Option<Value>> {
        self.shared
            .write_unless_no_op([Op::Delete(key.to_owned())], true)
    }

    /// Replaces the value of `key` with `f(current)`, atomically: no other write to `key` comes
    /// between the value `f` saw and the one stored, so concurrent read-modify-writes (a
    /// counter incremented from many threads) lose nothing. Returns the value now stored.
    /// `f` returning `None` (or `Value::Null`) removes the key; for a key that is absent,
    /// `None` writes nothing (in [`Durability::Sync`](crate::Durability::Sync) mode it still
    /// waits until what it saw is durable, as [`remove`](Self::remove) does).
    ///
    /// `f` runs without the writer lock, so other writes go on meanwhile; if one of them
    /// changed `key` before this write could append, `f` runs again on the newer value. Keep
    /// it quick and free of side effects, and do not write `key` from it (that write would
    /// conflict with this one every time). Updates of one key always make progress as a
    /// group, but a single update can retry for as long as other writes keep changing its key
    /// faster than `f` runs. On error nothing changed, with the same exception as
    /// [`insert`](Self::insert): in [`Durability::Sync`](crate::Durability::Sync) mode a failed
    /// flush comes after the record was applied (the store is then poisoned, so a retry
    /// cannot apply it twice).
    ///
    /// ```
    /// # fn main() -> resilient_kv::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use resilient_kv::{KVStore, Value};
    /// let store = std::sync::Arc::new(KVStore::new(dir.path().join("app"), 64 * 1024, None, None)?);
    /// let increment = |current: Option<&Value>| {
    ///     let count = current.and_then(Value::as_i64).unwrap_or(0);
    ///     Some(Value::Integer(count + 1))
    /// };
    /// let threads: Vec<_> = (0..4)
    ///     .map(|_| {
    ///         let store = std::sync::Arc::clone(&store);
    ///         std::thread::spawn(move || {
    ///             for _ in 0..100 {
    ///                 store.update("visits", increment).unwrap();
    ///             }
    ///         })
    ///     })
    ///     .collect();
    /// for thread in threads {
    ///     thread.join().unwrap();
    /// }
    /// assert_eq!(store.get("visits")?, Some(Value::Integer(400)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn update(
        &self,
        key: &str,
        f: impl FnMut(Option<&Value>) -> Option<Value>,
    ) -> Result<Option<Value>> {
        self.shared.update(key, f)
    }

    /// Applies every operation of `batch`, or none of them (also across a crash). An empty
    /// batch writes nothing, but is refused like any write by a read-only or poisoned store.
    /// A batch of nothing but removals of absent keys writes nothing either (in
    /// [`Durability::Sync`](crate::Durability::Sync) mode it waits, as
    /// [`remove`](Self::remove) does, until what it saw is durable).
    pub fn write_batch(&self, batch: Batch) -> Result<()> {
        if batch.ops.is_empty() {
            self.shared.check_writable()?;
            return self.shared.check_poison();
        }
        self.shared.write_unless_no_op(batch.ops, false).map(drop)
    }

    /// Removes every key. A crash afterwards never brings them back.
    ///
    /// A clear is a compaction to the empty state: the clear record makes it durable at
    /// once, and a compaction that rewrites the journal without the cleared keys is queued
    /// before this returns (after a running one, which started before the clear and still
    /// copies them). It runs in the background; call [`compact`](Self::compact) to wait.
    pub fn clear(&self) -> Result<()> {
        self.shared.check_writable()?;
        self.shared.write([Op::Clear], false)?;
        self.shared.queue_compaction();
        Ok(())
    }

    /// Makes every write acknowledged so far survive power loss (fdatasync; an msync first
    /// where the OS needs one, or when the header changed).
    /// A read-only store has nothing to flush and returns `Ok`.
    pub fn sync(&self) -> Result<()> {
        if self.shared.config.read_only {
            return self.shared.check_poison();
        }
        self.shared.sync_through(None)
    }

    /// Compacts now and waits for the switch to the new journal.
    pub fn compact(&self) -> Result<()> {
        self.shared.check_writable()?;
        let (reply, done) = channel::bounded(1);
        self.shared.request_compaction(Some(reply));
        match done.recv() {
            Ok(result) => result,
            Err(_) => Err(self.shared.poison_error()),
        }
    }

    /// Notifications about compactions, growth and data loss found at open (those are
    /// delivered to every new subscriber first). The channel is unbounded, so no event ever
    /// blocks the store; a receiver that is kept but never read grows without limit (drop it
    /// instead: dropped receivers are forgotten at the next event).
    pub fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = channel::unbounded();
        for event in &self.shared.open_events {
            let _ = tx.send(event.clone());
        }
        self.shared.subscribers.lock().push(tx);
        rx
    }

    /// Current figures.
    pub fn stats(&self) -> Stats {
        let s = &self.shared.stats;
        // The inactive journal's figures are read under the writer lock too: a swap changes
        // them under it.
        let (generation, used, capacity, live, inactive_capacity, inactive_used) = {
            let w = self.shared.writer.lock();
            (
                w.active.generation(),
                w.active.end(),
                w.active.capacity(),
                self.shared.published.load().map.len(),
                s.inactive_capacity.load(Ordering::Acquire),
                s.inactive_used.load(Ordering::Relaxed),
            )
        };
        let last = s.last_compaction_nanos.load(Ordering::Relaxed);
        Stats {
            generation,
            active_used: used as u64,
            active_capacity: capacity as u64,
            inactive_capacity,
            inactive_used,
            live_keys: live as u64,
            compactions: s.compactions.load(Ordering::Relaxed),
            last_compaction: (last > 0).then(|| Duration::from_nanos(last)),
            data_loss_events: s.data_loss.load(Ordering::Relaxed),
            waits_for_room: s.waits_for_room.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for KVStore {
    /// The base path, whether it is read-only, and the published version's size and number
    /// (no lock taken: what a reader would see).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = self.shared.published.load();
        f.debug_struct("KVStore")
            .field("base", &self.shared.config.base)
            .field("read_only", &self.shared.config.read_only)
            .field("len", &version.map.len())
            .field("seq", &version.seq)
            .finish_non_exhaustive()
    }
}

impl Drop for KVStore {
    fn drop(&mut self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        let _ = self.shared.commands.send(Command::Shutdown);
        if let Some(handle) = self.compactor.take() {
            let _ = handle.join();
        }
        if !self.shared.config.read_only {
            self.shared.final_flush();
        }
    }
}

/// Copies a read-only store's files and runs recovery on the copies. `read(2)` copies a file a
/// live writer appends to page by page, so a copy can catch one record half-written while a
/// later page, copied a moment after, already holds newer complete records: that looks like
/// damage with valid records beyond it. Real damage stays where it is, so such a result is
/// taken again, a millisecond apart, and believed only when two copies in a row agree
/// (`settle_damage`).
fn recover_copied(base: &Path) -> Result<recovery::Opened> {
    let take = || {
        let backend = CopiedBackend::load(base)?;
        recovery::open(&backend, 0, &DecodeOptions::default())
    };
    let (mut opened, confirmed) =
        crate::journal::copied::settle_damage(5, take, |opened: &recovery::Opened| {
            let offset = match opened.tail {
                Tail::Damaged { offset, .. } => Some(offset),
                _ => None,
            };
            // A header the copy caught half written (`Note::is_loss`) is no damage.
            let notes: Vec<_> = (opened.notes.iter())
                .filter(|note| note.is_loss())
                .map(|note| (note.path.clone(), note.offset, note.detail.clone()))
                .collect();
            (offset.is_some() || !notes.is_empty()).then(|| {
                let generation = opened.active.generation();
                // Where damage is, not how much lies beyond it: a live writer appending after
                // real damage makes that grow from copy to copy.
                (generation, offset, notes)
            })
        })?;
    if !confirmed {
        // Damage that moved from copy to copy is a writer's records seen half written (real
        // damage stays where it is): what the copy replayed is a true state, its end is not
        // a loss.
        opened.tail = Tail::Clean;
        opened.notes.clear();
    }
    // A read-only store serves reads from its map and never reads its journals again: keeping
    // the copies would hold both files' size in memory for as long as it is open.
    opened.active.storage_mut().release_copy();
    opened.inactive.storage_mut().release_copy();
    Ok(opened)
}

/// The published map of a replay's entries.
fn map_of(entries: Vec<crate::journal::replay::Entry>) -> Map {
    entries.into_iter().collect()
}

fn loss_events(active: &Journal, tail: &Tail, notes: &[Note]) -> Vec<Event> {
    let path = active.storage().path().to_path_buf();
    // A write cut short lost nothing (the journal is rewritten all the same).
    let mut events: Vec<Event> = notes
        .iter()
        .filter(|note| note.is_loss())
        .map(|note| Event::DataLoss {
            path: note.path.clone(),
            offset: note.offset as u64,
            lost_bytes: note.lost_bytes as u64,
            detail: note.detail.clone(),
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
