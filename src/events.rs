//! What subscribers hear: compactions, growth, and data loss found at open.

use std::path::PathBuf;
use std::time::Duration;

/// A notification from the store, delivered through [`KVStore::subscribe`](crate::KVStore::subscribe).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The compactor started writing generation `generation`.
    CompactionStarted {
        /// The generation being written (a compaction that must grow the journal starts over
        /// under a new generation, so the finished one may be larger).
        generation: u64,
    },
    /// A compaction finished and the store switched to its journal.
    CompactionFinished {
        /// The new active generation.
        generation: u64,
        /// Bytes used in the journal that was retired.
        bytes_before: u64,
        /// Bytes used in the new journal right after the switch.
        bytes_after: u64,
        /// Live keys written into the new journal.
        live_keys: u64,
        /// Time from start to the new journal's flush after the switch.
        duration: Duration,
    },
    /// A compaction failed; the store keeps appending to the current journal.
    CompactionFailed {
        /// The generation that was being written (for an attempt refused before it began,
        /// on a poisoned store, the one it would have written).
        generation: u64,
        /// Why.
        reason: String,
    },
    /// A journal grew: the one being compacted into, because the live data (with the room
    /// writers waiting for it need) is more than half its high-water mark, or because the
    /// records written during the compaction do not fit after them. The other journal grows
    /// when it is compacted into next.
    JournalGrown {
        /// The journal's new size, in bytes.
        new_size: u64,
    },
    /// Opening (or a read-only store's `refresh`) found damage and recovered around it;
    /// `detail` says what was lost.
    DataLoss {
        /// The journal file concerned.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// Bytes of valid-looking records beyond the damage that could not be replayed.
        lost_bytes: u64,
        /// A sentence describing what happened.
        detail: String,
    },
}
