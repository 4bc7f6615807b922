//! The stores under test behind one interface, each opened in one of the two durability modes.
//!
//! Every store is used the way an application would use it for single keys: one write (and,
//! for transactional stores, one transaction) per `put`, and a `get` that returns an owned copy
//! of the value (resilient-kv's `get` returns an owned `Value`, so the peers return owned bytes).

use std::collections::HashMap;
use std::fs::{self, File};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::Result;

/// What a write survives when the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// (a) A kill of the process, without an fsync per write.
    Process,
    /// (b) Power loss: fsync or msync per write.
    Power,
}

impl Mode {
    /// `a` or `b`, as the issue names them.
    pub fn letter(self) -> &'static str {
        match self {
            Mode::Process => "a",
            Mode::Power => "b",
        }
    }
}

/// The stores compared, plus the two physical limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// This crate.
    ResilientKv,
    /// LMDB through `heed`.
    Heed,
    /// `redb`.
    Redb,
    /// `fjall`.
    Fjall,
    /// SQLite through `rusqlite` (bundled), WAL, one table.
    Sqlite,
    /// The Rust `mmkv` crate.
    Mmkv,
    /// Limit for reads: `std::collections::HashMap`.
    HashMap,
    /// Limit for writes: a bare append to a memory-mapped file.
    MmapAppend,
}

impl Peer {
    /// Every peer, in table order.
    pub const ALL: [Peer; 8] = [
        Peer::ResilientKv,
        Peer::Heed,
        Peer::Redb,
        Peer::Fjall,
        Peer::Sqlite,
        Peer::Mmkv,
        Peer::HashMap,
        Peer::MmapAppend,
    ];

