//! [`verify`]: checks a store's two journal files without opening the store.
//!
//! The check reads both files with plain reads (no memory map, no lock, no write), so it works
//! on a store that another process has open, and on files copied elsewhere for inspection. It
//! runs the same election and replay as [`Builder::open`](crate::Builder::open), on a copy of
//! the bytes, and adds what opening does not say: each file's header, generation, record count
//! and where its valid records end.
//!
//! A store that another process is writing may change while it is read. A record being
//! appended shows up as a torn tail, which is not damage; a copy that caught one half copied
//! next to newer records on a later page looks damaged, so a report with damage is taken
//! again, and damage is reported once two copies in a row show it at the same places. A
//! report on a live store is still a best effort. `docs/format.md` describes the bytes and the
//! election rules.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Result;
use crate::bonjson::DecodeOptions;
use crate::journal::copied::CopiedBackend;
use crate::journal::format::{
    self, FORMAT_VERSION, FRAME_SIZE, FrameRead, HEADER_SIZE, HeaderRead, STATE_COMMITTED,
    STATE_PENDING,
};
use crate::journal::recovery::{self, Note, Tail};
use crate::journal::storage::Slot;
use crate::options::MIN_BUFFER_SIZE;

/// The overall verdict of [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Nothing is damaged: opening the store loses nothing. (A torn last record, a write cut
    /// short before it was acknowledged, is not damage.)
    Clean,
    /// The store opens, but damage was found: opening would report an
    /// [`Event::DataLoss`](crate::Event::DataLoss), or the inactive file holds damaged records
    /// (a hole in the records of an unfinished compaction, a `PENDING` file, is not damage).
    Damaged,
    /// The store does not open: no journal is valid, or a file has a newer format version.
    Unusable,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Clean => "clean",
            Status::Damaged => "damaged",
            Status::Unusable => "unusable",
        })
    }
}

/// What a journal file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderState {
    /// The file does not exist (opening the store would create it empty).
    Missing,
    /// All zero: a file that was never written.
    Empty,
    /// Not a valid header: wrong magic or a failed checksum.
    Damaged,
    /// A compaction was writing this file and did not finish: it is never elected.
    Pending,
    /// A complete journal of its generation.
    Committed,
    /// A header caught half written over the one before it (by a copy taken while a writer
    /// stored it, or left by a writer killed within that store): the `COMMITTED` header
    /// over the `PENDING` one of the generation whose commit marker the records hold, or a
    /// first `PENDING` header over zeros in a file with nothing after it. Nothing is lost;
    /// the next writable open compacts into a new generation.
    HalfWritten,
    /// A valid header with an unknown state value.
    UnknownState(u32),
    /// Written by a newer format version than this library reads.
    UnsupportedVersion(u32),
}

impl fmt::Display for HeaderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderState::Missing => f.write_str("missing"),
            HeaderState::Empty => f.write_str("empty"),
            HeaderState::Damaged => f.write_str("damaged"),
            HeaderState::Pending => f.write_str("pending"),
            HeaderState::Committed => f.write_str("committed"),
            HeaderState::HalfWritten => f.write_str("half written (nothing lost)"),
            HeaderState::UnknownState(s) => write!(f, "unknown state 0x{s:08x}"),
            HeaderState::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
        }
    }
}

/// Damage found in one journal file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// Byte offset in the file where the damage starts (0 for the header).
    pub offset: u64,
    /// Bytes of valid-looking records beyond the damage that replay cannot reach (0 for a
    /// header recovered from its records).
    pub lost_bytes: u64,
    /// A sentence saying what was found.
    pub description: String,
}

/// What [`verify`] found in one journal file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalReport {
    /// The file (`<base>.jrna` or `<base>.jrnb`).
    pub path: PathBuf,
    /// Its size in bytes, `None` if it does not exist.
    pub size: Option<u64>,
    /// What its header says.
    pub header: HeaderState,
    /// The generation its records were checked against: the header's, or for a file whose
    /// header is damaged, the one its records name. `None` if neither is known.
    pub generation: Option<u64>,
    /// Valid records of that generation, in order from the first (the commit marker counts).
    pub records: u64,
    /// Byte offset where those records end: the length of the file that replay uses
    /// (`HEADER_SIZE`, 4096, if there are none; 0 if the generation is unknown).
    pub valid_len: u64,
    /// Offset of a torn last record: a write cut short by a crash before it was acknowledged,
    /// which opening discards. Not damage.
    pub torn_at: Option<u64>,
    /// Offset where this file's records end when the search beyond them for more records of
    /// the same generation gave up, its budget spent (ordinarily on stale records of an older
    /// generation): nothing is known to be lost, and opening rewrites the journal into a new
    /// generation. Not damage.
    pub undecided_from: Option<u64>,
    /// Damage found in this file (empty if none).
    pub damage: Vec<Damage>,
    /// Whether opening the store would elect this file as its journal.
    pub elected: bool,
}

