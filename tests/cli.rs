//! The `rkv` binary, run for real on real stores: every subcommand, bad arguments, a damaged
//! file, a missing store, and a live store held open for writing by another process.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command as StdCommand, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use assert_cmd::Command;
use resilient_kv::{KVStore, Value};

/// The tests of this file run one at a time: each spawns processes, and a child holds copies
/// of this process's descriptors between its fork and its exec, so a store another test has
/// just closed could still look locked to the `rkv` process of a third.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const CHILD_ENV: &str = "RKV_CLI_LIVE_WRITER";

fn rkv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rkv"))
}

/// Runs `rkv args`; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    run_with_stdin(args, "")
}

fn run_with_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    let output = rkv()
        .args(args)
        .write_stdin(stdin)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Runs `rkv args` and expects success; returns stdout.
fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "rkv {args:?} failed: {err}");
    assert_eq!(err, "", "rkv {args:?} wrote to stderr");
    out
}

/// Asserts the failure is one line on stderr starting with `rkv: `, without panic text.
fn assert_one_line_error(args: &[&str], err: &str) {
    assert!(
        err.starts_with("rkv: ") && err.ends_with('\n') && err.lines().count() == 1,
        "rkv {args:?}: expected one error line, got {err:?}"
    );
    for forbidden in ["panicked", "backtrace", "RUST_BACKTRACE", "internal error"] {
        assert!(!err.contains(forbidden), "rkv {args:?}: {err:?}");
    }
}

/// Runs `rkv args`, expects exit `code` and a one-line error; returns stderr.
fn fails(args: &[&str], code: i32) -> String {
    let (got, out, err) = run(args);
    assert_eq!(got, code, "rkv {args:?}: stdout {out:?}, stderr {err:?}");
    assert_one_line_error(args, &err);
    err
}

