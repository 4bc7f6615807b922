//! serde support for [`Value`] (the default-on `serde` feature).
//!
//! - [`Value`] implements `Serialize` and `Deserialize`, so it can be written to and read from
//!   any serde format, e.g. JSON text with `serde_json`.
//! - [`to_value`] and [`from_value`] convert between [`Value`] and your own `Serialize` /
//!   `Deserialize` types without going through text.
//!
//! The mapping follows `serde_json`: structs and maps are objects, sequences and tuples are
//! arrays, `None` and `()` are null, `Some(x)` is `x`, newtype structs are their content, unit
//! variants are their name as a string, and other enum variants are an object with one member
//! named after the variant (serde's externally tagged representation). Map keys that are
//! integers, booleans, chars or unit variants become their text, and are parsed back.
//!
//! Two limits it shares with `serde_json`, both about what text or null cannot tell apart:
//! `Some(x)` where `x` itself is null (`Some(None)`, `Some(())`, `Some(Value::Null)`) becomes
//! null and reads back as `None`; and a map with integer or boolean keys reads back only
//! through the map type itself, not through an untagged or internally tagged enum or a
//! `#[serde(flatten)]` field, which buffer the keys as strings (an untagged enum may then pick
//! a variant with string keys). Give such keys a string form of their own (for example
//! `serde_with::DisplayFromStr`) where those shapes are needed.
//!
//! # Big numbers
//!
//! A [`Value::BigNumber`] serializes as a **string** of its decimal text (such as
//! `"-15e-1"`), because serde has no exact decimal type; reading that text back gives a
//! [`Value::String`]. [`to_value`] recognises it and keeps the exact [`Value::BigNumber`].
//! Deserializing *from* a [`Value::BigNumber`] (with [`from_value`]) gives an `f64` field its
//! nearest `f64`, an integer field the number when it is whole (within the field's range),
//! and a [`Value`] (also nested in the application's types) the exact big number. Types that
//! take anything (serde's self-describing path, as untagged enums and other formats' value
//! types do) see it as a one-member map `{"$resilient_kv::BigNumber": "<decimal text>"}`, the
//! way serde_json passes its exact numbers through; an object whose only key is that marker is
//! read back as the big number.

mod deserializer;
mod serializer;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Value;
use crate::bonjson::BigNumber;

/// The newtype-struct name a [`Value::BigNumber`] is serialized under, so that
/// [`to_value`] can restore it exactly. Other serializers see only the decimal text inside.
const BIG_NUMBER_TOKEN: &str = "$resilient_kv::BigNumber";

/// The most elements or members a container pre-allocates for on a size hint it cannot check.
const MAX_PREALLOCATION: usize = 4096;

/// An error converting between a Rust type and a [`Value`], from [`to_value`] or
/// [`from_value`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// A message from serde or from a type's own `Serialize` / `Deserialize` code, such as
    /// "invalid type: string \"x\", expected u8" or "missing field `name`".
    #[error("{0}")]
    Custom(String),
    /// The value holds a NaN or infinite float, which a [`Value`] cannot hold.
    #[error("a float was NaN or infinite, and a Value can only hold finite floats")]
    NonFiniteFloat,
    /// A map key serialized to something other than a string, integer, boolean, char or unit
    /// variant.
    #[error(
        "a map key must be a string (integer, boolean, char and unit-variant keys are converted to text)"
    )]
    KeyMustBeAString,
    /// Two members of one map or struct have the same key.
    #[error("the key {0:?} appears more than once in an object")]
    DuplicateKey(String),
    /// An `i128` or `u128` outside the range a [`Value`] holds (`i64::MIN..=u64::MAX`); the
    /// number is given as decimal text.
    #[error("the integer {0} is outside the range a Value can hold (i64::MIN to u64::MAX)")]
    IntegerOutOfRange(String),
}

impl serde::ser::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::Custom(msg.to_string())
    }
}

impl de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::Custom(msg.to_string())
    }
}

