//! The JSON-like [`Value`] every entry of the store holds.

use std::collections::HashMap;
use std::fmt;

use crate::bonjson::BigNumber;

/// A JSON-like value: what the store keeps under each key.
///
/// The variants mirror JSON, plus two that keep numbers exact across a restart:
/// [`Value::Unsigned`] for integers above `i64::MAX`, and [`Value::BigNumber`] for decimal
/// numbers that no native type holds exactly.
///
/// Every value the encoder accepts decodes to a value that is `==` to it and of the same
/// variant, provided it is in canonical form: integers that fit an `i64` are
/// [`Value::Integer`] (the `From<u64>` conversion does this for you), and only larger ones
/// are [`Value::Unsigned`]. Equality compares integers by their mathematical value, so a
/// hand-built `Value::Unsigned(5)` still equals `Value::Integer(5)`.
///
/// Floats compare by bit pattern semantics of IEEE `==`, except that `-0.0` and `0.0` are
/// distinct (they encode differently and both survive a round trip).
///
/// ```
/// use resilient_kv::Value;
///
/// let v = Value::from(vec![Value::from("a"), Value::Integer(30), Value::Null]);
/// assert_eq!(v.to_string(), r#"["a",30,null]"#);
/// assert_eq!(Value::from(u64::MAX), Value::Unsigned(u64::MAX));
/// assert_eq!(Value::from(7_u64), Value::Integer(7));
/// ```
#[derive(Debug, Clone, Default)]
pub enum Value {
    /// JSON `null`. Inserting it into the store deletes the key.
    #[default]
    Null,
    /// JSON `true` / `false`.
    Boolean(bool),
    /// A signed 64-bit integer.
    Integer(i64),
    /// An unsigned integer above `i64::MAX` (smaller ones are [`Value::Integer`]).
    Unsigned(u64),
    /// A finite 64-bit float (NaN and infinities are rejected by the encoder).
    Float(f64),
    /// An exact decimal number `significand × 10^exponent` beyond the native types.
    BigNumber(BigNumber),
    /// A UTF-8 string without NUL characters.
    String(String),
    /// An ordered list of values.
    Array(Vec<Value>),
    /// A map from string keys to values.
    Object(HashMap<String, Value>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::{Array, BigNumber, Boolean, Float, Integer, Null, Object, String, Unsigned};
        match (self, other) {
            (Null, Null) => true,
            (Boolean(a), Boolean(b)) => a == b,
            (Integer(_) | Unsigned(_), Integer(_) | Unsigned(_)) => {
                self.as_i128() == other.as_i128()
            }
            (Float(a), Float(b)) => a == b && a.is_sign_negative() == b.is_sign_negative(),
            (BigNumber(a), BigNumber(b)) => a == b,
            (String(a), String(b)) => a == b,
            (Array(a), Array(b)) => a == b,
            (Object(a), Object(b)) => a == b,
            _ => false,
        }
    }
}

impl Value {
    /// The name of this value's kind, for messages: `"null"`, `"integer"`, `"object"`, ...
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Boolean(_) => "boolean",
            Value::Integer(_) | Value::Unsigned(_) => "integer",
            Value::Float(_) => "float",
            Value::BigNumber(_) => "big number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// `true` for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The boolean, if this is a [`Value::Boolean`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer as `i64`, if this is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            Value::Unsigned(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }

    /// The integer as `u64`, if this is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Integer(i) => u64::try_from(*i).ok(),
            Value::Unsigned(u) => Some(*u),
            _ => None,
        }
    }

    fn as_i128(&self) -> Option<i128> {
        match self {
            Value::Integer(i) => Some(i128::from(*i)),
            Value::Unsigned(u) => Some(i128::from(*u)),
            _ => None,
        }
    }

    /// Any number as `f64` (integers and big numbers may round).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            #[expect(
                clippy::cast_precision_loss,
                reason = "documented as possibly rounding"
            )]
            Value::Integer(i) => Some(*i as f64),
            #[expect(
                clippy::cast_precision_loss,
                reason = "documented as possibly rounding"
            )]
            Value::Unsigned(u) => Some(*u as f64),
            Value::BigNumber(b) => Some(b.to_f64()),
            _ => None,
        }
    }

    /// The string slice, if this is a [`Value::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if this is a [`Value::Array`].
    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The map, if this is a [`Value::Object`].
    pub fn as_object(&self) -> Option<&HashMap<String, Value>> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The member `key`, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object().and_then(|o| o.get(key))
    }
}

impl fmt::Display for Value {
    /// Writes the value as compact JSON text. Object members are written in key order so the
    /// text is deterministic. A non-finite float (which the store never holds) is written as
    /// `null`, as JSON has no spelling for it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Boolean(b) => write!(f, "{b}"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Unsigned(u) => write!(f, "{u}"),
            Value::Float(x) if !x.is_finite() => f.write_str("null"),
            // `Debug` always writes a `.` or an exponent (`1.0`, `1e16`, `1e-7`), so the text
            // reads back as a float, never as an integer.
            Value::Float(x) => write!(f, "{x:?}"),
            Value::BigNumber(b) => write!(f, "{b}"),
            Value::String(s) => write_json_string(f, s),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                f.write_str("{")?;
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write_json_string(f, key)?;
                    f.write_str(":")?;
                    if let Some(v) = map.get(key) {
                        write!(f, "{v}")?;
                    }
                }
                f.write_str("}")
            }
        }
    }
}

fn write_json_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

macro_rules! from_signed {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Integer(i64::from(v))
            }
        }
    )*};
}
from_signed!(i8, i16, i32, i64, u8, u16, u32);

impl From<u64> for Value {
    /// Values that fit an `i64` become [`Value::Integer`], larger ones [`Value::Unsigned`].
    fn from(v: u64) -> Self {
        match i64::try_from(v) {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::Unsigned(v),
        }
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        // usize is at most 64 bits on every platform Rust supports.
        Value::from(v as u64)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(f64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Boolean(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

impl From<BigNumber> for Value {
    fn from(v: BigNumber) -> Self {
        Value::BigNumber(v)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::Array(v.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    /// `None` becomes [`Value::Null`].
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl<V: Into<Value>> From<HashMap<String, V>> for Value {
    fn from(v: HashMap<String, V>) -> Self {
        Value::Object(v.into_iter().map(|(k, v)| (k, v.into())).collect())
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Value {
    /// Collects key/value pairs into a [`Value::Object`].
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Value::Object(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_zero_is_not_zero() {
        assert_ne!(Value::Float(-0.0), Value::Float(0.0));
        assert_eq!(Value::Float(-0.0), Value::Float(-0.0));
    }

    #[test]
    fn display_is_json() {
        let v: Value = [("b", Value::from(1.5)), ("a", Value::from("x\"\n"))]
            .into_iter()
            .collect();
        assert_eq!(v.to_string(), r#"{"a":"x\"\n","b":1.5}"#);
        assert_eq!(Value::Float(3.0).to_string(), "3.0");
        // Large and small floats keep a float's form (as JSON readers take it back).
        assert_eq!(Value::Float(1e16).to_string(), "1e16");
        assert_eq!(Value::Float(-2.5e-7).to_string(), "-2.5e-7");
        assert_eq!(Value::Float(-0.0).to_string(), "-0.0");
    }

    #[test]
    fn integers_compare_by_value() {
        assert_eq!(Value::Unsigned(5), Value::Integer(5));
        assert_ne!(Value::Integer(-1), Value::Unsigned(u64::MAX));
    }
}