    /// Short name used on the command line and between the processes.
    pub fn id(self) -> &'static str {
        match self {
            Peer::ResilientKv => "rkv",
            Peer::Heed => "heed",
            Peer::Redb => "redb",
            Peer::Fjall => "fjall",
            Peer::Sqlite => "sqlite",
            Peer::Mmkv => "mmkv",
            Peer::HashMap => "hashmap",
            Peer::MmapAppend => "mmap",
        }
    }

    /// The peer with this [`id`](Self::id).
    pub fn from_id(id: &str) -> Option<Peer> {
        Peer::ALL.into_iter().find(|p| p.id() == id)
    }

    /// Name shown in the tables and the chart.
    pub fn label(self) -> &'static str {
        match self {
            Peer::ResilientKv => "resilient-kv",
            Peer::Heed => "LMDB (heed)",
            Peer::Redb => "redb",
            Peer::Fjall => "fjall",
            Peer::Sqlite => "SQLite",
            Peer::Mmkv => "mmkv",
            Peer::HashMap => "limit: HashMap",
            Peer::MmapAppend => "limit: mmap append",
        }
    }

    /// Whether this is one of the two physical limits rather than a store.
    pub fn is_limit(self) -> bool {
        matches!(self, Peer::HashMap | Peer::MmapAppend)
    }

    /// Whether writes are measured (the HashMap is only a read limit).
    pub fn measures_writes(self) -> bool {
        self != Peer::HashMap
    }

    /// Whether reads and reopening are measured (the mmap append is only a write limit).
    pub fn measures_reads(self) -> bool {
        self != Peer::MmapAppend
    }

    /// Whether reopening is measured.
    pub fn measures_reopen(self) -> bool {
        !self.is_limit()
    }

    /// Whether mode (a) is a real mode (a) for this peer. redb has none: its session in
    /// mode (a) runs `Durability::None` for reference only.
    pub fn has_true_mode_a(self) -> bool {
        self != Peer::Redb
    }

    /// The exact setting used in `mode`, as printed in the tables.
    pub fn setting(self, mode: Mode) -> &'static str {
        match (self, mode) {
            (Peer::ResilientKv, Mode::Process) => {
                "`Durability::Process` (default), `buffer_size(1 MiB)`: record in the shared map"
            }
            (Peer::ResilientKv, Mode::Power) => {
                "`Durability::Sync`, `buffer_size(1 MiB)`: msync + fdatasync per write, shared by concurrent writers"
            }
            (Peer::Heed, Mode::Process) => {
                "`EnvFlags::NO_SYNC`, one write txn per put (commit = pwrite, no fsync)"
            }
            (Peer::Heed, Mode::Power) => "default flags: fsync at every commit, one txn per put",
            (Peer::Redb, Mode::Process) => {
                "no mode (a): shown with `Durability::None`, which survives neither a kill nor power loss until a later `Immediate` commit; reference only, excluded from the targets"
            }
            (Peer::Redb, Mode::Power) => "`Durability::Immediate` (default), one txn per put",
            (Peer::Fjall, Mode::Process) => {
                "default (`manual_journal_persist(false)`): journal flushed to the OS per write (`PersistMode::Buffer`)"
            }
            (Peer::Fjall, Mode::Power) => {
                "`insert` then `Database::persist(PersistMode::SyncData)` per write"
            }
            (Peer::Sqlite, Mode::Process) => {
                "`journal_mode=WAL`, `synchronous=NORMAL`, autocommit upsert per put, one table"
            }
            (Peer::Sqlite, Mode::Power) => {
                "`journal_mode=WAL`, `synchronous=FULL`, autocommit upsert per put, one table"
            }
            (Peer::Mmkv, Mode::Process) => {
                "default: `put` waits for its IO thread to append to the map; no fsync"
            }
            (Peer::Mmkv, Mode::Power) => {
                "`put`, then `fdatasync` on its file `mini_mmkv` (mmkv has no flush API)"
            }
            (Peer::HashMap, _) => "`std::collections::HashMap<String, Vec<u8>>`: get + clone",
            (Peer::MmapAppend, Mode::Process) => {
                "memcpy of key and value into a `MAP_SHARED` file map (offset by atomic add)"
            }
            (Peer::MmapAppend, Mode::Power) => "memcpy, then `msync(MS_SYNC)` of the pages written",
        }
    }

    /// Opens (or creates) this peer's store in `dir` in `mode`.
    pub fn open(self, dir: &Path, mode: Mode) -> Result<Box<dyn Store>> {
        fs::create_dir_all(dir)?;
        Ok(match self {
            Peer::ResilientKv => Box::new(Rkv::open(dir, mode)?),
            Peer::Heed => Box::new(Heed::open(dir, mode)?),
            Peer::Redb => Box::new(Redb::open(dir, mode)?),
            Peer::Fjall => Box::new(Fjall::open(dir, mode)?),
            Peer::Sqlite => Box::new(Sqlite::open(dir, mode)?),
            Peer::Mmkv => Box::new(Mmkv::open(dir, mode)?),
            Peer::HashMap => Box::new(PlainMap::default()),
            Peer::MmapAppend => Box::new(MmapAppend::open(dir, mode)?),
        })
    }
}

/// A store open in one mode. Writes may come from several threads at once.
pub trait Store: Send + Sync {
    /// Stores `value` under `key`; when it returns, the write survives what the mode promises.
    fn put(&self, key: &str, value: &str) -> Result<()>;

    /// Loads many pairs as fast as the store allows (one transaction or batch where it has
    /// them). Untimed: it only prepares a workload.
    fn preload(&self, pairs: &mut dyn Iterator<Item = (&str, &str)>) -> Result<()> {
        for (k, v) in pairs {
            self.put(k, v)?;
        }
        Ok(())
    }

    /// Called once after a timed write loop, untimed (redb's `Durability::None` needs an
    /// `Immediate` commit before its writes reach the file).
    fn finish(&self) -> Result<()> {
        Ok(())
    }

    /// A handle for reads on the calling thread.
    fn reader(&self) -> Result<Box<dyn Reader + '_>>;

    /// Closes the store and waits until its files are released.
    fn close(self: Box<Self>) -> Result<()>;
}

/// Reads from one thread.
pub trait Reader {
    /// The measured read: looks `key` up, producing an owned copy of its value as the store's
    /// API hands it out (passed through `black_box`, so the compiler cannot skip making it),
    /// and returns the value's length.
    fn get_len(&mut self, key: &str) -> Result<Option<usize>>;

