//! The encoder: every [`Value`] in its smallest BONJSON form, checked against [`Limits`] so the
//! decoder will always read it back.

use super::keys::NfcKeys;
use super::{BigNumber, EncodeError, ErrorKind, Limits, bound, code};
use crate::Value;

/// Encodes `value` with the default [`Limits`].
pub fn encode(value: &Value) -> Result<Vec<u8>, EncodeError> {
    encode_with(value, &Limits::default())
}

/// Encodes `value`, refusing anything the decoder would refuse under `limits`.
pub fn encode_with(value: &Value, limits: &Limits) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(value, limits, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `value` to `out`. On error `out` is left as it was.
pub fn encode_into(value: &Value, limits: &Limits, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_checked_into(value, limits, true, out)
}

/// [`encode_into`] for a value read back from the store's own journal (compaction writing the
/// map): object keys are refused only when they repeat exactly, as replay reads them
/// (`DecodeOptions::keys_as_stored`).
pub(crate) fn encode_stored_into(
    value: &Value,
    limits: &Limits,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    encode_checked_into(value, limits, false, out)
}

fn encode_checked_into(
    value: &Value,
    limits: &Limits,
    normalized_keys: bool,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = Encoder {
        sink: &mut *out,
        limits,
        nodes_left: bound(limits.max_total_nodes),
        normalized_keys,
    }
    .document(value);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Encodes `value` into the front of `out` and returns the bytes written.
///
/// If `out` is too small the error says how many bytes are needed
/// ([`EncodeError::BufferTooSmall`]); the bytes of `out` are then unspecified.
pub fn encode_to_slice(
    value: &Value,
    limits: &Limits,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut sink = SliceSink { out, len: 0 };
    Encoder {
        sink: &mut sink,
        limits,
        nodes_left: bound(limits.max_total_nodes),
        normalized_keys: true,
    }
    .document(value)?;
    if sink.len > sink.out.len() {
        return Err(EncodeError::BufferTooSmall {
            needed: sink.len,
            available: sink.out.len(),
        });
    }
    Ok(sink.len)
}

/// The exact number of bytes [`encode_with`] would produce, after the same checks.
pub fn encoded_len(value: &Value, limits: &Limits) -> Result<usize, EncodeError> {
    let mut sink = CountSink(0);
    Encoder {
        sink: &mut sink,
        limits,
        nodes_left: bound(limits.max_total_nodes),
        normalized_keys: true,
    }
    .document(value)?;
    Ok(sink.0)
}

/// Where encoded bytes go.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn put_byte(&mut self, byte: u8);
    fn written(&self) -> usize;
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    #[inline]
    fn put_byte(&mut self, byte: u8) {
        self.push(byte);
    }
    fn written(&self) -> usize {
        self.len()
    }
}

/// Writes into a fixed slice; past its end it only counts, so the caller learns the size needed.
struct SliceSink<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl Sink for SliceSink<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if let Some(dst) = self.out.get_mut(self.len..end) {
            dst.copy_from_slice(bytes);
        }
        self.len = end;
    }
    #[inline]
    fn put_byte(&mut self, byte: u8) {
        if let Some(dst) = self.out.get_mut(self.len) {
            *dst = byte;
        }
        self.len += 1;
    }
    fn written(&self) -> usize {
        self.len
    }
}

struct CountSink(usize);

impl Sink for CountSink {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    fn put_byte(&mut self, _: u8) {
        self.0 += 1;
    }
    fn written(&self) -> usize {
        self.0
    }
}

struct Encoder<'a, S: Sink + ?Sized> {
    sink: &'a mut S,
    limits: &'a Limits,
    /// Values and keys still allowed, counted as the decoder counts them: a value the decoder
    /// would refuse for having too many must not be stored (it would be lost at reopen).
    nodes_left: usize,
    /// Refuse object keys that collide after NFC normalization (every public entry point).
    normalized_keys: bool,
}

fn refuse(kind: ErrorKind) -> EncodeError {
    EncodeError::Invalid(kind)
}

