//! The storage seam: what the journal needs from a file, so that tests (and loom) can run the
//! same journal code on memory with injected faults instead of real memory maps.

use std::io;
use std::path::Path;
#[cfg(test)]
use std::{collections::HashMap, path::PathBuf, sync::Arc};

#[cfg(test)]
use parking_lot::Mutex;

use crate::Result;

/// Which of the two journal files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Slot {
    A,
    B,
}

impl Slot {
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
    /// Makes `len` bytes at `offset` durable against power loss (msync).
    fn flush(&self, offset: usize, len: usize) -> io::Result<()>;
    /// Flushes file data and the drive cache (fdatasync; F_FULLFSYNC on Apple).
    fn sync(&self) -> io::Result<()>;
    /// Grows the file to `new_len` bytes, allocating the space (never sparse), durably.
    fn grow(&mut self, new_len: usize) -> io::Result<()>;
    /// Calls `f` with the whole file; `&mut self` guarantees nothing writes it meanwhile.
    fn with_view(&mut self, f: &mut dyn FnMut(&[u8]));
}

/// Opens the two journal files of one store.
pub(crate) trait Backend: Send + Sync {
    /// The store's base path, for messages.
    fn base(&self) -> &Path;
    /// Opens (creating if needed) one journal file of at least `min_len` bytes. A file that
    /// already exists keeps its size if larger.
    fn open(&self, slot: Slot, min_len: usize) -> Result<Box<dyn Storage>>;
}

/// One in-memory file's bytes.
#[cfg(test)]
pub(crate) type MemFile = Arc<Mutex<Vec<u8>>>;

/// An in-memory "disk": the two files outlive any store opened on them, so tests can reopen,
/// inspect and damage them.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct MemBackend {
    files: Arc<Mutex<HashMap<Slot, MemFile>>>,
    base: PathBuf,
    /// While set, every flush and sync fails (an injected I/O error).
    pub(crate) fail_flushes: Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(test)]
impl MemBackend {
    pub(crate) fn new() -> Self {
        MemBackend {
            files: Arc::default(),
            base: PathBuf::from("memory"),
            fail_flushes: Arc::default(),
        }
    }

    /// The bytes of one file, to inspect or damage.
    pub(crate) fn file(&self, slot: Slot) -> MemFile {
        Arc::clone(self.files.lock().entry(slot).or_default())
    }
}

#[cfg(test)]
impl Backend for MemBackend {
    fn base(&self) -> &Path {
        &self.base
    }

    fn open(&self, slot: Slot, min_len: usize) -> Result<Box<dyn Storage>> {
        let file = self.file(slot);
        {
            let mut bytes = file.lock();
            if bytes.len() < min_len {
                bytes.resize(min_len, 0);
            }
        }
        Ok(Box::new(MemStorage {
            bytes: file,
            path: self.base.with_extension(slot.extension()),
            fail_flushes: Arc::clone(&self.fail_flushes),
        }))
    }
}

#[cfg(test)]
struct MemStorage {
    bytes: Arc<Mutex<Vec<u8>>>,
    path: PathBuf,
    fail_flushes: Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(test)]
impl MemStorage {
    fn injected(&self) -> io::Result<()> {
        if self.fail_flushes.load(std::sync::atomic::Ordering::SeqCst) {
            Err(io::Error::other("injected flush failure"))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
fn out_of_bounds() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "access beyond the end of the journal",
    )
}

#[cfg(test)]
impl Storage for MemStorage {
    fn path(&self) -> &Path {
        &self.path
    }

    fn capacity(&self) -> usize {
        self.bytes.lock().len()
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes.lock();
        let src = bytes
            .get(offset..offset + out.len())
            .ok_or_else(out_of_bounds)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn write(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        let mut bytes = self.bytes.lock();
        let dst = bytes
            .get_mut(offset..offset + data.len())
            .ok_or_else(out_of_bounds)?;
        dst.copy_from_slice(data);
        Ok(())
    }

    fn flush(&self, _offset: usize, _len: usize) -> io::Result<()> {
        self.injected()
    }

    fn sync(&self) -> io::Result<()> {
        self.injected()
    }

    fn grow(&mut self, new_len: usize) -> io::Result<()> {
        let mut bytes = self.bytes.lock();
        if bytes.len() < new_len {
            bytes.resize(new_len, 0);
        }
        Ok(())
    }

    fn with_view(&mut self, f: &mut dyn FnMut(&[u8])) {
        f(&self.bytes.lock());
    }
}
