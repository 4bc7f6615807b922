//! Exact decimal numbers: BONJSON's Big Number (`significand × 10^exponent`).

use std::fmt;

/// Longest decimal text [`BigNumber::parse`] accepts, to bound its quadratic conversion.
const MAX_PARSE_DIGITS: usize = 2_000;

/// An exact decimal number `±magnitude × 10^exponent`, as BONJSON's Big Number type stores it.
///
/// The magnitude is an unsigned little-endian integer without trailing (most significant) zero
/// bytes; zero has an empty magnitude and is never negative. Equality is mathematical:
/// `10 × 10^2 == 1 × 10^3`.
///
/// ```
/// use resilient_kv::bonjson::BigNumber;
///
/// let n = BigNumber::parse("-1.234567890123456789").unwrap();
/// assert_eq!(n.to_string(), "-1234567890123456789e-18");
/// assert_eq!(BigNumber::parse("1000").unwrap(), BigNumber::parse("1e3").unwrap());
/// ```
#[derive(Debug, Clone)]
pub struct BigNumber {
    negative: bool,
    magnitude: Vec<u8>,
    exponent: i64,
}

impl BigNumber {
    /// Builds `±magnitude × 10^exponent` from a little-endian magnitude. Trailing zero bytes are
    /// dropped; a zero magnitude gives zero (positive, exponent 0).
    pub fn from_parts(negative: bool, mut magnitude: Vec<u8>, exponent: i64) -> Self {
        while magnitude.last() == Some(&0) {
            magnitude.pop();
        }
        if magnitude.is_empty() {
            return BigNumber {
                negative: false,
                magnitude,
                exponent: 0,
            };
        }
        BigNumber {
            negative,
            magnitude,
            exponent,
        }
    }

    /// Whether the number is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The magnitude as little-endian bytes (empty for zero).
    pub fn magnitude_le(&self) -> &[u8] {
        &self.magnitude
    }

    /// The base-10 exponent.
    pub fn exponent(&self) -> i64 {
        self.exponent
    }

    /// Parses decimal text: an optional `-`, digits with an optional `.` fraction, and an
    /// optional `e`/`E` exponent. Returns `None` for anything else, or for more than 2,000
    /// digits.
    pub fn parse(text: &str) -> Option<Self> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (mantissa, exp_text) = match rest.find(['e', 'E']) {
            Some(i) => (rest.get(..i)?, Some(rest.get(i + 1..)?)),
            None => (rest, None),
        };
        let mut exponent: i64 = match exp_text {
            Some(e) => e.parse().ok()?,
            None => 0,
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        if int_part.len() + frac_part.len() > MAX_PARSE_DIGITS {
            return None;
        }
        let mut magnitude = Vec::new();
        for c in int_part.bytes().chain(frac_part.bytes()) {
            if !c.is_ascii_digit() {
                return None;
            }
            mul_add(&mut magnitude, 10, c - b'0');
        }
        exponent = exponent.checked_sub(i64::try_from(frac_part.len()).ok()?)?;
        Some(BigNumber::from_parts(negative, magnitude, exponent))
    }

    /// The magnitude's decimal digits, most significant first (`"0"` for zero).
    pub fn significand_digits(&self) -> String {
        if self.magnitude.is_empty() {
            return "0".to_owned();
        }
        let mut work = self.magnitude.clone();
        let mut digits = Vec::new();
        while !work.is_empty() {
            digits.push(b'0' + div_small(&mut work, 10));
        }
        digits.reverse();
        String::from_utf8(digits).unwrap_or_default()
    }

    /// The nearest `f64` (infinite when beyond `f64::MAX`, zero when below the subnormals).
    pub fn to_f64(&self) -> f64 {
        let sign = if self.negative { "-" } else { "" };
        let text = format!("{sign}{}e{}", self.significand_digits(), self.exponent);
        text.parse().unwrap_or(f64::NAN)
    }

    /// An upper bound on the decimal order of magnitude: `|self| < 10^result`.
    pub(crate) fn magnitude_order_upper(&self) -> i64 {
        let bits = self.magnitude.len() as i64 * 8;
        // log10(2) < 0.30103, so bits * 30103 / 100000 + 1 bounds the digit count from above.
        (bits * 30_103 / 100_000 + 1).saturating_add(self.exponent)
    }

    /// The same number with trailing decimal zeros moved from the significand to the exponent.
    fn canonical(&self) -> (bool, Vec<u8>, i64) {
        let mut magnitude = self.magnitude.clone();
        let mut exponent = self.exponent;
        if magnitude.is_empty() {
            return (false, magnitude, 0);
        }
        loop {
            let mut trial = magnitude.clone();
            if div_small(&mut trial, 10) != 0 {
                break;
            }
            magnitude = trial;
            exponent = exponent.saturating_add(1);
        }
        (self.negative, magnitude, exponent)
    }
}

impl PartialEq for BigNumber {
    fn eq(&self, other: &Self) -> bool {
        if self.negative == other.negative
            && self.exponent == other.exponent
            && self.magnitude == other.magnitude
        {
            return true;
        }
        self.canonical() == other.canonical()
    }
}

impl fmt::Display for BigNumber {
    /// Writes JSON number text: `[-]digits[e exponent]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(&self.significand_digits())?;
        if self.exponent != 0 {
            write!(f, "e{}", self.exponent)?;
        }
        Ok(())
    }
}

/// `value = value * factor + add` on a little-endian magnitude.
fn mul_add(value: &mut Vec<u8>, factor: u8, add: u8) {
    let mut carry = u32::from(add);
    for byte in value.iter_mut() {
        let product = u32::from(*byte) * u32::from(factor) + carry;
        *byte = (product & 0xff) as u8;
        carry = product >> 8;
    }
    while carry > 0 {
        value.push((carry & 0xff) as u8);
        carry >>= 8;
    }
}

/// Divides a little-endian magnitude in place, trims it, and returns the remainder.
fn div_small(value: &mut Vec<u8>, divisor: u8) -> u8 {
    let mut remainder = 0_u32;
    for byte in value.iter_mut().rev() {
        let current = (remainder << 8) | u32::from(*byte);
        *byte = (current / u32::from(divisor)) as u8;
        remainder = current % u32::from(divisor);
    }
    while value.last() == Some(&0) {
        value.pop();
    }
    remainder as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let n = BigNumber::parse("1.5").unwrap();
        assert_eq!((n.magnitude_le(), n.exponent()), (&[15_u8][..], -1));
        assert_eq!(n.to_f64(), 1.5);
        assert_eq!(BigNumber::parse("-0").unwrap().to_string(), "0");
        assert_eq!(
            BigNumber::parse("65537").unwrap().magnitude_le(),
            &[1, 0, 1]
        );
        assert!(BigNumber::parse("1.2.3").is_none());
        assert!(BigNumber::parse("").is_none());
        assert!(BigNumber::parse("e5").is_none());
    }

    #[test]
    fn equality_is_mathematical() {
        let a = BigNumber::from_parts(false, vec![10], 2);
        let b = BigNumber::from_parts(false, vec![1], 3);
        assert_eq!(a, b);
        assert_ne!(a, BigNumber::from_parts(true, vec![1], 3));
    }

    #[test]
    fn order_bound_holds() {
        let n = BigNumber::parse("999").unwrap();
        assert!(n.magnitude_order_upper() >= 3);
        let big = BigNumber::parse("1e309").unwrap();
        assert!(big.to_f64().is_infinite());
    }
}
