//! Opening a store: electing the journal to trust and replaying its records.
//!
//! Election: the committed header with the highest generation wins (never a timestamp). A file
//! whose header is damaged or zeroed is not trusted blindly, nor ignored: if its records
//! belong to a newer generation and include that generation's commit marker, it was the newest
//! journal and it is elected; otherwise it was an unfinished compaction and the other file
//! wins. Replay stops at the first invalid record; whether anything valid of the same
//! generation lies beyond it decides between "a write was cut short" and "data was lost".

use std::path::PathBuf;

use super::Journal;
use super::format::{
    self, FRAME_SIZE, FrameRead, HEADER_SIZE, HeaderRead, STATE_COMMITTED, STATE_PENDING,
};
use super::storage::{Backend, Slot, Storage};
use crate::bonjson::DecodeOptions;
use crate::{Error, Result};

/// How the scan of the elected journal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// The records end where the written data ends.
    Clean,
    /// A record that was being written when the process stopped was discarded: it was never
    /// acknowledged.
    Torn { offset: usize },
    /// Damage at `offset`: valid records of this generation exist beyond it (up to
    /// `valid_until`) and were not replayed.
    Damaged { offset: usize, valid_until: usize },
    /// The records end at `offset`, and the search beyond it for valid records of this
    /// generation gave up, its budget spent ([`next_valid_record`]): ordinarily on a reused
    /// file's stale records, whose bytes can spell this generation's number where a frame's
    /// length stands. Nothing is reported as lost, but the open rewrites the journal into a
    /// new generation, so that no new record lands in front of anything it could not rule out.
    Undecided { offset: usize },
}

/// What lies beyond the end of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beyond {
    /// No valid record of the generation.
    Nothing,
    /// Valid records of the generation, the last one ending here.
    ValidUntil(usize),
    /// The search gave up, its budget spent before it found any.
    GaveUp,
}

/// Something open found and worked around, located for the data-loss event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Note {
    /// The file concerned.
    pub(crate) path: PathBuf,
    /// Where the damage starts (0 for a whole-file problem such as a header).
    pub(crate) offset: usize,
    /// Bytes of records beyond the damage that could not be used.
    pub(crate) lost_bytes: usize,
    /// A sentence saying what happened.
    pub(crate) detail: String,
    /// A write cut short, not damage: nothing was lost and nothing is reported, but a
    /// writable open still rewrites the journal (a header caught half written:
    /// `format::commit_half_written`, `format::pending_half_written_over_zeros`).
    pub(crate) cut_short: bool,
}

impl Note {
    fn whole_file(path: &std::path::Path, detail: String) -> Self {
        Note {
            path: path.to_path_buf(),
            offset: 0,
            lost_bytes: 0,
            detail,
            cut_short: false,
        }
    }

    /// The note on a file elected on its records, which prove generation `g`, over a header
    /// that does not say so.
    fn header_recovered(c: &Candidate, g: u64) -> Self {
        let path = c.storage.path();
        if format::commit_half_written(&c.bytes, g) {
            return Note::nothing_lost(
                path,
                format!(
                    "{}: the COMMITTED header of generation {g} is half written over its \
                     PENDING one; its records hold the commit, nothing was lost",
                    path.display()
                ),
            );
        }
        Note::whole_file(
            path,
            format!(
                "{}: damaged header; generation {g} recovered from its records",
                path.display()
            ),
        )
    }

    /// Whether this is a loss to report (not a write cut short, `cut_short`).
    pub(crate) fn is_loss(&self) -> bool {
        !self.cut_short
    }

