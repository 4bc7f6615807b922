//! Random bit flips: one flipped bit at a random offset of either file, each case reproducible
//! from its seed.

use resilient_kv::testing::Rng;

use crate::fixture::pristine;
use crate::oracle::{Case, assess, region_of};
use crate::runner::Runner;
use crate::{BUFFER, FRAME_SIZE, HEADER_SIZE, HEADER_USED, NAMES};

/// Bit flips run by default (`RKV_CORRUPTION_CASES` overrides).
const DEFAULT_FLIPS: u64 = 20_000;

/// splitmix64: a well-mixed seed for case `i` of a run, so each case can be rerun alone.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One flipped bit at a random offset of either file, tens of thousands of times.
#[test]
fn random_bit_flips() {
    let env = |name: &str| {
        std::env::var(name).ok().map(|s| {
            let s = s.trim();
            s.strip_prefix("0x")
                .map_or_else(|| s.parse(), |hex| u64::from_str_radix(hex, 16))
                .unwrap_or_else(|_| panic!("{name}={s} is not a number"))
        })
    };
    let seed = env("RKV_CORRUPTION_SEED").unwrap_or(0x5eed_f11b);
    let count = env("RKV_CORRUPTION_CASES").unwrap_or(DEFAULT_FLIPS);
    let case_seeds: Vec<u64> = match env("RKV_CORRUPTION_CASE_SEED") {
        Some(one) => {
            println!("random_bit_flips: the single case RKV_CORRUPTION_CASE_SEED={one:#x}");
            vec![one]
        }
        None => {
            println!("random_bit_flips: RKV_CORRUPTION_SEED={seed:#x}, {count} cases");
            (0..count).map(|i| mix(seed.wrapping_add(i))).collect()
        }
    };
    let mut runner = Runner::new("random_bit_flips");
    let fx = runner.fx;
    for case_seed in case_seeds {
        let mut rng = Rng::from_state(case_seed);
        let file = if rng.below(4) == 0 {
            1 - fx.active
        } else {
            fx.active
        };
        let len = fx.files[file].len();
        let end = if file == fx.active {
            fx.data_end
        } else {
            fx.inactive_end
        };
        // Mostly where the data is; some in the header, some anywhere.
        let offset = match rng.below(16) {
            0 => rng.below(HEADER_USED as u64) as usize,
            1..=3 => rng.below(len as u64) as usize,
            _ => HEADER_SIZE + rng.below((end + FRAME_SIZE - HEADER_SIZE) as u64) as usize,
        };
        let bit = rng.below(8) as u8;
        let mut files = pristine(fx);
        files[file][offset] ^= 1 << bit;
        runner.run(Case {
            name: format!(
                "bit {bit} of byte {offset} of {} flipped (RKV_CORRUPTION_CASE_SEED={case_seed:#x})",
                NAMES[file]
            ),
            region: region_of(fx, file, offset),
            files,
            buffer: BUFFER,
            expect: assess(fx, file, offset, offset + 1),
        });
    }
    if runner.cases() >= 100 {
        // Most flips land in the records (56% of the default sweep's cases lose data and
        // report it): a sweep whose flips never reached them would report none.
        runner.require("loss reported", runner.cases() / 10);
    }
    runner.finish();
}
