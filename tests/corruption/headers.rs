//! Headers and names: zeroed header pages, swapped file names, and future format versions.

use resilient_kv::Error;

use crate::fixture::{header, open_at, pristine};
use crate::oracle::{Case, Expect, assess};
use crate::runner::Runner;
use crate::{BUFFER, FRAME_SIZE, HEADER_CRC_OFFSET, HEADER_SIZE, NAMES, VERSION_OFFSET};

/// The header page of the newest, the retired, or both journals zeroed.
#[test]
fn zeroed_header_pages() {
    let mut runner = Runner::new("zeroed_header_pages");
    let fx = runner.fx;
    let n = fx.n();
    let intact = || Expect::Recover {
        lower: n,
        must_report: false,
        at: None,
    };
    for (which, targets) in [
        ("newest", vec![fx.active]),
        ("retired", vec![1 - fx.active]),
        ("both", vec![0, 1]),
    ] {
        for swap in [false, true] {
            if swap && which != "both" {
                continue;
            }
            let mut files = pristine(fx);
            for &t in &targets {
                files[t][..HEADER_SIZE].fill(0);
            }
            if swap {
                files.swap(0, 1);
            }
            // Every record is intact: each file's generation is provable from its records,
            // so the newest must win and nothing is lost.
            runner.run(Case {
                name: format!(
                    "header page of {which} journal zeroed{}",
                    if swap { ", file names swapped" } else { "" }
                ),
                region: format!(
                    "zeroed header page of {which} journal{}",
                    if swap { ", names swapped" } else { "" }
                ),
                files,
                buffer: BUFFER,
                expect: intact(),
            });
        }
    }
    // And the newest header zeroed together with the start of its records: the retired
    // journal, which holds every write up to the compaction, must win.
    let mut files = pristine(fx);
    files[fx.active][..HEADER_SIZE + FRAME_SIZE].fill(0);
    runner.run(Case {
        name: "header page and first frame of the newest journal zeroed".into(),
        region: "newest journal: header and first frame zeroed".into(),
        files,
        buffer: BUFFER,
        expect: assess(fx, fx.active, 0, HEADER_SIZE + FRAME_SIZE),
    });
    runner.finish();
}

/// `.jrna` and `.jrnb` exchanged: the election is by generation, never by name.
#[test]
fn swapped_file_names() {
    let mut runner = Runner::new("swapped_file_names");
    let fx = runner.fx;
    let mut files = pristine(fx);
    files.swap(0, 1);
    runner.run(Case {
        name: "file names swapped".into(),
        region: "swapped names".into(),
        files,
        buffer: BUFFER,
        expect: Expect::Recover {
            lower: fx.n(),
            must_report: false,
            at: None,
        },
    });
    runner.finish();
}

/// Writes `version` into a header and recomputes its CRC: a clean future-version file.
pub(crate) fn set_version(file: &mut [u8], version: u32) {
    file[VERSION_OFFSET..VERSION_OFFSET + 4].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&file[..HEADER_CRC_OFFSET]);
    file[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(header(file).map(|h| h.0), Some(version));
}

/// A header of a future format version stops the open with `UnsupportedVersion` naming it, and
/// neither file changes (not even its length when the caller asks for larger journals).
#[test]
fn future_format_version_is_refused_and_untouched() {
    let mut runner = Runner::new("future_format_version_is_refused_and_untouched");
    let fx = runner.fx;
    for (which, target) in [("newest", fx.active), ("retired", 1 - fx.active)] {
        for (version, buffer) in [(2, BUFFER), (u32::MAX, BUFFER), (2, 4 * BUFFER)] {
            let mut files = pristine(fx);
            set_version(&mut files[target], version);
            let accept: fn(&Error) -> bool = match (target == 0, version) {
                (true, 2) => |e| {
                    matches!(e, Error::UnsupportedVersion { path, found: 2, supported: 1 }
                        if path.ends_with(NAMES[0]))
                },
                (true, _) => |e| {
                    matches!(e, Error::UnsupportedVersion { path, found: u32::MAX, supported: 1 }
                        if path.ends_with(NAMES[0]))
                },
                (false, 2) => |e| {
                    matches!(e, Error::UnsupportedVersion { path, found: 2, supported: 1 }
                        if path.ends_with(NAMES[1]))
                },
                (false, _) => |e| {
                    matches!(e, Error::UnsupportedVersion { path, found: u32::MAX, supported: 1 }
                        if path.ends_with(NAMES[1]))
                },
            };
            runner.run(Case {
                name: format!(
                    "{} ({which}) at format version {version}, opened with buffer_size {buffer}",
                    NAMES[target]
                ),
                region: format!("future version in the {which} journal, buffer_size {buffer}"),
                files,
                buffer,
                expect: Expect::Refuse {
                    accept,
                    what: "UnsupportedVersion naming the file",
                },
            });
        }
    }
    // After the refusal, the restored files open normally (nothing was left locked).
    let mut files = pristine(fx);
    set_version(&mut files[fx.active], 2);
    for (name, bytes) in NAMES.iter().zip(&files) {
        std::fs::write(runner.work.path().join(name), bytes).unwrap();
    }
    assert!(matches!(
        open_at(runner.work.path(), BUFFER),
        Err(Error::UnsupportedVersion { .. })
    ));
    runner.run(Case {
        name: "restored after a refusal".into(),
        region: "restored".into(),
        files: pristine(fx),
        buffer: BUFFER,
        expect: Expect::Recover {
            lower: fx.n(),
            must_report: false,
            at: None,
        },
    });
    runner.finish();
}