    /// The value as bytes, for checking the data.
    fn get_bytes(&mut self, key: &str) -> Result<Option<Vec<u8>>>;
}

/// Turns an error without `std::error::Error` into ours.
fn err(e: impl std::fmt::Debug) -> Box<dyn std::error::Error + Send + Sync> {
    format!("{e:?}").into()
}

// ---- resilient-kv ----------------------------------------------------------------------

struct Rkv {
    store: resilient_kv::KVStore,
}

impl Rkv {
    fn open(dir: &Path, mode: Mode) -> Result<Rkv> {
        let durability = match mode {
            Mode::Process => resilient_kv::Durability::Process,
            Mode::Power => resilient_kv::Durability::Sync,
        };
        let store = resilient_kv::KVStore::builder(dir.join("store"))
            .buffer_size(1024 * 1024)
            .durability(durability)
            .open()?;
        Ok(Rkv { store })
    }
}

impl Store for Rkv {
    fn put(&self, key: &str, value: &str) -> Result<()> {
        self.store.insert(
            key.to_owned(),
            resilient_kv::Value::String(value.to_owned()),
        )?;
        Ok(())
    }

    fn preload(&self, pairs: &mut dyn Iterator<Item = (&str, &str)>) -> Result<()> {
        let mut batch = resilient_kv::Batch::new();
        for (k, v) in pairs {
            batch.insert(k.to_owned(), resilient_kv::Value::String(v.to_owned()));
        }
        self.store.write_batch(batch)?;
        Ok(())
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(RkvReader(&self.store)))
    }

    fn close(self: Box<Self>) -> Result<()> {
        drop(self);
        Ok(())
    }
}

struct RkvReader<'a>(&'a resilient_kv::KVStore);

impl Reader for RkvReader<'_> {
    fn get_len(&mut self, key: &str) -> Result<Option<usize>> {
        Ok(match self.0.get(key)? {
            Some(resilient_kv::Value::String(s)) => Some(black_box(s).len()),
            Some(_) => Some(0),
            None => None,
        })
    }

    fn get_bytes(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(match self.0.get(key)? {
            Some(resilient_kv::Value::String(s)) => Some(s.into_bytes()),
            Some(other) => Some(format!("{other:?}").into_bytes()),
            None => None,
        })
    }
}

// ---- LMDB (heed) -----------------------------------------------------------------------

type HeedDb = heed::Database<heed::types::Str, heed::types::Bytes>;

struct Heed {
    env: heed::Env,
    db: HeedDb,
}

impl Heed {
    fn open(dir: &Path, mode: Mode) -> Result<Heed> {
        let mut options = heed::EnvOpenOptions::new();
        options.map_size(4 << 30);
        if mode == Mode::Process {
            // SAFETY: NO_SYNC only drops the fsync at commit; the data is written to the file
            // with pwrite before commit returns, so a killed process loses nothing.
            unsafe {
                options.flags(heed::EnvFlags::NO_SYNC);
            }
        }
        // SAFETY: the directory is this benchmark's own and is opened once at a time.
        let env = unsafe { options.open(dir)? };
        let mut txn = env.write_txn()?;
        let db: HeedDb = env.create_database(&mut txn, None)?;
        txn.commit()?;
        Ok(Heed { env, db })
    }
}

impl Store for Heed {
    fn put(&self, key: &str, value: &str) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        self.db.put(&mut txn, key, value.as_bytes())?;
        txn.commit()?;
        Ok(())
    }

    fn preload(&self, pairs: &mut dyn Iterator<Item = (&str, &str)>) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        for (k, v) in pairs {
            self.db.put(&mut txn, k, v.as_bytes())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(HeedReader(self)))
    }

    fn close(self: Box<Self>) -> Result<()> {
        let Heed { env, db: _ } = *self;
        env.prepare_for_closing().wait();
        Ok(())
    }
}

struct HeedReader<'a>(&'a Heed);

