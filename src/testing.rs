//! Hooks for the fuzz targets (`fuzz/`) and the corpus test (`tests/fuzz_corpus.rs`).
//!
//! **Not part of the API.** Hidden from the documentation, with no stability promise: it may
//! change or disappear in any release, patch releases included.

use std::path::Path;

use crate::bonjson::DecodeOptions;
use crate::journal::copied::CopiedBackend;
use crate::journal::format::{self, HEADER_SIZE, Header, STATE_COMMITTED};
use crate::journal::recovery;

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
    let backend = CopiedBackend::from_bytes(Path::new("replay_bytes"), file, Vec::new());
    match recovery::open(&backend, 0, &DecodeOptions::default()) {
        Ok(opened) => opened.active.end().saturating_sub(HEADER_SIZE),
        Err(_) => 0,
    }
}