    /// A write cut short that lost nothing.
    fn nothing_lost(path: &std::path::Path, detail: String) -> Self {
        Note {
            cut_short: true,
            ..Note::whole_file(path, detail)
        }
    }
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// What opening found.
pub(crate) struct Opened {
    pub(crate) active: Journal,
    pub(crate) inactive: Journal,
    pub(crate) entries: Vec<super::replay::Entry>,
    pub(crate) tail: Tail,
    /// Problems found and worked around, for the data-loss event.
    pub(crate) notes: Vec<Note>,
    /// The highest generation either file may hold records of (the next compaction must use
    /// a larger one).
    pub(crate) highest_generation: u64,
}

struct Candidate {
    storage: Box<dyn Storage>,
    header: HeaderRead,
    /// The header page and the first frame, read at first.
    bytes: Vec<u8>,
    /// The whole file is examined, not only `bytes` (its header is damaged).
    whole: bool,
}

pub(crate) fn open(
    backend: &dyn Backend,
    min_len: usize,
    decode: &DecodeOptions,
) -> Result<Opened> {
    let mut files = Vec::with_capacity(2);
    for slot in [Slot::A, Slot::B] {
        let storage = backend.open(slot, min_len)?;
        let mut bytes = vec![0_u8; (HEADER_SIZE + FRAME_SIZE).min(storage.capacity())];
        storage
            .read(0, &mut bytes)
            .map_err(crate::error::io_err("read", storage.path()))?;
        // A file shorter than a header that holds nothing is new (created by this open).
        let header = if bytes.len() < HEADER_SIZE && bytes.iter().all(|&b| b == 0) {
            HeaderRead::Empty
        } else {
            format::decode_header(&bytes)
        };
        if let HeaderRead::Valid(h) = header
            && h.version > format::FORMAT_VERSION
        {
            return Err(Error::UnsupportedVersion {
                path: storage.path().to_path_buf(),
                found: h.version,
                supported: format::FORMAT_VERSION,
            });
        }
        files.push(Candidate {
            storage,
            header,
            bytes,
            whole: false,
        });
    }
    let (Some(b), Some(a)) = (files.pop(), files.pop()) else {
        return Err(Error::Config("journal files missing".into()));
    };
    elect(a, b, backend.base().to_path_buf(), decode, min_len)
}

impl Candidate {
    /// From now on the whole file is examined (only the header was read at first). In
    /// place, through the storage's view: a copy would hold a second journal in memory, and a
    /// huge sparse file with a damaged header would exhaust it.
    fn examine_whole(&mut self) {
        self.whole = true;
    }

    /// `f` of the bytes examined: the whole file once `examine_whole` was called, else the
    /// header page and first frame.
    fn with_bytes<R: Default>(&mut self, f: impl FnOnce(&[u8]) -> R) -> R {
        if !self.whole {
            return f(&self.bytes);
        }
        let mut f = Some(f);
        let mut out = None;
        self.storage.with_view(&mut |bytes| {
            if let Some(f) = f.take() {
                out = Some(f(bytes));
            }
        });
        match f {
            // A storage that did not call back: examine what was read at first.
            Some(f) => f(&self.bytes),
            None => out.unwrap_or_default(),
        }
    }
}

fn committed_generation(c: &Candidate) -> Option<u64> {
    match c.header {
        HeaderRead::Valid(h) if h.state == STATE_COMMITTED => Some(h.generation),
        _ => None,
    }
}

/// Whether anything was ever written past the header page. Files are preallocated with
/// zeros, so a blank header over written records means the header was lost, not that the
/// file is new; the file is scanned in place to tell (only files with a blank header pay
/// this). Extents the filesystem reports as never written are skipped unread: a blank 64 MiB
/// journal was a 64 MiB scan at every open, and paged in as much zeroed page cache.
fn has_records_region(c: &mut Candidate) -> Result<bool> {
    let extents = c.storage.maybe_written();
    let mut found = false;
    c.storage.with_view(&mut |bytes| {
        found = extents.iter().any(|extent| {
            let start = extent.start.max(HEADER_SIZE);
            bytes
                .get(start..extent.end.min(bytes.len()))
                .is_some_and(any_non_zero)
        });
    });
    Ok(found)
}

/// Whether `bytes` holds a non-zero byte (a branch-free OR per page, so it vectorizes).
fn any_non_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(4096)
        .any(|page| page.iter().fold(0_u8, |acc, &b| acc | b) != 0)
}

fn header_damaged(c: &mut Candidate) -> Result<bool> {
    match c.header {
        HeaderRead::Invalid => Ok(true),
        HeaderRead::Empty => has_records_region(c),
        HeaderRead::Valid(_) => Ok(false),
    }
}

