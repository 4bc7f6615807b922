//! When an automatic compaction must start at the latest so that it ends before the writers,
//! at the rate they are writing, fill the active journal.
//!
//! The high-water mark says when a compaction is *worth* starting; it says nothing about how
//! long the compaction will take or how fast the writers use the room left. A compaction that
//! is still running when the journal fills makes every writer wait for its swap (measured on
//! this repository's machine: one writer at about 60 MB/s of records filled the last 20% of a
//! 16 MiB journal in about 55 ms, while the first compaction of 100,000 keys took 60-140 ms,
//! most of it flushing to disk). So the writer measures its own rate of appending, a window of
//! the journal at a time, and the store starts a compaction early enough that the room left
//! lasts [`MARGIN`] times the expected duration at that rate. The expected duration is the
//! last compaction's, scaled by how many more live keys there are now than it copied (a store
//! still filling up copies more each time), or before the first one an estimate from the
//! bytes it will copy.
//!
//! Never earlier than the earliest start the early-start levels allow (an eighth of the usual
//! distance past the live data): a burst of writes against a small journal would otherwise
//! run compaction after compaction, each with its flushes, to save writers a wait of a few
//! milliseconds.

use std::time::{Duration, Instant};

/// How many times the expected duration of a compaction the room left must last.
const MARGIN: f64 = 2.0;

/// The copying speed assumed for a compaction before one has been measured: it writes at most
/// the journal's used bytes and flushes them (this machine's disk did 45-100 MB/s).
const FIRST_GUESS_BYTES_PER_SEC: f64 = 64.0 * 1024.0 * 1024.0;

/// A compaction of fewer live keys than this takes mostly its fixed cost (its flushes): its
/// duration is scaled to the keys there are now as if it had copied this many. (Scaled per
/// key, one key copied in 5 ms predicted over two minutes for 26,000 keys, and the next
/// compaction started at its earliest.)
const FEW_KEYS: usize = 1_000;

/// A journal is measured in windows of this fraction of its capacity...
const WINDOWS_PER_JOURNAL: usize = 32;
/// ...but never smaller than this many bytes (tiny journals would read the clock per write).
const MIN_WINDOW: usize = 4096;

/// The writer's measure of its rate and the latest start it implies (under the writer lock).
#[derive(Debug)]
pub(crate) struct Pace {
    /// Position past which a compaction starts however far the high-water mark is; `usize::MAX`
    /// while not known or while pacing is suspended.
    pub(crate) latest_start: usize,
    /// Position at which the writer next reads the clock.
    next_check: usize,
    /// The earliest position the latest start may be (see the module's documentation).
    floor: usize,
    /// Where and when the current window began.
    window: (usize, Instant),
    /// Bytes per second appended in the last complete window.
    rate: Option<f64>,
    /// How long the last compaction took from its start to its swap, and the live keys it
    /// left.
    last: Option<(Duration, usize)>,
    /// Live keys at the last check.
    keys: usize,
    /// Cleared after a failed compaction (its back-off must hold), set again by a swap.
    enabled: bool,
}

impl Pace {
    /// Pacing for a journal whose used bytes end at `end`, first measured from `now`, that
    /// never starts a compaction before `floor`.
    pub(crate) fn new(end: usize, capacity: usize, floor: usize, now: Instant) -> Self {
        Pace {
            latest_start: usize::MAX,
            next_check: end + window(capacity),
            floor,
            window: (end, now),
            rate: None,
            last: None,
            keys: 0,
            enabled: true,
        }
    }

    /// Whether the writer must call [`Pace::check`] now that the journal ends at `end`.
    #[inline]
    pub(crate) fn due(&self, end: usize) -> bool {
        end >= self.next_check
    }

