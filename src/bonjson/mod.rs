//! The BONJSON codec: how every [`Value`] is stored on disk.
//!
//! BONJSON is a binary, one-to-one encoding of JSON (specification commit 6372daf, in
//! `shared/bonjson-conformance/bonjson.md`). This module implements all of it: the encoder
//! writes every [`Value`] in its smallest form (small integers in the type code, the narrowest
//! integer width, `float32` whenever that is lossless, short strings up to 66 bytes), and never
//! writes records or typed arrays; the decoder reads the whole format, typed arrays, records and
//! big numbers included.
//!
//! # Compliance level: secure
//!
//! The decoder validates UTF-8, rejects NUL characters, NaN and infinities, reserved type codes,
//! trailing bytes and duplicate keys, and detects duplicate keys **after NFC normalization**,
//! so `"café"` spelled with U+00E9 and with `e` + U+0301 collide. Strings are returned as they
//! were stored unless [`DecodeOptions::unicode_normalization`] asks for NFC. The encoder refuses
//! what the decoder would refuse (NaN, NUL, NFC-colliding keys, anything over the limits), so a
//! value the store accepted can always be read back.
//!
//! # Limits
//!
//! [`Limits`] bounds every resource the decoder can be made to spend; the defaults are the
//! specification's (depth 500, 1,000,000 elements per container, 10,000,000-byte strings,
//! 2,000,000,000-byte documents, 256-byte big-number magnitudes, exponents within ±100,000),
//! plus a total-node budget of 10,000,000 that record instances cannot multiply around (every
//! value they fill in and every key they copy is charged). A limit of 0 means "no limit", except
//! depth, which never exceeds [`HARD_MAX_DEPTH`] so that recursion stays within a thread stack.
//! The decoder never allocates from a count it has not checked against the bytes present.
//!
//! # Numeric range
//!
//! Integers: the full `i64` and `u64` ranges ([`Value::Integer`], [`Value::Unsigned`]).
//! Floats: finite `f64`. Big numbers decode to an exact [`BigNumber`] as long as their absolute
//! value stays below `f64::MAX` (larger ones are `value_out_of_range`); tiny ones keep their
//! exact decimal value.
//!
//! ```
//! use resilient_kv::{bonjson, Value};
//!
//! let value = Value::from(vec![Value::from("x"), Value::Integer(1000), Value::Float(-1.25)]);
//! let bytes = bonjson::encode(&value)?;
//! assert_eq!(bytes, [0xb7, 0x66, b'x', 0xad, 0xe8, 0x03, 0xb0, 0, 0, 0xa0, 0xbf, 0xb6]);
//! assert_eq!(bonjson::decode(&bytes)?, value);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bignum;
mod decode;
mod encode;
mod error;
mod extent;
mod keys;

pub use bignum::BigNumber;
pub use decode::{decode, decode_prefix, decode_with};
pub(crate) use encode::encode_stored_into;
pub use encode::{encode, encode_into, encode_to_slice, encode_with, encoded_len};
pub use error::{DecodeError, EncodeError, ErrorKind};
pub(crate) use extent::value_extent;

#[cfg(doc)]
use crate::Value;

/// The deepest nesting the codec ever handles, whatever [`Limits::max_depth`] says.
pub const HARD_MAX_DEPTH: usize = 1_000;

/// Resource limits shared by the encoder and the decoder. `0` disables a limit (depth is still
/// capped at [`HARD_MAX_DEPTH`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Deepest nesting: a root scalar or empty container has depth 1, `[1]` has depth 2.
    pub max_depth: usize,
    /// Most elements in one array, or members in one object or record definition.
    pub max_container_size: usize,
    /// Longest string, in bytes.
    pub max_string_length: usize,
    /// Largest document, in bytes.
    pub max_document_size: usize,
    /// Most values and keys one document may produce, counting those that record instances
    /// fill in or copy (a copied key costs one node per 64 bytes, at least one).
    pub max_total_nodes: usize,
    /// Largest absolute big-number exponent.
    pub max_bignumber_exponent: u64,
    /// Longest big-number magnitude, in bytes.
    pub max_bignumber_magnitude: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 500,
            max_container_size: 1_000_000,
            max_string_length: 10_000_000,
            max_document_size: 2_000_000_000,
            max_total_nodes: 10_000_000,
            max_bignumber_exponent: 100_000,
            max_bignumber_magnitude: 256,
        }
    }
}

impl Limits {
    pub(crate) fn depth(&self) -> usize {
        if self.max_depth == 0 || self.max_depth > HARD_MAX_DEPTH {
            HARD_MAX_DEPTH
        } else {
            self.max_depth
        }
    }
}

/// Maps a "0 means unlimited" limit to a plain bound.
pub(crate) fn bound(limit: usize) -> usize {
    if limit == 0 { usize::MAX } else { limit }
}

/// How decoded strings are normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Normalization {
    /// Return strings as stored (duplicate keys are still detected after NFC).
    #[default]
    None,
    /// Return every string and key in Unicode Normalization Form C.
    Nfc,
}

/// Decoder settings. The defaults are the specification's secure defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DecodeOptions {
    /// Resource limits.
    pub limits: Limits,
    /// Accept bytes after the root value ([`decode_prefix`] always does and reports them).
    pub allow_trailing_bytes: bool,
    /// Normalization of returned strings.
    pub unicode_normalization: Normalization,
    /// Object keys are refused only when they repeat exactly, not when they collide after NFC
    /// normalization: for values this crate stored itself, whose encoder refused such
    /// collisions under the Unicode tables it was built with. A later version of those tables
    /// (a new combining mark among code points unassigned before) must not make a value that
    /// was acknowledged unreadable at open, and the records after it with it.
    pub(crate) keys_as_stored: bool,
}

/// Type codes of the format (specification, "Type Codes").
pub(crate) mod code {
    pub(crate) const SMALL_INT_MAX: u8 = 0x64;
    pub(crate) const SHORT_STRING: u8 = 0x65;
    pub(crate) const SHORT_STRING_MAX_LEN: usize = 66;
    pub(crate) const SHORT_STRING_LAST: u8 = 0xa7;
    pub(crate) const UINT8: u8 = 0xa8;
    pub(crate) const UINT16: u8 = 0xa9;
    pub(crate) const UINT32: u8 = 0xaa;
    pub(crate) const UINT64: u8 = 0xab;
    pub(crate) const SINT8: u8 = 0xac;
    pub(crate) const SINT16: u8 = 0xad;
    pub(crate) const SINT32: u8 = 0xae;
    pub(crate) const SINT64: u8 = 0xaf;
    pub(crate) const FLOAT32: u8 = 0xb0;
    pub(crate) const FLOAT64: u8 = 0xb1;
    pub(crate) const BIG_NUMBER: u8 = 0xb2;
    pub(crate) const NULL: u8 = 0xb3;
    pub(crate) const FALSE: u8 = 0xb4;
    pub(crate) const TRUE: u8 = 0xb5;
    pub(crate) const END: u8 = 0xb6;
    pub(crate) const ARRAY: u8 = 0xb7;
    pub(crate) const OBJECT: u8 = 0xb8;
    pub(crate) const RECORD_DEF: u8 = 0xb9;
    pub(crate) const RECORD: u8 = 0xba;
    pub(crate) const TYPED_FLOAT64: u8 = 0xf5;
    pub(crate) const TYPED_UINT8: u8 = 0xfe;
    pub(crate) const LONG_STRING: u8 = 0xff;
}
