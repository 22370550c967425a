//! The index: `key → Record` in an embedded ordered store (redb).
//!
//! Reads go straight to a redb read transaction (MVCC, concurrent, never blocked by the
//! writer). Writes are [`Command`]s sent to one writer thread, which drains everything
//! queued, applies the batch in order inside one write transaction, commits (one fsync
//! for the batch — group commit), then answers each caller. A caller's command is
//! durable when its answer arrives — except the commands whose loss on a crash only
//! leaves what repair and verify already clean up ([`needs_durability`]): a batch made
//! only of those commits without fsync, and becomes durable with the next durable
//! commit (redb persists a non-durable commit together with the durable one that
//! follows). If a batch's transaction fails, its commands are
//! retried one per transaction, so a command that cannot be applied (a corrupt record,
//! a storage error) fails alone and the others still commit.
//!
//! [`Index::close`] leaves a marker file, [`CLEAN_MARKER`], that the next open removes:
//! an index opened without it was not shut down cleanly (crash, kill -9, power loss),
//! which [`Index::recovered`] reports. (redb's own repair callback is not called with
//! quick-repair on, which recovers such a file without a scan.)

mod base64_serde;
mod bulk;
mod command;
mod compact;
mod counts;
mod db;
pub mod feed;
mod feed_command;
mod frontend;
pub mod hlc;
mod locks;
mod migrate;
mod record;
mod replicated;
mod scan;
mod shrink;
pub mod snapfile;
mod table_map;
pub mod tenancy;
mod volume_table;

pub use bulk::BulkLoad;
pub use command::{
    apply, gen_key, gen_prefix, is_gen_key, lease_clock, show, value_key, Applied, Command,
    RecordMap, Rejection, FRONTEND_META_PREFIX, LEASE_CLOCK_META, SCRUB_META,
};
pub use counts::{bucket_of, Counts, VolumeCounts};
pub use db::CompactError;
pub use locks::{KeyGuard, KeyLocks};
pub use migrate::{MigrationStatus, BATCH as MIGRATION_BATCH};
pub use record::{DecodeError, Record, State, MAX_INLINE_LEN, MAX_META_LEN};
pub use replicated::Replicator;
pub use scan::{prefix_end, KeyRange, Page, CHUNK_BUDGET, MAX_PAGE_KEYS, PAGE_BUDGET};
pub use shrink::{compact_offline, Compacted};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use table_map::TableMap;
use volume_table::{Ids, VolumeTable};

const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keys");
/// Index-wide values; `counts` → [`Counts`].
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const COUNTS: &str = "counts";

/// Written by [`Index::close`] next to the database, removed when it is opened.
pub const CLEAN_MARKER: &str = "clean-shutdown";

/// Most commands one write transaction takes.
const MAX_BATCH: usize = 4096;

/// An index operation failed in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// redb reported an error.
    #[error("index store: {0}")]
    Store(#[from] redb::Error),
    /// A stored record did not decode.
    #[error("index record of key {key:?}: {source}")]
    Corrupt {
        /// The key, lossily decoded for the message.
        key: String,
        /// What was wrong.
        source: DecodeError,
    },
    /// The database could not be opened.
    #[error("opening index at {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: redb::Error,
    },
    /// The writer thread is gone (the index is shutting down).
    #[error("index writer stopped")]
    Closed,
    /// The replicated index could not take or confirm the command now (no leader,
    /// unreachable peers); it may or may not have been applied.
    #[error("replicated index: {0}")]
    Replication(String),
}

fn store_err<E: Into<redb::Error>>(e: E) -> IndexError {
    IndexError::Store(e.into())
}

struct Job {
    cmd: Command,
    reply: oneshot::Sender<Result<Applied, IndexError>>,
}

/// Handle to the index; cheap to clone.
#[derive(Clone)]
pub struct Index {
    db: Arc<db::Db>,
    dir: PathBuf,
    counts: Arc<std::sync::Mutex<Counts>>,
    recovered: bool,
    writer: mpsc::Sender<Job>,
    writer_thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Set when the index is replicated: commands go through it instead of the writer.
    replicator: Arc<std::sync::OnceLock<Arc<dyn Replicator>>>,
    /// The volume list set by `Command::SetVolumes` (`None` until one is).
    volumes: Arc<tokio::sync::watch::Sender<Option<Vec<String>>>>,
    /// The committed volume table of compact records, in memory.
    vt: Arc<VolumeTable>,
    /// The background rewrite of legacy records ([`migrate`]).
    migration: Arc<migrate::Migration>,
}

