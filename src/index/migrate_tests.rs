use super::*;
use crate::index::{BulkLoad, Command, Record, State};

/// A varied record for key number `i`: subvolume and plain locations, and now and
/// then a missing replica, a stale location, an owner, metadata, no md5.
pub(crate) fn record(i: u32) -> Record {
    let sv = |s: &str| format!("{s}/sv{:02X}", i % 7);
    Record {
        state: if i.is_multiple_of(5) {
            State::Unlinked
        } else {
            State::Live
        },
        volumes: vec![sv("10.0.0.1:3001"), "10.0.0.2:3001".into(), sv("h3:80")],
        size: u64::from(i) * 1000,
        md5: (!i.is_multiple_of(3)).then_some([i as u8; 16]),
        changed_ms: 1_700_000_000_000 + u64::from(i),
        missing: if i.is_multiple_of(11) {
            vec!["10.0.0.2:3001".into()]
        } else {
            Vec::new()
        },
        stale: if i.is_multiple_of(13) {
            vec![format!("old{}:1/sv01", i % 4)]
        } else {
            Vec::new()
        },
        owner: 0,
        meta: if i.is_multiple_of(17) {
            format!("{{\"n\":{i}}}").into_bytes()
        } else {
            Vec::new()
        },
        inline: None,
        gen: 0,
    }
}

pub(crate) fn key(i: u32) -> Vec<u8> {
    format!("/migrate/{i:06}").into_bytes()
}

/// A closed index of `n` records in the legacy encoding.
pub(crate) fn legacy_index(dir: &std::path::Path, n: u32) {
    let mut bulk = BulkLoad::create(dir, 1 << 20).unwrap().legacy().unwrap();
    let batch: Vec<_> = (0..n).map(|i| (key(i), record(i))).collect();
    bulk.append(&batch).unwrap();
    bulk.finish().unwrap();
}

/// Records stored in the legacy and in the compact encoding, in the current table.
pub(crate) fn encodings(index: &Index) -> (usize, usize) {
    let (_txn, table) = index.read_records().unwrap();
    let (mut legacy, mut compact) = (0, 0);
    for item in table.iter().unwrap() {
        let (_, v) = item.unwrap();
        match v.value()[0] {
            compact::VERSION_COMPACT => compact += 1,
            1..=5 => legacy += 1,
            other => panic!("version {other}"),
        }
    }
    (legacy, compact)
}

fn cursor(index: &Index) -> Option<Vec<u8>> {
    index.meta(shrink::COPY_CURSOR).unwrap()
}

fn assert_all_records(index: &Index, n: u32) {
    for i in 0..n {
        assert_eq!(index.get(&key(i)).unwrap(), Some(record(i)), "key {i}");
    }
}

