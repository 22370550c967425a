//! Unit tests of `mod.rs`.
use super::*;

#[tokio::test]
async fn commands_are_durable_and_listed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let index = Index::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..100u32 {
            let index = index.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("/k/{i:03}").into_bytes();
                index
                    .apply(Command::Begin {
                        key: key.clone(),
                        volumes: vec!["a:1".into()],
                        now_ms: 1,
                        owner: 0,
                        replace: false,
                    })
                    .await
                    .unwrap()
                    .unwrap();
                if i % 2 == 0 {
                    index
                        .apply(Command::Commit {
                            gen: 0,
                            key,
                            size: i.into(),
                            md5: None,
                            missing: Vec::new(),
                            now_ms: 2,
                            owner: 0,
                            meta: Vec::new(),
                        })
                        .await
                        .unwrap()
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        index.close();
    }
    let index = Index::open(dir.path()).unwrap();
    let live = State::Live;
    let page = index.scan(b"/k/", None, live, 3, 10).unwrap();
    assert_eq!(page.keys, [b"/k/000", b"/k/002", b"/k/004"]);
    assert_eq!(page.next.as_deref(), Some(&b"/k/006"[..]));
    let page = index.scan(b"/k/", Some(b"/k/095"), live, 10, 10).unwrap();
    assert_eq!(page.keys, [b"/k/096", b"/k/098"]);
    assert_eq!(page.next, None);
    assert_eq!(index.get(b"/k/042").unwrap().unwrap().size, 42);
    assert_eq!(index.get(b"/k/043").unwrap().unwrap().state, State::Writing);
    let c = index.counts();
    assert_eq!(
        (c.live, c.writing, c.bytes),
        (50, 50, (0..100).step_by(2).sum())
    );
    assert!(!index.recovered());
}

