//! Truncated files: either or both journals cut to 0, to less than a header, to odd sizes in
//! each region, past the data, and extended.

use resilient_kv::Error;

use crate::fixture::{Kind, pristine};
use crate::oracle::{Case, Expect, assess, region_of};
use crate::runner::Runner;
use crate::{BUFFER, FRAME_SIZE, HEADER_SIZE, HEADER_USED, NAMES};

fn is_unreadable(e: &Error) -> bool {
    matches!(e, Error::Unreadable { .. })
}

/// Files truncated to 0, to less than a header, and to odd sizes; one file or both.
#[test]
fn truncated_files() {
    let mut runner = Runner::new("truncated_files");
    let fx = runner.fx;
    let (active, retired) = (fx.active, 1 - fx.active);
    let marker = fx.records.iter().find(|r| r.kind == Kind::Marker).unwrap();
    // The snapshot's keys are packed into batch records: the middle of the first one.
    let snapshot = fx
        .records
        .iter()
        .find(|r| r.kind == Kind::Snapshot)
        .unwrap();
    let snapshot_middle = (snapshot.start + snapshot.end) / 2;
    let sizes_active = [
        0,
        1,
        7,
        HEADER_USED - 1,
        HEADER_USED,
        1000,
        HEADER_SIZE - 1,
        HEADER_SIZE,
        HEADER_SIZE + 1,
        HEADER_SIZE + FRAME_SIZE + 3,
        snapshot_middle,
        marker.start,
        marker.start + 5,
        marker.end,
        marker.end + 9,
        fx.data_end - 1,
        fx.data_end,
        fx.data_end + 13,
        BUFFER / 2 + 3,
        BUFFER - 1,
        BUFFER + 5,
        BUFFER + HEADER_SIZE + 1,
    ];
    for size in sizes_active {
        let mut files = pristine(fx);
        files[active].resize(size, 0);
        runner.run(Case {
            name: format!("{} (newest) truncated to {size} bytes", NAMES[active]),
            region: format!(
                "newest journal truncated into the {}",
                region_of(fx, active, size)
            ),
            files,
            buffer: BUFFER,
            expect: assess(fx, active, size, usize::MAX),
        });
    }
    let sizes_retired = [
        0,
        1,
        HEADER_USED - 1,
        HEADER_USED,
        HEADER_SIZE - 1,
        HEADER_SIZE + 7,
        fx.inactive_end / 2 + 1,
        fx.inactive_end - 1,
        fx.inactive_end,
        BUFFER - 3,
        BUFFER + 3,
    ];
    for size in sizes_retired {
        let mut files = pristine(fx);
        files[retired].resize(size, 0);
        runner.run(Case {
            name: format!("{} (retired) truncated to {size} bytes", NAMES[retired]),
            region: "retired journal truncated".into(),
            files,
            buffer: BUFFER,
            expect: assess(fx, retired, size, usize::MAX),
        });
    }
    // Both files: what a case allows depends on what is left of either.
    let both: [(usize, Expect, &str); 8] = [
        (
            0,
            // Two empty files are a new store: the loss is total and unprovable.
            Expect::Recover {
                lower: 0,
                must_report: false,
                at: None,
            },
            "both empty",
        ),
        (
            1,
            Expect::Refuse {
                accept: is_unreadable,
                what: "Unreadable",
            },
            "both headers damaged, no records",
        ),
        (
            HEADER_USED - 1,
            Expect::Refuse {
                accept: is_unreadable,
                what: "Unreadable",
            },
            "both headers damaged, no records",
        ),
        (
            HEADER_USED,
            // Committed headers without records: indistinguishable from a power cut right
            // after compacting an empty map; refusing is as defensible.
            Expect::Either {
                lower: 0,
                accept: is_unreadable,
            },
            "both headers intact, no records",
        ),
        (
            HEADER_SIZE,
            Expect::Either {
                lower: 0,
                accept: is_unreadable,
            },
            "both headers intact, no records",
        ),
        (
            HEADER_SIZE + 7,
            Expect::Either {
                lower: 0,
                accept: is_unreadable,
            },
            "both headers intact, first records torn",
        ),
        (
            BUFFER - 1,
            Expect::Recover {
                lower: fx.n(),
                must_report: false,
                at: None,
            },
            "both cut past their data",
        ),
        (
            BUFFER + 11,
            Expect::Recover {
                lower: fx.n(),
                must_report: false,
                at: None,
            },
            "both extended",
        ),
    ];
    for (size, expect, what) in both {
        let mut files = pristine(fx);
        for f in &mut files {
            f.resize(size, 0);
        }
        runner.run(Case {
            name: format!("both files truncated to {size} bytes"),
            region: format!("both files: {what}"),
            files,
            buffer: BUFFER,
            expect,
        });
    }
    // The same damage opened with a larger journal size: a refusal must still change nothing.
    for size in [1, HEADER_USED - 1] {
        let mut files = pristine(fx);
        for f in &mut files {
            f.resize(size, 0);
        }
        runner.run(Case {
            name: format!(
                "both files truncated to {size} bytes, opened with buffer_size {}",
                4 * BUFFER
            ),
            region: "both files: headers damaged, no records, larger buffer_size".into(),
            files,
            buffer: 4 * BUFFER,
            expect: Expect::Refuse {
                accept: is_unreadable,
                what: "Unreadable",
            },
        });
    }
    runner.finish();
}
