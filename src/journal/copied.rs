//! Journals copied into memory, for read-only opens.
//!
//! A read-only store may look at files another process is writing through its own memory map.
//! Mapping them here too would let bytes change under a Rust slice, so instead each file is
//! read (`read(2)`) into a private buffer and the ordinary election and replay run on the
//! copies. Nothing is ever written, to the files or to the copies: the store refuses user
//! writes before they get this far, and a pair of files never initialised opens as an empty
//! store without the initialisation a writable open would write.
//!
//! The writer may swap journals while the copies are taken. The headers of both files are
//! read again after the copy; if either changed, the copy is taken again, so the two copies
//! always come from one stretch of time in which no compaction switched files. Within that
//! stretch the elected file only grows by appends, which the replay's checksums cut cleanly.
//! A copy that never comes out consistent is an error, never used.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::format::{self, HEADER_USED};
use super::storage::{Backend, Slot, Storage};
use crate::error::io_err;
use crate::{Error, Result};

/// Takes copies (`take`) until one shows no damage, or two in a row show the same damage
/// (`damage`: where, in which generation); at most `attempts` copies. Returns the last copy and
/// whether its damage, if any, is confirmed; if taking a copy again fails, the copy already
/// taken, unconfirmed (the first copy's failure is the error). A copy of files a writer is
/// appending to can look damaged where a record was half copied (a frame not yet written
/// before a complete one), at a place that moves with the writer; real damage stays put.
pub(crate) fn settle_damage<T, K: PartialEq>(
    attempts: usize,
    mut take: impl FnMut() -> Result<T>,
    damage: impl Fn(&T) -> Option<K>,
) -> Result<(T, bool)> {
    let mut previous: Option<(T, K)> = None;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let copy = match take() {
            Ok(copy) => copy,
            Err(e) => {
                return match previous.take() {
                    Some((copy, _)) => Ok((copy, false)),
                    None => Err(e),
                };
            }
        };
        let Some(found) = damage(&copy) else {
            return Ok((copy, true));
        };
        if previous.as_ref().is_some_and(|(_, seen)| *seen == found) {
            return Ok((copy, true));
        }
        if attempt >= attempts {
            return Ok((copy, false));
        }
        previous = Some((copy, found));
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// How long copies are retaken while compactions keep switching files during them.
const PATIENCE: Duration = Duration::from_secs(2);

/// Copies always tried before [`PATIENCE`] may end the attempts.
const MIN_ATTEMPTS: u32 = 5;

/// Calls `take` until it returns a consistent copy (`Some`): at once a few times, then with
/// pauses of up to 10 ms (compactions following each other that fast are brief bursts). After
/// [`PATIENCE`], and at least [`MIN_ATTEMPTS`] copies (a large store on a slow disk may take
/// longer than that to copy once, and one compaction during a copy must not fail the open),
/// it gives up with an `Io` error of kind `ResourceBusy`: a copy known to mix two moments
/// could elect an older generation or show damage that is not there.
pub(crate) fn copy_consistently<T>(
    base: &Path,
    take: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    copy_consistently_within(base, PATIENCE, take)
}

fn copy_consistently_within<T>(
    base: &Path,
    patience: Duration,
    mut take: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let started = Instant::now();
    let mut attempt: u32 = 0;
    loop {
        if let Some(copy) = take()? {
            return Ok(copy);
        }
        attempt += 1;
        if attempt >= MIN_ATTEMPTS && started.elapsed() >= patience {
            return Err(Error::Io {
                op: "copy",
                path: base.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "the journal files were switched during every copy for {patience:?} \
                         ({attempt} copies)"
                    ),
                ),
            });
        }
        if attempt > 3 {
            std::thread::sleep(Duration::from_millis(u64::from(attempt.min(10))));
        }
    }
}

/// Both journal files of one store, copied at one moment.
pub(crate) struct CopiedBackend {
    base: PathBuf,
    files: Mutex<[Option<Vec<u8>>; 2]>,
}

/// A file's bytes, `None` if it does not exist.
pub(crate) type Contents = Option<Vec<u8>>;

/// Reads both files (`None` for a missing one). A writer may compact while they are read: if
/// either header changed by the time both are read, they are read again, so the two copies
/// come from one stretch of time without a switch (within it, the elected file only grows by
/// appends, which the checksums cut cleanly). A header that does not decode is read again for
/// up to [`HALF_STORED_PATIENCE`]: it may be one the writer is storing.
pub(crate) fn read_both(base: &Path, paths: &[PathBuf; 2]) -> Result<(Contents, Contents)> {
    read_both_within(base, paths, HALF_STORED_PATIENCE)
}

/// How long the headers are watched, before the files are copied again, while a header does
/// not decode. A header is stored with one copy (`Journal::write_header`), and a writer's
/// thread preempted between that copy's stores leaves it half done, for a scheduler's time
/// slice or a little more; a header still invalid after this is believed. (`format::commit_half_written` recognises the commonest
/// half-done header as such even when it outlasts this.)
const HALF_STORED_PATIENCE: Duration = Duration::from_millis(100);