impl Index {
    /// Opens (or creates) the index in directory `dir` and starts its writer thread,
    /// and, when it holds records in a legacy format, their background migration.
    pub fn open(dir: &Path) -> Result<Index, IndexError> {
        Index::open_with(dir, true)
    }

    /// [`Index::open`], starting the migration of legacy records only when `migrate`
    /// (benchmarks measuring an index in the old format open it without).
    pub fn open_with(dir: &Path, migrate: bool) -> Result<Index, IndexError> {
        let path = dir.join("index.redb");
        let open_err = |source: redb::Error| IndexError::Open {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        let existed = path.exists();
        // Opening takes redb's lock on the file: only then is the marker ours.
        let mut db = Database::builder()
            .create(&path)
            .map_err(|e| open_err(e.into()))?;
        shrink::compact_if_pending(&mut db).map_err(|e| match e {
            IndexError::Store(source) => open_err(source),
            other => other,
        })?;
        let recovered = existed && !dir.join(CLEAN_MARKER).exists();
        clear_clean_marker(dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        if recovered {
            tracing::warn!(
                "index {} was not closed cleanly last time (crash or kill); redb recovered it",
                path.display()
            );
        }
        let vt = Arc::new(VolumeTable::default());
        let counts = init_tables(&db, &vt).map_err(|e| match e {
            IndexError::Store(source) => open_err(source),
            other => other,
        })?;
        let db = Arc::new(db::Db::new(db));
        let counts = Arc::new(std::sync::Mutex::new(counts));
        let (tx, rx) = mpsc::channel(MAX_BATCH);
        let (wdb, wcounts) = (Arc::clone(&db), Arc::clone(&counts));
        let thread = std::thread::Builder::new()
            .name("index-writer".into())
            .spawn({
                let vt = Arc::clone(&vt);
                move || writer_loop(&wdb, &vt, &wcounts, rx)
            })
            .map_err(|e| open_err(redb::Error::Io(e)))?;
        let migration = migrate::Migration::load(&db).map_err(|e| match e {
            IndexError::Store(source) => open_err(source),
            other => other,
        })?;
        let index = Index {
            db,
            dir: dir.to_path_buf(),
            counts,
            recovered,
            writer: tx,
            writer_thread: Arc::new(std::sync::Mutex::new(Some(thread))),
            replicator: Arc::default(),
            volumes: Arc::new(tokio::sync::watch::channel(None).0),
            vt,
            migration,
        };
        index.refresh_volumes();
        if migrate {
            index.start_migration();
        }
        Ok(index)
    }

    /// Waits for queued commands to commit and closes the database. Call it on the last
    /// handle, once nothing else can send commands (other clones keep the writer alive).
    pub fn close(self) {
        self.stop_migration();
        let Index {
            db,
            dir,
            writer,
            writer_thread,
            ..
        } = self;
        drop(writer);
        let handle = writer_thread.lock().ok().and_then(|mut h| h.take());
        let joined = handle.is_some_and(|h| h.join().is_ok());
        // Only the last handle closes the database; a clone still alive keeps it open.
        if joined && Arc::into_inner(db).is_some() {
            if let Err(e) = set_clean_marker(&dir) {
                tracing::warn!("index closed, but marking it clean failed: {e}");
            }
        }
    }

    /// Replicas held per volume server (`host:port`), as of the last commit.
    pub fn volume_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, VolumeCounts>, IndexError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let meta = txn.open_table(META).map_err(store_err)?;
        let mut out = std::collections::BTreeMap::new();
        for item in meta
            .range::<&str>(VOLUME_PREFIX.."vol;")
            .map_err(store_err)?
        {
            let (k, v) = item.map_err(store_err)?;
            let server = k.value().trim_start_matches(VOLUME_PREFIX).to_string();
            out.insert(server, VolumeCounts::decode(v.value()));
        }
        Ok(out)
    }

    /// Live keys of bucket `bucket` (keys `/<bucket>/…`) and their bytes, as of the last
    /// commit; zero when none.
    pub fn bucket_usage(&self, bucket: &str) -> Result<VolumeCounts, IndexError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let meta = txn.open_table(META).map_err(store_err)?;
        let name = format!("{BUCKET_PREFIX}{bucket}");
        Ok(meta
            .get(name.as_str())
            .map_err(store_err)?
            .map(|v| VolumeCounts::decode(v.value()))
            .unwrap_or_default())
    }

