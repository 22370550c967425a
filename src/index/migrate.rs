//! The automatic migration of legacy records (versions 1–5) to the compact encoding
//! (`super::compact`).
//!
//! Every write stores the compact encoding; what is left are the records an older
//! `hoard` wrote. [`Index::open`] starts a background thread that rewrites them in
//! batches: each batch is one write transaction that walks at most [`BATCH`] keys after
//! the cursor, re-encodes the legacy ones among them (a record whose new bytes would
//! not decode to the same record is left as it is) and stores the cursor — the last key
//! walked — in the `meta` table, in the same transaction. So a restart resumes where
//! the last committed batch stopped, nothing scans the whole index in one transaction,
//! and the index serves reads and writes from the first moment (legacy records decode
//! forever). After the
//! last key, the cursor is replaced by a `done` mark and the thread ends; an index
//! created new, or one filled by an import or a bulk load (which write compact records
//! only), is marked done at once.
//!
//! A batch is an ordinary redb write transaction, so it is serialized with the writer
//! thread's group commits and with a replicated index's applies (redb has one writer at
//! a time): a batch reads each record and rewrites it with no command in between. The
//! rewrite changes no decoded record — counts, change feed and the replicated state are
//! untouched — so in an index cluster it is node-local and invisible: members may
//! migrate at different times and number volumes differently, and still hold the same
//! records. The thread pauses between batches at least as long as the batch took
//! (throttle: at most half the writer's time) and [`MIN_PAUSE`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::volume_table::{Ids, VolumeTable};
use super::{compact, store_err, Index, IndexError, KEYS, META};

/// `meta` entry: the last key the migration walked (absent: from the start).
pub(super) const CURSOR: &str = "compact-migration-cursor";
/// `meta` entry present once every record is in the compact encoding.
pub(super) const DONE: &str = "compact-migration-done";

/// Keys walked per migration transaction.
pub const BATCH: usize = 1024;
/// Shortest pause between two batches.
pub const MIN_PAUSE: Duration = Duration::from_millis(2);
/// Pause after a storage error before the next try.
const ERROR_PAUSE: Duration = Duration::from_secs(5);

/// Where the migration of legacy records stands (`GET /-/health`, `index_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MigrationStatus {
    /// Every record is in the compact encoding.
    pub compact: bool,
    /// Keys walked by this process's migration.
    pub examined: u64,
    /// Legacy records it rewrote.
    pub rewritten: u64,
    /// Legacy records it left as they are (see the log): undecodable, or — never seen —
    /// not read back identically from the compact encoding. Both still read as before.
    pub corrupt: u64,
}

/// The migration's state, shared by the index handles and the thread.
#[derive(Debug, Default)]
pub(super) struct Migration {
    done: AtomicBool,
    examined: AtomicU64,
    rewritten: AtomicU64,
    corrupt: AtomicU64,
    /// Dropping the sender wakes and stops the thread.
    stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Migration {
    /// Reads whether the migration of the index in `db` is done.
    pub(super) fn load(db: &Database) -> Result<Arc<Migration>, IndexError> {
        let txn = db.begin_read().map_err(store_err)?;
        let meta = txn.open_table(META).map_err(store_err)?;
        let done = meta.get(DONE).map_err(store_err)?.is_some();
        Ok(Arc::new(Migration {
            done: AtomicBool::new(done),
            ..Migration::default()
        }))
    }
}

/// Marks a new (empty) index migrated; part of opening it.
pub(super) fn init(txn: &WriteTransaction) -> Result<(), IndexError> {
    let keys = txn.open_table(KEYS).map_err(store_err)?;
    let mut meta = txn.open_table(META).map_err(store_err)?;
    if meta.get(DONE).map_err(store_err)?.is_none() && keys.is_empty().map_err(store_err)? {
        mark_done(&mut meta)?;
    }
    Ok(())
}

/// Marks the index migrated (its records were all written compact).
pub(super) fn mark_done(meta: &mut super::MetaTable<'_>) -> Result<(), IndexError> {
    meta.remove(CURSOR).map_err(store_err)?;
    meta.insert(DONE, &[1u8][..]).map_err(store_err)?;
    Ok(())
}

impl Index {
    /// Where the migration of legacy records stands.
    pub fn migration(&self) -> MigrationStatus {
        let m = &self.migration;
        MigrationStatus {
            compact: m.done.load(Relaxed),
            examined: m.examined.load(Relaxed),
            rewritten: m.rewritten.load(Relaxed),
            corrupt: m.corrupt.load(Relaxed),
        }
    }

    /// Notes that every record is compact (after an import).
    pub(super) fn migration_done(&self) {
        self.migration.done.store(true, Relaxed);
    }

