//! The writer's stores into its journal are not page faults: the compactor maps the pages
//! writable ahead of it (`src/prefault.rs`). On a filesystem that tracks dirty pages (ext4, as
//! here) each first store to a write-protected page would otherwise fault into the filesystem.

#![cfg(target_os = "linux")]

use std::time::Duration;

use resilient_kv::{KVStore, Value};

/// Minor page faults of this thread so far.
fn minor_faults() -> libc::c_long {
    #[expect(unsafe_code, reason = "getrusage fills a struct it is handed")]
    // SAFETY: `getrusage` only writes the `rusage` it is given, which lives on this stack, and
    // `RUSAGE_THREAD` is a valid `who` on Linux.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
        usage
    };
    usage.ru_minflt
}

/// 64 writes of about 1 KiB: 64 KiB of journal, over the same 8 keys (the heap stays put).
fn write_chunk(store: &KVStore, chunk: usize) {
    for i in 0..64 {
        let value = Value::from(format!("{chunk:04}{i:04}{}", "v".repeat(1000)));
        store.insert(format!("k{}", i % 8), value).unwrap();
    }
}

#[test]
fn a_writer_past_the_lead_in_finds_its_pages_mapped_writable() {
    let dir = tempfile::tempdir().unwrap();
    let store = KVStore::builder(dir.path().join("faults"))
        .buffer_size(16 * 1024 * 1024)
        .open()
        .unwrap();
    // The lead-in (writers ask for nothing in their first 256 KiB after open), at a pace the
    // compactor thread keeps ahead of.
    for chunk in 0..8 {
        write_chunk(&store, chunk);
        std::thread::sleep(Duration::from_millis(5));
    }
    // 1 MiB of records is 256 pages: a fault each without the prefaulting. The compactor
    // thread serves the requests when it is scheduled; on a loaded machine it may fall behind
    // for one stretch, so up to five stretches are measured and one must be nearly free of
    // faults (without the prefaulting every one takes about 256).
    let mut counts = Vec::new();
    for attempt in 0..5 {
        let before = minor_faults();
        for chunk in 0..16 {
            write_chunk(&store, 8 + attempt * 16 + chunk);
            std::thread::sleep(Duration::from_millis(5));
        }
        counts.push(minor_faults() - before);
        if counts.last().is_some_and(|&faults| faults < 64) {
            break;
        }
    }
    println!("page faults per 1 MiB of records: {counts:?}");
    assert!(
        counts.last().is_some_and(|&faults| faults < 64),
        "page faults over 256 pages of records, per attempt: {counts:?}"
    );
    assert_eq!(store.len(), 8);
}
