//! A read-only store keeps its map, not copies of its journal files: after the open (and after
//! a refresh) the memory it holds is about its live data, however large the files are. Alone
//! in its own test binary, so that the counting allocator below sees only this test.
#![expect(
    unsafe_code,
    reason = "a global allocator that forwards to the system's and counts live bytes"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use resilient_kv::{KVStore, Value};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter only
// observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout, which meets `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as in `dealloc`; `new_size` is the caller's, which meets `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

#[test]
fn a_read_only_store_holds_its_map_not_copies_of_its_files() {
    const FILE: usize = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("app");
    // 100 keys of 1 KiB (about 100 KiB live), overwritten until both 8 MiB journals hold
    // megabytes of records.
    let writer = KVStore::builder(&base).buffer_size(FILE).open().unwrap();
    let mut round = 0;
    while writer.stats().compactions < 1 || writer.stats().active_used < (FILE / 2) as u64 {
        for k in 0..100 {
            let value = format!("{round:04}{}", "v".repeat(1020));
            writer
                .insert(format!("key{k}"), Value::from(value))
                .unwrap();
        }
        round += 1;
    }
    // The writer's compactor is idle from here on (a compaction just ended, and the journal is
    // far below its mark), so what the counter sees is the reader's.
    writer.compact().unwrap();
    let before = live();
    let reader = KVStore::open_read_only(&base).unwrap();
    let opened = live() - before;
    assert_eq!(reader.len(), 100);
    assert_eq!(reader.stats().active_capacity, FILE as u64);
    for k in 0..100 {
        writer
            .insert(format!("key{k}"), Value::from("new"))
            .unwrap();
    }
    writer.compact().unwrap();
    assert!(reader.refresh().unwrap());
    assert_eq!(reader.get("key7").unwrap(), Some(Value::from("new")));
    // What the reader holds after the refresh is what dropping it gives back.
    let before_drop = live();
    drop(reader);
    let refreshed = before_drop - live();
    eprintln!("held after the open: {opened} bytes; after a refresh: {refreshed} bytes");
    // The files are 16 MiB together; the map is about 100 KiB.
    for held in [opened, refreshed] {
        assert!(
            held > 0 && held < (FILE / 4) as isize,
            "a read-only store holds {held} bytes"
        );
    }
}
