//! Journal files as shared memory maps: the crate's `unsafe` code, but for one prefetch hint
//! (`src/prefetch.rs`) and one call of the CPU's CRC-32C instruction
//! (`src/journal/checksum.rs`).
//!
//! Why the map is sound to use here:
//! - Nobody else mutates the file: each store holds an exclusive `flock` on both journal files
//!   for its whole life (a second open, in this process or another, gets `Locked`), and the
//!   crate never truncates a mapped file.
//! - Within the store, `Journal` upholds the `Storage` contract: one appender writes above the
//!   published end position, readers read below it, so no byte is read and written at once.
//! - Every access is bounds-checked against the file's length before the copy. The mapping may
//!   be longer (address space reserved so the file can grow without a remap); the part beyond
//!   the file is never touched.
#![expect(
    unsafe_code,
    reason = "memory-mapping a file is unsafe; this module fences it in"
)]

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::MmapRaw;

use super::storage::{Backend, Slot, Storage};
use crate::error::io_err;
use crate::{Error, Result};

/// Journal files `<base>.jrna` / `<base>.jrnb` on disk.
pub(crate) struct FileBackend {
    base: PathBuf,
    /// Address space reserved for each mapping, so that growing a file never remaps it (an
    /// unmap would stall every writer's page fault on the process's mapping lock).
    reserve: usize,
    /// The files `open` created, each with a second handle on its open file description,
    /// which keeps the file's lock held until `remove_created` has unlinked it (or the
    /// backend is dropped).
    created: parking_lot::Mutex<Vec<(PathBuf, File)>>,
}

impl FileBackend {
    pub(crate) fn new(base: &Path, reserve: usize) -> Self {
        // Address space is plentiful on 64-bit targets, but not unlimited: past this, growth
        // falls back to remapping.
        const MAX_RESERVE: u64 = 64 << 30;
        let reserve = reserve.min(usize::try_from(MAX_RESERVE).unwrap_or(usize::MAX));
        FileBackend {
            base: base.to_path_buf(),
            reserve,
            created: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// The file of `slot` (see [`Slot::path`]).
    pub(crate) fn path(&self, slot: Slot) -> PathBuf {
        slot.path(&self.base)
    }
}

impl Backend for FileBackend {
    fn base(&self) -> &Path {
        &self.base
    }

    fn open(&self, slot: Slot, min_len: usize) -> Result<Box<dyn Storage>> {
        let path = self.path(slot);
        let (file, created) = open_locked(&path)?;
        if created {
            match file.try_clone() {
                Ok(handle) => self.created.lock().push((path.clone(), handle)),
                Err(e) => {
                    // Still locked through `file`: remove it, as a refused open would.
                    let _ = std::fs::remove_file(&path);
                    return Err(io_err("dup", &path)(e));
                }
            }
            sync_parent_dir(&path)?;
        }
        let len = file.metadata().map_err(io_err("stat", &path))?.len();
        let len = usize::try_from(len).map_err(|_| Error::Config("journal too large".into()))?;
        // No growth here, even below `min_len`: the open may still be refused (a future
        // version, unreadable files), and a refused open must change nothing. Recovery grows
        // the files through `Storage::grow` once it has elected a journal.
        let map = map(&file, len.max(min_len).max(self.reserve)).map_err(io_err("mmap", &path))?;
        Ok(Box::new(MmapStorage {
            fs_writes_back: fs_writes_back(&file),
            file,
            map,
            len,
            path,
        }))
    }

    fn remove_created(&self) {
        let created = std::mem::take(&mut *self.created.lock());
        // Unlinked while this process still holds their locks: an open elsewhere gets
        // `Locked`, or finds once it holds the lock that the file it locked is no longer the
        // one the path names, and opens again (`open_locked`).
        for (path, _locked) in &created {
            let _ = std::fs::remove_file(path);
        }
        if let Some((path, _)) = created.first() {
            let _ = sync_parent_dir(path);
        }
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Whether `path` still names the file `file` has open (it was not removed, or replaced).
fn still_named(file: &File, path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata().map_err(io_err("stat", path))?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("stat", path)(e)),
    }
}

/// A test's hook into `open_locked` (see `AFTER_LOCK`).
#[cfg(test)]
type LockHook = Box<dyn FnMut(&Path)>;

#[cfg(test)]
thread_local! {
    /// Called with the path after each lock `open_locked` takes, before it checks that the
    /// path still names the locked file: tests remove or replace the file there, as a racing
    /// open's cleanup could.
    static AFTER_LOCK: std::cell::RefCell<Option<LockHook>> =
        const { std::cell::RefCell::new(None) };
}

/// Opens the journal file at `path`, creating it if it does not exist, and locks it; returns
/// whether this call created it. The lock is taken on the file the path names once locked:
/// another open may remove a file it created between this call's open and its lock
/// (`remove_created`, while it still holds the lock), and a file so removed is not the store's
/// any more, so it is opened again.
fn open_locked(path: &Path) -> Result<(File, bool)> {
    for _ in 0..8 {
        let new = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path);
        let (file, created) = match new {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match OpenOptions::new().read(true).write(true).open(path) {
                    Ok(file) => (file, false),
                    Err(e) if e.kind() == io::ErrorKind::NotFound && is_symlink(path) => {
                        // A symbolic link to a file yet to be made: made through the link, as
                        // any open makes it (not removed again if the open fails).
                        let file = OpenOptions::new()
                            .read(true)
                            .write(true)
                            .create(true)
                            .truncate(false)
                            .open(path)
                            .map_err(io_err("open", path))?;
                        (file, false)
                    }
                    // Removed since: try again.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("open", path)(e)),
                }
            }
            Err(e) => return Err(io_err("open", path)(e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err("lock", path)(e)),
        }
        #[cfg(test)]
        AFTER_LOCK.with_borrow_mut(|hook| {
            if let Some(hook) = hook {
                hook(path);
            }
        });
        if still_named(&file, path)? {
            return Ok((file, created));
        }
    }
    Err(Error::Io {
        op: "open",
        path: path.to_path_buf(),
        source: io::Error::other("the file was removed or replaced at every attempt to lock it"),
    })
}

fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", &dir))
}

