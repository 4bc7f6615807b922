//! Faults (issue 4, item 5), on real files through the public API.
//!
//! - A full disk: a 2 MiB tmpfs is mounted on a temporary directory (`mount -t tmpfs`, which
//!   needs root; where mounting fails the test prints why and returns, the only skip allowed).
//!   Opening a store whose journals do not fit must fail with a typed error and leave nothing
//!   that breaks a later open; a store whose journals fit but whose growth cannot must fail a
//!   write with a typed error, keep every acknowledged write (readable at once and after a
//!   reopen on the same full disk), and still take removals. The tmpfs is always unmounted (a
//!   guard with `Drop`).
//! - A second process opening a store that is open: this test binary re-executed as a child
//!   (as `tests/crash_kill.rs` does) must get `Error::Locked` and change no byte and no length of
//!   either file, even when it asks for larger journals; once the first store is closed the
//!   same child opens it and sees every key (so the child's check is not vacuous).
//!
//! Failed msync/fsync are injected in-crate through the storage seam (`src/recovery_tests.rs`).
//! Runtime with `cargo test --release --test faults`: under 0.1 s (one mount per disk-full test).

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use resilient_kv::{Error, Event, KVStore, Value};

/// The tests of this file run one at a time: one of them spawns child processes, and a child
/// holds copies of every descriptor of this process between its fork and its exec, including a
/// journal another test has just closed, whose lock then looks held (`Locked`) for a moment.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const CHILD_ENV: &str = "RKV_FAULTS_CHILD";
const KIB: usize = 1024;

/// A tmpfs of a given size mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mounts, or says why it could not.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir: Some(dir) })
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(dir.path()).status().is_ok_and(|s| s.success())
        };
        if !umount(false) && !umount(true) {
            eprintln!("could not unmount the tmpfs at {}", dir.path().display());
        }
        drop(dir);
    }
}

/// Mounts a 2 MiB tmpfs, or prints why the test is skipped.
fn small_disk(test: &str) -> Option<Tmpfs> {
    match Tmpfs::mount("2m") {
        Ok(fs) => Some(fs),
        Err(why) => {
            println!("SKIPPED {test}: a small tmpfs could not be mounted ({why}); needs root");
            None
        }
    }
}

/// Aborts the process, naming `what`, if it does not finish within `limit` (a write that
/// waits forever for a compaction that cannot succeed would otherwise hang the run).
struct Deadline(Arc<AtomicBool>);

