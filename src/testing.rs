//! Hooks for the fuzz targets (`fuzz/`) and the corpus test (`tests/fuzz_corpus.rs`), and the
//! seeded random generator the randomized tests share ([`Rng`]).
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

/// Where the BONJSON value at the start of `bytes` ends, as replay finds it for each value of
/// a batch record without decoding it (`None`: replay asks the decoder instead), with the
/// decoder's default depth limit. For every input the decoder accepts, this is `None` or the
/// decoder's own length.
pub fn value_extent(bytes: &[u8]) -> Option<usize> {
    crate::bonjson::value_extent(bytes, DecodeOptions::default().limits.depth())
}

/// A small seeded pseudo-random generator (xorshift64, shifts 13/7/17) for the randomized
/// tests (`tests/corruption/`, `tests/crash_kill.rs`, the library's power-loss tests): the
/// same seed always gives the same sequence, so every failure can be rerun from its seed. Not
/// for anything that needs good or unpredictable randomness.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`, any value (0 included): the seed is spread over all bits
    /// (multiplied by the 64-bit golden ratio) and the first output skipped, so nearby seeds
    /// (a first seed plus the run number) give unrelated sequences.
    pub fn new(seed: u64) -> Self {
        let mut rng = Self::from_state(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        rng.next_u64();
        rng
    }

    /// A generator whose state is `state` itself, with the low bit set (xorshift's state must
    /// not be 0), without [`Rng::new`]'s mixing: for callers that already mix their seeds, and
    /// for fixtures whose sequence must stay as it was built.
    pub fn from_state(state: u64) -> Self {
        Self(state | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (slightly biased towards small values, which tests do not mind);
    /// 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// An index in `0..n` (0 when `n` is 0).
    pub fn index(&mut self, n: usize) -> usize {
        // Lossless both ways: `usize` has at most 64 bits, and the result is below `n`.
        self.below(n as u64) as usize
    }

    /// True with a probability of `percent` in 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
