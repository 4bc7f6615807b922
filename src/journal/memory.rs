//! The in-memory disk the tests run the journal code on, with a model of what survives a
//! process crash and what survives power loss.
//!
//! # The durability model
//!
//! Each file is two byte arrays: `current`, what the page cache holds (what the process and a
//! reopen after a *process* crash see), and `durable`, what is certainly on the disk. The
//! storage operations move bytes between them the way `MmapStorage` does on Linux:
//!
//! - `write` changes `current` only. The bytes are *volatile*: the kernel may write their
//!   page back at any moment, or not before the power goes.
//! - `flush(offset, len)` (msync with `MS_SYNC`) makes every 4 KiB page overlapping the range
//!   durable with its content at that moment. On Linux `msync(MS_SYNC)` runs
//!   `vfs_fsync_range` over the range, which writes the pages back, waits, and flushes the
//!   drive's cache, so a flushed page is on the medium when the call returns. This is also
//!   what `Journal` relies on: it treats bytes below `synced` as durable after `flush_records`
//!   alone, and orders "records, then header" with two `flush` calls (`Storage::flush`'s
//!   contract says "durable against power loss").
//! - `sync` (fdatasync) makes the whole file durable: it writes back every dirty page,
//!   including pages dirtied through the map and never msynced.
//! - `grow` (fallocate + fsync) and an `open` that extends a file are durable at once, and, as
//!   an fsync, make the whole file durable too.
//!
//! A page whose `current` and `durable` bytes differ is volatile. What a power loss leaves of
//! it is decided per 512-byte sector ([`SectorFate`]): the new bytes, the old ones, or
//! garbage. Pages are independent (the kernel writes dirty pages back in any order), so a
//! crash image may hold a later page and miss an earlier one.
//!
//! This is Linux. Where `msync` is no durability barrier (Apple's does not flush the drive's
//! cache; only `F_FULLFSYNC` does), the model is too kind: run with `flush` making nothing
//! durable, the power-loss test failed 4 of 7,200 images (a creation cut short leaving a
//! blank header over a torn commit marker, refused as `Unreadable`; a `sync()` that returned
//! because records were merely msynced, losing promised writes).
//!
//! A crash is taken at a storage-operation count: every operation takes effect under one
//! lock, in a recorded order, so "the disk after the first `n` operations" is a state the
//! disk really was in, however the store's threads interleaved. [`MemBackend::image_at`]
//! rebuilds it from the recording; the store keeps running undisturbed meanwhile (the freeze
//! happens on the copy, not on the store). [`MemBackend::pause_when`] holds the operations a
//! test chooses (to stop a compaction at a given step) and [`MemBackend::set_jitter`]
//! perturbs how the threads interleave.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::storage::{Backend, Slot, Storage};
use crate::Result;

/// The unit of writeback and of `msync`.
pub(crate) const PAGE: usize = 4096;
/// The unit a drive writes atomically (or tears, or garbles).
pub(crate) const SECTOR: usize = 512;
const SECTORS_PER_PAGE: usize = PAGE / SECTOR;

/// One in-memory file's bytes (its page cache: what the process sees).
pub(crate) type MemFile = Arc<Mutex<Vec<u8>>>;

fn index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

/// One storage operation, as it took effect.
#[derive(Debug, Clone)]
pub(crate) enum DiskOp {
    Write {
        slot: Slot,
        offset: usize,
        data: Arc<[u8]>,
    },
    Flush {
        slot: Slot,
        offset: usize,
        len: usize,
    },
    Sync {
        slot: Slot,
    },
    Grow {
        slot: Slot,
        len: usize,
    },
}

impl DiskOp {
    pub(crate) fn slot(&self) -> Slot {
        match *self {
            DiskOp::Write { slot, .. }
            | DiskOp::Flush { slot, .. }
            | DiskOp::Sync { slot }
            | DiskOp::Grow { slot, .. } => slot,
        }
    }
}

