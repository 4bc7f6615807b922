//! CRC-32C of record bodies.
//!
//! Record bodies are short: a 10-byte key with a 32-byte string value makes a 47-byte body. At
//! such lengths the `crc32c` crate's set-up (aligning to 8 bytes a byte at a time, then two
//! three-way passes that have nothing to do) costs several times the checksum itself: callgrind
//! counted about 135 instructions per 60-byte record at open. On x86-64 with SSE 4.2, inputs up
//! to [`SHORT`] bytes take one straight pass of the CPU's CRC-32C instruction here instead;
//! longer inputs, where the crate's three-way pass pays, and every other target go to the crate.
//! Both compute the same function (`tests` compares them at every length and alignment).

/// The longest input checksummed here rather than by the crate.
#[cfg(target_arch = "x86_64")]
const SHORT: usize = 256;

/// The CRC-32C of `data`, continuing from `crc` (the crate's `crc32c_append`).
#[inline]
pub(crate) fn append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if data.len() <= SHORT && std::arch::is_x86_feature_detected!("sse4.2") {
        #[expect(unsafe_code, reason = "calls a function compiled for SSE 4.2")]
        // SAFETY: `short` needs only SSE 4.2, which the line above found this CPU has.
        return unsafe { short(crc, data) };
    }
    crc32c::crc32c_append(crc, data)
}

/// `append` with the CPU's CRC-32C instruction, 8 bytes at a time, then 4, 2 and 1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn short(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64};
    let mut words = data.chunks_exact(8);
    let mut state = u64::from(!crc);
    for word in &mut words {
        let mut le = [0_u8; 8];
        le.copy_from_slice(word);
        state = _mm_crc32_u64(state, u64::from_le_bytes(le));
    }
    // The instruction leaves the upper half zero, so this keeps every bit.
    let mut state = state as u32;
    let mut rest = words.remainder();
    if let Some((four, tail)) = rest.split_first_chunk::<4>() {
        state = _mm_crc32_u32(state, u32::from_le_bytes(*four));
        rest = tail;
    }
    if let Some((two, tail)) = rest.split_first_chunk::<2>() {
        state = _mm_crc32_u16(state, u16::from_le_bytes(*two));
        rest = tail;
    }
    if let Some(&one) = rest.first() {
        state = _mm_crc32_u8(state, one);
    }
    !state
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same checksum as the crate at every length around the switch, from every
    /// alignment, continuing from several states.
    #[test]
    fn append_matches_the_crate() {
        let bytes: Vec<u8> = (0..600_u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for seed in [
            0,
            1,
            0xffff_ffff,
            0x1234_5678,
            crc32c::crc32c(&9_u64.to_le_bytes()),
        ] {
            for start in 0..8 {
                for len in 0..=(bytes.len() - start) {
                    let data = &bytes[start..start + len];
                    assert_eq!(
                        append(seed, data),
                        crc32c::crc32c_append(seed, data),
                        "seed {seed:#x}, start {start}, len {len}"
                    );
                }
            }
        }
    }

    /// A known answer: CRC-32C of "123456789" is 0xe3069283.
    #[test]
    fn known_answer() {
        assert_eq!(append(0, b"123456789"), 0xe306_9283);
    }
}
