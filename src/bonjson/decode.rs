//! The decoder: reads the whole format, never panics, and spends only what [`Limits`] allow.
//!
//! It is a recursive-descent reader over a byte slice. Depth is checked before every descent
//! (and capped at [`HARD_MAX_DEPTH`](super::HARD_MAX_DEPTH)), so recursion is bounded. Counts
//! read from the input (typed-array lengths, big-number lengths) are checked against the bytes
//! actually present before anything is allocated from them.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::rc::Rc;

use super::encode::max_exponent;
use super::keys::{NfcKeys, is_nfc, to_nfc};
use super::{BigNumber, DecodeError, DecodeOptions, ErrorKind, Normalization, bound, code};
use crate::Value;
use crate::leb128::Leb128Error;

/// Decodes one complete document with the default [`DecodeOptions`].
pub fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    decode_with(bytes, &DecodeOptions::default())
}

/// Decodes one complete document. Trailing bytes are an error unless
/// [`DecodeOptions::allow_trailing_bytes`] is set.
pub fn decode_with(bytes: &[u8], options: &DecodeOptions) -> Result<Value, DecodeError> {
    let (value, used) = decode_prefix(bytes, options)?;
    if used != bytes.len() && !options.allow_trailing_bytes {
        return Err(DecodeError {
            kind: ErrorKind::TrailingBytes,
            offset: used,
        });
    }
    Ok(value)
}

/// Decodes one document from the front of `bytes`; returns it and the bytes it used.
pub fn decode_prefix(bytes: &[u8], options: &DecodeOptions) -> Result<(Value, usize), DecodeError> {
    let max_size = bound(options.limits.max_document_size);
    let view = bytes.get(..max_size).unwrap_or(bytes);
    let mut decoder = Decoder {
        input: view,
        pos: 0,
        options,
        max_depth: options.limits.depth(),
        nodes_left: bound(options.limits.max_total_nodes),
        records: Vec::new(),
    };
    match decoder.document() {
        Ok(value) => Ok((value, decoder.pos)),
        Err(e) if e.kind == ErrorKind::Truncated && view.len() < bytes.len() => Err(DecodeError {
            kind: ErrorKind::MaxDocumentSizeExceeded,
            offset: max_size,
        }),
        Err(e) => Err(e),
    }
}

/// Whether a big number is within the decoder's range: absolute value at most `f64::MAX`.
pub(crate) fn big_number_in_range(b: &BigNumber) -> bool {
    // Below 10^308 is certainly in range; otherwise round to f64 and see.
    b.magnitude_order_upper() <= 308 || b.to_f64().is_finite()
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    options: &'a DecodeOptions,
    max_depth: usize,
    nodes_left: usize,
    records: Vec<Rc<[String]>>,
}

type Result<T, E = DecodeError> = std::result::Result<T, E>;

impl<'a> Decoder<'a> {
    fn fail<T>(&self, kind: ErrorKind) -> Result<T> {
        Err(DecodeError {
            kind,
            offset: self.pos,
        })
    }

    fn fail_at<T>(&self, kind: ErrorKind, offset: usize) -> Result<T> {
        Err(DecodeError { kind, offset })
    }

