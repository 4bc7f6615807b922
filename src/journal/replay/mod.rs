//! Replaying a journal into the live map, fast.
//!
//! A journal holds many overwrites of the same keys, so replay first resolves the last
//! operation for every key while pointing into the file's bytes (no allocation per record),
//! and decodes only the values that survive. A record whose checksum holds but whose body is
//! malformed (a bug or a forged file) ends the replay at that record, as damage does. A
//! value's contents (its strings' UTF-8, its floats, its keys) are checked only if it
//! survives, whether it sits alone in a put or inside a batch (whose values are only walked
//! to find where each ends): a malformed value that a later write replaced goes unnoticed,
//! as nothing would read it.

use std::hash::BuildHasher;

use super::format::{
    self, FRAME_SIZE, FrameRead, HEADER_SIZE, MAX_KEY_LEN, OP_BATCH, OP_CLEAR, OP_COMMIT,
    OP_DELETE, OP_PUT,
};
use crate::Value;
use crate::bonjson::{self, DecodeOptions};

mod split;
mod table;
use split::{split_attempt, split_point, sync_point};
use table::KeyTable;

/// One live entry, in the types the published map holds (made on the replay threads).
pub(crate) type Entry = (std::sync::Arc<str>, std::sync::Arc<Value>);

/// The result of a replay.
pub(crate) struct Replayed {
    /// The live entries.
    pub(crate) entries: Vec<Entry>,
    /// End of the last record applied.
    pub(crate) end: usize,
    /// Why the replay stopped (`Torn` also for a malformed record).
    pub(crate) stop: FrameRead,
    /// Whether the generation's commit marker was among the records applied. Every committed
    /// journal has one after its snapshot; without it, the snapshot itself is damaged.
    pub(crate) committed: bool,
}

/// The last operation seen for a key: the encoded value it put (decoded only if it
/// survives), or `None` for a deletion, and the start of the record it came from.
#[derive(Clone, Copy)]
struct Pending<'a> {
    value: Option<&'a [u8]>,
    offset: usize,
}

/// Longest key kept inline in the replay table.
const INLINE_KEY: usize = 22;

/// A key as the replay table holds it: short keys (nearly all) are copied inline, so probing the
/// table never reaches back into the journal's bytes, which is what made replay miss the cache
/// twice per record.
#[derive(Clone, Copy)]
enum Key<'a> {
    Inline(u8, [u8; INLINE_KEY]),
    Long(&'a [u8]),
}

impl<'a> Key<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut inline = [0_u8; INLINE_KEY];
        match inline.get_mut(..bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                Key::Inline(bytes.len() as u8, inline)
            }
            None => Key::Long(bytes),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline(len, bytes) => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Key::Long(bytes) => bytes,
        }
    }
}

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key<'_> {}

/// A key with its hash, computed once per operation (see [`Keys`]).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Hashed<'a> {
    hash: u64,
    key: Key<'a>,
}

/// Journals at least this large replay on two threads (below it, starting a thread costs
/// more than it saves).
const PARALLEL_FROM: usize = 4 << 20;

/// Hashes keys once each, with a randomly seeded fast hasher shared by both workers, so one
/// worker's keys can be looked up in the other's table as they are.
#[derive(Clone, Copy)]
struct Keys<'h> {
    hasher: &'h foldhash::fast::RandomState,
}

impl Keys<'_> {
    fn hashed<'a>(&self, key: &'a [u8]) -> Hashed<'a> {
        Hashed {
            hash: self.hasher.hash_one(key),
            key: Key::new(key),
        }
    }
}

/// Replays the records of `generation` in `bytes` (a whole journal file).
pub(crate) fn replay(bytes: &[u8], generation: u64, decode: &DecodeOptions) -> Replayed {
    let parallel = !cfg!(loom) && bytes.len() >= PARALLEL_FROM;
    replay_with(bytes, generation, decode, |limit, frames| {
        parallel
            .then(|| split_point(bytes, limit, frames))
            .flatten()
    })
}

