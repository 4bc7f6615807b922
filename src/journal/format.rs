//! The on-disk format, byte by byte. `docs/format.md` is the authoritative description; the
//! test at the bottom pins these constants to it.
//!
//! All integers are little-endian.

use crate::Value;
use crate::bonjson::{self, Limits};

/// Bytes reserved for the header at the start of each journal file (one page, so the header
/// is written and flushed apart from the records).
pub(crate) const HEADER_SIZE: usize = 4096;

/// `magic` at offset 0.
pub(crate) const MAGIC: [u8; 8] = *b"RKVJRNL\x01";
pub(crate) const MAGIC_OFFSET: usize = 0;
pub(crate) const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
pub(crate) const STATE_OFFSET: usize = VERSION_OFFSET + 4;
pub(crate) const GENERATION_OFFSET: usize = STATE_OFFSET + 4;
pub(crate) const HEADER_CRC_OFFSET: usize = GENERATION_OFFSET + 8;
/// Bytes of the header that carry meaning (the rest of the page is zero).
pub(crate) const HEADER_USED: usize = HEADER_CRC_OFFSET + 4;

/// The journal format this library writes and the newest it reads.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// The largest generation a valid header may name. A real store cannot get near it (a
/// compaction every microsecond would take 146,000 years); refusing more keeps every
/// "generation + something" computation far from overflow on forged or damaged files.
pub(crate) const MAX_GENERATION: u64 = 1 << 62;

/// `state`: the file is being written by a compaction and must never be elected.
pub(crate) const STATE_PENDING: u32 = 0x5045_4e44; // "PEND"
/// `state`: the file holds a complete journal of its generation.
pub(crate) const STATE_COMMITTED: u32 = 0x434f_4d54; // "COMT"

/// Record frame: `len: u32`, `generation_low: u32`, `crc: u32`, then `len` body bytes.
pub(crate) const FRAME_SIZE: usize = 12;
const FRAME_LEN_OFFSET: usize = 0;
pub(crate) const FRAME_GEN_OFFSET: usize = FRAME_LEN_OFFSET + 4;
const FRAME_CRC_OFFSET: usize = FRAME_GEN_OFFSET + 4;

/// Body operation codes.
pub(crate) const OP_PUT: u8 = 1;
pub(crate) const OP_DELETE: u8 = 2;
pub(crate) const OP_BATCH: u8 = 3;
/// A marker record: the compaction that wrote this generation finished.
pub(crate) const OP_COMMIT: u8 = 4;
/// Removes every key (`clear()`).
pub(crate) const OP_CLEAR: u8 = 5;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 4096;

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) version: u32,
    pub(crate) state: u32,
    pub(crate) generation: u64,
}

/// What a header region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderRead {
    /// All zero: a new file.
    Empty,
    /// Not a header of ours, or its checksum fails.
    Invalid,
    /// A header whose checksum holds.
    Valid(Header),
}

pub(crate) fn encode_header(header: &Header) -> [u8; HEADER_USED] {
    let mut out = [0_u8; HEADER_USED];
    put(&mut out, MAGIC_OFFSET, &MAGIC);
    put(&mut out, VERSION_OFFSET, &header.version.to_le_bytes());
    put(&mut out, STATE_OFFSET, &header.state.to_le_bytes());
    put(
        &mut out,
        GENERATION_OFFSET,
        &header.generation.to_le_bytes(),
    );
    let crc = crc32c::crc32c(out.get(..HEADER_CRC_OFFSET).unwrap_or_default());
    put(&mut out, HEADER_CRC_OFFSET, &crc.to_le_bytes());
    out
}

/// The header's fields, where they lie.
const HEADER_FIELDS: [std::ops::Range<usize>; 5] = [
    MAGIC_OFFSET..VERSION_OFFSET,
    VERSION_OFFSET..STATE_OFFSET,
    STATE_OFFSET..GENERATION_OFFSET,
    GENERATION_OFFSET..HEADER_CRC_OFFSET,
    HEADER_CRC_OFFSET..HEADER_USED,
];

