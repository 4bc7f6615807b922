//! JSON text to and from `Value` without losing digits.
//!
//! serde_json reads an integer beyond 64 bits as an `f64`, silently rounding it, unless its
//! `arbitrary_precision` feature is on, and that feature would change how numbers parse for
//! every crate in a user's build that uses serde_json. So the tool reads each number's own
//! text instead (`RawValue`): integers that fit become `Integer` or `Unsigned`; a number with a
//! fraction or an exponent becomes a `Float` when that float prints back as the same text (the
//! form floats are written in, such as `1.5`, `0.1`, `-0.0` or `1e300`); anything else is kept
//! exactly as a `BigNumber` (an integer beyond 64 bits, `1.50`, `15e-1`). On output a
//! `BigNumber` is written as the JSON number it is, not as the string serde gives it, so `dump`
//! then `load` gives back the same values.
//!
//! Nesting: serde_json stops at 128 levels, while the store keeps values nested up to its
//! codec's limit (500 by default). Reading one level at a time, each container's members as
//! raw text, never nests serde_json's own parse deeper than two levels, so deep values load;
//! the recursion here is bounded by measuring the text's depth first and refusing anything
//! deeper than the codec ever handles.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use resilient_kv::Value;
use resilient_kv::bonjson::{BigNumber, HARD_MAX_DEPTH};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;

/// Parses one JSON value.
pub(crate) fn parse(text: &str) -> Result<Value, String> {
    check_depth(text)?;
    let raw: &RawValue = from_str(text)?;
    from_raw(raw)
}

/// Parses a stream of JSON values (as `load` reads them: one per line, or several objects).
pub(crate) fn parse_stream(
    text: &str,
) -> Result<impl Iterator<Item = Result<Value, String>> + '_, String> {
    check_depth(text)?;
    Ok(serde_json::Deserializer::from_str(text)
        .into_iter::<&RawValue>()
        .map(|raw| raw.map_err(|e| e.to_string()).and_then(from_raw)))
}

/// Refuses text nested deeper than the codec ever handles, before a recursive parser sees it.
fn check_depth(text: &str) -> Result<(), String> {
    let (mut depth, mut deepest) = (0_usize, 0_usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in text.bytes() {
        match (in_string, byte) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') | (false, b'"') => in_string = !in_string,
            (false, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    // A value at depth `deepest` of containers holds scalars one level further down.
    if deepest >= HARD_MAX_DEPTH {
        return Err(format!(
            "the JSON is nested {deepest} levels deep; values hold at most {HARD_MAX_DEPTH}"
        ));
    }
    Ok(())
}

/// `serde_json::from_str`, its error as text.
fn from_str<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

fn from_raw(raw: &RawValue) -> Result<Value, String> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => {
            let Members(members) = from_str(text)?;
            let mut map = HashMap::with_capacity(members.len());
            for (key, item) in members {
                let item = from_raw(item)?;
                if map.contains_key(&key) {
                    return Err(format!("duplicate key {key:?} in an object"));
                }
                map.insert(key, item);
            }
            Ok(Value::Object(map))
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = from_str(text)?;
            items
                .into_iter()
                .map(from_raw)
                .collect::<Result<_, _>>()
                .map(Value::Array)
        }
        Some(b'-' | b'0'..=b'9') => number(text),
        _ => from_str(text),
    }
}

/// A JSON number's text (already checked by serde_json) as a `Value`, keeping every digit of
/// an integer.
fn number(text: &str) -> Result<Value, String> {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Value::Integer(i));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Ok(Value::Unsigned(u));
        }
    } else if let Ok(f) = text.parse::<f64>()
        && f.is_finite()
        && serde_json::to_string(&f).is_ok_and(|printed| printed == text)
    {
        return Ok(Value::Float(f));
    }
    // Exact: an integer beyond 64 bits, a decimal not in a float's printed form (the store
    // refuses what is beyond its range with a clear error).
    BigNumber::parse(text)
        .map(Value::BigNumber)
        .ok_or_else(|| format!("the number {text} has too many digits"))
}

/// A big number as JSON number text that [`number`] reads back as the same big number. Its
/// plain text may read back as another kind of number (`5e0` prints as `5`, an integer;
/// `1e+300` as `1e300`, a float's printed form); an upper-case exponent is never how a float
/// is printed and never an integer, so those are written with one (`5E0`, `1E300`).
fn big_number_text(n: &BigNumber) -> String {
    let text = n.to_string();
    if matches!(number(&text), Ok(Value::BigNumber(_))) {
        return text;
    }
    if text.contains('e') {
        text.replacen('e', "E", 1)
    } else {
        format!("{text}E0")
    }
}

/// An object's members in order, with their values still as JSON text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for MembersVisitor<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Members<'a>, M::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'a RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor(std::marker::PhantomData))
    }
}