/// Whether the files hold what a crash leaves while creating a store writes its first header
/// (`fresh` writes the first file only): each byte of the first file's header page still zero
/// or already that `PENDING` header's, nothing after it, and the second file blank. Nothing
/// was ever acknowledged, so the store is created again; refusing would leave a store whose
/// creation a `kill -9` interrupted unopenable for good. (A power loss cannot leave this: a
/// sector is written whole. A header garbled some other way is refused as before.)
fn first_header_cut_short(a: &mut Candidate, b: &mut Candidate) -> Result<bool> {
    let pending = format::encode_header(&format::Header {
        version: format::FORMAT_VERSION,
        state: STATE_PENDING,
        generation: 1,
    });
    let cut_short = a.bytes.get(..HEADER_SIZE).is_some_and(|page| {
        page.iter()
            .enumerate()
            .all(|(i, &byte)| byte == 0 || pending.get(i) == Some(&byte))
    });
    Ok(cut_short
        && !has_records_region(a)?
        && b.header == HeaderRead::Empty
        && !has_records_region(b)?)
}

/// Grows a file the store is about to use to the size asked for, or allocates the holes of
/// one that is large enough already (only once the open is known to succeed: a refused open
/// changes no file).
fn grow_to(storage: &mut Box<dyn Storage>, min_len: usize) -> Result<()> {
    let path = storage.path().to_path_buf();
    if storage.capacity() < min_len {
        storage.grow(min_len)
    } else {
        storage.fill_holes()
    }
    .map_err(crate::error::io_err("fallocate", &path))
}

fn elect(
    mut a: Candidate,
    mut b: Candidate,
    base: PathBuf,
    decode: &DecodeOptions,
    min_len: usize,
) -> Result<Opened> {
    let mut notes = Vec::new();
    let (winner, loser, generation) = match (committed_generation(&a), committed_generation(&b)) {
        (Some(ga), Some(gb)) if ga >= gb => (a, b, ga),
        (Some(_), Some(gb)) => (b, a, gb),
        (Some(ga), None) => (a, b, ga),
        (None, Some(gb)) => (b, a, gb),
        (None, None) => {
            let damaged = [header_damaged(&mut a)?, header_damaged(&mut b)?];
            if damaged.contains(&true) {
                a.examine_whole();
                b.examine_whole();
                // Maybe one was the only journal and its header is damaged: trust it only if
                // its records prove a committed generation; if both do, the newer one.
                let proven = [proven_unless_pending(&mut a), proven_unless_pending(&mut b)];
                if proven == [None, None] && first_header_cut_short(&mut a, &mut b)? {
                    return fresh(a, b, min_len);
                }
                let found = match proven {
                    [Some(ga), Some(gb)] if gb > ga => Some((b, a, gb)),
                    [Some(g), _] => Some((a, b, g)),
                    [None, Some(g)] => Some((b, a, g)),
                    [None, None] => None,
                };
                if let Some((w, mut l, g)) = found {
                    notes.push(Note::header_recovered(&w, g));
                    if !matches!(l.header, HeaderRead::Valid(_)) && has_records_region(&mut l)? {
                        notes.push(Note::whole_file(
                            l.storage.path(),
                            format!(
                                "{}: damaged header over records that could not be attributed \
                                 to a generation; they were not replayed",
                                l.storage.path().display()
                            ),
                        ));
                    }
                    return replay(w, l, g, notes, decode, min_len);
                }
                return Err(Error::Unreadable {
                    path: base,
                    reason: "no journal has a valid committed header or provable records".into(),
                });
            }
            // A `PENDING` header of generation 1 is a store whose creation was cut short
            // (power loss before its first header was committed): nothing was ever
            // acknowledged, so it is created again. Any other `PENDING` file alone means the
            // committed journal is gone.
            let blank_or_first_pending = |c: &Candidate| match c.header {
                HeaderRead::Valid(h) => h.state == STATE_PENDING && h.generation == 1,
                HeaderRead::Empty | HeaderRead::Invalid => true,
            };
            let creation_cut_short = blank_or_first_pending(&a) && blank_or_first_pending(&b);
            if !creation_cut_short {
                return Err(Error::Unreadable {
                    path: base,
                    reason: "only an unfinished compaction was found".into(),
                });
            }
            return fresh(a, b, min_len);
        }
    };
    // A newer journal whose header was damaged must not lose the election to stale data.
    let mut loser = loser;
    if header_damaged(&mut loser)? {
        loser.examine_whole();
        if let Some(g) = proven_generation(&mut loser, generation + 1) {
            notes.push(Note::header_recovered(&loser, g));
            return replay(loser, winner, g, notes, decode, min_len);
        }
        if proven_generation(&mut loser, 1).is_none() {
            let note = if format::pending_half_written_over_zeros(&loser.bytes)
                && !has_records_region(&mut loser)?
            {
                // The first compaction into a file never written before, its `PENDING`
                // header caught half written: nothing was there to lose.
                Note::nothing_lost(
                    loser.storage.path(),
                    format!(
                        "{}: a PENDING header is half written over a file never written \
                         before; nothing was lost",
                        loser.storage.path().display()
                    ),
                )
            } else {
                // Records nobody can vouch for (header and first record both damaged): they
                // may have been the newest data, so say so rather than drop them silently.
                Note::whole_file(
                    loser.storage.path(),
                    format!(
                        "{}: damaged header over records that could not be attributed to a \
                         generation; they were not replayed",
                        loser.storage.path().display()
                    ),
                )
            };
            notes.push(note);
        }
    }
    replay(winner, loser, generation, notes, decode, min_len)
}

