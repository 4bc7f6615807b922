//! Running many cases: a watchdog against hangs, panics caught, failures grouped.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fixture::{Fixture, fixture, scratch};
use crate::oracle::{Case, Outcome, failure, run_case};

struct Watchdog {
    state: Arc<(AtomicU64, Mutex<String>, AtomicBool)>,
}

impl Watchdog {
    fn new(test: &'static str) -> Self {
        let state = Arc::new((
            AtomicU64::new(0),
            Mutex::new(String::new()),
            AtomicBool::new(false),
        ));
        let watched = Arc::clone(&state);
        std::thread::spawn(move || {
            let (mut seen, mut since) = (u64::MAX, Instant::now());
            while !watched.2.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(200));
                let now = watched.0.load(Ordering::Acquire);
                if now != seen {
                    (seen, since) = (now, Instant::now());
                } else if since.elapsed() > Duration::from_secs(60) {
                    eprintln!(
                        "{test}: no progress for 60 s (open hangs?) in case: {}",
                        watched.1.lock().unwrap()
                    );
                    std::process::abort();
                }
            }
        });
        Watchdog { state }
    }

    fn case(&self, name: &str) {
        name.clone_into(&mut self.state.1.lock().unwrap());
        self.state.0.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.state.2.store(true, Ordering::Release);
    }
}

/// Runs cases, counts outcomes and groups failures by region and kind.
pub(crate) struct Runner {
    test: &'static str,
    pub(crate) fx: &'static Fixture,
    pub(crate) work: tempfile::TempDir,
    watchdog: Watchdog,
    started: Instant,
    cases: u64,
    pub(crate) outcomes: BTreeMap<&'static str, u64>,
    failures: BTreeMap<String, (u64, String)>,
}

impl Runner {
    pub(crate) fn new(test: &'static str) -> Self {
        Runner {
            test,
            fx: fixture(),
            work: scratch(),
            watchdog: Watchdog::new(test),
            started: Instant::now(),
            cases: 0,
            outcomes: BTreeMap::new(),
            failures: BTreeMap::new(),
        }
    }

    pub(crate) fn run(&mut self, case: Case) {
        self.watchdog.case(&case.name);
        self.cases += 1;
        let (fx, work) = (self.fx, self.work.path());
        let result =
            catch_unwind(AssertUnwindSafe(|| run_case(fx, work, &case))).unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                Err(failure("panicked", msg))
            });
        match result {
            Ok(outcome) => {
                let name = match outcome {
                    Outcome::Intact => "nothing lost",
                    Outcome::LossReported => "loss reported",
                    Outcome::LossSilent => "unprovable loss, silent",
                    Outcome::Refused => "refused with the expected error",
                };
                *self.outcomes.entry(name).or_default() += 1;
            }
            Err(f) => {
                let entry = self
                    .failures
                    .entry(format!("{}: {}", case.region, f.kind))
                    .or_insert((0, format!("{}: {}", case.name, f.detail)));
                entry.0 += 1;
            }
        }
    }

    /// Cases run so far.
    pub(crate) fn cases(&self) -> u64 {
        self.cases
    }

    /// Fails unless at least `min` cases ended as `outcome` (a name `run` counts under): a
    /// sweep whose damage never reached what it aims at would otherwise pass with every case
    /// "nothing lost". Checks nothing once a case failed (`finish` reports those).
    pub(crate) fn require(&self, outcome: &str, min: u64) {
        if !self.failures.is_empty() {
            return;
        }
        let seen = self.outcomes.get(outcome).copied().unwrap_or(0);
        assert!(
            seen >= min,
            "{}: {seen} cases ended as {outcome:?}, at least {min} expected ({:?})",
            self.test,
            self.outcomes
        );
    }

    pub(crate) fn finish(self) {
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        println!(
            "{}: {} cases in {:.1} s ({})",
            self.test,
            self.cases,
            self.started.elapsed().as_secs_f64(),
            outcomes.join(", ")
        );
        if !self.failures.is_empty() {
            let failed: u64 = self.failures.values().map(|f| f.0).sum();
            let mut report = format!(
                "{}: {failed} of {} cases failed, by region and kind (first example each):\n",
                self.test, self.cases
            );
            for (class, (count, example)) in &self.failures {
                report.push_str(&format!("- {count} x {class}\n    e.g. {example}\n"));
            }
            panic!("{report}");
        }
    }
}
