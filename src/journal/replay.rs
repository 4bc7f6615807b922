//! Replaying a journal into the live map, fast.
//!
//! A journal holds many overwrites of the same keys, so replay first resolves the last
//! operation for every key while pointing into the file's bytes (no allocation per record),
//! and decodes only the values that survive. A record whose checksum holds but whose body is
//! malformed (a bug or a forged file) ends the replay at that record, as damage does.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};

use super::format::{
    self, FRAME_SIZE, FrameRead, HEADER_SIZE, MAX_KEY_LEN, OP_BATCH, OP_CLEAR, OP_COMMIT,
    OP_DELETE, OP_PUT,
};
use crate::Value;
use crate::bonjson::{self, DecodeOptions};

/// The result of a replay.
pub(crate) struct Replayed {
    /// The live entries, keys already in the type the map holds (`Arc<str>`).
    pub(crate) entries: Vec<(std::sync::Arc<str>, Value)>,
    /// End of the last record applied.
    pub(crate) end: usize,
    /// Why the replay stopped (`Torn` also for a malformed record).
    pub(crate) stop: FrameRead,
    /// Whether the generation's commit marker was among the records applied. Every committed
    /// journal has one after its snapshot; without it, the snapshot itself is damaged.
    pub(crate) committed: bool,
}

/// The last put seen for a key: its encoded value (decoded only if it survives) and the start
/// of the record it came from.
#[derive(Clone, Copy)]
struct Pending<'a> {
    value: &'a [u8],
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

/// A key with its hash, computed once per operation and used both to pick the worker and by
/// that worker's table.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Hashed<'a> {
    hash: u64,
    key: Key<'a>,
}

impl std::hash::Hash for Hashed<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Hands a [`Hashed`] key's hash to the table unchanged.
#[derive(Default)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is ever called; fold anything else in rather than drop it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

type Table<'a> = HashMap<Hashed<'a>, Pending<'a>, BuildHasherDefault<PassThrough>>;

/// Journals at least this large replay on two threads (below it, starting a thread costs
/// more than it saves).
const PARALLEL_FROM: usize = 4 << 20;

/// Which keys one replay worker applies: those whose hash (randomly seeded per replay, shared
/// by the workers) falls in its share. The share is taken from bits 24 to 55 of the hash, which
/// the tables use neither for the bucket (low bits) nor for the tag (top seven bits).
#[derive(Clone, Copy)]
struct Share<'h> {
    hasher: &'h foldhash::fast::RandomState,
    index: u64,
    count: u64,
}

impl<'h> Share<'h> {
    /// `key` with its hash if it is this worker's.
    fn take<'a>(&self, key: &'a [u8]) -> Option<Hashed<'a>> {
        let hash = self.hasher.hash_one(key);
        let share = ((hash >> 24) & 0xffff_ffff).wrapping_mul(self.count) >> 32;
        (share == self.index).then(|| Hashed {
            hash,
            key: Key::new(key),
        })
    }
}

/// Replays the records of `generation` in `bytes` (a whole journal file).
pub(crate) fn replay(bytes: &[u8], generation: u64, decode: &DecodeOptions) -> Replayed {
    let workers = if cfg!(loom) || bytes.len() < PARALLEL_FROM {
        1
    } else {
        2
    };
    replay_on(bytes, generation, decode, workers)
}

