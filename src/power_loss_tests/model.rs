//! The model: writes, the state after each prefix of them (with a fingerprint, so a recovered
//! map is matched against all prefixes at once), and the writer that performs them on a store
//! and records when each was acknowledged.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::journal::storage::MemBackend;
use crate::{Batch, Error, KVStore, Value};

#[derive(Debug, Clone)]
pub(super) enum Write {
    Insert(String, Value),
    Remove(String),
    Batch(Vec<(String, Option<Value>)>),
    Clear,
}

pub(super) type Map = HashMap<String, Value>;

fn entry_print(key: &str, value: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    format!("{value:?}").hash(&mut h);
    h.finish()
}

pub(super) fn map_print(map: &Map) -> u64 {
    map.iter()
        .fold(0_u64, |acc, (k, v)| acc.wrapping_add(entry_print(k, v)))
}

/// Applies `write` to `map`, keeping `print` (the sum of the entries' hashes) up to date.
pub(super) fn apply(map: &mut Map, print: &mut u64, write: &Write) {
    let mut put = |map: &mut Map, k: &String, v: Option<&Value>| {
        if let Some(old) = map.remove(k) {
            *print = print.wrapping_sub(entry_print(k, &old));
        }
        if let Some(v) = v {
            *print = print.wrapping_add(entry_print(k, v));
            map.insert(k.clone(), v.clone());
        }
    };
    match write {
        Write::Insert(k, v) => put(map, k, Some(v)),
        Write::Remove(k) => put(map, k, None),
        Write::Batch(ops) => {
            for (k, v) in ops {
                put(map, k, v.as_ref());
            }
        }
        Write::Clear => {
            map.clear();
            *print = 0;
        }
    }
}

/// Every write acknowledged so far, in order, with a fingerprint of the state after each
/// prefix (so a recovered map is matched against all prefixes at once).
#[derive(Clone, Default)]
pub(super) struct History {
    writes: Vec<Write>,
    /// `prints[j]`: fingerprint of the state after the first `j` writes.
    pub(super) prints: Vec<u64>,
    state: Map,
    print: u64,
}

impl History {
    pub(super) fn new() -> Self {
        History {
            prints: vec![0],
            ..History::default()
        }
    }

    pub(super) fn len(&self) -> usize {
        self.writes.len()
    }

    pub(super) fn push(&mut self, write: Write) {
        apply(&mut self.state, &mut self.print, &write);
        self.writes.push(write);
        self.prints.push(self.print);
    }

    pub(super) fn state_at(&self, j: usize) -> Map {
        let mut map = Map::new();
        let mut print = 0;
        for w in &self.writes[..j] {
            apply(&mut map, &mut print, w);
        }
        map
    }

    /// Keeps only the first `j` writes (what a crash left; the next life goes on from there).
    pub(super) fn truncate(&mut self, j: usize) {
        self.writes.truncate(j);
        self.prints.truncate(j + 1);
        self.state = self.state_at(j);
        self.print = self.prints[j];
    }
}

/// What one life of a store acknowledged, in storage-operation counts.
#[derive(Clone, Default)]
pub(super) struct Acks {
    /// History length when the life began.
    base: usize,
    /// Writes that must survive any crash of this life (durable before it began).
    inherited: usize,
    /// `write_acks[i]`: operation count when write `base + i` returned.
    write_acks: Vec<usize>,
    /// `(history length when sync() was called, operation count when it returned)`.
    pub(super) syncs: Vec<(usize, usize)>,
}

impl Acks {
    pub(super) fn new(base: usize, inherited: usize) -> Self {
        Acks {
            base,
            inherited,
            ..Acks::default()
        }
    }

    /// Writes that had returned before the crash at operation `n`.
    pub(super) fn acked(&self, n: usize) -> usize {
        self.base + self.write_acks.partition_point(|&at| at <= n)
    }

    /// Writes that must survive power loss at operation `n`.
    pub(super) fn required(&self, n: usize) -> usize {
        self.syncs
            .iter()
            .filter(|&&(_, at)| at <= n)
            .map(|&(len, _)| len)
            .fold(self.inherited, usize::max)
    }
}

/// The store's writer side: performs writes, records them and when they were acknowledged.
pub(super) struct Writer<'a> {
    pub(super) store: &'a KVStore,
    pub(super) disk: &'a MemBackend,
    pub(super) history: History,
    pub(super) acks: Acks,
    pub(super) sync_mode: bool,
}

impl Writer<'_> {
    /// Performs `write`; `Full` (nothing changed) is tolerated, any other error is a failure.
    pub(super) fn write(&mut self, write: Write) {
        let result = match &write {
            Write::Insert(k, v) => self.store.insert(k.clone(), v.clone()).map(drop),
            Write::Remove(k) => self.store.remove(k).map(drop),
            Write::Batch(ops) => {
                let mut batch = Batch::new();
                for (k, v) in ops {
                    match v {
                        Some(v) => batch.insert(k.clone(), v.clone()),
                        None => batch.remove(k.clone()),
                    };
                }
                self.store.write_batch(batch)
            }
            Write::Clear => self.store.clear(),
        };
        match result {
            Ok(()) => {
                let at = self.disk.ops_done();
                self.history.push(write);
                self.acks.write_acks.push(at);
                if self.sync_mode {
                    self.acks.syncs.push((self.history.len(), at));
                }
            }
            Err(Error::Full { .. }) => {}
            Err(e) => panic!("write {write:?} failed: {e}"),
        }
    }

    pub(super) fn sync(&mut self) {
        let len = self.history.len();
        self.store.sync().unwrap();
        self.acks.syncs.push((len, self.disk.ops_done()));
    }

    pub(super) fn compact(&mut self) {
        match self.store.compact() {
            Ok(()) | Err(Error::Full { .. }) => {}
            Err(e) => panic!("compact failed: {e}"),
        }
    }
}