/// Reserves `len` bytes for the file so that stores into the map can never hit a hole on a
/// full disk (which would raise SIGBUS); a full disk is reported here as ENOSPC instead.
fn allocate(file: &File, len: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
    // SAFETY: posix_fallocate only reads its integer arguments; the descriptor is open and
    // owned by `file` for the duration of the call.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Whether `file` may have a hole in its first `len` bytes: fewer blocks allocated than its
/// length needs (where that cannot be told, assume there may be one). A compressing
/// filesystem may say so of a file without holes; filling it again is harmless.
fn may_have_hole(file: &File, len: usize) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = file.metadata() {
            return meta.blocks().saturating_mul(512) < len as u64;
        }
    }
    let _ = (file, len);
    true
}

/// The extents of the first `len` bytes of `file` that hold data, as `SEEK_DATA`/`SEEK_HOLE`
/// report them: holes and allocated-but-unwritten extents are left out, unless the page
/// cache holds pages for them (the kernel looks there too, so bytes stored through a map and
/// not yet written back count as data). `None` where the filesystem cannot say; one without
/// support reports the whole file as data, which is merely slower.
#[cfg(target_os = "linux")]
fn data_extents(file: &File, len: usize) -> Option<Vec<Range<usize>>> {
    let seek = |at: usize, whence: libc::c_int| -> Option<Option<usize>> {
        let at = libc::off_t::try_from(at).ok()?;
        // SAFETY: lseek only reads its integer arguments; the descriptor is open and owned by
        // `file` for the duration of the call. Nothing else uses this descriptor's offset
        // (every access to the file goes through the map, or names its offset).
        let found = unsafe { libc::lseek(file.as_raw_fd(), at, whence) };
        if found >= 0 {
            // An offset that does not fit (it cannot happen) falls back to the whole file.
            return usize::try_from(found).ok().map(Some);
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::ENXIO) => Some(None),
            _ => None,
        }
    };
    let mut extents = Vec::new();
    let mut at = 0;
    while at < len {
        let Some(start) = seek(at, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(start, libc::SEEK_HOLE)??.min(len);
        if end <= start {
            // Not what the interface promises (a hole after data): do not trust it.
            return None;
        }
        extents.push(start..end);
        at = end;
    }
    Some(extents)
}