/// The generation a file's records prove, for a file that may be elected on them: one with a
/// valid `PENDING` header only if they prove that very generation (its compaction wrote the
/// commit marker and its `COMMITTED` header did not reach the disk). Otherwise its records
/// are whatever the file held before that compaction began, possibly a journal generations
/// old, and a `PENDING` file is never elected on them (`docs/format.md`).
fn proven_unless_pending(c: &mut Candidate) -> Option<u64> {
    let proven = proven_generation(c, 1)?;
    match c.header {
        HeaderRead::Valid(h) if h.state == STATE_PENDING && h.generation != proven => None,
        _ => Some(proven),
    }
}

/// A generation at least `min` whose records, starting at the first record position, include
/// its commit marker: proof the file held a complete journal of that generation.
fn proven_generation(c: &mut Candidate, min: u64) -> Option<u64> {
    c.with_bytes(|bytes| proven_in(bytes, min))
}

fn proven_in(bytes: &[u8], min: u64) -> Option<u64> {
    let mut g = first_frame_generation(bytes, min)?;
    if g < min {
        g = g.checked_add(1 << 32)?;
    }
    // Frames keep only the low 32 bits: try the next 2^32 up too (a store whose generation
    // once jumped by 2^32 past unattributable records, see `unattributed_generation`).
    [Some(g), g.checked_add(1 << 32)]
        .into_iter()
        .flatten()
        .find(|&g| g <= format::MAX_GENERATION && holds_commit_of(bytes, g))
}

/// The generation the first frame names, as far as a frame can (its low 32 bits), placed in
/// the same 2^32 block as `near`; `None` if the file is too short to hold a frame there.
fn first_frame_generation(bytes: &[u8], near: u64) -> Option<u64> {
    let at = HEADER_SIZE + format::FRAME_GEN_OFFSET;
    let field: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some((near & !0xffff_ffff) | u64::from(u32::from_le_bytes(field)))
}

/// Whether the records of `generation` from the first record position run to its commit
/// marker.
fn holds_commit_of(bytes: &[u8], generation: u64) -> bool {
    let mut pos = HEADER_SIZE;
    let frames = format::Frames::new(generation);
    while let Some(FrameRead::Record { len }) = bytes.get(pos..).map(|rest| frames.read(rest)) {
        let Some(body) = bytes.get(pos + FRAME_SIZE..pos + FRAME_SIZE + len) else {
            return false;
        };
        if format::decode_commit(body) == Some(generation) {
            return true;
        }
        pos += FRAME_SIZE + len;
    }
    false
}

/// A new store on files that hold nothing yet. With `min_len` 0 (a read-only open, or a check
/// of copied files) nothing is written: the store is empty, at generation 0, until a writer
/// creates it.
fn fresh(mut a: Candidate, mut b: Candidate, min_len: usize) -> Result<Opened> {
    if min_len == 0 {
        return Ok(Opened {
            active: Journal::new(a.storage, 0, HEADER_SIZE),
            inactive: Journal::new(b.storage, 0, HEADER_SIZE),
            entries: Vec::new(),
            tail: Tail::Clean,
            notes: Vec::new(),
            highest_generation: 0,
        });
    }
    grow_to(&mut a.storage, min_len)?;
    grow_to(&mut b.storage, min_len)?;
    let mut active = Journal::new(a.storage, 0, HEADER_SIZE);
    let path = active.storage().path().to_path_buf();
    let io = |e| crate::error::io_err("initialize", &path)(e);
    active.begin(1).map_err(io)?;
    append_commit_marker(&active).map_err(io)?;
    active.commit().map_err(io)?;
    active.flush().map_err(io)?;
    let inactive = Journal::new(b.storage, 0, HEADER_SIZE);
    Ok(Opened {
        active,
        inactive,
        entries: Vec::new(),
        tail: Tail::Clean,
        notes: Vec::new(),
        highest_generation: 1,
    })
}

