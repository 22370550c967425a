//! The replicated state machine: committed log entries applied to the index (the same
//! `index::apply` of every `Command` as on a single server), and snapshots of the whole
//! index as files.
//!
//! The log position applied and the membership are stored in the index's `meta` table
//! in the same transaction as the records they describe. Those transactions are not
//! synced (the log is durable and is replayed after a crash); building a snapshot syncs
//! the index first, since the log up to the snapshot may then be purged.
//!
//! Snapshots (`<db>/snapshots/`): `snap-<snapshot id>` is the index export
//! (`Index::export`: versioned, with a trailer carrying the item count and a
//! checksum, see `crate::index::snapfile`), `current.meta` the JSON `SnapshotMeta` of
//! the current one. A snapshot file is written under a temporary name
//! (`incoming-*`) and fsynced, then renamed to its final name and the directory
//! fsynced; then `current.meta` is replaced (temporary file, fsync, rename, directory
//! fsync). That last rename is the single commit point: a crash before it leaves the
//! previous snapshot current, after it the new one, whole. A received snapshot is
//! streamed to an unlinked file, copied out to a temporary file, fsynced, imported
//! (the import verifies the trailer before it commits anything: a cut or altered
//! snapshot is refused, the index untouched, and the error returned to openraft), and
//! only then made current. A member that still holds a snapshot of the earlier layout
//! (`current.snap`, unversioned) rewrites it into the current format at start.
//! Nothing of a snapshot is held in memory.

use std::path::{Path, PathBuf};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use tokio::io::AsyncSeekExt;

