//! The automatic migration of legacy records (versions 1–5) to the compact encoding
//! (`super::compact`), which also packs the index to the size of a bulk-loaded one.
//!
//! Every write stores the compact encoding; what is left are the records an older
//! `hoard` wrote. [`Index::open`] starts a background thread that copies every record,
//! in key order, into a new table, re-encoding the legacy ones (a record whose new
//! bytes would not decode to the same record, or that does not decode at all, is copied
//! as it is): appended in key order, the copy fills its leaves, where rewriting in place
//! would leave every leaf of the legacy table half empty. Each batch is one write
//! transaction that copies at most [`BATCH`] keys after the cursor and stores the
//! cursor — the last key copied — in the `meta` table; writes at keys up to the cursor
//! go to both tables meanwhile, and the last batch makes the copy the records table and
//! deletes the old one (`super::shrink`, which says what a crash at each step leaves).
//! So a restart resumes where the last committed batch stopped, nothing scans the
//! whole index in one transaction, and the index serves reads and writes from the
//! first moment (legacy records decode forever). The swap leaves the old table's pages
//! free inside the file; the next [`Index::open`] returns them to the file system
//! (`Database::compact`, which needs no transaction open: at open, before serving).
//! After the last key, the cursor is replaced by a `done` mark and the thread ends; an
//! index created new, or one filled by an import or a bulk load (which write compact
//! records only, in key order), is marked done at once.
//!
//! A batch is an ordinary redb write transaction, so it is serialized with the writer
//! thread's group commits and with a replicated index's applies (redb has one writer at
//! a time). The copy changes no decoded record — counts, change feed and the replicated
//! state are untouched — so in an index cluster it is node-local and invisible: members
//! may migrate at different times and number volumes differently, and still hold the
//! same records. The thread pauses between batches at least as long as the batch took
//! (throttle: at most half the writer's time) and [`MIN_PAUSE`].

use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Relaxed, Release},
};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::volume_table::{Ids, VolumeTable};
use super::{compact, shrink, store_err, Index, IndexError, KEYS, META};

/// `meta` entry of the in-place migration of earlier versions (removed when done).
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
    /// Keys copied by this process's migration.
    pub examined: u64,
    /// Legacy records it re-encoded.
    pub rewritten: u64,
    /// Legacy records it copied as they are (see the log): undecodable, or — never
    /// seen — not read back identically from the compact encoding. Both still read as
    /// before.
    pub corrupt: u64,
    /// The migration is done and the file still holds the old table's pages, free: the
    /// next start returns them to the file system.
    pub compaction_pending: bool,
}