/// Replays on two threads split by position ([`split`]) where `split` names a point for a
/// given limit, on one thread otherwise.
fn replay_with(
    bytes: &[u8],
    generation: u64,
    decode: &DecodeOptions,
    split: impl Fn(usize, &format::Frames) -> Option<usize>,
) -> Replayed {
    let hasher = foldhash::fast::RandomState::default();
    let keys = Keys { hasher: &hasher };
    let frames = format::Frames::new(generation);
    let mut limit = bytes.len();
    loop {
        let sync = split(limit, &frames).and_then(|at| sync_point(bytes, at, limit, &frames));
        let outcome = match sync {
            Some(sync) => split_attempt(bytes, limit, sync, generation, decode, keys),
            None => whole_attempt(bytes, limit, generation, decode, keys),
        };
        match outcome {
            Ok(replayed) => return replayed,
            // A malformed record: replay again, stopping before it. (`bad` is always a record
            // start below `limit`; the `min` only guarantees progress.)
            Err(bad) => limit = bad.min(limit.saturating_sub(1)),
        }
    }
}

fn whole_attempt(
    bytes: &[u8],
    limit: usize,
    generation: u64,
    decode: &DecodeOptions,
    keys: Keys<'_>,
) -> Result<Replayed, usize> {
    let scanned = scan(bytes, HEADER_SIZE, limit, generation, decode, keys, 0)?;
    let entries = decode_live(scanned.live.into_entries(), decode)?;
    Ok(Replayed {
        entries,
        end: scanned.end,
        stop: scanned.stop,
        committed: scanned.committed,
    })
}

/// Decodes the surviving values (skipping deletions); `Err` holds the start of the record of
/// a value that does not decode or a key that is not UTF-8 or holds a NUL.
fn decode_live<'a>(
    live: impl Iterator<Item = (Hashed<'a>, Pending<'a>)>,
    decode: &DecodeOptions,
) -> Result<Vec<Entry>, usize> {
    let mut entries = Vec::with_capacity(live.size_hint().0);
    for (key, pending) in live {
        let Some(value) = pending.value else { continue };
        let value = bonjson::decode_with(value, &for_value(decode, value.len())).ok();
        match (std::str::from_utf8(key.key.as_bytes()), value) {
            // A NUL no write accepts: a forged key, which `remove` could never take back.
            (Ok(key), Some(value)) if !key.contains('\0') => {
                entries.push((key.into(), std::sync::Arc::new(value)))
            }
            _ => return Err(pending.offset),
        }
    }
    Ok(entries)
}

/// What a scan of the records found: the last operation on every key, still pointing into
/// the journal's bytes.
struct Scanned<'a> {
    live: KeyTable<'a>,
    end: usize,
    stop: FrameRead,
    committed: bool,
    /// Whether a clear was among the records (for a part after the first: the parts before
    /// it are gone).
    cleared: bool,
}

/// Operations a scan reads ahead before applying them: enough for the table slots their keys
/// probe to arrive from memory meanwhile, few enough that those slots are still cached.
const READ_AHEAD: usize = 16;

/// One operation of a record, parsed and hashed, waiting to be applied to the table.
enum Parsed<'a> {
    Put(Hashed<'a>, Pending<'a>),
    Clear,
}

/// One worker's table, and the operations parsed but not yet applied to it.
struct Part<'a> {
    live: KeyTable<'a>,
    ahead: Vec<Parsed<'a>>,
    /// Deletions are kept as entries (a part after the first must override the earlier part's
    /// keys with them); a part from the first record drops deleted keys.
    keep_deletions: bool,
    cleared: bool,
}

impl<'a> Part<'a> {
    /// Queues `op`, asking for the slot its key probes first; applies the queue once it holds
    /// a run (also in the middle of a large batch, so its operations are never all buffered).
    fn push(&mut self, op: Parsed<'a>) {
        if let Parsed::Put(key, _) = &op {
            self.live.prefetch(key.hash);
        }
        self.ahead.push(op);
        if self.ahead.len() >= 2 * READ_AHEAD {
            self.apply();
        }
    }

    fn apply(&mut self) {
        for op in self.ahead.drain(..) {
            match op {
                Parsed::Put(key, pending) if pending.value.is_none() && !self.keep_deletions => {
                    self.live.remove(&key)
                }
                Parsed::Put(key, pending) => self.live.insert(key, pending),
                Parsed::Clear => {
                    self.live.clear();
                    self.cleared = true;
                }
            }
        }
    }
}