/// Whether the header region `bytes` is not a valid header but each of its fields is whole
/// and is that of `old` or of `new`: `new` stored over `old` and seen half done. A header is
/// stored with one copy, which a reader can catch between its stores (a thread preempted
/// there leaves it so for milliseconds), and which a writer killed within it leaves. A power
/// loss cannot (a sector is written whole). Fields are compared whole, so a flipped bit
/// never passes for it: the two states, and the two checksums, differ in many bits.
fn half_written(bytes: &[u8], old: &[u8; HEADER_USED], new: &[u8; HEADER_USED]) -> bool {
    decode_header(bytes) == HeaderRead::Invalid
        && HEADER_FIELDS.iter().all(|field| {
            let seen = bytes.get(field.clone());
            seen == old.get(field.clone()) || seen == new.get(field.clone())
        })
}

/// A commit caught half done: the `COMMITTED` header of `generation` stored over its
/// `PENDING` one (they differ in the state and the checksum).
pub(crate) fn commit_half_written(bytes: &[u8], generation: u64) -> bool {
    let [pending, committed] =
        [STATE_PENDING, STATE_COMMITTED].map(|state| this_version_header(state, generation));
    half_written(bytes, &pending, &committed)
}

/// The bytes of this format version's header in `state` for `generation`.
fn this_version_header(state: u32, generation: u64) -> [u8; HEADER_USED] {
    encode_header(&Header {
        version: FORMAT_VERSION,
        state,
        generation,
    })
}

/// A first header caught half done: the `PENDING` header of the generation the generation
/// field names stored over a header page never written (zeros). Either half of the store
/// holds the magic or the checksum, whole: a generation field alone (a flipped bit in a blank
/// header page) is not taken for one.
pub(crate) fn pending_half_written_over_zeros(bytes: &[u8]) -> bool {
    let Some(generation) = read_u64(bytes, GENERATION_OFFSET) else {
        return false;
    };
    let pending = this_version_header(STATE_PENDING, generation);
    let stored = |field: std::ops::Range<usize>| bytes.get(field.clone()) == pending.get(field);
    half_written(bytes, &[0; HEADER_USED], &pending)
        && (stored(MAGIC_OFFSET..VERSION_OFFSET) || stored(HEADER_CRC_OFFSET..HEADER_USED))
}

pub(crate) fn decode_header(bytes: &[u8]) -> HeaderRead {
    let Some(bytes) = bytes.get(..HEADER_USED) else {
        return HeaderRead::Invalid;
    };
    if bytes.iter().all(|&b| b == 0) {
        return HeaderRead::Empty;
    }
    if bytes.get(..8) != Some(&MAGIC[..]) {
        return HeaderRead::Invalid;
    }
    let crc = crc32c::crc32c(bytes.get(..HEADER_CRC_OFFSET).unwrap_or_default());
    if read_u32(bytes, HEADER_CRC_OFFSET) != Some(crc) {
        return HeaderRead::Invalid;
    }
    match (
        read_u32(bytes, VERSION_OFFSET),
        read_u32(bytes, STATE_OFFSET),
        read_u64(bytes, GENERATION_OFFSET),
    ) {
        // A later version's header is taken as such whatever its generation, so that the open
        // refuses it as a later version (whose rules may differ) instead of as damage.
        (Some(version), Some(state), Some(generation))
            if generation <= MAX_GENERATION || version > FORMAT_VERSION =>
        {
            HeaderRead::Valid(Header {
                version,
                state,
                generation,
            })
        }
        _ => HeaderRead::Invalid,
    }
}

/// The frame for `body` in `generation`. The checksum covers the whole generation, so a record
/// left over from another generation can never verify.
#[cfg(test)]
pub(crate) fn frame(generation: u64, body: &[u8]) -> [u8; FRAME_SIZE] {
    frame_seeded(generation, crc_seed(generation), body)
}

/// The checksum state after the generation, computed once per journal.
pub(crate) fn crc_seed(generation: u64) -> u32 {
    crc32c::crc32c(&generation.to_le_bytes())
}

/// `frame` with the generation's checksum seed precomputed.
pub(crate) fn frame_seeded(generation: u64, seed: u32, body: &[u8]) -> [u8; FRAME_SIZE] {
    let mut out = [0_u8; FRAME_SIZE];
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    put(&mut out, FRAME_LEN_OFFSET, &len.to_le_bytes());
    put(
        &mut out,
        FRAME_GEN_OFFSET,
        &(generation as u32).to_le_bytes(),
    );
    let crc = super::checksum::append(seed, body);
    put(&mut out, FRAME_CRC_OFFSET, &crc.to_le_bytes());
    out
}

