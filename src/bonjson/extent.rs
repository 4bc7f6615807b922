//! Where an encoded value ends, without decoding it.
//!
//! Replay reads the puts inside batch records (compaction writes the live keys as batches) and
//! must know where each value ends; it decodes only the values that survive, at the end. Fully
//! decoding every value just to find its end (building and freeing its strings) cost an open
//! most of what the batches saved. This walks the structure instead, checking nothing about
//! the contents (UTF-8, float finiteness, number ranges, key uniqueness): the surviving values
//! are decoded in full later, like a single put's, whose value simply runs to the end of its
//! record.

use super::code;

const ARRAY: u8 = 0;
const OBJECT_KEY: u8 = 1;
const OBJECT_VALUE: u8 = 2;

/// The length of the value at the start of `bytes`, for every value the decoder accepts;
/// `None` for what it does not walk (record instances and typed arrays, which this crate's
/// encoder never writes), for nesting deeper than `max_depth`, and for a structure cut short.
/// The caller then decodes instead.
pub(crate) fn value_extent(bytes: &[u8], max_depth: usize) -> Option<usize> {
    let mut pos = 0;
    // The open containers, innermost last (empty until the first one opens: no allocation
    // for a scalar).
    let mut open: Vec<u8> = Vec::new();
    loop {
        let type_code = *bytes.get(pos)?;
        match open.last_mut() {
            Some(state) if type_code == code::END && *state != OBJECT_VALUE => {
                pos += 1;
                open.pop();
            }
            Some(state) if *state == OBJECT_KEY => {
                pos = string_end(bytes, pos)?;
                *state = OBJECT_VALUE;
                continue;
            }
            state => {
                if let Some(state) = state
                    && *state == OBJECT_VALUE
                {
                    *state = OBJECT_KEY;
                }
                match type_code {
                    code::ARRAY | code::OBJECT => {
                        if open.len() + 1 >= max_depth {
                            return None;
                        }
                        open.push(if type_code == code::ARRAY {
                            ARRAY
                        } else {
                            OBJECT_KEY
                        });
                        pos += 1;
                        continue;
                    }
                    _ => pos = scalar_end(bytes, pos)?,
                }
            }
        }
        if open.is_empty() {
            return Some(pos);
        }
    }
}

/// Where the string at `pos` ends (a key must be one).
fn string_end(bytes: &[u8], pos: usize) -> Option<usize> {
    match *bytes.get(pos)? {
        code::SHORT_STRING..=code::SHORT_STRING_LAST | code::LONG_STRING => scalar_end(bytes, pos),
        _ => None,
    }
}

/// Where the value at `pos`, which is not a container, ends.
fn scalar_end(bytes: &[u8], pos: usize) -> Option<usize> {
    let type_code = *bytes.get(pos)?;
    let len = match type_code {
        0..=code::SMALL_INT_MAX | code::NULL | code::FALSE | code::TRUE => 1,
        code::SHORT_STRING..=code::SHORT_STRING_LAST => {
            1 + usize::from(type_code - code::SHORT_STRING)
        }
        code::LONG_STRING => {
            let rest = bytes.get(pos + 1..)?;
            2 + memchr::memchr(code::LONG_STRING, rest)?
        }
        code::UINT8 | code::SINT8 => 2,
        code::UINT16 | code::SINT16 => 3,
        code::UINT32 | code::SINT32 | code::FLOAT32 => 5,
        code::UINT64 | code::SINT64 | code::FLOAT64 => 9,
        code::BIG_NUMBER => {
            let mut at = pos + 1;
            let _exponent = leb128(bytes, &mut at)?;
            let signed_len = leb128(bytes, &mut at)?;
            // Zigzag: the length is the magnitude of the signed value, which for a negative
            // number (an odd encoding, 2L - 1) is one more than half of it.
            let len = usize::try_from((signed_len >> 1) + (signed_len & 1)).ok()?;
            at.checked_add(len)? - pos
        }
        _ => return None,
    };
    let end = pos.checked_add(len)?;
    (end <= bytes.len()).then_some(end)
}

