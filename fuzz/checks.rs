//! The three fuzz checks, one function per target. Each takes the raw fuzz input, must never
//! panic on its own account, and panics (an assertion) only when the library misbehaves.
//!
//! This file is the library of the fuzz crate (`fuzz/Cargo.toml`) and is also included as a
//! module by the main crate's `tests/fuzz_corpus.rs`, which replays the committed corpus through
//! it with the normal build (record checksums verified). Under `cfg(fuzzing)` the library skips
//! record checksums, so the fuzzer reaches the record bodies.

use std::path::{Path, PathBuf};

use resilient_kv::bonjson::{self, DecodeOptions, Normalization};
use resilient_kv::{KVStore, MIN_BUFFER_SIZE, Value};

/// `bonjson_decode`: arbitrary bytes into the decoder. Never panics; whatever decodes
/// re-encodes, and the re-encoded bytes decode to an equal value. The same for
/// `decode_prefix` (whose prefix must decode alone) and for decoding with NFC normalization.
/// Replay's walk of a batch value (`testing::value_extent`) ends where `decode_prefix` does,
/// or leaves the value to it.
pub fn bonjson_decode(data: &[u8]) {
    let decoded = bonjson::decode(data);
    if let Ok(value) = &decoded {
        round_trip(value);
    }
    let options = DecodeOptions::default();
    if let Ok((value, used)) = bonjson::decode_prefix(data, &options) {
        assert!(
            used > 0 && used <= data.len(),
            "decode_prefix used {used} bytes"
        );
        let prefix = data.get(..used).unwrap_or_default();
        assert_eq!(
            bonjson::decode(prefix).ok().as_ref(),
            Some(&value),
            "the prefix decode_prefix used decodes alone to the same value"
        );
        assert_eq!(decoded.is_ok(), used == data.len());
        let extent = resilient_kv::testing::value_extent(data);
        assert!(
            extent.is_none() || extent == Some(used),
            "value_extent says {extent:?}, the decoder used {used} bytes"
        );
    }
    if let Some(end) = resilient_kv::testing::value_extent(data) {
        assert!(end > 0 && end <= data.len(), "value_extent ended at {end}");
    }
    let mut nfc = DecodeOptions::default();
    nfc.unicode_normalization = Normalization::Nfc;
    if let Ok(value) = bonjson::decode_with(data, &nfc) {
        round_trip(&value);
    }
}

fn round_trip(value: &Value) {
    let bytes = match bonjson::encode(value) {
        Ok(bytes) => bytes,
        Err(e) => panic!("a decoded value must re-encode: {e}"),
    };
    match bonjson::decode(&bytes) {
        Ok(again) => assert_eq!(&again, value, "re-encoded value decodes differently"),
        Err(e) => panic!("re-encoded bytes must decode: {e}"),
    }
}

/// `record_decode`: the first 8 bytes (little-endian, zero-padded) are a generation, the rest
/// the records of a journal file of that generation (everything after the header page),
/// replayed as opening a store does. Never panics or hangs; the replay ends within the bytes,
/// and the same bytes always replay to the same end.
pub fn record_decode(data: &[u8]) {
    let (generation, records) = take_u64(data);
    let end = resilient_kv::testing::replay_bytes(records, generation);
    assert!(
        end <= records.len(),
        "replay ended at {end}, beyond the {} bytes given",
        records.len()
    );
    assert_eq!(
        resilient_kv::testing::replay_bytes(records, generation),
        end,
        "replaying the same bytes twice ended at different offsets"
    );
}

/// Header page size, magic and states, as in `docs/format.md`.
const HEADER_SIZE: usize = 4096;
const MAGIC: &[u8; 8] = b"RKVJRNL\x01";
const FORMAT_VERSION: u32 = 1;
const STATE_PENDING: u32 = 0x5045_4e44;
const STATE_COMMITTED: u32 = 0x434f_4d54;

/// The key `open_files` inserts after a successful open.
const PROBE_KEY: &str = "fuzz/probe";
/// The key `open_files` inserts after compacting.
const AFTER_KEY: &str = "fuzz/after";