/// [`replay`] with `workers` threads. Every worker reads and checks every record (so all agree
/// on where the replay stops and on which record is malformed) but keeps only its share of the
/// keys: the hash-table work, which misses the cache on nearly every record, is what divides.
fn replay_on(bytes: &[u8], generation: u64, decode: &DecodeOptions, workers: u64) -> Replayed {
    let hasher = foldhash::fast::RandomState::default();
    let count = workers.max(1);
    let share = |index| Share {
        hasher: &hasher,
        index,
        count,
    };
    let mut limit = bytes.len();
    loop {
        let run = |share| attempt(bytes, limit, generation, decode, share);
        let outcomes: Vec<Result<Replayed, usize>> = if count == 1 {
            vec![run(share(0))]
        } else {
            std::thread::scope(|scope| {
                // A worker thread that cannot be started (the system is out of threads) is
                // replaced by doing its share here afterwards: slower, never a failed open.
                let others: Vec<_> = (1..count)
                    .map(|index| {
                        let mine = share(index);
                        std::thread::Builder::new()
                            .name("rkv-replay".into())
                            .spawn_scoped(scope, move || run(mine))
                            .map_err(|_| mine)
                    })
                    .collect();
                let mut outcomes = vec![run(share(0))];
                for other in others {
                    match other {
                        Ok(thread) => match thread.join() {
                            Ok(outcome) => outcomes.push(outcome),
                            // Replay has no panicking paths; if one did panic, the open fails
                            // as it would on one thread.
                            Err(panic) => std::panic::resume_unwind(panic),
                        },
                        Err(mine) => outcomes.push(run(mine)),
                    }
                }
                outcomes
            })
        };
        match merge(outcomes) {
            Ok(replayed) => return replayed,
            // A malformed record: replay again, stopping before it. (`bad` is always a record
            // start below `limit`; the `min` only guarantees progress.)
            Err(bad) => limit = bad.min(limit.saturating_sub(1)),
        }
    }
}

/// One replay from the workers' parts: their entries together; where it stopped is the same
/// in every part. The earliest malformed record any worker found wins.
fn merge(outcomes: Vec<Result<Replayed, usize>>) -> Result<Replayed, usize> {
    let mut merged: Option<Replayed> = None;
    let mut bad: Option<usize> = None;
    for outcome in outcomes {
        match outcome {
            Err(at) => bad = Some(bad.map_or(at, |b| b.min(at))),
            Ok(part) => match &mut merged {
                None => merged = Some(part),
                Some(all) => all.entries.extend(part.entries),
            },
        }
    }
    match (bad, merged) {
        (Some(at), _) => Err(at),
        (None, Some(all)) => Ok(all),
        (None, None) => Err(HEADER_SIZE),
    }
}

fn attempt(
    bytes: &[u8],
    limit: usize,
    generation: u64,
    decode: &DecodeOptions,
    share: Share<'_>,
) -> Result<Replayed, usize> {
    let scanned = scan(bytes, limit, generation, decode, share)?;
    let mut entries = Vec::with_capacity(scanned.live.len());
    for (key, pending) in scanned.live {
        let value = bonjson::decode_with(pending.value, decode).ok();
        match (std::str::from_utf8(key.key.as_bytes()), value) {
            (Ok(key), Some(value)) => entries.push((key.into(), value)),
            _ => return Err(pending.offset),
        }
    }
    Ok(Replayed {
        entries,
        end: scanned.end,
        stop: scanned.stop,
        committed: scanned.committed,
    })
}

/// What a scan of the records found: the last put of every live key (of the worker's share),
/// still pointing into the journal's bytes.
struct Scanned<'a> {
    live: Table<'a>,
    end: usize,
    stop: FrameRead,
    committed: bool,
}

/// Reads the records of `generation` from `HEADER_SIZE` up to `limit` and resolves each key's
/// last operation. `Err` holds the start of the first malformed record.
fn scan<'a>(
    bytes: &'a [u8],
    limit: usize,
    generation: u64,
    decode: &DecodeOptions,
    share: Share<'_>,
) -> Result<Scanned<'a>, usize> {
    // Keys arrive hashed (by a randomly seeded fast hasher: these tables only live during
    // open or one compaction, and SipHash was a fifth of the replay's instructions).
    let mut live: Table<'_> = HashMap::default();
    let mut pos = HEADER_SIZE;
    let mut committed = false;
    let frames = format::Frames::new(generation);
    let stop = loop {
        if pos >= limit {
            break if limit < bytes.len() {
                FrameRead::Torn
            } else {
                FrameRead::Zero
            };
        }
        let rest = bytes.get(pos..).unwrap_or_default();
        match frames.read(rest) {
            FrameRead::Record { len } => {
                let body = rest.get(FRAME_SIZE..FRAME_SIZE + len).unwrap_or_default();
                apply(body, pos, share, &mut live, decode).ok_or(pos)?;
                committed |= format::decode_commit(body) == Some(generation);
                pos += FRAME_SIZE + len;
            }
            other => break other,
        }
    };
    Ok(Scanned {
        live,
        end: pos,
        stop,
        committed,
    })
}