/// Appends the marker that proves `journal`'s generation was committed.
pub(crate) fn append_commit_marker(journal: &Journal) -> std::io::Result<()> {
    let body = format::encode_commit(journal.generation());
    if journal.append(&body)? {
        Ok(())
    } else {
        Err(std::io::Error::other("no room for the commit marker"))
    }
}

fn replay(
    mut winner: Candidate,
    mut loser: Candidate,
    generation: u64,
    mut notes: Vec<Note>,
    decode: &DecodeOptions,
    min_len: usize,
) -> Result<Opened> {
    let (replayed, tail) = scan(&mut winner, generation, decode)?;
    let highest_generation = generation.max(generation_hint(&mut loser, generation));
    if !replayed.committed {
        // The records stop before the commit marker: the snapshot itself is damaged. The older
        // journal, if it is still intact, holds every write up to the switch.
        if let Some(older) = committed_generation(&loser).filter(|&g| g < generation) {
            let (old_replayed, old_tail) = scan(&mut loser, older, decode)?;
            if old_replayed.committed {
                notes.push(Note {
                    path: winner.storage.path().to_path_buf(),
                    offset: replayed.end,
                    lost_bytes: lost_beyond(&tail, replayed.end),
                    detail: format!(
                        "{}: generation {generation} is damaged at byte {} before its commit \
                         marker; generation {older} was recovered from {} instead, and writes \
                         made after the switch to generation {generation} are lost",
                        winner.storage.path().display(),
                        replayed.end,
                        loser.storage.path().display()
                    ),
                    cut_short: false,
                });
                return build(
                    loser,
                    winner,
                    older,
                    old_replayed,
                    old_tail,
                    notes,
                    highest_generation,
                    min_len,
                );
            }
        }
        notes.push(Note {
            path: winner.storage.path().to_path_buf(),
            offset: replayed.end,
            lost_bytes: lost_beyond(&tail, replayed.end),
            detail: format!(
                "{}: generation {generation} is damaged at byte {} before its commit marker \
                 and no older journal survives; keys whose records lay beyond that point are \
                 missing",
                winner.storage.path().display(),
                replayed.end
            ),
            cut_short: false,
        });
    }
    build(
        winner,
        loser,
        generation,
        replayed,
        tail,
        notes,
        highest_generation,
        min_len,
    )
}

/// Bytes of valid records beyond `offset` that a damaged tail left unreplayed.
fn lost_beyond(tail: &Tail, offset: usize) -> usize {
    match *tail {
        Tail::Damaged { valid_until, .. } => valid_until.saturating_sub(offset),
        _ => 0,
    }
}

/// Replays `c` as `generation` and classifies how its records end.
fn scan(
    c: &mut Candidate,
    generation: u64,
    decode: &DecodeOptions,
) -> Result<(super::replay::Replayed, Tail)> {
    // Replay straight from the file (no copy of the whole journal into memory).
    let mut outcome = None;
    c.storage.with_view(&mut |bytes| {
        let replayed = super::replay::replay(bytes, generation, decode);
        // A record whose checksum holds but which replay refused (malformed: a bug, or a
        // forged file) was written whole, so it may have been acknowledged: damage, never a
        // torn end, even when nothing valid follows it.
        let refused = match format::Frames::new(generation)
            .read(bytes.get(replayed.end..).unwrap_or_default())
        {
            FrameRead::Record { len } => Some(replayed.end + FRAME_SIZE + len),
            _ => None,
        };
        let beyond = next_valid_record(bytes, replayed.end + 1, generation);
        outcome = Some((replayed, beyond, refused));
    });
    let Some((replayed, beyond, refused)) = outcome else {
        return Err(Error::Config("the journal could not be viewed".into()));
    };
    let pos = replayed.end;
    let found = match beyond {
        Beyond::ValidUntil(until) => Some(until),
        Beyond::Nothing | Beyond::GaveUp => None,
    };
    let tail = match (found.max(refused), beyond, replayed.stop) {
        (Some(valid_until), _, _) => Tail::Damaged {
            offset: pos,
            valid_until,
        },
        (None, Beyond::GaveUp, _) => Tail::Undecided { offset: pos },
        (None, _, FrameRead::Torn) => Tail::Torn { offset: pos },
        (None, _, _) => Tail::Clean,
    };
    Ok((replayed, tail))
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site per outcome of the election"
)]
fn build(
    mut winner: Candidate,
    mut loser: Candidate,
    generation: u64,
    replayed: super::replay::Replayed,
    tail: Tail,
    notes: Vec<Note>,
    highest_generation: u64,
    min_len: usize,
) -> Result<Opened> {
    grow_to(&mut winner.storage, min_len)?;
    grow_to(&mut loser.storage, min_len)?;
    let active = Journal::new(winner.storage, generation, replayed.end);
    let inactive = Journal::new(loser.storage, 0, HEADER_SIZE);
    Ok(Opened {
        active,
        inactive,
        entries: replayed.entries,
        tail,
        notes,
        highest_generation,
    })
}