/// Maps `reserve` bytes of `file`. Only the first `file length` bytes are ever touched (every
/// access is checked against the file's length, not the mapping's); the rest is address space
/// the file can grow into without a remap.
fn map(file: &File, reserve: usize) -> io::Result<MmapRaw> {
    memmap2::MmapOptions::new().len(reserve).map_raw(file)
}

struct MmapStorage {
    file: File,
    map: MmapRaw,
    /// The file's length: the only part of the mapping that is backed (accesses beyond it
    /// would fault).
    len: usize,
    path: PathBuf,
    /// Whether the file's filesystem writes its pages back to a disk (not tmpfs or ramfs, which
    /// keep them in memory only and never write-protect them): only then does unmapping them
    /// before a flush save anything. (Overlayfs is taken to: its files usually live on a disk.)
    #[cfg_attr(
        not(target_os = "linux"),
        expect(dead_code, reason = "read on Linux only")
    )]
    fs_writes_back: bool,
}

/// The size of a memory page, if the system says.
#[cfg(target_os = "linux")]
fn page_size() -> Option<usize> {
    static PAGE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: `sysconf` only reads its integer argument.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size).ok().filter(|&size| size > 0)
    })
}

/// Filesystems that keep files in memory only (tmpfs, ramfs): they never write pages back, so
/// never write-protect them. The magic numbers are 32-bit, whatever the width of `f_type`.
#[cfg(target_os = "linux")]
const MEMORY_ONLY_FS: [u32; 2] = [0x0102_1994, 0x8584_58f6];

/// The magic number of the filesystem `file` lives on, if the kernel says.
#[cfg(target_os = "linux")]
fn fs_magic(file: &File) -> Option<u32> {
    // SAFETY: `fstatfs` only writes the struct it is given, which lives on this stack, and the
    // descriptor is open for the duration of the call.
    let fs = unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        (libc::fstatfs(file.as_raw_fd(), &mut fs) == 0).then_some(fs)
    };
    fs.map(|fs| fs.f_type as u32)
}

/// Whether `file` lives on a filesystem that writes its pages back to a disk: anything but
/// tmpfs and ramfs (and if the filesystem cannot be asked, assume it does).
#[cfg(target_os = "linux")]
fn fs_writes_back(file: &File) -> bool {
    fs_magic(file).is_none_or(|magic| !MEMORY_ONLY_FS.contains(&magic))
}

#[cfg(not(target_os = "linux"))]
fn fs_writes_back(_file: &File) -> bool {
    true
}

fn out_of_bounds() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "access beyond the end of the journal",
    )
}

impl MmapStorage {
    /// Populates the `len` bytes at `offset` as `advice` says (a hint: errors are ignored).
    /// Only the file's own length is touched.
    #[cfg(target_os = "linux")]
    fn populate(&self, advice: memmap2::Advice, offset: usize, len: usize) {
        if self.check(offset, len).is_ok() && len > 0 {
            let _ = self.map.advise_range(advice, offset, len);
        }
    }

    fn check(&self, offset: usize, len: usize) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(out_of_bounds()),
        }
    }
}

impl Storage for MmapStorage {
    fn path(&self) -> &Path {
        &self.path
    }

    fn capacity(&self) -> usize {
        self.len
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> io::Result<()> {
        self.check(offset, out.len())?;
        // SAFETY: the range is inside the mapping (checked above); the mapping lives as long
        // as `self`; `out` is a distinct Rust buffer; and by the `Storage` contract no other
        // thread writes this range while it is read.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            );
        }
        Ok(())
    }