    /// Keys per state and bytes stored, as of the last commit.
    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when the database existed and was not closed cleanly last time (the
    /// process died): redb recovered it on open.
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// Reads the record of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, IndexError> {
        let started = std::time::Instant::now();
        let (txn, table) = self.read_records()?;
        let record = match table.get(key).map_err(store_err)? {
            Some(v) => self.vt.decode_read(&txn, key, v.value()).map(Some),
            None => Ok(None),
        };
        crate::telemetry::record_index_op("get", started);
        record
    }

    /// Applies one command durably; see [`Command`] for the semantics. When the index
    /// is replicated, the command goes through the replicated log, and its outcome is
    /// returned once this node's copy has applied it.
    pub async fn apply(&self, cmd: Command) -> Result<Applied, IndexError> {
        let started = std::time::Instant::now();
        if let Some(replicator) = self.replicator.get() {
            let applied = replicator.propose(cmd).await;
            crate::telemetry::record_index_op("apply", started);
            return applied;
        }
        let sets_volumes = matches!(cmd, Command::SetVolumes { .. });
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Job { cmd, reply })
            .await
            .map_err(|_| IndexError::Closed)?;
        let applied = rx.await.map_err(|_| IndexError::Closed)?;
        crate::telemetry::record_index_op("apply", started);
        if sets_volumes {
            self.refresh_volumes();
        }
        applied
    }

    /// The volume list set with `Command::SetVolumes`, as it changes (`None`: never set).
    pub fn volumes(&self) -> tokio::sync::watch::Receiver<Option<Vec<String>>> {
        self.volumes.subscribe()
    }

    /// Re-reads the stored volume list and announces it if it changed.
    fn refresh_volumes(&self) {
        let list = match self.meta(command::VOLUMES_META) {
            Ok(v) => v.and_then(|json| serde_json::from_slice::<Vec<String>>(&json).ok()),
            Err(e) => {
                tracing::warn!("reading the volume list: {e}");
                return;
            }
        };
        self.volumes.send_if_modified(|current| {
            let changed = *current != list;
            *current = list;
            changed
        });
    }

    /// Visits every record in key order, from `start` (exclusive) on, until `visit`
    /// returns false. Used by background workers to walk the index in chunks without
    /// holding one read transaction for the whole walk. Blocking.
    pub fn walk(
        &self,
        after: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], Record) -> bool,
    ) -> Result<(), IndexError> {
        use std::ops::Bound;
        let (txn, table) = self.read_records()?;
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        for item in table
            .range::<&[u8]>((lower, Bound::Unbounded))
            .map_err(store_err)?
        {
            let (k, v) = item.map_err(store_err)?;
            if !visit(k.value(), self.vt.decode_read(&txn, k.value(), v.value())?) {
                break;
            }
        }
        Ok(())
    }
}

/// Creates the tables if missing, loads the volume table into `vt` and returns the
/// stored counts, computing them by one scan when absent (a database from before counts
/// were kept).
fn init_tables(db: &Database, vt: &VolumeTable) -> Result<Counts, IndexError> {
    let txn = db.begin_write().map_err(store_err)?;
    volume_table::init(&txn, vt)?;
    migrate::init(&txn)?;
    let counts = {
        let ids = Ids::open(vt, &txn)?;
        let keys = txn.open_table(shrink::current(&txn)?).map_err(store_err)?;
        let mut meta = txn.open_table(META).map_err(store_err)?;
        let stored = meta
            .get(COUNTS)
            .map_err(store_err)?
            .and_then(|v| Counts::decode(v.value()));
        let per_volume = meta.get(VOLUME_COUNTS_KEPT).map_err(store_err)?.is_some();
        let counts = match stored {
            Some(c) if per_volume => c,
            _ => {
                // A database from before these counters were kept: one scan.
                let mut c = Counts::default();
                let mut deltas = counts::VolumeDeltas::new();
                for item in keys.iter().map_err(store_err)? {
                    let (k, v) = item.map_err(store_err)?;
                    let record = ids.decode(k.value(), v.value())?;
                    c.replace(None, Some(&record));
                    counts::volume_deltas(&mut deltas, k.value(), None, Some(&record));
                }
                meta.insert(COUNTS, c.encode().as_slice())
                    .map_err(store_err)?;
                clear_volume_counts(&mut meta)?;
                write_volume_deltas(&mut meta, &deltas)?;
                meta.insert(VOLUME_COUNTS_KEPT, &[1u8][..])
                    .map_err(store_err)?;
                c
            }
        };
        counts
    };
    txn.commit().map_err(store_err)?;
    Ok(counts)
}