#[tokio::test]
async fn migrates_in_batches_resumes_after_a_restart_and_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2500;
    legacy_index(dir.path(), n);
    let index = Index::open_with(dir.path(), false).unwrap();
    assert_eq!(encodings(&index), (n as usize, 0));
    assert!(!index.migration().compact);
    // Reads work at once, on legacy records.
    assert_all_records(&index, n);
    let counts = index.counts();
    let per_volume = index.volume_counts().unwrap();

    assert!(!index.migrate_batch(1000).unwrap());
    // The first 1000 are copied; the current table is as it was.
    assert_eq!(encodings(&index), (2500, 0));
    assert_eq!(cursor(&index), Some(key(999)));
    // A write in between is stored compact.
    index
        .apply(Command::Begin {
            key: key(n + 1),
            volumes: vec!["new:9/sv01".into()],
            now_ms: 5,
            owner: 0,
            replace: false,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(encodings(&index), (2500, 1));
    index.close();

    // Restarted: the cursor is where the last batch stopped, and the next batch goes on
    // from there.
    let index = Index::open_with(dir.path(), false).unwrap();
    assert!(!index.migration().compact);
    assert_eq!(cursor(&index), Some(key(999)));
    assert!(!index.migrate_batch(1000).unwrap());
    let status = index.migration();
    assert_eq!((status.examined, status.rewritten), (1000, 1000));
    assert_eq!(encodings(&index), (2500, 1));
    while !index.migrate_batch(1000).unwrap() {}
    let status = index.migration();
    assert!(status.compact);
    // The rest and the new key (copied as it is: compact already).
    assert_eq!(
        (status.examined, status.rewritten, status.corrupt),
        (1501, 1500, 0)
    );
    assert!(status.compaction_pending);
    assert_eq!(encodings(&index), (0, n as usize + 1));
    assert_eq!(cursor(&index), None);
    assert_all_records(&index, n);
    let mut after = counts;
    after.writing += 1;
    assert_eq!(index.counts(), after);
    let mut volumes_after = index.volume_counts().unwrap();
    volumes_after.remove("new:9");
    assert_eq!(volumes_after, per_volume);
    index.close();

    // Done is remembered: a reopened index starts no migration.
    let index = Index::open(dir.path()).unwrap();
    assert!(index.migration().compact);
    assert!(index.migrate_batch(10).unwrap());
    index.close();
}

#[tokio::test]
async fn the_background_thread_migrates_everything() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    legacy_index(dir.path(), n);
    let index = Index::open(dir.path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !index.migration().compact {
        assert!(Instant::now() < deadline, "{:?}", index.migration());
        // Reads go on meanwhile.
        assert_eq!(index.get(&key(7)).unwrap(), Some(record(7)));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(index.migration().rewritten, u64::from(n));
    assert_eq!(encodings(&index), (0, n as usize));
    assert_all_records(&index, n);
    // Closing stops nothing left running, and marks the index clean.
    index.close();
    assert!(dir.path().join(crate::index::CLEAN_MARKER).exists());
}

#[tokio::test]
async fn close_stops_a_running_migration() {
    let dir = tempfile::tempdir().unwrap();
    legacy_index(dir.path(), 5000);
    let index = Index::open(dir.path()).unwrap();
    index.close();
    assert!(dir.path().join(crate::index::CLEAN_MARKER).exists());
    // Whatever was done is kept; the rest is done by the next open.
    let index = Index::open_with(dir.path(), false).unwrap();
    while !index.migrate_batch(BATCH).unwrap() {}
    assert_all_records(&index, 5000);
}

#[tokio::test]
async fn snapshots_carry_the_volume_table_and_import_re_encodes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    // A legacy source: its snapshot holds legacy records; the import stores them
    // compact and is migrated.
    legacy_index(a.path(), 300);
    let legacy = Index::open_with(a.path(), false).unwrap();
    let mut snap = Vec::new();
    legacy.export(&mut snap, &[]).unwrap();
    let target = Index::open(b.path()).unwrap();
    // The target numbers volumes its own way before the import.
    let begin = Command::Begin {
        key: b"/other".to_vec(),
        volumes: vec!["h3:80".into(), "zz:1".into()],
        now_ms: 1,
        owner: 0,
        replace: false,
    };
    target.apply(begin).await.unwrap().unwrap();
    assert_eq!(target.import(&mut snap.as_slice(), &[]).unwrap(), 300);
    assert_eq!(encodings(&target), (0, 300));
    assert!(target.migration().compact);
    assert_all_records(&target, 300);

    // A compact snapshot from that index, into a third one numbering differently.
    let mut snap = Vec::new();
    target.export(&mut snap, &[]).unwrap();
    let third = Index::open(c.path()).unwrap();
    let begin = Command::Begin {
        key: b"/x".to_vec(),
        volumes: vec!["zz:1".into(), "old3:1/sv01".into()],
        now_ms: 1,
        owner: 0,
        replace: false,
    };
    third.apply(begin).await.unwrap().unwrap();
    assert_eq!(third.import(&mut snap.as_slice(), &[]).unwrap(), 300);
    assert_all_records(&third, 300);
    assert_eq!(third.get(b"/x").unwrap(), None);
    // A record naming an id the snapshot's table lacks is refused.
    let mut bad = Vec::new();
    let mut w = crate::index::snapfile::SnapWriter::new(&mut bad).unwrap();
    w.pair(b"/k", &[16, 2, 0, 0, 0, 1, 18]).unwrap();
    w.finish().unwrap();
    assert!(third.import(&mut bad.as_slice(), &[]).is_err());
    assert_all_records(&third, 300);
}
