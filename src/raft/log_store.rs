//! The Raft log and vote, in their own directory (`<db>/raft-log/`, format in
//! [`super::segments`]): append-only segment files, one `fdatasync` per group of
//! appends, and a metadata file for the vote and the purged log id.
//!
//! Every write runs on one writer thread, in order. Appended entries are readable at
//! once (from memory) and openraft is told they are durable only after their records
//! were written and the segment fsynced; appends queued while the writer was busy
//! share one fsync. A vote, a truncation and a purge are durable before their call
//! returns: a vote or an entry that openraft counts on survives a crash (double votes
//! or lost commits otherwise). The committed log id is optional state (openraft
//! re-learns it from the leader, and an older one is still correct): it is kept in
//! memory and written with the next vote or purge.
//!
//! Recent entries stay decoded in memory (every entry not yet durable, and the newest
//! durable ones up to [`MEM_BYTES`] of JSON), so the reads that follow an append —
//! replication to followers, applying committed entries — neither touch the disk nor
//! decode; older entries are read from their segment by offset. Memory for the rest is
//! one location per entry kept (the log is purged after each snapshot).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote,
};
use tokio::sync::oneshot;

use super::segments::{self, Meta};
use super::TypeConfig;

type StoreResult<T> = Result<T, StorageError<u64>>;

/// Decoded durable entries kept in memory, in bytes of their JSON.
const MEM_BYTES: usize = 8 << 20;
/// A segment takes no more appends once this long; the next group starts a new one.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Segments grow in zeroed chunks of this size, ahead of their records.
const ALLOCATE_BYTES: u64 = 4 << 20;

/// An entry kept in memory.
struct Cached {
    entry: Entry<TypeConfig>,
    bytes: usize,
    durable: bool,
}

/// Where an entry is on disk.
#[derive(Clone, Copy)]
struct Loc {
    log_id: LogId<u64>,
    /// First index of its segment.
    segment: u64,
    offset: u64,
    len: u32,
}

/// The state readers and the writer share.
#[derive(Default)]
struct Shared {
    /// Every durable entry above `meta.purged`, by index.
    locs: BTreeMap<u64, Loc>,
    /// Open segment files, by first index (readers keep a handle while they read).
    files: BTreeMap<u64, Arc<File>>,
    /// Entries not yet durable, and the newest durable ones.
    mem: BTreeMap<u64, Cached>,
    mem_bytes: usize,
    meta: Meta,
}

impl Shared {
    fn last_log_id(&self) -> Option<LogId<u64>> {
        let mem = self
            .mem
            .last_key_value()
            .map(|(_, c)| *c.entry.get_log_id());
        let disk = self.locs.last_key_value().map(|(_, l)| l.log_id);
        mem.max(disk).or(self.meta.purged)
    }

    /// Drops the oldest durable decoded entries beyond [`MEM_BYTES`].
    fn evict(&mut self) {
        while self.mem_bytes > MEM_BYTES {
            let Some(entry) = self.mem.first_entry() else {
                return;
            };
            if !entry.get().durable {
                return;
            }
            self.mem_bytes -= entry.remove().bytes;
        }
    }
}

/// The log store; cheap to clone (readers share the state).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Mutex<Shared>>,
    writer: mpsc::Sender<Op>,
}

/// A write for the writer thread.
enum Op {
    /// Entries (already in memory) to make durable, then `done` to call.
    Append {
        entries: Vec<(LogId<u64>, Vec<u8>)>,
        done: Done,
    },
    /// A durable write of its own (vote, truncation, purge), answered when done.
    Sync(SyncOp, oneshot::Sender<Result<(), AnyError>>),
}

