//! Torn tails: the newest journal cut at every byte of its last records.

use crate::fixture::pristine;
use crate::oracle::{Case, assess, region_of};
use crate::runner::Runner;
use crate::{BUFFER, NAMES};

/// Records at the end of the newest journal cut at every byte.
const TAIL_RECORDS_CUT: usize = 5;

/// Cuts the newest journal at every byte offset of its last records: the file truncated there,
/// and (separately) zero-filled from there to its end.
#[test]
fn torn_tail_cut_at_every_byte_of_the_last_records() {
    let mut runner = Runner::new("torn_tail_cut_at_every_byte_of_the_last_records");
    let fx = runner.fx;
    let from = fx.records[fx.records.len() - TAIL_RECORDS_CUT].start;
    for cut in from..=fx.data_end {
        for truncate in [true, false] {
            let mut files = pristine(fx);
            let file = &mut files[fx.active];
            if truncate {
                file.truncate(cut);
            } else {
                file[cut..].fill(0);
            }
            let how = if truncate { "truncated" } else { "zero-filled" };
            runner.run(Case {
                name: format!("{} {how} at byte {cut}", NAMES[fx.active]),
                region: format!("{how} cut in the {}", region_of(fx, fx.active, cut)),
                files,
                buffer: BUFFER,
                expect: assess(fx, fx.active, cut, usize::MAX),
            });
        }
    }
    // Nearly every cut loses the records after it, silently (518 of 578): cuts that never
    // reached the records would lose nothing.
    runner.require("unprovable loss, silent", runner.cases() / 2);
    runner.finish();
}