fn read_both_within(
    base: &Path,
    paths: &[PathBuf; 2],
    header_patience: Duration,
) -> Result<(Contents, Contents)> {
    let read = |path: &PathBuf| match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    };
    let header = |bytes: &Option<Vec<u8>>| {
        bytes
            .as_ref()
            .map(|b| b.get(..HEADER_USED).unwrap_or(b).to_vec())
    };
    // A file too short to hold a header was not being given one.
    let invalid = |header: &Option<Vec<u8>>| {
        header.as_ref().is_some_and(|h| {
            h.len() == HEADER_USED && format::decode_header(h) == format::HeaderRead::Invalid
        })
    };
    let started = Instant::now();
    let [path_a, path_b] = paths;
    copy_consistently(base, || {
        let (a, b) = (read(path_a)?, read(path_b)?);
        let again = (read_header(path_a)?, read_header(path_b)?);
        if (header(&a), header(&b)) != again {
            return Ok(None);
        }
        if !(invalid(&again.0) || invalid(&again.1)) || started.elapsed() >= header_patience {
            return Ok(Some((a, b)));
        }
        // Watch the headers alone (not whole files) until they decode or the patience is
        // spent; then copy again.
        while started.elapsed() < header_patience {
            std::thread::sleep(Duration::from_millis(1));
            let headers = (read_header(path_a)?, read_header(path_b)?);
            if !(invalid(&headers.0) || invalid(&headers.1)) {
                break;
            }
        }
        Ok(None)
    })
}

/// The error for a store neither of whose files exists (`NotFound`).
pub(crate) fn no_store(base: &Path, paths: &[PathBuf; 2]) -> Error {
    Error::Io {
        op: "read",
        path: base.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no store: neither {} nor {} exists",
                paths[0].display(),
                paths[1].display()
            ),
        ),
    }
}

/// The first `HEADER_USED` bytes of a file (fewer if it is shorter), `None` if it is missing.
fn read_header(path: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    match std::fs::File::open(path) {
        Ok(file) => {
            let mut out = Vec::with_capacity(HEADER_USED);
            file.take(HEADER_USED as u64)
                .read_to_end(&mut out)
                .map_err(io_err("read", path))?;
            Ok(Some(out))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

impl CopiedBackend {
    /// Copies both files of the store at `base`. A missing file reads as an empty one (the
    /// second file of a store whose first open was cut short, as `verify` takes it); both
    /// missing is an `Io` error with `NotFound`: a read-only open never creates anything.
    pub(crate) fn load(base: &Path) -> Result<Self> {
        let paths = [Slot::A.path(base), Slot::B.path(base)];
        match read_both(base, &paths)? {
            (None, None) => Err(no_store(base, &paths)),
            (a, b) => Ok(CopiedBackend::from_bytes(
                base,
                a.unwrap_or_default(),
                b.unwrap_or_default(),
            )),
        }
    }

    /// Both files' bytes, already in memory (for `verify` and the fuzzing hooks).
    pub(crate) fn from_bytes(base: &Path, a: Vec<u8>, b: Vec<u8>) -> Self {
        CopiedBackend {
            base: base.to_path_buf(),
            files: Mutex::new([Some(a), Some(b)]),
        }
    }
}

impl Backend for CopiedBackend {
    fn base(&self) -> &Path {
        &self.base
    }

    fn open(&self, slot: Slot, _min_len: usize) -> Result<Box<dyn Storage>> {
        let index = match slot {
            Slot::A => 0,
            Slot::B => 1,
        };
        let path = slot.path(&self.base);
        let bytes = self
            .files
            .lock()
            .get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| Error::Config(format!("{} was opened twice", path.display())))?;
        Ok(Box::new(CopiedStorage {
            path,
            len: bytes.len(),
            bytes,
        }))
    }
}

/// One copied file.
struct CopiedStorage {
    path: PathBuf,
    /// The file's length when copied (kept after the copy is released).
    len: usize,
    bytes: Vec<u8>,
}

fn out_of_bounds() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "access beyond the end of the journal",
    )
}

impl Storage for CopiedStorage {
    fn path(&self) -> &Path {
        &self.path
    }

    fn capacity(&self) -> usize {
        self.len
    }

