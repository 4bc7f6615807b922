//! Replay's tests: split and sequential replays agree, and compaction copies what replay finds.

use super::*;
use crate::bonjson::Limits;
use crate::journal::format::Op;
use crate::journal::recovery::{Beyond, Tail};
use crate::journal::storage::{MemBackend, Slot};
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

/// `journal(rng, records)` without its trailing zeros, and where its records end.
fn journal_cut(rng: &mut Rng, records: usize) -> (Vec<u8>, usize) {
    let mut bytes = journal(rng, records);
    let end = bytes.len() - 4096;
    bytes.truncate(end);
    (bytes, end)
}

/// The body of one record holding `ops`.
fn body_of(ops: &[Op]) -> Vec<u8> {
    let mut body = Vec::new();
    format::encode_body(ops, &Limits::default(), &mut body).unwrap();
    body
}

/// Appends a record of `GENERATION` whose body is `body`.
fn push_record(bytes: &mut Vec<u8>, body: &[u8]) {
    let seed = format::crc_seed(GENERATION);
    bytes.extend_from_slice(&format::frame_seeded(GENERATION, seed, body));
    bytes.extend_from_slice(body);
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
        |_, _| None,
    ))
}

fn split_at(bytes: &[u8], at: usize) -> (Vec<(String, Value)>, usize, FrameRead, bool) {
    outcome(replay_with(
        bytes,
        GENERATION,
        &DecodeOptions::default(),
        |_, _| Some(at),
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
    // Checksum-valid records that are malformed (replay ends before them), that hold a
    // value that does not decode or a key that is not UTF-8 (replay ends before them if they
    // survive): the same result wherever the split falls.
    let encoded = |key: &str, value: Value| body_of(&[Op::Put(key.into(), value)]);
    let mut cut_value = encoded("only-here", Value::from("a string value"));
    cut_value.pop();
    let mut bad_key = encoded("zz", Value::Integer(5));
    bad_key[2..4].copy_from_slice(&[0xc3, 0x28]);
    for (kind, forged) in [vec![OP_PUT, 0xff], cut_value, bad_key]
        .into_iter()
        .enumerate()
    {
        let (mut bytes, end) = journal_cut(&mut rng, 300);
        push_record(&mut bytes, &forged);
        bytes.extend_from_slice(&journal(&mut rng, 50)[HEADER_SIZE..]);
        let one = sequential(&bytes);
        if kind == 0 {
            assert_eq!(one.1, end);
        }
        let mut points = vec![HEADER_SIZE, end - 100, end, end + 1, end + 200];
        points.extend((0..8).map(|_| HEADER_SIZE + rng.index(bytes.len() - HEADER_SIZE)));
        for at in points {
            assert_eq!(
                split_at(&bytes, at),
                one,
                "forged record {kind}, split at {at}"
            );
        }
    }
}

/// A checksum-valid record whose key holds a NUL (which no write accepts, so no store wrote
/// it) is malformed: replay ends before it, as for a key that is not UTF-8. Replayed, the key
/// could never be removed: `remove` refuses such keys.
#[test]
fn a_forged_key_with_nul_ends_replay_before_it() {
    let (mut bytes, end) = journal_cut(&mut Rng::new(9), 100);
    push_record(
        &mut bytes,
        &body_of(&[Op::Put("nul\0key".into(), Value::Integer(1))]),
    );
    for i in 0..20 {
        push_record(
            &mut bytes,
            &body_of(&[Op::Put(format!("after{i}"), Value::Integer(i))]),
        );
    }
    bytes.resize(bytes.len() + 4096, 0);
    let (entries, stopped_at, _, _) = sequential(&bytes);
    assert_eq!(stopped_at, end);
    assert!(entries.iter().all(|(key, _)| !key.contains('\0')));
    for at in [HEADER_SIZE, end, end + 10] {
        assert_eq!(split_at(&bytes, at).1, end, "split at {at}");
    }
}

/// A record longer than the second worker's search window straddles the split point: no
/// split, the same result.
#[test]
fn a_record_longer_than_the_sync_window_straddles_the_split() {
    let mut rng = Rng::new(77);
    let (mut bytes, end) = journal_cut(&mut rng, 100);
    let body = body_of(&[Op::Put("long".into(), Value::from("L".repeat(3 << 20)))]);
    push_record(&mut bytes, &body);
    bytes.extend_from_slice(&journal(&mut rng, 100)[HEADER_SIZE..]);
    let one = sequential(&bytes);
    assert!(one.1 > end + FRAME_SIZE + body.len());
    for at in [end + 1, end + 1000, end + body.len() / 2] {
        assert_eq!(split_at(&bytes, at), one, "split at {at}");
    }
}

/// A record that holds the image of a valid record makes the second worker start inside
/// it; the first worker steps over that point, and replay starts over on one thread.
#[test]
fn a_record_inside_a_record_does_not_fool_the_split() {
    let mut rng = Rng::new(5);
    // The image rides in the key of a removal (frames hold zero bytes, which no string value
    // may; a key with NUL is malformed if it survives replay, but a removed one never does):
    // try planted keys until the image is valid UTF-8.
    let image = (0..)
        .find_map(|n| {
            let mut image = Vec::new();
            push_record(
                &mut image,
                &body_of(&[Op::Put(format!("planted{n}"), Value::Integer(1))]),
            );
            String::from_utf8(image).ok()
        })
        .unwrap();
    let (mut bytes, end) = journal_cut(&mut rng, 200);
    let body = body_of(&[Op::Delete(image.clone())]);
    push_record(&mut bytes, &body);
    bytes.resize(bytes.len() + 4096, 0);
    let carrier = end + FRAME_SIZE;
    let planted = format::Frames::new(GENERATION).find(&bytes, carrier, bytes.len());
    assert_eq!(
        planted.map(|(at, _)| at),
        Some(carrier + body.len() - image.len())
    );
    let one = sequential(&bytes);
    assert_eq!(one.1, end + FRAME_SIZE + body.len());
    assert!(
        !one.0
            .iter()
            .any(|(k, _)| *k == image || k.starts_with("planted"))
    );
    assert_eq!(split_at(&bytes, carrier), one);
}

/// `bytes` of `len`, holding records of `generation` from the header up to `data_end` (1 KiB
/// each), then zeros.
fn records_then_zeros(generation: u64, data_end: usize, len: usize) -> Vec<u8> {
    let seed = format::crc_seed(generation);
    let mut bytes = vec![0_u8; HEADER_SIZE];
    let mut body = Vec::new();
    let op = Op::Put("k".into(), Value::from("v".repeat(1000)));
    format::encode_body(&[op], &Limits::default(), &mut body).unwrap();
    while bytes.len() + FRAME_SIZE + body.len() <= data_end {
        bytes.extend_from_slice(&format::frame_seeded(generation, seed, &body));
        bytes.extend_from_slice(&body);
    }
    bytes.resize(len, 0);
    bytes
}

/// The split point is the middle of the data, not of the file: the data ends where this
/// generation's records do, whether zeros or an older generation's records follow. Small
/// data is not split at all.
#[test]
fn split_point_halves_the_data() {
    let frames = format::Frames::new(GENERATION);
    let data_end = HEADER_SIZE + (10 << 20);
    let middle = HEADER_SIZE + (5 << 20);
    let near =
        |point: Option<usize>, want: usize| point.is_some_and(|p| p.abs_diff(want) <= 64 << 10);
    let mut bytes = records_then_zeros(GENERATION, data_end, HEADER_SIZE + (32 << 20));
    assert!(near(split_point(&bytes, bytes.len(), &frames), middle));
    let limit = HEADER_SIZE + (8 << 20);
    assert!(near(
        split_point(&bytes, limit, &frames),
        HEADER_SIZE + (4 << 20)
    ));
    // A reused file: an older generation's records run on past this one's.
    let stale = records_then_zeros(GENERATION - 1, HEADER_SIZE + (30 << 20), bytes.len());
    bytes[data_end..].copy_from_slice(&stale[data_end..]);
    assert!(near(split_point(&bytes, bytes.len(), &frames), middle));
    let small = records_then_zeros(GENERATION, HEADER_SIZE + (3 << 20), bytes.len());
    assert_eq!(split_point(&small, small.len(), &frames), None);
    assert_eq!(split_point(&small, 0, &frames), None);
}

/// A header page, 64 frame images of `GENERATION` each claiming a 1 MiB body (checksums
/// wrong), a valid one-byte record, then 2 MiB of filler; and where that record starts.
fn frame_images_then_a_record() -> (Vec<u8>, usize) {
    frame_images_claiming_then_a_record(1 << 20, 64)
}

/// `count` frame images of [`GENERATION`] claiming `claim`-byte bodies, then a real record.
fn frame_images_claiming_then_a_record(claim: u32, count: usize) -> (Vec<u8>, usize) {
    let mut bytes = vec![0_u8; HEADER_SIZE];
    for _ in 0..count {
        bytes.extend_from_slice(&claim.to_le_bytes());
        bytes.extend_from_slice(&(GENERATION as u32).to_le_bytes());
        bytes.extend_from_slice(&[0xee; 4]);
    }
    let real = bytes.len();
    let body = [OP_COMMIT];
    let seed = format::crc_seed(GENERATION);
    bytes.extend_from_slice(&format::frame_seeded(GENERATION, seed, &body));
    bytes.extend_from_slice(&body);
    bytes.resize(bytes.len() + (2 << 20), 0x11);
    (bytes, real)
}

/// A search that is only a hint gives up once the candidates it checked claim more than its
/// budget: frame images claiming long bodies (inside values, say) cannot make it slow. The
/// unbounded search still finds the record after them.
#[test]
fn a_bounded_search_gives_up_on_frame_images_claiming_long_bodies() {
    let frames = format::Frames::new(GENERATION);
    let (bytes, real) = frame_images_then_a_record();
    let len = bytes.len();
    assert_eq!(frames.find(&bytes, HEADER_SIZE, len), Some((real, 1)));
    assert_eq!(
        frames.find_checking_at_most(&bytes, HEADER_SIZE, len, 3 << 20),
        None
    );
    assert_eq!(
        frames.find_checking_at_most(&bytes, HEADER_SIZE, len, 65 << 20),
        Some((real, 1))
    );
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
        let records = live_records(&bytes[..end], GENERATION, &decode, 0).expect("intact");
        assert!(records.windows(2).all(|w| w[0].offset <= w[1].offset));
        // A table sized for the live keys, or for too few, finds the same records.
        let offsets = |hint| {
            let records = live_records(&bytes[..end], GENERATION, &decode, hint).expect("intact");
            let keyed: Vec<_> = records
                .iter()
                .map(|r| (r.offset, r.key().to_vec()))
                .collect();
            keyed
        };
        let mut expected = offsets(0);
        expected.sort();
        for hint in [1, replayed.len(), 10 * replayed.len()] {
            let mut found = offsets(hint);
            found.sort();
            assert_eq!(found, expected, "case {case}, hint {hint}");
        }
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
        assert!(live_records(&bytes[..end - 1], GENERATION, &decode, 0).is_none());
        assert!(live_records(&bytes[..end + 8], GENERATION, &decode, 4096).is_none());
    }
}

/// A value this crate's encoder could not have written, whose nodes outnumber its bytes
/// (record instances filled with nulls: a few kilobytes that decode to a hundred thousand
/// nodes, or gigabytes in a crafted file), is malformed: replay ends before its record instead
/// of building it.
#[test]
fn a_value_that_expands_beyond_its_bytes_ends_the_replay() {
    use crate::bonjson::code;
    let mut value = vec![code::RECORD_DEF];
    for i in 0..200_u32 {
        let key = format!("k{i:03}");
        value.push(code::SHORT_STRING + key.len() as u8);
        value.extend_from_slice(key.as_bytes());
    }
    value.push(code::END);
    value.push(code::ARRAY);
    for _ in 0..500 {
        value.extend_from_slice(&[code::RECORD, 0, code::END]);
    }
    value.push(code::END);
    // Well formed under the default limits: 200 keys x 500 instances, filled with nulls.
    assert!(crate::bonjson::decode_with(&value, &DecodeOptions::default()).is_ok());
    let seed = format::crc_seed(GENERATION);
    let mut bytes = vec![0_u8; HEADER_SIZE];
    let mut put = |key: &str, value: &[u8]| {
        let mut body = vec![OP_PUT, key.len() as u8];
        body.extend_from_slice(key.as_bytes());
        body.extend_from_slice(value);
        bytes.extend_from_slice(&format::frame_seeded(GENERATION, seed, &body));
        bytes.extend_from_slice(&body);
    };
    put("before", &[5]);
    put("bomb", &value);
    put("after", &[6]);
    let end_of_first = HEADER_SIZE + FRAME_SIZE + 2 + "before".len() + 1;
    bytes.resize(bytes.len() + 4096, 0);
    let (entries, end, _, _) = sequential(&bytes);
    assert_eq!(entries, vec![("before".to_string(), Value::Integer(5))]);
    assert_eq!(end, end_of_first);
}

/// The search for valid records beyond where replay stopped checksums at most twice the
/// file's length: frame images (inside values of a coming generation, in a reused file's stale
/// tail) cannot make an open take hours. Images claiming long bodies are checked only after
/// every short claim, so a record after them is still found; enough images claiming short
/// bodies to spend the budget make it give up (a valid record does follow them), and the open
/// then rewrites the journal into a new generation instead of taking the rest for room for
/// new records.
#[test]
fn the_search_beyond_the_end_is_bounded() {
    let frames = format::Frames::new(GENERATION);
    let (bytes, real) = frame_images_then_a_record();
    assert_eq!(
        crate::journal::recovery::next_valid_record(&bytes, HEADER_SIZE, GENERATION),
        Beyond::ValidUntil(real + FRAME_SIZE + 1)
    );
    let (bytes, real) = frame_images_claiming_then_a_record(60 << 10, 128);
    // Unbounded, the search would find it (after checksumming 7.5 MiB of claimed bodies, more
    // than twice the file).
    assert!(128 * (60 << 10) > 2 * bytes.len());
    assert_eq!(
        frames.find(&bytes, HEADER_SIZE, bytes.len()),
        Some((real, 1))
    );
    assert_eq!(
        crate::journal::recovery::next_valid_record(&bytes, HEADER_SIZE, GENERATION),
        Beyond::GaveUp
    );
    // A genuine record after damage is found as before.
    let mut damaged = bytes.clone();
    damaged[HEADER_SIZE..real].fill(0x22);
    assert_eq!(
        crate::journal::recovery::next_valid_record(&damaged, HEADER_SIZE, GENERATION),
        Beyond::ValidUntil(real + FRAME_SIZE + 1)
    );
}

/// The body of a put of `flag_a` = 1: 9 bytes, so at generation 9 each frame's length field
/// spells the generation.
fn flag_a_body() -> Vec<u8> {
    let mut body = Vec::new();
    format::encode_put("flag_a", &Value::Integer(1), &Default::default(), &mut body).unwrap();
    assert_eq!(body.len(), 9);
    body
}

/// Appends a record of `generation` holding `body`.
fn put_record(bytes: &mut Vec<u8>, generation: u64, body: &[u8]) {
    bytes.extend_from_slice(&format::frame(generation, body));
    bytes.extend_from_slice(body);
}

/// Opens `bytes` (header page included) as the only journal, under a committed header of
/// `generation`.
fn open_committed(
    mut bytes: Vec<u8>,
    generation: u64,
    min_len: usize,
) -> crate::journal::recovery::Opened {
    let header = format::encode_header(&format::Header {
        version: format::FORMAT_VERSION,
        state: format::STATE_COMMITTED,
        generation,
    });
    bytes[..header.len()].copy_from_slice(&header);
    let backend = MemBackend::new();
    *backend.file(Slot::A).lock() = bytes;
    crate::journal::recovery::open(&backend, min_len, &Default::default()).unwrap()
}

/// A 64 MiB journal of generation 9 reusing a file whose stale tail holds generation 7's
/// records of a flags store: `flag_a` set to 1, a 9-byte body, so every stale frame's length
/// field spells 9, and the four bytes before it (the previous body's end) read as a frame
/// claiming 23 MB. A handful of those spent the search's whole budget, and the open reported
/// nearly the whole file as lost, where nothing was. Now nothing is reported, and the open
/// rewrites the journal into a new generation (`Tail::Undecided`).
#[test]
fn stale_records_that_spell_the_generation_are_not_reported_as_damage() {
    const LEN: usize = 64 << 20;
    let body = flag_a_body();
    let mut bytes = vec![0_u8; HEADER_SIZE];
    put_record(&mut bytes, 9, &body);
    put_record(&mut bytes, 9, &format::encode_commit(9));
    let end = bytes.len();
    while bytes.len() + FRAME_SIZE + body.len() <= LEN {
        put_record(&mut bytes, 7, &body);
    }
    bytes.resize(LEN, 0);
    assert_eq!(
        crate::journal::recovery::next_valid_record(&bytes, end + 1, 9),
        Beyond::GaveUp
    );
    let opened = open_committed(bytes, 9, LEN);
    assert_eq!(opened.tail, Tail::Undecided { offset: end });
    assert!(opened.notes.is_empty(), "{:?}", opened.notes);
    assert_eq!(opened.entries.len(), 1);
}

/// Every number in a record has one spelling, the shortest, and a commit marker is exactly a
/// code and a generation: a record (with a valid checksum) that spells a key length with a
/// padding byte, carries bits past the 64th, or has a short or padded commit marker is
/// malformed, and replay ends before it.
#[test]
fn loose_spellings_are_malformed() {
    let canonical = body_of(&[Op::Put("key".into(), Value::Integer(1))]);
    assert_eq!(&canonical[..2], &[OP_PUT, 3]);
    let padded_length = [&[OP_PUT, 0x83, 0x00][..], &canonical[2..]].concat();
    let past_64_bits = [
        &[OP_PUT][..],
        &[0x83, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02],
        &canonical[2..],
    ]
    .concat();
    let mut padded_count = body_of(&[
        Op::Put("a".into(), Value::Integer(1)),
        Op::Delete("b".into()),
    ]);
    assert_eq!(&padded_count[..2], &[OP_BATCH, 2]);
    padded_count.splice(1..2, [0x82, 0x00]);
    let commit = format::encode_commit(GENERATION);
    let short_commit = commit[..5].to_vec();
    let padded_commit = [&commit[..], &[0]].concat();
    for (name, body) in [
        ("padded key length", padded_length),
        ("bits past the 64th", past_64_bits),
        ("padded batch count", padded_count),
        ("short commit marker", short_commit),
        ("padded commit marker", padded_commit),
    ] {
        let (mut bytes, end) = journal_cut(&mut Rng::new(11), 50);
        push_record(&mut bytes, &body);
        push_record(
            &mut bytes,
            &body_of(&[Op::Put("after".into(), Value::Integer(2))]),
        );
        bytes.resize(bytes.len() + 4096, 0);
        let (entries, stopped_at, _, _) = sequential(&bytes);
        assert_eq!(stopped_at, end, "{name}");
        assert!(entries.iter().all(|(key, _)| key != "after"), "{name}");
    }
    // The canonical spellings replay.
    let (mut bytes, _) = journal_cut(&mut Rng::new(11), 50);
    push_record(&mut bytes, &canonical);
    push_record(&mut bytes, &commit);
    bytes.resize(bytes.len() + 4096, 0);
    let (entries, _, _, committed) = sequential(&bytes);
    assert!(entries.contains(&("key".to_string(), Value::Integer(1))));
    assert!(committed);
}

/// A scan from the first record forgets deleted keys: a journal of keys each put and deleted
/// (a queue, say) leaves an empty table, not one entry per key ever written; a scan from
/// further on keeps the deletions, which must override the first part.
#[test]
fn deleted_keys_leave_the_first_parts_table() {
    let mut bytes = vec![0_u8; HEADER_SIZE];
    for i in 0..10_000 {
        push_record(
            &mut bytes,
            &body_of(&[Op::Put(format!("job{i}"), Value::Integer(i))]),
        );
        push_record(&mut bytes, &body_of(&[Op::Delete(format!("job{i}"))]));
    }
    let end = bytes.len();
    bytes.resize(end + 4096, 0);
    let keys = foldhash::fast::RandomState::default();
    let keys = Keys { hasher: &keys };
    let decode = DecodeOptions::default();
    let first = scan(&bytes, HEADER_SIZE, end, GENERATION, &decode, keys, 0).unwrap();
    assert_eq!((first.live.len(), first.end), (0, end));
    let second_part = HEADER_SIZE + (end - HEADER_SIZE) / 2;
    let start = (HEADER_SIZE..=second_part)
        .rev()
        .find(|&at| {
            matches!(
                format::read_frame(&bytes[at..], GENERATION),
                FrameRead::Record { .. }
            )
        })
        .unwrap();
    let later = scan(&bytes, start, end, GENERATION, &decode, keys, 4).unwrap();
    assert!(later.live.len() > 0);
    assert!(
        later
            .live
            .iter()
            .all(|(_, pending)| pending.value.is_none())
    );
}

/// A search whose candidates' claims use up its budget exactly has not run out: only a claim
/// larger than what is left ends it as exhausted (which the search past a replay's end
/// treats as damage to the end of the file).
#[test]
fn a_budget_spent_exactly_is_not_exhausted() {
    let frames = format::Frames::new(GENERATION);
    let claim = 100_u32;
    let mut bytes = vec![0_u8; HEADER_SIZE];
    for _ in 0..3 {
        bytes.extend_from_slice(&claim.to_le_bytes());
        bytes.extend_from_slice(&(GENERATION as u32).to_le_bytes());
        bytes.extend_from_slice(&[0xee; 4]);
        bytes.resize(bytes.len() + claim as usize, 0x11);
    }
    let len = bytes.len();
    let mut exact = Some(3 * claim as usize);
    assert_eq!(
        frames.find_within_budget(&bytes, HEADER_SIZE, len, &mut exact, |_, _| true),
        None
    );
    assert_eq!(exact, Some(0));
    let mut short = Some(3 * claim as usize - 1);
    assert_eq!(
        frames.find_within_budget(&bytes, HEADER_SIZE, len, &mut short, |_, _| true),
        None
    );
    assert_eq!(short, None);
}

/// Batches far longer than a read-ahead run are applied in runs as they are parsed: the
/// result is the model's (each batch applied in order, the last operation on a key winning),
/// on one thread and split at several points; a batch that turns malformed after its 40th
/// operation ends the replay before it, none of its operations applied.
#[test]
fn long_batches_replay_as_the_model_says() {
    let mut rng = Rng::new(21);
    let mut bytes = vec![0_u8; HEADER_SIZE];
    let mut model = std::collections::BTreeMap::new();
    for _ in 0..60 {
        let ops: Vec<Op> = (0..100 + rng.index(200))
            .map(|_| {
                let key = format!("key{}", rng.index(50));
                if rng.chance(30) {
                    Op::Delete(key)
                } else {
                    Op::Put(key, Value::Integer(rng.below(1000) as i64))
                }
            })
            .collect();
        for op in &ops {
            match op {
                Op::Put(k, v) => model.insert(k.clone(), v.clone()),
                Op::Delete(k) => model.remove(k),
                Op::Clear => unreachable!(),
            };
        }
        push_record(&mut bytes, &body_of(&ops));
    }
    let end = bytes.len();
    // A batch claiming 100 operations whose 41st has an unknown code.
    let good: Vec<Op> = (0..40)
        .map(|i| Op::Put(format!("key{i}"), Value::Integer(-1)))
        .collect();
    let mut bad = body_of(&good);
    bad.splice(1..2, [100]);
    bad.push(9);
    push_record(&mut bytes, &bad);
    bytes.resize(bytes.len() + 4096, 0);
    let want: Vec<(String, Value)> = model.into_iter().collect();
    let (entries, stopped_at, _, _) = sequential(&bytes);
    assert_eq!((&entries, stopped_at), (&want, end));
    for at in [HEADER_SIZE + 1, end / 3, end / 2, end - 10] {
        assert_eq!(split_at(&bytes, at).0, want, "split at {at}");
    }
}

/// Real damage with stale records behind it: generation 9 written over a file of generation
/// 7's `flag_a` records (9-byte bodies, so each stale length field spells 9 and the bytes
/// before it claim a body of about 23 MB), and one page of the new records lost (never
/// written back before a power cut), so that page shows the stale records again. The search
/// past the damage finds the valid records after that page: it checks short claims first,
/// and the stale records' long claims (a handful spent the whole budget before) wait. The
/// damage is reported, not taken for an undecided end.
#[test]
fn damage_behind_stale_records_that_spell_the_generation_is_reported() {
    const LEN: usize = 64 << 20;
    let body = flag_a_body();
    let mut stale = vec![0_u8; HEADER_SIZE];
    while stale.len() + FRAME_SIZE + body.len() <= LEN {
        put_record(&mut stale, 7, &body);
    }
    stale.resize(LEN, 0);
    let mut bytes = vec![0_u8; HEADER_SIZE];
    put_record(&mut bytes, 9, &format::encode_commit(9));
    for _ in 0..2_000 {
        put_record(&mut bytes, 9, &body);
    }
    let end = bytes.len();
    bytes.extend_from_slice(&stale[end..]);
    let lost_page = HEADER_SIZE + 5 * 4096;
    assert!(lost_page + 4096 < end);
    bytes[lost_page..lost_page + 4096].copy_from_slice(&stale[lost_page..lost_page + 4096]);
    match open_committed(bytes, 9, LEN).tail {
        Tail::Damaged {
            offset,
            valid_until,
        } => {
            assert!(
                (lost_page - 32..lost_page + 4096).contains(&offset),
                "{offset}"
            );
            assert_eq!(valid_until, end);
        }
        other => panic!("expected damage, got {other:?}"),
    }
}

/// A stored object whose keys collide only after NFC normalization (here `café` spelled
/// precomposed and decomposed; for real, keys of code points a later Unicode version made
/// combining marks) is replayed as it was stored, and so is every record after it: the keys
/// were checked when the value was written, and a newer `unicode-normalization` must not
/// make an acknowledged value unreadable. Compaction writes such a value back the same way.
#[test]
fn stored_keys_that_collide_only_after_normalization_replay_as_stored() {
    let half = |key: &str, n: i64| {
        let one: Value = [(key, n)].into_iter().collect();
        bonjson::encode(&one).unwrap()
    };
    let (first, second) = (half("caf\u{e9}", 1), half("cafe\u{301}", 2));
    // `{ "café": 1, "café": 2 }`: the first object without its end, the second without its
    // start.
    let mut value = first[..first.len() - 1].to_vec();
    value.extend_from_slice(&second[1..]);
    assert!(
        bonjson::decode(&value).is_err(),
        "a reader of foreign data refuses it"
    );
    let mut bytes = vec![0_u8; HEADER_SIZE];
    let mut append = |body: &[u8]| {
        bytes.extend_from_slice(&format::frame(GENERATION, body));
        bytes.extend_from_slice(body);
    };
    let mut body = Vec::new();
    format::encode_put_raw(b"obj", &value, &mut body);
    append(&body);
    let mut after = Vec::new();
    format::encode_put("after", &Value::Integer(3), &Default::default(), &mut after).unwrap();
    append(&after);
    bytes.resize(bytes.len() + 64, 0);
    let (entries, end, _, _) = sequential(&bytes);
    let obj = entries
        .iter()
        .find(|(k, _)| k == "obj")
        .map(|(_, v)| v.clone());
    let Some(Value::Object(members)) = obj else {
        panic!("obj was not replayed: {entries:?}");
    };
    assert_eq!(members.len(), 2);
    assert!(entries.contains(&("after".to_string(), Value::Integer(3))));
    assert_eq!(end, bytes.len() - 64);
    // Written back by a compaction from the map, it reads back the same; the encoder for
    // users' values still refuses it.
    let members = Value::Object(members);
    assert!(format::encode_put("obj", &members, &Default::default(), &mut Vec::new()).is_err());
    let mut again = Vec::new();
    format::encode_put_stored("obj", &members, &Default::default(), &mut again).unwrap();
    let mut rewritten = vec![0_u8; HEADER_SIZE];
    rewritten.extend_from_slice(&format::frame(GENERATION, &again));
    rewritten.extend_from_slice(&again);
    rewritten.resize(rewritten.len() + 64, 0);
    let (entries, _, _, _) = sequential(&rewritten);
    assert_eq!(entries, vec![("obj".to_string(), members)]);
}