/// `meta` entry present once per-volume and per-bucket counters are kept (a database
/// with only per-volume ones, `volume-counts`, is counted again once).
const VOLUME_COUNTS_KEPT: &str = "volume-bucket-counts";
/// Prefix of the per-volume counters in `meta`.
const VOLUME_PREFIX: &str = "vol:";
/// Prefix of the per-bucket usage counters in `meta` (live keys `/<bucket>/…`, bytes).
const BUCKET_PREFIX: &str = "bkt:";

type MetaTable<'txn> = redb::Table<'txn, &'static str, &'static [u8]>;

/// Adds `deltas` to the per-volume counters in `meta`.
fn write_volume_deltas(
    meta: &mut MetaTable<'_>,
    deltas: &counts::VolumeDeltas,
) -> Result<(), IndexError> {
    for (server, delta) in deltas {
        if *delta == (0, 0) {
            continue;
        }
        // Bucket usage is kept in the same map under `/<bucket>`.
        let name = match server.strip_prefix('/') {
            Some(bucket) => format!("{BUCKET_PREFIX}{bucket}"),
            None => format!("{VOLUME_PREFIX}{server}"),
        };
        let current = meta
            .get(name.as_str())
            .map_err(store_err)?
            .map(|v| VolumeCounts::decode(v.value()))
            .unwrap_or_default();
        let next = counts::apply_delta(current, *delta);
        meta.insert(name.as_str(), next.encode().as_slice())
            .map_err(store_err)?;
    }
    Ok(())
}

/// Removes every per-volume counter from `meta`.
fn clear_volume_counts(meta: &mut MetaTable<'_>) -> Result<(), IndexError> {
    meta.retain_in::<&str, _>(VOLUME_PREFIX.."vol;", |_, _| false)
        .map_err(store_err)?;
    meta.retain_in::<&str, _>(BUCKET_PREFIX.."bkt;", |_, _| false)
        .map_err(store_err)
}

/// The writer thread: drain, apply in order, commit once, answer.
fn writer_loop(
    db: &db::Db,
    vt: &VolumeTable,
    counts: &std::sync::Mutex<Counts>,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(db, vt, counts, &mut batch);
    }
}

/// Applies and commits `batch` (emptying it) in one transaction and answers each job.
/// If that fails, each job is tried in a transaction of its own, so one failing
/// command does not fail the others.
fn commit_batch(
    db: &db::Db,
    vt: &VolumeTable,
    counts: &std::sync::Mutex<Counts>,
    batch: &mut Vec<Job>,
) {
    let lock = || counts.lock().unwrap_or_else(|p| p.into_inner());
    let before = *lock();
    match apply_batch(db, vt, before, batch) {
        Ok((results, after, _)) => {
            *lock() = after;
            for (job, result) in batch.drain(..).zip(results) {
                let _ = job.reply.send(Ok(result));
            }
        }
        Err(e) if batch.len() == 1 => {
            tracing::error!("index write failed: {e}");
            if let Some(job) = batch.pop() {
                let _ = job.reply.send(Err(e));
            }
        }
        Err(e) => {
            tracing::error!(
                "index write transaction of {} commands failed ({e}); retrying one by one",
                batch.len()
            );
            for job in batch.drain(..) {
                commit_batch(db, vt, counts, &mut vec![job]);
            }
        }
    }
}

fn apply_batch(
    db: &db::Db,
    vt: &VolumeTable,
    counts: Counts,
    batch: &[Job],
) -> Result<(Vec<Applied>, Counts, bool), IndexError> {
    let mut txn = db.begin_write().map_err(store_err)?;
    // Persist allocator state with each commit so reopening after a crash is fast.
    txn.set_quick_repair(true);
    let (results, counts, durable, names) = {
        let mut tables = shrink::open_write(&txn)?;
        let mut map = TableMap {
            table: &mut tables.main,
            shadow: tables.shadow.as_mut(),
            counts,
            meta: Vec::new(),
            reader: db,
            volumes: counts::VolumeDeltas::new(),
            ids: Ids::open(vt, &txn)?,
            persist: false,
        };
        let mut feed = feed::Hook::open(&txn)?;
        let mut results = Vec::with_capacity(batch.len());
        for job in batch {
            let applied = match feed.before(&mut map, &job.cmd)? {
                Some(rejection) => Err(rejection),
                None => apply(&mut map, &job.cmd)?,
            };
            feed.after(&job.cmd, &applied)?;
            results.push(applied);
        }
        drop(feed);
        let durable = map.persist
            || batch
                .iter()
                .zip(&results)
                .any(|(job, applied)| needs_durability(&job.cmd, applied));
        let counts = map.counts;
        let mut meta = txn.open_table(META).map_err(store_err)?;
        meta.insert(COUNTS, counts.encode().as_slice())
            .map_err(store_err)?;
        write_meta(&mut meta, &map.meta)?;
        write_volume_deltas(&mut meta, &map.volumes)?;
        (results, counts, durable, map.ids.finish())
    };
    if !durable {
        txn.set_durability(redb::Durability::None)
            .map_err(store_err)?;
    }
    txn.commit().map_err(store_err)?;
    vt.publish(names);
    Ok((results, counts, durable))
}