/// What became of one sector of a volatile page when the power went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SectorFate {
    /// The write never reached the disk: the durable bytes remain.
    Old,
    /// The sector was written whole.
    New,
    /// The sector was being written and holds garbage (seeded). With `whole`, the whole
    /// sector is garbage; without it only the bytes that changed since the sector was last
    /// durable are ("powersafe overwrite": a write never damages bytes it did not change).
    Garbage { seed: u64, whole: bool },
}

/// One file of a [`DiskImage`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FileImage {
    /// The page cache: everything written.
    pub(crate) current: Vec<u8>,
    /// What is certainly on the disk.
    pub(crate) durable: Vec<u8>,
}

impl FileImage {
    fn make_durable(&mut self, from: usize, to: usize) {
        let to = to.min(self.current.len());
        if let (Some(dst), Some(src)) = (self.durable.get_mut(from..to), self.current.get(from..to))
        {
            dst.copy_from_slice(src);
        }
    }

    fn resize(&mut self, len: usize) {
        if self.current.len() < len {
            self.current.resize(len, 0);
        }
        // fallocate + fsync: the new length, and with it every page, is durable.
        self.durable.clone_from(&self.current);
    }

    /// Indexes of the pages whose bytes may not be on the disk.
    pub(crate) fn volatile_pages(&self) -> Vec<usize> {
        self.current
            .chunks(PAGE)
            .zip(self.durable.chunks(PAGE))
            .enumerate()
            .filter(|(_, (c, d))| c != d)
            .map(|(i, _)| i)
            .collect()
    }
}

/// Both files of a store as a disk holds them at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DiskImage {
    pub(crate) files: [FileImage; 2],
}

impl DiskImage {
    pub(crate) fn file(&self, slot: Slot) -> &FileImage {
        &self.files[index(slot)]
    }

    /// Applies one storage operation (see the module docs for what each one does).
    pub(crate) fn apply(&mut self, op: &DiskOp) {
        let file = &mut self.files[index(op.slot())];
        match op {
            DiskOp::Write { offset, data, .. } => {
                file.current[*offset..*offset + data.len()].copy_from_slice(data);
            }
            DiskOp::Flush { offset, len, .. } => {
                let from = offset / PAGE * PAGE;
                let to = (offset + len).div_ceil(PAGE) * PAGE;
                file.make_durable(from, to);
            }
            DiskOp::Sync { .. } => file.make_durable(0, file.current.len()),
            DiskOp::Grow { len, .. } => file.resize(*len),
        }
    }

    /// Volatile pages of both files, as `(slot, page index)`.
    pub(crate) fn volatile_pages(&self) -> Vec<(Slot, usize)> {
        [Slot::A, Slot::B]
            .into_iter()
            .flat_map(|slot| {
                self.file(slot)
                    .volatile_pages()
                    .into_iter()
                    .map(move |page| (slot, page))
            })
            .collect()
    }

    /// What a crash of the process (not the machine) leaves: everything written, since the
    /// page cache survives. Nothing becomes more durable than it was.
    pub(crate) fn process_crash(&self) -> DiskImage {
        self.clone()
    }

    /// What a power loss leaves: each volatile page's sectors as `fate(slot, page)` says;
    /// everything else as it is durably. The result is all durable.
    pub(crate) fn power_loss(
        &self,
        mut fate: impl FnMut(Slot, usize) -> [SectorFate; SECTORS_PER_PAGE],
    ) -> DiskImage {
        let mut out = self.clone();
        for (slot, page) in self.volatile_pages() {
            let fates = fate(slot, page);
            let file = &mut out.files[index(slot)];
            for (s, sector_fate) in fates.iter().enumerate() {
                let from = page * PAGE + s * SECTOR;
                let to = (from + SECTOR).min(file.current.len());
                if from >= to {
                    continue;
                }
                match *sector_fate {
                    SectorFate::Old => {}
                    SectorFate::New => file.make_durable(from, to),
                    SectorFate::Garbage { seed, whole } => {
                        let changed = (from..to)
                            .filter(|&i| file.current[i] != file.durable[i])
                            .collect::<Vec<_>>();
                        let (first, last) = match (changed.first(), changed.last()) {
                            (Some(&f), Some(&l)) if !whole => (f, l + 1),
                            (Some(_), Some(_)) => (from, to),
                            // Nothing changed in this sector: it was not written at all.
                            _ => continue,
                        };
                        let mut x = seed | 1;
                        for b in &mut file.durable[first..last] {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            *b = x as u8;
                        }
                    }
                }
            }
        }
        for file in &mut out.files {
            file.current.clone_from(&file.durable);
        }
        out
    }