use super::{Outcome, TypeConfig};
use crate::index::{snapfile, Index};

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
        // Partial snapshots from an interrupted transfer or build.
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with("incoming-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let sm = StateMachine {
            index,
            dir: dir.to_path_buf(),
        };
        sm.upgrade_legacy()
            .map_err(|e| anyhow::anyhow!("upgrading the snapshot in {}: {e}", dir.display()))?;
        Ok(sm)
    }

    /// Rewrites a current snapshot of the earlier layout (`current.snap`, unversioned)
    /// into the current format and layout.
    fn upgrade_legacy(&self) -> Result<(), AnyError> {
        let legacy = self.dir.join("current.snap");
        if !legacy.exists() {
            return Ok(());
        }
        let meta: SnapshotMeta<u64, BasicNode> = match std::fs::read(self.meta_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(any)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Never made current: nothing refers to it.
                return std::fs::remove_file(&legacy).map_err(any);
            }
            Err(e) => return Err(any(e)),
        };
        let tmp = self.temp_path();
        let mut input = std::io::BufReader::new(std::fs::File::open(&legacy).map_err(any)?);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(any)?);
        let n = snapfile::upgrade_legacy(&mut input, &mut out).map_err(any)?;
        out.into_inner().map_err(any)?.sync_all().map_err(any)?;
        self.keep(&tmp, &meta)?;
        std::fs::remove_file(&legacy).map_err(any)?;
        tracing::info!(
            "rewrote snapshot {} ({n} items) in the current format",
            meta.snapshot_id
        );
        Ok(())
    }

    fn temp_path(&self) -> PathBuf {
        self.dir
            .join(format!("incoming-{:016x}", fastrand::u64(..)))
    }

    /// The file of the snapshot `id`.
    fn snap_path(&self, id: &str) -> Result<PathBuf, AnyError> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(AnyError::error(format!("unexpected snapshot id {id:?}")));
        }
        Ok(self.dir.join(format!("snap-{id}")))
    }

    fn meta_path(&self) -> PathBuf {
        self.dir.join("current.meta")
    }

    fn sync_dir(&self) -> Result<(), AnyError> {
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(any)
    }

    /// Makes `file` (in `dir`, complete and fsynced) the current snapshot, described by
    /// `meta`; the rename of `current.meta` commits it. Earlier snapshot files go, but
    /// for the one current until now (a sender may just have read its meta).
    fn keep(&self, file: &Path, meta: &SnapshotMeta<u64, BasicNode>) -> Result<(), AnyError> {
        let snap = self.snap_path(&meta.snapshot_id)?;
        let previous = std::fs::read(self.meta_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<SnapshotMeta<u64, BasicNode>>(&b).ok())
            .and_then(|m| self.snap_path(&m.snapshot_id).ok());
        std::fs::rename(file, &snap).map_err(any)?;
        self.sync_dir()?;
        let tmp = self.dir.join("current.meta.tmp");
        std::fs::write(&tmp, serde_json::to_vec(meta).map_err(any)?).map_err(any)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(any)?;
        std::fs::rename(&tmp, self.meta_path()).map_err(any)?;
        self.sync_dir()?;
        for entry in std::fs::read_dir(&self.dir).map_err(any)?.flatten() {
            let name = entry.file_name();
            let path = entry.path();
            if name.to_string_lossy().starts_with("snap-")
                && path != snap
                && Some(&path) != previous.as_ref()
            {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
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
                // A durable copy first: it becomes the current snapshot (for followers
                // behind us later) once imported.
                let kept = this.temp_path();
                let mut reader = std::io::BufReader::new(&file);
                let mut copy = std::fs::File::create(&kept).map_err(any)?;
                let installed = std::io::copy(&mut reader, &mut copy)
                    .and_then(|_| copy.sync_all())
                    .map_err(any)
                    .and_then(|()| {
                        let mut input =
                            std::io::BufReader::new(std::fs::File::open(&kept).map_err(any)?);
                        let state = [
                            (APPLIED, json(&meta.last_log_id)?),
                            (MEMBERSHIP, json(&meta.last_membership)?),
                        ];
                        this.index.import(&mut input, &state).map_err(any)
                    });
                let n = match installed {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = std::fs::remove_file(&kept);
                        tracing::error!("refused snapshot {}: {e}", meta.snapshot_id);
                        return Err(e);
                    }
                };
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
        let meta: SnapshotMeta<u64, BasicNode> = match std::fs::read(self.meta_path()) {
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
        let snap = self
            .snap_path(&meta.snapshot_id)
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, e)))?;
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
                let path = this.temp_path();
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
        let snap = self
            .snap_path(&meta.snapshot_id)
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, e)))?;
        let file = tokio::fs::File::open(&snap)
            .await
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, any(e))))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Command;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn index_with(dir: &Path, keys: &[&str]) -> Index {
        let index = Index::open(dir).unwrap();
        let batch: Vec<Option<Command>> = keys
            .iter()
            .map(|k| {
                Some(Command::Begin {
                    key: k.as_bytes().to_vec(),
                    volumes: vec!["v:1".into()],
                    now_ms: 1,
                    owner: 0,
                    replace: false,
                })
            })
            .collect();
        index.apply_committed(&batch, &[]).unwrap();
        index
    }

    /// Installs `bytes` as snapshot `meta` into `sm`, as openraft does.
    async fn install(
        sm: &mut StateMachine,
        meta: &SnapshotMeta<u64, BasicNode>,
        bytes: &[u8],
    ) -> StoreResult<()> {
        let mut file = sm.begin_receiving_snapshot().await.unwrap();
        file.write_all(bytes).await.unwrap();
        file.flush().await.unwrap();
        sm.install_snapshot(meta, file).await
    }

    #[tokio::test]
    async fn a_received_snapshot_is_checked_before_it_becomes_current() {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let source = index_with(dirs[0].path(), &["/a", "/b", "/c"]);
        let mut built = StateMachine::new(source, dirs[1].path()).unwrap();
        let mut snap = built.build_snapshot().await.unwrap();
        let mut bytes = Vec::new();
        snap.snapshot.read_to_end(&mut bytes).await.unwrap();

        let target = index_with(dirs[2].path(), &["/old"]);
        let mut sm = StateMachine::new(target.clone(), dirs[3].path()).unwrap();
        // Cut short (here: the trailer missing): refused, nothing changed.
        let cut = install(&mut sm, &snap.meta, &bytes[..bytes.len() - 16]).await;
        assert!(cut.is_err());
        assert!(target.get(b"/old").unwrap().is_some());
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        // Whole: installed and current, in the same format.
        install(&mut sm, &snap.meta, &bytes).await.unwrap();
        assert!(target.get(b"/old").unwrap().is_none());
        assert!(target.get(b"/c").unwrap().is_some());
        let mut current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snap.meta);
        let mut kept = Vec::new();
        current.snapshot.read_to_end(&mut kept).await.unwrap();
        assert_eq!(kept, bytes);
    }

    #[tokio::test]
    async fn a_snapshot_of_the_earlier_layout_is_rewritten_at_start() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let index = index_with(a.path(), &["/a"]);
        let mut legacy = Vec::new();
        for part in [&b"/a"[..], b"whatever"] {
            legacy.extend((part.len() as u32).to_le_bytes());
            legacy.extend(part);
        }
        std::fs::write(b.path().join("current.snap"), &legacy).unwrap();
        let meta = SnapshotMeta::<u64, BasicNode> {
            snapshot_id: "7-0000abcd".into(),
            ..Default::default()
        };
        std::fs::write(
            b.path().join("current.meta"),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        let mut sm = StateMachine::new(index, b.path()).unwrap();
        assert!(!b.path().join("current.snap").exists());
        let mut current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, meta);
        let mut bytes = Vec::new();
        current.snapshot.read_to_end(&mut bytes).await.unwrap();
        assert!(snapfile::is_current(&mut bytes.as_slice()).unwrap());
    }
}
