//! Mapping the active journal's pages writable ahead of the writers (on the compactor thread).
//!
//! A journal page that was flushed, or only ever read, is mapped write-protected (or not at
//! all, if a flush or a `begin` unmapped it: `Storage::unmap_settled`), and on a filesystem
//! that tracks dirty pages (ext4) the writer's first store to it is a fault into the
//! filesystem: one per 60-odd short records, 30-50 ns per write of the writer's
//! system time. The compactor takes those faults instead, a stretch ahead of the writers,
//! whenever they ask for the next one: at the first write to a new journal (served after the
//! compaction that made it, so after its last flush) and then halfway through each stretch.
//! `docs/design.md` has the measurements and the cost (dirty zero pages).

use crate::shared::Shared;
use crate::sync::Arc;

/// How far ahead of the writers the journal's pages are mapped writable, at their request
/// ([`Command::Prefault`](crate::compactor::Command::Prefault)); about 17,000 records of 60
/// bytes. Bounded because the pages are dirtied: one
/// the writers do not reach within the kernel's dirty expiry (30 s by default) is written back
/// as zeros before they fill it (a write of at most this much).
pub(crate) const PREFAULT_AHEAD: usize = 1024 * 1024;

/// Maps the stretch a writer asked for writable, if its journal is still the active one.
pub(crate) fn prefault_ahead(shared: &Shared, request: &PrefaultRequest) {
    let active = Arc::clone(&shared.writer.lock().active);
    if active.generation() == request.generation {
        active.prefault_for_writers(request.from, request.to);
    }
}

/// The bytes `[from, to)` of the journal of `generation`, to map writable for the writers.
pub(crate) struct PrefaultRequest {
    pub(crate) generation: u64,
    pub(crate) from: usize,
    pub(crate) to: usize,
}

/// The writers' side: what was asked for in the active journal, and when to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrefaultAhead {
    generation: u64,
    /// Everything below this was mapped writable, or asked for.
    asked_until: usize,
    /// The end at which the writers ask for the next stretch.
    ask_at: usize,
}

/// After open, writers ask for nothing until they have appended this much: a store written
/// once in a while never dirties pages ahead of it.
const LEAD_IN: usize = 256 * 1024;

impl PrefaultAhead {
    /// For the journal a store opened on, ending at `end`.
    pub(crate) fn at_open(generation: u64, end: usize) -> Self {
        PrefaultAhead {
            generation,
            asked_until: end,
            ask_at: end + LEAD_IN,
        }
    }

    /// For a new journal ending at `end`: writers are clearly at work, so the first write
    /// asks for the first stretch.
    pub(crate) fn after_swap(generation: u64, end: usize) -> Self {
        PrefaultAhead {
            generation,
            asked_until: end,
            ask_at: end,
        }
    }

    /// The stretch to ask for now that the active journal of `generation` ends at `end`: the
    /// next [`PREFAULT_AHEAD`] bytes, once the writers are halfway through the last stretch.
    pub(crate) fn due(&mut self, generation: u64, end: usize) -> Option<PrefaultRequest> {
        if generation != self.generation {
            *self = Self::at_open(generation, end);
            return None;
        }
        if end < self.ask_at {
            return None;
        }
        let from = self.asked_until.max(end);
        let to = end + PREFAULT_AHEAD;
        self.asked_until = to;
        self.ask_at = end + PREFAULT_AHEAD / 2;
        Some(PrefaultRequest {
            generation,
            from,
            to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After open nothing is asked for during the lead-in; then each request starts where the
    /// last one ended and reaches a stretch past the end, asked for again halfway through it.
    /// After a swap the first write asks at once.
    #[test]
    fn requests_follow_the_writers() {
        let kib = 1024;
        let mut ahead = PrefaultAhead::at_open(5, 4 * kib);
        assert!(ahead.due(5, 100 * kib).is_none());
        let first = ahead.due(5, 260 * kib).unwrap();
        assert_eq!(
            (first.generation, first.from, first.to),
            (5, 260 * kib, 1284 * kib)
        );
        assert!(ahead.due(5, 700 * kib).is_none());
        let second = ahead.due(5, 772 * kib).unwrap();
        assert_eq!((second.from, second.to), (1284 * kib, 1796 * kib));
        let mut swapped = PrefaultAhead::after_swap(6, 600 * kib);
        let third = swapped.due(6, 601 * kib).unwrap();
        assert_eq!((third.from, third.to), (601 * kib, 1625 * kib));
        assert!(swapped.due(6, 1000 * kib).is_none());
        let fourth = swapped.due(6, 1113 * kib).unwrap();
        assert_eq!((fourth.from, fourth.to), (1625 * kib, 2137 * kib));
        // A generation it did not know of starts over as after open.
        assert!(swapped.due(7, 5000 * kib).is_none());
        assert_eq!(swapped, PrefaultAhead::at_open(7, 5000 * kib));
    }
}
