//! Unsigned LEB128 numbers, in their shortest form only: the journal's counts and lengths and
//! BONJSON's record references, counts and big-number fields are all spelled this way, and
//! read and written here once.
//!
//! Seven bits per byte, least significant group first, the high bit set on every byte but the
//! last. Only the shortest spelling is accepted, so every number has exactly one (a forged
//! longer spelling is refused like any other malformed input), and at most 64 bits.

/// Why bytes do not start with a shortest-form LEB128 of at most 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leb128Error {
    /// The bytes end before the number's last byte (one without the high bit).
    Truncated,
    /// A last byte of zero after others: a longer spelling of a smaller number.
    Padded,
    /// More than 64 bits.
    TooLarge,
}

/// The number at the start of `bytes`, and how many bytes it takes.
#[inline]
pub(crate) fn read(bytes: &[u8]) -> Result<(u64, usize), Leb128Error> {
    let mut value = 0_u64;
    for (i, &byte) in bytes.iter().enumerate() {
        let bits = u64::from(byte & 0x7f);
        // The tenth byte holds bit 63 only.
        if i == 9 && (bits > 1 || byte & 0x80 != 0) {
            return Err(Leb128Error::TooLarge);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(Leb128Error::Padded);
            }
            return Ok((value, i + 1));
        }
    }
    Err(Leb128Error::Truncated)
}

/// Writes `value` in its shortest form, one byte at a time through `put`.
#[inline]
pub(crate) fn write(mut value: u64, mut put: impl FnMut(u8)) {
    while value >= 0x80 {
        put((value as u8) | 0x80);
        value >>= 7;
    }
    put(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write(value, |b| out.push(b));
        out
    }

    #[test]
    fn every_width_reads_back_in_the_bytes_it_was_written_in() {
        let mut values = vec![0, 1, 0x7f, 0x80, 0x3fff, 0x4000, u64::MAX - 1, u64::MAX];
        values.extend((0..64).map(|bit| 1_u64 << bit));
        values.extend((1..64).map(|bit| (1_u64 << bit) - 1));
        for value in values {
            let mut bytes = written(value);
            let len = bytes.len();
            assert_eq!(
                len,
                (64 - value.leading_zeros() as usize).div_ceil(7).max(1)
            );
            bytes.push(0xff); // what follows is not read
            assert_eq!(read(&bytes), Ok((value, len)), "{value:#x}");
            assert_eq!(read(&bytes[..len - 1]), Err(Leb128Error::Truncated));
        }
    }

    #[test]
    fn longer_spellings_and_more_than_64_bits_are_refused() {
        assert_eq!(read(&[0x80, 0x00]), Err(Leb128Error::Padded));
        assert_eq!(read(&[0xff, 0x80, 0x00]), Err(Leb128Error::Padded));
        assert_eq!(read(&[0x00]), Ok((0, 1)));
        let mut max = written(u64::MAX);
        assert_eq!(max.len(), 10);
        max[9] = 0x02; // bit 64
        assert_eq!(read(&max), Err(Leb128Error::TooLarge));
        max[9] = 0x81; // an eleventh byte announced
        max.push(0x00);
        assert_eq!(read(&max), Err(Leb128Error::TooLarge));
        assert_eq!(read(&[]), Err(Leb128Error::Truncated));
    }
}
