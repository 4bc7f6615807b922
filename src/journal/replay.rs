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
    /// The live entries.
    pub(crate) entries: Vec<(String, Value)>,
    /// End of the last record applied.
    pub(crate) end: usize,
    /// Why the replay stopped (`Torn` also for a malformed record).
    pub(crate) stop: FrameRead,
}

enum Pending<'a> {
    Raw(&'a [u8], usize),
    Decoded(Value),
}

/// Replays the records of `generation` in `bytes` (a whole journal file).
pub(crate) fn replay(bytes: &[u8], generation: u64, decode: &DecodeOptions) -> Replayed {
    let mut limit = bytes.len();
    loop {
        match attempt(bytes, limit, generation, decode) {
            Ok(replayed) => return replayed,
            // A malformed record: replay again, stopping before it.
            Err(bad) => limit = bad,
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
    let mut live: HashMap<&[u8], Pending<'_>, foldhash::fast::RandomState> = HashMap::default();
    let mut pos = HEADER_SIZE;
    let stop = loop {
        if pos >= limit {
            break if limit < bytes.len() {
                FrameRead::Torn
            } else {
                FrameRead::Zero
            };
        }
        let rest = bytes.get(pos..).unwrap_or_default();
        match format::read_frame(rest, generation) {
            FrameRead::Record { len } => {
                let body = rest.get(FRAME_SIZE..FRAME_SIZE + len).unwrap_or_default();
                apply(body, pos, &mut live, decode).ok_or(pos)?;
                pos += FRAME_SIZE + len;
            }
            other => break other,
        }
    };
    let mut entries = Vec::with_capacity(live.len());
    for (key, pending) in live {
        let (value, offset) = match pending {
            Pending::Raw(raw, offset) => (bonjson::decode_with(raw, decode).ok(), offset),
            Pending::Decoded(value) => (Some(value), pos),
        };
        match (std::str::from_utf8(key), value) {
            (Ok(key), Some(value)) => entries.push((key.to_owned(), value)),
            _ => return Err(offset),
        }
    }
    Ok(Replayed {
        entries,
        end: pos,
        stop,
    })
}

/// Applies one record body; `None` if it is malformed.
fn apply<'a>(
    body: &'a [u8],
    offset: usize,
    live: &mut HashMap<&'a [u8], Pending<'a>, foldhash::fast::RandomState>,
    decode: &DecodeOptions,
) -> Option<()> {
    let (&code, rest) = body.split_first()?;
    match code {
        OP_PUT => {
            let (key, value) = key_and_rest(rest)?;
            live.insert(key, Pending::Raw(value, offset));
        }
        OP_DELETE => {
            let (key, rest) = key_and_rest(rest)?;
            if !rest.is_empty() {
                return None;
            }
            live.remove(key);
        }
        OP_CLEAR if rest.is_empty() => live.clear(),
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
                        live.insert(key, Pending::Decoded(value));
                        rest = after.get(used..)?;
                    }
                    OP_DELETE => {
                        live.remove(key);
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
