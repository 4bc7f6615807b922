//! Hooks for the fuzz targets (`fuzz/`) and the corpus test (`tests/fuzz_corpus.rs`).
//!
//! **Not part of the API.** Hidden from the documentation, with no stability promise: it may
//! change or disappear in any release, patch releases included.

use std::io;
use std::path::Path;

use crate::bonjson::DecodeOptions;
use crate::journal::format::{self, HEADER_SIZE, Header, STATE_COMMITTED};
use crate::journal::recovery;
use crate::journal::storage::{Backend, Slot, Storage};

/// Opens a store, in memory, whose first journal is a `COMMITTED` header of `generation`
/// followed by `records` (the bytes after the header page) and whose second journal is new,
/// which replays `records` exactly as opening a store on disk does. Returns where the replay
/// stopped, counted from the start of `records` (never more than `records.len()`).
pub fn replay_bytes(records: &[u8], generation: u64) -> usize {
    let header = format::encode_header(&Header {
        version: format::FORMAT_VERSION,
        state: STATE_COMMITTED,
        generation,
    });
    let mut file = vec![0_u8; HEADER_SIZE];
    if let Some(dst) = file.get_mut(..header.len()) {
        dst.copy_from_slice(&header);
    }
    file.extend_from_slice(records);
    let backend = Bytes(file);
    match recovery::open(&backend, backend.0.len(), &DecodeOptions::default()) {
        Ok(opened) => opened.active.end().saturating_sub(HEADER_SIZE),
        Err(_) => 0,
    }
}

/// Read-only in-memory journal files: slot A holds the bytes, slot B is all zero.
struct Bytes(Vec<u8>);

impl Backend for Bytes {
    fn base(&self) -> &Path {
        Path::new("replay_bytes")
    }

    fn open(&self, slot: Slot, min_len: usize) -> crate::Result<Box<dyn Storage>> {
        let mut bytes = match slot {
            Slot::A => self.0.clone(),
            Slot::B => Vec::new(),
        };
        bytes.resize(bytes.len().max(min_len), 0);
        Ok(Box::new(Bytes(bytes)))
    }
}

impl Storage for Bytes {
    fn path(&self) -> &Path {
        Path::new("replay_bytes")
    }

    fn capacity(&self) -> usize {
        self.0.len()
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> io::Result<()> {
        let src = offset
            .checked_add(out.len())
            .and_then(|end| self.0.get(offset..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn write(&self, _: usize, _: &[u8]) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::ReadOnlyFilesystem))
    }

    fn flush(&self, _: usize, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn grow(&mut self, _: usize) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::ReadOnlyFilesystem))
    }

    fn with_view(&mut self, f: &mut dyn FnMut(&[u8])) {
        f(&self.0);
    }
}