/// Converts a serializable Rust value into a [`Value`].
///
/// The mapping follows `serde_json`: structs and maps become objects, sequences and tuples
/// arrays, `None` and `()` null, `Some(x)` is `x`, newtype structs are their content, bytes an
/// array of integers. Unit variants become their name as a string, other enum variants an
/// object with one member named after the variant (serde's externally tagged form). Map keys
/// that are integers, booleans, chars or unit variants become their text. Serializing a
/// [`Value`] gives it back unchanged, [`Value::BigNumber`] included.
///
/// # Errors
///
/// [`ValueError::NonFiniteFloat`] for NaN or infinite floats, [`ValueError::KeyMustBeAString`]
/// for map keys that have no text form, [`ValueError::DuplicateKey`] when two keys of a map
/// have the same text, [`ValueError::IntegerOutOfRange`] for 128-bit integers beyond
/// `i64::MIN..=u64::MAX`, and [`ValueError::Custom`] for errors raised by `value` itself.
///
/// # Examples
///
/// ```
/// use resilient_kv::{Value, from_value, to_value};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct Settings {
///     theme: String,
///     volume: u8,
///     muted_until: Option<u64>,
/// }
///
/// let settings = Settings { theme: "dark".into(), volume: 30, muted_until: None };
/// let value = to_value(&settings)?;
/// assert_eq!(value.get("theme"), Some(&Value::from("dark")));
/// assert_eq!(value.get("volume"), Some(&Value::Integer(30)));
/// assert_eq!(value.get("muted_until"), Some(&Value::Null));
///
/// let back: Settings = from_value(value)?;
/// assert_eq!(back, settings);
/// # Ok::<(), resilient_kv::ValueError>(())
/// ```
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, ValueError> {
    value.serialize(serializer::ValueSerializer)
}

/// Converts a [`Value`] into a Rust type that implements `Deserialize`.
///
/// Integers convert to any integer type they fit, and to floats; a [`Value::BigNumber`]
/// converts to its nearest `f64`. `Null` is `None` for options. Enum variants are read from a
/// string (unit variants) or from an object with one member named after the variant.
///
/// # Errors
///
/// [`ValueError::Custom`] with serde's description when the value does not have the shape
/// `T` expects (wrong type, missing field, unknown variant, integer out of range for the
/// target type, and so on).
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
///
/// use resilient_kv::{Value, from_value, to_value};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// enum Flag {
///     Off,
///     Rollout { percent: u8 },
/// }
///
/// let value: Value = [("new_ui", to_value(&Flag::Rollout { percent: 10 })?), ("beta", "Off".into())]
///     .into_iter()
///     .collect();
/// let flags: HashMap<String, Flag> = from_value(value.clone())?;
/// assert_eq!(flags["new_ui"], Flag::Rollout { percent: 10 });
/// assert_eq!(flags["beta"], Flag::Off);
/// assert_eq!(to_value(&flags)?, value);
/// # Ok::<(), resilient_kv::ValueError>(())
/// ```
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ValueError> {
    T::deserialize(value)
}

/// Writes the value through any serde serializer. Object members are written in key order, so
/// the output is deterministic; a [`Value::BigNumber`] is written as a string of its decimal
/// text (such as `"-15e-1"`), as serde has no exact decimal type: reading it back from JSON
/// gives a [`Value::String`]. ([`to_value`] recognises it and keeps the [`Value::BigNumber`].)
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Boolean(b) => serializer.serialize_bool(*b),
            Value::Integer(i) => serializer.serialize_i64(*i),
            Value::Unsigned(u) => serializer.serialize_u64(*u),
            Value::Float(f) => serializer.serialize_f64(*f),
            Value::BigNumber(n) => {
                serializer.serialize_newtype_struct(BIG_NUMBER_TOKEN, &n.to_string())
            }
            Value::String(s) => serializer.serialize_str(s),
            Value::Array(items) => serializer.collect_seq(items),
            Value::Object(map) => {
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                members.sort_unstable_by(|a, b| a.0.cmp(b.0));
                serializer.collect_map(members)
            }
        }
    }
}

