use super::*;
use crate::index::{Command, Index};

fn record(state: State, changed_ms: u64) -> Record {
    Record {
        state,
        volumes: vec!["a:1".into()],
        size: 1,
        md5: None,
        changed_ms,
        missing: Vec::new(),
        stale: Vec::new(),
        owner: 0,
        meta: Vec::new(),
        inline: None,
        gen: 0,
    }
}

fn version(ms: u64, site: &str, applied_ms: u64) -> Version {
    Version {
        ms,
        site: site.into(),
        applied_ms,
        pending: false,
    }
}

#[test]
fn origin_is_remote_only_while_the_record_is_the_one_applied() {
    let live = record(State::Live, 50);
    let remote = version(10, "b", 50);
    let o = origin(Some(&live), Some(&remote)).unwrap();
    assert_eq!((o.ms, o.site.as_str(), o.deleted), (10, "b", false));
    // Changed locally since: the record's own time, this site.
    let newer = record(State::Unlinked, 60);
    let o = origin(Some(&newer), Some(&remote)).unwrap();
    assert_eq!((o.ms, o.site.as_str()), (60, ""));
    // Deleted: the tombstone.
    let o = origin(None, Some(&version(70, "", 0))).unwrap();
    assert_eq!((o.ms, o.deleted), (70, true));
    let deleting = record(State::Deleting, 80);
    assert!(origin(Some(&deleting), Some(&remote)).unwrap().deleted);
    // A pending version says nothing yet.
    let pending = Version {
        pending: true,
        ..remote
    };
    assert_eq!(origin(None, Some(&pending)), None);
    assert_eq!(origin(None, None), None);
}

async fn put(index: &Index, key: &[u8], ms: u64) {
    let begin = Command::Begin {
        key: key.to_vec(),
        volumes: vec!["a:1".into()],
        now_ms: ms,
        owner: 0,
        replace: true,
    };
    let intent = index.apply(begin).await.unwrap().unwrap();
    let commit = Command::Commit {
        gen: intent.map_or(0, |i| i.gen),
        key: key.to_vec(),
        size: 1,
        md5: None,
        missing: Vec::new(),
        now_ms: ms,
        owner: 0,
        meta: Vec::new(),
    };
    index.apply(commit).await.unwrap().unwrap();
}

async fn feed(index: &Index, f: FeedCommand) {
    index.apply(Command::Feed(f)).await.unwrap().unwrap();
}

#[tokio::test]
async fn feed_records_local_changes_only_while_a_target_exists() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    put(&index, b"/before", 1).await;
    assert!(index.feed_after(0, 10).unwrap().is_empty());
    let target = "http://b".to_string();
    feed(
        &index,
        FeedCommand::AddTarget {
            target: target.clone(),
        },
    )
    .await;
    assert_eq!(index.feed_position(&target).unwrap(), (0, Some(0)));
    put(&index, b"/a", 5).await;
    let del = Command::BeginDelete {
        key: b"/before".to_vec(),
        protect: false,
        now_ms: 6,
        owner: 0,
    };
    index.apply(del).await.unwrap().unwrap();
    let entries = index.feed_after(0, 10).unwrap();
    let keys: Vec<_> = entries
        .iter()
        .map(|e| (e.seq, e.ms, e.key.clone()))
        .collect();
    assert_eq!(
        keys,
        vec![(1, 5, b"/a".to_vec()), (2, 6, b"/before".to_vec())]
    );
    // A local delete leaves a tombstone.
    let o = index.site_origin(b"/before").unwrap().unwrap();
    assert_eq!((o.ms, o.site.as_str(), o.deleted), (6, "", true));

    // A remote change announced by Expect is recorded as a version, not fed.
    let remote = version(3, "other", 0);
    let expect = FeedCommand::Expect {
        key: b"/r".to_vec(),
        version: remote,
    };
    feed(&index, expect).await;
    put(&index, b"/r", 9).await;
    assert_eq!(index.feed_after(2, 10).unwrap(), vec![]);
    let o = index.site_origin(b"/r").unwrap().unwrap();
    assert_eq!((o.ms, o.site.as_str()), (3, "other"));
    // A later local write of it is local again, and fed.
    put(&index, b"/r", 12).await;
    assert_eq!(index.site_origin(b"/r").unwrap().unwrap().site, "");
    assert_eq!(index.feed_after(2, 10).unwrap().len(), 1);

    // A failed overwrite rolled back leaves the key as it was: nothing is fed.
    let overwrite = Command::Begin {
        key: b"/r".to_vec(),
        volumes: vec!["a:1".into()],
        now_ms: 13,
        owner: 0,
        replace: true,
    };
    let intent = index.apply(overwrite).await.unwrap().unwrap().unwrap();
    let rollback = Command::Remove {
        key: crate::index::gen_key(b"/r", intent.gen),
        expect: State::Writing,
        owner: 0,
    };
    index.apply(rollback).await.unwrap().unwrap();
    assert_eq!(index.feed_after(3, 10).unwrap(), vec![]);

    // A failed write of an absent key rolled back: fed, with a tombstone.
    let begin = Command::Begin {
        key: b"/failed".to_vec(),
        volumes: vec!["a:1".into()],
        now_ms: 14,
        owner: 0,
        replace: false,
    };
    index.apply(begin).await.unwrap().unwrap();
    let rollback = Command::Remove {
        key: b"/failed".to_vec(),
        expect: State::Writing,
        owner: 0,
    };
    index.apply(rollback).await.unwrap().unwrap();
    let last = index.feed_after(3, 10).unwrap();
    assert_eq!((last.len(), last[0].ms), (1, 14));
    assert!(index.site_origin(b"/failed").unwrap().unwrap().deleted);

    // Advancing trims what every target acknowledged; the seq keeps counting.
    feed(
        &index,
        FeedCommand::Advance {
            target: target.clone(),
            seq: 2,
        },
    )
    .await;
    assert_eq!(index.feed_after(0, 10).unwrap()[0].seq, 3);
    feed(
        &index,
        FeedCommand::Advance {
            target: target.clone(),
            seq: 1,
        },
    )
    .await;
    assert_eq!(index.feed_position(&target).unwrap(), (4, Some(2)));
    feed(
        &index,
        FeedCommand::DropTarget {
            target: target.clone(),
        },
    )
    .await;
    assert!(index.feed_after(0, 10).unwrap().is_empty());
    put(&index, b"/after", 20).await;
    assert!(index.feed_after(0, 10).unwrap().is_empty());
    assert_eq!(index.feed_targets().unwrap(), Vec::<String>::new());
    index.close();
}