/// What the bytes at a record position hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameRead {
    /// A record of this generation with `len` body bytes.
    Record { len: usize },
    /// Zeros: nothing was ever written here.
    Zero,
    /// A frame claiming this generation whose body is missing or fails its checksum.
    Torn,
    /// Bytes that are not a record of this generation (e.g. left from an older one).
    Foreign,
}

/// What the bytes at the start of `region` hold for `generation` (for one-off reads; loops
/// over many records use [`Frames`]).
pub(crate) fn read_frame(region: &[u8], generation: u64) -> FrameRead {
    Frames::new(generation).read(region)
}

/// Reads the frames of one generation, with its checksum seed computed once (computing it per
/// record was a second checksum call for every record replayed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frames {
    generation: u64,
    seed: u32,
}

impl Frames {
    pub(crate) fn new(generation: u64) -> Self {
        Frames {
            generation,
            seed: crc_seed(generation),
        }
    }

    /// What the bytes at the start of `region` hold, as [`read_frame`] says.
    pub(crate) fn read(&self, region: &[u8]) -> FrameRead {
        let generation = self.generation;
        let Some(head) = region.get(..FRAME_SIZE) else {
            return if region.iter().all(|&b| b == 0) {
                FrameRead::Zero
            } else {
                FrameRead::Foreign
            };
        };
        if head.iter().all(|&b| b == 0) {
            return FrameRead::Zero;
        }
        let (Some(len), Some(gen_low), Some(crc)) = (
            read_u32(head, FRAME_LEN_OFFSET),
            read_u32(head, FRAME_GEN_OFFSET),
            read_u32(head, FRAME_CRC_OFFSET),
        ) else {
            return FrameRead::Foreign;
        };
        if gen_low != generation as u32 {
            return FrameRead::Foreign;
        }
        let len = len as usize;
        let body = FRAME_SIZE
            .checked_add(len)
            .and_then(|end| region.get(FRAME_SIZE..end));
        match body {
            Some(body)
                if len > 0
                    && (cfg!(fuzzing) || super::checksum::append(self.seed, body) == crc) =>
            {
                FrameRead::Record { len }
            }
            _ => FrameRead::Torn,
        }
    }

    /// [`Frames::find_checking_at_most`] without a budget (for tests).
    #[cfg(test)]
    pub(crate) fn find(&self, bytes: &[u8], from: usize, until: usize) -> Option<(usize, usize)> {
        self.find_checking_at_most(bytes, from, until, usize::MAX)
    }

    /// [`Frames::find_within_budget`] with a budget of its own: for searches that are only a
    /// hint (where to split a replay).
    pub(crate) fn find_checking_at_most(
        &self,
        bytes: &[u8],
        from: usize,
        until: usize,
        budget: usize,
    ) -> Option<(usize, usize)> {
        self.find_within_budget(bytes, from, until, &mut Some(budget), |_, _| true)
    }

    /// The first valid record of this generation (its frame names the generation and its
    /// checksum holds) that starts at or after `from` and below `until`, as its start and body
    /// length; the record itself may run past `until`. Frames are found through their
    /// generation field, so runs of zeros and other generations' records are skipped at
    /// `memchr` speed. Each candidate's claimed body length is taken from `budget` before it
    /// is checksummed (nothing when the claim runs past the end: it is refused unchecked),
    /// and the search gives up (`None`, and the budget becomes `None`) when a claim exceeds
    /// what is left, so that values crafted to hold many frame images claiming long bodies
    /// cannot make it slow; a budget shared by several searches bounds them all.
    ///
    /// Only candidates for which `check(start, claimed length)` says so are checked (and
    /// charged); the others are passed over free.
    pub(crate) fn find_within_budget(
        &self,
        bytes: &[u8],
        from: usize,
        until: usize,
        budget: &mut Option<usize>,
        mut check: impl FnMut(usize, usize) -> bool,
    ) -> Option<(usize, usize)> {
        let needle = (self.generation as u32).to_le_bytes();
        // The generation field of a frame starting just below `until` ends here.
        let field_end = until
            .saturating_add(FRAME_GEN_OFFSET + needle.len() - 1)
            .min(bytes.len());
        let mut search = from.checked_add(FRAME_GEN_OFFSET)?;
        loop {
            let haystack = bytes.get(search..field_end)?;
            let found = memchr::memmem::find(haystack, &needle)?;
            let frame_at = search + found - FRAME_GEN_OFFSET;
            let region = bytes.get(frame_at..).unwrap_or_default();
            // Charged what the check will checksum: the claimed body, if the bytes hold it (a
            // claim running past the end is refused without a checksum).
            let claimed = read_u32(region, FRAME_LEN_OFFSET).map_or(0, |len| len as usize);
            if !check(frame_at, claimed) {
                search += found + 1;
                continue;
            }
            let checked = if FRAME_SIZE.saturating_add(claimed) <= region.len() {
                claimed
            } else {
                0
            };
            // Spent: a caller that must not take "nothing found" for an answer sees `None`.
            *budget = budget.and_then(|left| left.checked_sub(checked));
            budget.as_ref()?;
            if let FrameRead::Record { len } = self.read(region) {
                return Some((frame_at, len));
            }
            search += found + 1;
        }
    }
}