    fn release_copy(&mut self) {
        self.bytes = Vec::new();
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(out.len()).ok_or_else(out_of_bounds)?;
        let src = self.bytes.get(offset..end).ok_or_else(out_of_bounds)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn write(&self, _offset: usize, _data: &[u8]) -> io::Result<()> {
        // `&self` cannot change the copy, and nothing may reach the file: a read-only store
        // refuses writes before they get here.
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the store was opened read-only",
        ))
    }

    fn flush(&self, _offset: usize, _len: usize) -> io::Result<()> {
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn grow(&mut self, _new_len: usize) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the store was opened read-only",
        ))
    }

    fn with_view(&mut self, f: &mut dyn FnMut(&[u8])) {
        f(&self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies `(value, damage)` in turn; returns what `settle_damage` made of them and how
    /// many it took.
    fn settle(copies: &[(u32, Option<u32>)]) -> ((u32, bool), usize) {
        let mut taken = 0;
        let settled = settle_damage(
            4,
            || {
                taken += 1;
                Ok(copies[taken - 1])
            },
            |copy: &(u32, Option<u32>)| copy.1,
        )
        .unwrap();
        (((settled.0).0, settled.1), taken)
    }

    #[test]
    fn a_failed_retake_keeps_the_copy_already_taken() {
        let mut taken = 0;
        let settled = settle_damage(
            4,
            || {
                taken += 1;
                if taken == 1 {
                    Ok(1_u32)
                } else {
                    Err(crate::Error::Config("busy".into()))
                }
            },
            |_: &u32| Some(7),
        );
        assert!(matches!(settled, Ok((1, false))), "{settled:?}");
        let first = settle_damage(
            4,
            || Err(crate::Error::Config("x".into())),
            |_: &u32| Some(7),
        );
        assert!(first.is_err());
    }

    #[test]
    fn damage_counts_only_where_two_copies_in_a_row_agree() {
        // A clean copy ends the search at once.
        assert_eq!(settle(&[(1, None)]), ((1, true), 1));
        // Damage at the same place twice in a row is real.
        assert_eq!(settle(&[(1, Some(7)), (2, Some(7))]), ((2, true), 2));
        // Damage that moves, then a clean copy: the clean one.
        assert_eq!(
            settle(&[(1, Some(7)), (2, Some(9)), (3, None)]),
            ((3, true), 3)
        );
        // Damage that keeps moving is not confirmed.
        let moving = [(1, Some(1)), (2, Some(2)), (3, Some(3)), (4, Some(4))];
        assert_eq!(settle(&moving), ((4, false), 4));
        // Agreement only counts between neighbours.
        let back = [(1, Some(1)), (2, Some(2)), (3, Some(1)), (4, Some(1))];
        assert_eq!(settle(&back), ((4, true), 4));
    }

    /// A header that does not decode is read again: one a writer is storing is seen whole
    /// once stored, and one that stays invalid is taken as it is once the patience is spent.
    #[cfg(unix)]
    #[test]
    fn a_header_that_does_not_decode_is_read_again() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("app");
        let paths = [Slot::A.path(&base), Slot::B.path(&base)];
        let good = format::encode_header(&format::Header {
            version: format::FORMAT_VERSION,
            state: format::STATE_COMMITTED,
            generation: 3,
        });
        let mut half = vec![0_u8; 8192];
        half[..16].copy_from_slice(&good[..16]);
        assert_eq!(format::decode_header(&half), format::HeaderRead::Invalid);
        std::fs::write(&paths[0], &half).unwrap();
        std::fs::write(&paths[1], vec![0_u8; 8192]).unwrap();

        let storer = {
            let path = paths[0].clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                file.write_at(&good, 0).unwrap();
            })
        };
        let (a, _) = read_both_within(&base, &paths, Duration::from_secs(1)).unwrap();
        storer.join().unwrap();
        assert_eq!(&a.unwrap()[..HEADER_USED], &good[..]);

        // Invalid for good: after the patience, the copy as it is (not an error).
        let damaged = half;
        std::fs::write(&paths[0], &damaged).unwrap();
        let started = Instant::now();
        let (a, _) = read_both_within(&base, &paths, Duration::from_millis(30)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(a.unwrap(), damaged);
    }

    /// Copies that never come out consistent end in a typed error, not in a copy used anyway;
    /// one that does after a few tries is returned.
    #[test]
    fn an_inconsistent_copy_is_never_used() {
        let base = Path::new("app");
        let never = copy_consistently_within(base, Duration::from_millis(30), || Ok(None::<()>));
        match never {
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::ResourceBusy)
            }
            other => panic!("expected a busy error, got {other:?}"),
        }
        let mut tries = 0;
        let third = copy_consistently_within(base, Duration::from_secs(60), || {
            tries += 1;
            Ok((tries == 3).then_some(tries))
        });
        assert_eq!(third.unwrap(), 3);
    }

    /// A copy that takes longer than the patience (a large store on a slow disk), switched
    /// under once, is taken again rather than given up on.
    #[test]
    fn a_slow_copy_gets_more_than_one_try() {
        let mut tries = 0;
        let second = copy_consistently_within(Path::new("app"), Duration::from_millis(30), || {
            tries += 1;
            std::thread::sleep(Duration::from_millis(40));
            Ok((tries == 2).then_some(tries))
        });
        assert_eq!(second.unwrap(), 2);
    }
}
