//! Replay on two threads, split by position.
//!
//! The first worker reads from the start of the records up to the first record the second
//! finds at or after the middle of the data; the second reads from there on, keeping
//! deletions and clears as such so they can override the first worker's keys. The first
//! worker must arrive exactly where the second began, or the second's work is not used: if
//! the first stops earlier (damage, or the end of the data), replay ends there as it would on
//! one thread; if it steps over that point (what the second took for a record start was inside
//! a record), replay starts over on one thread.

use super::format::Frames;
use super::{
    DecodeOptions, HEADER_SIZE, Hashed, Keys, PARALLEL_FROM, Pending, Replayed, decode_live, scan,
    whole_attempt,
};

/// How far past the middle of the data the second worker looks for the start of a record
/// before replay gives up splitting (a record that long straddles the middle).
const SYNC_WINDOW: usize = 1 << 20;

/// How far past a probe point [`split_point`] looks for a record of the generation.
const PROBE: usize = 64 << 10;

/// Where to split a replay of the records below `limit`: the middle of the data. The data ends
/// where records of this generation stop, which a binary search finds by probing for a valid
/// record within [`PROBE`] bytes of each point: zeros and the stale records of an older
/// generation (a reused file keeps them past the end) both count as no data, so a journal that
/// is mostly empty still splits its records in two. Records longer than the probe only move
/// the split point. `None` if the data is too small to be worth a second thread.
pub(super) fn split_point(bytes: &[u8], limit: usize, frames: &Frames) -> Option<usize> {
    let limit = limit.min(bytes.len());
    let continues = |at: usize| {
        let until = at.saturating_add(PROBE).min(limit);
        frames
            .find_checking_at_most(bytes, at, until, 2 * PROBE)
            .is_some()
    };
    let (mut lo, mut hi) = (HEADER_SIZE, limit);
    while hi.saturating_sub(lo) > PROBE {
        let mid = lo + (hi - lo) / 2;
        if continues(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let data = hi.checked_sub(HEADER_SIZE)?;
    (data >= PARALLEL_FROM).then_some(HEADER_SIZE + data / 2)
}

/// The first valid record at or after `at` (within [`SYNC_WINDOW`], and checksumming at most
/// twice that), where the second worker starts; `None` gives up splitting. Only a hint: the
/// second worker's part counts only if the first worker arrives exactly there.
pub(super) fn sync_point(bytes: &[u8], at: usize, limit: usize, frames: &Frames) -> Option<usize> {
    let until = at.saturating_add(SYNC_WINDOW).min(limit);
    frames
        .find_checking_at_most(bytes, at, until, 2 * SYNC_WINDOW)
        .map(|(start, _)| start)
}

pub(super) fn split_attempt(
    bytes: &[u8],
    limit: usize,
    sync: usize,
    generation: u64,
    decode: &DecodeOptions,
    keys: Keys<'_>,
) -> Result<Replayed, usize> {
    let (first, second) = on_two_threads(
        || scan(bytes, HEADER_SIZE, sync, generation, decode, keys, 0),
        || scan(bytes, sync, limit, generation, decode, keys, 0),
    );
    let first = first?;
    if first.end < sync {
        // Replay stops before the second worker's part, which then does not count.
        let entries = decode_live(first.live.into_entries(), decode)?;
        return Ok(Replayed {
            entries,
            end: first.end,
            stop: first.stop,
            committed: first.committed,
        });
    }
    if first.end > sync {
        return whole_attempt(bytes, limit, generation, decode, keys);
    }
    let second = second?;
    // The first part's keys survive unless the second part wrote them again (or cleared
    // everything). The survivors are decoded in two halves at once.
    let overridden = |key: &Hashed<'_>| second.cleared || second.live.contains_key(key);
    let survivors: Vec<(Hashed<'_>, Pending<'_>)> = first
        .live
        .iter()
        .filter(|(k, _)| !overridden(k))
        .chain(second.live.iter())
        .filter(|(_, p)| p.value.is_some())
        .map(|(k, p)| (*k, *p))
        .collect();
    let (one, two) = survivors.split_at(survivors.len() / 2);
    let (first_entries, second_entries) = on_two_threads(
        || decode_live(one.iter().copied(), decode),
        || decode_live(two.iter().copied(), decode),
    );
    let (mut entries, rest) = match (first_entries, second_entries) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(a), Err(b)) => return Err(a.min(b)),
        (Err(bad), _) | (_, Err(bad)) => return Err(bad),
    };
    entries.extend(rest);
    Ok(Replayed {
        entries,
        end: second.end,
        stop: second.stop,
        committed: first.committed || second.committed,
    })
}

/// Runs `a` here and `b` on a scoped thread, or after `a` here if no thread can be started
/// (the system is out of threads): slower, never a failed open.
fn on_two_threads<A, B>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B)
where
    A: Send,
    B: Send,
{
    let job = std::sync::Mutex::new(Some(b));
    std::thread::scope(|scope| {
        let other = std::thread::Builder::new()
            .name("rkv-replay".into())
            .spawn_scoped(scope, || match job.lock().map(|mut j| j.take()) {
                Ok(Some(b)) => Some(b()),
                _ => None,
            });
        let here = a();
        let there = match other {
            Ok(thread) => match thread.join() {
                Ok(result) => result,
                // Replay has no panicking paths; if one did panic, the open fails as it would
                // on one thread.
                Err(panic) => std::panic::resume_unwind(panic),
            },
            // The closure went with the failed spawn; it is still in `job`.
            Err(_) => None,
        };
        let there = match there {
            Some(result) => result,
            None => match job.lock().map(|mut j| j.take()) {
                Ok(Some(b)) => b(),
                // Unreachable: the job is taken only by a thread that returned its result.
                _ => std::panic::resume_unwind(Box::new("replay job lost")),
            },
        };
        (here, there)
    })
}
