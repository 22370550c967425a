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
        n: 0,
        applied_ms,
        pending: false,
    }
}

fn hlc(ms: u64, n: u32, site: &str) -> Hlc {
    Hlc {
        ms,
        n,
        site: site.into(),
    }
}

#[test]
fn origin_is_remote_only_while_the_record_is_the_one_applied() {
    let live = record(State::Live, 50);
    let remote = version(10, "b", 50);
    let o = origin(Some(&live), Some(&remote)).unwrap();
    assert_eq!((o.version, o.deleted), (hlc(10, 0, "b"), false));
    // Changed since without a version (nothing replicated): the record's own time.
    let newer = record(State::Unlinked, 60);
    let o = origin(Some(&newer), Some(&remote)).unwrap();
    assert_eq!(o.version, hlc(60, 0, ""));
    // Deleted: the tombstone.
    let o = origin(None, Some(&version(70, "", 0))).unwrap();
    assert_eq!((o.version.ms, o.deleted), (70, true));
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

/// A replacing write of `key` as another site's change of version `v`.
async fn remote_put(index: &Index, key: &[u8], ms: u64, v: Hlc) -> Applied {
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
        size: 2,
        md5: None,
        missing: Vec::new(),
        now_ms: ms,
        owner: 0,
        meta: Vec::new(),
    };
    let remote = Command::Remote {
        key: key.to_vec(),
        origin: v,
        cmd: Some(Box::new(commit)),
    };
    index.apply(remote).await.unwrap()
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
    assert_eq!((o.version, o.deleted), (hlc(6, 0, ""), true));

    // A remote change is recorded with its version, not fed.
    remote_put(&index, b"/r", 9, hlc(3, 0, "other"))
        .await
        .unwrap();
    assert_eq!(index.feed_after(2, 10).unwrap(), vec![]);
    let o = index.site_origin(b"/r").unwrap().unwrap();
    assert_eq!(o.version, hlc(3, 0, "other"));
    // A later local write of it is local again, and fed.
    put(&index, b"/r", 12).await;
    assert_eq!(index.site_origin(b"/r").unwrap().unwrap().version.site, "");
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

async fn replicating(dir: &std::path::Path) -> Index {
    let index = Index::open(dir).unwrap();
    let id = "a".repeat(16);
    feed(&index, FeedCommand::SetSiteId { id }).await;
    let add = FeedCommand::AddTarget {
        target: "http://b".into(),
    };
    feed(&index, add).await;
    index
}

#[tokio::test]
async fn a_local_write_after_a_remote_one_from_a_fast_clock_wins() {
    let dir = tempfile::tempdir().unwrap();
    let index = replicating(dir.path()).await;
    // Site b's clock runs 60 s ahead: its change carries a version a minute ahead.
    let theirs = hlc(160_000, 0, &"b".repeat(16));
    remote_put(&index, b"/k", 100_000, theirs.clone())
        .await
        .unwrap();
    put(&index, b"/k", 100_500).await;
    let mine = index.site_origin(b"/k").unwrap().unwrap().version;
    assert_eq!(mine, hlc(160_000, 1, ""));
    // Shipped back, b applies it; b's own change is now superseded here.
    assert_eq!(
        remote_put(&index, b"/k", 100_600, theirs).await,
        Err(Rejection::Superseded)
    );
    // The clock stays ahead for every key, not only this one.
    put(&index, b"/other", 100_700).await;
    let other = index.site_origin(b"/other").unwrap().unwrap().version;
    assert_eq!(other, hlc(160_000, 2, ""));
    index.close();
}

#[tokio::test]
async fn a_remote_change_that_loses_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let index = replicating(dir.path()).await;
    put(&index, b"/k", 500).await;
    let before = index.get(b"/k").unwrap().unwrap();
    // Older; and the same time and counter from a smaller site id.
    for v in [hlc(400, 9, "b"), hlc(500, 0, "0")] {
        assert_eq!(
            remote_put(&index, b"/k", 600, v).await,
            Err(Rejection::Superseded)
        );
        assert_eq!(index.get(b"/k").unwrap().unwrap(), before);
    }
    // Same time and counter from a larger site id: it wins.
    remote_put(&index, b"/k", 700, hlc(500, 0, "b"))
        .await
        .unwrap();
    assert_eq!(index.get(b"/k").unwrap().unwrap().size, 2);
    index.close();
}

#[tokio::test]
async fn a_remote_delete_of_an_absent_key_is_a_tombstone_older_writes_cannot_pass() {
    let dir = tempfile::tempdir().unwrap();
    let index = replicating(dir.path()).await;
    let tomb = |v| Command::Remote {
        key: b"/gone".to_vec(),
        origin: v,
        cmd: None,
    };
    index.apply(tomb(hlc(900, 0, "b"))).await.unwrap().unwrap();
    let o = index.site_origin(b"/gone").unwrap().unwrap();
    assert_eq!((o.version, o.deleted), (hlc(900, 0, "b"), true));
    assert_eq!(
        remote_put(&index, b"/gone", 1000, hlc(899, 5, "c")).await,
        Err(Rejection::Superseded)
    );
    assert_eq!(index.get(b"/gone").unwrap(), None);
    // A local write after it is above it, whatever the local wall clock says.
    put(&index, b"/gone", 10).await;
    let o = index.site_origin(b"/gone").unwrap().unwrap();
    assert_eq!((o.version, o.deleted), (hlc(900, 1, ""), false));
    // A tombstone over a value held here is refused: that takes a delete.
    assert_eq!(
        index.apply(tomb(hlc(2000, 0, "b"))).await.unwrap(),
        Err(Rejection::Changed)
    );
    index.close();
}

#[tokio::test]
async fn a_remote_unlink_of_the_same_version_unlinks_the_value_it_follows() {
    let dir = tempfile::tempdir().unwrap();
    let index = replicating(dir.path()).await;
    let v = hlc(50, 0, "b");
    remote_put(&index, b"/u", 60, v.clone()).await.unwrap();
    let unlink = |v: Hlc| Command::Remote {
        key: b"/u".to_vec(),
        origin: v,
        cmd: Some(Box::new(Command::Unlink {
            key: b"/u".to_vec(),
            now_ms: 70,
        })),
    };
    index.apply(unlink(v.clone())).await.unwrap().unwrap();
    assert_eq!(index.get(b"/u").unwrap().unwrap().state, State::Unlinked);
    let o = index.site_origin(b"/u").unwrap().unwrap();
    assert_eq!((o.version, o.deleted), (v.clone(), false));
    // Once unlinked, the same version again changes nothing.
    assert_eq!(
        index.apply(unlink(v)).await.unwrap(),
        Err(Rejection::Superseded)
    );
    assert_eq!(index.feed_after(0, 10).unwrap(), vec![]);
    index.close();
}