/// What to call once appended entries are durable (or failed).
type Done = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// A write that is durable before its call returns.
enum SyncOp {
    Vote(Vote<u64>),
    /// Drop entries from this index on.
    Truncate(u64),
    /// Drop entries up to this log id, recorded as purged.
    Purge(LogId<u64>),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_err(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

impl LogStore {
    /// Opens (or creates) the log in the directory `dir`; a log of an earlier version
    /// (`dir` with the extension `.redb`) is migrated first.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Self::open_with(dir, SEGMENT_BYTES)
    }

    /// [`LogStore::open`], starting a new segment once one reaches `segment_bytes`.
    fn open_with(dir: &Path, segment_bytes: u64) -> anyhow::Result<Self> {
        let ctx = |e: std::io::Error| anyhow::anyhow!("opening Raft log {}: {e}", dir.display());
        let old = dir.with_extension("redb");
        if dir.exists() {
            if old.exists() {
                // A migration that stopped after its rename.
                std::fs::remove_file(&old).map_err(ctx)?;
            }
        } else if old.exists() {
            segments::migrate_redb(&old, dir)?;
        } else {
            std::fs::create_dir_all(dir).map_err(ctx)?;
            if let Some(parent) = dir.parent() {
                segments::sync_dir(parent).map_err(ctx)?;
            }
        }
        let mut shared = Shared {
            meta: segments::read_meta(dir).map_err(ctx)?,
            ..Default::default()
        };
        let purged = shared.meta.purged.map(|l| l.index);
        let list = segments::list_segments(dir).map_err(ctx)?;
        let mut current = None;
        for (i, &first) in list.iter().enumerate() {
            let path = segments::segment_path(dir, first);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(ctx)?;
            let mut gap = None;
            let (valid, torn) = segments::scan(&file, |found| {
                let index = found.log_id.index;
                if purged.is_some_and(|p| index <= p) {
                    return;
                }
                if let Some((&prev, _)) = shared.locs.last_key_value() {
                    if index != prev + 1 && gap.is_none() {
                        gap = Some((prev, index));
                    }
                }
                shared.locs.insert(
                    index,
                    Loc {
                        log_id: found.log_id,
                        segment: first,
                        offset: found.offset,
                        len: found.len,
                    },
                );
            })
            .map_err(ctx)?;
            if let Some((prev, next)) = gap {
                anyhow::bail!(
                    "Raft log {}: entry {next} follows entry {prev}",
                    path.display()
                );
            }
            if torn {
                if i + 1 < list.len() {
                    anyhow::bail!(
                        "Raft log {}: corrupt record at offset {valid}",
                        path.display()
                    );
                }
                // An append that never completed (never acknowledged).
                tracing::warn!(
                    "Raft log {}: cutting a torn record at offset {valid}",
                    path.display()
                );
            }
            if i + 1 == list.len() && file.metadata().map_err(ctx)?.len() > valid {
                // Cut the last segment where its records end: the zeros allocated ahead
                // go, and with them anything a crash left there (a torn group's later
                // records may have reached the disk before its first), which appends
                // must never land next to. The next append allocates again.
                file.set_len(valid).map_err(ctx)?;
                file.sync_all().map_err(ctx)?;
            }
            let allocated = file.metadata().map_err(ctx)?.len();
            let file = Arc::new(file);
            shared.files.insert(first, Arc::clone(&file));
            current = Some(Segment {
                first,
                file,
                len: valid,
                allocated,
            });
        }
        let shared = Arc::new(Mutex::new(shared));
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            dir: dir.to_path_buf(),
            shared: Arc::clone(&shared),
            current,
            segment_bytes,
        };
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer.run(&rx))?;
        Ok(LogStore { shared, writer: tx })
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
}

