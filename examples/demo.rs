//! The main demo. For now it shows the codec: values round-trip through BONJSON, with their
//! sizes against JSON text. (The store and its crash demo grow this in later issues.)

use resilient_kv::{Value, bonjson};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let samples: Vec<(&str, Value)> = vec![
        ("flag", Value::Boolean(true)),
        ("counter", Value::Integer(1_234_567)),
        ("ratio", Value::Float(0.75)),
        ("big unsigned", Value::from(u64::MAX)),
        (
            "exact decimal",
            Value::BigNumber(
                bonjson::BigNumber::parse("3.141592653589793238462643").ok_or("bad decimal")?,
            ),
        ),
        ("greeting", Value::from("こんにちは, world")),
        (
            "settings",
            [
                ("theme", Value::from("dark")),
                ("volume", Value::Integer(30)),
                ("beta", Value::Boolean(false)),
                ("tags", Value::from(vec!["a", "b", "c"])),
            ]
            .into_iter()
            .collect(),
        ),
        ("numbers", Value::from((0..100).collect::<Vec<i32>>())),
    ];

    println!("{:<14} {:>8} {:>8}  round trip", "value", "BONJSON", "JSON");
    let (mut total_bonjson, mut total_json) = (0, 0);
    for (name, value) in &samples {
        let bytes = bonjson::encode(value)?;
        let back = bonjson::decode(&bytes)?;
        let json = value.to_string();
        total_bonjson += bytes.len();
        total_json += json.len();
        let verdict = if &back == value { "exact" } else { "CHANGED" };
        println!("{name:<14} {:>8} {:>8}  {verdict}", bytes.len(), json.len());
        if &back != value {
            return Err(format!("{name} did not survive the round trip").into());
        }
    }
    println!(
        "{:<14} {total_bonjson:>8} {total_json:>8}  ({:.0}% of the JSON size)",
        "total",
        100.0 * total_bonjson as f64 / total_json as f64
    );

    let damaged = [0xb8, 0x66, b'a'];
    match bonjson::decode(&damaged) {
        Ok(v) => println!("damaged bytes decoded to {v}?"),
        Err(e) => println!("damaged input is refused with a typed error: {e}"),
    }
    Ok(())
}