/// What [`verify`] found: both files, which one the store would elect, and a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The store's base path.
    pub base: PathBuf,
    /// The two journal files, `.jrna` first.
    pub files: [JournalReport; 2],
    /// The live keys the elected journal holds, if the store opens.
    pub live_keys: Option<u64>,
    /// The verdict.
    pub status: Status,
    /// Why the store is [`Status::Unusable`], as a sentence.
    pub problem: Option<String>,
}

impl VerifyReport {
    /// The file the store would elect as its journal, if any (none for an unusable store or
    /// one whose files were never written).
    pub fn elected(&self) -> Option<&JournalReport> {
        self.files.iter().find(|f| f.elected)
    }

    /// Whether the verdict is [`Status::Clean`].
    pub fn is_clean(&self) -> bool {
        self.status == Status::Clean
    }
}

/// Checks the journal files of the store at `base` (`<base>.jrna` and `<base>.jrnb`) without
/// opening it: no lock is taken and nothing is written, so this works while another process
/// has the store open.
///
/// Fails only if the files cannot be read: with an [`Error::Io`](crate::Error::Io) whose
/// source is [`std::io::ErrorKind::NotFound`] if neither file exists, or
/// [`std::io::ErrorKind::ResourceBusy`] if a writer's compactions switched the files during
/// every copy for two seconds. Damage, and files that no store could open, are reported in
/// the [`VerifyReport`].
///
/// ```
/// # fn main() -> resilient_kv::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use resilient_kv::{KVStore, Value, verify};
///
/// let base = dir.path().join("app");
/// let store = KVStore::new(&base, 64 * 1024, None, None)?;
/// store.insert("theme".to_string(), Value::from("dark"))?;
/// let report = verify::verify(&base)?; // works while `store` is open
/// assert!(report.is_clean());
/// assert_eq!(report.live_keys, Some(1));
/// let elected = report.elected().unwrap();
/// assert_eq!(elected.records, 2); // the commit marker and the insert
/// # Ok(()) }
/// ```
pub fn verify(base: impl AsRef<Path>) -> Result<VerifyReport> {
    let base = base.as_ref().to_path_buf();
    let paths = [Slot::A, Slot::B].map(|slot| slot.path(&base));
    let take = || {
        let (a, b) = crate::journal::copied::read_both(&base, &paths)?;
        if a.is_none() && b.is_none() {
            return Err(crate::journal::copied::no_store(&base, &paths));
        }
        let [path_a, path_b] = paths.clone();
        let files = [(path_a, a), (path_b, b)].map(|(path, bytes)| File::new(path, bytes));
        Ok(check(base.clone(), files))
    };
    // A copy of a store being written can catch a record half copied next to newer ones on a
    // later page: damage where there is none, at a place that moves with the writer. Damage
    // is reported once two copies in a row show it at the same places; damage that moved in
    // each of five copies is a writer's records seen half written, as a read-only open takes
    // it too (real damage stays where it is).
    let (report, confirmed) =
        crate::journal::copied::settle_damage(5, take, |report: &VerifyReport| {
            report
                .files
                .iter()
                .any(|file| !file.damage.is_empty())
                .then(|| {
                    report
                        .files
                        .iter()
                        .map(|file| {
                            let places: Vec<u64> = file.damage.iter().map(|d| d.offset).collect();
                            (file.generation, places)
                        })
                        .collect::<Vec<_>>()
                })
        })?;
    Ok(believed(report, confirmed))
}

/// `report` as the answer: damage that was not confirmed (it moved from copy to copy) is no
/// damage, so a store another process keeps writing verifies clean, as it opens read-only.
fn believed(mut report: VerifyReport, confirmed: bool) -> VerifyReport {
    if !confirmed {
        for file in &mut report.files {
            file.damage.clear();
        }
        if report.status == Status::Damaged {
            report.status = Status::Clean;
        }
    }
    report
}

/// `<base>.<ext>`, as the store names its files.
/// One file as read, padded with zeros as opening the store would extend it.
struct File {
    path: PathBuf,
    size: Option<u64>,
    bytes: Arc<Vec<u8>>,
}

impl File {
    fn new(path: PathBuf, bytes: Option<Vec<u8>>) -> Self {
        let size = bytes.as_ref().map(|b| b.len() as u64);
        let mut bytes = bytes.unwrap_or_default();
        if bytes.len() < MIN_BUFFER_SIZE {
            bytes.resize(MIN_BUFFER_SIZE, 0);
        }
        File {
            path,
            size,
            bytes: Arc::new(bytes),
        }
    }

