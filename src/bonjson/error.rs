//! Codec errors. Each [`ErrorKind`] carries the name the BONJSON conformance suite uses.

use std::fmt;

/// What went wrong, named as the BONJSON conformance suite names it (see [`ErrorKind::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input ended inside a value (this includes an empty document).
    Truncated,
    /// Bytes follow the root value.
    TrailingBytes,
    /// A reserved or misplaced type code.
    InvalidTypeCode,
    /// A string is not valid UTF-8.
    InvalidUtf8,
    /// A string contains U+0000.
    NulCharacter,
    /// An object or record definition repeats a key (compared after NFC normalization).
    DuplicateKey,
    /// An object key or record key is not a string.
    InvalidObjectKey,
    /// Structurally valid bytes with an invalid meaning: NaN or infinity, a big number with a
    /// non-normalized magnitude, a bad record reference, a LEB128 number padded past its
    /// shortest form.
    InvalidData,
    /// A number outside the codec's published range.
    ValueOutOfRange,
    /// Containers nested deeper than [`Limits::max_depth`](super::Limits::max_depth).
    MaxDepthExceeded,
    /// A string longer than [`Limits::max_string_length`](super::Limits::max_string_length).
    MaxStringLengthExceeded,
    /// A container with more elements than
    /// [`Limits::max_container_size`](super::Limits::max_container_size).
    MaxContainerSizeExceeded,
    /// A document larger than [`Limits::max_document_size`](super::Limits::max_document_size).
    MaxDocumentSizeExceeded,
    /// A big-number exponent beyond
    /// [`Limits::max_bignumber_exponent`](super::Limits::max_bignumber_exponent).
    MaxBignumberExponentExceeded,
    /// A big-number magnitude longer than
    /// [`Limits::max_bignumber_magnitude`](super::Limits::max_bignumber_magnitude).
    MaxBignumberMagnitudeExceeded,
    /// More values and keys than [`Limits::max_total_nodes`](super::Limits::max_total_nodes)
    /// (this crate's own limit, which record instances cannot multiply around).
    MaxTotalNodesExceeded,
}

impl ErrorKind {
    /// The conformance suite's identifier for this error, e.g. `"truncated"`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Truncated => "truncated",
            ErrorKind::TrailingBytes => "trailing_bytes",
            ErrorKind::InvalidTypeCode => "invalid_type_code",
            ErrorKind::InvalidUtf8 => "invalid_utf8",
            ErrorKind::NulCharacter => "nul_character",
            ErrorKind::DuplicateKey => "duplicate_key",
            ErrorKind::InvalidObjectKey => "invalid_object_key",
            ErrorKind::InvalidData => "invalid_data",
            ErrorKind::ValueOutOfRange => "value_out_of_range",
            ErrorKind::MaxDepthExceeded => "max_depth_exceeded",
            ErrorKind::MaxStringLengthExceeded => "max_string_length_exceeded",
            ErrorKind::MaxContainerSizeExceeded => "max_container_size_exceeded",
            ErrorKind::MaxDocumentSizeExceeded => "max_document_size_exceeded",
            ErrorKind::MaxBignumberExponentExceeded => "max_bignumber_exponent_exceeded",
            ErrorKind::MaxBignumberMagnitudeExceeded => "max_bignumber_magnitude_exceeded",
            ErrorKind::MaxTotalNodesExceeded => "max_total_nodes_exceeded",
        }
    }

    fn sentence(self) -> &'static str {
        match self {
            ErrorKind::Truncated => "the input ends inside a value",
            ErrorKind::TrailingBytes => "bytes follow the end of the value",
            ErrorKind::InvalidTypeCode => "the type code is reserved or not allowed here",
            ErrorKind::InvalidUtf8 => "a string is not valid UTF-8",
            ErrorKind::NulCharacter => "a string contains a NUL character",
            ErrorKind::DuplicateKey => "an object repeats a key",
            ErrorKind::InvalidObjectKey => "an object key is not a string",
            ErrorKind::InvalidData => "the value is invalid (NaN, infinity, or malformed)",
            ErrorKind::ValueOutOfRange => "a number is outside the supported range",
            ErrorKind::MaxDepthExceeded => "containers are nested too deeply",
            ErrorKind::MaxStringLengthExceeded => "a string is longer than the limit",
            ErrorKind::MaxContainerSizeExceeded => "a container has more elements than the limit",
            ErrorKind::MaxDocumentSizeExceeded => "the document is larger than the limit",
            ErrorKind::MaxBignumberExponentExceeded => "a big-number exponent exceeds the limit",
            ErrorKind::MaxBignumberMagnitudeExceeded => "a big-number magnitude exceeds the limit",
            ErrorKind::MaxTotalNodesExceeded => "the document holds more nodes than the limit",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sentence())
    }
}

/// A document could not be decoded. Nothing was returned; `offset` is where decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("BONJSON decoding failed at byte {offset}: {kind} ({})", kind.name())]
pub struct DecodeError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Byte offset in the input at which the problem was detected.
    pub offset: usize,
}

/// A value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The value cannot be represented, or would break a decoding limit, so it was refused
    /// (the decoder would refuse to read it back).
    #[error("BONJSON encoding refused the value: {0} ({name})", name = .0.name())]
    Invalid(ErrorKind),
    /// The caller's output slice is too small; `needed` bytes would have fitted the value.
    #[error("the output buffer holds {available} bytes but the encoded value needs {needed}")]
    BufferTooSmall {
        /// Bytes the encoded value needs.
        needed: usize,
        /// Bytes the caller offered.
        available: usize,
    },
}

impl EncodeError {
    /// The suite-named kind, if this is [`EncodeError::Invalid`].
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            EncodeError::Invalid(kind) => Some(*kind),
            EncodeError::BufferTooSmall { .. } => None,
        }
    }
}
