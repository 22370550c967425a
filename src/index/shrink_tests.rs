use std::collections::BTreeMap;
use std::path::Path;

use crate::index::migrate::tests::{key, legacy_index, record};
use crate::index::testing::put_live;
use crate::index::{BulkLoad, Command, Index, Record, State, MIGRATION_BATCH};

fn file_size(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("index.redb")).unwrap().len()
}

/// Every record of `index`, read through its public walk.
fn contents(index: &Index) -> BTreeMap<Vec<u8>, Record> {
    let mut all = BTreeMap::new();
    index
        .walk(None, |k, r| {
            all.insert(k.to_vec(), r);
            true
        })
        .unwrap();
    all
}

/// Copies the index files of `from` into a new directory, as a crash would leave
/// them between two transactions (every commit here is durable).
fn crash_copy(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    std::fs::copy(from.join("index.redb"), to.path().join("index.redb")).unwrap();
    to
}

fn migrate_all(index: &Index) {
    while !index.migrate_batch(MIGRATION_BATCH).unwrap() {}
}

/// After the migration and one restart, a legacy index's file is the size of a
/// bulk-loaded compact index of the same records, and every record reads the same.
#[tokio::test]
async fn a_migrated_index_shrinks_to_the_bulk_loaded_size() {
    let n = 40_000;
    let (legacy, bulk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    legacy_index(legacy.path(), n);
    let mut load = BulkLoad::create(bulk.path(), 1 << 20).unwrap();
    let batch: Vec<_> = (0..n).map(|i| (key(i), record(i))).collect();
    load.append(&batch).unwrap();
    load.finish().unwrap();
    let (legacy_bytes, compact_bytes) = (file_size(legacy.path()), file_size(bulk.path()));

    let index = Index::open_with(legacy.path(), false).unwrap();
    let before = contents(&index);
    migrate_all(&index);
    assert!(index.migration().compaction_pending);
    assert_eq!(contents(&index), before);
    index.close();
    // The next open returns the old table's pages to the file system.
    let index = Index::open_with(legacy.path(), false).unwrap();
    let at_open = file_size(legacy.path());
    assert!(!index.migration().compaction_pending);
    assert!(index.migration().compact);
    assert_eq!(contents(&index), before);
    for i in (0..n).step_by(997) {
        assert_eq!(index.get(&key(i)).unwrap(), Some(record(i)));
    }
    index.close();
    let shrunk = file_size(legacy.path());
    eprintln!(
        "legacy {legacy_bytes} B, migrated {shrunk} B, bulk-loaded compact {compact_bytes} B"
    );
    assert!(shrunk < legacy_bytes, "{shrunk} vs legacy {legacy_bytes}");
    // Margin: 10 % (redb allocates in regions, and a write behind the copy's cursor
    // splits a leaf). Measured after the open (what a server runs on) and the close.
    for size in [at_open, shrunk] {
        assert!(
            size <= compact_bytes + compact_bytes / 10,
            "migrated {size} B vs bulk-loaded {compact_bytes} B"
        );
    }
}

/// Writes and deletes during the copy, behind and ahead of its cursor, are all there
/// (or gone) after the swap.
#[tokio::test]
async fn writes_during_the_copy_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    legacy_index(dir.path(), n);
    let index = Index::open_with(dir.path(), false).unwrap();
    assert!(!index.migrate_batch(1000).unwrap());
    // Behind the cursor (key 999) and ahead of it: new keys, overwrites, deletes.
    for k in [&b"/migrate/000010x"[..], b"/migrate/002000x", b"/a", b"/z"] {
        put_live(&index, k, false).await;
    }
    for i in [5, 998, 999, 1000, 2999] {
        // Overwrite (unlink) and delete (remove an unlinked key... by its states).
        index
            .apply(Command::Unlink {
                key: key(i),
                now_ms: 9,
            })
            .await
            .unwrap()
            .ok();
    }
    for i in [7, 1500] {
        let begin = Command::BeginDelete {
            key: key(i),
            protect: false,
            now_ms: 10,
            owner: 0,
        };
        index.apply(begin).await.unwrap().unwrap();
        let remove = Command::Remove {
            key: key(i),
            expect: State::Deleting,
            owner: 0,
        };
        index.apply(remove).await.unwrap().unwrap();
    }
    assert!(!index.migrate_batch(1000).unwrap());
    // Between two batches again: the key just behind the new cursor.
    put_live(&index, b"/migrate/001998y", true).await;
    let expected = contents(&index);
    let counts = index.counts();
    assert_eq!(expected.len(), n as usize + 5 - 2);
    assert!(!expected.contains_key(&key(7)) && !expected.contains_key(&key(1500)));
    migrate_all(&index);
    assert_eq!(contents(&index), expected);
    assert_eq!(index.counts(), counts);
    // Writes after the swap go to the packed table.
    put_live(&index, b"/after", false).await;
    assert!(index.get(b"/after").unwrap().is_some());
    index.close();
    let index = Index::open(dir.path()).unwrap();
    let mut with_after = expected;
    with_after.insert(b"/after".to_vec(), index.get(b"/after").unwrap().unwrap());
    assert_eq!(contents(&index), with_after);
    index.close();
}