/// A LEB128 in its shortest form, as the decoder accepts it (`None` for anything else: the
/// caller then asks the decoder, which names the error).
fn leb128(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let (value, len) = crate::leb128::read(bytes.get(*at..)?).ok()?;
    *at += len;
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;
    use crate::bonjson::{BigNumber, DecodeOptions, decode_prefix, encode};
    use crate::testing::Rng;

    fn pick(rng: &mut Rng, n: usize) -> usize {
        rng.below(n as u64) as usize
    }

    fn random_value(rng: &mut Rng, depth: usize) -> Value {
        match pick(rng, if depth > 4 { 9 } else { 11 }) {
            0 => Value::Null,
            1 => Value::Boolean(pick(rng, 2) == 0),
            2 => Value::Integer(pick(rng, 300) as i64 - 150),
            3 => Value::Integer(
                (rng.next_u64() >> pick(rng, 64)) as i64 * if pick(rng, 2) == 0 { -1 } else { 1 },
            ),
            4 => Value::from(rng.next_u64() >> pick(rng, 64)),
            5 => Value::Float(f64::from_bits(rng.next_u64() >> 2)),
            6 => Value::from("é".repeat(pick(rng, 50))),
            7 => Value::from("x".repeat(pick(rng, 200))),
            8 => {
                let sign = if pick(rng, 2) == 0 { "-" } else { "" };
                let digits = format!("{}{}", rng.next_u64(), rng.next_u64() >> pick(rng, 64));
                let text = format!("{sign}{digits}e{}", pick(rng, 40) as i64 - 20);
                Value::BigNumber(BigNumber::parse(&text).unwrap())
            }
            9 => Value::Array(
                (0..pick(rng, 6))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..pick(rng, 6))
                    .map(|i| {
                        (
                            format!("k{i}{}", "y".repeat(pick(rng, 80))),
                            random_value(rng, depth + 1),
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// The extent equals the length the decoder consumes, for thousands of random values of
    /// every kind this crate writes, followed by other bytes.
    #[test]
    fn the_extent_is_what_the_decoder_reads() {
        let mut rng = Rng::from_state(42);
        for _ in 0..5_000 {
            let value = random_value(&mut rng, 0);
            if matches!(&value, Value::Float(f) if !f.is_finite()) {
                continue;
            }
            let mut bytes = encode(&value).unwrap();
            let len = bytes.len();
            bytes.extend_from_slice(&[0x01, code::END, 0xff]);
            let (_, used) = decode_prefix(&bytes, &DecodeOptions::default()).unwrap();
            assert_eq!(used, len);
            assert_eq!(value_extent(&bytes, 512), Some(len), "{value:?}");
            // Cut short anywhere: never past the end.
            let cut = pick(&mut rng, len);
            assert!(value_extent(&bytes[..cut], 512).is_none_or(|e| e <= cut));
        }
    }

    /// Negative big numbers, whose zigzag length is odd: the extent once stopped a byte short
    /// (a batch holding `-5` as a big number misparsed at open).
    #[test]
    fn negative_big_numbers_are_walked_to_their_end() {
        for text in [
            "-5",
            "-1.50",
            "-123456789012345678901234567890",
            "5",
            "-1e300",
        ] {
            let value = Value::BigNumber(BigNumber::parse(text).unwrap());
            let bytes = encode(&value).unwrap();
            assert_eq!(value_extent(&bytes, 512), Some(bytes.len()), "{text}");
        }
    }

    /// Deeper than allowed, or not walked: `None`, for the caller to decode.
    #[test]
    fn deep_or_unknown_values_are_left_to_the_decoder() {
        let deep = [code::ARRAY; 10]
            .iter()
            .copied()
            .chain([code::END; 10])
            .collect::<Vec<_>>();
        assert_eq!(value_extent(&deep, 20), Some(20));
        assert_eq!(value_extent(&deep, 5), None);
        assert_eq!(value_extent(&[code::RECORD, 0], 10), None);
        assert_eq!(value_extent(&[code::TYPED_UINT8, 1, 5], 10), None);
        assert_eq!(
            value_extent(&[code::OBJECT, 0x01, 0x01, code::END], 10),
            None
        );
    }
}