#[test]
fn clean_shutdown_is_remembered() {
    let dir = tempfile::tempdir().unwrap();
    // A new index was not "recovered"; a cleanly closed one neither.
    let index = Index::open(dir.path()).unwrap();
    assert!(!index.recovered());
    index.close();
    assert!(dir.path().join(CLEAN_MARKER).exists());
    let index = Index::open(dir.path()).unwrap();
    assert!(!index.recovered());
    assert!(!dir.path().join(CLEAN_MARKER).exists());
    // Dropped without close (as after kill -9): the next open says so. (The writer
    // thread lets go of the file shortly after the last handle is dropped.)
    drop(index);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let index = loop {
        match Index::open(dir.path()) {
            Ok(index) => break index,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(matches!(
                    e,
                    IndexError::Open {
                        source: redb::Error::DatabaseAlreadyOpen,
                        ..
                    }
                ));
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(index.recovered());
    index.close();
    assert!(!Index::open(dir.path()).unwrap().recovered());
}

/// One command that cannot be applied (here: its stored record is corrupt) fails
/// alone; the others of its batch commit.
#[test]
fn a_failing_command_does_not_fail_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    {
        let txn = index.db.begin_write().unwrap();
        txn.open_table(KEYS)
            .unwrap()
            .insert(&b"/bad"[..], &b"garbage"[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let begin = |key: &[u8]| Command::Begin {
        key: key.to_vec(),
        volumes: vec!["a:1".into()],
        now_ms: 1,
        owner: 0,
        replace: false,
    };
    let mut answers = Vec::new();
    let mut batch: Vec<Job> = [&b"/one"[..], b"/bad", b"/two"]
        .into_iter()
        .map(|key| {
            let (reply, rx) = oneshot::channel();
            answers.push(rx);
            Job {
                cmd: begin(key),
                reply,
            }
        })
        .collect();
    commit_batch(&index.db, &index.vt, &index.counts, &mut batch);
    let answers: Vec<_> = answers
        .into_iter()
        .map(|mut rx| rx.try_recv().unwrap())
        .collect();
    assert!(matches!(answers[0], Ok(Ok(Some(_)))));
    assert!(matches!(answers[1], Err(IndexError::Corrupt { .. })));
    assert!(matches!(answers[2], Ok(Ok(Some(_)))));
    assert_eq!(index.get(b"/one").unwrap().unwrap().state, State::Writing);
    assert_eq!(index.get(b"/two").unwrap().unwrap().state, State::Writing);
    assert_eq!(index.counts().writing, 2);
}

#[tokio::test]
async fn replicas_are_counted_per_volume() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let key = b"/v".to_vec();
    let run = |cmd| {
        let index = index.clone();
        async move { index.apply(cmd).await.unwrap().unwrap() }
    };
    run(Command::Begin {
        key: key.clone(),
        volumes: vec!["a:1/sv03".into(), "b:2".into()],
        now_ms: 1,
        owner: 0,
        replace: false,
    })
    .await;
    assert!(
        index.volume_counts().unwrap().is_empty(),
        "intents hold nothing"
    );
    run(Command::Commit {
        gen: 0,
        key: key.clone(),
        size: 10,
        md5: None,
        missing: vec!["b:2".into()],
        now_ms: 2,
        owner: 0,
        meta: Vec::new(),
    })
    .await;
    let held = index.volume_counts().unwrap();
    assert_eq!(held["a:1"], VolumeCounts { keys: 1, bytes: 10 });
    assert_eq!(held.get("b:2").copied().unwrap_or_default().keys, 0);
    run(Command::Completed {
        gen: 0,
        key: key.clone(),
        location: "b:2".into(),
    })
    .await;
    assert_eq!(index.volume_counts().unwrap()["b:2"].keys, 1);
    run(Command::BeginDelete {
        key,
        protect: false,
        now_ms: 3,
        owner: 0,
    })
    .await;
    let held = index.volume_counts().unwrap();
    assert_eq!(held["a:1"], VolumeCounts::default());
    assert_eq!(held["b:2"], VolumeCounts::default());
}

/// Which steps of a key's life are fsynced when answered (`needs_durability`, and
/// `RecordMap::must_persist`): only the ones that change what a reader sees, or whose
/// loss would bring back a record naming files that may be deleted.
#[tokio::test]
async fn only_invisible_changes_skip_the_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let key = b"/k".to_vec();
    // Applies `cmd` alone in a batch: its answer, and whether the batch was synced.
    let run = |cmd: Command| {
        let (reply, _rx) = oneshot::channel();
        let job = [Job { cmd, reply }];
        let before = *index.counts.lock().unwrap();
        let (mut results, _, durable) = apply_batch(&index.db, &index.vt, before, &job).unwrap();
        (results.remove(0), durable)
    };
    let begin = |replace| Command::Begin {
        key: key.clone(),
        volumes: vec!["a:1".into()],
        now_ms: 1,
        owner: 0,
        replace,
    };
    let commit = |gen| Command::Commit {
        gen,
        key: key.clone(),
        size: 1,
        md5: None,
        missing: Vec::new(),
        now_ms: 2,
        owner: 0,
        meta: Vec::new(),
    };
    let remove = |key: Vec<u8>| Command::Remove {
        key,
        expect: State::Deleting,
        owner: 0,
    };
    let mut gen = 0;
    let mut step = |what: &str, cmd: Command, want: bool| {
        let (applied, durable) = run(cmd.clone());
        assert_eq!(durable, want, "{what}: {applied:?}");
        if let (Command::Begin { .. }, Ok(Some(intent))) = (&cmd, &applied) {
            gen = intent.gen;
        }
        gen
    };
    step("begin of an absent key", begin(false), false);
    let g = step("begin over an intent", begin(false), false);
    step("commit", commit(g), true);
    step("refused begin over a live value", begin(false), false);
    let g = step("begin of an overwrite", begin(true), false);
    step("commit of the overwrite", commit(g), true);
    let unlink = Command::Unlink {
        key: key.clone(),
        now_ms: 3,
    };
    step("unlink", unlink, true);
    let g = step("begin over an unlinked value", begin(false), true);
    step("commit over it", commit(g), true);
    let delete = Command::BeginDelete {
        key: key.clone(),
        protect: false,
        now_ms: 4,
        owner: 0,
    };
    step("begin delete", delete, true);
    step("remove of the deleting record", remove(key.clone()), false);
    step(
        "refused remove of an absent key",
        remove(key.clone()),
        false,
    );
    for retired in [0, 1] {
        let (applied, durable) = run(remove(crate::index::gen_key(&key, retired)));
        assert!(
            applied.is_ok() && !durable,
            "retired {retired}: {applied:?}"
        );
    }
    let remove_live = Command::Remove {
        key: b"/live".to_vec(),
        expect: State::Live,
        owner: 0,
    };
    crate::index::testing::put_live(&index, b"/live", false).await;
    let (applied, durable) = run(remove_live);
    assert!(
        applied.is_ok() && durable,
        "remove of a live record: {applied:?}"
    );
    index.close();
}