    fn header(&self) -> HeaderState {
        if self.size.is_none() {
            return HeaderState::Missing;
        }
        match format::decode_header(&self.bytes) {
            HeaderRead::Empty => HeaderState::Empty,
            HeaderRead::Invalid => HeaderState::Damaged,
            HeaderRead::Valid(h) if h.version > FORMAT_VERSION => {
                HeaderState::UnsupportedVersion(h.version)
            }
            HeaderRead::Valid(h) if h.state == STATE_COMMITTED => HeaderState::Committed,
            HeaderRead::Valid(h) if h.state == STATE_PENDING => HeaderState::Pending,
            HeaderRead::Valid(h) => HeaderState::UnknownState(h.state),
        }
    }

    fn header_generation(&self) -> Option<u64> {
        match format::decode_header(&self.bytes) {
            HeaderRead::Valid(h) => Some(h.generation),
            _ => None,
        }
    }

    /// The generation named by the first record's frame (its low 32 bits, with the high bits
    /// of `near`), for a file whose header is damaged.
    fn record_generation(&self, near: u64) -> Option<u64> {
        let low = self.bytes.get(HEADER_SIZE + 4..HEADER_SIZE + 8)?;
        let low = u64::from(u32::from_le_bytes(low.try_into().ok()?));
        let generation = (near & !0xffff_ffff) | low;
        match format::read_frame(self.bytes.get(HEADER_SIZE..)?, generation) {
            FrameRead::Record { .. } => Some(generation),
            _ => None,
        }
    }
}

/// Where a file's records of one generation end, and why.
struct Scan {
    records: u64,
    end: usize,
    stop: FrameRead,
}

/// Walks the records of `generation` from the first record position, stopping at `limit`
/// (the end of what replay applied, when known) or at the first invalid one.
fn scan(bytes: &[u8], generation: u64, limit: usize) -> Scan {
    let mut pos = HEADER_SIZE;
    let mut records = 0;
    let frames = format::Frames::new(generation);
    let stop = loop {
        if pos >= limit.min(bytes.len()) {
            break FrameRead::Zero;
        }
        match frames.read(bytes.get(pos..).unwrap_or_default()) {
            FrameRead::Record { len } => {
                records += 1;
                pos += FRAME_SIZE + len;
            }
            other => break other,
        }
    };
    Scan {
        records,
        end: pos,
        stop,
    }
}

fn describe_stop(bytes: &[u8], offset: usize, generation: u64) -> &'static str {
    match bytes
        .get(offset..)
        .map(|rest| format::read_frame(rest, generation))
    {
        Some(FrameRead::Torn) => "its checksum fails or its body is cut short",
        Some(FrameRead::Foreign) => "it is not a record of this generation",
        Some(FrameRead::Zero) => "its frame is zero",
        // The frame verifies, so the body is malformed.
        Some(FrameRead::Record { .. }) | None => "its body is malformed",
    }
}

/// What opening elected: the file's index, its generation, where replay ended, how, and the
/// notes about a header recovered from its records.
struct Election {
    index: usize,
    generation: u64,
    end: usize,
    tail: Tail,
}

fn check(base: PathBuf, files: [File; 2]) -> VerifyReport {
    // What opening would do, run on the copies.
    let backend =
        CopiedBackend::from_bytes(&base, files[0].bytes.to_vec(), files[1].bytes.to_vec());
    let all_zero = files.iter().all(|f| f.bytes.iter().all(|&b| b == 0));
    let mut notes = Vec::new();
    let (election, live_keys, problem) = if all_zero {
        // Opening would initialize a new store here.
        (None, Some(0), None)
    } else {
        match recovery::open(&backend, 0, &DecodeOptions::default()) {
            Ok(opened) => {
                let index = usize::from(opened.active.storage().path() != files[0].path);
                let election = Election {
                    index,
                    generation: opened.active.generation(),
                    end: opened.active.end(),
                    tail: opened.tail.clone(),
                };
                notes = opened.notes;
                (Some(election), Some(opened.entries.len() as u64), None)
            }
            Err(e) => (None, None, Some(e.to_string())),
        }
    };
    let near = election
        .as_ref()
        .map(|e| e.generation)
        .or_else(|| files.iter().filter_map(File::header_generation).max())
        .unwrap_or(0);
    let [a, b] = &files;
    let files = [
        report(a, election.as_ref().filter(|e| e.index == 0), &notes, near),
        report(b, election.as_ref().filter(|e| e.index == 1), &notes, near),
    ];
    let status = if problem.is_some() {
        Status::Unusable
    } else if files.iter().any(|r| !r.damage.is_empty()) {
        Status::Damaged
    } else {
        Status::Clean
    };
    VerifyReport {
        base,
        files,
        live_keys,
        status,
        problem,
    }
}

