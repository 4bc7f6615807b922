//! The storage seam: what the journal needs from a file, so that tests (and loom) can run the
//! same journal code on memory with injected faults instead of real memory maps.

use std::io;
use std::ops::Range;
use std::path::Path;

use crate::Result;

/// Which of the two journal files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Slot {
    A,
    B,
}

impl Slot {
    /// The file of this slot for a store at `base`: the extension is appended (`app.db` gives
    /// `app.db.jrna`).
    pub(crate) fn path(self, base: &Path) -> std::path::PathBuf {
        let mut name = base.as_os_str().to_owned();
        name.push(".");
        name.push(self.extension());
        std::path::PathBuf::from(name)
    }

    pub(crate) fn extension(self) -> &'static str {
        match self {
            Slot::A => "jrna",
            Slot::B => "jrnb",
        }
    }
}

/// One journal file: a fixed-size byte region with explicit durability steps.
///
/// Concurrency contract (upheld by `Journal`, the only caller): a byte range is never written
/// by one thread while another thread reads or writes it. Readers only read below a position
/// the single appender published with release ordering, and the appender only writes above it.
pub(crate) trait Storage: Send + Sync {
    /// The file, for messages.
    fn path(&self) -> &Path;
    /// Current size in bytes.
    fn capacity(&self) -> usize;
    /// Copies `out.len()` bytes at `offset` into `out`.
    fn read(&self, offset: usize, out: &mut [u8]) -> io::Result<()>;
    /// Copies `data` to `offset`. Visible to a reopen after a process crash once it returns.
    fn write(&self, offset: usize, data: &[u8]) -> io::Result<()>;
    /// Makes `len` bytes at `offset` durable against power loss (msync). Takes the whole pages
    /// among them out of the page tables first, as [`Storage::unmap_settled`], so the caller
    /// makes the same promise.
    fn flush(&self, offset: usize, len: usize) -> io::Result<()>;
    /// Flushes file data and the drive cache (fdatasync; F_FULLFSYNC on Apple).
    fn sync(&self) -> io::Result<()>;
    /// Best effort, before the `len` bytes at `offset` are written back: drops this process's
    /// page-table entries for the whole pages among them, so that the write-back need not
    /// write-protect them one by one (a TLB shootdown each; `docs/design.md`, "Write-back
    /// without a TLB shootdown per page"). Never changes the bytes. The caller promises that
    /// no thread stores into those whole pages until this returns: they are below the
    /// journal's published end, or the journal is the caller's alone.
    fn unmap_settled(&self, _offset: usize, _len: usize) {}
    /// Grows the file to `new_len` bytes, allocating the space (never sparse), durably.
    fn grow(&mut self, new_len: usize) -> io::Result<()>;
    /// Allocates any holes in the file as it is (a journal restored or copied as a sparse
    /// file), so that no store into the map can meet one on a full disk (SIGBUS).
    fn fill_holes(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Lets go of a copy of the file's bytes kept in memory, once nothing will read them again
    /// (a read-only store after its replay: it serves reads from its map). The capacity stays
    /// what it was; reads afterwards fail as beyond the end. Files that are not copies have
    /// nothing to let go of.
    fn release_copy(&mut self) {}
    /// Calls `f` with the whole file; `&mut self` guarantees nothing writes it meanwhile.
    fn with_view(&mut self, f: &mut dyn FnMut(&[u8]));
    /// The parts of the file that may hold a byte other than zero, in order. The rest is known
    /// to read as zeros without reading it: holes, and space allocated but never written, as
    /// the filesystem reports them. By default the whole file.
    fn maybe_written(&self) -> Vec<Range<usize>> {
        vec![Range {
            start: 0,
            end: self.capacity(),
        }]
    }
    /// Best effort, from a background thread: bring the `len` bytes at `offset` into memory
    /// now, so that the writer's first store to each page does not wait for the kernel to
    /// allocate and zero it. Never changes the bytes.
    fn prefault(&self, _offset: usize, _len: usize) {}
    /// Best effort, from a background thread: map the `len` bytes at `offset` writable now, so
    /// that the writer's first store to each page is no fault at all. Never changes the bytes,
    /// but marks the pages dirty: the next flush writes them back (as the zeros they are), and
    /// one left unfilled for a while is written back by the kernel as well.
    fn prefault_for_write(&self, _offset: usize, _len: usize) {}
    /// Best effort: start writing the `len` bytes at `offset` back to disk without waiting, so
    /// that a later `flush` has less to wait for. Promises nothing about durability. Unmaps
    /// the whole pages first, as `flush` does, with the same promise from the caller.
    fn start_writeback(&self, _offset: usize, _len: usize) {}
    /// Calls `f` with the `len` bytes at `offset`, which (by the contract above) nobody writes
    /// while `f` runs. By default a copy; a memory map lends its own bytes.
    fn view(&self, offset: usize, len: usize, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let mut bytes = vec![0_u8; len];
        self.read(offset, &mut bytes)?;
        f(&bytes);
        Ok(())
    }
}

/// Opens the two journal files of one store.
pub(crate) trait Backend: Send + Sync {
    /// The store's base path, for messages.
    fn base(&self) -> &Path;
    /// Opens (creating if needed) one journal file of at least `min_len` bytes. A file that
    /// already exists keeps its size if larger.
    fn open(&self, slot: Slot, min_len: usize) -> Result<Box<dyn Storage>>;
    /// Removes the files this backend's `open` created, for an open that failed before the
    /// store was usable (refused, or an I/O error while creating it): nothing in them was
    /// ever acknowledged, and a failed open leaves the directory as it found it. Does nothing
    /// by default (backends that create no files).
    fn remove_created(&self) {}
}

#[cfg(test)]
pub(crate) use super::memory::{DiskImage, DiskOp, MemBackend, PAGE, SECTOR, SectorFate};
