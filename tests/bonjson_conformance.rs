//! Runs the language-independent BONJSON conformance suite against our codec.
//!
//! The suite lives outside this repository; its directory comes from `BONJSON_CONFORMANCE_DIR`,
//! defaulting to `../shared/bonjson-conformance/tests/conformance` next to the crate. Every file
//! listed in its `config.json` runs. Tests are skipped only for options or capabilities we do
//! not support, each with its reason printed. The test fails on any failure, on a missing
//! suite, or if fewer than 440 tests ran.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use resilient_kv::Value;
use resilient_kv::bonjson::{self, BigNumber, DecodeOptions, Limits, Normalization};
use serde_json::Value as Json;

const MIN_TESTS_RUN: usize = 440;

/// Capabilities from the suite's "Requires" table that this codec has.
const SUPPORTED_CAPABILITIES: &[&str] = &[
    "int64",
    "uint64",
    "negative_zero",
    "arbitrary_precision_bignumber",
    "bignumber_exponent_gt_127",
    "bignumber_exponent_lt_neg128",
];

const ERROR_NAMES: &[&str] = &[
    "truncated",
    "trailing_bytes",
    "invalid_type_code",
    "invalid_utf8",
    "nul_character",
    "duplicate_key",
    "invalid_object_key",
    "unclosed_container",
    "invalid_data",
    "value_out_of_range",
    "max_depth_exceeded",
    "max_string_length_exceeded",
    "max_container_size_exceeded",
    "max_document_size_exceeded",
    "max_bignumber_exponent_exceeded",
    "max_bignumber_magnitude_exceeded",
];

fn suite_dir() -> PathBuf {
    match std::env::var_os("BONJSON_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/bonjson-conformance/tests/conformance"),
    }
}

enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

#[test]
fn bonjson_conformance_suite() {
    let dir = suite_dir();
    let config_path = dir.join("config.json");
    let config: Json = read_json(&config_path);
    assert_eq!(
        config["type"],
        "bonjson-test-config",
        "{} is not a test config",
        config_path.display()
    );
    let sources = config["sources"]
        .as_array()
        .expect("config.json has a sources array");

    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for source in sources {
        let rel = source["path"].as_str().expect("each source has a path");
        let path = dir.join(rel);
        let file: Json = read_json(&path);
        assert_eq!(
            file["type"],
            "bonjson-test",
            "{} is not a test file",
            path.display()
        );
        let tests = file["tests"]
            .as_array()
            .expect("test file has a tests array");
        for test in tests {
            let Some(name) = test.get("name").and_then(Json::as_str) else {
                continue; // a comment-only divider
            };
            let label = format!("{rel}:{name}");
            match run_test(test) {
                Outcome::Pass => passed += 1,
                Outcome::Fail(why) => {
                    failed += 1;
                    println!("FAIL {label}: {why}");
                }
                Outcome::Skip(why) => {
                    skipped += 1;
                    println!("skip {label}: {why}");
                }
            }
        }
    }
    println!("BONJSON conformance: {passed} passed, {failed} failed, {skipped} skipped");
    assert_eq!(failed, 0, "{failed} conformance tests failed");
    assert!(
        passed >= MIN_TESTS_RUN,
        "only {passed} conformance tests ran; at least {MIN_TESTS_RUN} must"
    );
}

