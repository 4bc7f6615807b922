//! One journal file: a header naming its generation, then checksummed records.
//!
//! The store keeps two journals. The active one takes appends; the inactive one is where the
//! compactor writes the next generation. See `docs/format.md` for the bytes and
//! `docs/design.md` for the protocol.

pub(crate) mod checksum;
pub(crate) mod copied;
pub(crate) mod format;
#[cfg(test)]
pub(crate) mod memory;
pub(crate) mod mmap;
pub(crate) mod pack;
pub(crate) mod recovery;
pub(crate) mod replay;
pub(crate) mod storage;

use std::io;
use std::sync::atomic::Ordering;

use crate::bonjson::DecodeOptions;
use crate::sync::{AtomicBool, AtomicUsize};

use format::{FRAME_SIZE, HEADER_SIZE, Header, STATE_COMMITTED, STATE_PENDING};
use storage::Storage;

/// Whether `fdatasync` writes back pages dirtied through a shared mapping (Linux: it writes
/// back every dirty page of the file, however it was dirtied).
const SYNC_WRITES_BACK_MAPPED_PAGES: bool = cfg!(target_os = "linux");

/// Whether `msync` also flushes the drive's write cache, so that what it wrote is durable
/// before anything written after it (Linux: ext4 and XFS issue a cache flush in it; Apple's
/// does not, only `F_FULLFSYNC` does).
const MSYNC_FLUSHES_DRIVE_CACHE: bool = cfg!(target_os = "linux");

/// A journal file and where its valid records end.
pub(crate) struct Journal {
    storage: Box<dyn Storage>,
    generation: u64,
    /// Checksum state after the generation (every record's checksum starts from it).
    crc_seed: u32,
    /// End of the last complete record. Only the writer holding the store's writer lock (or
    /// the owner of an inactive journal) advances it; it is published with `Release` after the
    /// record's bytes are written, so readers that `Acquire` it may read everything below.
    end: AtomicUsize,
    /// Bytes known to be flushed to disk (durable against power loss).
    synced: AtomicUsize,
    /// The header was rewritten and not yet flushed.
    header_dirty: AtomicBool,
}

