//! Configuration: the builder and the durability modes.

use std::path::{Path, PathBuf};

/// What a write survives when the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Survives a crash or kill of the process as soon as the write returns (the record is in
    /// the shared memory map, hence in the OS page cache). Survives power loss only after
    /// [`KVStore::sync`](crate::KVStore::sync), or once the store has been dropped (which
    /// syncs, also a poisoned store, unless a failed flush poisoned it: no flush after one
    /// can be trusted).
    #[default]
    Process,
    /// Also survives power loss when the write returns: every write is flushed before it
    /// returns (fdatasync, which on Linux also writes back the mapped pages; elsewhere, and
    /// when the header changed, an msync first). Concurrent writers share one flush (group
    /// commit).
    ///
    /// If that flush fails, the write returns the error and the store is poisoned, but the
    /// write was already applied: it is visible to readers until the store is closed, and may
    /// or may not be on the disk. The same holds when another failure poisons the store
    /// between the write's append and its flush: the write then returns
    /// [`Error::Poisoned`](crate::Error::Poisoned) after it was applied. Every other error
    /// leaves nothing changed.
    Sync,
}

/// The smallest journal size accepted, in bytes.
pub const MIN_BUFFER_SIZE: usize = 16 * 1024;

/// The smallest high-water mark a store accepts. Compaction keeps the live data under half the
/// mark, so a mark of 0.05 already asks for journals 40 times the live data; smaller ratios
/// asked for journals beyond any disk (and once overflowed the size computation).
pub const MIN_HIGH_WATER_MARK: f32 = 0.05;

/// Settings for [`KVStore`](crate::KVStore); build with [`KVStore::builder`](crate::KVStore::builder).
#[derive(Debug, Clone)]
pub struct Builder {
    pub(crate) base: PathBuf,
    pub(crate) buffer_size: usize,
    pub(crate) high_water_mark: f32,
    pub(crate) max_size: usize,
    pub(crate) durability: Durability,
    pub(crate) callback: Option<fn(usize, usize, usize)>,
    pub(crate) read_only: bool,
    pub(crate) pace_compactions: bool,
}

impl Builder {
    pub(crate) fn new(base: &Path) -> Self {
        Builder {
            base: base.to_path_buf(),
            buffer_size: 1024 * 1024,
            high_water_mark: 0.8,
            max_size: 1024 * 1024 * 1024,
            durability: Durability::Process,
            callback: None,
            read_only: false,
            pace_compactions: true,
        }
    }

    /// Initial size of each journal file in bytes (default 1 MiB, at least 16 KiB). Files that
    /// already exist keep their data: smaller ones grow, larger ones keep their size.
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes;
        self
    }

    /// Fraction of a journal that may fill before compaction starts (default 0.8, at least
    /// [`MIN_HIGH_WATER_MARK`] and at most 1).
    /// A compaction may start earlier: see [`pace_compactions`](Self::pace_compactions).
    pub fn high_water_mark(mut self, ratio: f32) -> Self {
        self.high_water_mark = ratio;
        self
    }

    /// Whether automatic compactions start early enough to end before the writers, at the
    /// rate they are writing, fill the journal (default `true`). The store measures its
    /// writers' rate and the duration of its last compaction (scaled up when there are more
    /// live keys to copy now; before the first, it guesses from the bytes to copy) and starts
    /// a compaction before the high-water mark when the room left would not last twice that
    /// long, but never before an eighth of the usual distance from the live data to the point
    /// where a compaction would start. Off, compactions start at the mark (or earlier only
    /// after writers had to wait for one), which makes fewer compactions and lets fast writers
    /// wait for the swap whenever a compaction takes longer than the room left lasts.
    /// [`Stats::waits_for_room`](crate::Stats::waits_for_room) counts those waits.
    pub fn pace_compactions(mut self, pace: bool) -> Self {
        self.pace_compactions = pace;
        self
    }

    /// Largest size either journal may grow to (default 1 GiB). Writes that would need more
    /// fail with [`Error::Full`](crate::Error::Full).
    pub fn max_size(mut self, bytes: usize) -> Self {
        self.max_size = bytes;
        self
    }

    /// What a write survives when it returns (default [`Durability::Process`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Called once each time a journal generation crosses its high-water mark, with
    /// `(current_pos, capacity, hwm_pos)` (`capacity`: the journal's size, `buffer_size`
    /// until the journals grow), on the thread whose write crossed it, before that write
    /// returns (with [`Durability::Sync`], after the write's flush, even one that failed). It
    /// may use the store,
    /// for instance to call [`KVStore::compact`](crate::KVStore::compact). A generation that a
    /// compaction replaces before it reaches its mark (see
    /// [`pace_compactions`](Self::pace_compactions)) never fires it, nor does one that starts
    /// above its mark: after a compaction, or when the store is opened on a journal already
    /// past it (which crossed it before this open, or whose mark was set lower since).
    pub fn on_high_water_mark(mut self, callback: fn(usize, usize, usize)) -> Self {
        self.callback = Some(callback);
        self
    }

    /// Opens the store without taking its lock and without ever writing, so it works while
    /// another process (or another `KVStore` in this one) has it open for writing. The files
    /// are read into memory and every record is validated; writes return
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) and
    /// [`KVStore::refresh`](crate::KVStore::refresh) reads the files again to see newer
    /// writes. A read-only open never creates files: a missing store is an
    /// [`Error::Io`](crate::Error::Io) with `NotFound`. Sizes set on the builder are ignored.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Opens (or creates) the store.
    pub fn open(self) -> crate::Result<crate::KVStore> {
        crate::KVStore::open_with(self)
    }

    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |msg: String| Err(crate::Error::Config(msg));
        if self.buffer_size < MIN_BUFFER_SIZE {
            return bad(format!(
                "buffer_size must be at least {MIN_BUFFER_SIZE} bytes"
            ));
        }
        if !(MIN_HIGH_WATER_MARK..=1.0).contains(&self.high_water_mark) {
            return bad(format!(
                "high_water_mark must be in [{MIN_HIGH_WATER_MARK}, 1], not {}",
                self.high_water_mark
            ));
        }
        if self.max_size < self.buffer_size {
            return bad("max_size must be at least buffer_size".into());
        }
        Ok(())
    }
}
