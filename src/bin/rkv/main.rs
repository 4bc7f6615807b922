//! `rkv`: look inside and edit a resilient-kv store from the shell.
//!
//! `BASE` is the store's base path, as given to `KVStore::new` (the files are `BASE.jrna` and
//! `BASE.jrnb`). The read-only commands (`stats`, `get`, `dump`, `verify`, `watch`) take no
//! lock and never write, so they work on a store another process has open. The others open
//! the store for writing, which fails while another process has it open.
//!
//! Values are JSON on the command line and on output. Errors are one line on stderr and a
//! non-zero exit status: 1 for a failure, 2 for bad arguments; `verify` exits 0 when the files
//! are clean, 1 when they are damaged, 2 when no store can be opened from them and 3 when they
//! could not be checked (unreadable, or switched by compactions during every copy).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use json::Exact;
use resilient_kv::verify::{self, Status, VerifyReport};
use resilient_kv::{Batch, Error, Event, KVStore, MIN_BUFFER_SIZE, Stats, Value};

mod json;

/// Look inside and edit a resilient-kv store.
///
/// BASE is the store's base path: its files are BASE.jrna and BASE.jrnb. stats, get, dump,
/// verify and watch never write and work while another process has the store open; set, rm,
/// load and compact need the store to themselves.
#[derive(Parser)]
#[command(name = "rkv", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the store's figures (keys, generation, journal sizes).
    Stats {
        /// The store's base path.
        base: PathBuf,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Print the value under KEY as JSON (exit 1 if there is none).
    Get {
        /// The store's base path.
        base: PathBuf,
        /// The key.
        key: String,
    },
    /// Store a JSON value under KEY (null removes the key).
    Set {
        /// The store's base path.
        base: PathBuf,
        /// The key.
        key: String,
        /// The value, as JSON: 42, -5, true, '"text"', '{"a": [1, 2]}'.
        #[arg(allow_negative_numbers = true)]
        json: String,
        /// Create the store if it does not exist.
        #[arg(long)]
        create: bool,
    },
    /// Remove KEY (exit 1 if there is none).
    Rm {
        /// The store's base path.
        base: PathBuf,
        /// The key.
        key: String,
    },
    /// Print every entry, sorted by key: one JSON object {"key": value} per line.
    Dump {
        /// The store's base path.
        base: PathBuf,
        /// Print one JSON object holding every entry instead.
        #[arg(long)]
        json: bool,
    },
    /// Apply the entries of FILE as one atomic batch (what `dump` or `dump --json` prints).
    ///
    /// FILE holds JSON objects: one per line, or one object, or any sequence of them. Every
    /// member is an entry; a later one wins; a null value removes the key. Either every
    /// entry is applied or none is. FILE `-` reads standard input.
    Load {
        /// The store's base path.
        base: PathBuf,
        /// The file to read (`-` for standard input).
        file: PathBuf,
        /// Create the store if it does not exist.
        #[arg(long)]
        create: bool,
    },
    /// Check both journal files: generation, records, valid length, damage and its offset.
    ///
    /// Exit status: 0 clean, 1 damaged, 2 unusable (no store opens from these files), 3 not
    /// checked (a file could not be read, or compactions switched files during every copy).
    Verify {
        /// The store's base path.
        base: PathBuf,
    },
    /// Compact now: rewrite the live entries into the other journal and switch to it.
    Compact {
        /// The store's base path.
        base: PathBuf,
    },
    /// Print the store's figures and events as another process writes it.
    ///
    /// Prints a stats line at the start and whenever the store changed, a line when the
    /// writer has switched journals since the last look (several compactions between two
    /// looks show as one switch), and a line for each event (such as data loss found in the
    /// files).
    Watch {
        /// The store's base path.
        base: PathBuf,
        /// Seconds between two looks at the files.
        #[arg(long, default_value = "1", value_parser = seconds, allow_negative_numbers = true)]
        interval: Duration,
        /// Stop after this many seconds.
        #[arg(long = "for", value_name = "SECONDS", value_parser = seconds, allow_negative_numbers = true)]
        duration: Option<Duration>,
        /// Stop after printing this many stats lines (the first one included).
        #[arg(long)]
        count: Option<u64>,
    },
}

/// A failure: a message for stderr, or a closed stdout (the reader went away: not an error).
enum Failure {
    Message(String),
    BrokenPipe,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Message(describe(&e))
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::BrokenPipe
        } else {
            Failure::Message(format!("cannot write the output: {e}"))
        }
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure::Message(message.into()))
}

/// `verify`'s exit status when it could not produce a report: 2 when there is no store at
/// all (nothing opens from these files), 3 when the files could not be checked (unreadable, or
/// a store so busy that compactions switched files during every copy): a store in use is not
/// unusable.
fn verify_failure_code(e: &resilient_kv::Error) -> ExitCode {
    match e {
        resilient_kv::Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            ExitCode::from(2)
        }
        _ => ExitCode::from(3),
    }
}