/// One change inside a record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Put(String, Value),
    Delete(String),
    Clear,
}

/// Appends a record body holding `ops` (one op, or a batch applied all-or-nothing).
pub(crate) fn encode_body(ops: &[Op], limits: &Limits, out: &mut Vec<u8>) -> crate::Result<()> {
    if let [op] = ops {
        return encode_op(op, limits, out);
    }
    out.push(OP_BATCH);
    put_varint(out, ops.len() as u64);
    for op in ops {
        encode_op(op, limits, out)?;
    }
    Ok(())
}

/// The body of a commit marker for `generation`.
pub(crate) fn encode_commit(generation: u64) -> [u8; 9] {
    let mut out = [0_u8; 9];
    out[0] = OP_COMMIT;
    put(&mut out, 1, &generation.to_le_bytes());
    out
}

/// The generation of a commit-marker body, if `body` is one.
pub(crate) fn decode_commit(body: &[u8]) -> Option<u64> {
    match body {
        [OP_COMMIT, generation @ ..] => Some(u64::from_le_bytes(generation.try_into().ok()?)),
        _ => None,
    }
}

/// Appends a single-put record body.
pub(crate) fn encode_put(
    key: &str,
    value: &Value,
    limits: &Limits,
    out: &mut Vec<u8>,
) -> crate::Result<()> {
    put_body(key, value, limits, false, out)
}

/// [`encode_put`] for a value of the published map, written by compaction: object keys are
/// checked as replay reads them back (`DecodeOptions::keys_as_stored`), so a value replay
/// accepted can always be written again.
pub(crate) fn encode_put_stored(
    key: &str,
    value: &Value,
    limits: &Limits,
    out: &mut Vec<u8>,
) -> crate::Result<()> {
    put_body(key, value, limits, true, out)
}

fn put_body(
    key: &str,
    value: &Value,
    limits: &Limits,
    keys_as_stored: bool,
    out: &mut Vec<u8>,
) -> crate::Result<()> {
    out.push(OP_PUT);
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key.as_bytes());
    if keys_as_stored {
        bonjson::encode_stored_into(value, limits, out)?;
    } else {
        bonjson::encode_into(value, limits, out)?;
    }
    Ok(())
}

/// Appends a single-put record body from a key's bytes and a value already encoded (what
/// compaction copies out of the previous generation). The bytes equal [`encode_put`]'s for the
/// same key and value.
pub(crate) fn encode_put_raw(key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(OP_PUT);
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// Length of the body [`encode_put_raw`] writes for a key and an encoded value of these lengths.
pub(crate) fn put_raw_len(key_len: usize, value_len: usize) -> usize {
    let mut varint_len = 1;
    let mut rest = key_len as u64 >> 7;
    while rest > 0 {
        varint_len += 1;
        rest >>= 7;
    }
    1 + varint_len + key_len + value_len
}

fn encode_op(op: &Op, limits: &Limits, out: &mut Vec<u8>) -> crate::Result<()> {
    match op {
        Op::Put(key, value) => encode_put(key, value, limits, out)?,
        Op::Delete(key) => {
            out.push(OP_DELETE);
            put_varint(out, key.len() as u64);
            out.extend_from_slice(key.as_bytes());
        }
        Op::Clear => out.push(OP_CLEAR),
    }
    Ok(())
}

pub(crate) fn put_varint(out: &mut Vec<u8>, v: u64) {
    crate::leb128::write(v, |b| out.push(b));
}

fn put(out: &mut [u8], offset: usize, bytes: &[u8]) {
    if let Some(dst) = out.get_mut(offset..offset + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(offset..offset + 8)?.try_into().ok()?,
    ))
}