/// A value to print: as `Value`'s own `Serialize` (object members in key order), except that a
/// `BigNumber` is written as a JSON number.
pub(crate) struct Exact<'a>(pub(crate) &'a Value);

impl Serialize for Exact<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::BigNumber(n) => match RawValue::from_string(big_number_text(n)) {
                Ok(raw) => raw.serialize(serializer),
                Err(_) => self.0.serialize(serializer),
            },
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Exact(item))?;
                }
                seq.end()
            }
            Value::Object(members) => {
                let sorted: BTreeMap<&str, &Value> =
                    members.iter().map(|(k, v)| (k.as_str(), v)).collect();
                let mut map = serializer.serialize_map(Some(sorted.len()))?;
                for (key, item) in sorted {
                    map.serialize_entry(key, &Exact(item))?;
                }
                map.end()
            }
            other => other.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(value: &Value) -> String {
        serde_json::to_string(&Exact(value)).unwrap()
    }

    #[test]
    fn numbers_keep_every_digit_both_ways() {
        let cases = [
            ("18446744073709551616", "18446744073709551616"),
            ("-9223372036854775809", "-9223372036854775809"),
            ("18446744073709551615", "18446744073709551615"),
            ("-5", "-5"),
            ("1.5", "1.5"),
            ("-0.0", "-0.0"),
            ("1e300", "1e300"),
            ("1.50", "150e-2"),
        ];
        for (input, output) in cases {
            let value = parse(input).unwrap();
            assert_eq!(printed(&value), output, "{input}");
            assert_eq!(parse(&printed(&value)).unwrap(), value, "{input}");
        }
        assert!(matches!(
            parse("18446744073709551616").unwrap(),
            Value::BigNumber(_)
        ));
        let nested = parse(r#"{"b": [1, 123456789012345678901234567890], "a": "x"}"#).unwrap();
        assert_eq!(
            printed(&nested),
            r#"{"a":"x","b":[1,123456789012345678901234567890]}"#
        );
        let big = Value::BigNumber(BigNumber::parse("-15e-1").unwrap());
        assert_eq!(printed(&big), "-15e-1");
        assert_eq!(parse("-15e-1").unwrap(), big);
        assert_eq!(parse("0.1").unwrap(), Value::Float(0.1));
        assert_eq!(parse("1.0").unwrap(), Value::Float(1.0));
    }

    /// Big numbers whose plain text is an integer or a float's printed form come back from
    /// `dump` then `load` as big numbers (they came back as an `Integer` or a `Float`).
    #[test]
    fn big_numbers_that_look_like_other_numbers_round_trip() {
        for input in ["5e0", "0e0", "-7e0", "123456789e5"] {
            let value = parse(input).unwrap();
            assert!(matches!(value, Value::BigNumber(_)), "{input}: {value:?}");
            let text = printed(&value);
            assert_eq!(parse(&text).unwrap(), value, "{input} printed as {text}");
        }
        // Made by a library user, whatever text `set` would have read.
        for text in [
            "7",
            "-7",
            "0",
            "1e300",
            "1.5",
            "25e-1",
            "18446744073709551615",
        ] {
            let made = Value::BigNumber(BigNumber::parse(text).unwrap());
            let printed = printed(&made);
            assert_eq!(
                parse(&printed).unwrap(),
                made,
                "{text} printed as {printed}"
            );
        }
    }

    /// Values nested deeper than serde_json's default limit (128) load, as the store keeps
    /// them; text deeper than the codec ever handles is refused before it is parsed.
    #[test]
    fn deep_values_parse_and_absurd_depths_are_refused() {
        let deep = format!(
            "{}{}{}",
            "[".repeat(300),
            r#"{"k": "a]\"["}"#,
            "]".repeat(300)
        );
        let value = parse(&deep).unwrap();
        assert_eq!(parse(&printed(&value)).unwrap(), value);
        let line = format!("{{\"k\": {deep}}}\n");
        let loaded: Vec<_> = parse_stream(&line).unwrap().collect();
        assert!(
            matches!(loaded.as_slice(), [Ok(Value::Object(_))]),
            "{loaded:?}"
        );
        let absurd = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(parse(&absurd).unwrap_err().contains("nested"));
        assert!(parse_stream(&absurd).is_err());
    }

    #[test]
    fn duplicate_keys_and_bad_json_are_errors() {
        assert!(
            parse(r#"{"a": 1, "a": 2}"#)
                .unwrap_err()
                .contains("duplicate")
        );
        assert!(parse("[1, 2").is_err());
        assert!(parse("dark").is_err());
        let stream: Vec<_> = parse_stream("{\"a\": 1}\n{\"b\": 2e400}\n")
            .unwrap()
            .collect();
        assert_eq!(stream.len(), 2);
        assert!(matches!(stream[1], Ok(Value::Object(_))));
    }
}