impl Reader for HeedReader<'_> {
    fn get_len(&mut self, key: &str) -> Result<Option<usize>> {
        Ok(self.get_bytes(key)?.map(|v| black_box(v).len()))
    }

    fn get_bytes(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.0.env.read_txn()?;
        Ok(self.0.db.get(&txn, key)?.map(<[u8]>::to_vec))
    }
}

// ---- redb ------------------------------------------------------------------------------

const REDB_TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");

struct Redb {
    db: redb::Database,
    durability: redb::Durability,
}

impl Redb {
    fn open(dir: &Path, mode: Mode) -> Result<Redb> {
        let db = redb::Database::create(dir.join("data.redb"))?;
        let durability = match mode {
            Mode::Process => redb::Durability::None,
            Mode::Power => redb::Durability::Immediate,
        };
        Ok(Redb { db, durability })
    }

    fn write(
        &self,
        durability: redb::Durability,
        pairs: &mut dyn Iterator<Item = (&str, &str)>,
    ) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)?;
        {
            let mut table = txn.open_table(REDB_TABLE)?;
            for (k, v) in pairs {
                table.insert(k, v.as_bytes())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

impl Store for Redb {
    fn put(&self, key: &str, value: &str) -> Result<()> {
        self.write(self.durability, &mut std::iter::once((key, value)))
    }

    fn preload(&self, pairs: &mut dyn Iterator<Item = (&str, &str)>) -> Result<()> {
        self.write(redb::Durability::Immediate, pairs)
    }

    fn finish(&self) -> Result<()> {
        self.write(redb::Durability::Immediate, &mut std::iter::empty())
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(RedbReader(&self.db)))
    }

    fn close(self: Box<Self>) -> Result<()> {
        drop(self);
        Ok(())
    }
}

struct RedbReader<'a>(&'a redb::Database);

impl Reader for RedbReader<'_> {
    fn get_len(&mut self, key: &str) -> Result<Option<usize>> {
        Ok(self.get_bytes(key)?.map(|v| black_box(v).len()))
    }

    fn get_bytes(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        use redb::ReadableDatabase;
        let txn = self.0.begin_read()?;
        let table = match txn.open_table(REDB_TABLE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }
}

// ---- fjall -----------------------------------------------------------------------------

struct Fjall {
    db: fjall::Database,
    keyspace: fjall::Keyspace,
    sync: bool,
}

impl Fjall {
    fn open(dir: &Path, mode: Mode) -> Result<Fjall> {
        let db = fjall::Database::builder(dir).open()?;
        let keyspace = db.keyspace("kv", fjall::KeyspaceCreateOptions::default)?;
        Ok(Fjall {
            db,
            keyspace,
            sync: mode == Mode::Power,
        })
    }
}

impl Store for Fjall {
    fn put(&self, key: &str, value: &str) -> Result<()> {
        self.keyspace.insert(key, value.as_bytes())?;
        if self.sync {
            self.db.persist(fjall::PersistMode::SyncData)?;
        }
        Ok(())
    }

    fn preload(&self, pairs: &mut dyn Iterator<Item = (&str, &str)>) -> Result<()> {
        let mut batch = self.db.batch();
        for (k, v) in pairs {
            batch.insert(&self.keyspace, k, v.as_bytes());
        }
        batch.commit()?;
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(FjallReader(&self.keyspace)))
    }

    fn close(self: Box<Self>) -> Result<()> {
        drop(self);
        Ok(())
    }
}

struct FjallReader<'a>(&'a fjall::Keyspace);

impl Reader for FjallReader<'_> {
    fn get_len(&mut self, key: &str) -> Result<Option<usize>> {
        // fjall hands out an owned, reference-counted slice: no copy needed to own it.
        Ok(self.0.get(key)?.map(|v| black_box(v).len()))
    }

    fn get_bytes(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }
}

// ---- SQLite ----------------------------------------------------------------------------

const SQLITE_UPSERT: &str =
    "INSERT INTO kv (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = excluded.v";
const SQLITE_SELECT: &str = "SELECT v FROM kv WHERE k = ?1";