/// The migration's state, shared by the index handles and the thread.
#[derive(Debug, Default)]
pub(super) struct Migration {
    done: AtomicBool,
    examined: AtomicU64,
    rewritten: AtomicU64,
    corrupt: AtomicU64,
    /// Hint: the records are in `keys.packed` (see `super::shrink`).
    pub(super) packed: AtomicBool,
    compaction_pending: AtomicBool,
    /// Dropping the sender wakes and stops the thread.
    stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Migration {
    /// Reads whether the migration of the index in `db` is done.
    pub(super) fn load(db: &super::db::Db) -> Result<Arc<Migration>, IndexError> {
        let txn = db.begin_read().map_err(store_err)?;
        let meta = txn.open_table(META).map_err(store_err)?;
        let done = meta.get(DONE).map_err(store_err)?.is_some();
        let packed = meta
            .get(shrink::RECORDS_TABLE)
            .map_err(store_err)?
            .is_some();
        let pending = meta.get(shrink::COMPACT_FILE).map_err(store_err)?.is_some();
        Ok(Arc::new(Migration {
            done: AtomicBool::new(done),
            packed: AtomicBool::new(packed),
            compaction_pending: AtomicBool::new(pending),
            ..Migration::default()
        }))
    }
}

/// Marks a new (empty) index migrated; part of opening it.
pub(super) fn init(txn: &WriteTransaction) -> Result<(), IndexError> {
    let keys = txn.open_table(shrink::current(txn)?).map_err(store_err)?;
    let mut meta = txn.open_table(META).map_err(store_err)?;
    if meta.get(DONE).map_err(store_err)?.is_none() && keys.is_empty().map_err(store_err)? {
        mark_done(&mut meta)?;
        drop((keys, meta));
        if !shrink::is_packed(txn)? {
            // A copy of no records, if one was started.
            txn.delete_table(shrink::PACKED).map_err(store_err)?;
        }
    }
    Ok(())
}

/// Marks the index migrated (its records were all written compact).
pub(super) fn mark_done(meta: &mut super::MetaTable<'_>) -> Result<(), IndexError> {
    meta.remove(CURSOR).map_err(store_err)?;
    meta.remove(shrink::COPY_CURSOR).map_err(store_err)?;
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
            compaction_pending: m.compaction_pending.load(Relaxed),
        }
    }

    /// Notes that every record is compact, in `keys` (after an import).
    pub(super) fn migration_done(&self) {
        self.migration.packed.store(false, Release);
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
    db: &Weak<super::db::Db>,
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
                    "index migration done: {} records re-encoded compactly ({} keys copied into a packed table, {} corrupt copied as they were) in {:.1} s; the file shrinks at the next start",
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
    db: &super::db::Db,
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
    let mut meta = txn.open_table(META).map_err(store_err)?;
    if meta.get(DONE).map_err(store_err)?.is_some() {
        // Done meanwhile (a snapshot install).
        drop(meta);
        txn.abort().map_err(store_err)?;
        state.done.store(true, Relaxed);
        return Ok(true);
    }
    let cursor = meta
        .get(shrink::COPY_CURSOR)
        .map_err(store_err)?
        .map(|v| v.value().to_vec());
    if cursor.is_none() {
        // Nothing copied yet: no copy can exist (the invariant); drop any leftover.
        txn.delete_table(shrink::PACKED).map_err(store_err)?;
    }
    let mut ids = Ids::open(vt, &txn)?;
    let (copy, more) = {
        let table = txn.open_table(KEYS).map_err(store_err)?;
        let lower = match &cursor {
            Some(c) => Bound::Excluded(c.as_slice()),
            None => Bound::Unbounded,
        };
        let (mut copy, mut more) = (Vec::new(), false);
        for item in table
            .range::<&[u8]>((lower, Bound::Unbounded))
            .map_err(store_err)?
        {
            let (k, v) = item.map_err(store_err)?;
            if copy.len() == budget.max(1) {
                more = true;
                break;
            }
            copy.push((k.value().to_vec(), v.value().to_vec()));
        }
        (copy, more)
    };
    let (mut rewritten, mut corrupt) = (0, 0);
    {
        let mut packed = txn.open_table(shrink::PACKED).map_err(store_err)?;
        for (key, value) in &copy {
            let value = match reencode(&mut ids, key, value) {
                Ok(Some(encoded)) => {
                    rewritten += 1;
                    encoded
                }
                Ok(None) => value.clone(),
                Err(e) => {
                    tracing::warn!("index migration: copying a record as it is: {e}");
                    corrupt += 1;
                    value.clone()
                }
            };
            packed
                .insert(key.as_slice(), value.as_slice())
                .map_err(store_err)?;
        }
    }
    match copy.last() {
        Some((last, _)) if more => {
            meta.insert(shrink::COPY_CURSOR, last.as_slice())
                .map_err(store_err)?;
        }
        _ => {
            // The copy is complete: swap (see `super::shrink`).
            meta.remove(shrink::COPY_CURSOR).map_err(store_err)?;
            meta.insert(shrink::RECORDS_TABLE, "keys.packed".as_bytes())
                .map_err(store_err)?;
            meta.insert(shrink::COMPACT_FILE, &[1u8][..])
                .map_err(store_err)?;
            mark_done(&mut meta)?;
        }
    }
    drop(meta);
    let names = ids.finish();
    if !more {
        txn.delete_table(KEYS).map_err(store_err)?;
    }
    txn.commit().map_err(store_err)?;
    vt.publish(names);
    state.examined.fetch_add(copy.len() as u64, Relaxed);
    state.rewritten.fetch_add(rewritten, Relaxed);
    state.corrupt.fetch_add(corrupt, Relaxed);
    if !more {
        state.packed.store(true, Release);
        state.compaction_pending.store(true, Relaxed);
        state.done.store(true, Relaxed);
    }
    Ok(!more)
}

/// The compact encoding of the legacy record `value` (`None`: it is compact already),
/// checked to decode to the same record.
fn reencode(
    ids: &mut Ids<'_, '_>,
    key: &[u8],
    value: &[u8],
) -> Result<Option<Vec<u8>>, IndexError> {
    if value.first() == Some(&compact::VERSION_COMPACT) {
        return Ok(None);
    }
    let record = ids.decode(key, value)?;
    let encoded = ids.encode(&record)?;
    if ids.decode(key, &encoded)? != record {
        return Err(IndexError::Store(redb::Error::Io(std::io::Error::other(
            format!(
                "the compact encoding of the record of {:?} does not read back the same",
                String::from_utf8_lossy(key)
            ),
        ))));
    }
    Ok(Some(encoded))
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
pub(crate) mod tests;