/// The highest generation the losing file may hold records of: its header's, or, if the
/// header is damaged, the one its first record names (every compaction starts writing there).
fn generation_hint(loser: &mut Candidate, elected: u64) -> u64 {
    let from_header = match loser.header {
        HeaderRead::Valid(h) => h.generation,
        _ => 0,
    };
    let from_record = first_frame_generation(&loser.bytes, elected)
        .filter(|&candidate| candidate > elected)
        .unwrap_or(0);
    from_header
        .max(from_record)
        .max(unattributed_generation(loser, elected))
}

/// For a file whose header is gone but which holds records: the newest generation any of them
/// belongs to, so that the next compaction takes a number above it (reusing it would let those
/// records verify again). Compaction attempts are few, so the generations just above the
/// elected one are searched. If none matches and the first record is of an older generation
/// (the stale journal every store keeps), no attempt since wrote there: every attempt writes
/// its first record at that spot. Only records nobody can attribute make a jump of 2^32, which
/// keeps the low 32 bits every frame stores but changes every checksum seed.
fn unattributed_generation(loser: &mut Candidate, elected: u64) -> u64 {
    const SEARCHED: u64 = 64;
    if matches!(loser.header, HeaderRead::Valid(_)) {
        return 0;
    }
    loser.with_bytes(|bytes| {
        if !bytes.get(HEADER_SIZE..).is_some_and(any_non_zero) {
            return 0;
        }
        let newer = (1..=SEARCHED)
            .map(|k| elected.saturating_add(k))
            // A search that gave up may have missed records of `g`: counted as present, so
            // that `g` is never used again.
            .filter(|&g| next_valid_record(bytes, HEADER_SIZE, g) != Beyond::Nothing)
            .max();
        match newer {
            Some(g) => g,
            None if first_record_is_older(bytes, elected) => 0,
            None => elected.saturating_add(1 << 32),
        }
    })
}

/// Whether `bytes` holds, from its first record, a whole journal (to its commit marker) of a
/// generation at most `elected`: the stale journal, intact. A stale first record alone is not
/// enough: pages of a later attempt may have reached the disk after it without the page
/// holding the first record.
fn first_record_is_older(bytes: &[u8], elected: u64) -> bool {
    let Some(same_high) = first_frame_generation(bytes, elected) else {
        return false;
    };
    let older = if same_high <= elected {
        Some(same_high)
    } else {
        same_high.checked_sub(1 << 32)
    };
    older.is_some_and(|g| holds_commit_of(bytes, g))
}

/// Candidate frames claiming bodies up to this long are checked first (see
/// [`next_valid_record`]): every record this store writes for settings-sized values, and the
/// batches a compaction packs (a code, a count and up to `PACK_BYTES` of operations).
const SHORT_CLAIM: usize = super::pack::PACK_BYTES + 16;