impl Deadline {
    fn new(what: &'static str, limit: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let watched = Arc::clone(&done);
        std::thread::spawn(move || {
            let started = Instant::now();
            while !watched.load(Ordering::Acquire) {
                if started.elapsed() > limit {
                    eprintln!("{what}: still running after {limit:?} (a hang)");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Deadline(done)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn is_enospc(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == ErrorKind::StorageFull)
}

#[test]
fn disk_full_at_open_is_a_typed_error_and_breaks_no_later_open() {
    let _serial = one_at_a_time();
    let Some(disk) = small_disk("disk_full_at_open_is_a_typed_error_and_breaks_no_later_open")
    else {
        return;
    };
    let _deadline = Deadline::new("disk full at open", Duration::from_secs(60));
    let base = disk.path().join("store");
    // Neither journal fits; then the first fits and the second does not.
    for buffer in [4096 * KIB, 1536 * KIB] {
        let opened = KVStore::builder(&base)
            .buffer_size(buffer)
            .max_size(8192 * KIB)
            .open();
        match opened {
            Err(e) if is_enospc(&e) => {}
            Err(e) => panic!("buffer_size {buffer}: expected Io(StorageFull), got {e:?}"),
            Ok(_) => panic!("buffer_size {buffer}: two journals cannot fit a 2 MiB disk"),
        }
    }
    // What the failed opens left must not break an open that fits.
    {
        let store = KVStore::builder(&base)
            .buffer_size(128 * KIB)
            .open()
            .unwrap_or_else(|e| panic!("after failed opens, an open that fits failed: {e:?}"));
        assert!(store.is_empty());
        assert_eq!(store.stats().data_loss_events, 0);
        store.insert("k".into(), Value::Integer(1)).unwrap();
    }
    let store = KVStore::builder(&base)
        .buffer_size(128 * KIB)
        .open()
        .unwrap();
    assert_eq!(store.get("k").unwrap(), Some(Value::Integer(1)));
    assert_eq!(store.len(), 1);
    drop(store);
    println!("disk full at open: 2 refused opens, 2 opens after them");
}

#[test]
fn disk_full_during_growth_fails_a_write_and_keeps_every_acknowledged_one() {
    let _serial = one_at_a_time();
    let Some(disk) =
        small_disk("disk_full_during_growth_fails_a_write_and_keeps_every_acknowledged_one")
    else {
        return;
    };
    let _deadline = Deadline::new("disk full during growth", Duration::from_secs(120));
    let base = disk.path().join("store");
    let open = || {
        KVStore::builder(&base)
            .buffer_size(128 * KIB)
            .max_size(64 * 1024 * KIB)
            .open()
    };
    let value = |i: usize| Value::from(format!("{i:06}").repeat(170));
    let store = open().unwrap();
    let events = store.subscribe();
    let mut acked = 0;
    let error = loop {
        // 2 MiB of disk; each write adds about 1 KiB of live data.
        assert!(
            acked < 4_000,
            "no error after {acked} writes of 1 KiB on 2 MiB"
        );
        match store.insert(format!("key{acked:06}"), value(acked)) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(error, Error::Full { .. }) || is_enospc(&error),
        "after {acked} writes: expected Full or Io(StorageFull), got {error:?}"
    );
    let events: Vec<Event> = events.try_iter().collect();
    let grown = events
        .iter()
        .filter(|e| matches!(e, Event::JournalGrown { .. }))
        .count();
    assert!(grown > 0, "the journals never grew: {events:?}");
    let failed = events
        .iter()
        .find_map(|e| match e {
            Event::CompactionFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_default();
    // The failed write changed nothing; every acknowledged one is there.
    assert_eq!(store.get(&format!("key{acked:06}")).unwrap(), None);
    assert_eq!(store.len(), acked);
    // A full store can always be emptied: removals use the journal's reserve.
    for i in 0..3 {
        store
            .remove(&format!("key{i:06}"))
            .unwrap_or_else(|e| panic!("a removal on the full store failed: {e:?}"));
    }
    drop(store);
    // Reopen on the same full disk.
    let store = open().unwrap_or_else(|e| panic!("reopening on the full disk failed: {e:?}"));
    assert_eq!(store.len(), acked - 3);
    for i in 0..acked {
        let expected = (i >= 3).then(|| value(i));
        assert_eq!(
            store.get(&format!("key{i:06}")).unwrap(),
            expected,
            "key{i:06}"
        );
    }
    assert_eq!(store.stats().data_loss_events, 0);
    drop(store);
    println!(
        "disk full during growth: {acked} writes acknowledged, {grown} growths, then {error}; \
         compaction failure: {failed}"
    );
}

/// The child: the test below re-executes itself with `RKV_FAULTS_CHILD` set to the store's
/// base path, and this tries to open the store (asking for larger journals) and prints what
/// happened.
fn second_process(base: &str) {
    let opened = KVStore::builder(base)
        .buffer_size(256 * KIB)
        .durability(resilient_kv::Durability::Sync)
        .open();
    match opened {
        Ok(store) => println!("child: opened {} keys", store.len()),
        Err(Error::Locked { path }) => println!("child: locked {}", path.display()),
        Err(e) => println!("child: error {e:?}"),
    }
}

fn run_child(base: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_second_process_gets_locked_and_changes_nothing",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, base)
        .output()
        .unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.find("child: ").map(|at| l[at..].to_owned()))
        .unwrap_or_else(|| panic!("child printed no outcome: {out:?}"))
}

#[test]
fn a_second_process_gets_locked_and_changes_nothing() {
    let _serial = one_at_a_time();
    if let Ok(base) = std::env::var(CHILD_ENV) {
        second_process(&base);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("store");
    let store = KVStore::builder(&base)
        .buffer_size(64 * KIB)
        .open()
        .unwrap();
    for i in 0..50 {
        store.insert(format!("k{i}"), Value::Integer(i)).unwrap();
    }
    store.compact().unwrap();
    store.insert("after".into(), Value::Integer(50)).unwrap();
    store.sync().unwrap();
    let files = KVStore::journal_paths(&base);
    let before = files.each_ref().map(|f| std::fs::read(f).unwrap());

    let outcome = run_child(&base);
    assert!(
        outcome.starts_with("child: locked ")
            && files
                .iter()
                .any(|f| outcome.ends_with(&*f.to_string_lossy())),
        "a second process must get Locked naming a journal file: {outcome}"
    );
    for (file, bytes) in files.iter().zip(&before) {
        assert_eq!(
            &std::fs::read(file).unwrap(),
            bytes,
            "{} changed (content or length) when a second process was refused",
            file.display()
        );
    }
    // The first store is unaffected.
    store.insert("still".into(), Value::Integer(51)).unwrap();
    assert_eq!(store.len(), 52);
    drop(store);

    // Once closed, the same child opens it: the Locked above was the lock, nothing else.
    let outcome = run_child(&base);
    assert_eq!(outcome, "child: opened 52 keys");
    println!("second process: 1 refused with Locked, files unchanged; 1 opened after close");
}