    /// What a power loss leaves when no volatile page reached the disk.
    pub(crate) fn durable_only(&self) -> DiskImage {
        self.power_loss(|_, _| [SectorFate::Old; SECTORS_PER_PAGE])
    }
}

/// Which operations a [`MemBackend::pause_when`] holds.
pub(crate) type PauseWhen = Box<dyn Fn(&DiskOp) -> bool + Send + Sync>;

/// Which operations wait, and the release they wait for.
#[derive(Default)]
struct Pause {
    when: Option<PauseWhen>,
    /// Bumped by each release: the operations waiting then go on.
    epoch: u64,
}

/// Records the storage operations of a `MemBackend` in the order they took effect.
struct Recorder {
    /// The operations. Locked while each operation is applied, so the recorded order is
    /// the order in which they took effect.
    ops: Mutex<Vec<DiskOp>>,
    /// Operations that took effect so far (recorded or not).
    count: AtomicUsize,
    /// Whether `ops` is kept (with `start`, it rebuilds any earlier state of the disk).
    recording: bool,
    /// The disk before the first operation.
    start: DiskImage,
    /// Perturbs the threads' interleaving: about one operation in `jitter` first yields
    /// or sleeps (0: never).
    jitter: AtomicU32,
    rng: AtomicU64,
    /// Operations on this file wait until it is cleared (to hold a compaction still).
    /// Operations matching this wait (to hold a thread at a chosen step).
    pause: Mutex<Pause>,
    resumed: parking_lot::Condvar,
    /// Operations held by the pause so far (each counted when it starts waiting).
    held: AtomicUsize,
}

impl Recorder {
    fn new(recording: bool, start: DiskImage) -> Self {
        Recorder {
            ops: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            recording,
            start,
            jitter: AtomicU32::new(0),
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            pause: Mutex::new(Pause::default()),
            resumed: parking_lot::Condvar::new(),
            held: AtomicUsize::new(0),
        }
    }

    fn jitter(&self) {
        let one_in = self.jitter.load(Ordering::Relaxed);
        if one_in == 0 {
            return;
        }
        // A shared xorshift; races between threads only make it more random.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        if x.is_multiple_of(u64::from(one_in)) {
            if x & 0x100 == 0 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros((x >> 20) % 200));
            }
        }
    }

    /// Applies `apply` as one operation, recording `op`.
    fn record<T>(&self, op: DiskOp, apply: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        self.jitter();
        {
            let mut pause = self.pause.lock();
            if pause.when.as_ref().is_some_and(|when| when(&op)) {
                let epoch = pause.epoch;
                self.held.fetch_add(1, Ordering::SeqCst);
                while pause.epoch == epoch && pause.when.is_some() {
                    self.resumed.wait(&mut pause);
                }
            }
        }
        let mut ops = self.ops.lock();
        let out = apply()?;
        if self.recording {
            ops.push(op);
        }
        // SeqCst: a thread that reads the count after its own operations knows every
        // operation numbered at or above what it read had not taken effect yet.
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(out)
    }
}

/// An in-memory "disk": the two files outlive any store opened on them, so tests can reopen,
/// inspect and damage them.
#[derive(Clone)]
pub(crate) struct MemBackend {
    files: Arc<Mutex<HashMap<Slot, MemFile>>>,
    base: PathBuf,
    /// While set, every flush and sync fails (an injected I/O error).
    pub(crate) fail_flushes: Arc<AtomicBool>,
    /// While non-zero, growing a file beyond this many bytes fails as on a full disk.
    pub(crate) grow_limit: Arc<AtomicUsize>,
    /// Asked before each flush (slot, offset, length): `true` makes that flush fail.
    pub(crate) fail_flush_when: Arc<Mutex<Option<FailWhen>>>,
    recorder: Arc<Recorder>,
}