/// Reads any self-describing serde input. Integers become [`Value::Integer`] when they fit an
/// `i64` and [`Value::Unsigned`] otherwise; map keys must be strings, and a key that appears
/// twice is an error.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// Builds a [`Value`] from whatever the input holds.
struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-like value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Boolean(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Integer(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        if let Ok(i) = i64::try_from(v) {
            Ok(Value::Integer(i))
        } else if let Ok(u) = u64::try_from(v) {
            Ok(Value::Unsigned(u))
        } else {
            Err(E::custom(ValueError::IntegerOutOfRange(v.to_string())))
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(Value::from)
            .map_err(|_| E::custom(ValueError::IntegerOutOfRange(v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // A `Value` holds finite floats only, as `to_value` requires.
        if v.is_finite() {
            Ok(Value::Float(v))
        } else {
            Err(E::custom(ValueError::NonFiniteFloat))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Array(v.iter().map(|&b| Value::from(b)).collect()))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOCATION));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map =
            HashMap::with_capacity(access.size_hint().unwrap_or(0).min(MAX_PREALLOCATION));
        // A key read ahead (after the marker below) and not handled yet.
        let mut next = None;
        loop {
            let key = match next.take() {
                Some(key) => key,
                None => match access.next_key::<String>()? {
                    Some(key) => key,
                    None => break,
                },
            };
            // A big number passed through by a deserializer that keeps it exact (this crate's
            // own; see `deserializer.rs`): the marker alone, with a big number's text. Anything
            // else under that key (another type of value, more members, whatever order a map
            // gives them in) is an ordinary member.
            if map.is_empty() && key == BIG_NUMBER_TOKEN {
                let value: Value = access.next_value()?;
                next = access.next_key::<String>()?;
                let ended = next.is_none();
                if ended
                    && let Value::String(text) = &value
                    && let Some(number) = BigNumber::parse(text)
                {
                    return Ok(Value::BigNumber(number));
                }
                map.insert(key, value);
                if ended {
                    // The map said it has no more keys: asking again is not allowed.
                    break;
                }
                continue;
            }
            match map.entry(key) {
                Entry::Occupied(entry) => {
                    let key = entry.key().clone();
                    return Err(de::Error::custom(ValueError::DuplicateKey(key)));
                }
                Entry::Vacant(entry) => {
                    entry.insert(access.next_value()?);
                }
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::{Deserialize, Serialize, Serializer};

    use super::{ValueError, from_value, to_value};
    use crate::Value;
    use crate::bonjson::BigNumber;

    /// An object holding the big-number marker's key among other members, or with a value
    /// that is not a big number's text, converts to itself, whatever order its members come in
    /// (it once failed or not by the map's random iteration order).
    #[test]
    fn objects_with_the_marker_key_convert_to_themselves() {
        for _ in 0..64 {
            let object: Value = [
                ("$resilient_kv::BigNumber", Value::from("1")),
                ("a", Value::Integer(1)),
            ]
            .into_iter()
            .collect();
            assert_eq!(from_value::<Value>(object.clone()), Ok(object));
        }
        let not_text: Value = [("$resilient_kv::BigNumber", Value::Integer(5))]
            .into_iter()
            .collect();
        assert_eq!(from_value::<Value>(not_text.clone()), Ok(not_text));
        let not_a_number: Value = [("$resilient_kv::BigNumber", Value::from("x"))]
            .into_iter()
            .collect();
        assert_eq!(from_value::<Value>(not_a_number.clone()), Ok(not_a_number));
    }

    /// A map access that fails if asked for a key after it said it had no more (as a format
    /// reading a map inside a larger document might: its next bytes are no longer the map's).
    struct OneMember {
        member: Option<(&'static str, i64)>,
        value: Option<i64>,
        ended: bool,
    }

    impl<'de> serde::de::MapAccess<'de> for OneMember {
        type Error = serde::de::value::Error;

        fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Self::Error> {
            use serde::de::{Error, IntoDeserializer};
            if self.ended {
                return Err(Error::custom("a key was asked for after the map ended"));
            }
            match self.member.take() {
                Some((key, value)) => {
                    self.value = Some(value);
                    seed.deserialize(key.into_deserializer()).map(Some)
                }
                None => {
                    self.ended = true;
                    Ok(None)
                }
            }
        }

        fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, Self::Error> {
            use serde::de::{Error, IntoDeserializer};
            let value = self.value.take().ok_or_else(|| Error::custom("no value"))?;
            seed.deserialize(value.into_deserializer())
        }
    }

    /// The marker key alone, with a value that is not a big number, ends the map: the visitor
    /// does not ask for another key (it did, once the map had said it was over).
    #[test]
    fn a_lone_marker_key_with_another_value_stops_at_the_maps_end() {
        let access = OneMember {
            member: Some(("$resilient_kv::BigNumber", 5)),
            value: None,
            ended: false,
        };
        let value = Value::deserialize(serde::de::value::MapAccessDeserializer::new(access));
        let expected: Value = [("$resilient_kv::BigNumber", Value::Integer(5))]
            .into_iter()
            .collect();
        assert_eq!(value.ok(), Some(expected));
    }

    /// A `Value` holds finite floats only, from whichever side it is made.
    #[test]
    fn deserializing_a_non_finite_float_into_a_value_is_an_error() {
        use serde::de::IntoDeserializer;
        for float in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let deserializer: serde::de::value::F64Deserializer<serde::de::value::Error> =
                float.into_deserializer();
            let error = Value::deserialize(deserializer).map(|_| ()).unwrap_err();
            assert!(error.to_string().contains("finite"), "{error}");
        }
        let deserializer: serde::de::value::F32Deserializer<serde::de::value::Error> =
            f32::NAN.into_deserializer();
        assert!(Value::deserialize(deserializer).is_err());
        let deserializer: serde::de::value::F64Deserializer<serde::de::value::Error> =
            1.5_f64.into_deserializer();
        assert_eq!(
            Value::deserialize(deserializer).ok(),
            Some(Value::Float(1.5))
        );
    }

    /// A length hint is not trusted for preallocation: a sequence claiming 2^40 elements that
    /// fails at its first one is an error, not an allocation failure that aborts the process.
    #[test]
    fn a_huge_length_hint_is_not_preallocated() {
        struct Claims;
        impl Serialize for Claims {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq((0..1_u64 << 40).map(|_| f64::NAN))
            }
        }
        assert_eq!(to_value(&Claims), Err(ValueError::NonFiniteFloat));
        struct ClaimsMap;
        impl Serialize for ClaimsMap {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map((0..1_u64 << 40).map(|i| (i, f64::NAN)))
            }
        }
        assert_eq!(to_value(&ClaimsMap), Err(ValueError::NonFiniteFloat));
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Empty,
        Circle(f64),
        Point(i32, i32),
        Rect { w: u32, h: u32 },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Id(u64);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Config {
        name: String,
        id: Id,
        tags: Vec<String>,
        limit: Option<u8>,
        missing: Option<i64>,
        scores: HashMap<String, Vec<Option<i64>>>,
        by_id: HashMap<u32, bool>,
        shapes: Vec<Shape>,
        pair: (char, i8),
        nothing: (),
        ratio: f32,
    }

    fn object(members: &[(&str, Value)]) -> Value {
        members.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    fn sample() -> Config {
        Config {
            name: "cfg".into(),
            id: Id(7),
            tags: vec!["a".into(), "b".into()],
            limit: Some(200),
            missing: None,
            scores: HashMap::from([("x".into(), vec![Some(-1), None])]),
            by_id: HashMap::from([(1, true), (22, false)]),
            shapes: vec![
                Shape::Empty,
                Shape::Circle(0.5),
                Shape::Point(-3, 4),
                Shape::Rect { w: 2, h: 3 },
            ],
            pair: ('é', -8),
            nothing: (),
            ratio: 0.25,
        }
    }

    #[test]
    fn struct_round_trips() -> Result<(), ValueError> {
        let config = sample();
        let value = to_value(&config)?;
        assert_eq!(value.get("id"), Some(&Value::Integer(7)));
        assert_eq!(value.get("missing"), Some(&Value::Null));
        assert_eq!(value.get("nothing"), Some(&Value::Null));
        assert_eq!(
            value.get("pair"),
            Some(&Value::from(vec![Value::from("é"), (-8).into()]))
        );
        let by_id = object(&[("1", true.into()), ("22", false.into())]);
        assert_eq!(value.get("by_id"), Some(&by_id));
        let shapes = Value::from(vec![
            Value::from("Empty"),
            object(&[("Circle", 0.5.into())]),
            object(&[("Point", Value::from(vec![-3, 4]))]),
            object(&[("Rect", object(&[("w", 2.into()), ("h", 3.into())]))]),
        ]);
        assert_eq!(value.get("shapes"), Some(&shapes));
        assert_eq!(from_value::<Config>(value.clone())?, config);
        // A Value converts to itself, in both directions.
        assert_eq!(to_value(&value)?, value);
        assert_eq!(from_value::<Value>(value.clone())?, value);
        Ok(())
    }

    #[test]
    fn large_integers_keep_their_variant() -> Result<(), ValueError> {
        assert!(matches!(to_value(&u64::MAX)?, Value::Unsigned(u64::MAX)));
        assert!(matches!(to_value(&5_u64)?, Value::Integer(5)));
        assert!(matches!(
            to_value(&(u128::from(u64::MAX)))?,
            Value::Unsigned(u64::MAX)
        ));
        assert!(matches!(
            to_value(&i128::from(i64::MIN))?,
            Value::Integer(i64::MIN)
        ));
        assert_eq!(from_value::<u64>(Value::Unsigned(u64::MAX))?, u64::MAX);
        assert_eq!(
            from_value::<u128>(Value::Unsigned(u64::MAX))?,
            u128::from(u64::MAX)
        );
        let too_big = to_value(&(u128::from(u64::MAX) + 1));
        assert_eq!(
            too_big,
            Err(ValueError::IntegerOutOfRange("18446744073709551616".into()))
        );
        assert!(to_value(&(i128::from(i64::MIN) - 1)).is_err());
        assert!(matches!(
            from_value::<i8>(Value::Integer(300)),
            Err(ValueError::Custom(_))
        ));
        assert!(from_value::<i64>(Value::Unsigned(u64::MAX)).is_err());
        Ok(())
    }

    #[test]
    fn json_text_round_trips() -> Result<(), serde_json::Error> {
        let value = object(&[
            ("null", Value::Null),
            ("bool", true.into()),
            ("neg", Value::Integer(i64::MIN)),
            ("big", Value::Unsigned(u64::MAX)),
            ("float", Value::Float(3.0)),
            ("negzero", Value::Float(-0.0)),
            ("text", "quote \" and \u{1}".into()),
            (
                "list",
                Value::from(vec![Value::from(1), Value::from(vec![Value::Null])]),
            ),
            ("nested", object(&[("b", 1.into()), ("a", 2.into())])),
        ]);
        let text = serde_json::to_string(&value)?;
        // Members are written in key order, so the text is deterministic.
        assert_eq!(text, value.to_string());
        let back: Value = serde_json::from_str(&text)?;
        assert_eq!(back, value);
        assert!(matches!(back.get("big"), Some(Value::Unsigned(u64::MAX))));
        assert!(matches!(back.get("float"), Some(Value::Float(_))));
        assert!(matches!(back.get("neg"), Some(Value::Integer(i64::MIN))));
        // serde_json's own Value agrees on the shape.
        let json: serde_json::Value = serde_json::from_str(&text)?;
        assert_eq!(serde_json::to_string(&json)?, text);

        let duplicate = serde_json::from_str::<Value>(r#"{"a":1,"a":2}"#);
        assert!(duplicate.is_err_and(|e| e.to_string().contains("\"a\" appears more than once")));
        Ok(())
    }

    #[test]
    fn big_numbers_serialize_as_text() -> Result<(), Box<dyn std::error::Error>> {
        let number = BigNumber::parse("-1.5").ok_or("unparsable")?;
        let value = Value::BigNumber(number.clone());
        assert_eq!(serde_json::to_string(&value)?, r#""-15e-1""#);
        assert_eq!(to_value(&value)?, Value::BigNumber(number));
        assert_eq!(from_value::<f64>(value)?, -1.5);
        Ok(())
    }

    #[test]
    fn non_finite_floats_are_rejected() {
        assert_eq!(to_value(&f64::NAN), Err(ValueError::NonFiniteFloat));
        assert_eq!(to_value(&f32::INFINITY), Err(ValueError::NonFiniteFloat));
        assert_eq!(
            to_value(&vec![1.0, f64::NEG_INFINITY]),
            Err(ValueError::NonFiniteFloat)
        );
        assert_eq!(
            to_value(&Shape::Circle(f64::NAN)),
            Err(ValueError::NonFiniteFloat)
        );
    }

    /// Whole big numbers convert to the 128-bit integers they fit, at both ends (-2^127's
    /// magnitude is not an `i128`; it was refused) and no further.
    #[test]
    fn big_numbers_convert_to_128_bit_integers_at_their_limits() {
        let big = |text: &str| Value::BigNumber(BigNumber::parse(text).unwrap());
        assert_eq!(
            from_value::<i128>(big(&i128::MIN.to_string())),
            Ok(i128::MIN)
        );
        assert_eq!(
            from_value::<i128>(big(&i128::MAX.to_string())),
            Ok(i128::MAX)
        );
        assert_eq!(
            from_value::<u128>(big(&u128::MAX.to_string())),
            Ok(u128::MAX)
        );
        assert_eq!(from_value::<i128>(big("-17e37")), Ok(-17 * 10_i128.pow(37)));
        assert!(from_value::<i128>(big("-170141183460469231731687303715884105729")).is_err());
        assert!(from_value::<u128>(big("340282366920938463463374607431768211456")).is_err());
        assert!(from_value::<i128>(big("-1.5")).is_err());
    }

    #[test]
    fn map_keys() -> Result<(), ValueError> {
        #[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        enum Kind {
            Alpha,
            Beta,
        }
        let ints = BTreeMap::from([(-1_i128, "m".to_owned()), (u64::MAX.into(), "x".to_owned())]);
        let value = to_value(&ints)?;
        assert_eq!(
            value,
            object(&[("-1", "m".into()), ("18446744073709551615", "x".into())])
        );
        assert!(from_value::<BTreeMap<i64, String>>(value.clone()).is_err());
        assert_eq!(from_value::<BTreeMap<i128, String>>(value)?, ints);

        let bools = to_value(&HashMap::from([(true, 1), (false, 0)]))?;
        assert_eq!(bools, object(&[("true", 1.into()), ("false", 0.into())]));
        assert_eq!(
            from_value::<HashMap<bool, u8>>(bools)?,
            HashMap::from([(true, 1), (false, 0)])
        );

        let chars = to_value(&HashMap::from([('c', ())]))?;
        assert_eq!(chars, object(&[("c", Value::Null)]));
        assert_eq!(
            from_value::<HashMap<char, ()>>(chars)?,
            HashMap::from([('c', ())])
        );

        let kinds = BTreeMap::from([(Kind::Alpha, 1), (Kind::Beta, 2)]);
        let value = to_value(&kinds)?;
        assert_eq!(value, object(&[("Alpha", 1.into()), ("Beta", 2.into())]));
        assert_eq!(from_value::<BTreeMap<Kind, i32>>(value)?, kinds);

        assert_eq!(
            to_value(&BTreeMap::from([((1, 2), 3)])),
            Err(ValueError::KeyMustBeAString)
        );
        assert_eq!(
            to_value(&HashMap::from([(vec![1], 3)])),
            Err(ValueError::KeyMustBeAString)
        );
        assert_eq!(
            to_value(&BTreeMap::from([(Some(1), 3)])),
            Err(ValueError::KeyMustBeAString)
        );
        assert!(from_value::<HashMap<u8, i32>>(object(&[("x", 1.into())])).is_err());
        Ok(())
    }

    #[test]
    fn keys_with_the_same_text_collide() {
        struct Colliding;
        impl Serialize for Colliding {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map([(Value::from("1"), 1), (Value::Integer(1), 2)])
            }
        }
        assert_eq!(
            to_value(&Colliding),
            Err(ValueError::DuplicateKey("1".into()))
        );
    }

    #[test]
    fn shape_mismatches_are_errors() {
        let two_members = object(&[("Circle", 1.0.into()), ("Empty", Value::Null)]);
        assert!(from_value::<Shape>(two_members).is_err());
        assert!(from_value::<Shape>("Hexagon".into()).is_err());
        assert!(from_value::<Shape>("Circle".into()).is_err());
        assert!(from_value::<Shape>(Value::Integer(1)).is_err());
        assert!(from_value::<Shape>(object(&[("Empty", Value::Null)])).is_ok());
        let three = Value::from(vec![1, 2, 3]);
        assert!(from_value::<(i32, i32)>(three.clone()).is_err());
        assert_eq!(from_value::<Vec<u8>>(three).ok(), Some(vec![1, 2, 3]));
        let missing_field = from_value::<Config>(object(&[("name", "x".into())]));
        assert!(missing_field.is_err_and(|e| e.to_string().contains("missing field")));
        assert_eq!(from_value::<Option<u8>>(Value::Null).ok(), Some(None));
        assert_eq!(from_value::<f64>(Value::Integer(2)).ok(), Some(2.0));
    }

    #[test]
    fn bytes_become_integer_arrays() -> Result<(), ValueError> {
        struct Bytes;
        impl Serialize for Bytes {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(&[0, 255])
            }
        }
        assert_eq!(to_value(&Bytes)?, Value::from(vec![0, 255]));
        Ok(())
    }

    /// Integer keys are read back only in the form they are written in, so two keys of one
    /// object written differently ("1" and "01") are an error, never one member silently
    /// dropped.
    #[test]
    fn integer_keys_in_another_form_are_refused() {
        let keys = object(&[("1", "a".into()), ("01", "b".into())]);
        assert!(from_value::<HashMap<u32, String>>(keys).is_err());
        let fine = object(&[("1", "a".into()), ("-2", "b".into())]);
        let read = from_value::<BTreeMap<i32, String>>(fine).unwrap();
        assert_eq!(read, BTreeMap::from([(-2, "b".into()), (1, "a".into())]));
    }

    /// A big number stays exact through `from_value` wherever a `Value` is read, nested in an
    /// application's type or flattened into it; a float field gets its nearest `f64`, an
    /// integer field the whole number; and `to_value` never turns one into a string.
    #[test]
    fn big_numbers_stay_exact_through_from_value() -> Result<(), ValueError> {
        use crate::bonjson::BigNumber;
        let exact = Value::BigNumber(BigNumber::parse("0.1000000000000000000001").unwrap());
        assert_eq!(from_value::<Value>(exact.clone())?, exact);
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Record {
            amount: Value,
            #[serde(flatten)]
            rest: HashMap<String, Value>,
        }
        let record = object(&[("amount", exact.clone()), ("other", exact.clone())]);
        let read: Record = from_value(record.clone())?;
        assert_eq!(read.amount, exact);
        assert_eq!(read.rest["other"], exact);
        assert_eq!(to_value(&read)?, record);
        assert_eq!(from_value::<f64>(exact.clone())?, 0.1);
        let whole = |text: &str| Value::BigNumber(BigNumber::parse(text).unwrap());
        assert_eq!(from_value::<i64>(whole("-15e1"))?, -150);
        assert_eq!(from_value::<u8>(whole("2500e-1"))?, 250);
        assert_eq!(
            from_value::<u128>(whole("1180591620717411303424"))?,
            1 << 70
        );
        assert!(from_value::<u8>(whole("256")).is_err());
        assert!(
            from_value::<f32>(Value::Float(1e300)).is_err(),
            "not silently infinite"
        );
        assert_eq!(from_value::<f32>(Value::Float(0.5))?, 0.5);
        assert!(from_value::<i64>(exact.clone()).is_err());
        let huge = Value::BigNumber(BigNumber::from_parts(false, vec![0xff; 900], 0));
        assert!(to_value(&huge).is_err(), "never a string in its place");
        Ok(())
    }
}