/// Checks a key against the rules every write applies to it: not empty, at most
/// [`MAX_KEY_LEN`] bytes, no NUL. Returns the [`Error::InvalidKey`](crate::Error::InvalidKey) a
/// write of it would return, without writing anything (for an application that checks its
/// input first, or a tool that must not create a store for a write it will refuse).
///
/// ```
/// use resilient_kv::{Error, check_key};
///
/// assert!(check_key("settings.theme").is_ok());
/// assert!(matches!(check_key(""), Err(Error::InvalidKey { .. })));
/// assert!(matches!(check_key("a\0b"), Err(Error::InvalidKey { .. })));
/// ```
pub fn check_key(key: &str) -> crate::Result<()> {
    if key.is_empty() {
        return Err(crate::Error::InvalidKey {
            reason: "keys must not be empty",
        });
    }
    if key.len() > MAX_KEY_LEN {
        return Err(crate::Error::InvalidKey {
            reason: "keys must be at most 4096 bytes",
        });
    }
    if key.contains('\0') {
        return Err(crate::Error::InvalidKey {
            reason: "keys must not contain NUL",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the constants to the byte tables in docs/format.md.
    #[test]
    fn constants_match_docs_format_md() {
        let doc = include_str!("../../docs/format.md");
        for (name, value) in [
            ("HEADER_SIZE", HEADER_SIZE),
            ("MAGIC_OFFSET", MAGIC_OFFSET),
            ("VERSION_OFFSET", VERSION_OFFSET),
            ("STATE_OFFSET", STATE_OFFSET),
            ("GENERATION_OFFSET", GENERATION_OFFSET),
            ("HEADER_CRC_OFFSET", HEADER_CRC_OFFSET),
            ("HEADER_USED", HEADER_USED),
            ("FRAME_SIZE", FRAME_SIZE),
            ("FRAME_LEN_OFFSET", FRAME_LEN_OFFSET),
            ("FRAME_GEN_OFFSET", FRAME_GEN_OFFSET),
            ("FRAME_CRC_OFFSET", FRAME_CRC_OFFSET),
            ("FORMAT_VERSION", FORMAT_VERSION as usize),
            ("MAX_GENERATION", MAX_GENERATION as usize),
            ("OP_PUT", usize::from(OP_PUT)),
            ("OP_DELETE", usize::from(OP_DELETE)),
            ("OP_BATCH", usize::from(OP_BATCH)),
            ("OP_COMMIT", usize::from(OP_COMMIT)),
            ("OP_CLEAR", usize::from(OP_CLEAR)),
            ("MAX_KEY_LEN", MAX_KEY_LEN),
        ] {
            let line = format!("| `{name}` | {value} |");
            assert!(
                doc.contains(&line),
                "docs/format.md must contain the row {line}"
            );
        }
        assert!(doc.contains("`RKVJRNL\\x01`"));
        assert!(doc.contains(&format!("0x{STATE_PENDING:08x}")));
        assert!(doc.contains(&format!("0x{STATE_COMMITTED:08x}")));
    }

    #[test]
    fn zero_bytes_never_parse_as_a_record() {
        let zeros = [0_u8; 64];
        assert_eq!(read_frame(&zeros, 0), FrameRead::Zero);
        assert_eq!(decode_header(&zeros), HeaderRead::Empty);
    }

    #[test]
    fn a_record_of_another_generation_never_verifies() {
        let mut body = Vec::new();
        encode_body(&[Op::Delete("k".into())], &Limits::default(), &mut body).unwrap();
        let mut bytes = frame(7, &body).to_vec();
        bytes.extend_from_slice(&body);
        assert_eq!(read_frame(&bytes, 7), FrameRead::Record { len: body.len() });
        assert_eq!(read_frame(&bytes, 8), FrameRead::Foreign);
        // Same low 32 bits, different generation: the checksum catches it.
        assert_eq!(read_frame(&bytes, 7 + (1 << 32)), FrameRead::Torn);
    }
}