impl Journal {
    pub(crate) fn new(storage: Box<dyn Storage>, generation: u64, end: usize) -> Self {
        Journal {
            storage,
            generation,
            crc_seed: format::crc_seed(generation),
            end: AtomicUsize::new(end),
            synced: AtomicUsize::new(end),
            header_dirty: AtomicBool::new(false),
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn capacity(&self) -> usize {
        self.storage.capacity()
    }

    /// End of the valid records (Acquire: everything below may be read).
    pub(crate) fn end(&self) -> usize {
        self.end.load(Ordering::Acquire)
    }

    pub(crate) fn synced(&self) -> usize {
        self.synced.load(Ordering::Acquire)
    }

    pub(crate) fn storage(&self) -> &dyn Storage {
        &*self.storage
    }

    pub(crate) fn storage_mut(&mut self) -> &mut dyn Storage {
        &mut *self.storage
    }

    /// Bytes a record with `body_len` body bytes takes.
    pub(crate) fn record_size(body_len: usize) -> usize {
        FRAME_SIZE + body_len
    }

    /// Appends one record. Returns `Ok(false)` (and writes nothing) if it does not fit.
    ///
    /// Must only be called by the single appender (the writer-lock holder for the active
    /// journal, the compactor for the inactive one). The body is written before its frame, so
    /// a crash in between leaves no frame and the record simply does not exist.
    pub(crate) fn append(&self, body: &[u8]) -> io::Result<bool> {
        self.append_within(body, self.capacity())
    }

    /// The reserve at the end of every journal that only removals may use, so that a full
    /// store can always be emptied.
    pub(crate) fn reserve(&self) -> usize {
        self.capacity() / 32
    }

    /// Like `append`, but the record must end at or before `limit`.
    #[inline]
    pub(crate) fn append_within(&self, body: &[u8], limit: usize) -> io::Result<bool> {
        let pos = self.end.load(Ordering::Relaxed);
        let size = Self::record_size(body.len());
        if pos + size > limit.min(self.capacity()) {
            return Ok(false);
        }
        self.storage.write(pos + FRAME_SIZE, body)?;
        self.storage.write(
            pos,
            &format::frame_seeded(self.generation, self.crc_seed, body),
        )?;
        // Release: the record's bytes happen-before any read of the new end.
        self.end.store(pos + size, Ordering::Release);
        Ok(true)
    }

    /// Calls `f` with each record body in `[from, to)`, which must hold whole records written
    /// by this process (it re-reads what `append` wrote).
    pub(crate) fn for_each_record(
        &self,
        from: usize,
        to: usize,
        mut f: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut bytes = vec![0_u8; to.saturating_sub(from)];
        self.storage.read(from, &mut bytes)?;
        let mut pos = 0;
        let frames = format::Frames::new(self.generation);
        while pos < bytes.len() {
            let rest = bytes.get(pos..).unwrap_or_default();
            match frames.read(rest) {
                format::FrameRead::Record { len } => {
                    f(rest.get(FRAME_SIZE..FRAME_SIZE + len).unwrap_or_default())?;
                    pos += FRAME_SIZE + len;
                }
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("record at {} reads back as {other:?}", from + pos),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Brings the unwritten rest of the journal into memory (see [`Storage::prefault`]); called
    /// by the compactor thread, never by a writer.
    pub(crate) fn prefault_tail(&self) {
        let end = self.end();
        self.storage
            .prefault(end, self.capacity().saturating_sub(end));
    }

    /// Maps the bytes in `[from, to)` writable, as far as the journal reaches (see
    /// [`Storage::prefault_for_write`]); called by the compactor thread, never by a writer.
    pub(crate) fn prefault_for_writers(&self, from: usize, to: usize) {
        let to = to.min(self.capacity());
        if from < to {
            self.storage.prefault_for_write(from, to - from);
        }
    }

    /// Calls `f` with the live keys of the records in `[HEADER_SIZE, end)` (which must be
    /// below the published end: records there never change), as
    /// [`replay::live_records`] finds them (`expected_keys` is its table's size hint); `None`
    /// if they do not read back as an unbroken run of this generation's records.
    pub(crate) fn with_live_records<R>(
        &self,
        end: usize,
        decode: &DecodeOptions,
        expected_keys: usize,
        f: impl FnOnce(Option<Vec<replay::LiveRecord<'_>>>) -> R,
    ) -> io::Result<R> {
        let mut f = Some(f);
        let mut result = None;
        self.storage.view(0, end, &mut |bytes| {
            if let Some(f) = f.take() {
                let records = replay::live_records(bytes, self.generation, decode, expected_keys);
                result = Some(f(records));
            }
        })?;
        result.ok_or_else(|| io::Error::other("the journal's records could not be viewed"))
    }

    /// Starts a new generation in this (inactive, exclusively owned) journal: a `PENDING`
    /// header, flushed, so the file can never be elected until `commit` while its records are
    /// being rewritten.
    pub(crate) fn begin(&mut self, generation: u64) -> io::Result<()> {
        // A header above the limit reads as invalid, so a generation past it could never be
        // elected: refuse it rather than write a journal nobody can open (only a forged header
        // gets a store near the limit).
        if generation > format::MAX_GENERATION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "generation {generation} is above the format's limit ({})",
                    format::MAX_GENERATION
                ),
            ));
        }
        // The previous generation's writers left this file's pages mapped writable and dirty;
        // unmapped now (the journal is this caller's alone), the flushes of the new generation
        // do not write-protect them one by one.
        self.storage.unmap_settled(0, self.capacity());
        self.write_header(generation, STATE_PENDING)?;
        self.storage.flush(0, HEADER_SIZE)?;
        if !MSYNC_FLUSHES_DRIVE_CACHE {
            // The `PENDING` header must be durable before any record of the generation: if
            // records could reach the disk without it, a power cut would leave them under the
            // old header, and recovery could not tell their generation was ever handed out.
            self.storage.sync()?;
        }
        self.generation = generation;
        self.crc_seed = format::crc_seed(generation);
        self.end.store(HEADER_SIZE, Ordering::Release);
        self.synced.store(HEADER_SIZE, Ordering::Release);
        Ok(())
    }

    /// Writes the `COMMITTED` header (not yet flushed: see `flush`).
    pub(crate) fn commit(&self) -> io::Result<()> {
        self.write_header(self.generation, STATE_COMMITTED)?;
        self.header_dirty.store(true, Ordering::Release);
        Ok(())
    }

    pub(crate) fn header_dirty(&self) -> bool {
        self.header_dirty.load(Ordering::Acquire)
    }

    fn write_header(&self, generation: u64, state: u32) -> io::Result<()> {
        let header = Header {
            version: format::FORMAT_VERSION,
            state,
            generation,
        };
        self.storage.write(0, &format::encode_header(&header))
    }

    /// Flushes records in `[synced, end)` to disk.
    pub(crate) fn flush_records(&self) -> io::Result<()> {
        let end = self.end();
        let synced = self.synced();
        if end > synced {
            self.storage.flush(synced, end - synced)?;
            self.synced.fetch_max(end, Ordering::AcqRel);
        }
        Ok(())
    }

    /// The power-loss barrier. If the header changed, the records are flushed first and the
    /// header after them (a header never reaches the disk before the records it vouches for).
    /// Otherwise one `fdatasync` is enough where it also writes back pages dirtied through the
    /// map (Linux): it halves the device flushes of every `Durability::Sync` write. Elsewhere
    /// (Apple's `msync` does not flush the drive cache, and its `fsync` is not documented to
    /// write mapped pages) the records are msynced first.
    pub(crate) fn flush(&self) -> io::Result<()> {
        let end = self.end();
        let synced = self.synced();
        // The flag is cleared only once the header is durable: a concurrent `sync()` that finds
        // it still set flushes the header too instead of returning early (found by the
        // power-loss tests: `sync_racing_the_end_of_a_compaction_waits_for_the_new_header`).
        let header = self.header_dirty.load(Ordering::Acquire);
        if end > synced {
            if header || !SYNC_WRITES_BACK_MAPPED_PAGES {
                self.storage.flush(synced, end - synced)?;
            } else {
                // Written back by the `fdatasync` below: unmapped first, as `flush` does.
                // Whole pages below `end` are settled: appenders only store above it.
                self.storage.unmap_settled(synced, end - synced);
            }
        }
        if header {
            self.storage.flush(0, HEADER_SIZE)?;
        }
        self.storage.sync()?;
        if header {
            self.header_dirty.store(false, Ordering::Release);
        }
        self.synced.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::storage::{Backend, MemBackend, Slot};

    /// A generation above the format's limit would write a header that reads as invalid, so
    /// the journal could never be elected: `begin` refuses it and writes nothing.
    #[test]
    fn a_generation_above_the_limit_is_refused() {
        let disk = MemBackend::new();
        let storage = disk.open(Slot::A, 16 * 1024).unwrap();
        let mut journal = Journal::new(storage, 0, HEADER_SIZE);
        assert!(journal.begin(format::MAX_GENERATION + 1).is_err());
        assert!(
            disk.file(Slot::A).lock()[..HEADER_SIZE]
                .iter()
                .all(|&b| b == 0)
        );
        journal.begin(format::MAX_GENERATION).unwrap();
        assert_eq!(journal.generation(), format::MAX_GENERATION);
    }
}
