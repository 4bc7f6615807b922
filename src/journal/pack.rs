//! Packing a compaction's live records into batch records.
//!
//! A compaction writes each live key's last put again. One record per key (a frame of 12
//! bytes each) made the compacted journal larger than the records it came from whenever those
//! were batches (one frame for many keys): a batch of 7,000 small puts that fitted a journal at
//! its largest size could not be compacted into the same size, and the store was stuck with
//! `Full`. Packed into batch records of up to [`PACK_BYTES`] of operations, the compacted
//! journal has one frame per packed record, and grows by at most a few bytes per
//! [`PACK_BYTES`] over any input. A batch record is applied whole at replay, like any other;
//! a torn one in a snapshot is damage before the commit marker, as a torn put was.

use super::Journal;
use super::format::{self, OP_BATCH};

/// The most operation bytes a packed record holds (more if a single operation is larger).
pub(crate) const PACK_BYTES: usize = 64 * 1024;

/// Builds the bodies of packed records from put operations (each a single-put body, which is
/// also a batch's operation as is).
#[derive(Debug, Default)]
pub(crate) struct Packer {
    ops: Vec<u8>,
    count: u64,
    body: Vec<u8>,
}

impl Packer {
    /// Adds `op`. If it does not fit the record being packed, that record is finished first
    /// and its body returned, to be appended before anything else; `op` then starts the next.
    pub(crate) fn push(&mut self, op: &[u8]) -> Option<&[u8]> {
        let finished = starts_new(self.ops.len(), self.count, op.len());
        if finished {
            self.finish();
        }
        self.ops.extend_from_slice(op);
        self.count += 1;
        finished.then_some(self.body.as_slice())
    }

    /// Finishes the record being packed; its body, if it holds anything.
    pub(crate) fn finish_last(&mut self) -> Option<&[u8]> {
        if self.count == 0 {
            return None;
        }
        self.finish();
        Some(self.body.as_slice())
    }

    fn finish(&mut self) {
        self.body.clear();
        if self.count > 1 {
            self.body.push(OP_BATCH);
            format::put_varint(&mut self.body, self.count);
        }
        self.body.extend_from_slice(&self.ops);
        self.ops.clear();
        self.count = 0;
    }
}

/// Whether an operation of `len` bytes starts a new record after `count` operations of
/// `packed` bytes.
fn starts_new(packed: usize, count: u64, len: usize) -> bool {
    count > 0 && packed + len > PACK_BYTES
}

/// The bytes (frames included) that [`Packer`] makes of operations of these lengths.
pub(crate) fn packed_size(op_lens: impl IntoIterator<Item = usize>) -> usize {
    let record = |packed: usize, count: u64| {
        let header = if count > 1 { 1 + varint_len(count) } else { 0 };
        Journal::record_size(header + packed)
    };
    let (mut total, mut packed, mut count) = (0, 0, 0_u64);
    for len in op_lens {
        if starts_new(packed, count, len) {
            total += record(packed, count);
            (packed, count) = (0, 0);
        }
        packed += len;
        count += 1;
    }
    if count > 0 {
        total += record(packed, count);
    }
    total
}

fn varint_len(mut v: u64) -> usize {
    let mut len = 1;
    while v >= 0x80 {
        len += 1;
        v >>= 7;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::format::{FRAME_SIZE, OP_PUT};

    fn op(i: usize, len: usize) -> Vec<u8> {
        let mut op = vec![OP_PUT];
        op.resize(len, (i % 251) as u8);
        op
    }

    /// `packed_size` predicts exactly what the packer makes, the bodies hold every operation
    /// in order, and no record passes the bound unless one operation alone does.
    #[test]
    fn packed_size_is_what_the_packer_makes() {
        let lens: Vec<usize> = (0..5_000)
            .map(|i: usize| match i % 97 {
                0 => 70_000,
                n => 10 + (i * 7919 + n) % 300,
            })
            .collect();
        let mut packer = Packer::default();
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            if let Some(body) = packer.push(&op(i, len)) {
                bodies.push(body.to_vec());
            }
        }
        bodies.extend(packer.finish_last().map(<[u8]>::to_vec));
        let made: usize = bodies.iter().map(|b| FRAME_SIZE + b.len()).sum();
        assert_eq!(made, packed_size(lens.iter().copied()));
        let mut all = Vec::new();
        for body in &bodies {
            if body[0] == OP_BATCH {
                let mut count = 0_u64;
                let mut shift = 0;
                let mut at = 1;
                loop {
                    let byte = body[at];
                    count |= u64::from(byte & 0x7f) << shift;
                    at += 1;
                    if byte < 0x80 {
                        break;
                    }
                    shift += 7;
                }
                assert!(count > 1);
                assert!(
                    body.len() - at <= PACK_BYTES || count == 1,
                    "{}",
                    body.len()
                );
                all.extend_from_slice(&body[at..]);
            } else {
                all.extend_from_slice(body);
            }
        }
        let expected: Vec<u8> = lens
            .iter()
            .enumerate()
            .flat_map(|(i, &len)| op(i, len))
            .collect();
        assert!(all == expected, "the operations did not come out in order");
        assert!(packed_size(std::iter::empty()) == 0);
        assert_eq!(packed_size([40]), FRAME_SIZE + 40);
        assert_eq!(packed_size([40, 50]), FRAME_SIZE + 2 + 90);
    }
}