impl<S: Sink + ?Sized> Encoder<'_, S> {
    fn document(&mut self, value: &Value) -> Result<(), EncodeError> {
        let start = self.sink.written();
        self.value(value, 1)?;
        if self.sink.written() - start > bound(self.limits.max_document_size) {
            return Err(refuse(ErrorKind::MaxDocumentSizeExceeded));
        }
        Ok(())
    }

    fn charge(&mut self) -> Result<(), EncodeError> {
        self.nodes_left = self
            .nodes_left
            .checked_sub(1)
            .ok_or(refuse(ErrorKind::MaxTotalNodesExceeded))?;
        Ok(())
    }

    fn value(&mut self, value: &Value, depth: usize) -> Result<(), EncodeError> {
        if depth > self.limits.depth() {
            return Err(refuse(ErrorKind::MaxDepthExceeded));
        }
        self.charge()?;
        match value {
            Value::Null => self.sink.put_byte(code::NULL),
            Value::Boolean(false) => self.sink.put_byte(code::FALSE),
            Value::Boolean(true) => self.sink.put_byte(code::TRUE),
            Value::Integer(i) => self.signed(*i),
            Value::Unsigned(u) => match i64::try_from(*u) {
                Ok(i) => self.signed(i),
                Err(_) => {
                    self.sink.put_byte(code::UINT64);
                    self.sink.put(&u.to_le_bytes());
                }
            },
            Value::Float(f) => self.float(*f)?,
            Value::BigNumber(b) => self.big_number(b)?,
            Value::String(s) => self.string(s)?,
            Value::Array(items) => {
                if items.len() > bound(self.limits.max_container_size) {
                    return Err(refuse(ErrorKind::MaxContainerSizeExceeded));
                }
                self.sink.put_byte(code::ARRAY);
                for item in items {
                    self.value(item, depth + 1)?;
                }
                self.sink.put_byte(code::END);
            }
            Value::Object(map) => {
                if map.len() > bound(self.limits.max_container_size) {
                    return Err(refuse(ErrorKind::MaxContainerSizeExceeded));
                }
                self.sink.put_byte(code::OBJECT);
                let mut nfc = NfcKeys::default();
                for (key, item) in map {
                    if self.normalized_keys && !nfc.admit(key, map) {
                        return Err(refuse(ErrorKind::DuplicateKey));
                    }
                    self.charge()?;
                    self.string(key)?;
                    self.value(item, depth + 1)?;
                }
                self.sink.put_byte(code::END);
            }
        }
        Ok(())
    }

    /// Smallest form: small integer, else the narrower of signed and unsigned (signed on a tie).
    #[inline]
    fn signed(&mut self, i: i64) {
        if (0..=i64::from(code::SMALL_INT_MAX)).contains(&i) {
            self.sink.put_byte(i as u8);
            return;
        }
        let bytes = i.to_le_bytes();
        let signed_width = if i8::try_from(i).is_ok() {
            1
        } else if i16::try_from(i).is_ok() {
            2
        } else if i32::try_from(i).is_ok() {
            4
        } else {
            8
        };
        let unsigned_width = if i < 0 {
            usize::MAX
        } else if u8::try_from(i).is_ok() {
            1
        } else if u16::try_from(i).is_ok() {
            2
        } else if u32::try_from(i).is_ok() {
            4
        } else {
            8
        };
        let (type_code, width) = if unsigned_width < signed_width {
            (unsigned_code(unsigned_width), unsigned_width)
        } else {
            (signed_code(signed_width), signed_width)
        };
        self.sink.put_byte(type_code);
        self.sink.put(bytes.get(..width).unwrap_or(&bytes));
    }

    fn float(&mut self, f: f64) -> Result<(), EncodeError> {
        if !f.is_finite() {
            return Err(refuse(ErrorKind::InvalidData));
        }
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the round trip checks for loss"
        )]
        let narrow = f as f32;
        if f64::from(narrow).to_bits() == f.to_bits() {
            self.sink.put_byte(code::FLOAT32);
            self.sink.put(&narrow.to_le_bytes());
        } else {
            self.sink.put_byte(code::FLOAT64);
            self.sink.put(&f.to_le_bytes());
        }
        Ok(())
    }

    fn big_number(&mut self, b: &BigNumber) -> Result<(), EncodeError> {
        let magnitude = b.magnitude_le();
        if magnitude.len() > bound(self.limits.max_bignumber_magnitude) {
            return Err(refuse(ErrorKind::MaxBignumberMagnitudeExceeded));
        }
        if b.exponent().unsigned_abs() > max_exponent(self.limits) {
            return Err(refuse(ErrorKind::MaxBignumberExponentExceeded));
        }
        if !super::decode::big_number_in_range(b) {
            return Err(refuse(ErrorKind::ValueOutOfRange));
        }
        self.sink.put_byte(code::BIG_NUMBER);
        self.leb128(zigzag(b.exponent()));
        let len = i64::try_from(magnitude.len()).unwrap_or(i64::MAX);
        self.leb128(zigzag(if b.is_negative() { -len } else { len }));
        self.sink.put(magnitude);
        Ok(())
    }

    fn leb128(&mut self, v: u64) {
        let sink = &mut self.sink;
        crate::leb128::write(v, |b| sink.put_byte(b));
    }

    #[inline]
    fn string(&mut self, s: &str) -> Result<(), EncodeError> {
        let bytes = s.as_bytes();
        if bytes.len() > bound(self.limits.max_string_length) {
            return Err(refuse(ErrorKind::MaxStringLengthExceeded));
        }
        if super::decode::find_nul(bytes).is_some() {
            return Err(refuse(ErrorKind::NulCharacter));
        }
        if bytes.len() <= code::SHORT_STRING_MAX_LEN {
            self.sink.put_byte(code::SHORT_STRING + bytes.len() as u8);
            self.sink.put(bytes);
        } else {
            self.sink.put_byte(code::LONG_STRING);
            self.sink.put(bytes);
            self.sink.put_byte(code::LONG_STRING);
        }
        Ok(())
    }
}

