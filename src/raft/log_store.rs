//! The Raft log and vote, in their own redb file (`<db>/raft-log.redb`).
//!
//! Every write runs on one writer thread, in order. Appended entries are readable at
//! once (from an in-memory map of entries not yet on disk) and openraft is told they
//! are durable only after their transaction committed with fsync; appends queued
//! while the writer was busy share one transaction (one fsync). (openraft 0.9's core
//! still waits for each append's flush before it goes on, so in practice the leader
//! commits one entry per fsync; the design is ready for a core that does not.) A vote,
//! a truncation and a purge are durable before their call returns: a vote or an entry
//! that openraft counts on survives a crash (double votes or lost commits otherwise).
//! The committed log id is optional state (openraft re-learns it from the leader, and
//! an older one is still correct): it rides along with the next appended entries,
//! never in a transaction of its own.
//! Entries are stored as JSON under their index. Reads run on the blocking pool.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::TypeConfig;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

type StoreResult<T> = Result<T, StorageError<u64>>;

/// Entries appended but not yet committed to the database, by index (decoded: the
/// replication to followers reads them back from here, right after the append).
type Pending = Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>;

/// The log store; cheap to clone (readers share the database and the pending map).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    pending: Pending,
    /// The latest committed log id openraft reported, saved with the next append.
    committed: Arc<Mutex<Committed>>,
    writer: mpsc::Sender<Op>,
}

/// A write for the writer thread.
enum Op {
    /// Entries (already in `pending`) to make durable, then `done` to call.
    Append {
        entries: Vec<(u64, Vec<u8>)>,
        done: LogFlushed<TypeConfig>,
    },
    /// A durable write of its own (vote, truncation, purge), answered when committed.
    Sync(SyncOp, oneshot::Sender<Result<(), AnyError>>),
}

/// Encoded entries by index, and the callback to call once they are durable.
type Append = (Vec<(u64, Vec<u8>)>, LogFlushed<TypeConfig>);

/// The committed log id as openraft last reported it in this process.
#[derive(Default)]
struct Committed {
    /// `Some` once reported.
    latest: Option<Option<LogId<u64>>>,
    /// Reported since last written.
    unsaved: bool,
}