/// Picks flushes to fail (see [`MemBackend::fail_flush_when`]).
pub(crate) type FailWhen = Box<dyn FnMut(Slot, usize, usize) -> bool + Send>;

impl Default for MemBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemBackend {
    /// An empty disk that does not record its operations.
    pub(crate) fn new() -> Self {
        MemBackend {
            files: Arc::default(),
            base: PathBuf::from("memory"),
            fail_flushes: Arc::default(),
            grow_limit: Arc::default(),
            fail_flush_when: Arc::default(),
            recorder: Arc::new(Recorder::new(false, DiskImage::default())),
        }
    }

    /// A disk holding `image` (its page cache as `image.current`) that records every
    /// storage operation, so that [`image_at`](Self::image_at) can rebuild any state it
    /// passes through.
    pub(crate) fn recording(image: &DiskImage) -> Self {
        let files = [Slot::A, Slot::B]
            .into_iter()
            .map(|slot| (slot, Arc::new(Mutex::new(image.file(slot).current.clone()))))
            .collect();
        MemBackend {
            files: Arc::new(Mutex::new(files)),
            base: PathBuf::from("memory"),
            fail_flushes: Arc::default(),
            grow_limit: Arc::default(),
            fail_flush_when: Arc::default(),
            recorder: Arc::new(Recorder::new(true, image.clone())),
        }
    }

    /// The bytes of one file, to inspect or damage.
    pub(crate) fn file(&self, slot: Slot) -> MemFile {
        Arc::clone(self.files.lock().entry(slot).or_default())
    }

    /// Storage operations (write, flush, sync, grow) that took effect so far.
    pub(crate) fn ops_done(&self) -> usize {
        self.recorder.count.load(Ordering::SeqCst)
    }

    /// The recorded operations (empty unless made with [`recording`](Self::recording)).
    pub(crate) fn ops(&self) -> Vec<DiskOp> {
        self.recorder.ops.lock().clone()
    }

    /// About one storage operation in `one_in` first yields or sleeps up to 200 µs, to
    /// vary how the store's threads interleave (0: never).
    pub(crate) fn set_jitter(&self, one_in: u32) {
        self.recorder.jitter.store(one_in, Ordering::Relaxed);
    }

    /// Makes every storage operation for which `when` holds wait until [`release`]
    /// (Self::release) or until the pause is lifted (`None`): holds a thread at a chosen
    /// step while the test drives another.
    pub(crate) fn pause_when(&self, when: Option<PauseWhen>) {
        self.recorder.pause.lock().when = when;
        self.recorder.resumed.notify_all();
    }

    /// Lets the operations waiting on the pause go on (later ones that match still wait).
    pub(crate) fn release(&self) {
        self.recorder.pause.lock().epoch += 1;
        self.recorder.resumed.notify_all();
    }

    /// Storage operations the pause has held so far (counted as each starts waiting).
    pub(crate) fn held(&self) -> usize {
        self.recorder.held.load(Ordering::SeqCst)
    }

    /// The disk after the first `n` recorded operations: a crash at that instant.
    pub(crate) fn image_at(&self, n: usize) -> DiskImage {
        self.images_at(&[n]).pop().unwrap_or_default()
    }

    /// [`image_at`](Self::image_at) for each of `points` (ascending), in one pass.
    pub(crate) fn images_at(&self, points: &[usize]) -> Vec<DiskImage> {
        let mut images = Vec::with_capacity(points.len());
        self.each_image(points, |_, image| images.push(image.clone()));
        images
    }

    /// Calls `f` with each of `points` (ascending) and the disk after that many recorded
    /// operations, in one pass and without keeping the images.
    pub(crate) fn each_image(&self, points: &[usize], mut f: impl FnMut(usize, &DiskImage)) {
        assert!(self.recorder.recording, "this MemBackend does not record");
        assert!(points.is_sorted(), "crash points must be ascending");
        let ops = self.recorder.ops.lock().clone();
        let mut image = self.recorder.start.clone();
        let mut done = 0;
        for &n in points {
            let n = n.min(ops.len());
            for op in ops.get(done..n).unwrap_or_default() {
                image.apply(op);
            }
            done = done.max(n);
            f(n, &image);
        }
    }
}

