//! A journal whose header is damaged is examined in place at open, never copied into memory:
//! a large (or sparse, or forged) file with a garbled header must not make an open allocate
//! its size. Alone in its own test binary, so that the counting allocator below sees only
//! this open.
#![expect(
    unsafe_code,
    reason = "a global allocator that forwards to the system's and records sizes"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use resilient_kv::{Event, KVStore, Value};

/// The system allocator, keeping the largest single allocation made since the last reset.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter only
// observes sizes.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout, which meets `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as in `dealloc`; `new_size` is the caller's, which meets `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Largest = Largest;

#[test]
fn a_large_journal_with_a_damaged_header_is_not_copied_into_memory() {
    const LOSER_LEN: u64 = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("app");
    {
        let store = KVStore::new(&base, 64 * 1024, None, None).unwrap();
        store.insert("kept".into(), Value::Integer(1)).unwrap();
    }
    // The second journal (never compacted into): a garbled header, and 64 MiB long (sparse;
    // the open allocates it on disk, which `fallocate` does without writing).
    let mut loser = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("{}.jrnb", base.display()))
        .unwrap();
    loser.seek(SeekFrom::Start(0)).unwrap();
    loser.write_all(&[0xa5; 64]).unwrap();
    loser.set_len(LOSER_LEN).unwrap();
    drop(loser);

    LARGEST.store(0, Ordering::Relaxed);
    let store = KVStore::new(&base, 64 * 1024, None, None).unwrap();
    let largest = LARGEST.load(Ordering::Relaxed);
    eprintln!("largest allocation during the open: {largest} bytes");
    assert_eq!(store.get("kept").unwrap(), Some(Value::Integer(1)));
    assert!(
        largest < (LOSER_LEN / 8) as usize,
        "the open made a single allocation of {largest} bytes for a {LOSER_LEN}-byte journal"
    );
    // The damage is reported, not passed over.
    let events: Vec<Event> = store.subscribe().try_iter().collect();
    assert!(
        events.iter().any(|e| matches!(e, Event::DataLoss { .. })),
        "{events:?}"
    );
}