    /// Closes the current window at `end` (read at `now`, with `keys` live keys), measures the
    /// rate over it and recomputes the latest start for a journal whose non-reserved room
    /// ends at `room_end`.
    pub(crate) fn check(
        &mut self,
        end: usize,
        capacity: usize,
        room_end: usize,
        keys: usize,
        now: Instant,
    ) {
        self.keys = keys;
        let (from, at) = self.window;
        let seconds = now.saturating_duration_since(at).as_secs_f64();
        if end > from && seconds > 0.0 {
            self.rate = Some((end - from) as f64 / seconds);
        }
        self.window = (end, now);
        self.next_check = end + window(capacity);
        self.recompute(end, room_end);
    }

    /// A compaction swapped in a journal whose used bytes end at `end`, `duration` after it
    /// started: the next one is expected to take about as long, and starts at `floor` at the
    /// earliest.
    pub(crate) fn swapped(&mut self, duration: Duration, journal: Room, now: Instant) {
        let Room {
            end,
            capacity,
            room_end,
            floor,
            copied_keys,
            live_keys,
        } = journal;
        self.last = Some((duration, copied_keys));
        self.keys = live_keys;
        self.floor = floor;
        self.enabled = true;
        self.window = (end, now);
        self.next_check = end + window(capacity);
        self.recompute(end, room_end);
    }

    /// A compaction failed: its back-off decides the next start until a compaction swaps.
    pub(crate) fn suspend(&mut self) {
        self.enabled = false;
        self.latest_start = usize::MAX;
    }

    /// How long the last compaction took to its swap, once one has.
    #[cfg(test)]
    pub(crate) fn last_duration(&self) -> Option<Duration> {
        self.last.map(|(duration, _)| duration)
    }

    fn recompute(&mut self, end: usize, room_end: usize) {
        self.latest_start = self.latest_start_at(end, room_end);
        // Measure again before the start this rate implies, however close it is: a rate kept
        // from before a swap would otherwise start every later compaction at the floor, long
        // after the writers slowed down.
        if self.latest_start > end {
            self.next_check = self.next_check.min(self.latest_start);
        }
    }

    fn latest_start_at(&self, end: usize, room_end: usize) -> usize {
        match self.rate {
            Some(rate) if self.enabled => {
                let expected = match self.last {
                    Some((duration, copied)) if copied > 0 => {
                        let copied = copied.max(FEW_KEYS);
                        duration.as_secs_f64() * (self.keys as f64 / copied as f64).max(1.0)
                    }
                    // Nothing measured, or a compaction of nothing (after a clear).
                    _ => end as f64 / FIRST_GUESS_BYTES_PER_SEC,
                };
                let room = rate * expected * MARGIN;
                let latest = if room.is_finite() && room < room_end as f64 {
                    room_end - room as usize
                } else {
                    0
                };
                latest.max(self.floor)
            }
            _ => usize::MAX,
        }
    }
}

/// The journal a swap put in place, as the pace needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Room {
    /// Where its used bytes end.
    pub(crate) end: usize,
    pub(crate) capacity: usize,
    /// Where the room ordinary writes may use ends (the capacity less the removals' reserve).
    pub(crate) room_end: usize,
    /// The earliest a compaction may start in it.
    pub(crate) floor: usize,
    /// The live keys the compaction copied into it (the map's size at its start).
    pub(crate) copied_keys: usize,
    /// The live keys at the swap (the writers went on meanwhile).
    pub(crate) live_keys: usize,
}