/// An entry to return: decoded already, or to read from a segment.
enum Slot {
    Mem(Entry<TypeConfig>),
    Disk(Arc<File>, u64, u32),
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let slots = {
            let shared = lock(&self.shared);
            let Some(last) = shared.last_log_id().map(|l| l.index) else {
                return Ok(Vec::new());
            };
            let start = match range.start_bound() {
                Bound::Included(&s) => s,
                Bound::Excluded(&s) => s.saturating_add(1),
                Bound::Unbounded => 0,
            };
            let end = match range.end_bound() {
                Bound::Included(&e) => e.min(last),
                Bound::Excluded(&0) => return Ok(Vec::new()),
                Bound::Excluded(&e) => (e - 1).min(last),
                Bound::Unbounded => last,
            };
            let mut slots = Vec::new();
            let mut index = start;
            while index <= end {
                if let Some(c) = shared.mem.get(&index) {
                    slots.push(Slot::Mem(c.entry.clone()));
                } else if let Some(loc) = shared.locs.get(&index) {
                    match shared.files.get(&loc.segment) {
                        Some(f) => slots.push(Slot::Disk(Arc::clone(f), loc.offset, loc.len)),
                        None => break,
                    }
                } else if slots.is_empty() {
                    // Purged: the range starts at the first entry still there.
                    let next = [
                        shared.locs.range(index..).next().map(|(i, _)| *i),
                        shared.mem.range(index..).next().map(|(i, _)| *i),
                    ]
                    .into_iter()
                    .flatten()
                    .min();
                    match next {
                        Some(next) if next <= end => {
                            index = next;
                            continue;
                        }
                        _ => break,
                    }
                } else {
                    break;
                }
                index += 1;
            }
            slots
        };
        if slots.iter().all(|s| matches!(s, Slot::Mem(_))) {
            return Ok(slots
                .into_iter()
                .filter_map(|s| match s {
                    Slot::Mem(e) => Some(e),
                    Slot::Disk(..) => None,
                })
                .collect());
        }
        tokio::task::spawn_blocking(move || {
            slots
                .into_iter()
                .map(|s| match s {
                    Slot::Mem(e) => Ok(e),
                    Slot::Disk(file, offset, len) => segments::read_entry(&file, offset, len),
                })
                .collect::<std::io::Result<Vec<_>>>()
        })
        .await
        .map_err(|e| StorageError::from(StorageIOError::read_logs(io_err(e))))?
        .map_err(|e| StorageError::from(StorageIOError::read_logs(io_err(e))))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let shared = lock(&self.shared);
        Ok(LogState {
            last_purged_log_id: shared.meta.purged,
            last_log_id: shared.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StoreResult<()> {
        self.sync_write(SyncOp::Vote(*vote), StorageIOError::write_vote)
            .await
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<u64>>> {
        Ok(lock(&self.shared).meta.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StoreResult<()> {
        // Optional state: written with the next vote or purge, never waited for.
        lock(&self.shared).meta.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<u64>>> {
        Ok(lock(&self.shared).meta.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.submit(
            entries.into_iter().collect(),
            Box::new(move |r| callback.log_io_completed(r)),
        )
        .map_err(|e| StorageError::from(StorageIOError::write_logs(e)))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        self.sync_write(SyncOp::Truncate(log_id.index), StorageIOError::write_logs)
            .await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        self.sync_write(SyncOp::Purge(log_id), StorageIOError::write_logs)
            .await
    }
}

impl LogStore {
    /// Makes `entries` readable at once and hands them to the writer, which calls
    /// `done` once they are durable.
    fn submit(&self, entries: Vec<Entry<TypeConfig>>, done: Done) -> Result<(), AnyError> {
        let encoded: Vec<(LogId<u64>, Vec<u8>)> = entries
            .iter()
            .map(|e| Ok((*e.get_log_id(), serde_json::to_vec(e)?)))
            .collect::<Result<_, serde_json::Error>>()
            .map_err(io_err)?;
        {
            // Readable from now on; durable when the writer calls back.
            let mut shared = lock(&self.shared);
            for (entry, (_, bytes)) in entries.into_iter().zip(&encoded) {
                shared.mem_bytes += bytes.len();
                let index = entry.get_log_id().index;
                let old = shared.mem.insert(
                    index,
                    Cached {
                        entry,
                        bytes: bytes.len(),
                        durable: false,
                    },
                );
                if let Some(old) = old {
                    shared.mem_bytes -= old.bytes;
                }
            }
        }
        let op = Op::Append {
            entries: encoded,
            done,
        };
        if let Err(mpsc::SendError(op)) = self.writer.send(op) {
            if let Op::Append { done, .. } = op {
                done(Err(std::io::Error::other("Raft log writer stopped")));
            }
            return Err(io_err("Raft log writer stopped"));
        }
        Ok(())
    }
}

#[path = "log_writer.rs"]
mod writer;
use writer::{Segment, Writer};

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
