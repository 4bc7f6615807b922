//! The [`serde::Deserializer`] behind [`from_value`](super::from_value): it reads a [`Value`].

use std::collections::{HashMap, hash_map};
use std::vec;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};
use serde::forward_to_deserialize_any;

use super::{BIG_NUMBER_TOKEN, ValueError};
use crate::Value;
use crate::bonjson::BigNumber;

/// How `value` is described in "invalid type" errors.
fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Boolean(b) => Unexpected::Bool(*b),
        Value::Integer(i) => Unexpected::Signed(*i),
        Value::Unsigned(u) => Unexpected::Unsigned(*u),
        Value::Float(f) => Unexpected::Float(*f),
        Value::BigNumber(_) => Unexpected::Other("big number"),
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

/// A `Value` deserializes by the variant it holds: strings and one-member objects are accepted
/// as enum variants, and `Null` is `None` for options. A [`Value::BigNumber`] is offered, when
/// the type asks for anything, as a one-member map `{"$resilient_kv::BigNumber": its decimal
/// text}`, which `Value` itself reads back exactly (the way serde_json passes its exact numbers
/// through); a type that asks for a float gets its nearest `f64`, and one that asks for an
/// integer gets it when the number is a whole number.
impl<'de> de::Deserializer<'de> for Value {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Null => visitor.visit_unit(),
            Value::Boolean(b) => visitor.visit_bool(b),
            Value::Integer(i) => visitor.visit_i64(i),
            Value::Unsigned(u) => visitor.visit_u64(u),
            Value::Float(f) => visitor.visit_f64(f),
            Value::BigNumber(n) => visitor.visit_map(BigNumberAccess {
                text: Some(n.to_string()),
                key_given: false,
            }),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => visit_array(items, visitor),
            Value::Object(map) => visit_object(map, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        let (variant, content) = match self {
            Value::String(variant) => (variant, None),
            Value::Object(map) => {
                let mut members = map.into_iter();
                match (members.next(), members.next()) {
                    (Some((variant, content)), None) => (variant, Some(content)),
                    _ => {
                        return Err(de::Error::invalid_value(
                            Unexpected::Map,
                            &"an object with exactly one member",
                        ));
                    }
                }
            }
            other => {
                return Err(de::Error::invalid_type(
                    unexpected(&other),
                    &"a string or an object with one member",
                ));
            }
        };
        visitor.visit_enum(EnumDeserializer { variant, content })
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_unit()
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::BigNumber(n) => visitor.visit_f64(n.to_f64()),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        // serde's `f32` visitor narrows with `as`: a finite number beyond `f32`'s range would
        // silently become infinite.
        let wide = match &self {
            Value::Float(x) => Some(*x),
            Value::BigNumber(n) => Some(n.to_f64()),
            _ => None,
        };
        if let Some(x) = wide
            && x.is_finite()
            && !(x as f32).is_finite()
        {
            return Err(de::Error::invalid_value(
                Unexpected::Float(x),
                &"a number within f32's range",
            ));
        }
        self.deserialize_f64(visitor)
    }

    integer_methods! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    }

    forward_to_deserialize_any! {
        bool char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

/// The integer methods: a whole [`Value::BigNumber`] is offered as an integer (the target
/// type checks its own range), anything else as it is.
macro_rules! integer_methods {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
                match self {
                    // Offered as `i64` or `u64` where it fits (serde's own visitors of the
                    // narrower types take those, not 128-bit ones).
                    Value::BigNumber(n) => match whole(&n) {
                        Some(Whole::Signed(i)) => match (i64::try_from(i), u64::try_from(i)) {
                            (Ok(i), _) => visitor.visit_i64(i),
                            (_, Ok(u)) => visitor.visit_u64(u),
                            _ => visitor.visit_i128(i),
                        },
                        Some(Whole::Unsigned(u)) => visitor.visit_u128(u),
                        None => Err(de::Error::invalid_type(
                            Unexpected::Other("big number with a fraction or beyond 128 bits"),
                            &visitor,
                        )),
                    },
                    other => other.deserialize_any(visitor),
                }
            }
        )*
    };
}
use integer_methods;

enum Whole {
    Signed(i128),
    Unsigned(u128),
}

/// `n` as an integer, if it is a whole number within 128 bits.
fn whole(n: &BigNumber) -> Option<Whole> {
    let digits = n.significand_digits();
    let exponent = n.exponent();
    let text = if exponent >= 0 {
        let zeros = usize::try_from(exponent).ok().filter(|&z| z <= 40)?;
        format!("{digits}{}", "0".repeat(zeros))
    } else {
        let cut = usize::try_from(exponent.unsigned_abs()).ok()?;
        let keep = digits.len().checked_sub(cut)?;
        let (integral, fraction) = digits.split_at(keep);
        if !fraction.bytes().all(|b| b == b'0') {
            return None;
        }
        integral.to_owned()
    };
    let magnitude: u128 = if text.is_empty() {
        0
    } else {
        text.parse().ok()?
    };
    if n.is_negative() {
        // Down to -2^127 (`i128::MIN`), whose magnitude is not an `i128`.
        0_i128.checked_sub_unsigned(magnitude).map(Whole::Signed)
    } else {
        Some(match i128::try_from(magnitude) {
            Ok(i) => Whole::Signed(i),
            Err(_) => Whole::Unsigned(magnitude),
        })
    }
}