/// One live key of a journal as compaction copies it: raw key and encoded value bytes.
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
/// the caller then compacts from the map instead.
pub(crate) fn live_records<'a>(
    bytes: &'a [u8],
    generation: u64,
    decode: &DecodeOptions,
) -> Option<Vec<LiveRecord<'a>>> {
    let hasher = foldhash::fast::RandomState::default();
    let only = Share {
        hasher: &hasher,
        index: 0,
        count: 1,
    };
    let scanned = scan(bytes, bytes.len(), generation, decode, only).ok()?;
    if scanned.end != bytes.len() {
        return None;
    }
    let mut records: Vec<LiveRecord<'a>> = scanned
        .live
        .into_iter()
        .map(|(key, pending)| LiveRecord {
            key: key.key,
            value: pending.value,
            offset: pending.offset,
        })
        .collect();
    // Record order: the copy then reads the old journal front to back.
    records.sort_unstable_by_key(|r| r.offset);
    Some(records)
}

/// Applies one record body; `None` if it is malformed.
fn apply<'a>(
    body: &'a [u8],
    offset: usize,
    share: Share<'_>,
    live: &mut Table<'a>,
    decode: &DecodeOptions,
) -> Option<()> {
    let (&code, rest) = body.split_first()?;
    match code {
        OP_PUT => {
            let (key, value) = key_and_rest(rest)?;
            if let Some(key) = share.take(key) {
                live.insert(key, Pending { value, offset });
            }
        }
        OP_DELETE => {
            let (key, rest) = key_and_rest(rest)?;
            if !rest.is_empty() {
                return None;
            }
            if let Some(key) = share.take(key) {
                live.remove(&key);
            }
        }
        OP_CLEAR if rest.is_empty() => {
            live.clear();
        }
        OP_COMMIT => {}
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
                        // Decoded here only to find where the value ends (and that it is
                        // well formed); a surviving value is decoded again at the end.
                        let (_, used) = bonjson::decode_prefix(after, decode).ok()?;
                        if let Some(key) = share.take(key) {
                            let value = after.get(..used)?;
                            live.insert(key, Pending { value, offset });
                        }
                        rest = after.get(used..)?;
                    }
                    OP_DELETE => {
                        if let Some(key) = share.take(key) {
                            live.remove(&key);
                        }
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

fn key_and_rest(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = varint(bytes)?;
    let len = usize::try_from(len).ok()?;
    if len == 0 || len > MAX_KEY_LEN {
        return None;
    }
    Some((rest.get(..len)?, rest.get(len..)?))
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0_u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((value, bytes.get(i + 1..)?));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bonjson::Limits;
    use crate::journal::format::Op;
    use crate::testing::Rng;

    const GENERATION: u64 = 7;

    /// A journal of `GENERATION`: a header page, then records of random puts, deletes,
    /// batches, clears and one commit marker, then zeros.
    fn journal(rng: &mut Rng, records: usize) -> Vec<u8> {
        let seed = format::crc_seed(GENERATION);
        let mut bytes = vec![0_u8; HEADER_SIZE];
        let mut body = Vec::new();
        let key = |rng: &mut Rng| format!("k{}", rng.below(300));
        for i in 0..records {
            body.clear();
            let ops = match rng.below(40) {
                0 => vec![Op::Clear],
                1..=4 => (0..1 + rng.below(4))
                    .map(|_| match rng.below(3) {
                        0 => Op::Delete(key(rng)),
                        _ => Op::Put(key(rng), Value::Integer(rng.below(1000) as i64)),
                    })
                    .collect(),
                5..=9 => vec![Op::Delete(key(rng))],
                _ => vec![Op::Put(key(rng), Value::from(format!("v{i}")))],
            };
            if i == records / 3 {
                body.extend_from_slice(&format::encode_commit(GENERATION));
            } else {
                format::encode_body(&ops, &Limits::default(), &mut body).unwrap();
            }
            bytes.extend_from_slice(&format::frame_seeded(GENERATION, seed, &body));
            bytes.extend_from_slice(&body);
        }
        bytes.resize(bytes.len() + 4096, 0);
        bytes
    }

    fn outcome(replayed: Replayed) -> (Vec<(String, Value)>, usize, FrameRead, bool) {
        let mut entries: Vec<(String, Value)> = replayed
            .entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        (entries, replayed.end, replayed.stop, replayed.committed)
    }

    /// Two and three workers replay exactly what one does, on intact journals and on journals
    /// with flipped bits, truncations and forged (checksum-valid but malformed) records.
    #[test]
    fn parallel_replay_equals_sequential_replay() {
        let mut rng = Rng::new(42);
        let decode = DecodeOptions::default();
        for case in 0..300 {
            let records = 200 + rng.index(400);
            let mut bytes = journal(&mut rng, records);
            match case % 3 {
                0 => {}
                1 => {
                    let at = HEADER_SIZE + rng.index(bytes.len() - HEADER_SIZE);
                    bytes[at] ^= 1 << rng.below(8);
                }
                _ => {
                    let at = HEADER_SIZE + rng.index(bytes.len() - HEADER_SIZE);
                    bytes.truncate(at);
                }
            }
            let one = outcome(replay_on(&bytes, GENERATION, &decode, 1));
            for workers in [2, 3] {
                let many = outcome(replay_on(&bytes, GENERATION, &decode, workers));
                assert_eq!(many, one, "case {case}, {workers} workers");
            }
        }
        // A record whose checksum holds but whose body is malformed ends the replay there.
        let mut bytes = journal(&mut rng, 300);
        let seed = format::crc_seed(GENERATION);
        let end = HEADER_SIZE + bytes[HEADER_SIZE..].len() - 4096;
        let forged = [OP_PUT, 0xff];
        bytes.truncate(end);
        bytes.extend_from_slice(&format::frame_seeded(GENERATION, seed, &forged));
        bytes.extend_from_slice(&forged);
        bytes.extend_from_slice(&journal(&mut rng, 50)[HEADER_SIZE..]);
        let one = outcome(replay_on(&bytes, GENERATION, &decode, 1));
        assert_eq!(one.1, end);
        assert_eq!(outcome(replay_on(&bytes, GENERATION, &decode, 2)), one);
    }

    /// What compaction copies out of a journal is exactly what opening it replays, record for
    /// record in the journal's order; a journal whose records stop short of its end is refused.
    #[test]
    fn live_records_are_what_replay_finds() {
        let mut rng = Rng::new(9);
        let decode = DecodeOptions::default();
        for case in 0..200 {
            let records = 50 + rng.index(400);
            let bytes = journal(&mut rng, records);
            let (replayed, end, ..) = outcome(replay_on(&bytes, GENERATION, &decode, 1));
            let records = live_records(&bytes[..end], GENERATION, &decode).expect("intact");
            assert!(records.windows(2).all(|w| w[0].offset <= w[1].offset));
            let mut copied = Vec::new();
            for record in &records {
                let key = String::from_utf8(record.key().to_vec()).unwrap();
                let value = bonjson::decode_with(record.value(), &decode).unwrap();
                // The body compaction writes equals encoding the value afresh.
                let (mut raw, mut fresh) = (Vec::new(), Vec::new());
                format::encode_put_raw(record.key(), record.value(), &mut raw);
                format::encode_put(&key, &value, &Limits::default(), &mut fresh).unwrap();
                assert_eq!(raw, fresh, "case {case}");
                let lengths = (record.key().len(), record.value().len());
                assert_eq!(format::put_raw_len(lengths.0, lengths.1), raw.len());
                copied.push((key, value));
            }
            copied.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(copied, replayed, "case {case}");
            assert!(live_records(&bytes[..end - 1], GENERATION, &decode).is_none());
            assert!(live_records(&bytes[..end + 8], GENERATION, &decode).is_none());
        }
    }
}
