//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz targets'
//! checks, with the normal build: record checksums are verified here, unlike under the fuzzer.
//! The checks are the fuzz crate's own (`fuzz/checks.rs`), so this runs exactly what the
//! fuzzer ran. Fails if a corpus directory is missing or empty; prints the count per target.
//! Run optimised (`cargo test --release`): a few thousand inputs, each `open_files` one opening
//! a store twice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use resilient_kv::{KVStore, MIN_BUFFER_SIZE, Value};

#[allow(unreachable_pub)]
#[path = "../fuzz/checks.rs"]
mod checks;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} missing: {e}", dir.display()))
        .map(|entry| entry.expect("read corpus directory").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus directory {} is empty",
        dir.display()
    );
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let files = corpus(target);
    for path in &files {
        let data = std::fs::read(path).expect("read corpus file");
        let outcome = std::panic::catch_unwind(|| check(&data));
        if let Err(panic) = outcome {
            eprintln!("{target}: failed on {}", path.display());
            std::panic::resume_unwind(panic);
        }
    }
    println!("fuzz corpus {target}: replayed {} inputs", files.len());
}

#[test]
fn bonjson_decode_corpus() {
    replay("bonjson_decode", checks::bonjson_decode);
}

#[test]
fn record_decode_corpus() {
    replay("record_decode", checks::record_decode);
}

#[test]
fn open_files_corpus() {
    replay("open_files", checks::open_files);
}

// Regression tests for the bugs the fuzzers found. Each builds its input with valid
// checksums, so it fails in the normal build too.

/// A record frame of `generation` for `body`, as `docs/format.md` describes.
fn record(generation: u64, body: &[u8]) -> Vec<u8> {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&generation.to_le_bytes()), body);
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&(generation as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// A commit-marker body (op 4) for `generation`.
fn commit(generation: u64) -> Vec<u8> {
    let mut body = vec![4];
    body.extend_from_slice(&generation.to_le_bytes());
    body
}

/// Runs `f` on its own thread; `None` if it has not returned after `limit` (the thread is
/// left spinning: the test fails instead of hanging).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// record_decode: a batch record (op 3) whose put has a key that is not UTF-8. Replay marks the
/// bad entry with the replay's end instead of the record's offset, retries up to that same end,
/// and loops forever: opening the store never returns.
#[test]
fn fuzz_bug_batch_put_with_non_utf8_key_hangs_replay() {
    // batch of 1: put, key length 1, key 0xff, value 0 (BONJSON small integer).
    let records = record(1, &[3, 1, 1, 1, 0xff, 0x00]);
    let end = within(Duration::from_secs(20), move || {
        resilient_kv::testing::replay_bytes(&records, 1)
    });
    assert_eq!(
        end,
        Some(0),
        "replay must stop before the malformed record, and return"
    );
}

/// The same through real files: `KVStore::open` on a committed journal holding that record
/// never returns.
#[test]
fn fuzz_bug_batch_put_with_non_utf8_key_hangs_open() {
    let input = open_files_input(1, 1, 0, &record(1, &[3, 1, 1, 1, 0xff, 0x00]), &[]);
    let returned = within(Duration::from_secs(20), move || checks::open_files(&input));
    assert!(
        returned.is_some(),
        "opening the store did not return within 20 s"
    );
}

/// open_files (artifacts `fuzz/regressions/open_files/generation-overflow-*`): a committed
/// journal of generation `u64::MAX` (header and commit marker valid). Opening computes the next
/// generation as `highest + 1`: an overflow panic where overflow checks are on (debug builds,
/// the fuzzer); in release it wraps to 0, the next compaction commits generation 0 into the
/// other file, and that journal loses the next election to the `u64::MAX` one: every write
/// acknowledged after the compaction is gone at the next open.
#[test]
fn fuzz_bug_generation_u64_max_overflows() {
    let input = open_files_input(1, u64::MAX, 0, &record(u64::MAX, &commit(u64::MAX)), &[]);
    // Refused since headers above `MAX_GENERATION` are invalid (and records cannot prove a
    // generation above it either): nothing to open, and nothing written.
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("store");
    checks::write_files(&input, &base);
    let before = std::fs::read(dir.path().join("store.jrna")).unwrap();
    let opened = KVStore::builder(&base).buffer_size(MIN_BUFFER_SIZE).open();
    assert!(
        matches!(opened, Err(resilient_kv::Error::Unreadable { .. })),
        "{opened:?}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("store.jrna")).unwrap(),
        before
    );
    // And the fuzz target's own checks (whatever opens must take writes, compact and reopen).
    let outcome = std::panic::catch_unwind(|| checks::open_files(&input));
    assert!(
        outcome.is_ok(),
        "a store whose journal is of generation u64::MAX misbehaved"
    );
}

/// An `open_files` input (layout in `fuzz/checks.rs`).
fn open_files_input(flags: u8, gen_a: u64, gen_b: u64, body_a: &[u8], body_b: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&gen_a.to_le_bytes());
    out.extend_from_slice(&gen_b.to_le_bytes());
    out.extend_from_slice(&u16::try_from(body_a.len()).unwrap().to_le_bytes());
    out.extend_from_slice(body_a);
    out.extend_from_slice(body_b);
    out
}

/// open_files (artifacts `fuzz/regressions/open_files/generation-overflow-*`): one journal is
/// "committed" at a generation near `u64::MAX` and the other file has a blank header over
/// records. Checking whether those records prove a newer generation computed
/// `generation + 1` and then added `1 << 32`: an overflow panic where overflow checks are on;
/// in release the candidate wrapped and a stale journal silently won the election.
///
/// Fixed by refusing headers above `MAX_GENERATION` (2^62, out of reach of any real store): the
/// forged header is damage, the other file's records prove their generation and are opened,
/// and the open must say that the first file's records were not used.
#[test]
fn fuzz_bug_generation_near_u64_max_elects_stale_records() {
    let newest = u64::MAX - 1;
    let put = |key: &str, value: &str| {
        let mut body = vec![1, u8::try_from(key.len()).unwrap()];
        body.extend_from_slice(key.as_bytes());
        body.extend_from_slice(&resilient_kv::bonjson::encode(&Value::from(value)).unwrap());
        body
    };
    let mut body_a = record(newest, &commit(newest));
    body_a.extend(record(newest, &put("k", "new")));
    let mut body_b = record(5, &put("k", "old"));
    body_b.extend(record(5, &commit(5)));
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("store");
    let input = open_files_input(0x01, newest, 0, &body_a, &body_b);
    let outcome = std::panic::catch_unwind(|| {
        checks::write_files(&input, &base);
        let store = KVStore::builder(&base)
            .buffer_size(MIN_BUFFER_SIZE)
            .open()
            .unwrap();
        let reported: Vec<String> = store
            .subscribe()
            .try_iter()
            .filter_map(|e| match e {
                resilient_kv::Event::DataLoss { path, .. } => Some(path.display().to_string()),
                _ => None,
            })
            .collect();
        (store.get("k").unwrap(), reported)
    });
    let (value, reported) = outcome.expect("open panicked");
    assert_eq!(
        value,
        Some(Value::from("old")),
        "the provable journal opens"
    );
    assert!(
        reported.iter().any(|p| p.ends_with(".jrna")),
        "the unusable records of .jrna must be reported: {reported:?}"
    );
}
