//! openraft's own storage test suite (append, read back, truncate, purge, vote,
//! committed, apply, snapshots) against the log store and the index's state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

use super::LogStore;
use crate::index::Index;
use crate::raft::state_machine::StateMachine;
use crate::raft::TypeConfig;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let err = |e: anyhow::Error| {
            StorageError::from(openraft::StorageIOError::write_logs(
                openraft::AnyError::error(e),
            ))
        };
        let dir = tempfile::tempdir().map_err(|e| err(e.into()))?;
        let log = LogStore::open(&dir.path().join("raft-log")).map_err(err)?;
        let index = Index::open(&dir.path().join("index")).map_err(|e| err(e.into()))?;
        let sm = StateMachine::new(index, &dir.path().join("snapshots")).map_err(err)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

// The segment files themselves: reopening, torn appends, truncation and purge across
// segments, migration from the redb log of earlier versions.

use std::path::Path;

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::testing::{blank_ent, log_id};
use openraft::{Entry, RaftLogId, Vote};

use super::super::segments;

fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry<TypeConfig>> {
    range.map(|i| blank_ent::<TypeConfig>(term, 1, i)).collect()
}

/// Appends `entries` and waits until they are durable.
async fn append(log: &LogStore, entries: Vec<Entry<TypeConfig>>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    log.submit(
        entries,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )
    .expect("submit");
    rx.await.expect("writer answered").expect("append durable");
}

/// The (term, index) of every entry the log returns for `..`.
async fn all(log: &mut LogStore) -> Vec<(u64, u64)> {
    log.try_get_log_entries(..)
        .await
        .expect("read")
        .iter()
        .map(|e| (e.get_log_id().leader_id.term, e.get_log_id().index))
        .collect()
}

fn ids(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<(u64, u64)> {
    range.map(|i| (term, i)).collect()
}

/// Writes `bytes` at `offset` of the file at `path`, as a crash would have left them.
fn write_at(path: &Path, bytes: &[u8], offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

fn segment_count(dir: &Path) -> usize {
    segments::list_segments(dir).expect("list").len()
}

#[tokio::test]
async fn reopened_log_keeps_entries_vote_and_purge_and_reads_from_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft-log");
    {
        // Tiny segments: a new one for nearly every group.
        let mut log = LogStore::open_with(&dir, 100).unwrap();
        for start in (1..=30).step_by(3) {
            append(&log, entries(1, start..=start + 2)).await;
        }
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        log.save_committed(Some(log_id(1, 1, 20))).await.unwrap();
        assert!(segment_count(&dir) > 3);
        let before = segment_count(&dir);
        log.purge(log_id(1, 1, 10)).await.unwrap();
        assert!(segment_count(&dir) < before, "purged segments deleted");
        assert_eq!(all(&mut log).await, ids(1, 11..=30));
    }
    let mut log = LogStore::open_with(&dir, 100).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 10)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 30)));
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    // Read back from the files (nothing is in memory after a reopen).
    assert_eq!(all(&mut log).await, ids(1, 11..=30));
    let some = log.try_get_log_entries(14..17).await.unwrap();
    assert_eq!(some.len(), 3);
    assert_eq!(*some[0].get_log_id(), log_id(1, 1, 14));
    // Purging everything (a snapshot past the log's end), then appending after it.
    log.purge(log_id(1, 1, 40)).await.unwrap();
    assert_eq!(segment_count(&dir), 0);
    append(&log, entries(2, 41..=42)).await;
    drop(log);
    let mut log = LogStore::open_with(&dir, 100).unwrap();
    assert_eq!(all(&mut log).await, ids(2, 41..=42));
    assert_eq!(
        log.get_log_state().await.unwrap().last_purged_log_id,
        Some(log_id(1, 1, 40))
    );
}

/// A log holding entries 1..=5 of term 1 in its first segment; that segment's path and
/// where its records end.
async fn five_entries(dir: &Path) -> (std::path::PathBuf, u64) {
    {
        let log = LogStore::open(dir).unwrap();
        append(&log, entries(1, 1..=5)).await;
    }
    let first = segments::list_segments(dir).unwrap()[0];
    let path = segments::segment_path(dir, first);
    let file = std::fs::File::open(&path).unwrap();
    let (good, torn) = segments::scan(&file, |_| {}).unwrap();
    assert!(!torn);
    (path, good)
}

/// Opens the log after a crash left bytes past `good` in `path`: the segment must be cut
/// back to `good` with entries 1..=5 readable, and entries `more` appended then must be
/// all that follows them after another reopen.
async fn reopen_cuts_and_appends(
    dir: &Path,
    path: &Path,
    good: u64,
    more: std::ops::RangeInclusive<u64>,
) {
    let mut log = LogStore::open(dir).unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), good);
    assert_eq!(all(&mut log).await, ids(1, 1..=5));
    let last = *more.end();
    append(&log, entries(1, more)).await;
    drop(log);
    let mut log = LogStore::open(dir).unwrap();
    assert_eq!(all(&mut log).await, ids(1, 1..=last));
}

