//! The store's typed errors.

use std::io;
use std::path::PathBuf;

use crate::bonjson::EncodeError;

/// Everything a store operation can fail with. Match on it; `Display` is a sentence.
///
/// A failed write never changes anything, in memory or on disk, with one exception: in
/// [`Durability::Sync`](crate::Durability::Sync) mode a write that fails in its flush (or
/// finds the store poisoned by another flush while it waits for one) was already applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} failed for {}: {source}", path.display())]
    Io {
        /// What the store was doing ("open", "msync", "fallocate", ...).
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another `KVStore` (in this process or another) has the store open for writing
    /// (read-only opens take no lock).
    #[error("the store at {} is locked by another open instance", path.display())]
    Locked {
        /// The journal file whose lock is held.
        path: PathBuf,
    },
    /// A journal file was written by a newer version of this library.
    #[error(
        "{} has journal format version {found}; this library reads up to {supported}",
        path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in its header.
        found: u32,
        /// The newest version this library reads.
        supported: u32,
    },
    /// The journal files exist but neither holds a valid, committed journal. Nothing was
    /// changed: the files are left for inspection or repair.
    #[error("no valid journal in {}: {reason}", path.display())]
    Unreadable {
        /// The store's base path.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The live data does not fit under the configured `max_size`.
    #[error("the store is full: {needed} bytes needed, max_size is {max_size}")]
    Full {
        /// The active journal's end plus this record: what the write found no room for (it
        /// counts overwritten records a compaction would drop, so it is not the live data).
        /// From [`KVStore::compact`](crate::KVStore::compact), a lower bound: the bytes the
        /// compaction had written when it ran out of room.
        needed: u64,
        /// The configured limit for each journal file.
        max_size: u64,
    },
    /// A key is empty, longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes, or holds NUL.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// Why the key was refused.
        reason: &'static str,
    },
    /// A value cannot be stored: a NaN or infinite float, NUL in a string, object keys that are
    /// equal once normalized (NFC), or beyond a limit of the codec (depth, sizes, total
    /// values and keys, big-number size and range).
    #[error("invalid value: {0}")]
    InvalidValue(#[from] EncodeError),
    /// A single record larger than a journal of `max_size` can ever hold: above `max_size`
    /// less the 4 KiB header, 64 bytes and, for anything but removals, the 1/32 of the journal
    /// kept for removals.
    #[error("a record of {size} bytes can never fit a journal of at most {max_size} bytes")]
    TooLarge {
        /// The encoded record size.
        size: u64,
        /// The largest journal allowed.
        max_size: u64,
    },
    /// The store no longer accepts writes because it can no longer promise durability: a
    /// flush to disk or an append to the journal failed, the compactor crashed, the rewrite
    /// an open makes after recovering from damage failed (the open succeeds, reads work), or
    /// the store is being closed. Reopen it to recover.
    #[error("the store is poisoned after an earlier failure ({reason}); reopen it")]
    Poisoned {
        /// The failure that poisoned the store.
        reason: String,
    },
    /// The store was opened read-only ([`KVStore::open_read_only`](crate::KVStore::open_read_only)),
    /// so it refuses writes, `clear` and `compact`.
    #[error("the store at {} was opened read-only", path.display())]
    ReadOnly {
        /// The store's base path.
        path: PathBuf,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Shorthand for results of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(op: &'static str, path: &std::path::Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}