/// SQLite: writers share one connection behind a mutex (SQLite admits one writer at a time,
/// and separate connections would wait in its sleeping busy handler); each reader thread has
/// its own connection, as WAL allows.
struct Sqlite {
    path: PathBuf,
    writer: Mutex<rusqlite::Connection>,
}

impl Sqlite {
    fn open(dir: &Path, mode: Mode) -> Result<Sqlite> {
        let path = dir.join("kv.sqlite");
        let conn = rusqlite::Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = match mode {
            Mode::Process => "NORMAL",
            Mode::Power => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY NOT NULL, v BLOB NOT NULL) WITHOUT ROWID",
        )?;
        Ok(Sqlite {
            path,
            writer: Mutex::new(conn),
        })
    }

    fn writer(&self) -> Result<std::sync::MutexGuard<'_, rusqlite::Connection>> {
        self.writer.lock().map_err(err)
    }
}

impl Store for Sqlite {
    fn put(&self, key: &str, value: &str) -> Result<()> {
        let conn = self.writer()?;
        conn.prepare_cached(SQLITE_UPSERT)?
            .execute(rusqlite::params![key, value.as_bytes()])?;
        Ok(())
    }

    fn preload(&self, pairs: &mut dyn Iterator<Item = (&str, &str)>) -> Result<()> {
        let mut conn = self.writer()?;
        let txn = conn.transaction()?;
        {
            let mut stmt = txn.prepare_cached(SQLITE_UPSERT)?;
            for (k, v) in pairs {
                stmt.execute(rusqlite::params![k, v.as_bytes()])?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        let conn = rusqlite::Connection::open(&self.path)?;
        Ok(Box::new(SqliteReader(conn)))
    }

    fn close(self: Box<Self>) -> Result<()> {
        let conn = self.writer.into_inner().map_err(err)?;
        conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}

struct SqliteReader(rusqlite::Connection);

impl Reader for SqliteReader {
    fn get_len(&mut self, key: &str) -> Result<Option<usize>> {
        Ok(self.get_bytes(key)?.map(|v| black_box(v).len()))
    }

    fn get_bytes(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        use rusqlite::OptionalExtension;
        let mut stmt = self.0.prepare_cached(SQLITE_SELECT)?;
        Ok(stmt
            .query_row([key], |row| row.get::<_, Vec<u8>>(0))
            .optional()?)
    }
}

// ---- mmkv ------------------------------------------------------------------------------

struct Mmkv {
    kv: mmkv::MMKV,
    file: PathBuf,
    sync: bool,
}

impl Mmkv {
    fn open(dir: &Path, mode: Mode) -> Result<Mmkv> {
        mmkv::MMKV::set_log_level(mmkv::LogLevel::Off);
        let dir_str = dir.to_str().ok_or("mmkv needs a UTF-8 path")?;
        let kv = mmkv::MMKV::new(dir_str).map_err(err)?;
        Ok(Mmkv {
            kv,
            file: dir.join("mini_mmkv"),
            sync: mode == Mode::Power,
        })
    }
}

impl Mmkv {
    /// mmkv has no flush API. fdatasync on the file writes back the pages its map dirtied.
    /// The file is opened each time because mmkv replaces it by a rename when it trims.
    fn sync_file(&self) -> Result<()> {
        File::open(&self.file)?.sync_data()?;
        Ok(())
    }
}

impl Store for Mmkv {
    fn put(&self, key: &str, value: &str) -> Result<()> {
        self.kv.put(key, value.as_bytes()).map_err(err)?;
        if self.sync {
            self.sync_file()?;
        }
        Ok(())
    }

    fn preload(&self, pairs: &mut dyn Iterator<Item = (&str, &str)>) -> Result<()> {
        for (k, v) in pairs {
            self.kv.put(k, v.as_bytes()).map_err(err)?;
        }
        self.sync_file()
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(MmkvReader(&self.kv)))
    }

    fn close(self: Box<Self>) -> Result<()> {
        drop(self);
        Ok(())
    }
}

struct MmkvReader<'a>(&'a mmkv::MMKV);

impl Reader for MmkvReader<'_> {
    fn get_len(&mut self, key: &str) -> Result<Option<usize>> {
        Ok(self.get_bytes(key)?.map(|v| black_box(v).len()))
    }

