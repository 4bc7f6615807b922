//! Properties of the codec over generated inputs: every value round-trips exactly (same
//! variant, `-0.0` kept), and no byte string makes the decoder panic.

use std::collections::HashMap;

use proptest::prelude::*;
use resilient_kv::Value;
use resilient_kv::bonjson::{self, BigNumber, DecodeOptions, Limits};

fn key() -> impl Strategy<Value = String> {
    // ASCII and NFC text; NUL is not storable.
    prop_oneof![
        "[a-z_]{0,12}",
        "[\\u{1}-\\u{7f}\\u{e9}\\u{4e00}-\\u{4e10}]{0,80}"
    ]
}

fn big_number() -> impl Strategy<Value = BigNumber> {
    (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..40),
        -400_i64..200,
    )
        .prop_map(|(negative, magnitude, exponent)| {
            BigNumber::from_parts(negative, magnitude, exponent)
        })
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::Integer),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::Unsigned),
        (-200_i64..200).prop_map(Value::Integer),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        any::<f32>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(Value::Float(-0.0)),
        big_number().prop_map(Value::BigNumber),
        key().prop_map(Value::String),
        "[\\u{1}-\\u{10ffff}]{60,200}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(6, 256, 12, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
            proptest::collection::hash_map(key(), inner, 0..12)
                .prop_map(|m: HashMap<String, Value>| Value::Object(m)),
        ]
    })
}

/// Exact equality: same variants all the way down (integers included), unlike `==`.
fn identical(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => x == y,
        (Value::Unsigned(x), Value::Unsigned(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| identical(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| identical(v, w)))
        }
        (Value::Integer(_) | Value::Unsigned(_) | Value::Float(_), _) => false,
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_value_round_trips_exactly(v in value()) {
        let bytes = bonjson::encode(&v).unwrap();
        let back = bonjson::decode(&bytes).unwrap();
        prop_assert!(identical(&v, &back), "{v:?} came back as {back:?}");
        prop_assert_eq!(bonjson::encoded_len(&v, &Limits::default()).unwrap(), bytes.len());
        let (prefix_value, used) = bonjson::decode_prefix(
            &[bytes.as_slice(), &[0xb6, 0x01]].concat(), &DecodeOptions::default()).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert!(identical(&v, &prefix_value));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = bonjson::decode(&bytes);
    }

    #[test]
    fn mutated_documents_never_panic(
        v in value(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = bonjson::encode(&v).unwrap();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let _ = bonjson::decode(&bytes);
        let _ = bonjson::decode(&bytes[..cut.index(bytes.len() + 1)]);
    }
}