fn window(capacity: usize) -> usize {
    (capacity / WINDOWS_PER_JOURNAL).max(MIN_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    /// Drives a writer appending `rate` bytes per second from `from` to `to`, checking
    /// wherever the pace asks to, as the write path does.
    fn write(pace: &mut Pace, t: &mut Instant, from: usize, to: usize, rate: f64) {
        let capacity = 16 * MIB;
        let mut end = from;
        while end < to {
            let step = (to - end).min(64);
            end += step;
            *t += Duration::from_secs_f64(step as f64 / rate);
            if pace.due(end) {
                let keys = pace.keys;
                pace.check(end, capacity, capacity - capacity / 32, keys, *t);
            }
        }
    }

    /// A pace for a 16 MiB journal after a writer appended `to` bytes at `rate` per second from
    /// its start, and the (simulated) time it finished.
    fn after_writing(to: usize, rate: f64) -> (Pace, Instant) {
        let mut t = Instant::now();
        let mut pace = Pace::new(0, 16 * MIB, 0, t);
        write(&mut pace, &mut t, 0, to, rate);
        (pace, t)
    }

    /// A 16 MiB journal after a swap, its data ending at `end`, holding 1,000 live keys.
    fn room(end: usize, room_end: usize, floor: usize) -> Room {
        Room {
            end,
            capacity: 16 * MIB,
            room_end,
            floor,
            copied_keys: 1000,
            live_keys: 1000,
        }
    }

    #[test]
    fn a_fast_writer_starts_the_first_compaction_early_enough_to_finish_before_the_end() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut pace = Pace::new(0, 16 * MIB, 0, t);
        assert_eq!(pace.latest_start, usize::MAX, "nothing measured yet");
        // 60 MB/s: the first compaction is guessed at the used bytes over 64 MiB/s, so the
        // compaction must start where the room left holds twice that long's writes; that is
        // about 5.6 MiB into the journal, below the mark (12.8 MiB) and before 6 MiB.
        write(&mut pace, &mut t, 0, 6 * MIB, 60e6);
        let start = pace.latest_start;
        assert!(start < 6 * MIB, "latest start {start}");
        let room = (16 * MIB - MIB / 2 - start) as f64;
        let needed = 2.0 * 60e6 * start as f64 / FIRST_GUESS_BYTES_PER_SEC;
        assert!(
            (1.0..1.15).contains(&(room / needed)),
            "room {room}, needed {needed}"
        );
    }

    #[test]
    fn a_slow_writer_leaves_the_high_water_mark_in_charge() {
        let (pace, _) = after_writing(6 * MIB, 100_000.0);
        assert!(
            pace.latest_start > 16 * MIB * 9 / 10,
            "{}",
            pace.latest_start
        );
    }

    #[test]
    fn after_a_swap_the_measured_duration_replaces_the_guess() {
        let (mut pace, t) = after_writing(2 * MIB, 10e6);
        let room_end = 16 * MIB - MIB / 2;
        // A compaction that took a whole second at 10 MB/s needs 20 MB: more than the journal.
        let journal = room(MIB, room_end, MIB);
        pace.swapped(Duration::from_secs(1), journal, t);
        assert_eq!(pace.latest_start, MIB, "start at once");
        // One that took 10 ms needs 200 kB.
        pace.swapped(Duration::from_millis(10), journal, t);
        assert_eq!(pace.latest_start, room_end - 200_000);
    }

    /// A store still filling up: a compaction is expected to take as many times longer than
    /// the last as there are more live keys to copy now.
    #[test]
    fn more_live_keys_than_the_last_compaction_copied_mean_a_longer_one() {
        let (mut pace, t) = after_writing(2 * MIB, 10e6);
        let room_end = 16 * MIB - MIB / 2;
        // 10 ms for the 1,000 keys it copied: 200 kB of room at 10 MB/s...
        pace.swapped(Duration::from_millis(10), room(MIB, room_end, MIB), t);
        assert_eq!(pace.latest_start, room_end - 200_000);
        // ...and three times that once there are 3,000 keys (never less for fewer).
        // (Still 10 MB/s: a megabyte each tenth of a second since the swap.)
        let tenth = Duration::from_millis(100);
        pace.check(MIB + 1_000_000, 16 * MIB, room_end, 3000, t + tenth);
        let room = room_end - pace.latest_start;
        assert!((599_000..=601_000).contains(&room), "{room}");
        pace.check(MIB + 2_000_000, 16 * MIB, room_end, 10, t + 2 * tenth);
        let room = room_end - pace.latest_start;
        assert!((199_000..=201_000).contains(&room), "{room}");
    }

    /// A compaction of a handful of keys (after a clear, or of a store still filling up) is
    /// mostly fixed cost: it is scaled to the keys there are now as if it had copied
    /// `FEW_KEYS`, not per key (one key in 5 ms predicted 130 s for 26,000 keys, so the next
    /// compaction started at the floor).
    #[test]
    fn a_compaction_of_few_keys_is_not_scaled_per_key() {
        let (mut pace, t) = after_writing(2 * MIB, 10e6);
        let room_end = 16 * MIB - MIB / 2;
        let journal = Room {
            copied_keys: 1,
            live_keys: 1,
            ..room(MIB, room_end, MIB)
        };
        pace.swapped(Duration::from_millis(5), journal, t);
        // 26,000 keys now: 5 ms x 26 = 130 ms at 10 MB/s, twice over: 2.6 MB of room.
        let tenth = Duration::from_millis(100);
        pace.check(MIB + 1_000_000, 16 * MIB, room_end, 26_000, t + tenth);
        let room = room_end - pace.latest_start;
        assert!((2_590_000..=2_610_000).contains(&room), "{room}");
    }

    /// However fast the writer, the start is never earlier than the floor: a burst against a
    /// small journal must not run compaction after compaction.
    #[test]
    fn the_latest_start_never_goes_below_the_floor() {
        let mut t = Instant::now();
        let mut pace = Pace::new(0, 16 * MIB, 3 * MIB, t);
        write(&mut pace, &mut t, 0, 2 * MIB, 10e9);
        assert_eq!(pace.latest_start, 3 * MIB);
        let journal = room(4 * MIB, 15 * MIB, 5 * MIB);
        pace.swapped(Duration::from_secs(10), journal, t);
        assert_eq!(pace.latest_start, 5 * MIB);
    }

    /// A writer that slows down after a swap is measured again before the start its old
    /// rate implied: compactions do not go on starting at the floor.
    #[test]
    fn a_writer_that_slowed_down_is_measured_again_before_the_start() {
        let (mut pace, mut t) = after_writing(2 * MIB, 60e6);
        let room_end = 16 * MIB - MIB / 2;
        let journal = room(12 * MIB, room_end, 12 * MIB + 100_000);
        pace.swapped(Duration::from_millis(100), journal, t);
        assert_eq!(
            pace.latest_start,
            12 * MIB + 100_000,
            "the old rate: at the floor"
        );
        // Now 1 kB/s: well before a whole window, the pace reads the clock at the start.
        write(&mut pace, &mut t, 12 * MIB, 12 * MIB + 100_000, 1000.0);
        assert!(pace.latest_start > room_end - 1000, "{}", pace.latest_start);
    }

    #[test]
    fn a_failure_suspends_pacing_until_the_next_swap() {
        let (mut pace, mut t) = after_writing(6 * MIB, 60e6);
        assert!(pace.latest_start < usize::MAX);
        pace.suspend();
        write(&mut pace, &mut t, 6 * MIB, 8 * MIB, 60e6);
        assert_eq!(pace.latest_start, usize::MAX, "the back-off holds");
        let journal = room(6 * MIB, 15 * MIB, 6 * MIB);
        pace.swapped(Duration::from_millis(100), journal, t);
        assert!(pace.latest_start < 15 * MIB);
    }

    #[test]
    fn the_clock_is_read_once_per_window_not_per_write() {
        let t = Instant::now();
        let pace = Pace::new(1000, 16 * MIB, 0, t);
        assert!(!pace.due(1000 + 16 * MIB / 32 - 1));
        assert!(pace.due(1000 + 16 * MIB / 32));
        let tiny = Pace::new(0, 8192, 0, t);
        assert!(
            !tiny.due(MIN_WINDOW - 1),
            "tiny journals still read it rarely"
        );
    }
}