/// `open_files`: two journal files built from the input, then a store opened on them (in a
/// temporary directory). Opening may fail, but never panics. If it opens: `keys`, `get` and
/// `as_hashmap` agree; an insert, a compaction and another insert succeed; the store reopens,
/// holding exactly what it held plus the inserts.
///
/// Input layout:
/// - byte 0, flags: bits 0-1 file A's header, bits 2-3 file B's: 0 an all-zero header page,
///   1 a valid `COMMITTED` header, 2 a valid `PENDING` header (each followed by the file's body
///   bytes), 3 no header page at all (the file is just its body bytes). Bit 4 (A) and bit 5 (B):
///   the header claims format version 2 instead of 1.
/// - bytes 1..9: file A's generation, bytes 9..17: file B's (`u64`, little-endian).
/// - bytes 17..19: the length of file A's body (`u16`, little-endian, capped at what is left).
/// - then file A's body, then file B's body (the rest).
pub fn open_files(data: &[u8]) {
    let dir = match tempfile::Builder::new()
        .prefix("rkv-fuzz-")
        .tempdir_in(scratch_dir())
    {
        Ok(dir) => dir,
        Err(e) => panic!("cannot create a temporary directory: {e}"),
    };
    let base = dir.path().join("store");
    write_files(data, &base);
    let open = || KVStore::builder(&base).buffer_size(MIN_BUFFER_SIZE).open();
    let Ok(store) = open() else {
        return;
    };

    let mut expected = store.as_hashmap();
    let mut keys = store.keys();
    keys.sort_unstable();
    let mut listed: Vec<String> = expected.keys().cloned().collect();
    listed.sort_unstable();
    assert_eq!(keys, listed, "keys() and as_hashmap() disagree");
    assert_eq!(store.len(), expected.len());
    for (key, value) in &expected {
        assert!(store.contains_key(key));
        match store.get(key) {
            Ok(Some(got)) => assert_eq!(&got, value, "get({key:?}) differs from as_hashmap"),
            other => panic!("get({key:?}) of a listed key returned {other:?}"),
        }
    }

    let probe = Value::from("probe");
    if let Err(e) = store.insert(PROBE_KEY.to_owned(), probe.clone()) {
        panic!("insert after a successful open failed: {e}");
    }
    assert_eq!(store.get(PROBE_KEY).ok(), Some(Some(probe.clone())));
    expected.insert(PROBE_KEY.to_owned(), probe);
    if let Err(e) = store.compact() {
        panic!("compaction after a successful open failed: {e}");
    }
    assert_eq!(
        store.as_hashmap(),
        expected,
        "compaction changed the contents"
    );
    // A write into the journal the compaction started.
    let after = Value::Integer(1);
    if let Err(e) = store.insert(AFTER_KEY.to_owned(), after.clone()) {
        panic!("insert after a compaction failed: {e}");
    }
    expected.insert(AFTER_KEY.to_owned(), after);
    let stats = store.stats();
    drop(store);

    let store = match open() {
        Ok(store) => store,
        Err(e) => panic!("reopening a store that opened and closed cleanly failed: {e}"),
    };
    // With checksums on (the corpus test), the reopened store must hold exactly what the
    // first one held. Under `cfg(fuzzing)` checksums are skipped, so bytes the input left
    // beyond the end of the new journal could pass for records of its generation; compare
    // only when no such bytes exist.
    let trusted = !cfg!(fuzzing)
        || !may_hold_frames(
            &[with_ext(&base, "jrna"), with_ext(&base, "jrnb")],
            stats.generation,
            usize::try_from(stats.active_used).unwrap_or(usize::MAX),
        );
    if trusted {
        assert_eq!(
            store.as_hashmap(),
            expected,
            "the reopened store differs from the one closed"
        );
    }
    drop(store);
}

/// Writes the two journal files an `open_files` input describes (layout above) for the store
/// at `base` (`<base>.jrna`, `<base>.jrnb`).
pub fn write_files(data: &[u8], base: &Path) {
    let (flags, rest) = data.split_first().unwrap_or((&0, &[]));
    let (gen_a, rest) = take_u64(rest);
    let (gen_b, rest) = take_u64(rest);
    let (len_a, rest) = take_u16(rest);
    let (body_a, body_b) = rest.split_at(usize::from(len_a).min(rest.len()));
    let file_a = journal_file(flags & 3, flags & 0x10 != 0, gen_a, body_a);
    let file_b = journal_file((flags >> 2) & 3, flags & 0x20 != 0, gen_b, body_b);
    for (ext, bytes) in [("jrna", &file_a), ("jrnb", &file_b)] {
        if let Err(e) = std::fs::write(with_ext(base, ext), bytes) {
            panic!("cannot write a journal file: {e}");
        }
    }
}

/// A journal file: a header page (`mode` 0 zero, 1 committed, 2 pending) then `body`, or just
/// `body` (`mode` 3).
fn journal_file(mode: u8, future: bool, generation: u64, body: &[u8]) -> Vec<u8> {
    let state = match mode {
        0 => None,
        1 => Some(STATE_COMMITTED),
        2 => Some(STATE_PENDING),
        _ => return body.to_vec(),
    };
    let mut file = vec![0_u8; HEADER_SIZE];
    if let Some(state) = state {
        let version = if future {
            FORMAT_VERSION + 1
        } else {
            FORMAT_VERSION
        };
        let mut header = Vec::with_capacity(28);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&version.to_le_bytes());
        header.extend_from_slice(&state.to_le_bytes());
        header.extend_from_slice(&generation.to_le_bytes());
        let crc = crc32c::crc32c(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        file.splice(..header.len(), header);
    }
    file.extend_from_slice(body);
    file
}

/// Whether any of `files` holds, at or after `end`, a frame naming `generation` (the 4-byte
/// generation field sits 4 bytes into a frame).
fn may_hold_frames(files: &[PathBuf], generation: u64, end: usize) -> bool {
    let needle = (generation as u32).to_le_bytes();
    files.iter().any(|path| {
        let bytes = std::fs::read(path).unwrap_or_default();
        bytes
            .get(end.saturating_add(4)..)
            .is_some_and(|tail| tail.windows(4).any(|w| w == needle))
    })
}

/// Where `open_files` makes its temporary directories: memory (`/dev/shm`) when available,
/// since every open flushes.
pub fn scratch_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn with_ext(base: &Path, ext: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

fn take_u64(data: &[u8]) -> (u64, &[u8]) {
    let (head, rest) = data.split_at(data.len().min(8));
    let mut bytes = [0_u8; 8];
    bytes
        .get_mut(..head.len())
        .unwrap_or_default()
        .copy_from_slice(head);
    (u64::from_le_bytes(bytes), rest)
}

fn take_u16(data: &[u8]) -> (u16, &[u8]) {
    let (head, rest) = data.split_at(data.len().min(2));
    let mut bytes = [0_u8; 2];
    bytes
        .get_mut(..head.len())
        .unwrap_or_default()
        .copy_from_slice(head);
    (u16::from_le_bytes(bytes), rest)
}