/// For one test: the tool to itself (see `one_at_a_time`), a fresh directory, and the base
/// path `name` of a store in it.
fn scratch(
    name: &str,
) -> (
    std::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    PathBuf,
) {
    let serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join(name);
    (serial, dir, base)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn journal(base: &Path, ext: &str) -> PathBuf {
    PathBuf::from(format!("{}.{ext}", base.display()))
}

fn files(base: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(journal(base, "jrna")).unwrap(),
        std::fs::read(journal(base, "jrnb")).unwrap(),
    )
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn set_get_rm_dump_stats_compact_verify() {
    let (_serial, _dir, base) = scratch("app");
    let b = s(&base);

    ok(&["set", b, "theme", r#""dark""#, "--create"]);
    ok(&["set", b, "volume", "30"]);
    ok(&["set", b, "ratio", "0.25"]);
    ok(&["set", b, "below", "-5"]);
    ok(&["set", b, "big", "18446744073709551615"]);
    ok(&["set", b, "nested", r#"{"b": [1, true, null], "a": "é"}"#]);
    ok(&["set", b, "gone", "1"]);
    ok(&["set", b, "gone", "null"]); // null removes

    assert_eq!(ok(&["get", b, "theme"]), "\"dark\"\n");
    assert_eq!(ok(&["get", b, "volume"]), "30\n");
    assert_eq!(ok(&["get", b, "ratio"]), "0.25\n");
    assert_eq!(ok(&["get", b, "below"]), "-5\n");
    ok(&["rm", b, "below"]);
    assert_eq!(ok(&["get", b, "big"]), "18446744073709551615\n");
    assert_eq!(
        ok(&["get", b, "nested"]),
        "{\"a\":\"é\",\"b\":[1,true,null]}\n"
    );
    let err = fails(&["get", b, "gone"], 1);
    assert!(err.contains("no key \"gone\""), "{err}");

    // The library sees what the tool wrote.
    {
        let store = KVStore::open_read_only(&base).unwrap();
        assert_eq!(store.get("volume").unwrap(), Some(Value::Integer(30)));
        assert_eq!(store.get("big").unwrap(), Some(Value::Unsigned(u64::MAX)));
        assert_eq!(store.get("gone").unwrap(), None);
    }

    ok(&["rm", b, "volume"]);
    let err = fails(&["rm", b, "volume"], 1);
    assert!(err.contains("no key \"volume\""), "{err}");

    // dump: JSON lines sorted by key; --json: one object.
    let lines = ok(&["dump", b]);
    assert_eq!(
        lines,
        "{\"big\":18446744073709551615}\n\
         {\"nested\":{\"a\":\"é\",\"b\":[1,true,null]}}\n\
         {\"ratio\":0.25}\n\
         {\"theme\":\"dark\"}\n"
    );
    let object = ok(&["dump", b, "--json"]);
    assert_eq!(object.lines().count(), 1);
    let parsed: serde_json::Value = serde_json::from_str(&object).unwrap();
    assert_eq!(parsed["theme"], "dark");
    assert_eq!(parsed.as_object().unwrap().len(), 4);

    // stats, in words and as JSON.
    let stats = ok(&["stats", b]);
    assert!(stats.contains("live keys:          4"), "{stats}");
    assert!(stats.contains("generation:         1"), "{stats}");
    let stats: serde_json::Value = serde_json::from_str(&ok(&["stats", b, "--json"])).unwrap();
    assert_eq!(stats["live_keys"], 4);
    assert_eq!(stats["generation"], 1);
    assert_eq!(stats["data_loss_events"], 0);

    // compact: a new generation, the same entries.
    let compacted = ok(&["compact", b]);
    assert!(compacted.contains("generation 1 -> "), "{compacted}");
    let stats: serde_json::Value = serde_json::from_str(&ok(&["stats", b, "--json"])).unwrap();
    assert!(stats["generation"].as_u64().unwrap() > 1, "{stats}");
    assert_eq!(ok(&["dump", b]), lines);

    // verify: clean, exit 0, both files described, the elected one marked.
    let report = ok(&["verify", b]);
    assert!(report.contains("status: clean"), "{report}");
    assert!(report.contains("(elected)"), "{report}");
    assert!(report.contains("live keys: 4"), "{report}");
    assert!(
        report.contains(".jrna: ") && report.contains(".jrnb: "),
        "{report}"
    );
}

/// Numbers keep every digit through the tool: an integer beyond 64 bits given to `set` is
/// stored exactly (not rounded to a float), and a big number stored by an application comes
/// out of `dump` as a JSON number and goes back in through `load` unchanged.
#[test]
fn numbers_keep_every_digit_through_set_get_dump_and_load() {
    let (_serial, dir, base) = scratch("app");
    let b = s(&base);
    ok(&["set", b, "big", "18446744073709551616", "--create"]);
    assert_eq!(ok(&["get", b, "big"]), "18446744073709551616\n");
    ok(&["set", b, "nested", r#"{"n": [-9223372036854775809, 1.5]}"#]);
    assert_eq!(
        ok(&["get", b, "nested"]),
        "{\"n\":[-9223372036854775809,1.5]}\n"
    );
    let exact = resilient_kv::bonjson::BigNumber::parse("-15e-1").unwrap();
    {
        let store = KVStore::new(&base, 64 * 1024, None, None).unwrap();
        store
            .insert("decimal".into(), Value::BigNumber(exact.clone()))
            .unwrap();
    }
    let dumped = dir.path().join("dump.json");
    std::fs::write(&dumped, ok(&["dump", b, "--json"])).unwrap();
    let copy = dir.path().join("copy");
    ok(&["load", s(&copy), s(&dumped), "--create"]);
    let store = KVStore::open_read_only(&copy).unwrap();
    assert_eq!(store.get("decimal").unwrap(), Some(Value::BigNumber(exact)));
    let original = KVStore::open_read_only(&base).unwrap();
    assert_eq!(store.as_hashmap(), original.as_hashmap());
}

#[test]
fn load_applies_json_lines_or_an_object_as_one_batch() {
    let (_serial, dir, base) = scratch("app");
    let b = s(&base);

    // JSON lines from a file, into a new store.
    let lines = dir.path().join("entries.jsonl");
    std::fs::write(
        &lines,
        "{\"a\": 1}\n{\"b\": \"two\"}\n{\"c\": [3]}\n{\"a\": 10}\n",
    )
    .unwrap();
    let out = ok(&["load", b, s(&lines), "--create"]);
    assert!(out.contains("loaded 4 entries"), "{out}");
    assert_eq!(
        ok(&["dump", b]),
        "{\"a\":10}\n{\"b\":\"two\"}\n{\"c\":[3]}\n"
    );

    // One object from stdin; null removes.
    let (code, _, err) = run_with_stdin(&["load", b, "-"], r#"{"b": null, "d": {"x": 1.5}}"#);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        ok(&["dump", b]),
        "{\"a\":10}\n{\"c\":[3]}\n{\"d\":{\"x\":1.5}}\n"
    );

    // A dump loads back into another store unchanged, in either format.
    for flag in [None, Some("--json")] {
        let copy = dir.path().join(format!("copy{}", flag.is_some()));
        let dumped = dir.path().join("dump.json");
        let mut args = vec!["dump", b];
        args.extend(flag);
        std::fs::write(&dumped, ok(&args)).unwrap();
        ok(&["load", s(&copy), s(&dumped), "--create"]);
        assert_eq!(ok(&["dump", s(&copy)]), ok(&["dump", b]));
    }

    // All or nothing: one bad entry (an empty key) and nothing is applied.
    let before = ok(&["dump", b]);
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"e\": 5}\n{\"\": 6}\n{\"f\": 7}\n").unwrap();
    let err = fails(&["load", b, s(&bad)], 1);
    assert!(err.contains("invalid key"), "{err}");
    assert_eq!(ok(&["dump", b]), before);

    // Input that is not JSON objects: a clear error, nothing applied.
    std::fs::write(&bad, "{\"e\": 5}\n[1, 2]\n").unwrap();
    let err = fails(&["load", b, s(&bad)], 1);
    assert!(err.contains("must hold JSON objects"), "{err}");
    std::fs::write(&bad, "{\"e\": 5}\n{\"f\": \n").unwrap();
    let err = fails(&["load", b, s(&bad)], 1);
    assert!(
        err.contains("invalid JSON") && err.contains("line 3"),
        "{err}"
    );
    let err = fails(&["load", b, s(&dir.path().join("nonexistent.json"))], 1);
    assert!(err.contains("cannot read"), "{err}");
    assert_eq!(ok(&["dump", b]), before);
}

#[test]
fn bad_arguments_are_one_line_and_exit_2() {
    let (_serial, _dir, base) = scratch("app");
    let b = s(&base);
    ok(&["set", b, "k", "1", "--create"]);
    for args in [
        &[][..],
        &["frobnicate"],
        &["get"],
        &["get", b],
        &["get", b, "k", "extra"],
        &["set", b, "k"],
        &["dump", b, "--bogus"],
        &["watch", b, "--for", "-1"],
        &["watch", b, "--interval", "soon"],
        &["stats", b, "--json=maybe"],
    ] {
        fails(args, 2);
    }
    // Help and version are not errors.
    let help = ok(&["--help"]);
    for sub in [
        "stats", "get", "set", "rm", "dump", "load", "verify", "compact", "watch",
    ] {
        assert!(help.contains(sub), "--help lacks {sub}: {help}");
    }
    assert!(ok(&["--version"]).starts_with("rkv "));
    assert!(ok(&["verify", "--help"]).contains("Exit status"));

    // Bad values and keys: exit 1, one line, nothing written.
    let before = files(&base);
    let err = fails(&["set", b, "k", "dark"], 1);
    assert!(
        err.contains("invalid JSON") && err.contains("quotes"),
        "{err}"
    );
    let err = fails(&["set", b, "", "1"], 1);
    assert!(err.contains("invalid key"), "{err}");
    let long = "x".repeat(5000);
    let err = fails(&["set", b, &long, "1"], 1);
    assert!(err.contains("invalid key"), "{err}");
    let err = fails(&["set", b, "k", "[1, 2"], 1);
    assert!(err.contains("invalid JSON"), "{err}");
    assert!(files(&base) == before, "a refused write changed the files");
}

#[test]
fn a_missing_store_is_a_clear_error_and_creates_nothing() {
    let (_serial, dir, base) = scratch("nothing");
    let b = s(&base);
    let input = dir.path().join("in.json");
    std::fs::write(&input, "{\"a\": 1}").unwrap();
    for (args, code) in [
        (&["stats", b][..], 1),
        (&["get", b, "k"], 1),
        (&["dump", b], 1),
        (&["dump", b, "--json"], 1),
        (&["watch", b, "--for", "0.1"], 1),
        (&["rm", b, "k"], 1),
        (&["compact", b], 1),
        (&["set", b, "k", "1"], 1),
        (&["load", b, s(&input)], 1),
        (&["verify", b], 2),
    ] {
        let err = fails(args, code);
        assert!(
            err.contains("no store") && err.contains("nothing.jrna"),
            "rkv {args:?}: {err}"
        );
    }
    assert_eq!(
        dir_entries(dir.path()),
        ["in.json"],
        "a command created files"
    );
    // In a directory that does not exist either.
    let deep = dir.path().join("no/such/dir/app");
    fails(&["dump", s(&deep)], 1);
    fails(&["verify", s(&deep)], 2);
    assert_eq!(dir_entries(dir.path()), ["in.json"]);
    // Files that exist but cannot be read were not checked: 3, not "unusable" (2).
    let unreadable = dir.path().join("unreadable");
    std::fs::create_dir(dir.path().join("unreadable.jrna")).unwrap();
    fails(&["verify", s(&unreadable)], 3);
}

#[test]
fn read_only_commands_never_write() {
    let (_serial, dir, base) = scratch("app");
    let b = s(&base);
    {
        // A small journal left past the default high-water mark (written with the mark at 1.0,
        // so nothing compacted it), so a writable open would compact it at once.
        let store = KVStore::builder(&base)
            .buffer_size(16 * 1024)
            .high_water_mark(1.0)
            .pace_compactions(false)
            .open()
            .unwrap();
        let mut i = 0;
        while store.stats().active_used < 14 * 1024 {
            store
                .insert(format!("key{i:03}"), Value::Integer(i))
                .unwrap();
            i += 1;
        }
        assert_eq!(store.stats().compactions, 0);
    }
    let before = files(&base);
    ok(&["stats", b]);
    ok(&["get", b, "key007"]);
    ok(&["dump", b]);
    ok(&["dump", b, "--json"]);
    ok(&["verify", b]);
    ok(&["watch", b, "--count", "1"]);
    ok(&["watch", b, "--for", "0.2", "--interval", "0.05"]);
    assert!(
        files(&base) == before,
        "a read-only command changed the files"
    );
    assert_eq!(dir_entries(dir.path()), ["app.jrna", "app.jrnb"]);
    // The files were worth protecting: a writable open does change them.
    let store = KVStore::new(&base, 16 * 1024, None, None).unwrap();
    let started = std::time::Instant::now();
    while store.stats().compactions == 0 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(store);
    assert!(
        files(&base) != before,
        "a writable open compacts these files"
    );
}

#[test]
fn verify_reports_damage_with_its_offset_and_exit_1() {
    let (_serial, _dir, base) = scratch("app");
    let b = s(&base);
    {
        let store = KVStore::new(&base, 64 * 1024, None, None).unwrap();
        for i in 0..10 {
            store
                .insert(format!("key{i}"), Value::from(format!("value {i}")))
                .unwrap();
        }
    }
    assert_eq!(ok(&["get", b, "key9"]), "\"value 9\"\n");
    // docs/format.md: a new store's active journal is `.jrna`, generation 1. Its records start
    // after the 4096-byte header; the first is the commit marker (12-byte frame + 9-byte body),
    // so the second record, the insert of key0, starts at 4096 + 21 = 4117. Damage a byte of
    // its body (past its 12-byte frame): its checksum fails, and valid records follow it.
    let active = journal(&base, "jrna");
    let mut bytes = std::fs::read(&active).unwrap();
    let damaged_at = 4096 + 12 + 9;
    bytes[damaged_at + 12 + 3] ^= 0x40;
    std::fs::write(&active, &bytes).unwrap();

    let (code, out, err) = run(&["verify", b]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err, "");
    assert!(out.contains("status: damaged"), "{out}");
    assert!(
        out.contains(&format!("DAMAGE at byte {damaged_at}")),
        "{out}"
    );
    assert!(
        out.contains("app.jrna") && out.contains("(elected)"),
        "{out}"
    );
    // Replay stops at the damage: only the commit marker is valid.
    assert!(out.contains("1 records, valid length 4117"), "{out}");

    // The status survives a reader that stops reading the report (`| grep -q`): here the
    // pipe's reading end is closed before `rkv` writes anything.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = StdCommand::new(env!("CARGO_BIN_EXE_rkv"))
        .args(["verify", b])
        .stdout(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "verify into a closed pipe");

    // The library says the same.
    let report = resilient_kv::verify::verify(&base).unwrap();
    assert_eq!(report.status, resilient_kv::verify::Status::Damaged);
    let elected = report.elected().unwrap();
    assert_eq!(elected.path, active);
    assert_eq!(elected.damage[0].offset, damaged_at as u64);
    assert!(elected.damage[0].lost_bytes > 0);

    // The read-only commands still work and report the loss, without repairing anything.
    let stats = ok(&["stats", b]);
    assert!(stats.contains("data loss events:   1"), "{stats}");
    assert_eq!(ok(&["dump", b]), "");
    assert!(std::fs::read(&active).unwrap() == bytes);

    // Damage the header too, and the commit marker that could prove it: unusable, exit 2.
    bytes[0] ^= 0xff;
    bytes[4096 + 12] ^= 0xff;
    std::fs::write(&active, &bytes).unwrap();
    let (code, out, err) = run(&["verify", b]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("status: unusable"), "{out}");
    assert!(out.contains("header damaged"), "{out}");
    assert!(out.contains("problem: no valid journal"), "{out}");
    let err = fails(&["dump", b], 1);
    assert!(err.contains("no valid journal"), "{err}");
}

#[test]
fn verify_checks_the_inactive_journal_and_a_recovered_header() {
    let (_serial, _dir, base) = scratch("app");
    let b = s(&base);
    {
        let store = KVStore::new(&base, 64 * 1024, None, None).unwrap();
        for i in 0..10 {
            store.insert(format!("key{i}"), Value::Integer(i)).unwrap();
        }
        store.compact().unwrap(); // generation 2 in .jrnb; .jrna keeps generation 1
        store.insert("after".into(), Value::Integer(1)).unwrap();
    }
    let report = resilient_kv::verify::verify(&base).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let [a, jb] = &report.files;
    assert!(!a.elected && jb.elected, "{report:?}");
    assert_eq!((a.generation, jb.generation), (Some(1), Some(2)));
    // Generation 1: commit marker + 10 inserts. Generation 2: the 10 keys packed into one
    // batch record, the marker, 1 insert.
    assert_eq!((a.records, jb.records), (11, 3));
    assert_eq!(report.live_keys, Some(11));

    // Damage a record in the retired journal: the data is intact, but verify says so.
    let retired = journal(&base, "jrna");
    let mut bytes = std::fs::read(&retired).unwrap();
    let second = 4096 + 12 + 9;
    bytes[second + 12 + 2] ^= 0x01;
    std::fs::write(&retired, &bytes).unwrap();
    let (code, out, _) = run(&["verify", b]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("DAMAGE at byte {second}")), "{out}");
    assert!(out.contains("live keys: 11"), "{out}");
    assert_eq!(ok(&["dump", b]).lines().count(), 11);
    bytes[second + 12 + 2] ^= 0x01;
    std::fs::write(&retired, &bytes).unwrap();
    assert_eq!(run(&["verify", b]).0, 0);

    // Zero the elected journal's header: its records prove generation 2, so it still wins
    // (reported as damage at byte 0), and nothing is lost.
    let elected = journal(&base, "jrnb");
    let mut bytes = std::fs::read(&elected).unwrap();
    bytes[..64].fill(0);
    std::fs::write(&elected, &bytes).unwrap();
    let (code, out, _) = run(&["verify", b]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("header empty, generation 2, 3 records"),
        "{out}"
    );
    assert!(
        out.contains("DAMAGE at byte 0") && out.contains("(elected)"),
        "{out}"
    );
    assert_eq!(ok(&["get", b, "after"]), "1\n");
    assert_eq!(ok(&["dump", b]).lines().count(), 11);
}

#[test]
fn closing_stdout_early_is_not_an_error() {
    let (_serial, _dir, base) = scratch("app");
    {
        let store = KVStore::new(&base, 1024 * 1024, None, None).unwrap();
        for i in 0..20_000 {
            store
                .insert(format!("key{i:05}"), Value::Integer(i))
                .unwrap();
        }
    }
    // Like `rkv dump | head -1`.
    let mut child = StdCommand::new(env!("CARGO_BIN_EXE_rkv"))
        .args(["dump", s(&base)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "{\"key00000\":0}\n");
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    assert!(output.status.success(), "{:?}", output.status);
}

/// The live writer: `a_live_store_held_by_another_process` re-executes itself with
/// `RKV_CLI_LIVE_WRITER` set to the store's base path, and this runs in that process.
/// Opens the store for writing, writes 50 keys and says "ready". On the line "go" on stdin it
/// starts writing a key every few milliseconds; on "stop" it stops and says "wrote N" (the
/// number of keys). Exits at EOF.
fn live_writer(base: &str) {
    let store = Arc::new(
        KVStore::builder(base)
            .buffer_size(16 * 1024)
            .open()
            .unwrap(),
    );
    for i in 0..50 {
        store
            .insert(format!("live{i:05}"), Value::Integer(i))
            .unwrap();
    }
    println!("\nready");
    let stop = Arc::new(AtomicBool::new(false));
    let mut writing = None;
    for line in std::io::stdin().lock().lines() {
        match line.unwrap().as_str() {
            "go" => {
                let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
                writing = Some(std::thread::spawn(move || {
                    let mut next = 50;
                    while !stop.load(Ordering::Relaxed) {
                        store
                            .insert(format!("live{next:05}"), Value::Integer(next))
                            .unwrap();
                        next += 1;
                        std::thread::sleep(Duration::from_millis(3));
                    }
                    next
                }));
            }
            "stop" => {
                stop.store(true, Ordering::Relaxed);
                let keys = writing.take().unwrap().join().unwrap();
                println!("\nwrote {keys}");
            }
            other => panic!("unknown command {other:?}"),
        }
    }
}

struct LiveWriter {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl LiveWriter {
    fn start(base: &Path) -> Self {
        let mut child = StdCommand::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_live_store_held_by_another_process",
                "--nocapture",
            ])
            .env(CHILD_ENV, base)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let writer = LiveWriter {
            child,
            stdin,
            lines,
        };
        writer.wait_for("ready");
        writer
    }

    /// Waits for a line starting with `word`; returns the rest of it.
    fn wait_for(&self, word: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("the live writer never said {word:?}: {e}"));
            if let Some(rest) = line.trim().strip_prefix(word) {
                return rest.trim().to_string();
            }
        }
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for LiveWriter {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF: the child exits
        let _ = self.child.wait();
    }
}

#[test]
fn a_live_store_held_by_another_process() {
    let _serial = one_at_a_time();
    if let Ok(base) = std::env::var(CHILD_ENV) {
        live_writer(&base);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("live");
    let b = s(&base);
    let mut writer = LiveWriter::start(&base);

    // Reading works while the other process holds the store open for writing.
    assert_eq!(ok(&["get", b, "live00007"]), "7\n");
    let dump = ok(&["dump", b]);
    assert_eq!(dump.lines().count(), 50);
    assert!(dump.starts_with("{\"live00000\":0}\n"), "{dump}");
    let stats: serde_json::Value = serde_json::from_str(&ok(&["stats", b, "--json"])).unwrap();
    assert_eq!(stats["live_keys"], 50);
    let report = ok(&["verify", b]);
    assert!(report.contains("status: clean"), "{report}");

    // Writing does not: the writer holds the lock.
    for args in [
        &["set", b, "k", "1"][..],
        &["rm", b, "live00001"],
        &["compact", b],
    ] {
        let err = fails(args, 1);
        assert!(err.contains("is locked by another open instance"), "{err}");
    }

    // watch follows the writer: stats lines as the keys grow, through its compactions.
    writer.send("go");
    let (code, out, err) = run(&[
        "watch",
        b,
        "--interval",
        "0.05",
        "--count",
        "4",
        "--for",
        "60",
    ]);
    assert_eq!(code, 0, "{err}");
    let keys: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("keys="))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(keys.len(), 4, "{out}");
    // Never fewer keys, and more by the end (a line may come from a compaction alone).
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{out}");
    assert!(keys[0] < keys[3], "{out}");
    writer.send("stop");
    let keys: usize = writer.wait_for("wrote").parse().unwrap();
    assert!(keys > 50);
    let dump = ok(&["dump", b]);
    assert_eq!(dump.lines().count(), keys);
    let last = keys - 1;
    assert!(
        dump.ends_with(&format!("{{\"live{last:05}\":{last}}}\n")),
        "{dump}"
    );

    drop(writer);
    // Once the writer is gone, writing works.
    ok(&["set", b, "k", "1"]);
    assert_eq!(ok(&["get", b, "k"]), "1\n");
}

/// A `verify` whose report cannot be written (stdout is a full disk) did not check anything
/// anyone saw: exit status 3, "not checked", never 1, which says the files are damaged.
#[cfg(target_os = "linux")]
#[test]
fn verify_that_cannot_write_its_report_exits_3_not_1() {
    let (_serial, _dir, base) = scratch("app");
    let b = s(&base);
    {
        let store = KVStore::new(&base, 64 * 1024, None, None).unwrap();
        store.insert("k".into(), Value::Integer(1)).unwrap();
    }
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_rkv"))
        .args(["verify", b])
        .stdout(full)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3), "{status:?}");
    // The same store, its report written: clean.
    assert!(ok(&["verify", b]).contains("clean"));
}

/// A write the store would refuse (an empty key, a NUL in a key, a value nested beyond the
/// codec's limit) is refused before the store is opened, so `--create` leaves no files behind
/// (the store used to be created, then the write refused).
#[test]
fn refused_writes_with_create_create_nothing() {
    let (_serial, dir, base) = scratch("app");
    let b = s(&base);
    let deep = format!("{}1{}", "[".repeat(600), "]".repeat(600));
    for (key, json) in [("", "1"), ("k", deep.as_str())] {
        let (code, _, err) = run(&["set", b, key, json, "--create"]);
        assert_eq!(code, 1, "set {key:?}: {err}");
        assert_one_line_error(&["set", b, key], &err);
    }
    let input = dir.path().join("in.json");
    for bad in [r#"{"": 2}"#, r#"{"a\u0000b": 2}"#] {
        std::fs::write(&input, format!("{{\"good\": 1}}\n{bad}\n")).unwrap();
        let (code, _, err) = run(&["load", b, s(&input), "--create"]);
        assert_eq!(code, 1, "load {bad}: {err}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("in.json")],
        "files left behind"
    );
}
