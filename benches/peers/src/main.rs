//! Side-by-side benchmark of resilient-kv against the stores users would pick instead (issue 5):
//! LMDB (heed), redb, fjall, SQLite and mmkv, plus a plain `HashMap` (reads) and a bare append
//! to a memory-mapped file (writes) as physical limits.
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- --out docs/
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- --quick   # smoke run
//! ```
//!
//! Each peer runs in its own child process per round (this binary, started with `--child`), so
//! that its peak memory is its own and no store's threads or caches disturb another's figures.
//! Rounds are interleaved: every session runs once per round, and figures are medians over
//! the rounds. The parent writes the tables into `<out>/benchmarks-peers.md` (between two
//! markers, leaving the rest of the file alone) and the chart to `<out>/peers.svg`.

#![warn(missing_docs)]

mod chart;
mod peers;
mod report;
mod sys;
mod workload;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peers::{Mode, Peer};
use workload::{Record, Session};

/// Errors of every store and of the harness, boxed.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Longest a child may run before it is killed and reported as failed (a healthy session
/// takes under 30 s: its timed loops have time caps).
const CHILD_TIMEOUT: Duration = Duration::from_secs(150);

/// One (peer, mode, busy) combination: a row of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionKey {
    /// The store.
    pub peer: Peer,
    /// `false` for mode (a), `true` for mode (b) (an order that puts (a) first).
    pub power: bool,
    /// Whether a spinning thread kept the other core busy.
    pub busy: bool,
}

impl SessionKey {
    /// The durability mode.
    pub fn mode(self) -> Mode {
        if self.power {
            Mode::Power
        } else {
            Mode::Process
        }
    }
}

/// What one child reported: its records, or why it failed.
pub type Outcome = std::result::Result<Vec<Record>, String>;

/// Everything measured, by session, one outcome per round.
pub type Results = BTreeMap<SessionKey, Vec<Outcome>>;

/// Facts about the run printed beside the tables.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The command that regenerates everything.
    pub command: String,
    /// Rounds run.
    pub runs: usize,
    /// Whether counts were the small `--quick` ones.
    pub quick: bool,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Machine description.
    pub machine: String,
    /// File system holding the stores.
    pub filesystem: String,
    /// Load average at start and end.
    pub load: (f64, f64),
    /// Cost of one `Instant::now()`, ns.
    pub clock_ns: f64,
    /// Date of the run (UTC).
    pub date: String,
}

struct Args {
    out: PathBuf,
    quick: bool,
    runs: usize,
    data: PathBuf,
    only: Option<Vec<Peer>>,
    child: Option<Session>,
}