/// The report on one file: what opening noted about it (at the place it noted), then, from
/// the election's replay if it was elected, else from a scan of its own records.
fn report(file: &File, election: Option<&Election>, notes: &[Note], near: u64) -> JournalReport {
    let header = file.header();
    let mut report = JournalReport {
        path: file.path.clone(),
        size: file.size,
        header,
        generation: None,
        records: 0,
        valid_len: 0,
        torn_at: None,
        undecided_from: None,
        damage: Vec::new(),
        elected: election.is_some(),
    };
    for note in notes.iter().filter(|note| note.path == file.path) {
        if !note.is_loss() {
            report.header = HeaderState::HalfWritten;
            continue;
        }
        report.damage.push(Damage {
            offset: note.offset as u64,
            lost_bytes: note.lost_bytes as u64,
            description: note.detail.clone(),
        });
    }
    if let Some(e) = election {
        let generation = e.generation;
        report.generation = Some(generation);
        report.records = scan(&file.bytes, generation, e.end).records;
        report.valid_len = e.end as u64;
        match e.tail {
            Tail::Clean => {}
            Tail::Torn { offset } => report.torn_at = Some(offset as u64),
            Tail::Undecided { offset } => report.undecided_from = Some(offset as u64),
            Tail::Damaged {
                offset,
                valid_until,
            } => {
                let lost = valid_until.saturating_sub(offset);
                report.damage.push(Damage {
                    offset: offset as u64,
                    lost_bytes: lost as u64,
                    description: format!(
                        "damaged record at byte {offset} ({}); {lost} bytes of later records of \
                         generation {generation} are not replayed",
                        describe_stop(&file.bytes, offset, generation),
                    ),
                });
            }
        }
        return report;
    }
    if matches!(header, HeaderState::UnsupportedVersion(_)) {
        report.generation = file.header_generation();
        return report;
    }
    let Some(generation) = file
        .header_generation()
        .or_else(|| file.record_generation(near))
    else {
        return report;
    };
    report.generation = Some(generation);
    let scanned = scan(&file.bytes, generation, file.bytes.len());
    report.records = scanned.records;
    report.valid_len = scanned.end as u64;
    // Opening may have said already what stops this file's records, and where.
    let noted = report.damage.iter().any(|d| d.offset == scanned.end as u64);
    // A `PENDING` file is a compaction that never finished: opening never elects it, nothing
    // acknowledged lives only there, and a power loss may have written back some of its pages
    // and not others. A hole in it loses nothing.
    if noted || header == HeaderState::Pending {
        return report;
    }
    let beyond = recovery::next_valid_record(&file.bytes, scanned.end + 1, generation);
    if let recovery::Beyond::ValidUntil(until) = beyond {
        let lost = until.saturating_sub(scanned.end);
        report.damage.push(Damage {
            offset: scanned.end as u64,
            lost_bytes: lost as u64,
            description: format!(
                "damaged record at byte {} ({}); {lost} bytes of later records of generation \
                 {generation} follow it",
                scanned.end,
                describe_stop(&file.bytes, scanned.end, generation),
            ),
        });
    } else if beyond == recovery::Beyond::GaveUp {
        report.undecided_from = Some(scanned.end as u64);
    } else if scanned.stop == FrameRead::Torn {
        report.torn_at = Some(scanned.end as u64);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Damage confirmed by two copies is reported; the same report unconfirmed (its damage
    /// moved from copy to copy, as a live writer's half-copied records do) is clean.
    #[test]
    fn only_confirmed_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("store");
        {
            let store = crate::KVStore::builder(&base)
                .buffer_size(64 * 1024)
                .open()
                .unwrap();
            for i in 0..10 {
                store
                    .insert(format!("k{i}"), crate::Value::Integer(i))
                    .unwrap();
            }
        }
        // docs/format.md: a new store's journal is `.jrna`; after its header and the commit
        // marker (12 + 9 bytes) comes the record of `k0`: damage its body.
        let path = dir.path().join("store.jrna");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_SIZE + 21 + FRAME_SIZE + 2] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let report = verify(&base).unwrap();
        assert_eq!(report.status, Status::Damaged, "{report:#?}");
        assert_eq!(believed(report.clone(), true), report);
        let unconfirmed = believed(report, false);
        assert_eq!(unconfirmed.status, Status::Clean);
        assert!(unconfirmed.files.iter().all(|f| f.damage.is_empty()));
    }
}
