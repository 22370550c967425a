//! The replicated state machine: committed log entries applied to the index (the same
//! `index::apply` of every `Command` as on a single server), and snapshots of the whole
//! index as files.
//!
//! The log position applied and the membership are stored in the index's `meta` table
//! in the same transaction as the records they describe. Those transactions are not
//! synced (the log is durable and is replayed after a crash); building a snapshot syncs
//! the index first, since the log up to the snapshot may then be purged.
//!
//! Snapshots (`<db>/snapshots/`): `current.snap` is the index export
//! (`Index::export`), `current.meta` its JSON `SnapshotMeta`; both are replaced by
//! rename. A received snapshot is streamed to a file (`incoming-*`), imported, then
//! kept as the current one. Nothing of a snapshot is held in memory.

use std::path::{Path, PathBuf};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use tokio::io::AsyncSeekExt;

use super::{Outcome, TypeConfig};
use crate::index::Index;

/// `meta` entry: the last log id applied (JSON).
const APPLIED: &str = "raft_applied";
/// `meta` entry: the last membership applied (JSON).
const MEMBERSHIP: &str = "raft_membership";

type StoreResult<T> = Result<T, StorageError<u64>>;
type Membership = StoredMembership<u64, BasicNode>;

fn any(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

/// The index seen as openraft's state machine.
#[derive(Clone)]
pub struct StateMachine {
    index: Index,
    dir: PathBuf,
}

impl StateMachine {
    /// The state machine over `index`, keeping snapshots in `dir`.
    pub fn new(index: Index, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        // Partial snapshots from an interrupted transfer.
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with("incoming-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(StateMachine {
            index,
            dir: dir.to_path_buf(),
        })
    }

    fn snap_path(&self) -> PathBuf {
        self.dir.join("current.snap")
    }

    fn meta_path(&self) -> PathBuf {
        self.dir.join("current.meta")
    }

    /// Keeps `file` (already in `dir`) as the current snapshot, described by `meta`.
    fn keep(&self, file: &Path, meta: &SnapshotMeta<u64, BasicNode>) -> Result<(), AnyError> {
        std::fs::rename(file, self.snap_path()).map_err(any)?;
        let tmp = self.dir.join("current.meta.tmp");
        std::fs::write(&tmp, serde_json::to_vec(meta).map_err(any)?).map_err(any)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(any)?;
        std::fs::rename(&tmp, self.meta_path()).map_err(any)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(any)
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, AnyError> {
    serde_json::to_vec(v).map_err(any)
}

fn parse<T: serde::de::DeserializeOwned + Default>(v: Option<Vec<u8>>) -> Result<T, AnyError> {
    match v {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(any),
        None => Ok(T::default()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AnyError> + Send + 'static,
    err: fn(AnyError) -> StorageIOError<u64>,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::from(err(any(e))))?
        .map_err(|e| StorageError::from(err(e)))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> StoreResult<(Option<LogId<u64>>, Membership)> {
        let index = self.index.clone();
        blocking(
            move || {
                let applied = parse(index.meta(APPLIED).map_err(any)?)?;
                let membership = parse(index.meta(MEMBERSHIP).map_err(any)?)?;
                Ok((applied, membership))
            },
            StorageIOError::read_state_machine,
        )
        .await
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Every command of every entry, in log order, and how many each entry carries.
        let mut batch = Vec::new();
        let mut per_entry = Vec::new();
        let mut last = None;
        let mut membership = None;
        for entry in entries {
            last = Some(entry.log_id);
            let before = batch.len();
            match entry.payload {
                EntryPayload::Normal(proposal) => {
                    batch.extend(proposal.into_commands().into_iter().map(Some))
                }
                EntryPayload::Membership(m) => {
                    membership = Some(Membership::new(Some(entry.log_id), m));
                }
                EntryPayload::Blank => {}
            }
            per_entry.push(batch.len() - before);
        }
        if per_entry.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.index.clone();
        blocking(
            move || {
                let mut state = vec![(APPLIED, json(&last)?)];
                if let Some(m) = &membership {
                    state.push((MEMBERSHIP, json(m)?));
                }
                let mut results = index
                    .apply_committed(&batch, &state)
                    .map_err(any)?
                    .into_iter();
                Ok(per_entry
                    .iter()
                    .map(|&n| Outcome(results.by_ref().take(n).flatten().collect()))
                    .collect())
            },
            StorageIOError::write_state_machine,
        )
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<tokio::fs::File>> {
        let path = self
            .dir
            .join(format!("incoming-{:016x}", fastrand::u64(..)));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, any(e))))?;
        // Unlinked at once: only the open handle keeps it; install copies it out.
        let _ = std::fs::remove_file(&path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> StoreResult<()> {
        let write_err = |e: AnyError| StorageError::from(StorageIOError::write_snapshot(None, e));
        snapshot
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| write_err(any(e)))?;
        let file = snapshot.into_std().await;
        let (this, meta) = (self.clone(), meta.clone());
        blocking(
            move || {
                // Keep a copy as the current snapshot (for followers behind us later).
                let kept = this
                    .dir
                    .join(format!("incoming-{:016x}", fastrand::u64(..)));
                let mut reader = std::io::BufReader::new(&file);
                std::io::copy(&mut reader, &mut std::fs::File::create(&kept).map_err(any)?)
                    .map_err(any)?;
                let mut input = std::io::BufReader::new(std::fs::File::open(&kept).map_err(any)?);
                let state = [
                    (APPLIED, json(&meta.last_log_id)?),
                    (MEMBERSHIP, json(&meta.last_membership)?),
                ];
                let n = this.index.import(&mut input, &state).map_err(any)?;
                tracing::info!(
                    "installed snapshot {} ({n} records, up to {:?})",
                    meta.snapshot_id,
                    meta.last_log_id
                );
                this.keep(&kept, &meta)
            },
            StorageIOError::write_state_machine,
        )
        .await
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        let (snap, meta) = (self.snap_path(), self.meta_path());
        let meta: SnapshotMeta<u64, BasicNode> = match std::fs::read(&meta) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, any(e))))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StorageError::from(StorageIOError::read_snapshot(
                    None,
                    any(e),
                )))
            }
        };
        let file = tokio::fs::File::open(&snap)
            .await
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, any(e))))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let this = self.clone();
        let meta = blocking(
            move || {
                // Durable state first: the log up to this snapshot may be purged next.
                this.index.sync().map_err(any)?;
                let path = this
                    .dir
                    .join(format!("incoming-{:016x}", fastrand::u64(..)));
                let mut out = std::io::BufWriter::new(std::fs::File::create(&path).map_err(any)?);
                let (n, values) = this
                    .index
                    .export(&mut out, &[APPLIED, MEMBERSHIP])
                    .map_err(any)?;
                let file = out.into_inner().map_err(any)?;
                file.sync_all().map_err(any)?;
                let mut values = values.into_iter();
                let last_log_id: Option<LogId<u64>> = parse(values.next().flatten())?;
                let last_membership: Membership = parse(values.next().flatten())?;
                let meta = SnapshotMeta {
                    snapshot_id: format!(
                        "{}-{:08x}",
                        last_log_id.map_or(0, |l| l.index),
                        fastrand::u32(..)
                    ),
                    last_log_id,
                    last_membership,
                };
                this.keep(&path, &meta)?;
                tracing::info!("built snapshot {} ({n} records)", meta.snapshot_id);
                Ok(meta)
            },
            StorageIOError::write_state_machine,
        )
        .await?;
        let file = tokio::fs::File::open(self.snap_path())
            .await
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, any(e))))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}
