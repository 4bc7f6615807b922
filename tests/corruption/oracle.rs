//! Cases and the oracle: what a damaged copy may open as, and the checks the module docs of
//! `main.rs` describe (a prefix of the writes, loss reports, writes after the damaged open).

use std::path::{Path, PathBuf};

use resilient_kv::{Error, Event, KVStore, Value};

use crate::fixture::{Fixture, Kind, open_at};
use crate::support::{Model, Write, apply_model, apply_store};
use crate::{HEADER_SIZE, HEADER_USED, NAMES};

/// What a case allows.
pub(crate) enum Expect {
    /// The store opens with the model after `P >= lower` writes.
    Recover {
        lower: usize,
        /// A loss must be reported (an intact record of the newest generation survives
        /// beyond the damage).
        must_report: bool,
        /// For damage after the snapshot: the report must point into `[record_start,
        /// damage_at]` and cover everything up to `valid_until`.
        at: Option<(usize, usize, usize)>,
    },
    /// Open must fail with this error (and change nothing); `what` names it.
    Refuse {
        accept: fn(&Error) -> bool,
        what: &'static str,
    },
    /// Either of the above (both are defensible for this damage).
    Either {
        lower: usize,
        accept: fn(&Error) -> bool,
    },
}

pub(crate) struct Case {
    /// Describes the damage, enough to reproduce it.
    pub(crate) name: String,
    /// Where the damage is, to group failures.
    pub(crate) region: String,
    /// Bytes of `store.jrna` and `store.jrnb`.
    pub(crate) files: [Vec<u8>; 2],
    pub(crate) buffer: usize,
    pub(crate) expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Intact,
    LossReported,
    LossSilent,
    Refused,
}

pub(crate) struct Failure {
    pub(crate) kind: String,
    pub(crate) detail: String,
}

pub(crate) fn failure(kind: &str, detail: impl Into<String>) -> Failure {
    Failure {
        kind: kind.to_owned(),
        detail: detail.into(),
    }
}

/// The region of `offset` in the newest journal, for grouping.
pub(crate) fn region_of(fx: &Fixture, file: usize, offset: usize) -> String {
    let which = if file == fx.active {
        "newest"
    } else {
        "retired"
    };
    let end = if file == fx.active {
        fx.data_end
    } else {
        fx.inactive_end
    };
    let part = if offset < HEADER_USED {
        "header".to_owned()
    } else if offset < HEADER_SIZE {
        "header padding".to_owned()
    } else if offset >= end {
        "past the data".to_owned()
    } else if file != fx.active {
        "records".to_owned()
    } else {
        match fx.records.iter().find(|r| r.end > offset).unwrap().kind {
            Kind::Snapshot => "snapshot record".to_owned(),
            Kind::Marker => "commit marker".to_owned(),
            Kind::Tail(_) => "record after the marker".to_owned(),
        }
    };
    format!("{which} journal, {part}")
}

/// The expectation for damage to bytes `[from, to)` of one file (the other intact).
pub(crate) fn assess(fx: &Fixture, file: usize, from: usize, to: usize) -> Expect {
    let n = fx.n();
    if file != fx.active {
        // The newest journal is intact and holds everything.
        return Expect::Recover {
            lower: n,
            must_report: false,
            at: None,
        };
    }
    let Some(first) = fx.records.iter().find(|r| r.end > from && r.start < to) else {
        // Only the header (provable from the records), padding, or bytes past the data.
        return Expect::Recover {
            lower: n,
            must_report: false,
            at: None,
        };
    };
    let must_report = fx.records.iter().any(|r| r.start >= to);
    match first.kind {
        Kind::Snapshot | Kind::Marker => Expect::Recover {
            lower: fx.c,
            must_report,
            at: (must_report && first.kind == Kind::Marker).then_some((
                first.start,
                from,
                fx.data_end,
            )),
        },
        Kind::Tail(w) => Expect::Recover {
            lower: w,
            must_report,
            at: must_report.then_some((first.start, from, fx.data_end)),
        },
    }
}

fn contents(store: &KVStore) -> Model {
    store.as_hashmap().into_iter().collect()
}

/// Compares two maps briefly, for messages.
fn diff(found: &Model, expected: &Model) -> String {
    let mut out = Vec::new();
    for (k, v) in found {
        match expected.get(k) {
            None => out.push(format!("extra {k}")),
            Some(e) if e != v => out.push(format!("{k}: {v:?} instead of {e:?}")),
            Some(_) => {}
        }
    }
    for k in expected.keys() {
        if !found.contains_key(k) {
            out.push(format!("missing {k}"));
        }
    }
    let total = out.len();
    out.truncate(4);
    format!("{total} differences: {}", out.join("; "))
}

fn loss_events(store: &KVStore) -> Vec<(PathBuf, u64, u64)> {
    store
        .subscribe()
        .try_iter()
        .filter_map(|e| match e {
            Event::DataLoss {
                path,
                offset,
                lost_bytes,
                ..
            } => Some((path, offset, lost_bytes)),
            _ => None,
        })
        .collect()
}

fn untouched(work: &Path, files: &[Vec<u8>; 2]) -> Result<(), Failure> {
    for (name, expected) in NAMES.iter().zip(files) {
        let now = std::fs::read(work.join(name)).unwrap_or_default();
        if now.len() != expected.len() {
            return Err(failure(
                "refused but changed a file",
                format!("{name}: length {} became {}", expected.len(), now.len()),
            ));
        }
        if let Some(at) = now.iter().zip(expected).position(|(a, b)| a != b) {
            return Err(failure(
                "refused but changed a file",
                format!("{name}: byte {at} changed"),
            ));
        }
    }
    Ok(())
}

