//! Replay's tests: split and sequential replays agree, and compaction copies what replay finds.

use super::*;
use crate::bonjson::Limits;
use crate::journal::format::Op;
use crate::testing::Rng;

const GENERATION: u64 = 7;

/// A journal of `GENERATION`: a header page, then records of random puts, deletes,
/// batches, clears and one commit marker, then zeros.
fn journal(rng: &mut Rng, records: usize) -> Vec<u8> {
    let seed = format::crc_seed(GENERATION);
    let mut bytes = vec![0_u8; HEADER_SIZE];
    let mut body = Vec::new();
    let key = |rng: &mut Rng| format!("k{}", rng.below(300));
    for i in 0..records {
        body.clear();
        let ops = match rng.below(40) {
            0 => vec![Op::Clear],
            1..=4 => (0..1 + rng.below(4))
                .map(|_| match rng.below(3) {
                    0 => Op::Delete(key(rng)),
                    _ => Op::Put(key(rng), Value::Integer(rng.below(1000) as i64)),
                })
                .collect(),
            5..=9 => vec![Op::Delete(key(rng))],
            _ => vec![Op::Put(key(rng), Value::from(format!("v{i}")))],
        };
        if i == records / 3 {
            body.extend_from_slice(&format::encode_commit(GENERATION));
        } else {
            format::encode_body(&ops, &Limits::default(), &mut body).unwrap();
        }
        bytes.extend_from_slice(&format::frame_seeded(GENERATION, seed, &body));
        bytes.extend_from_slice(&body);
    }
    bytes.resize(bytes.len() + 4096, 0);
    bytes
}

fn outcome(replayed: Replayed) -> (Vec<(String, Value)>, usize, FrameRead, bool) {
    let mut entries: Vec<(String, Value)> = replayed
        .entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::clone(&v)))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    (entries, replayed.end, replayed.stop, replayed.committed)
}

fn sequential(bytes: &[u8]) -> (Vec<(String, Value)>, usize, FrameRead, bool) {
    outcome(replay_with(
        bytes,
        GENERATION,
        &DecodeOptions::default(),
        |_| None,
    ))
}

fn split_at(bytes: &[u8], at: usize) -> (Vec<(String, Value)>, usize, FrameRead, bool) {
    outcome(replay_with(
        bytes,
        GENERATION,
        &DecodeOptions::default(),
        |_| Some(at),
    ))
}

/// Two workers split anywhere replay exactly what one does, on intact journals and on
/// journals with flipped bits, truncations and forged (checksum-valid but malformed)
/// records, before, at or after the split.
#[test]
fn split_replay_equals_sequential_replay() {
    let mut rng = Rng::new(42);
    for case in 0..300 {
        let records = 200 + rng.index(400);
        let mut bytes = journal(&mut rng, records);
        match case % 3 {
            0 => {}
            1 => {
                let at = HEADER_SIZE + rng.index(bytes.len() - HEADER_SIZE);
                bytes[at] ^= 1 << rng.below(8);
            }
            _ => {
                let at = HEADER_SIZE + rng.index(bytes.len() - HEADER_SIZE);
                bytes.truncate(at);
            }
        }
        let one = sequential(&bytes);
        for _ in 0..4 {
            let at = HEADER_SIZE + rng.index(bytes.len() - HEADER_SIZE);
            assert_eq!(split_at(&bytes, at), one, "case {case}, split at {at}");
        }
    }
    // A record whose checksum holds but whose body is malformed ends the replay there,
    // wherever the split falls.
    let mut bytes = journal(&mut rng, 300);
    let seed = format::crc_seed(GENERATION);
    let end = HEADER_SIZE + bytes[HEADER_SIZE..].len() - 4096;
    let forged = [OP_PUT, 0xff];
    bytes.truncate(end);
    bytes.extend_from_slice(&format::frame_seeded(GENERATION, seed, &forged));
    bytes.extend_from_slice(&forged);
    bytes.extend_from_slice(&journal(&mut rng, 50)[HEADER_SIZE..]);
    let one = sequential(&bytes);
    assert_eq!(one.1, end);
    for at in [HEADER_SIZE, end - 100, end, end + 1, end + 200] {
        assert_eq!(split_at(&bytes, at), one, "split at {at}");
    }
}