/// The end of the last record of `generation` that starts at or after `from`, if any: proof
/// that what stopped the replay was damage, not the end of the data (`verify` asks the same).
///
/// The search checksums every candidate frame for the bodies they claim, at most twice the
/// file's length in all, or values crafted to hold many frame images of a coming generation,
/// each claiming a long body, could make every open take hours. Ordinary files make such
/// claims too: a reused file's stale records of an earlier generation have this generation's
/// number in their length field whenever it equals a common body length, and each such spot
/// reads as a frame claiming a body as long as the previous record's last four bytes say (tens
/// of MB). So candidates claiming short bodies (the records this store writes, and any after
/// real damage, however many stale records lie between) are checked first through the whole
/// file, and only then the long claims, with what is left of the budget. Past the budget the
/// search cannot tell: with valid records already found, they may run to the end of the file
/// if short claims went unchecked, or to the last one found if only long ones did (damage,
/// reported either way); with none, it answers [`Beyond::GaveUp`], which the open neither
/// reports as a loss nor takes for the end of the data that new records could land in front
/// of ([`Tail::Undecided`]).
pub(crate) fn next_valid_record(bytes: &[u8], from: usize, generation: u64) -> Beyond {
    let frames = format::Frames::new(generation);
    let mut budget = Some(bytes.len().saturating_mul(2));
    let mut last = None;
    // One scan: short claims are checked as they come, long ones are noted for afterwards.
    let mut long_claims = Vec::new();
    let mut search = from;
    while let Some((frame_at, len)) =
        frames.find_within_budget(bytes, search, bytes.len(), &mut budget, |at, claimed| {
            // A claim running past the end of the file is never a record: not kept for later
            // (crafted bytes could otherwise fill the list with most of the file's offsets).
            let fits = at.saturating_add(FRAME_SIZE).saturating_add(claimed) <= bytes.len();
            fits && (claimed <= SHORT_CLAIM || {
                long_claims.push(at);
                false
            })
        })
    {
        last = Some(frame_at + FRAME_SIZE + len);
        search = frame_at + 1;
    }
    if budget.is_none() {
        // Short records past the last one found may have gone unchecked.
        return match last {
            Some(_) => Beyond::ValidUntil(bytes.len()),
            None => Beyond::GaveUp,
        };
    }
    for at in long_claims {
        // The candidate starting exactly at `at`, checked and charged like the others.
        if let Some((frame_at, len)) =
            frames.find_within_budget(bytes, at, at + 1, &mut budget, |_, _| true)
        {
            last = last.max(Some(frame_at + FRAME_SIZE + len));
        }
        if budget.is_none() {
            // Every short claim was checked; only long ones went unchecked.
            return match last {
                Some(until) => Beyond::ValidUntil(until),
                None => Beyond::GaveUp,
            };
        }
    }
    match last {
        Some(until) => Beyond::ValidUntil(until),
        None => Beyond::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal image of `generation` with no header: one put, then the commit marker.
    fn headerless_journal(generation: u64) -> Vec<u8> {
        let mut bytes = vec![0_u8; HEADER_SIZE];
        let mut put = Vec::new();
        format::encode_put(
            "k",
            &crate::Value::Integer(1),
            &Default::default(),
            &mut put,
        )
        .unwrap();
        for body in [put.as_slice(), &format::encode_commit(generation)] {
            bytes.extend_from_slice(&format::frame(generation, body));
            bytes.extend_from_slice(body);
        }
        bytes.resize(bytes.len() + 64, 0);
        bytes
    }

    #[test]
    fn records_prove_a_generation_past_2_pow_32() {
        let generation = (1 << 32) + 5;
        let bytes = headerless_journal(generation);
        assert_eq!(proven_in(&bytes, 1), Some(generation));
        assert_eq!(proven_in(&bytes, 6), Some(generation));
        assert_eq!(proven_in(&bytes, generation + 1), None);
        assert_eq!(proven_in(&headerless_journal(5), 1), Some(5));
    }

    #[test]
    fn only_unattributable_records_jump_the_next_generation() {
        let older = headerless_journal(3);
        assert!(first_record_is_older(&older, 3));
        assert!(first_record_is_older(&older, 9));
        assert!(!first_record_is_older(&older, 2));
        assert!(first_record_is_older(
            &headerless_journal((1 << 32) + 1),
            (1 << 32) + 7
        ));
        let mut garbage = older.clone();
        garbage[HEADER_SIZE + FRAME_SIZE] ^= 1;
        assert!(!first_record_is_older(&garbage, 9));
        // An intact first record over a damaged rest (say, pages of a later attempt) is not
        // the stale journal intact.
        let mut overwritten = older.clone();
        let last = overwritten.len() - 64 - 1;
        overwritten[last] ^= 1;
        assert!(!first_record_is_older(&overwritten, 9));
    }
}