    fn write(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        self.check(offset, data.len())?;
        // SAFETY: as in `read`: in bounds, mapping alive, and by the `Storage` contract no
        // other thread reads or writes this range concurrently. The file is locked, so no
        // other process writes it either.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(offset),
                data.len(),
            );
        }
        // The next record lands just past this one, on a line nothing has touched since the
        // kernel zeroed the page: ask for it now, so the next write's stores do not wait for it.
        let ahead = offset + data.len() + 64;
        if ahead < self.len {
            crate::prefetch::prefetch(self.map.as_ptr().wrapping_add(ahead));
        }
        Ok(())
    }

    fn flush(&self, offset: usize, len: usize) -> io::Result<()> {
        self.check(offset, len)?;
        self.unmap_settled(offset, len);
        self.map.flush_range(offset, len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Takes the whole pages among the `len` bytes at `offset` out of this process's page
    /// tables before the kernel writes them back (a hint: errors are ignored). The bytes stay
    /// in the page cache, dirty pages still dirty, and the next access maps them again. A page
    /// only partly inside the range stays mapped: it may be the one a writer is appending to.
    ///
    /// Why: to write back a page mapped writable, the kernel first write-protects it, and on
    /// x86 that is one TLB shootdown per page, an interrupt to every other CPU running this
    /// process (the writer's among them; in a VM, an exit on both sides), which the flushing
    /// thread waits for. Unmapping the range first costs one shootdown for all of it (one per
    /// 2 MiB of page table when the pages are dirty), and the write-back then finds no mapping
    /// to protect. The next store to such a page faults either way (on ext4): before, on the
    /// write-protection; now, on the missing entry.
    ///
    /// The caller promises that no thread stores into those whole pages until this returns
    /// (see the trait): before Linux 6.2, a store through a stale TLB entry while
    /// the entry was being removed could leave its page marked clean, and the store unwritten.
    fn unmap_settled(&self, offset: usize, len: usize) {
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
        #[cfg(target_os = "linux")]
        if let (Some(page), Some(end)) = (page_size(), offset.checked_add(len))
            && self.fs_writes_back
            && offset < self.len
        {
            let start = offset.next_multiple_of(page);
            let end = end.min(self.len) / page * page;
            if start < end {
                // SAFETY: the mapping is `MAP_SHARED` (`MmapRaw`) over the journal file, and
                // on such a mapping `MADV_DONTNEED` only removes page-table entries: every byte
                // stays in the page cache (a dirty entry's state moves to its page), and any
                // later access, by any thread, maps the same bytes back. No byte of the
                // mapping changes, so no pointer or slice into it observes anything different.
                // The range is whole pages inside the file (the map starts on a page boundary,
                // `start` and `end` are multiples of the page size, and `end` is at most the
                // file's length), and by the caller's promise no thread stores into them
                // meanwhile.
                let _ = unsafe {
                    self.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
    }

    fn with_view(&mut self, f: &mut dyn FnMut(&[u8])) {
        // SAFETY: the mapping is valid for `len` bytes for as long as `self` lives, and `&mut
        // self` means no write through this storage can happen while `f` holds the slice; the
        // file lock keeps other instances out.
        let bytes = unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.len) };
        f(bytes);
    }

    fn maybe_written(&self) -> Vec<Range<usize>> {
        #[cfg(target_os = "linux")]
        if let Some(ranges) = data_extents(&self.file, self.len) {
            return ranges;
        }
        vec![Range {
            start: 0,
            end: self.len,
        }]
    }

    fn prefault(&self, offset: usize, len: usize) {
        // Read-populating maps the file's pages (allocating and zeroing the page cache of
        // space that was never written) without dirtying them; the writer's first store to a
        // page is then only a write-protect fault, or, if something unmapped the pages since
        // (a `grow`), a fault that finds the page already in the page cache.
        #[cfg(target_os = "linux")]
        self.populate(memmap2::Advice::PopulateRead, offset, len);
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
    }

    fn prefault_for_write(&self, offset: usize, len: usize) {
        // Write-populating runs the filesystem's page-fault work for a first store (on ext4,
        // `page_mkwrite`: reserve the block, journal the change, mark the page dirty) here
        // instead of in the writer, and leaves the pages mapped writable.
        #[cfg(target_os = "linux")]
        self.populate(memmap2::Advice::PopulateWrite, offset, len);
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
    }

    fn start_writeback(&self, offset: usize, len: usize) {
        // `msync(MS_ASYNC)` does nothing on Linux; `sync_file_range` queues the write-back of
        // the range's dirty pages (dirtied through the map, they are dirty in the page cache)
        // and returns. A hint only: errors are left to the flush that follows.
        self.unmap_settled(offset, len);
        #[cfg(target_os = "linux")]
        if self.check(offset, len).is_ok()
            && len > 0
            && let (Ok(start), Ok(count)) = (
                libc::off64_t::try_from(offset),
                libc::off64_t::try_from(len),
            )
        {
            // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open
            // and owned by `self.file` for the duration of the call.
            let _ = unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    start,
                    count,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
    }

    fn view(&self, offset: usize, len: usize, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        self.check(offset, len)?;
        // SAFETY: the range is inside the mapping (checked above), which stays mapped while
        // `self` lives (a remap needs `&mut self`); by the `Storage` contract no thread writes
        // these bytes while `f` reads them, and the file lock keeps other processes out.
        let bytes = unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), len) };
        f(bytes);
        Ok(())
    }

    fn fill_holes(&mut self) -> io::Result<()> {
        // Only a file that may have a hole is allocated again (over allocated space
        // `fallocate` only walks the extents, but where the filesystem lacks it, glibc writes
        // a byte into every block of the file instead).
        if may_have_hole(&self.file, self.len) {
            allocate(&self.file, self.len)?;
        }
        Ok(())
    }

    fn grow(&mut self, new_len: usize) -> io::Result<()> {
        if new_len <= self.len {
            return Ok(());
        }
        allocate(&self.file, new_len)?;
        // `fsync` writes back every dirty page of the file too; `&mut self`: nothing stores
        // into the file meanwhile.
        self.unmap_settled(0, self.len);
        self.file.sync_all()?;
        if new_len > self.map.len() {
            // Beyond the reserved address space: remap (`&mut self`: nobody holds a pointer
            // into the old mapping while it is replaced).
            self.map = map(&self.file, new_len)?;
        }
        self.len = new_len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open creates and locks, a second open of the same file is `Locked`, and a file
    /// removed or replaced under an open handle is not taken for the one the path names.
    #[test]
    fn open_locked_locks_the_file_the_path_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (file, created) = open_locked(&path).unwrap();
        assert!(created);
        assert!(matches!(open_locked(&path), Err(Error::Locked { .. })));
        assert!(still_named(&file, &path).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert!(!still_named(&file, &path).unwrap());
        std::fs::write(&path, b"another").unwrap();
        assert!(!still_named(&file, &path).unwrap());
        drop(file);
        let (again, created) = open_locked(&path).unwrap();
        assert!(
            !created,
            "the file another open made is opened, not made again"
        );
        assert!(still_named(&again, &path).unwrap());
    }

    /// Runs `open_locked` on `path` with `hook` called after each of its locks; returns the
    /// outcome and how many locks it took.
    fn open_locked_with(
        path: &Path,
        mut hook: impl FnMut(usize, &Path) + 'static,
    ) -> (Result<(File, bool)>, usize) {
        let locks = std::rc::Rc::new(std::cell::Cell::new(0));
        let counted = std::rc::Rc::clone(&locks);
        AFTER_LOCK.set(Some(Box::new(move |path| {
            counted.set(counted.get() + 1);
            hook(counted.get(), path);
        })));
        let outcome = open_locked(path);
        AFTER_LOCK.set(None);
        (outcome, locks.get())
    }

    /// A file removed between `open_locked`'s open and its lock (as a failed open elsewhere
    /// removes the file it created) is not the store's: the path is opened again, and the
    /// file it then names is locked, whether this call makes it or another process did.
    #[test]
    fn open_locked_opens_again_a_file_removed_or_replaced_before_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("removed");
        let (outcome, locks) = open_locked_with(&path, |lock, path| {
            if lock == 1 {
                std::fs::remove_file(path).unwrap();
            }
        });
        let (file, created) = outcome.unwrap();
        assert_eq!(locks, 2);
        assert!(created, "the second attempt made the file");
        assert!(still_named(&file, &path).unwrap());

        let path = dir.path().join("replaced");
        let (outcome, locks) = open_locked_with(&path, |lock, path| {
            if lock == 1 {
                std::fs::remove_file(path).unwrap();
                std::fs::write(path, b"made by another process").unwrap();
            }
        });
        let (file, created) = outcome.unwrap();
        assert_eq!(locks, 2);
        assert!(
            !created,
            "the file another process made is opened, not made again"
        );
        assert!(still_named(&file, &path).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"made by another process");
    }

    /// A path whose file is removed at every attempt gives up after eight, with an error
    /// that says so, and leaves no file behind.
    #[test]
    fn open_locked_gives_up_on_a_file_removed_at_every_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        let (outcome, locks) = open_locked_with(&path, |_, path| {
            std::fs::remove_file(path).unwrap();
        });
        assert_eq!(locks, 8);
        match outcome {
            Err(Error::Io {
                op: "open", source, ..
            }) => {
                assert!(
                    source.to_string().contains("removed or replaced"),
                    "{source}"
                );
            }
            other => panic!("{:?}", other.map(|(_, created)| created)),
        }
        assert!(!path.exists());
    }

    /// What `maybe_written` leaves out is never a byte that was stored, even one stored
    /// through the map a moment ago and still only in the page cache; a blank file is left
    /// out whole where the filesystem can tell (ext4, XFS, btrfs, tmpfs), or reported whole.
    #[test]
    fn maybe_written_covers_every_stored_byte() {
        const LEN: usize = 4 << 20;
        let dir = tempfile::tempdir().unwrap();
        let backend = FileBackend::new(&dir.path().join("extents"), LEN);
        let mut storage = backend.open(Slot::A, LEN).unwrap();
        storage.grow(LEN).unwrap();
        let blank = storage.maybe_written();
        assert!(
            blank.is_empty() || blank == [Range { start: 0, end: LEN }],
            "{blank:?}"
        );
        let stored = [5_000, 1_234_567, LEN - 1];
        for (i, &at) in stored.iter().enumerate() {
            storage.write(at, &[1]).unwrap();
            let extents = storage.maybe_written();
            for &at in &stored[..=i] {
                assert!(
                    extents.iter().any(|e| e.contains(&at)),
                    "{at} left out of {extents:?}"
                );
            }
            assert!(extents.windows(2).all(|w| w[0].end <= w[1].start));
            assert!(extents.iter().all(|e| e.start < e.end && e.end <= LEN));
        }
    }

    /// On tmpfs (`/dev/shm`), which reports data page by page and does not read ahead, the
    /// extents are exact: nothing for a blank file, and after two stores through the map only
    /// their pages, so the scan at open skips the rest unread.
    #[cfg(target_os = "linux")]
    #[test]
    fn maybe_written_leaves_out_what_tmpfs_knows_is_blank() {
        const LEN: usize = 4 << 20;
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let backend = FileBackend::new(&dir.path().join("extents"), LEN);
        let mut storage = backend.open(Slot::A, LEN).unwrap();
        storage.grow(LEN).unwrap();
        assert_eq!(storage.maybe_written(), Vec::new());
        storage.write(5_000, &[1]).unwrap();
        storage.write(1_234_567, &[1]).unwrap();
        let extents = storage.maybe_written();
        for at in [5_000, 1_234_567] {
            assert!(extents.iter().any(|e| e.contains(&at)), "{extents:?}");
        }
        let covered: usize = extents.iter().map(|e| e.len()).sum();
        assert!(covered <= 4 * 4096, "{extents:?}");
    }

    /// Minor page faults of this thread so far.
    #[cfg(target_os = "linux")]
    fn minor_faults() -> libc::c_long {
        // SAFETY: `getrusage` only writes the `rusage` it is given, which lives on this stack.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `RUSAGE_THREAD` is a valid `who` on Linux.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        assert_eq!(rc, 0);
        usage.ru_minflt
    }

    /// After a flush, a store to each page of a file that tracks dirty pages (ext4, here) is a
    /// page fault; after `prefault_for_write` it is none. The control half shows the faults
    /// are there to be saved; on a filesystem without them (tmpfs) it says so and the first
    /// half still holds.
    #[cfg(target_os = "linux")]
    #[test]
    fn prefault_for_write_takes_the_writers_faults() {
        const PAGES: usize = 64;
        let dir = tempfile::tempdir().unwrap();
        let backend = FileBackend::new(&dir.path().join("faults"), 1 << 20);
        let mut storage = backend.open(Slot::A, 1 << 20).unwrap();
        storage.grow(1 << 20).unwrap();
        let stores = |storage: &dyn Storage, from: usize| {
            let before = minor_faults();
            for page in 0..PAGES {
                storage.write(from + page * 4096 + 100, &[0x5a]).unwrap();
            }
            minor_faults() - before
        };
        // Clean pages, mapped for reading: as `prefault_tail` leaves the rest of a new journal.
        storage.write(0, &vec![1_u8; 1 << 20]).unwrap();
        storage.flush(0, 1 << 20).unwrap();
        storage.prefault(0, 1 << 20);
        storage.prefault_for_write(0, PAGES * 4096);
        let prefaulted = stores(storage.as_ref(), 0);
        let control = stores(storage.as_ref(), 512 * 1024);
        println!("stores to {PAGES} pages: {prefaulted} faults prefaulted, {control} not");
        assert!(
            prefaulted <= 2,
            "{prefaulted} faults after prefault_for_write"
        );
        // On a filesystem that write-protects clean pages the control half must fault, or
        // this test could not tell prefaulting from none. tmpfs and ramfs do not.
        // tmpfs and ramfs, and overlayfs, whose upper layer may be a tmpfs.
        const OVERLAYFS: u32 = 0x794c_7630;
        let fs_type = fs_magic(&File::open(backend.path(Slot::A)).unwrap()).unwrap();
        if !MEMORY_ONLY_FS.contains(&fs_type) && fs_type != OVERLAYFS {
            assert!(
                control >= (PAGES / 2) as libc::c_long,
                "{control} faults in the control half on a filesystem of type {fs_type:#x}"
            );
        }
        let mut page = vec![0_u8; 4096];
        storage.read(4096, &mut page).unwrap();
        let mut expected = vec![1_u8; 4096];
        expected[100] = 0x5a;
        assert!(page == expected, "prefaulting changed bytes");
    }

    /// Whether each of the `pages` pages from `addr` is in this process's page tables
    /// (`/proc/self/pagemap`: one 64-bit entry per page, bit 63 set for a present page), or
    /// `None` where the kernel has no such file.
    #[cfg(target_os = "linux")]
    fn present(addr: usize, pages: usize) -> Option<Vec<bool>> {
        use std::os::unix::fs::FileExt;
        let page = page_size().unwrap();
        let pagemap = File::open("/proc/self/pagemap").ok()?;
        let mut entries = vec![0_u8; pages * 8];
        pagemap
            .read_exact_at(&mut entries, (addr / page * 8) as u64)
            .unwrap();
        Some(
            entries
                .chunks_exact(8)
                .map(|e| u64::from_le_bytes(e.try_into().unwrap()) >> 63 == 1)
                .collect(),
        )
    }

    /// Every way of writing pages back (`flush`, `start_writeback`, `unmap_settled` before a
    /// `sync`, and the `fsync` in `grow`) first takes the whole pages out of the page tables,
    /// so the kernel has no mapping to write-protect page by page (see `MmapStorage::unmap_settled`); a
    /// page only partly in the range, at either end, stays mapped (a writer may be storing
    /// into it), and the
    /// bytes stay as written, in memory and in the file. On tmpfs, which never writes pages
    /// back, nothing is unmapped.
    #[cfg(target_os = "linux")]
    #[test]
    fn writing_back_unmaps_the_whole_pages_only() {
        const PAGES: usize = 16;
        let page = page_size().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let backend = FileBackend::new(&dir.path().join("unmap"), 64 * page);
        let mut storage = backend.open(Slot::A, 32 * page).unwrap();
        storage.grow(32 * page).unwrap();
        let mut addr = 0;
        storage
            .view(0, page, &mut |bytes| addr = bytes.as_ptr() as usize)
            .unwrap();
        let unmaps = fs_writes_back(&File::open(backend.path(Slot::A)).unwrap());
        // The data fills the pages; the range written back starts halfway into the first and
        // ends halfway into the last.
        let len = PAGES * page;
        let (from, to) = (page / 2, len - page / 2);
        let ways = ["flush", "start_writeback", "unmap_settled", "grow"];
        for (round, name) in ways.into_iter().enumerate() {
            let data = vec![round as u8 + 1; len];
            storage.write(0, &data).unwrap();
            // The control: stored to, every page is mapped, so the check below can fail.
            let stored = present(addr, PAGES);
            if stored.as_ref().is_none_or(|s| !s.contains(&true)) {
                println!("SKIPPED: /proc/self/pagemap is missing or shows no page present");
                return;
            }
            assert_eq!(stored.unwrap(), vec![true; PAGES], "after the stores");
            match name {
                "flush" => storage.flush(from, to - from).unwrap(),
                "start_writeback" => storage.start_writeback(from, to - from),
                "unmap_settled" => storage.unmap_settled(from, to - from),
                _ => storage.grow(64 * page).unwrap(),
            }
            let mut expected = vec![!unmaps; PAGES];
            if name != "grow" {
                expected[0] = true;
                expected[PAGES - 1] = true;
            }
            assert_eq!(present(addr, PAGES).unwrap(), expected, "after {name}");
            let mut back = vec![0_u8; data.len()];
            storage.read(0, &mut back).unwrap();
            assert!(back == data, "{name} changed the bytes");
        }
        drop(storage);
        let in_file = std::fs::read(backend.path(Slot::A)).unwrap();
        assert!(in_file[..len].iter().all(|&b| b == ways.len() as u8));
    }

    /// The journal keeps that promise: `Journal::flush` unmaps the whole pages below its end
    /// and leaves the page being appended to mapped; `begin`, which owns the file alone,
    /// unmaps all of it (the previous generation's writers left its pages mapped).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_journal_unmaps_only_settled_pages() {
        use crate::journal::Journal;
        use crate::journal::format::HEADER_SIZE;
        let page = page_size().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let backend = FileBackend::new(&dir.path().join("journal"), 64 * page);
        let mut storage = backend.open(Slot::A, 32 * page).unwrap();
        storage.grow(32 * page).unwrap();
        if !fs_writes_back(&File::open(backend.path(Slot::A)).unwrap()) {
            println!("SKIPPED: the temporary directory is on tmpfs, where nothing is unmapped");
            return;
        }
        let mut addr = 0;
        storage
            .view(0, page, &mut |bytes| addr = bytes.as_ptr() as usize)
            .unwrap();
        let mut journal = Journal::new(storage, 1, HEADER_SIZE);
        journal.begin(2).unwrap();
        let first = HEADER_SIZE.div_ceil(page);
        let fill = |journal: &Journal, to: usize| {
            while journal.end() < to {
                assert!(journal.append(&[7_u8; 100]).unwrap());
            }
        };
        fill(&journal, 8 * page + page / 2);
        let stored = present(addr, 9);
        if stored.as_ref().is_none_or(|s| !s.contains(&true)) {
            println!("SKIPPED: /proc/self/pagemap is missing or shows no page present");
            return;
        }
        assert_eq!(
            stored.unwrap()[first..],
            vec![true; 9 - first],
            "after the appends"
        );
        journal.flush().unwrap();
        let mut expected = vec![false; 9 - first];
        expected[8 - first] = true;
        assert_eq!(present(addr, 9).unwrap()[first..], expected, "after flush");
        fill(&journal, 12 * page);
        assert!(present(addr, 12).unwrap()[9..].iter().all(|&p| p));
        journal.begin(3).unwrap();
        assert_eq!(
            present(addr, 12).unwrap()[first..],
            vec![false; 12 - first],
            "after begin"
        );
    }

    /// The hints (populate, early write-back) and the zero-copy view never change what the
    /// file holds, and stay inside the file even when asked for more.
    #[test]
    fn hints_and_views_leave_the_bytes_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FileBackend::new(&dir.path().join("hints"), 1 << 20);
        let mut storage = backend.open(Slot::A, 64 * 1024).unwrap();
        storage.grow(64 * 1024).unwrap();
        let data: Vec<u8> = (0..20_000_u32).map(|i| (i % 251) as u8).collect();
        storage.write(4096, &data).unwrap();
        storage.prefault(0, 64 * 1024);
        storage.start_writeback(0, 16 * 1024);
        storage.start_writeback(0, 1 << 30); // beyond the file: ignored
        storage.prefault(60 * 1024, 1 << 30); // likewise
        storage.prefault_for_write(0, 64 * 1024);
        storage.prefault_for_write(60 * 1024, 1 << 30); // likewise
        let mut back = vec![0_u8; data.len()];
        storage.read(4096, &mut back).unwrap();
        assert_eq!(back, data);
        let mut viewed = Vec::new();
        storage
            .view(4096, data.len(), &mut |bytes| {
                viewed.extend_from_slice(bytes)
            })
            .unwrap();
        assert_eq!(viewed, data);
        assert!(storage.view(60 * 1024, 8 * 1024, &mut |_| {}).is_err());
        storage.flush(0, 64 * 1024).unwrap();
        drop(storage);
        let on_disk = std::fs::read(backend.path(Slot::A)).unwrap();
        assert_eq!(on_disk.len(), 64 * 1024);
        assert_eq!(&on_disk[4096..4096 + data.len()], &data[..]);
    }
}