/// A write that is durable before its call returns.
enum SyncOp {
    Vote(Vec<u8>),
    /// Drop entries from this index on.
    Truncate(u64),
    /// Drop entries up to this log id, recorded as purged.
    Purge(LogId<u64>, Vec<u8>),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_err(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

impl LogStore {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let db = Database::create(path)
            .map_err(|e| anyhow::anyhow!("opening Raft log {}: {e}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        let db = Arc::new(db);
        let pending = Pending::default();
        let committed = Arc::new(Mutex::new(Committed::default()));
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            db: Arc::clone(&db),
            pending: Arc::clone(&pending),
            committed: Arc::clone(&committed),
        };
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer.run(&rx))?;
        Ok(LogStore {
            db,
            pending,
            committed,
            writer: tx,
        })
    }

    /// Runs `op` on the writer thread and waits until it is durable.
    async fn sync_write(
        &self,
        op: SyncOp,
        err: fn(AnyError) -> StorageIOError<u64>,
    ) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Op::Sync(op, tx))
            .map_err(|_| StorageError::from(err(io_err("Raft log writer stopped"))))?;
        rx.await
            .map_err(|_| StorageError::from(err(io_err("Raft log writer stopped"))))?
            .map_err(|e| StorageError::from(err(e)))
    }

    /// Runs `f` on the blocking pool with the database.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, AnyError> + Send + 'static,
        err: fn(AnyError) -> StorageIOError<u64>,
    ) -> StoreResult<T> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StorageError::from(err(io_err(e))))?
            .map_err(|e| StorageError::from(err(e)))
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        db: &Database,
        name: &str,
    ) -> Result<Option<T>, AnyError> {
        let txn = db.begin_read().map_err(io_err)?;
        let meta = txn.open_table(META).map_err(io_err)?;
        let Some(v) = meta.get(name).map_err(io_err)? else {
            return Ok(None);
        };
        serde_json::from_slice(v.value()).map(Some).map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        // Pending entries first: one the writer commits meanwhile is then in the
        // database, read next (the other order could miss it).
        let pending: Vec<(u64, Entry<TypeConfig>)> = lock(&self.pending)
            .range((start, end))
            .map(|(i, e)| (*i, e.clone()))
            .collect();
        self.blocking(
            move |db| {
                let mut out = Vec::new();
                // Entries below the first pending one are all committed.
                let db_end = match pending.first() {
                    Some((first, _)) => Bound::Excluded(*first),
                    None => end,
                };
                let txn = db.begin_read().map_err(io_err)?;
                let log = txn.open_table(LOG).map_err(io_err)?;
                for item in log.range::<u64>((start, db_end)).map_err(io_err)? {
                    let (_, v) = item.map_err(io_err)?;
                    out.push(serde_json::from_slice(v.value()).map_err(io_err)?);
                }
                out.extend(pending.into_iter().map(|(_, e)| e));
                Ok(out)
            },
            StorageIOError::read_logs,
        )
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let pending_last = lock(&self.pending)
            .last_key_value()
            .map(|(_, e)| *e.get_log_id());
        self.blocking(
            move |db| {
                let purged: Option<LogId<u64>> = LogStore::get_meta(db, PURGED)?;
                let txn = db.begin_read().map_err(io_err)?;
                let log = txn.open_table(LOG).map_err(io_err)?;
                let last = match (pending_last, log.last().map_err(io_err)?) {
                    (Some(id), _) => Some(id),
                    (None, Some((_, v))) => {
                        let e: Entry<TypeConfig> =
                            serde_json::from_slice(v.value()).map_err(io_err)?;
                        Some(*e.get_log_id())
                    }
                    (None, None) => purged,
                };
                Ok(LogState {
                    last_purged_log_id: purged,
                    last_log_id: last,
                })
            },
            StorageIOError::read_logs,
        )
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StoreResult<()> {
        let bytes = serde_json::to_vec(vote)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(io_err(e))))?;
        self.sync_write(SyncOp::Vote(bytes), StorageIOError::write_vote)
            .await
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<u64>>> {
        self.blocking(|db| LogStore::get_meta(db, VOTE), StorageIOError::read_vote)
            .await
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StoreResult<()> {
        // Optional state: written with the next appended entries, never waited for.
        let mut c = lock(&self.committed);
        c.latest = Some(committed);
        c.unsaved = true;
        Ok(())
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<u64>>> {
        if let Some(latest) = lock(&self.committed).latest {
            return Ok(latest);
        }
        self.blocking(
            |db| Ok(LogStore::get_meta::<Option<LogId<u64>>>(db, COMMITTED)?.flatten()),
            StorageIOError::read_logs,
        )
        .await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .iter()
            .map(|e| Ok((e.get_log_id().index, serde_json::to_vec(e)?)))
            .collect::<Result<_, serde_json::Error>>()
            .map_err(|e| StorageError::from(StorageIOError::write_logs(io_err(e))))?;
        // Readable from now on; durable when the writer calls back.
        lock(&self.pending).extend(entries.into_iter().map(|e| (e.get_log_id().index, e)));
        let op = Op::Append {
            entries: encoded,
            done: callback,
        };
        if let Err(mpsc::SendError(op)) = self.writer.send(op) {
            if let Op::Append { done, .. } = op {
                done.log_io_completed(Err(std::io::Error::other("Raft log writer stopped")));
            }
            return Err(StorageError::from(StorageIOError::write_logs(io_err(
                "Raft log writer stopped",
            ))));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        self.sync_write(SyncOp::Truncate(log_id.index), StorageIOError::write_logs)
            .await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        let bytes = serde_json::to_vec(&log_id)
            .map_err(|e| StorageError::from(StorageIOError::write_logs(io_err(e))))?;
        self.sync_write(SyncOp::Purge(log_id, bytes), StorageIOError::write_logs)
            .await
    }
}

/// The writer thread's state.
struct Writer {
    db: Arc<Database>,
    pending: Pending,
    committed: Arc<Mutex<Committed>>,
}

impl Writer {
    /// Runs until every [`LogStore`] is gone. Takes all queued operations at once and
    /// commits them in order: consecutive appends (with the committed log id) in one
    /// durable transaction, then each vote, truncation or purge in one of its own.
    /// Openraft awaits a truncation or a purge before appending again, so an entry
    /// removed from `pending` after its commit is never a newer one at that index.
    fn run(self, rx: &mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut ops = vec![first];
            ops.extend(rx.try_iter());
            let mut appends = Vec::new();
            for op in ops {
                match op {
                    Op::Append { entries, done } => appends.push((entries, done)),
                    Op::Sync(op, reply) => {
                        self.flush(std::mem::take(&mut appends));
                        let _ = reply.send(self.sync_op(op));
                    }
                }
            }
            self.flush(appends);
        }
    }

    /// Commits `appends` (with the committed log id if it changed) and calls back.
    fn flush(&self, appends: Vec<Append>) {
        if appends.is_empty() {
            return;
        }
        let committed = {
            let mut c = lock(&self.committed);
            std::mem::take(&mut c.unsaved).then_some(c.latest).flatten()
        };
        let result = (|| -> Result<(), AnyError> {
            let committed = match committed {
                Some(c) => Some(serde_json::to_vec(&c).map_err(io_err)?),
                None => None,
            };
            let txn = self.db.begin_write().map_err(io_err)?;
            {
                let mut log = txn.open_table(LOG).map_err(io_err)?;
                for (index, bytes) in appends.iter().flat_map(|(e, _)| e) {
                    log.insert(*index, bytes.as_slice()).map_err(io_err)?;
                }
                if let Some(bytes) = &committed {
                    txn.open_table(META)
                        .map_err(io_err)?
                        .insert(COMMITTED, bytes.as_slice())
                        .map_err(io_err)?;
                }
            }
            txn.commit().map_err(io_err)
        })();
        if result.is_ok() {
            let mut pending = lock(&self.pending);
            for (index, _) in appends.iter().flat_map(|(e, _)| e) {
                pending.remove(index);
            }
        }
        // The entries are on disk (fsync) before openraft hears they are.
        for (_, done) in appends {
            done.log_io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
    }

    fn sync_op(&self, op: SyncOp) -> Result<(), AnyError> {
        let txn = self.db.begin_write().map_err(io_err)?;
        match op {
            SyncOp::Vote(bytes) => {
                txn.open_table(META)
                    .map_err(io_err)?
                    .insert(VOTE, bytes.as_slice())
                    .map_err(io_err)?;
            }
            SyncOp::Truncate(index) => {
                txn.open_table(LOG)
                    .map_err(io_err)?
                    .retain_in::<u64, _>(index.., |_, _| false)
                    .map_err(io_err)?;
                // Entries not yet committed are gone too (openraft appends again after).
                lock(&self.pending).retain(|i, _| *i < index);
            }
            SyncOp::Purge(log_id, bytes) => {
                let mut meta = txn.open_table(META).map_err(io_err)?;
                meta.insert(PURGED, bytes.as_slice()).map_err(io_err)?;
                txn.open_table(LOG)
                    .map_err(io_err)?
                    .retain_in::<u64, _>(..=log_id.index, |_, _| false)
                    .map_err(io_err)?;
            }
        }
        txn.commit().map_err(io_err)
    }
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