/// A crash between any two transactions of the copy — before the first batch, between
/// batches with writes in between, right after the swap — leaves an index that opens,
/// reads every record as it was, and finishes the migration.
#[tokio::test]
async fn a_crash_at_any_step_loses_nothing_and_the_migration_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2500;
    legacy_index(dir.path(), n);
    let index = Index::open_with(dir.path(), false).unwrap();
    let mut crashes = vec![(crash_copy(dir.path()), contents(&index))];
    for step in 0..3u32 {
        assert!(!index.migrate_batch(700).unwrap());
        crashes.push((crash_copy(dir.path()), contents(&index)));
        let k = format!("/migrate/{:06}w", step * 700 + 3).into_bytes();
        put_live(&index, &k, step == 1).await;
        crashes.push((crash_copy(dir.path()), contents(&index)));
    }
    migrate_all(&index);
    crashes.push((crash_copy(dir.path()), contents(&index)));
    drop(index); // no close: no clean marker either
    for (i, (copy, expected)) in crashes.iter().enumerate() {
        let index = Index::open(copy.path()).unwrap();
        assert!(index.recovered(), "crash {i}");
        assert_eq!(
            contents(&index),
            *expected,
            "crash {i}: right after opening"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !index.migration().compact {
            assert!(std::time::Instant::now() < deadline, "crash {i}");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(contents(&index), *expected, "crash {i}: migrated");
        index.close();
        let index = Index::open(copy.path()).unwrap();
        assert!(index.migration().compact && !index.migration().compaction_pending);
        assert_eq!(contents(&index), *expected, "crash {i}: reopened");
        index.close();
    }
}

/// A snapshot install during the copy replaces it; one after the swap writes the
/// plain table again; both read back and stay migrated.
#[tokio::test]
async fn imports_during_and_after_the_copy() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    legacy_index(a.path(), 1200);
    let source = Index::open_with(a.path(), false).unwrap();
    let mut snap = Vec::new();
    source.export(&mut snap, &[]).unwrap();
    let expected = contents(&source);

    legacy_index(b.path(), 900);
    let target = Index::open_with(b.path(), false).unwrap();
    assert!(!target.migrate_batch(300).unwrap());
    assert_eq!(target.import(&mut snap.as_slice(), &[]).unwrap(), 1200);
    assert!(
        target.migrate_batch(300).unwrap(),
        "an import ends the copy"
    );
    assert_eq!(contents(&target), expected);
    // The source, migrated and swapped, exports and imports alike.
    migrate_all(&source);
    let mut snap2 = Vec::new();
    source.export(&mut snap2, &[]).unwrap();
    assert_eq!(contents(&source), expected);
    assert_eq!(source.import(&mut snap2.as_slice(), &[]).unwrap(), 1200);
    assert_eq!(contents(&source), expected);
    put_live(&source, b"/new", false).await;
    source.close();
    target.close();
    let source = Index::open(a.path()).unwrap();
    assert_eq!(contents(&source).len(), 1201);
    source.close();
}

/// Online compaction gives up, changing nothing, while a read transaction stays open
/// past its wait, and compacts once it is closed; writes sent while it waits are
/// applied, and every record reads the same afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_compaction_waits_for_open_transactions() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    for i in 0..200 {
        put_live(&index, &key(i), i % 2 == 0).await;
    }
    let before = contents(&index);
    // A reader holding its transaction open (a walk paused inside its visit).
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let reader = {
        let index = index.clone();
        std::thread::spawn(move || {
            index
                .walk(None, |_, _| {
                    entered_tx.send(()).unwrap();
                    released.recv().unwrap();
                    false
                })
                .unwrap();
        })
    };
    entered.recv().unwrap();
    let busy = {
        let index = index.clone();
        tokio::task::spawn_blocking(move || index.compact_online(Duration::from_millis(300)))
    };
    // Writes go on while the compaction waits: its gate opens between slices.
    put_live(&index, &key(1000), false).await;
    assert!(matches!(
        busy.await.unwrap(),
        Err(crate::index::CompactError::Busy(_))
    ));
    release.send(()).unwrap();
    reader.join().unwrap();
    let compacting = {
        let index = index.clone();
        tokio::task::spawn_blocking(move || index.compact_online(Duration::from_secs(5)))
    };
    put_live(&index, &key(1001), false).await;
    let done = compacting.await.unwrap().unwrap();
    assert!(done.after_bytes <= done.before_bytes, "{done:?}");
    let after = contents(&index);
    assert_eq!(after.len(), before.len() + 2);
    for (k, r) in &before {
        assert_eq!(after.get(k), Some(r));
    }
}