/// False for a command whose effect may be lost in a crash: one that changed nothing
/// (rejected), and one that moves a key between states no reader sees — absent, a
/// `writing` intent, a `deleting` record:
///
/// * `Begin`. Its intent names a generation of files no other record names (see
///   `Command::Begin`); if it is lost, the files its write uploaded have no record
///   (verify collects orphans), and a record it replaced comes back (an abandoned
///   intent or interrupted delete: repair rolls it back or finishes it). A `Begin`
///   that retires an unlinked value asks to be durable itself
///   ([`RecordMap::must_persist`]): that value's files may be deleted next. The
///   `Commit` that makes a value visible is durable, and makes its `Begin` durable
///   with it.
/// * `Remove` of a `writing` or `deleting` record (the end of a delete or of a rolled
///   back write), after its files were deleted. If it is lost, the record comes back in
///   that state, still invisible, and repair deletes the (already gone) files again
///   and drops it.
///
/// Everything else — `Commit`, `BeginDelete` (it must be durable before any file is
/// deleted), `Unlink`, relocations, … — is durable when answered. The replicated index
/// does not use this writer: there the log's fsync decides.
fn needs_durability(cmd: &Command, applied: &Applied) -> bool {
    let invisible = |prev: &Option<Record>| {
        prev.as_ref()
            .is_none_or(|r| matches!(r.state, State::Writing | State::Deleting))
    };
    match (cmd, applied) {
        (_, Err(_)) | (Command::Begin { .. }, _) => false,
        (Command::Remove { .. }, Ok(prev)) => !invisible(prev),
        _ => true,
    }
}

/// Stores the index-wide values a batch of commands wrote (`None`: removed), in order.
fn write_meta(
    meta: &mut MetaTable<'_>,
    values: &[(String, Option<Vec<u8>>)],
) -> Result<(), IndexError> {
    for (name, value) in values {
        match value {
            Some(v) => meta.insert(name.as_str(), v.as_slice()).map(|_| ()),
            None => meta.remove(name.as_str()).map(|_| ()),
        }
        .map_err(store_err)?;
    }
    Ok(())
}

/// Removes the clean-shutdown marker (durably) before the index is used.
fn clear_clean_marker(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(CLEAN_MARKER)) {
        Ok(()) => std::fs::File::open(dir)?.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the clean-shutdown marker (durably) after the database was closed.
fn set_clean_marker(dir: &Path) -> std::io::Result<()> {
    std::fs::File::create(dir.join(CLEAN_MARKER))?.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// The clock of command timestamps ([`crate::clock`]), re-exported for the index's own
/// files.
pub use crate::clock::now_ms;

#[cfg(test)]
mod tests;

/// Helpers for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Command, Index};

    /// Writes `key` as a live one-byte value on `a:1` (intent, then commit), unlinked
    /// after that when `unlinked`.
    pub(crate) async fn put_live(index: &Index, key: &[u8], unlinked: bool) {
        let begin = Command::Begin {
            key: key.to_vec(),
            volumes: vec!["a:1".into()],
            now_ms: 1,
            owner: 0,
            replace: false,
        };
        let commit = Command::Commit {
            gen: 0,
            key: key.to_vec(),
            size: 1,
            md5: None,
            missing: Vec::new(),
            now_ms: 2,
            owner: 0,
            meta: Vec::new(),
        };
        let unlink = Command::Unlink {
            key: key.to_vec(),
            now_ms: 3,
        };
        let cmds = [Some(begin), Some(commit), unlinked.then_some(unlink)];
        for cmd in cmds.into_iter().flatten() {
            index.apply(cmd).await.unwrap().unwrap();
        }
    }
}