pub(crate) fn run_case(fx: &Fixture, work: &Path, case: &Case) -> Result<Outcome, Failure> {
    for (name, bytes) in NAMES.iter().zip(&case.files) {
        std::fs::write(work.join(name), bytes).unwrap();
    }
    match (open_at(work, case.buffer), &case.expect) {
        (Err(e), Expect::Refuse { accept, .. } | Expect::Either { accept, .. }) if accept(&e) => {
            untouched(work, &case.files)?;
            Ok(Outcome::Refused)
        }
        (Err(e), _) => Err(failure("open failed", format!("{e:?}"))),
        (Ok(_), Expect::Refuse { what, .. }) => Err(failure(
            "opened instead of refusing",
            format!("expected {what}"),
        )),
        (
            Ok(store),
            Expect::Recover {
                lower,
                must_report,
                at,
            },
        ) => check_store(fx, work, case, store, *lower, *must_report, *at),
        (Ok(store), Expect::Either { lower, .. }) => {
            check_store(fx, work, case, store, *lower, false, None)
        }
    }
}

fn check_store(
    fx: &Fixture,
    work: &Path,
    case: &Case,
    store: KVStore,
    lower: usize,
    must_report: bool,
    at: Option<(usize, usize, usize)>,
) -> Result<Outcome, Failure> {
    let n = fx.n();
    let found = contents(&store);
    let Some(p) = (lower..=n).rev().find(|&p| fx.models[p] == found) else {
        return Err(match (0..lower).rev().find(|&p| fx.models[p] == found) {
            Some(p) => failure(
                "lost more than the damage covers",
                format!(
                    "the model after {p} writes ({} keys); at least {lower} of {n} writes must \
                     survive",
                    found.len()
                ),
            ),
            None => failure(
                "not the model after any prefix (stale or partial data)",
                format!(
                    "vs all {n} writes: {}; vs the {} before the compaction: {}",
                    diff(&found, &fx.models[n]),
                    fx.c,
                    diff(&found, &fx.models[fx.c])
                ),
            ),
        });
    };
    let events = loss_events(&store);
    let counted = store.stats().data_loss_events;
    if counted != events.len() as u64 {
        return Err(failure(
            "stats and events disagree",
            format!("stats {counted}, events {events:?}"),
        ));
    }
    let lost = p < n && fx.models[p] != fx.models[n];
    if lost && must_report && events.is_empty() {
        return Err(failure(
            "silent loss although intact records follow the damage",
            format!("recovered {p} of {n} writes, no DataLoss event"),
        ));
    }
    if let (true, Some((record_start, damage_at, valid_until))) = (lost, at) {
        let path = work.join(NAMES[fx.active]);
        let points = events.iter().any(|(file, offset, lost_bytes)| {
            let offset = *offset as usize;
            *file == path
                && (record_start..=damage_at).contains(&offset)
                && offset + *lost_bytes as usize >= valid_until
        });
        if !points {
            return Err(failure(
                "the DataLoss report does not say what was lost",
                format!(
                    "expected {} at an offset in [{record_start}, {damage_at}] covering up to \
                     {valid_until}; got {events:?}",
                    path.display()
                ),
            ));
        }
    }
    let outcome = match (lost, events.is_empty()) {
        (false, _) => Outcome::Intact,
        (true, false) => Outcome::LossReported,
        (true, true) => Outcome::LossSilent,
    };

    // The store takes writes: first the write after the prefix, again (its record is byte for
    // byte the one that was damaged, if it was).
    let (next, mut expected) = if p < n {
        (fx.writes[p].clone(), fx.models[p + 1].clone())
    } else {
        let w = Write::Insert("after-damage".into(), Value::Integer(1));
        let mut m = fx.models[n].clone();
        apply_model(&mut m, &w);
        (w, m)
    };
    if let Err(e) = apply_store(&store, &next) {
        return Err(failure(
            "a write after the damaged open failed",
            format!("{e:?}"),
        ));
    }
    drop(store);
    let store = open_at(work, case.buffer)
        .map_err(|e| failure("the reopen after a write failed", format!("{e:?}")))?;
    let again = contents(&store);
    if again != expected {
        return Err(failure(
            "after one more write, the reopen differs (orphaned records replayed?)",
            format!(
                "recovered {p} of {n}, wrote write {p} again; {}",
                diff(&again, &expected)
            ),
        ));
    }
    let repeated = loss_events(&store);
    if !repeated.is_empty() {
        return Err(failure(
            "the reopen after a write reports data loss again",
            format!("{repeated:?}"),
        ));
    }
    // Then a compaction, a write and a reopen.
    store
        .compact()
        .map_err(|e| failure("compact after the damaged open failed", format!("{e:?}")))?;
    let w = Write::Insert("after-compaction".into(), Value::Integer(2));
    apply_store(&store, &w)
        .map_err(|e| failure("a write after compacting failed", format!("{e:?}")))?;
    apply_model(&mut expected, &w);
    drop(store);
    let store = open_at(work, case.buffer)
        .map_err(|e| failure("the reopen after compacting failed", format!("{e:?}")))?;
    let last = contents(&store);
    if last != expected {
        return Err(failure(
            "after compacting, the reopen differs",
            diff(&last, &expected),
        ));
    }
    let reported = loss_events(&store);
    if !reported.is_empty() {
        return Err(failure(
            "after compacting, the reopen reports data loss",
            format!("{reported:?}"),
        ));
    }
    Ok(outcome)
}