/// A record that holds the image of a valid record makes the second worker start inside
/// it; the first worker steps over that point, and replay starts over on one thread.
#[test]
fn a_record_inside_a_record_does_not_fool_the_split() {
    let mut rng = Rng::new(5);
    let seed = format::crc_seed(GENERATION);
    // The image rides in a key (frames hold zero bytes, which no string value may; the
    // write API refuses NUL in keys too, but a forged file need not): try planted keys
    // until the image is valid UTF-8.
    let image = (0..)
        .find_map(|n| {
            let mut inner = Vec::new();
            let ops = [Op::Put(format!("planted{n}"), Value::Integer(1))];
            format::encode_body(&ops, &Limits::default(), &mut inner).unwrap();
            let mut image = format::frame_seeded(GENERATION, seed, &inner).to_vec();
            image.extend_from_slice(&inner);
            String::from_utf8(image).ok()
        })
        .unwrap();
    let mut bytes = journal(&mut rng, 200);
    let end = bytes.len() - 4096;
    bytes.truncate(end);
    let mut body = Vec::new();
    let ops = [Op::Put(image.clone(), Value::Integer(2))];
    format::encode_body(&ops, &Limits::default(), &mut body).unwrap();
    bytes.extend_from_slice(&format::frame_seeded(GENERATION, seed, &body));
    bytes.extend_from_slice(&body);
    bytes.resize(bytes.len() + 4096, 0);
    let carrier = end + FRAME_SIZE;
    let planted = format::Frames::new(GENERATION).find(&bytes, carrier, bytes.len());
    assert_eq!(planted, Some(carrier + body.len() - 1 - image.len()));
    let one = sequential(&bytes);
    assert_eq!(one.1, end + FRAME_SIZE + body.len());
    assert!(one.0.contains(&(image, Value::Integer(2))));
    assert!(!one.0.iter().any(|(k, _)| k.starts_with("planted")));
    assert_eq!(split_at(&bytes, carrier), one);
}

/// The split point is the middle of the data, not of the file, and small data is not
/// split at all.
#[test]
fn split_point_halves_the_data() {
    let mut bytes = vec![0_u8; HEADER_SIZE + (32 << 20)];
    bytes[HEADER_SIZE..HEADER_SIZE + (10 << 20)].fill(0x5a);
    assert_eq!(
        split_point(&bytes, bytes.len()),
        Some(HEADER_SIZE + (5 << 20))
    );
    assert_eq!(
        split_point(&bytes, HEADER_SIZE + (8 << 20)),
        Some(HEADER_SIZE + (4 << 20))
    );
    bytes[HEADER_SIZE + (3 << 20)..].fill(0);
    assert_eq!(split_point(&bytes, bytes.len()), None);
}

/// What compaction copies out of a journal is exactly what opening it replays, record for
/// record in the journal's order; a journal whose records stop short of its end is refused.
#[test]
fn live_records_are_what_replay_finds() {
    let mut rng = Rng::new(9);
    let decode = DecodeOptions::default();
    for case in 0..200 {
        let records = 50 + rng.index(400);
        let bytes = journal(&mut rng, records);
        let (replayed, end, ..) = sequential(&bytes);
        let records = live_records(&bytes[..end], GENERATION, &decode).expect("intact");
        assert!(records.windows(2).all(|w| w[0].offset <= w[1].offset));
        let mut copied = Vec::new();
        for record in &records {
            let key = String::from_utf8(record.key().to_vec()).unwrap();
            let value = bonjson::decode_with(record.value(), &decode).unwrap();
            // The body compaction writes equals encoding the value afresh.
            let (mut raw, mut fresh) = (Vec::new(), Vec::new());
            format::encode_put_raw(record.key(), record.value(), &mut raw);
            format::encode_put(&key, &value, &Limits::default(), &mut fresh).unwrap();
            assert_eq!(raw, fresh, "case {case}");
            let lengths = (record.key().len(), record.value().len());
            assert_eq!(format::put_raw_len(lengths.0, lengths.1), raw.len());
            copied.push((key, value));
        }
        copied.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(copied, replayed, "case {case}");
        assert!(live_records(&bytes[..end - 1], GENERATION, &decode).is_none());
        assert!(live_records(&bytes[..end + 8], GENERATION, &decode).is_none());
    }
}
