//! An in-memory disk for the model checks in `loom-tests/` (`cfg(loom)` builds only; not part
//! of the API). It keeps two views of each file: what a process crash leaves (every write) and
//! what a power loss leaves (ranges flushed by `msync`, everything at `fdatasync`).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::journal::storage::{Backend, Slot, Storage};
use crate::{Builder, KVStore, Result};

#[derive(Clone, Default)]
struct File {
    written: Vec<u8>,
    durable: Vec<u8>,
}

type Shared = Arc<Mutex<File>>;

/// Two journal files in memory.
#[derive(Default)]
pub struct MemDisk {
    files: Mutex<HashMap<Slot, Shared>>,
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> Self {
        MemDisk::default()
    }

    /// Opens a store on this disk with the settings of `builder` (its path is only a name).
    pub fn open(&self, builder: Builder) -> Result<KVStore> {
        KVStore::open_on(builder, self)
    }

    fn image(&self, durable_only: bool) -> MemDisk {
        let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let copied = files
            .iter()
            .map(|(slot, file)| {
                let file = file.lock().unwrap_or_else(PoisonError::into_inner);
                let bytes = if durable_only {
                    file.durable.clone()
                } else {
                    file.written.clone()
                };
                let copy = File {
                    written: bytes.clone(),
                    durable: bytes,
                };
                (*slot, Arc::new(Mutex::new(copy)))
            })
            .collect();
        MemDisk {
            files: Mutex::new(copied),
        }
    }

    /// What a process crash now would leave: every completed write.
    pub fn after_process_crash(&self) -> MemDisk {
        self.image(false)
    }

    /// What a power loss now would leave: only what was flushed.
    pub fn after_power_loss(&self) -> MemDisk {
        self.image(true)
    }
}

impl Backend for MemDisk {
    fn base(&self) -> &Path {
        Path::new("memdisk")
    }

    fn open(&self, slot: Slot, min_len: usize) -> Result<Box<dyn Storage>> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let file = Arc::clone(files.entry(slot).or_default());
        {
            let mut f = file.lock().unwrap_or_else(PoisonError::into_inner);
            if f.written.len() < min_len {
                f.written.resize(min_len, 0);
                f.durable.resize(min_len, 0);
            }
        }
        Ok(Box::new(MemStorage {
            file,
            path: PathBuf::from(format!("memdisk.{}", slot.extension())),
        }))
    }
}

struct MemStorage {
    file: Shared,
    path: PathBuf,
}

fn bounds() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "out of bounds")
}

impl MemStorage {
    fn file(&self) -> std::sync::MutexGuard<'_, File> {
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Storage for MemStorage {
    fn path(&self) -> &Path {
        &self.path
    }

    fn capacity(&self) -> usize {
        self.file().written.len()
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> io::Result<()> {
        let file = self.file();
        let src = file
            .written
            .get(offset..offset + out.len())
            .ok_or_else(bounds)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn write(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        let mut file = self.file();
        let dst = file
            .written
            .get_mut(offset..offset + data.len())
            .ok_or_else(bounds)?;
        dst.copy_from_slice(data);
        Ok(())
    }

    fn flush(&self, offset: usize, len: usize) -> io::Result<()> {
        let mut file = self.file();
        let src = file
            .written
            .get(offset..offset + len)
            .ok_or_else(bounds)?
            .to_vec();
        let dst = file
            .durable
            .get_mut(offset..offset + len)
            .ok_or_else(bounds)?;
        dst.copy_from_slice(&src);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        // fdatasync: every written byte of the file reaches the disk.
        let mut file = self.file();
        file.durable = file.written.clone();
        Ok(())
    }

    fn grow(&mut self, new_len: usize) -> io::Result<()> {
        let mut file = self.file();
        if new_len > file.written.len() {
            file.written.resize(new_len, 0);
            file.durable.resize(new_len, 0);
        }
        Ok(())
    }

    fn with_view(&mut self, f: &mut dyn FnMut(&[u8])) {
        let file = self.file();
        f(&file.written);
    }
}