fn read_json(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); set BONJSON_CONFORMANCE_DIR to the suite's conformance directory",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn run_test(test: &Json) -> Outcome {
    if let Some(requires) = test.get("requires") {
        let requires = requires.as_array().expect("requires is an array");
        for capability in requires {
            let capability = capability.as_str().expect("capabilities are strings");
            if !SUPPORTED_CAPABILITIES.contains(&capability) {
                return Outcome::Skip(format!("requires unsupported capability `{capability}`"));
            }
        }
    }
    let options = match options_of(test) {
        Ok(options) => options,
        Err(why) => return Outcome::Skip(why),
    };
    if let Some(expected) = test.get("expected_error").and_then(Json::as_str)
        && !ERROR_NAMES.contains(&expected)
    {
        return Outcome::Skip(format!("unknown error type `{expected}`"));
    }
    let kind = test["type"].as_str().expect("test has a type");
    match kind {
        "encode" => {
            let value = parse_value(&test["input"]);
            let expected = hex(&test["expected_bytes"]);
            match bonjson::encode_with(&value, &options.limits) {
                Ok(bytes) if bytes == expected => Outcome::Pass,
                Ok(bytes) => {
                    Outcome::Fail(format!("encoded {bytes:02x?}, expected {expected:02x?}"))
                }
                Err(e) => Outcome::Fail(format!("encode failed: {e}")),
            }
        }
        "decode" => {
            let bytes = hex(&test["input_bytes"]);
            let expected = parse_value(&test["expected_value"]);
            match bonjson::decode_with(&bytes, &options) {
                Ok(value) if semantic_eq(&value, &expected) => Outcome::Pass,
                Ok(value) => Outcome::Fail(format!("decoded {value:?}, expected {expected:?}")),
                Err(e) => Outcome::Fail(format!("decode failed: {e}")),
            }
        }
        "roundtrip" => {
            let value = parse_value(&test["input"]);
            let bytes = match bonjson::encode_with(&value, &options.limits) {
                Ok(bytes) => bytes,
                Err(e) => return Outcome::Fail(format!("encode failed: {e}")),
            };
            match bonjson::decode_with(&bytes, &options) {
                Ok(back) if semantic_eq(&back, &value) => Outcome::Pass,
                Ok(back) => Outcome::Fail(format!("came back as {back:?}, sent {value:?}")),
                Err(e) => Outcome::Fail(format!("decode of {bytes:02x?} failed: {e}")),
            }
        }
        "encode_error" => {
            let value = parse_value(&test["input"]);
            let expected = test["expected_error"].as_str().unwrap_or_default();
            match bonjson::encode_with(&value, &options.limits) {
                Ok(bytes) => Outcome::Fail(format!("encoded to {bytes:02x?}, expected {expected}")),
                Err(e) => match e.kind() {
                    Some(kind) if kind.name() == expected => Outcome::Pass,
                    _ => Outcome::Fail(format!("failed with `{e}`, expected {expected}")),
                },
            }
        }
        "decode_error" => {
            let bytes = hex(&test["input_bytes"]);
            let expected = test["expected_error"].as_str().unwrap_or_default();
            match bonjson::decode_with(&bytes, &options) {
                Ok(value) => Outcome::Fail(format!("decoded to {value:?}, expected {expected}")),
                Err(e) if e.kind.name() == expected => Outcome::Pass,
                Err(e) => Outcome::Fail(format!("failed with `{e}`, expected {expected}")),
            }
        }
        other => panic!("unknown test type `{other}` (a structural error in the suite)"),
    }
}

/// Maps the test's `options` onto ours, or explains why the test must be skipped.
fn options_of(test: &Json) -> Result<DecodeOptions, String> {
    let mut options = DecodeOptions::default();
    let Some(map) = test.get("options") else {
        return Ok(options);
    };
    let map = map.as_object().expect("options is an object");
    for (name, setting) in map {
        let unsupported = || Err(format!("option {name}={setting} is not supported"));
        let limit = || usize::try_from(setting.as_u64().expect("limit options are integers")).ok();
        match (name.as_str(), setting) {
            ("allow_nul", Json::Bool(false)) => {}
            ("allow_trailing_bytes", Json::Bool(allow)) => options.allow_trailing_bytes = *allow,
            ("nan_infinity_behavior", s) if s == "reject" => {}
            ("duplicate_key", s) if s == "reject" => {}
            ("invalid_utf8", s) if s == "reject" => {}
            ("out_of_range", s) if s == "error" => {}
            ("unicode_normalization", s) if s == "none" => {}
            ("unicode_normalization", s) if s == "nfc" => {
                options.unicode_normalization = Normalization::Nfc;
            }
            ("max_depth", _) => options.limits.max_depth = limit().ok_or("bad limit")?,
            ("max_container_size", _) => {
                options.limits.max_container_size = limit().ok_or("bad limit")?;
            }
            ("max_string_length", _) => {
                options.limits.max_string_length = limit().ok_or("bad limit")?;
            }
            ("max_document_size", _) => {
                options.limits.max_document_size = limit().ok_or("bad limit")?;
            }
            ("max_bignumber_exponent", _) => {
                options.limits.max_bignumber_exponent =
                    setting.as_u64().expect("limit options are integers");
            }
            ("max_bignumber_magnitude", _) => {
                options.limits.max_bignumber_magnitude = limit().ok_or("bad limit")?;
            }
            _ => return unsupported(),
        }
    }
    let _: &Limits = &options.limits;
    Ok(options)
}

fn hex(field: &Json) -> Vec<u8> {
    let text: String = field
        .as_str()
        .expect("hex fields are strings")
        .split_whitespace()
        .collect();
    assert!(
        text.len().is_multiple_of(2),
        "odd number of hex digits in {text}"
    );
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// The suite's `parseValue`: JSON plus `$number` markers.
fn parse_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Integer(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::Float(n.as_f64().expect("a JSON number is an f64"))
            }
        }
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(parse_value).collect()),
        Json::Object(map) => {
            if let Some(number) = map.get("$number") {
                assert_eq!(map.len(), 1, "a marker object holds only its marker");
                return parse_number(number.as_str().expect("$number holds a string"));
            }
            assert!(!map.contains_key("$bytes"), "$bytes needs raw_string_bytes");
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), parse_value(v)))
                    .collect(),
            )
        }
    }
}