pub(crate) fn max_exponent(limits: &Limits) -> u64 {
    if limits.max_bignumber_exponent == 0 {
        u64::MAX
    } else {
        limits.max_bignumber_exponent
    }
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn signed_code(width: usize) -> u8 {
    match width {
        1 => code::SINT8,
        2 => code::SINT16,
        4 => code::SINT32,
        _ => code::SINT64,
    }
}

fn unsigned_code(width: usize) -> u8 {
    match width {
        1 => code::UINT8,
        2 => code::UINT16,
        4 => code::UINT32,
        _ => code::UINT64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(v: &Value) -> Vec<u8> {
        encode(v).unwrap()
    }

    /// The encoder counts values and keys as the decoder does and refuses what the decoder
    /// would: a value stored past the node limit could not be read back at reopen.
    #[test]
    fn the_node_limit_is_the_decoders() {
        let value: Value = [("a", Value::from(vec![1, 2])), ("b", Value::from("x"))]
            .into_iter()
            .collect();
        // The object, two keys, the array and its two items, the string: 7.
        let limits = |nodes| Limits {
            max_total_nodes: nodes,
            ..Limits::default()
        };
        let options = |nodes| crate::bonjson::DecodeOptions {
            limits: limits(nodes),
            ..Default::default()
        };
        let bytes = encode_with(&value, &limits(7)).unwrap();
        assert_eq!(
            crate::bonjson::decode_with(&bytes, &options(7)).unwrap(),
            value
        );
        assert!(crate::bonjson::decode_with(&bytes, &options(6)).is_err());
        assert_eq!(
            encode_with(&value, &limits(6)),
            Err(refuse(ErrorKind::MaxTotalNodesExceeded))
        );
    }

    #[test]
    fn integers_pick_the_smallest_form() {
        assert_eq!(hex(&Value::Integer(100)), [0x64]);
        assert_eq!(hex(&Value::Integer(127)), [0xac, 0x7f]);
        assert_eq!(hex(&Value::Integer(128)), [0xa8, 0x80]);
        assert_eq!(hex(&Value::Integer(-1000)), [0xad, 0x18, 0xfc]);
        assert_eq!(hex(&Value::Integer(0x8000)), [0xa9, 0x00, 0x80]);
        assert_eq!(hex(&Value::Unsigned(u64::MAX))[0], 0xab);
    }

    #[test]
    fn slice_encoding_reports_the_size_needed() {
        let v = Value::from("a string longer than eight bytes");
        let mut small = [0_u8; 8];
        let needed = encoded_len(&v, &Limits::default()).unwrap();
        assert_eq!(
            encode_to_slice(&v, &Limits::default(), &mut small),
            Err(EncodeError::BufferTooSmall {
                needed,
                available: 8
            })
        );
        let mut big = vec![0_u8; needed];
        assert_eq!(
            encode_to_slice(&v, &Limits::default(), &mut big),
            Ok(needed)
        );
        assert_eq!(big, encode(&v).unwrap());
    }

    #[test]
    fn refuses_what_the_decoder_would_refuse() {
        let kind = |v: Value| encode(&v).unwrap_err().kind();
        assert_eq!(kind(Value::Float(f64::NAN)), Some(ErrorKind::InvalidData));
        assert_eq!(kind(Value::from("a\0b")), Some(ErrorKind::NulCharacter));
        let nfc_clash: Value = [("caf\u{e9}", 1), ("cafe\u{301}", 2)].into_iter().collect();
        assert_eq!(kind(nfc_clash), Some(ErrorKind::DuplicateKey));
        let mut deep = Value::Null;
        for _ in 0..600 {
            deep = Value::Array(vec![deep]);
        }
        assert_eq!(kind(deep), Some(ErrorKind::MaxDepthExceeded));
        let mut out = vec![1, 2, 3];
        assert!(encode_into(&Value::Float(f64::INFINITY), &Limits::default(), &mut out).is_err());
        assert_eq!(out, [1, 2, 3]);
    }
}
