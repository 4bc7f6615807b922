//! Replaying a journal into the live map, fast.
//!
//! A journal holds many overwrites of the same keys, so replay first resolves the last
//! operation for every key while pointing into the file's bytes (no allocation per record),
//! and decodes only the values that survive. A record whose checksum holds but whose body is
//! malformed (a bug or a forged file) ends the replay at that record, as damage does.

use std::collections::HashMap;

use super::format::{
    self, FRAME_SIZE, FrameRead, HEADER_SIZE, MAX_KEY_LEN, OP_BATCH, OP_CLEAR, OP_COMMIT,
    OP_DELETE, OP_PUT,
};
use crate::Value;
use crate::bonjson::{self, DecodeOptions};

/// The result of a replay.
pub(crate) struct Replayed {
    /// The live entries (keys shared-ready: the map holds them as `Arc<str>`).
    pub(crate) entries: Vec<(std::sync::Arc<str>, Value)>,
    /// End of the last record applied.
    pub(crate) end: usize,
    /// Why the replay stopped (`Torn` also for a malformed record).
    pub(crate) stop: FrameRead,
    /// Whether the generation's commit marker was among the records applied. Every committed
    /// journal has one after its snapshot; without it, the snapshot itself is damaged.
    pub(crate) committed: bool,
}

/// The last operation seen for a key that leaves it present.
enum Pending<'a> {
    /// A put's encoded value, decoded only if it survives, and the record it came from.
    Raw(&'a [u8], usize),
    /// A value a batch decoded already (index into the side vector).
    Decoded(usize, usize),
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

impl std::hash::Hash for Key<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key<'_> {}

type Table<'a> = HashMap<Key<'a>, Pending<'a>, foldhash::fast::RandomState>;

/// Replays the records of `generation` in `bytes` (a whole journal file).
pub(crate) fn replay(bytes: &[u8], generation: u64, decode: &DecodeOptions) -> Replayed {
    let mut limit = bytes.len();
    loop {
        match attempt(bytes, limit, generation, decode) {
            Ok(replayed) => return replayed,
            // A malformed record: replay again, stopping before it. (`bad` is always a record
            // start below `limit`; the `min` only guarantees progress.)
            Err(bad) => limit = bad.min(limit.saturating_sub(1)),
        }
    }
}

fn attempt(
    bytes: &[u8],
    limit: usize,
    generation: u64,
    decode: &DecodeOptions,
) -> Result<Replayed, usize> {
    // A randomly seeded fast hasher: this map only lives during open, and SipHash was a fifth
    // of the replay's instructions (the wall time is dominated by cache misses regardless).
    let mut live: Table<'_> = HashMap::default();
    let mut decoded: Vec<Value> = Vec::new();
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
                apply(body, pos, &mut live, &mut decoded, decode).ok_or(pos)?;
                committed |= format::decode_commit(body) == Some(generation);
                pos += FRAME_SIZE + len;
            }
            other => break other,
        }
    };
    let mut entries = Vec::with_capacity(live.len());
    for (key, pending) in live {
        let (value, offset) = match pending {
            Pending::Raw(raw, offset) => (bonjson::decode_with(raw, decode).ok(), offset),
            Pending::Decoded(i, offset) => (decoded.get_mut(i).map(std::mem::take), offset),
        };
        match (std::str::from_utf8(key.as_bytes()), value) {
            (Ok(key), Some(value)) => entries.push((key.into(), value)),
            _ => return Err(offset),
        }
    }
    Ok(Replayed {
        entries,
        end: pos,
        stop,
        committed,
    })
}

/// Applies one record body; `None` if it is malformed.
fn apply<'a>(
    body: &'a [u8],
    offset: usize,
    live: &mut Table<'a>,
    decoded: &mut Vec<Value>,
    decode: &DecodeOptions,
) -> Option<()> {
    let (&code, rest) = body.split_first()?;
    match code {
        OP_PUT => {
            let (key, value) = key_and_rest(rest)?;
            live.insert(Key::new(key), Pending::Raw(value, offset));
        }
        OP_DELETE => {
            let (key, rest) = key_and_rest(rest)?;
            if !rest.is_empty() {
                return None;
            }
            live.remove(&Key::new(key));
        }
        OP_CLEAR if rest.is_empty() => {
            live.clear();
            decoded.clear();
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
                        let (value, used) = bonjson::decode_prefix(after, decode).ok()?;
                        decoded.push(value);
                        live.insert(Key::new(key), Pending::Decoded(decoded.len() - 1, offset));
                        rest = after.get(used..)?;
                    }
                    OP_DELETE => {
                        live.remove(&Key::new(key));
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