#[tokio::test]
async fn a_torn_append_is_cut_off_when_the_log_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft-log");
    let (path, good) = five_entries(&dir).await;
    // The segment is allocated ahead, in zeros after its records.
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        super::ALLOCATE_BYTES
    );
    // A crash in the middle of the next append: a record only partly written.
    let mut record = Vec::new();
    segments::encode_record(&[b'x'; 100], &mut record);
    record.truncate(40);
    write_at(&path, &record, good);
    reopen_cuts_and_appends(&dir, &path, good, 6..=7).await;
}

/// A crash in the middle of a group of two records can leave the second on disk and
/// the first still zeros. The open cuts the segment where its records end, so the
/// stray record is gone before appends land next to it: re-appending the first entry
/// alone (same bytes, same place) must not bring the second back.
#[tokio::test]
async fn a_stray_record_after_the_end_is_cut_off_when_the_log_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft-log");
    let (path, good) = five_entries(&dir).await;
    // Entries 6 and 7 as the writer would have written them; only 7 reached the disk.
    let encode = |e: &Entry<TypeConfig>| {
        let mut record = Vec::new();
        segments::encode_record(&serde_json::to_vec(e).unwrap(), &mut record);
        record
    };
    let six = encode(&entries(1, 6..=6)[0]);
    let seven = encode(&entries(1, 7..=7)[0]);
    write_at(&path, &seven, good + six.len() as u64);
    reopen_cuts_and_appends(&dir, &path, good, 6..=6).await;
}

#[tokio::test]
async fn a_corrupt_record_before_the_last_segment_fails_the_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft-log");
    {
        let log = LogStore::open_with(&dir, 1).unwrap();
        append(&log, entries(1, 1..=2)).await;
        append(&log, entries(1, 3..=4)).await;
    }
    assert_eq!(segment_count(&dir), 2);
    let path = segments::segment_path(&dir, 1);
    let (end, _) = segments::scan(&std::fs::File::open(&path).unwrap(), |_| {}).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    // The last byte of the last record's JSON.
    bytes[end as usize - 1] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let err = LogStore::open(&dir)
        .err()
        .expect("open refuses a corrupt log");
    assert!(err.to_string().contains("corrupt record"), "{err}");
}

#[tokio::test]
async fn truncation_across_segments_survives_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft-log");
    {
        let mut log = LogStore::open_with(&dir, 1).unwrap();
        for i in 1..=10 {
            append(&log, entries(1, i..=i)).await;
        }
        for i in 11..=12 {
            append(&log, entries(1, i..=i)).await;
        }
        assert_eq!(segment_count(&dir), 12);
        log.truncate(log_id(1, 1, 8)).await.unwrap();
        assert_eq!(segment_count(&dir), 7);
        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(log_id(1, 1, 7))
        );
        append(&log, entries(2, 8..=10)).await;
        assert_eq!(
            all(&mut log).await,
            [ids(1, 1..=7), ids(2, 8..=10)].concat()
        );
    }
    {
        // Cutting inside a segment: the next appends go on in it.
        let mut log = LogStore::open_with(&dir, 1 << 20).unwrap();
        assert_eq!(
            all(&mut log).await,
            [ids(1, 1..=7), ids(2, 8..=10)].concat()
        );
        append(&log, entries(2, 11..=14)).await;
        log.truncate(log_id(2, 1, 12)).await.unwrap();
        append(&log, entries(3, 12..=12)).await;
    }
    let mut log = LogStore::open(&dir).unwrap();
    assert_eq!(
        all(&mut log).await,
        [ids(1, 1..=7), ids(2, 8..=11), ids(3, 12..=12)].concat()
    );
}

#[tokio::test]
async fn a_redb_log_of_an_earlier_version_is_migrated() {
    use redb::TableDefinition;
    const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("raft-log.redb");
    {
        let db = redb::Database::create(&old).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut log = txn.open_table(LOG).unwrap();
            for e in entries(4, 6..=9) {
                log.insert(
                    e.get_log_id().index,
                    serde_json::to_vec(&e).unwrap().as_slice(),
                )
                .unwrap();
            }
            let mut meta = txn.open_table(META).unwrap();
            let vote = serde_json::to_vec(&Vote::new(4, 1)).unwrap();
            meta.insert("vote", vote.as_slice()).unwrap();
            let purged = serde_json::to_vec(&log_id(3, 1, 5)).unwrap();
            meta.insert("last_purged", purged.as_slice()).unwrap();
            let committed = serde_json::to_vec(&Some(log_id(4, 1, 8))).unwrap();
            meta.insert("committed", committed.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let dir = tmp.path().join("raft-log");
    let mut log = LogStore::open(&dir).unwrap();
    assert!(!old.exists(), "the old log is removed once copied");
    assert_eq!(all(&mut log).await, ids(4, 6..=9));
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(4, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(4, 1, 8)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(4, 1, 9)));
}