/// Reads the records of `generation` starting at `from` (a record start), while they start
/// below `limit`, and resolves each key's last operation. A scan from the first record drops
/// deleted keys; one from further on keeps deletions as such. `expected_keys` sizes the table
/// (a hint). `Err` holds the start of the first malformed record.
fn scan<'a>(
    bytes: &'a [u8],
    from: usize,
    limit: usize,
    generation: u64,
    decode: &DecodeOptions,
    keys: Keys<'_>,
    expected_keys: usize,
) -> Result<Scanned<'a>, usize> {
    // Keys arrive hashed (by a randomly seeded fast hasher: these tables only live during
    // open or one compaction, and SipHash was a fifth of the replay's instructions).
    let mut part = Part {
        live: KeyTable::with_capacity(expected_keys),
        ahead: Vec::with_capacity(2 * READ_AHEAD),
        keep_deletions: from > HEADER_SIZE,
        cleared: false,
    };
    let mut pos = from;
    let mut committed = false;
    let frames = format::Frames::new(generation);
    let stop = loop {
        // Parse a run of records, asking for the slots of their keys, then apply them.
        let mut stop = None;
        while part.ahead.len() < READ_AHEAD {
            if pos >= limit {
                stop = Some(if limit < bytes.len() {
                    FrameRead::Torn
                } else {
                    FrameRead::Zero
                });
                break;
            }
            let rest = bytes.get(pos..).unwrap_or_default();
            match frames.read(rest) {
                FrameRead::Record { len } => {
                    let body = rest.get(FRAME_SIZE..FRAME_SIZE + len).unwrap_or_default();
                    parse(body, pos, keys, decode, &mut part).ok_or(pos)?;
                    committed |= format::decode_commit(body) == Some(generation);
                    pos += FRAME_SIZE + len;
                }
                other => {
                    stop = Some(other);
                    break;
                }
            }
        }
        part.apply();
        if let Some(stop) = stop {
            break stop;
        }
    };
    Ok(Scanned {
        live: part.live,
        end: pos,
        stop,
        committed,
        cleared: part.cleared,
    })
}

/// One live key of a journal as compaction copies it: raw key and encoded value bytes.
#[derive(Clone, Copy)]
pub(crate) struct LiveRecord<'a> {
    key: Key<'a>,
    value: &'a [u8],
    offset: usize,
}

impl LiveRecord<'_> {
    /// The key's bytes (valid UTF-8 when the record was written by this crate).
    pub(crate) fn key(&self) -> &[u8] {
        self.key.as_bytes()
    }

    /// The value's BONJSON bytes, exactly as the journal holds them.
    pub(crate) fn value(&self) -> &[u8] {
        self.value
    }
}

/// The live keys of `bytes`, a journal of `generation` whose records end exactly at
/// `bytes.len()`, in the order of the records that last wrote them. This is what compaction
/// writes into the next generation: the journal's records are the map, so a compaction can copy
/// them without touching the published map (and without keeping any version of it alive while
/// writers go on). `None` if the records do not run exactly to the end or one is malformed:
/// the caller then compacts from the map instead. `expected_keys` (a hint: the live key count
/// the caller knows of, memory the map already holds) sizes the table that resolves the
/// keys, so that it need not grow as it fills, also after a clear record.
pub(crate) fn live_records<'a>(
    bytes: &'a [u8],
    generation: u64,
    decode: &DecodeOptions,
    expected_keys: usize,
) -> Option<Vec<LiveRecord<'a>>> {
    let hasher = foldhash::fast::RandomState::default();
    let keys = Keys { hasher: &hasher };
    let scanned = scan(
        bytes,
        HEADER_SIZE,
        bytes.len(),
        generation,
        decode,
        keys,
        expected_keys,
    )
    .ok()?;
    if scanned.end != bytes.len() {
        return None;
    }
    let entries = scanned.live.into_entries();
    let mut records = Vec::with_capacity(entries.size_hint().0);
    records.extend(entries.filter_map(|(key, pending)| {
        Some(LiveRecord {
            key: key.key,
            value: pending.value?,
            offset: pending.offset,
        })
    }));
    // Record order: the copy then reads the old journal front to back. Sorting (offset,
    // index) pairs moves a third of the bytes sorting the records would.
    let mut order: Vec<(usize, usize)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.offset, i))
        .collect();
    order.sort_unstable_by_key(|&(offset, _)| offset);
    let mut sorted = Vec::with_capacity(records.len());
    sorted.extend(order.iter().filter_map(|&(_, i)| records.get(i).copied()));
    Some(sorted)
}

