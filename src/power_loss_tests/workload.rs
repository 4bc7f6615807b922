//! Workloads of the seeded runs: a random profile of the store, random writes and one life of
//! them.

use std::path::Path;

use crate::Value;
use crate::options::{Builder, Durability};
use crate::testing::Rng;

use super::model::{Write, Writer};

#[derive(Debug, Clone, Copy)]
pub(super) struct Profile {
    buffer: usize,
    max_size: usize,
    hwm: f32,
    pub(super) durability: Durability,
    /// Keys of the variable-size records (ramps up from 10 over a life).
    keys: u64,
    value_max: u64,
}

impl Profile {
    pub(super) fn config(&self) -> Builder {
        Builder::new(Path::new("mem"))
            .buffer_size(self.buffer)
            .max_size(self.max_size)
            .high_water_mark(self.hwm)
            .durability(self.durability)
    }

    pub(super) fn random(rng: &mut Rng) -> Self {
        let (max_size, keys, value_max) = match rng.below(3) {
            0 => (16 * 1024, 40, 60),
            1 => (64 * 1024, 120, 200),
            _ => (256 * 1024, 160, 300),
        };
        Profile {
            buffer: 16 * 1024,
            max_size,
            hwm: [0.5, 0.8, 1.0][rng.index(3)],
            durability: if rng.chance(25) {
                Durability::Sync
            } else {
                Durability::Process
            },
            keys,
            value_max,
        }
    }
}

/// A record of fixed size (fixed key and value lengths): journals full of equal-sized records
/// are where a record boundary after damage lines up with an old one.
pub(super) fn fixed_write(rng: &mut Rng) -> Write {
    Write::Insert(
        format!("f{:03}", rng.below(60)),
        Value::from(format!("{:016}", rng.below(10_000_000_000_000_000))),
    )
}

fn random_value(rng: &mut Rng, max: u64) -> Value {
    match rng.below(3) {
        0 => Value::Integer(rng.next_u64() as i64),
        1 => Value::from("v".repeat(rng.below(max) as usize)),
        _ => Value::from(vec![
            Value::Boolean(true),
            Value::Integer(rng.below(1000) as i64),
        ]),
    }
}

fn random_write(rng: &mut Rng, keys: u64, value_max: u64) -> Write {
    let key = |rng: &mut Rng| format!("k{:03}", rng.below(keys));
    match rng.below(200) {
        0 => Write::Clear,
        1..=30 => Write::Remove(key(rng)),
        31..=50 => Write::Batch(
            (0..2 + rng.below(4))
                .map(|_| {
                    let k = key(rng);
                    let v = (!rng.chance(25)).then(|| random_value(rng, value_max));
                    (k, v)
                })
                .collect(),
        ),
        51..=120 => fixed_write(rng),
        _ => {
            let k = key(rng);
            Write::Insert(k, random_value(rng, value_max))
        }
    }
}

/// One life: `count` random writes with occasional `sync()` and `compact()`.
pub(super) fn random_life(w: &mut Writer<'_>, rng: &mut Rng, profile: &Profile, count: usize) {
    for i in 0..count {
        let keys = 10 + profile.keys * i as u64 / count as u64;
        match rng.below(100) {
            0..=3 => w.sync(),
            4 => w.compact(),
            _ => w.write(random_write(rng, keys, profile.value_max)),
        }
    }
}
