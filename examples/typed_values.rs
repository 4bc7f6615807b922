//! Typed values: every `Value` variant, and your own structs through serde.
//!
//! `cargo run --release --example typed_values`

use std::collections::HashMap;

use resilient_kv::{KVStore, Value, from_value, to_value};
use serde::{Deserialize, Serialize};

/// An application's own type, stored as an object.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Session {
    user: String,
    expires_at: u64,
    roles: Vec<String>,
    theme: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = KVStore::new(dir.path().join("typed"), 1024 * 1024, None, None)?;

    // One value of each kind (Null is not stored: inserting it deletes the key).
    let mut object = HashMap::new();
    object.insert("nested".to_string(), Value::from(vec![1_i64, 2, 3]));
    let values = [
        ("boolean", Value::Boolean(true)),
        ("integer", Value::Integer(-42)),
        ("unsigned", Value::from(u64::MAX)), // above i64::MAX: Value::Unsigned
        ("float", Value::Float(0.1)),
        ("string", Value::from("héllo")),
        ("array", Value::from(vec![Value::from("a"), Value::Null])),
        ("object", Value::Object(object)),
    ];
    for (key, value) in &values {
        store.insert(key.to_string(), value.clone())?;
    }
    for (key, value) in &values {
        let stored = store.get(key)?.unwrap_or_default();
        assert_eq!(&stored, value); // exact: same variant, same bits
        println!("{key:>8} ({}) = {stored}", stored.kind_name());
    }

    // Accessors give native types back.
    assert_eq!(store.get("integer")?.and_then(|v| v.as_i64()), Some(-42));
    assert_eq!(
        store.get("unsigned")?.and_then(|v| v.as_u64()),
        Some(u64::MAX)
    );

    // Your own types: to_value / from_value (the default `serde` feature).
    let session = Session {
        user: "ada".into(),
        expires_at: 1_900_000_000,
        roles: vec!["admin".into()],
        theme: None,
    };
    store.insert("session/ada".to_string(), to_value(&session)?)?;
    let stored = store.get("session/ada")?.ok_or("missing session")?;
    println!("session/ada = {stored}");
    let back: Session = from_value(stored)?;
    assert_eq!(back, session);

    // A value of the wrong shape is an error, not a panic.
    let wrong = from_value::<Session>(Value::from("not a session"));
    println!("decoding a string as a Session: {}", wrong.unwrap_err());

    // Values refused by the store: NaN (no JSON for it) and NUL in strings.
    let refused = store.insert("nan".to_string(), Value::Float(f64::NAN));
    println!("inserting NaN: {}", refused.unwrap_err());
    Ok(())
}