/// A store error as one line, with a hint where one helps.
fn describe(e: &Error) -> String {
    match e {
        Error::Locked { .. } => format!(
            "{e} (another process has it open for writing; stats, get, dump, verify and watch \
             still work)"
        ),
        _ => e.to_string(),
    }
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a panic message and a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let _ = writeln!(io::stderr(), "rkv: internal error: {what}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    match run(cli.command) {
        Ok(code) => code,
        Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Message(message)) => {
            let _ = writeln!(io::stderr(), "rkv: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version go to stdout; an argument error is one line on stderr, exit status 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let text = e.render().to_string();
    // The message is the first paragraph (a list of missing arguments spans several lines).
    let first = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        "a subcommand is required (stats, get, set, rm, dump, load, verify, compact, watch)"
            .to_string()
    } else {
        let paragraph: Vec<&str> = text
            .lines()
            .map(str::trim)
            .skip_while(|l| l.is_empty())
            .take_while(|l| !l.is_empty())
            .collect();
        let joined = paragraph.join(" ");
        joined.strip_prefix("error: ").unwrap_or(&joined).replace(
            "the following required arguments were not provided:",
            "missing arguments:",
        )
    };
    let usage = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(|u| format!("; usage: {u}"))
        .unwrap_or_default();
    let _ = writeln!(io::stderr(), "rkv: {first}{usage} (see rkv --help)");
    ExitCode::from(2)
}

fn run(command: Command) -> Result<ExitCode, Failure> {
    let mut out = io::stdout().lock();
    match command {
        Command::Stats { base, json } => {
            let store = open_reader(&base)?;
            let stats = store.stats();
            if json {
                writeln!(out, "{}", stats_json(&stats))?;
            } else {
                write_stats(&mut out, &stats)?;
            }
        }
        Command::Get { base, key } => {
            let store = open_reader(&base)?;
            match store.get(&key)? {
                Some(value) => write_json(&mut out, &Exact(&value))?,
                None => return fail(format!("no key {key:?} in {}", base.display())),
            }
        }
        Command::Set {
            base,
            key,
            json,
            create,
        } => {
            let value = parse_value(&json)?;
            if create {
                // Refused before the open, which may create the store (without `--create` the
                // write itself refuses it, and changes nothing).
                check_entry(&key, &value)?;
            }
            let store = open_writer(&base, create)?;
            store.insert(key, value)?;
            store.sync()?;
        }
        Command::Rm { base, key } => {
            let store = open_writer(&base, false)?;
            if !store.contains_key(&key) {
                return fail(format!("no key {key:?} in {}", base.display()));
            }
            store.remove(&key)?;
            store.sync()?;
        }
        Command::Dump { base, json } => {
            let store = open_reader(&base)?;
            let snapshot = store.snapshot();
            let sorted: BTreeMap<&str, Exact<'_>> =
                snapshot.iter().map(|(k, v)| (k, Exact(v))).collect();
            if json {
                write_json(&mut out, &sorted)?;
            } else {
                for (key, value) in sorted {
                    write_json(&mut out, &BTreeMap::from([(key, value)]))?;
                }
            }
        }
        Command::Load { base, file, create } => {
            let text = read_input(&file)?;
            let (batch, entries) = parse_entries(&text, &file, create)?;
            let store = open_writer(&base, create)?;
            store.write_batch(batch)?;
            store.sync()?;
            writeln!(out, "loaded {entries} entries into {}", base.display())?;
        }
        Command::Verify { base } => {
            let report = match verify::verify(&base) {
                Ok(report) => report,
                Err(e) => {
                    let _ = writeln!(io::stderr(), "rkv: {}", describe(&e));
                    return Ok(verify_failure_code(&e));
                }
            };
            let code = ExitCode::from(match report.status {
                Status::Clean => 0,
                Status::Damaged => 1,
                _ => 2,
            });
            // The status is the answer: a reader that stops reading the report early (`| grep
            // -q DAMAGE`) must not turn it into success.
            // A report that could not be written (a full disk) is not an answer: 3, "not
            // checked", never 1, which says the files are damaged.
            return match write_report(&mut out, &report).map_err(Failure::from) {
                Ok(()) | Err(Failure::BrokenPipe) => Ok(code),
                Err(Failure::Message(message)) => {
                    let _ = writeln!(io::stderr(), "rkv: {message}");
                    Ok(ExitCode::from(3))
                }
            };
        }
        Command::Compact { base } => {
            let store = open_writer(&base, false)?;
            let before = store.stats();
            store.compact()?;
            store.sync()?;
            let after = store.stats();
            writeln!(
                out,
                "compacted {}: generation {} -> {}, {} -> {} bytes, {} keys",
                base.display(),
                before.generation,
                after.generation,
                before.active_used,
                after.active_used,
                after.live_keys
            )?;
        }
        Command::Watch {
            base,
            interval,
            duration,
            count,
        } => watch(&mut out, &base, interval, duration, count)?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the store without a lock and without writing, for the read-only subcommands.
fn open_reader(base: &Path) -> Result<KVStore, Failure> {
    require_store(base)?;
    Ok(KVStore::open_read_only(base)?)
}

/// Opens the store for writing. Existing files keep their size (nothing grows them beyond what
/// the data needs); a new store is created only with `create`.
fn open_writer(base: &Path, create: bool) -> Result<KVStore, Failure> {
    let mut builder = KVStore::builder(base);
    if !create || exists(base) {
        require_store(base)?;
        let largest = KVStore::journal_paths(base)
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| usize::try_from(m.len()).unwrap_or(usize::MAX))
            .max()
            .unwrap_or(0);
        builder = builder
            .buffer_size(MIN_BUFFER_SIZE)
            .max_size(largest.max(1 << 30));
    }
    Ok(builder.open()?)
}

fn exists(base: &Path) -> bool {
    KVStore::journal_paths(base).iter().any(|p| p.exists())
}

fn require_store(base: &Path) -> Result<(), Failure> {
    if exists(base) {
        return Ok(());
    }
    let [a, b] = KVStore::journal_paths(base);
    fail(format!(
        "no store at {}: neither {} nor {} exists",
        base.display(),
        a.display(),
        b.display()
    ))
}

fn write_json(out: &mut impl Write, value: &impl serde::Serialize) -> Result<(), Failure> {
    serde_json::to_writer(&mut *out, value).map_err(|e| match e.io_error_kind() {
        Some(kind) => Failure::from(io::Error::from(kind)),
        None => Failure::Message(format!("cannot print a value as JSON: {e}")),
    })?;
    writeln!(out)?;
    Ok(())
}

fn parse_value(json: &str) -> Result<Value, Failure> {
    json::parse(json).or_else(|e| {
        let hint = if json.trim_start().starts_with(['"', '{', '[']) {
            ""
        } else {
            " (a string needs JSON quotes, e.g. '\"dark\"')"
        };
        fail(format!("invalid JSON value: {e}{hint}"))
    })
}

fn read_input(file: &Path) -> Result<String, Failure> {
    let mut text = String::new();
    let result = if file == Path::new("-") {
        io::stdin().read_to_string(&mut text).map(drop)
    } else {
        fs::File::open(file).and_then(|mut f| f.read_to_string(&mut text).map(drop))
    };
    match result {
        Ok(()) => Ok(text),
        Err(e) => fail(format!("cannot read {}: {e}", file.display())),
    }
}

/// What a write of `key` = `value` would refuse whatever the store (its key, or a value the
/// codec cannot encode), refused before any store is opened or created.
fn check_entry(key: &str, value: &Value) -> Result<(), Failure> {
    resilient_kv::check_key(key)?;
    match resilient_kv::bonjson::encode(value) {
        Ok(_) => Ok(()),
        Err(e) => fail(format!("the value of {key:?} cannot be stored: {e}")),
    }
}

/// Every member of every JSON object in `text`, as one batch, and how many there were.
/// With `check`, each entry is also checked as a write would check it (before an open that
/// may create the store; otherwise the batch's write refuses it, and changes nothing).
fn parse_entries(text: &str, file: &Path, check: bool) -> Result<(Batch, usize), Failure> {
    let mut batch = Batch::new();
    let mut entries = 0;
    let items = json::parse_stream(text)
        .or_else(|e| fail(format!("invalid JSON in {}: {e}", file.display())))?;
    for item in items {
        let item = match item {
            Ok(item) => item,
            Err(e) => return fail(format!("invalid JSON in {}: {e}", file.display())),
        };
        let Value::Object(members) = item else {
            return fail(format!(
                "{} must hold JSON objects ({{\"key\": value}}), found {}",
                file.display(),
                item.kind_name()
            ));
        };
        // Members of one object have distinct keys, so their order does not matter.
        for (key, value) in members {
            if check {
                check_entry(&key, &value)?;
            }
            batch.insert(key, value);
            entries += 1;
        }
    }
    Ok((batch, entries))
}

fn write_stats(out: &mut impl Write, s: &Stats) -> io::Result<()> {
    writeln!(out, "live keys:          {}", s.live_keys)?;
    writeln!(out, "generation:         {}", s.generation)?;
    writeln!(
        out,
        "active journal:     {} of {} bytes used",
        s.active_used, s.active_capacity
    )?;
    writeln!(
        out,
        "inactive journal:   {} of {} bytes used",
        s.inactive_used, s.inactive_capacity
    )?;
    writeln!(out, "data loss events:   {}", s.data_loss_events)
}

fn stats_json(s: &Stats) -> serde_json::Value {
    serde_json::json!({
        "live_keys": s.live_keys,
        "generation": s.generation,
        "active_used": s.active_used,
        "active_capacity": s.active_capacity,
        "inactive_used": s.inactive_used,
        "inactive_capacity": s.inactive_capacity,
        "compactions": s.compactions,
        "last_compaction_secs": s.last_compaction.map(|d| d.as_secs_f64()),
        "data_loss_events": s.data_loss_events,
    })
}

fn write_report(out: &mut impl Write, report: &VerifyReport) -> io::Result<()> {
    writeln!(out, "store {}", report.base.display())?;
    for file in &report.files {
        let Some(size) = file.size else {
            writeln!(out, "{}: missing", file.path.display())?;
            continue;
        };
        let generation = file
            .generation
            .map_or_else(|| "unknown".to_string(), |g| g.to_string());
        writeln!(
            out,
            "{}: {} bytes, header {}, generation {generation}, {} records, valid length {}{}",
            file.path.display(),
            size,
            file.header,
            file.records,
            file.valid_len,
            if file.elected { " (elected)" } else { "" }
        )?;
        if let Some(offset) = file.torn_at {
            writeln!(
                out,
                "  torn record at byte {offset}: a write cut short before it was \
                 acknowledged, discarded"
            )?;
        }
        if let Some(offset) = file.undecided_from {
            writeln!(
                out,
                "  records end at byte {offset}; the search for more records of this \
                 generation beyond it gave up (its budget spent, ordinarily on stale records \
                 of an older generation): not known to be damage"
            )?;
        }
        for damage in &file.damage {
            writeln!(
                out,
                "  DAMAGE at byte {}: {}",
                damage.offset, damage.description
            )?;
        }
    }
    if let Some(keys) = report.live_keys {
        writeln!(out, "live keys: {keys}")?;
    }
    if let Some(problem) = &report.problem {
        writeln!(out, "problem: {problem}")?;
    }
    writeln!(out, "status: {}", report.status)
}

fn stats_line(s: &Stats) -> String {
    format!(
        "keys={} generation={} active={}/{} inactive={}/{} data_loss={}",
        s.live_keys,
        s.generation,
        s.active_used,
        s.active_capacity,
        s.inactive_used,
        s.inactive_capacity,
        s.data_loss_events
    )
}

fn event_line(event: &Event) -> String {
    match event {
        Event::CompactionStarted { generation } => format!("compaction started: {generation}"),
        Event::CompactionFinished {
            generation,
            bytes_before,
            bytes_after,
            live_keys,
            duration,
        } => format!(
            "compaction finished: generation {generation}, {bytes_before} -> {bytes_after} \
             bytes, {live_keys} keys, {duration:?}"
        ),
        Event::CompactionFailed { generation, reason } => {
            format!("compaction of generation {generation} failed: {reason}")
        }
        Event::JournalGrown { new_size } => format!("journals grown to {new_size} bytes"),
        Event::DataLoss {
            path,
            offset,
            lost_bytes,
            detail,
        } => format!(
            "DATA LOSS in {} at byte {offset} ({lost_bytes} bytes): {detail}",
            path.display()
        ),
        other => format!("{other:?}"),
    }
}

/// Prints a stats line now and whenever the files changed, plus events, until the time or
/// count runs out (or forever).
fn watch(
    out: &mut impl Write,
    base: &Path,
    interval: Duration,
    duration: Option<Duration>,
    count: Option<u64>,
) -> Result<(), Failure> {
    let started = Instant::now();
    let store = open_reader(base)?;
    let events = store.subscribe();
    let mut last = store.stats();
    writeln!(out, "{}", stats_line(&last))?;
    out.flush()?;
    let mut printed = 1_u64;
    loop {
        for event in events.try_iter() {
            writeln!(out, "{}", event_line(&event))?;
        }
        out.flush()?;
        if count.is_some_and(|c| printed >= c) {
            return Ok(());
        }
        let left = duration.map(|d| d.saturating_sub(started.elapsed()));
        if left == Some(Duration::ZERO) {
            return Ok(());
        }
        let pause = interval.max(Duration::from_millis(10));
        std::thread::sleep(left.map_or(pause, |l| l.min(pause)));
        if !store.refresh()? {
            continue;
        }
        let now = store.stats();
        if now.generation != last.generation {
            writeln!(
                out,
                "journal switched: generation {} -> {} (the writer compacted)",
                last.generation, now.generation
            )?;
        }
        writeln!(out, "{}", stats_line(&now))?;
        printed += 1;
        last = now;
    }
}

/// A number of seconds (fractions allowed).
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a number of seconds"))
}