fn usage() -> ! {
    eprintln!(
        "usage: resilient-kv-peers [--out DIR] [--quick] [--runs N] [--data DIR] [--only rkv,heed,...]\n\
         \n  --out DIR   where benchmarks-peers.md (generated section) and peers.svg go\n\
         \x20             (default: docs, or a temporary directory with --quick)\n\
         \x20 --quick     small counts, one run: a smoke test that takes seconds\n\
         \x20 --runs N    interleaved runs (default 3)\n\
         \x20 --data DIR  where the stores are created (default: $TMPDIR/resilient-kv-peers);\n\
         \x20             must be a real disk for mode (b) to mean anything\n\
         \x20 --only L    run only these peers: {}",
        Peer::ALL.map(Peer::id).join(",")
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut out = None;
    let mut quick = false;
    let mut runs = None;
    let mut data = std::env::temp_dir().join("resilient-kv-peers");
    let mut only = None;
    let mut child = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(value())),
            "--quick" => quick = true,
            "--runs" => runs = Some(value().parse().unwrap_or_else(|_| usage())),
            "--data" => data = PathBuf::from(value()),
            "--only" => {
                only = Some(
                    value()
                        .split(',')
                        .map(|p| Peer::from_id(p).unwrap_or_else(|| usage()))
                        .collect(),
                );
            }
            "--child" => {
                let peer = Peer::from_id(&value()).unwrap_or_else(|| usage());
                let mode = match value().as_str() {
                    "a" => Mode::Process,
                    "b" => Mode::Power,
                    _ => usage(),
                };
                let busy = value() == "busy";
                let dir = PathBuf::from(value());
                child = Some(Session {
                    peer,
                    mode,
                    busy,
                    quick: false,
                    dir,
                });
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    if let Some(c) = child.as_mut() {
        c.quick = quick;
    }
    let out = out.unwrap_or_else(|| {
        if quick {
            std::env::temp_dir().join("resilient-kv-peers-quick")
        } else {
            PathBuf::from("docs")
        }
    });
    Args {
        out,
        quick,
        runs: runs.unwrap_or(if quick { 1 } else { 3 }),
        data,
        only,
        child,
    }
}

fn main() {
    let args = parse_args();
    if let Some(session) = &args.child {
        std::process::exit(child_main(session));
    }
    if let Err(e) = parent_main(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The child: runs one session and prints its records on stdout.
fn child_main(session: &Session) -> i32 {
    match workload::run(session) {
        Ok(records) => {
            for r in records {
                println!("{}", r.to_line());
            }
            0
        }
        Err(e) => {
            eprintln!("{}", e.to_string().replace('\n', " "));
            1
        }
    }
}

/// The sessions of one round, in table order.
fn sessions(only: Option<&[Peer]>) -> Vec<SessionKey> {
    let mut keys = Vec::new();
    for peer in Peer::ALL {
        if only.is_some_and(|o| !o.contains(&peer)) {
            continue;
        }
        keys.push(SessionKey {
            peer,
            power: false,
            busy: false,
        });
        if peer != Peer::HashMap {
            keys.push(SessionKey {
                peer,
                power: true,
                busy: false,
            });
        }
        if peer == Peer::Mmkv {
            keys.push(SessionKey {
                peer,
                power: false,
                busy: true,
            });
        }
    }
    keys
}

fn parent_main(args: &Args) -> Result<()> {
    let start = Instant::now();
    let load_start = sys::load_average();
    std::fs::create_dir_all(&args.data)?;
    std::fs::create_dir_all(&args.out)?;
    let exe = std::env::current_exe()?;
    let keys = sessions(args.only.as_deref());
    let clock_ns = workload::clock_cost_ns();
    eprintln!(
        "{} sessions x {} runs; stores in {} on {}",
        keys.len(),
        args.runs,
        args.data.display(),
        sys::filesystem_of(&args.data)
    );
    let mut results = Results::new();
    for round in 0..args.runs {
        // Rotate the order each round so that no session always follows the same neighbour.
        let shift = round * keys.len() / args.runs.max(1);
        for i in 0..keys.len() {
            let key = keys[(i + shift) % keys.len()];
            let t0 = Instant::now();
            let outcome = run_child(&exe, &args.data, key, args.quick);
            eprintln!(
                "[run {}/{} {:>6.1} s] {} ({}{}): {:.1} s{}",
                round + 1,
                args.runs,
                start.elapsed().as_secs_f64(),
                key.peer.id(),
                key.mode().letter(),
                if key.busy { ", other core busy" } else { "" },
                t0.elapsed().as_secs_f64(),
                match &outcome {
                    Ok(_) => String::new(),
                    Err(e) => format!(" FAILED: {e}"),
                }
            );
            results.entry(key).or_default().push(outcome);
        }
    }
    let info = RunInfo {
        command: format!(
            "cargo run --release --manifest-path benches/peers/Cargo.toml -- --out docs/{}",
            if args.quick { " --quick" } else { "" }
        ),
        runs: args.runs,
        quick: args.quick,
        elapsed: start.elapsed(),
        machine: sys::machine(),
        filesystem: sys::filesystem_of(&args.data),
        load: (load_start, sys::load_average()),
        clock_ns,
        date: report::utc_date(),
    };
    let markdown = report::markdown(&results, &info);
    print!("{markdown}");
    let doc = args.out.join("benchmarks-peers.md");
    report::write_generated(&doc, &markdown)?;
    let svg = args.out.join("peers.svg");
    chart::draw(&results, &info, &svg)?;
    eprintln!(
        "wrote {} and {} in {:.0} s",
        doc.display(),
        svg.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where [`dump_stacks`] writes for a session directory.
fn stacks_path(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "session".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!("stacks-{name}.txt"))
}

/// Saves the stacks of every thread of a child that overran its time, with gdb when the
/// machine has it, so that a hang can be told from a slow machine.
fn dump_stacks(pid: u32, dir: &Path) {
    let out = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .stdin(Stdio::null())
        .output();
    let text = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("gdb not run: {e}"),
    };
    let _ = std::fs::write(stacks_path(dir), text);
}

/// Runs one session in a child process and collects its records.
fn run_child(exe: &Path, data: &Path, key: SessionKey, quick: bool) -> Outcome {
    let dir = workload::session_dir(data, key.peer, key.mode(), key.busy);
    let mut cmd = Command::new(exe);
    cmd.arg("--child")
        .arg(key.peer.id())
        .arg(key.mode().letter())
        .arg(if key.busy { "busy" } else { "idle" })
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if quick {
        cmd.arg("--quick");
    }
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    // Read both pipes on threads so that a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > CHILD_TIMEOUT => {
                dump_stacks(child.id(), &dir);
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    let out = out_thread.join().unwrap_or_default();
    let err = err_thread.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    match status {
        None => Err(format!(
            "killed after {} s; thread stacks in {}",
            CHILD_TIMEOUT.as_secs(),
            stacks_path(&dir).display()
        )),
        Some(s) if !s.success() => Err(format!(
            "{s}: {}",
            err.lines().last().unwrap_or("no message").trim()
        )),
        Some(_) => Ok(out.lines().filter_map(Record::parse).collect()),
    }
}