/// Parses one record body into `out` (nothing for a commit marker); `None` if it is
/// malformed.
fn parse<'a>(
    body: &'a [u8],
    offset: usize,
    keys: Keys<'_>,
    decode: &DecodeOptions,
    out: &mut Part<'a>,
) -> Option<()> {
    let put = |key, value| {
        let pending = Pending { value, offset };
        Parsed::Put(keys.hashed(key), pending)
    };
    let (&code, rest) = body.split_first()?;
    match code {
        OP_PUT => {
            let (key, value) = key_and_rest(rest)?;
            out.push(put(key, Some(value)));
        }
        OP_DELETE => {
            let (key, rest) = key_and_rest(rest)?;
            if !rest.is_empty() {
                return None;
            }
            out.push(put(key, None));
        }
        OP_CLEAR if rest.is_empty() => out.push(Parsed::Clear),
        // Exactly a generation after the code, as `format::encode_commit` writes it.
        OP_COMMIT => {
            format::decode_commit(body)?;
        }
        OP_BATCH => {
            let (count, mut rest) = varint(rest)?;
            if count > body.len() as u64 {
                return None;
            }
            for _ in 0..count {
                let (&code, after) = rest.split_first()?;
                let (key, after) = key_and_rest(after)?;
                match code {
                    OP_PUT => {
                        // Only where the value ends is needed here: a surviving value is
                        // decoded in full at the end, as a single put's is. Its structure is
                        // walked without building it; what the walk does not cover is decoded.
                        let max_depth = decode.limits.depth();
                        let used = match bonjson::value_extent(after, max_depth) {
                            Some(used) => used,
                            None => {
                                let options = for_value(decode, after.len());
                                bonjson::decode_prefix(after, &options).ok()?.1
                            }
                        };
                        out.push(put(key, Some(after.get(..used)?)));
                        rest = after.get(used..)?;
                    }
                    OP_DELETE => {
                        out.push(put(key, None));
                        rest = after;
                    }
                    _ => return None,
                }
            }
            if !rest.is_empty() {
                return None;
            }
        }
        _ => return None,
    }
    Some(())
}

/// The options a journal value of `len` bytes is decoded with: `decode`'s, with object keys
/// checked as stored (see `DecodeOptions::keys_as_stored`), allowing at most one node per
/// byte. Every node this crate's encoder writes takes at least a byte (it writes
/// neither records nor typed arrays), so only a value it did not write can claim more: a few
/// kilobytes of record instances or typed arrays can expand to gigabytes, and a journal holding
/// many of them would exhaust memory at open. Such a value is malformed, like any other.
fn for_value(decode: &DecodeOptions, len: usize) -> DecodeOptions {
    let mut options = *decode;
    // The journal's own values: their keys were checked when they were written.
    options.keys_as_stored = true;
    let limit = options.limits.max_total_nodes;
    options.limits.max_total_nodes = if limit == 0 { len } else { limit.min(len) }.max(1);
    options
}

fn key_and_rest(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = varint(bytes)?;
    let len = usize::try_from(len).ok()?;
    if len == 0 || len > MAX_KEY_LEN {
        return None;
    }
    Some((rest.get(..len)?, rest.get(len..)?))
}

/// A LEB128 varint in its shortest form, as `format` writes it: a last byte of 0 after
/// others (a longer spelling of a smaller number) or bits past the 64th make it malformed, so
/// every number has one spelling and a forged one is refused like any malformed record.
fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (value, len) = crate::leb128::read(bytes).ok()?;
    Some((value, bytes.get(len..)?))
}

#[cfg(test)]
mod tests;
