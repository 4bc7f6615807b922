//! [`Stats`]: figures about a store, and the counters behind them.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) compactions: AtomicU64,
    pub(crate) last_compaction_nanos: AtomicU64,
    pub(crate) inactive_capacity: AtomicU64,
    pub(crate) inactive_used: AtomicU64,
    pub(crate) data_loss: AtomicU64,
    pub(crate) waits_for_room: AtomicU64,
    /// Bytes of records the last compaction copied under the writer lock (the writers wait
    /// for that copy; for tests and profiling).
    pub(crate) last_copied_under_lock: AtomicU64,
}

/// Figures from [`KVStore::stats`](crate::KVStore::stats).
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
    /// compaction overwrites it). 0 until the first switch since open.
    pub inactive_used: u64,
    /// Live keys.
    pub live_keys: u64,
    /// Switches to a compacted journal since open (counted at the switch; a compaction whose
    /// flush after the switch fails is counted here and also reported as failed). Always 0 for
    /// a read-only store, which never compacts.
    pub compactions: u64,
    /// Duration of the last compaction.
    pub last_compaction: Option<Duration>,
    /// Damage found and worked around at open, or by a read-only store's `refresh` (see
    /// [`Event::DataLoss`](crate::Event::DataLoss)).
    pub data_loss_events: u64,
    /// Writes since open that found the active journal full and waited for a compaction to
    /// make room (each counted once, however long it waited). Compactions are paced so that
    /// this stays 0 (see [`Builder::pace_compactions`](crate::Builder::pace_compactions));
    /// writers that outrun the disk, or one batch that fills most of a journal, still wait.
    pub waits_for_room: u64,
}