    #[inline]
    fn peek(&self) -> Result<u8> {
        match self.input.get(self.pos) {
            Some(&b) => Ok(b),
            None => self.fail(ErrorKind::Truncated),
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let input: &'a [u8] = self.input;
        let end = self.pos.checked_add(n);
        match end.and_then(|end| input.get(self.pos..end)) {
            Some(slice) => {
                self.pos += n;
                Ok(slice)
            }
            None => self.fail(ErrorKind::Truncated),
        }
    }

    #[inline]
    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let slice = self.take(N)?;
        let mut out = [0_u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn charge(&mut self, nodes: usize) -> Result<()> {
        match self.nodes_left.checked_sub(nodes) {
            Some(left) => {
                self.nodes_left = left;
                Ok(())
            }
            None => self.fail(ErrorKind::MaxTotalNodesExceeded),
        }
    }

    fn document(&mut self) -> Result<Value> {
        while self.peek()? == code::RECORD_DEF {
            self.pos += 1;
            self.record_definition()?;
        }
        self.value(1)
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        let start = self.pos;
        let type_code = self.peek()?;
        self.pos += 1;
        if depth > self.max_depth {
            return self.fail_at(ErrorKind::MaxDepthExceeded, start);
        }
        self.charge(1)?;
        let value = match type_code {
            0..=code::SMALL_INT_MAX => Value::Integer(i64::from(type_code)),
            code::SHORT_STRING..=code::SHORT_STRING_LAST => {
                Value::String(self.short_string(type_code)?)
            }
            code::LONG_STRING => Value::String(self.long_string()?),
            code::UINT8 => Value::Integer(i64::from(self.take_array::<1>()?[0])),
            code::UINT16 => Value::Integer(i64::from(u16::from_le_bytes(self.take_array()?))),
            code::UINT32 => Value::Integer(i64::from(u32::from_le_bytes(self.take_array()?))),
            code::UINT64 => Value::from(u64::from_le_bytes(self.take_array()?)),
            code::SINT8 => Value::Integer(i64::from(i8::from_le_bytes(self.take_array()?))),
            code::SINT16 => Value::Integer(i64::from(i16::from_le_bytes(self.take_array()?))),
            code::SINT32 => Value::Integer(i64::from(i32::from_le_bytes(self.take_array()?))),
            code::SINT64 => Value::Integer(i64::from_le_bytes(self.take_array()?)),
            code::FLOAT32 => {
                let f = f32::from_le_bytes(self.take_array()?);
                self.finite(f64::from(f), start)?
            }
            code::FLOAT64 => {
                let f = f64::from_le_bytes(self.take_array()?);
                self.finite(f, start)?
            }
            code::BIG_NUMBER => Value::BigNumber(self.big_number(start)?),
            code::NULL => Value::Null,
            code::FALSE => Value::Boolean(false),
            code::TRUE => Value::Boolean(true),
            code::ARRAY => self.array(depth)?,
            code::OBJECT => self.object(depth)?,
            code::RECORD => self.record_instance(depth, start)?,
            code::RECORD_DEF => return self.fail_at(ErrorKind::InvalidData, start),
            code::TYPED_FLOAT64..=code::TYPED_UINT8 => self.typed_array(type_code, depth)?,
            _ => return self.fail_at(ErrorKind::InvalidTypeCode, start),
        };
        Ok(value)
    }

    fn finite(&self, f: f64, start: usize) -> Result<Value> {
        if f.is_finite() {
            Ok(Value::Float(f))
        } else {
            self.fail_at(ErrorKind::InvalidData, start)
        }
    }

    fn short_string(&mut self, type_code: u8) -> Result<String> {
        let len = usize::from(type_code - code::SHORT_STRING);
        let start = self.pos;
        let bytes = self.take(len)?;
        self.check_string(bytes, start)
    }

    fn long_string(&mut self) -> Result<String> {
        let start = self.pos;
        let rest = self.input.get(start..).unwrap_or_default();
        let Some(len) = memchr::memchr(code::LONG_STRING, rest) else {
            self.pos = self.input.len();
            return self.fail(ErrorKind::Truncated);
        };
        let bytes = self.take(len)?;
        self.pos += 1;
        self.check_string(bytes, start)
    }

    fn check_string(&self, bytes: &[u8], start: usize) -> Result<String> {
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => return self.fail_at(ErrorKind::InvalidUtf8, start + e.valid_up_to()),
        };
        if let Some(i) = find_nul(bytes) {
            return self.fail_at(ErrorKind::NulCharacter, start + i);
        }
        if bytes.len() > bound(self.options.limits.max_string_length) {
            return self.fail_at(ErrorKind::MaxStringLengthExceeded, start);
        }
        if self.options.unicode_normalization == Normalization::Nfc && !is_nfc(text) {
            // Normalizing can lengthen a string (up to three times): the limit holds for what
            // the caller gets, so that it can encode it again under the same limits.
            let normalized = to_nfc(text);
            if normalized.len() > bound(self.options.limits.max_string_length) {
                return self.fail_at(ErrorKind::MaxStringLengthExceeded, start);
            }
            return Ok(normalized);
        }
        Ok(text.to_owned())
    }

    /// A key: a string, or `None` at the container's end marker.
    fn key(&mut self) -> Result<Option<String>> {
        let start = self.pos;
        match self.peek()? {
            code::END => {
                self.pos += 1;
                Ok(None)
            }
            c @ code::SHORT_STRING..=code::SHORT_STRING_LAST => {
                self.pos += 1;
                self.short_string(c).map(Some)
            }
            code::LONG_STRING => {
                self.pos += 1;
                self.long_string().map(Some)
            }
            _ => self.fail_at(ErrorKind::InvalidObjectKey, start),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value> {
        if self.peek()? == code::END {
            self.pos += 1;
            return Ok(Value::Array(Vec::new()));
        }
        let mut items = Vec::with_capacity(4);
        while self.peek()? != code::END {
            if items.len() >= bound(self.options.limits.max_container_size) {
                return self.fail(ErrorKind::MaxContainerSizeExceeded);
            }
            items.push(self.value(depth + 1)?);
        }
        self.pos += 1;
        Ok(Value::Array(items))
    }

    fn object(&mut self, depth: usize) -> Result<Value> {
        if self.peek()? == code::END {
            self.pos += 1;
            return Ok(Value::Object(HashMap::new()));
        }
        // Most stored objects are small settings records: one allocation covers them.
        let mut map = HashMap::with_capacity(7);
        let mut nfc = NfcKeys::default();
        loop {
            let key_start = self.pos;
            let Some(key) = self.key()? else { break };
            let value = self.value(depth + 1)?;
            if !self.options.keys_as_stored && !nfc.admit(&key, &map) {
                return self.fail_at(ErrorKind::DuplicateKey, key_start);
            }
            if map.len() >= bound(self.options.limits.max_container_size) {
                return self.fail_at(ErrorKind::MaxContainerSizeExceeded, key_start);
            }
            self.charge(1)?;
            match map.entry(key) {
                Entry::Occupied(_) => return self.fail_at(ErrorKind::DuplicateKey, key_start),
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
            }
        }
        Ok(Value::Object(map))
    }

    fn record_definition(&mut self) -> Result<()> {
        // The definition itself counts as a node, so that empty definitions (which hold no
        // key) cannot make the decoder keep any number of them.
        self.charge(1)?;
        let mut keys: Vec<String> = Vec::new();
        let mut seen = HashMap::new();
        let mut nfc = NfcKeys::default();
        loop {
            let key_start = self.pos;
            let Some(key) = self.key()? else { break };
            if !nfc.admit(&key, &seen) || seen.contains_key(&key) {
                return self.fail_at(ErrorKind::DuplicateKey, key_start);
            }
            if keys.len() >= bound(self.options.limits.max_container_size) {
                return self.fail_at(ErrorKind::MaxContainerSizeExceeded, key_start);
            }
            self.charge(1)?;
            seen.insert(key.clone(), ());
            keys.push(key);
        }
        self.records.push(keys.into());
        Ok(())
    }

    fn record_instance(&mut self, depth: usize, start: usize) -> Result<Value> {
        let index = self.leb128()?;
        let keys = match usize::try_from(index)
            .ok()
            .and_then(|i| self.records.get(i))
        {
            Some(keys) => Rc::clone(keys),
            None => return self.fail_at(ErrorKind::InvalidData, start),
        };
        let mut map = HashMap::with_capacity(keys.len().min(64));
        let mut filled = 0;
        while self.peek()? != code::END {
            let value = self.value(depth + 1)?;
            let Some(key) = keys.get(filled) else {
                return self.fail_at(ErrorKind::InvalidData, start);
            };
            self.charge(1 + key.len() / 64)?;
            map.insert(key.clone(), value);
            filled += 1;
        }
        self.pos += 1;
        for key in keys.iter().skip(filled) {
            if depth + 1 > self.max_depth {
                return self.fail_at(ErrorKind::MaxDepthExceeded, start);
            }
            self.charge(2 + key.len() / 64)?;
            map.insert(key.clone(), Value::Null);
        }
        Ok(Value::Object(map))
    }

    fn typed_array(&mut self, type_code: u8, depth: usize) -> Result<Value> {
        let start = self.pos;
        let count = self.leb128()?;
        let width = match type_code {
            0xfe | 0xfa => 1,
            0xfd | 0xf9 => 2,
            0xfc | 0xf8 | 0xf6 => 4,
            _ => 8,
        };
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let data = match count.checked_mul(width) {
            Some(size) => self.take(size)?,
            None => return self.fail(ErrorKind::Truncated),
        };
        if count > bound(self.options.limits.max_container_size) {
            return self.fail_at(ErrorKind::MaxContainerSizeExceeded, start);
        }
        if count > 0 && depth + 1 > self.max_depth {
            return self.fail_at(ErrorKind::MaxDepthExceeded, start);
        }
        self.charge(count)?;
        let mut items = Vec::with_capacity(count);
        for (i, chunk) in data.chunks_exact(width).enumerate() {
            let mut raw = [0_u8; 8];
            raw.get_mut(..width)
                .unwrap_or_default()
                .copy_from_slice(chunk);
            let item = match type_code {
                0xfe => Value::Integer(i64::from(raw[0])),
                0xfd => Value::Integer(i64::from(u16::from_le_bytes([raw[0], raw[1]]))),
                0xfc => Value::Integer(i64::from(u32::from_le_bytes([
                    raw[0], raw[1], raw[2], raw[3],
                ]))),
                0xfb => Value::from(u64::from_le_bytes(raw)),
                0xfa => Value::Integer(i64::from(raw[0] as i8)),
                0xf9 => Value::Integer(i64::from(i16::from_le_bytes([raw[0], raw[1]]))),
                0xf8 => Value::Integer(i64::from(i32::from_le_bytes([
                    raw[0], raw[1], raw[2], raw[3],
                ]))),
                0xf7 => Value::Integer(i64::from_le_bytes(raw)),
                0xf6 => {
                    let f = f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
                    self.finite(f64::from(f), start + i * width)?
                }
                _ => self.finite(f64::from_le_bytes(raw), start + i * width)?,
            };
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn big_number(&mut self, start: usize) -> Result<BigNumber> {
        let exponent = unzigzag(self.leb128()?);
        let signed_len = unzigzag(self.leb128()?);
        let len = usize::try_from(signed_len.unsigned_abs()).unwrap_or(usize::MAX);
        let magnitude = self.take(len)?;
        if magnitude.last() == Some(&0) {
            return self.fail_at(ErrorKind::InvalidData, start);
        }
        if len > bound(self.options.limits.max_bignumber_magnitude) {
            return self.fail_at(ErrorKind::MaxBignumberMagnitudeExceeded, start);
        }
        if exponent.unsigned_abs() > max_exponent(&self.options.limits) {
            return self.fail_at(ErrorKind::MaxBignumberExponentExceeded, start);
        }
        let number = BigNumber::from_parts(signed_len < 0, magnitude.to_vec(), exponent);
        if !big_number_in_range(&number) {
            return self.fail_at(ErrorKind::ValueOutOfRange, start);
        }
        Ok(number)
    }

    /// An unsigned LEB128 of at most 64 bits; longer ones are out of range. Only the shortest
    /// form is accepted (the specification's grammar gives every value one spelling): a last
    /// byte of zero after others is `InvalidData`.
    fn leb128(&mut self) -> Result<u64> {
        let start = self.pos;
        match crate::leb128::read(self.input.get(start..).unwrap_or_default()) {
            Ok((value, len)) => {
                self.pos += len;
                Ok(value)
            }
            Err(Leb128Error::Truncated) => {
                self.pos = self.input.len();
                self.fail(ErrorKind::Truncated)
            }
            Err(Leb128Error::Padded) => self.fail_at(ErrorKind::InvalidData, start),
            Err(Leb128Error::TooLarge) => self.fail_at(ErrorKind::ValueOutOfRange, start),
        }
    }
}

/// The first NUL byte. Strings up to 64 bytes (keys and most values) are checked without
/// memchr: its dispatch and set-up cost more than the check (callgrind: about 50 instructions
/// per string of the insert benchmark). The check has no early exit so the compiler can test
/// many bytes per instruction; the position is searched for only when there is a NUL.
#[inline]
pub(crate) fn find_nul(bytes: &[u8]) -> Option<usize> {
    if bytes.len() <= 64 {
        if bytes.iter().fold(false, |seen, &b| seen | (b == 0)) {
            bytes.iter().position(|&b| b == 0)
        } else {
            None
        }
    } else {
        memchr::memchr(0, bytes)
    }
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(bytes: &[u8]) -> ErrorKind {
        decode(bytes).unwrap_err().kind
    }

    /// The string length limit holds after NFC normalization, which can lengthen a string:
    /// U+0958 (3 bytes) is a composition exclusion and becomes U+0915 U+093C (6 bytes).
    #[test]
    fn the_string_limit_holds_after_normalization() {
        let text = "\u{0958}".repeat(6);
        let mut doc = vec![code::SHORT_STRING + 18];
        doc.extend_from_slice(text.as_bytes());
        let mut options = DecodeOptions::default();
        options.limits.max_string_length = 18;
        assert_eq!(
            decode_with(&doc, &options).ok(),
            Some(Value::from(text.as_str()))
        );
        options.unicode_normalization = Normalization::Nfc;
        assert_eq!(
            decode_with(&doc, &options).map_err(|e| e.kind),
            Err(ErrorKind::MaxStringLengthExceeded)
        );
        options.limits.max_string_length = 36;
        let normalized = decode_with(&doc, &options).ok();
        assert_eq!(
            normalized,
            Some(Value::from("\u{0915}\u{093c}".repeat(6).as_str()))
        );
    }

    /// A LEB128 has one spelling, its shortest (the specification's grammar): a padded one
    /// (a last byte of zero after a continuation) is refused wherever it appears, and by
    /// `value_extent` too, so replay's walk of a batch never accepts what decoding refuses.
    #[test]
    fn padded_leb128_is_refused() {
        // Exponent 0 in two bytes, then signed length 1 in two bytes; a typed array's count
        // (which `value_extent` leaves to the decoder whatever its count).
        for padded in [
            &[code::BIG_NUMBER, 0x80, 0x00, 0x02, 0x05][..],
            &[code::BIG_NUMBER, 0x00, 0x82, 0x00, 0x05],
            &[0xfe, 0x80, 0x00],
        ] {
            assert_eq!(kind(padded), ErrorKind::InvalidData, "{padded:02x?}");
            assert_eq!(super::super::value_extent(padded, 64), None);
        }
        // The shortest forms decode, also when they take two bytes (exponent 128 is 0x80 0x02).
        assert!(decode(&[code::BIG_NUMBER, 0x00, 0x02, 0x05]).is_ok());
        assert_eq!(decode(&[0xfe, 0x00]).ok(), Some(Value::Array(Vec::new())));
        let big = [code::BIG_NUMBER, 0x80, 0x02, 0x02, 0x01];
        assert!(decode(&big).is_ok());
        assert_eq!(super::super::value_extent(&big, 64), Some(big.len()));
    }

    /// Empty record definitions count against the node limit: a document of them once made
    /// the decoder keep one allocation per two input bytes whatever the limits said.
    #[test]
    fn empty_record_definitions_count_as_nodes() {
        let mut doc = Vec::new();
        for _ in 0..1_000 {
            doc.extend([code::RECORD_DEF, code::END]);
        }
        doc.push(0x00);
        let mut options = DecodeOptions::default();
        options.limits.max_total_nodes = 100;
        let result = decode_with(&doc, &options);
        assert_eq!(
            result.map_err(|e| e.kind),
            Err(ErrorKind::MaxTotalNodesExceeded)
        );
        options.limits.max_total_nodes = 1_001;
        assert!(decode_with(&doc, &options).is_ok());
    }

    /// `find_nul` finds the first NUL at every position of every length on both sides of its
    /// switch to memchr (64 bytes), and none in strings without one, whatever bytes surround
    /// it.
    #[test]
    fn find_nul_finds_the_first_nul_at_every_position() {
        for fill in [b'a', 0x01, 0x80, 0x81, 0xff] {
            for len in 0..=130 {
                let clean = vec![fill; len];
                assert_eq!(find_nul(&clean), None, "fill {fill:#x}, len {len}");
                for at in 0..len {
                    let mut bytes = clean.clone();
                    bytes[at] = 0;
                    if at + 1 < len {
                        bytes[len - 1] = 0;
                    }
                    assert_eq!(
                        find_nul(&bytes),
                        Some(at),
                        "fill {fill:#x}, len {len}, at {at}"
                    );
                }
            }
        }
    }

    /// A big number whose exponent is near `i64::MAX` is out of range, also when the limits
    /// lift the exponent cap (the range check once overflowed: a panic in a debug build,
    /// a wrapped negative order of magnitude, hence "in range", in a release build).
    #[test]
    fn a_big_number_with_an_extreme_exponent_is_out_of_range() {
        let doc = [
            0xb2, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x01,
        ];
        let mut options = DecodeOptions::default();
        options.limits.max_bignumber_exponent = 0;
        let result = decode_with(&doc, &options);
        assert_eq!(result.map_err(|e| e.kind), Err(ErrorKind::ValueOutOfRange));
    }

    #[test]
    fn records_expand_and_fill_nulls() {
        let doc = [0xb9, 0x66, b'a', 0x66, b'b', 0xb6, 0xba, 0x00, 0x01, 0xb6];
        let v = decode(&doc).unwrap();
        assert_eq!(
            v,
            [("a", Value::Integer(1)), ("b", Value::Null)]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn records_cannot_multiply_past_the_node_budget() {
        // One definition with 1,000 keys, then an array of 20,000 empty instances: 20 million
        // filled-in nulls from 40 KB of input.
        let mut doc = vec![0xb9];
        for i in 0..1000 {
            let key = format!("k{i}");
            doc.push(0x65 + key.len() as u8);
            doc.extend_from_slice(key.as_bytes());
        }
        doc.extend_from_slice(&[0xb6, 0xb7]);
        for _ in 0..20_000 {
            doc.extend_from_slice(&[0xba, 0x00, 0xb6]);
        }
        doc.push(0xb6);
        assert_eq!(kind(&doc), ErrorKind::MaxTotalNodesExceeded);
    }

    #[test]
    fn typed_array_count_is_checked_before_allocating() {
        // Claims 2^62 uint64 elements but holds none.
        let doc = [0xfb, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40];
        assert_eq!(kind(&doc), ErrorKind::Truncated);
    }

    #[test]
    fn prefix_reports_bytes_used() {
        let (v, used) = decode_prefix(&[0x05, 0xff, 0xff], &DecodeOptions::default()).unwrap();
        assert_eq!((v, used), (Value::Integer(5), 1));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let doc = vec![0xb7; 100_000];
        assert_eq!(kind(&doc), ErrorKind::MaxDepthExceeded);
    }
}
