//! The Raft log and vote, in their own redb file (`<db>/raft-log.redb`).
//!
//! Every write (vote, appended entries, truncation, purge) is one redb transaction
//! committed with fsync before openraft is told it is done: a vote or an entry that
//! openraft counts on survives a crash (double votes or lost commits otherwise).
//! Entries are stored as JSON under their index. Work runs on the blocking pool.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::TypeConfig;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

type StoreResult<T> = Result<T, StorageError<u64>>;

/// The log store; cheap to clone (readers share the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
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
        Ok(LogStore { db: Arc::new(db) })
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

    fn put_meta<T: serde::Serialize>(db: &Database, name: &str, value: &T) -> Result<(), AnyError> {
        let bytes = serde_json::to_vec(value).map_err(io_err)?;
        let txn = db.begin_write().map_err(io_err)?;
        txn.open_table(META)
            .map_err(io_err)?
            .insert(name, bytes.as_slice())
            .map_err(io_err)?;
        txn.commit().map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        self.blocking(
            move |db| {
                let txn = db.begin_read().map_err(io_err)?;
                let log = txn.open_table(LOG).map_err(io_err)?;
                let mut out = Vec::new();
                for item in log.range::<u64>((start, end)).map_err(io_err)? {
                    let (_, v) = item.map_err(io_err)?;
                    out.push(serde_json::from_slice(v.value()).map_err(io_err)?);
                }
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
        self.blocking(
            |db| {
                let purged: Option<LogId<u64>> = LogStore::get_meta(db, PURGED)?;
                let txn = db.begin_read().map_err(io_err)?;
                let log = txn.open_table(LOG).map_err(io_err)?;
                let last = match log.last().map_err(io_err)? {
                    Some((_, v)) => {
                        let e: Entry<TypeConfig> =
                            serde_json::from_slice(v.value()).map_err(io_err)?;
                        Some(*e.get_log_id())
                    }
                    None => purged,
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
        let vote = *vote;
        self.blocking(
            move |db| LogStore::put_meta(db, VOTE, &vote),
            StorageIOError::write_vote,
        )
        .await
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<u64>>> {
        self.blocking(|db| LogStore::get_meta(db, VOTE), StorageIOError::read_vote)
            .await
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StoreResult<()> {
        self.blocking(
            move |db| LogStore::put_meta(db, COMMITTED, &committed),
            StorageIOError::write_logs,
        )
        .await
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<u64>>> {
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
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| Ok((e.get_log_id().index, serde_json::to_vec(&e)?)))
            .collect::<Result<_, serde_json::Error>>()
            .map_err(|e| StorageError::from(StorageIOError::write_logs(io_err(e))))?;
        let result = self
            .blocking(
                move |db| {
                    let txn = db.begin_write().map_err(io_err)?;
                    {
                        let mut log = txn.open_table(LOG).map_err(io_err)?;
                        for (index, bytes) in &encoded {
                            log.insert(*index, bytes.as_slice()).map_err(io_err)?;
                        }
                    }
                    txn.commit().map_err(io_err)
                },
                StorageIOError::write_logs,
            )
            .await;
        // The entries are on disk (fsync) before openraft hears they are.
        callback.log_io_completed(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        result
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        self.blocking(
            move |db| {
                let txn = db.begin_write().map_err(io_err)?;
                txn.open_table(LOG)
                    .map_err(io_err)?
                    .retain_in::<u64, _>(log_id.index.., |_, _| false)
                    .map_err(io_err)?;
                txn.commit().map_err(io_err)
            },
            StorageIOError::write_logs,
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        self.blocking(
            move |db| {
                let bytes = serde_json::to_vec(&log_id).map_err(io_err)?;
                let txn = db.begin_write().map_err(io_err)?;
                {
                    let mut meta = txn.open_table(META).map_err(io_err)?;
                    meta.insert(PURGED, bytes.as_slice()).map_err(io_err)?;
                    txn.open_table(LOG)
                        .map_err(io_err)?
                        .retain_in::<u64, _>(..=log_id.index, |_, _| false)
                        .map_err(io_err)?;
                }
                txn.commit().map_err(io_err)
            },
            StorageIOError::write_logs,
        )
        .await
    }
}