impl Backend for MemBackend {
    fn base(&self) -> &Path {
        &self.base
    }

    fn open(&self, slot: Slot, min_len: usize) -> Result<Box<dyn Storage>> {
        let file = self.file(slot);
        let grown = {
            let len = file.lock().len();
            (len < min_len).then_some(min_len)
        };
        if let Some(len) = grown {
            // Creating or extending the file is durable at once (FileBackend fallocates and
            // fsyncs), so it is a recorded operation.
            let _ = self.recorder.record(DiskOp::Grow { slot, len }, || {
                file.lock().resize(len, 0);
                Ok(())
            });
        }
        Ok(Box::new(MemStorage {
            bytes: file,
            slot,
            path: self.base.with_extension(slot.extension()),
            fail_flushes: Arc::clone(&self.fail_flushes),
            grow_limit: Arc::clone(&self.grow_limit),
            fail_flush_when: Arc::clone(&self.fail_flush_when),
            recorder: Arc::clone(&self.recorder),
        }))
    }
}

struct MemStorage {
    bytes: MemFile,
    slot: Slot,
    path: PathBuf,
    fail_flushes: Arc<AtomicBool>,
    grow_limit: Arc<AtomicUsize>,
    fail_flush_when: Arc<Mutex<Option<FailWhen>>>,
    recorder: Arc<Recorder>,
}

impl MemStorage {
    fn injected(&self) -> io::Result<()> {
        if self.fail_flushes.load(Ordering::SeqCst) {
            Err(io::Error::other("injected flush failure"))
        } else {
            Ok(())
        }
    }

    fn check(&self, offset: usize, len: usize) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.bytes.lock().len() => Ok(()),
            _ => Err(out_of_bounds()),
        }
    }
}

fn out_of_bounds() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "access beyond the end of the journal",
    )
}

impl Storage for MemStorage {
    fn path(&self) -> &Path {
        &self.path
    }

    fn capacity(&self) -> usize {
        self.bytes.lock().len()
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes.lock();
        let src = bytes
            .get(offset..offset + out.len())
            .ok_or_else(out_of_bounds)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn write(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        self.recorder.record(
            DiskOp::Write {
                slot: self.slot,
                offset,
                data: Arc::from(data),
            },
            || {
                let mut bytes = self.bytes.lock();
                let dst = bytes
                    .get_mut(offset..offset + data.len())
                    .ok_or_else(out_of_bounds)?;
                dst.copy_from_slice(data);
                Ok(())
            },
        )
    }

    fn flush(&self, offset: usize, len: usize) -> io::Result<()> {
        self.check(offset, len)?;
        if let Some(fail) = self.fail_flush_when.lock().as_mut()
            && fail(self.slot, offset, len)
        {
            return Err(io::Error::other("injected failure of this flush"));
        }
        self.recorder.record(
            DiskOp::Flush {
                slot: self.slot,
                offset,
                len,
            },
            || self.injected(),
        )
    }

    fn sync(&self) -> io::Result<()> {
        self.recorder
            .record(DiskOp::Sync { slot: self.slot }, || self.injected())
    }

    fn grow(&mut self, new_len: usize) -> io::Result<()> {
        if new_len <= self.capacity() {
            return Ok(());
        }
        let limit = self.grow_limit.load(Ordering::SeqCst);
        if limit != 0 && new_len > limit {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected: no space left on the disk",
            ));
        }
        self.recorder.record(
            DiskOp::Grow {
                slot: self.slot,
                len: new_len,
            },
            || {
                self.bytes.lock().resize(new_len, 0);
                Ok(())
            },
        )
    }

    fn with_view(&mut self, f: &mut dyn FnMut(&[u8])) {
        f(&self.bytes.lock());
    }
}
