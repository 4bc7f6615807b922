//! BONJSON encode/decode against serde_json text on the same values, in the same run.
//!
//! The mix is what the store holds: small settings objects, short strings, counters and
//! floats, plus one 1,000-element array. serde_json works on its own `serde_json::Value` (its
//! fastest path); we work on ours. Targets: decode at least 2x, encode at least 1.5x faster.
#![expect(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use resilient_kv::Value;
use resilient_kv::bonjson::{self, Limits};

fn mix() -> Vec<Value> {
    let mut values = Vec::new();
    for i in 0..50_i64 {
        let settings: Value = [
            (
                "theme",
                Value::from(if i % 2 == 0 { "dark" } else { "light" }),
            ),
            ("volume", Value::Integer(i * 3)),
            ("enabled", Value::Boolean(i % 3 == 0)),
            ("ratio", Value::Float(0.75 + i as f64 / 1000.0)),
            ("user_id", Value::Integer(1_000_000 + i * 7919)),
            (
                "last_seen",
                Value::from(format!("2026-11-26T21:{:02}:00Z", i % 60)),
            ),
        ]
        .into_iter()
        .collect();
        values.push(settings);
        values.push(Value::from(format!(
            "session-token-{i:08x}-abcdefghijklmnop"
        )));
        values.push(Value::Integer(i * 1_234_567));
        values.push(Value::Float(i as f64 * 0.1));
    }
    let array: Vec<Value> = (0..1000_i64)
        .map(|i| match i % 4 {
            0 => Value::Integer(i),
            1 => Value::Float(i as f64 / 3.0),
            2 => Value::from(format!("item{i}")),
            _ => Value::Boolean(i % 8 == 3),
        })
        .collect();
    values.push(Value::Array(array));
    values
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Boolean(b) => (*b).into(),
        Value::Integer(i) => (*i).into(),
        Value::Unsigned(u) => (*u).into(),
        Value::Float(f) => (*f).into(),
        Value::BigNumber(b) => b.to_f64().into(),
        Value::String(s) => s.clone().into(),
        Value::Array(a) => a.iter().map(to_json).collect(),
        Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), to_json(v))).collect(),
    }
}

fn codec(c: &mut Criterion) {
    let values = mix();
    let json_values: Vec<serde_json::Value> = values.iter().map(to_json).collect();
    let encoded: Vec<Vec<u8>> = values.iter().map(|v| bonjson::encode(v).unwrap()).collect();
    let texts: Vec<Vec<u8>> = json_values
        .iter()
        .map(|v| serde_json::to_vec(v).unwrap())
        .collect();
    let limits = Limits::default();

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(values.len() as u64));
    group.bench_function("bonjson", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            for v in &values {
                bonjson::encode_into(black_box(v), &limits, &mut out).unwrap();
            }
            black_box(out.len())
        })
    });
    group.bench_function("serde_json", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            for v in &json_values {
                serde_json::to_writer(&mut out, black_box(v)).unwrap();
            }
            black_box(out.len())
        })
    });
    group.bench_function("serde_json_from_our_value", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            for v in &values {
                serde_json::to_writer(&mut out, black_box(v)).unwrap();
            }
            black_box(out.len())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(values.len() as u64));
    group.bench_function("bonjson", |b| {
        b.iter(|| {
            for bytes in &encoded {
                black_box(bonjson::decode(black_box(bytes)).unwrap());
            }
        })
    });
    group.bench_function("serde_json", |b| {
        b.iter(|| {
            for text in &texts {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(text)).unwrap());
            }
        })
    });
    group.bench_function("serde_json_to_our_value", |b| {
        b.iter(|| {
            for text in &texts {
                black_box(serde_json::from_slice::<Value>(black_box(text)).unwrap());
            }
        })
    });
    group.finish();

    let bonjson_size: usize = encoded.iter().map(Vec::len).sum();
    let json_size: usize = texts.iter().map(Vec::len).sum();
    println!("encoded size: BONJSON {bonjson_size} bytes, JSON {json_size} bytes");

    // This machine's speed drifts between criterion's groups, so also time each pair
    // interleaved, round by round, and report the ratio of medians.
    let mut out = Vec::with_capacity(64 * 1024);
    let mut ours_out = Vec::with_capacity(64 * 1024);
    let encode_ours = || {
        ours_out.clear();
        for v in &values {
            bonjson::encode_into(black_box(v), &limits, &mut ours_out).unwrap();
        }
        black_box(ours_out.len());
    };
    let encode_json = || {
        out.clear();
        for v in &json_values {
            serde_json::to_writer(&mut out, black_box(v)).unwrap();
        }
        black_box(out.len());
    };
    report_ratio("encode", encode_ours, encode_json);
    let decode_ours = || {
        for bytes in &encoded {
            black_box(bonjson::decode(black_box(bytes)).unwrap());
        }
    };
    let decode_json = || {
        for text in &texts {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(text)).unwrap());
        }
    };
    report_ratio("decode", decode_ours, decode_json);
    let decode_json_to_ours = || {
        for text in &texts {
            black_box(serde_json::from_slice::<Value>(black_box(text)).unwrap());
        }
    };
    report_ratio(
        "decode (serde_json into our Value)",
        decode_ours,
        decode_json_to_ours,
    );
}

/// Runs `ours` and `theirs` alternately and prints how many times faster ours is (medians).
fn report_ratio(name: &str, mut ours: impl FnMut(), mut theirs: impl FnMut()) {
    const ROUNDS: usize = 41;
    const BATCH: usize = 50;
    let time = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        for _ in 0..BATCH {
            f();
        }
        start.elapsed().as_secs_f64() / BATCH as f64
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(time(&mut ours));
        b.push(time(&mut theirs));
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (ours, theirs) = (a[ROUNDS / 2], b[ROUNDS / 2]);
    println!(
        "{name}: BONJSON {:.1} µs, serde_json {:.1} µs per mix -> BONJSON is {:.2}x as fast",
        ours * 1e6,
        theirs * 1e6,
        theirs / ours
    );
}

criterion_group!(benches, codec);
criterion_main!(benches);