    fn get_bytes(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.0.get::<Vec<u8>>(key) {
            Ok(v) => Ok(Some(v)),
            Err(mmkv::Error::KeyNotFound) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }
}

// ---- limit: HashMap --------------------------------------------------------------------

/// The read limit: a plain `HashMap` built once by [`Store::preload`], then only read.
#[derive(Default)]
struct PlainMap {
    map: OnceLock<HashMap<String, Vec<u8>>>,
}

impl Store for PlainMap {
    fn put(&self, _key: &str, _value: &str) -> Result<()> {
        Err("the HashMap limit is only read".into())
    }

    fn preload(&self, pairs: &mut dyn Iterator<Item = (&str, &str)>) -> Result<()> {
        let map = pairs
            .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
            .collect();
        self.map
            .set(map)
            .map_err(|_| "the HashMap is loaded once")?;
        Ok(())
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        let map = self.map.get().ok_or("the HashMap was never loaded")?;
        Ok(Box::new(PlainMapReader(map)))
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

struct PlainMapReader<'a>(&'a HashMap<String, Vec<u8>>);

impl Reader for PlainMapReader<'_> {
    fn get_len(&mut self, key: &str) -> Result<Option<usize>> {
        Ok(self.0.get(key).cloned().map(|v| black_box(v).len()))
    }

    fn get_bytes(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(key).cloned())
    }
}

// ---- limit: bare append to a memory-mapped file ----------------------------------------

/// Size reserved for the append log; sparse until written.
const MMAP_CAPACITY: usize = 512 << 20;

/// The write limit: each put reserves room with an atomic add and copies
/// `[key length u16][value length u16][key][value]` into a shared file map.
struct MmapAppend {
    map: memmap2::MmapRaw,
    end: AtomicUsize,
    sync: bool,
    _file: File,
}

impl MmapAppend {
    fn open(dir: &Path, mode: Mode) -> Result<MmapAppend> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("append.log"))?;
        file.set_len(MMAP_CAPACITY as u64)?;
        let map = memmap2::MmapOptions::new().map_raw(&file)?;
        Ok(MmapAppend {
            map,
            end: AtomicUsize::new(0),
            sync: mode == Mode::Power,
            _file: file,
        })
    }
}

impl MmapAppend {
    /// Appends one record and returns where it starts and its length.
    fn append(&self, key: &str, value: &str) -> Result<(usize, usize)> {
        let len = 4 + key.len() + value.len();
        let at = self.end.fetch_add(len, Ordering::Relaxed);
        if at + len > MMAP_CAPACITY {
            return Err("append log full".into());
        }
        let mut record = [0u8; 512];
        let record = record.get_mut(..len).ok_or("record too long")?;
        record[..2].copy_from_slice(&(key.len() as u16).to_le_bytes());
        record[2..4].copy_from_slice(&(value.len() as u16).to_le_bytes());
        record[4..4 + key.len()].copy_from_slice(key.as_bytes());
        record[4 + key.len()..].copy_from_slice(value.as_bytes());
        // SAFETY: `at..at + len` lies inside the map (checked above) and was reserved for this
        // call alone by the atomic add, so no other thread writes or reads these bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(record.as_ptr(), self.map.as_mut_ptr().add(at), len);
        }
        Ok((at, len))
    }
}

impl Store for MmapAppend {
    fn put(&self, key: &str, value: &str) -> Result<()> {
        let (at, len) = self.append(key, value)?;
        if self.sync {
            self.map.flush_range(at, len)?;
        }
        Ok(())
    }

    fn preload(&self, pairs: &mut dyn Iterator<Item = (&str, &str)>) -> Result<()> {
        for (k, v) in pairs {
            self.append(k, v)?;
        }
        let end = self.end.load(Ordering::Relaxed).min(MMAP_CAPACITY);
        self.map.flush_range(0, end)?;
        Ok(())
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Err("the mmap append limit is only written".into())
    }

    fn close(self: Box<Self>) -> Result<()> {
        drop(self);
        Ok(())
    }
}