    /// Starts the migration thread, unless the index is migrated or it runs.
    pub(super) fn start_migration(&self) {
        let m = &self.migration;
        let mut thread = m.thread.lock().unwrap_or_else(|p| p.into_inner());
        if m.done.load(Relaxed) || thread.is_some() {
            return;
        }
        tracing::info!(
            "the index holds records in a legacy format: rewriting them compactly in the background"
        );
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (db, vt, state) = (
            Arc::downgrade(&self.db),
            Arc::clone(&self.vt),
            Arc::clone(&self.migration),
        );
        match std::thread::Builder::new()
            .name("index-migrate".into())
            .spawn(move || run(&db, &vt, &state, &rx))
        {
            Ok(handle) => {
                *thread = Some(handle);
                *m.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
            }
            Err(e) => tracing::warn!("starting the index migration: {e}"),
        }
    }

    /// Stops the migration thread (between two batches) and waits for it.
    pub(super) fn stop_migration(&self) {
        let m = &self.migration;
        drop(m.stop.lock().unwrap_or_else(|p| p.into_inner()).take());
        let handle = m.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Runs one migration batch of at most `budget` keys; true once the index is
    /// migrated. Blocking.
    pub fn migrate_batch(&self, budget: usize) -> Result<bool, IndexError> {
        batch(&self.db, &self.vt, &self.migration, budget)
    }
}

/// The migration thread: batches until done or told to stop.
fn run(
    db: &Weak<Database>,
    vt: &VolumeTable,
    state: &Migration,
    stop: &std::sync::mpsc::Receiver<()>,
) {
    let started = Instant::now();
    loop {
        let Some(db) = db.upgrade() else { return };
        let t = Instant::now();
        let pause = match batch(&db, vt, state, BATCH) {
            Ok(true) => {
                tracing::info!(
                    "index migration done: {} records rewritten compactly ({} keys walked, {} corrupt left as they were) in {:.1} s",
                    state.rewritten.load(Relaxed),
                    state.examined.load(Relaxed),
                    state.corrupt.load(Relaxed),
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            Ok(false) => t.elapsed().max(MIN_PAUSE),
            Err(e) => {
                tracing::warn!("index migration batch failed (will retry): {e}");
                ERROR_PAUSE
            }
        };
        drop(db);
        match stop.recv_timeout(pause) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// One batch (see the module docs); true once the index is migrated.
fn batch(
    db: &Database,
    vt: &VolumeTable,
    state: &Migration,
    budget: usize,
) -> Result<bool, IndexError> {
    use std::ops::Bound;
    if state.done.load(Relaxed) {
        return Ok(true);
    }
    let mut txn = db.begin_write().map_err(store_err)?;
    txn.set_quick_repair(true);
    let (done, examined, rewritten, corrupt, names) = {
        let mut meta = txn.open_table(META).map_err(store_err)?;
        let cursor = meta
            .get(CURSOR)
            .map_err(store_err)?
            .map(|v| v.value().to_vec());
        let already = meta.get(DONE).map_err(store_err)?.is_some();
        let mut table = txn.open_table(KEYS).map_err(store_err)?;
        let mut ids = Ids::open(vt, &txn)?;
        let (mut legacy, mut last, mut more, mut walked) = (Vec::new(), None, false, 0u64);
        if !already {
            let lower = match &cursor {
                Some(c) => Bound::Excluded(c.as_slice()),
                None => Bound::Unbounded,
            };
            for (n, item) in table
                .range::<&[u8]>((lower, Bound::Unbounded))
                .map_err(store_err)?
                .enumerate()
            {
                let (k, v) = item.map_err(store_err)?;
                if n == budget.max(1) {
                    more = true;
                    break;
                }
                if v.value().first() != Some(&compact::VERSION_COMPACT) {
                    legacy.push((k.value().to_vec(), v.value().to_vec()));
                }
                last = Some(k.value().to_vec());
                walked += 1;
            }
        }
        let (mut rewritten, mut corrupt) = (0, 0);
        for (key, value) in &legacy {
            let record = match ids.decode(key, value) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("index migration: leaving a record as it is: {e}");
                    corrupt += 1;
                    continue;
                }
            };
            let encoded = ids.encode(&record)?;
            if ids.decode(key, &encoded)? != record {
                tracing::warn!(
                    "index migration: leaving the record of {:?} as it is: its compact encoding does not read back the same",
                    String::from_utf8_lossy(key)
                );
                corrupt += 1;
                continue;
            }
            table
                .insert(key.as_slice(), encoded.as_slice())
                .map_err(store_err)?;
            rewritten += 1;
        }
        match (&last, more) {
            (Some(last), true) => {
                meta.insert(CURSOR, last.as_slice()).map_err(store_err)?;
            }
            _ => mark_done(&mut meta)?,
        }
        (!more, walked, rewritten, corrupt, ids.finish())
    };
    txn.commit().map_err(store_err)?;
    vt.publish(names);
    state.examined.fetch_add(examined, Relaxed);
    state.rewritten.fetch_add(rewritten, Relaxed);
    state.corrupt.fetch_add(corrupt, Relaxed);
    if done {
        state.done.store(true, Relaxed);
    }
    Ok(done)
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
mod tests;