fn parse_number(text: &str) -> Value {
    match text.to_ascii_lowercase().as_str() {
        "nan" => return Value::Float(f64::NAN),
        "infinity" => return Value::Float(f64::INFINITY),
        "-infinity" => return Value::Float(f64::NEG_INFINITY),
        _ => {}
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if let Some(hex_text) = unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))
    {
        if hex_text.contains(['p', 'P']) {
            let f = parse_hex_float(hex_text);
            return Value::Float(if negative { -f } else { f });
        }
        let magnitude = u128::from_str_radix(hex_text, 16).expect("hex integer");
        return integer_value(negative, magnitude, text);
    }
    if !unsigned.contains(['.', 'e', 'E']) {
        return match unsigned.parse::<u128>() {
            Ok(magnitude) => integer_value(negative, magnitude, text),
            Err(_) => Value::BigNumber(BigNumber::parse(text).expect("decimal integer")),
        };
    }
    // Decimal with a fraction or exponent: a float when f64 holds it exactly enough (17
    // significant digits, finite, not flushed to zero), otherwise an exact big number.
    let digits = unsigned
        .split(['e', 'E'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    let f: f64 = text.parse().expect("decimal number");
    if significant.len() <= 17 && f.is_finite() && (f != 0.0 || significant.is_empty()) {
        Value::Float(f)
    } else {
        Value::BigNumber(BigNumber::parse(text).expect("decimal number"))
    }
}

fn integer_value(negative: bool, magnitude: u128, text: &str) -> Value {
    let signed = if negative {
        -(magnitude as i128)
    } else {
        magnitude as i128
    };
    if let Ok(i) = i64::try_from(signed) {
        Value::Integer(i)
    } else if let Ok(u) = u64::try_from(signed) {
        Value::Unsigned(u)
    } else {
        Value::BigNumber(BigNumber::parse(&signed.to_string()).unwrap_or_else(|| panic!("{text}")))
    }
}

/// C99 `%a` text without sign or `0x`: `[H...][.H...]p[±]D...`.
fn parse_hex_float(text: &str) -> f64 {
    let (mantissa, exponent) = text.split_once(['p', 'P']).expect("hex float has p");
    let mut exponent: i32 = exponent.parse().expect("hex float exponent");
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut bits: u128 = 0;
    for c in int_part.chars().chain(frac_part.chars()) {
        bits = bits * 16 + u128::from(c.to_digit(16).expect("hex digit"));
    }
    exponent -= 4 * frac_part.len() as i32;
    let mut value = bits as f64;
    while exponent > 0 {
        let step = exponent.min(1000);
        value *= 2f64.powi(step);
        exponent -= step;
    }
    while exponent < 0 {
        let step = exponent.max(-1000);
        value *= 2f64.powi(step);
        exponent -= step;
    }
    value
}

/// The suite's value comparison: numbers by mathematical value (`-0.0` distinct, NaN equal to
/// NaN), objects without regard to order.
fn semantic_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| semantic_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => objects_eq(x, y),
        _ => match (number_of(a), number_of(b)) {
            (Some(x), Some(y)) => numbers_eq(&x, &y),
            (None, None) => a == b,
            _ => false,
        },
    }
}

fn objects_eq(x: &HashMap<String, Value>, y: &HashMap<String, Value>) -> bool {
    x.len() == y.len()
        && x.iter()
            .all(|(k, v)| y.get(k).is_some_and(|w| semantic_eq(v, w)))
}

enum Num {
    Int(i128),
    Float(f64),
    Big(BigNumber),
}

fn number_of(v: &Value) -> Option<Num> {
    match v {
        Value::Integer(i) => Some(Num::Int(i128::from(*i))),
        Value::Unsigned(u) => Some(Num::Int(i128::from(*u))),
        Value::Float(f) => Some(Num::Float(*f)),
        Value::BigNumber(b) => Some(Num::Big(b.clone())),
        _ => None,
    }
}

fn numbers_eq(a: &Num, b: &Num) -> bool {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x == y,
        (Num::Float(x), Num::Float(y)) => {
            (x.is_nan() && y.is_nan()) || (x == y && x.is_sign_negative() == y.is_sign_negative())
        }
        (Num::Big(x), Num::Big(y)) => x == y,
        (Num::Int(i), Num::Float(f)) | (Num::Float(f), Num::Int(i)) => {
            f.is_finite() && f.fract() == 0.0 && !(*f == 0.0 && f.is_sign_negative()) && {
                let as_int = *f as i128;
                as_int == *i && as_int as f64 == *f
            }
        }
        (Num::Int(i), Num::Big(b)) | (Num::Big(b), Num::Int(i)) => {
            BigNumber::parse(&i.to_string()).is_some_and(|x| &x == b)
        }
        (Num::Float(f), Num::Big(b)) | (Num::Big(b), Num::Float(f)) => {
            !(*f == 0.0 && f.is_sign_negative()) && b.to_f64() == *f
        }
    }
}