/// A big number as a one-member map: the marker key, then the decimal text.
struct BigNumberAccess {
    text: Option<String>,
    key_given: bool,
}

impl<'de> de::MapAccess<'de> for BigNumberAccess {
    type Error = ValueError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ValueError> {
        if self.key_given {
            return Ok(None);
        }
        self.key_given = true;
        let key = de::value::BorrowedStrDeserializer::<ValueError>::new(BIG_NUMBER_TOKEN);
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ValueError> {
        match self.text.take() {
            Some(text) => seed.deserialize(Value::String(text)),
            None => Err(ValueError::Custom(
                "next_value was called twice for a big number".to_owned(),
            )),
        }
    }
}

impl<'de> IntoDeserializer<'de, ValueError> for Value {
    type Deserializer = Value;

    fn into_deserializer(self) -> Value {
        self
    }
}

/// Hands `items` to `visitor` as a sequence, and fails if it leaves any unread.
fn visit_array<'de, V: Visitor<'de>>(
    items: Vec<Value>,
    visitor: V,
) -> Result<V::Value, ValueError> {
    let len = items.len();
    let mut seq = SeqDeserializer(items.into_iter());
    let result = visitor.visit_seq(&mut seq)?;
    if seq.0.as_slice().is_empty() {
        Ok(result)
    } else {
        Err(de::Error::invalid_length(
            len,
            &"fewer elements in the array",
        ))
    }
}

/// Hands `map` to `visitor` as a map, and fails if it leaves any member unread.
fn visit_object<'de, V: Visitor<'de>>(
    map: HashMap<String, Value>,
    visitor: V,
) -> Result<V::Value, ValueError> {
    let len = map.len();
    let mut access = MapDeserializer {
        members: map.into_iter(),
        value: None,
    };
    let result = visitor.visit_map(&mut access)?;
    if access.members.next().is_none() {
        Ok(result)
    } else {
        Err(de::Error::invalid_length(
            len,
            &"fewer members in the object",
        ))
    }
}

/// The elements of a [`Value::Array`], one at a time.
struct SeqDeserializer(vec::IntoIter<Value>);

impl<'de> de::SeqAccess<'de> for SeqDeserializer {
    type Error = ValueError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ValueError> {
        self.0.next().map(|item| seed.deserialize(item)).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The members of a [`Value::Object`], one at a time.
struct MapDeserializer {
    members: hash_map::IntoIter<String, Value>,
    /// The value of the member whose key was just read.
    value: Option<Value>,
}

impl<'de> de::MapAccess<'de> for MapDeserializer {
    type Error = ValueError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ValueError> {
        match self.members.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(KeyDeserializer(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ValueError> {
        match self.value.take() {
            Some(value) => seed.deserialize(value),
            None => Err(ValueError::Custom(
                "next_value was called before next_key".to_owned(),
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.members.len())
    }
}

/// An object key (or an enum variant name). It is a string, but reads as an integer or a
/// boolean when the target type asks for one, so that maps keyed by those round-trip.
struct KeyDeserializer(String);

/// `deserialize_*` methods that parse the key text as the requested type. Only the text the
/// serializer writes for a key is accepted (`1`, not `01`, `+1` or `-0`): two keys written
/// differently must never collapse into one, dropping a member.
macro_rules! parse_key {
    ($($method:ident => $visit:ident: $t:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
            match self.0.parse::<$t>() {
                Ok(parsed) if parsed.to_string() == self.0 => visitor.$visit(parsed),
                _ => Err(de::Error::invalid_value(Unexpected::Str(&self.0), &visitor)),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for KeyDeserializer {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_string(self.0)
    }

    parse_key! {
        deserialize_bool => visit_bool: bool,
        deserialize_i8 => visit_i8: i8, deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32, deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128, deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16, deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64, deserialize_u128 => visit_u128: u128,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_enum(EnumDeserializer {
            variant: self.0,
            content: None,
        })
    }

    forward_to_deserialize_any! {
        f32 f64 char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map
        struct identifier ignored_any
    }
}

/// An enum value: the variant's name, and its content unless it is a unit variant written as
/// a plain string.
struct EnumDeserializer {
    variant: String,
    content: Option<Value>,
}

impl<'de> de::EnumAccess<'de> for EnumDeserializer {
    type Error = ValueError;
    type Variant = VariantDeserializer;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantDeserializer), ValueError> {
        let variant = seed.deserialize(KeyDeserializer(self.variant))?;
        Ok((variant, VariantDeserializer(self.content)))
    }
}

/// The content of an enum variant (`None` when the variant was written as a plain string).
struct VariantDeserializer(Option<Value>);

impl<'de> de::VariantAccess<'de> for VariantDeserializer {
    type Error = ValueError;

    fn unit_variant(self) -> Result<(), ValueError> {
        match self.0 {
            None | Some(Value::Null) => Ok(()),
            Some(other) => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a unit variant",
            )),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, ValueError> {
        match self.0 {
            Some(content) => seed.deserialize(content),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"a newtype variant",
            )),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self.0 {
            Some(Value::Array(items)) => visit_array(items, visitor),
            Some(other) => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a tuple variant",
            )),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"a tuple variant",
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self.0 {
            Some(Value::Object(map)) => visit_object(map, visitor),
            Some(Value::Array(items)) => visit_array(items, visitor),
            Some(other) => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a struct variant",
            )),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"a struct variant",
            )),
        }
    }
}
