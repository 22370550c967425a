//! Unit tests of `command.rs`.
use super::*;
use std::collections::BTreeMap;
use std::convert::Infallible;

impl RecordMap for BTreeMap<Vec<u8>, Record> {
    type Error = Infallible;
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, Infallible> {
        Ok(BTreeMap::get(self, key).cloned())
    }
    fn put(&mut self, key: &[u8], record: &Record) -> Result<(), Infallible> {
        self.insert(key.to_vec(), record.clone());
        Ok(())
    }
    fn remove(&mut self, key: &[u8]) -> Result<(), Infallible> {
        BTreeMap::remove(self, key);
        Ok(())
    }
    fn get_meta(&mut self, name: &str) -> Result<Option<Vec<u8>>, Infallible> {
        let key = [b"\0meta:", name.as_bytes()].concat();
        Ok(BTreeMap::get(self, &key).map(|r| r.meta.clone()))
    }
    fn put_meta(&mut self, name: &str, value: Option<Vec<u8>>) -> Result<(), Infallible> {
        let key = [b"\0meta:", name.as_bytes()].concat();
        let Some(value) = value else {
            BTreeMap::remove(self, &key);
            return Ok(());
        };
        // Kept as a fake record under a key no request can name.
        let r = Record {
            state: State::Live,
            volumes: Vec::new(),
            size: 0,
            md5: None,
            changed_ms: 0,
            missing: Vec::new(),
            stale: Vec::new(),
            owner: 0,
            meta: value,
            inline: None,
            gen: 0,
        };
        self.insert(key, r);
        Ok(())
    }
}

fn run(m: &mut BTreeMap<Vec<u8>, Record>, cmd: Command) -> Applied {
    apply(m, &cmd).unwrap()
}

fn begin() -> Command {
    Command::Begin {
        key: b"/k".to_vec(),
        volumes: vec!["a:1".into()],
        now_ms: 1,
        owner: 0,
        replace: false,
    }
}
fn commit() -> Command {
    Command::Commit {
        gen: 0,
        key: b"/k".to_vec(),
        size: 3,
        md5: Some([7; 16]),
        missing: Vec::new(),
        now_ms: 2,
        owner: 0,
        meta: Vec::new(),
    }
}
fn state(m: &BTreeMap<Vec<u8>, Record>) -> Option<State> {
    m.get(&b"/k"[..]).map(|r| r.state)
}

#[test]
fn write_life_cycle() {
    let mut m = BTreeMap::new();
    let intent = run(&mut m, begin()).unwrap();
    assert_eq!(intent.as_ref(), m.get(&b"/k"[..]));
    assert_eq!(state(&m), Some(State::Writing));
    assert!(run(&mut m, commit()).is_ok());
    let r = m.get(&b"/k"[..]).unwrap();
    assert_eq!(
        (r.state, r.size, r.md5, r.changed_ms),
        (State::Live, 3, Some([7; 16]), 2)
    );
    assert_eq!(run(&mut m, begin()), Err(Rejection::Exists));
    assert_eq!(
        run(&mut m, commit()),
        Err(Rejection::WrongState(State::Live))
    );
}

#[test]
fn unlink_then_overwrite() {
    let mut m = BTreeMap::new();
    let unlink = Command::Unlink {
        key: b"/k".to_vec(),
        now_ms: 3,
    };
    assert_eq!(run(&mut m, unlink.clone()), Err(Rejection::NotFound));
    run(&mut m, begin()).unwrap();
    assert_eq!(run(&mut m, unlink.clone()), Err(Rejection::NotFound));
    run(&mut m, commit()).unwrap();
    run(&mut m, unlink.clone()).unwrap();
    assert_eq!(state(&m), Some(State::Unlinked));
    assert_eq!(run(&mut m, unlink), Err(Rejection::NotFound));
    run(&mut m, begin()).unwrap();
    assert_eq!(state(&m), Some(State::Writing));
}

#[test]
fn delete_and_protect() {
    let mut m = BTreeMap::new();
    let del = |protect| Command::BeginDelete {
        key: b"/k".to_vec(),
        protect,
        now_ms: 4,
        owner: 0,
    };
    assert_eq!(run(&mut m, del(false)), Err(Rejection::NotFound));
    run(&mut m, begin()).unwrap();
    assert_eq!(run(&mut m, del(false)), Err(Rejection::NotFound));
    run(&mut m, commit()).unwrap();
    assert_eq!(run(&mut m, del(true)), Err(Rejection::Protected));
    run(&mut m, del(false)).unwrap();
    assert_eq!(state(&m), Some(State::Deleting));
    run(&mut m, del(true)).unwrap(); // a retry of an interrupted delete
    let rm = |expect| Command::Remove {
        key: b"/k".to_vec(),
        expect,
        owner: 0,
    };
    assert_eq!(
        run(&mut m, rm(State::Writing)),
        Err(Rejection::WrongState(State::Deleting))
    );
    run(&mut m, rm(State::Deleting)).unwrap();
    assert_eq!(state(&m), None);
    assert_eq!(run(&mut m, rm(State::Deleting)), Err(Rejection::NotFound));
}

#[test]
fn set_md5_requires_the_same_value() {
    let mut m = BTreeMap::new();
    let set = |changed_ms, md5| Command::SetMd5 {
        key: b"/k".to_vec(),
        changed_ms,
        size: 3,
        md5,
    };
    assert_eq!(run(&mut m, set(2, [1; 16])), Err(Rejection::NotFound));
    run(&mut m, begin()).unwrap();
    assert_eq!(
        run(&mut m, set(1, [1; 16])),
        Err(Rejection::WrongState(State::Writing))
    );
    run(
        &mut m,
        Command::Commit {
            gen: 0,
            key: b"/k".to_vec(),
            size: 3,
            md5: None,
            missing: Vec::new(),
            now_ms: 2,
            owner: 0,
            meta: Vec::new(),
        },
    )
    .unwrap();
    assert_eq!(run(&mut m, set(1, [1; 16])), Err(Rejection::Changed));
    run(&mut m, set(2, [1; 16])).unwrap();
    assert_eq!(m[&b"/k"[..]].md5, Some([1; 16]));
    run(&mut m, set(2, [1; 16])).unwrap(); // idempotent
    assert_eq!(run(&mut m, set(2, [2; 16])), Err(Rejection::Changed));
}

#[test]
fn degraded_write_then_completed() {
    let mut m = BTreeMap::new();
    let begin3 = Command::Begin {
        key: b"/k".to_vec(),
        volumes: vec!["a:1".into(), "b:2".into(), "c:3".into()],
        now_ms: 1,
        owner: 0,
        replace: false,
    };
    let degraded = Command::Commit {
        gen: 0,
        key: b"/k".to_vec(),
        size: 3,
        md5: None,
        missing: vec!["b:2".into()],
        now_ms: 2,
        owner: 0,
        meta: Vec::new(),
    };
    let done = |loc: &str| Command::Completed {
        gen: 0,
        key: b"/k".to_vec(),
        location: loc.into(),
    };
    assert_eq!(run(&mut m, done("b:2")), Err(Rejection::NotFound));
    run(&mut m, begin3).unwrap();
    assert_eq!(
        run(&mut m, done("b:2")),
        Err(Rejection::WrongState(State::Writing))
    );
    run(&mut m, degraded.clone()).unwrap();
    let r = &m[&b"/k"[..]];
    assert_eq!(
        (r.state, r.missing.clone()),
        (State::Live, vec!["b:2".into()])
    );
    assert_eq!(
        run(&mut m, degraded),
        Err(Rejection::WrongState(State::Live))
    );
    run(&mut m, done("b:2")).unwrap();
    assert!(m[&b"/k"[..]].missing.is_empty());
}

#[test]
fn replaced_records_are_retired_with_their_files() {
    let mut m = BTreeMap::new();
    let begin_on = |vols: &[&str], now_ms| Command::Begin {
        key: b"/k".to_vec(),
        volumes: vols.iter().map(|v| v.to_string()).collect(),
        now_ms,
        owner: 0,
        replace: false,
    };
    let retired = |m: &BTreeMap<Vec<u8>, Record>, gen| {
        let r = &m[&gen_key(b"/k", gen)];
        assert_eq!((r.state, r.owner), (State::Deleting, 0));
        r.all_locations()
    };
    // An unlinked value on a:1, b:2; the placement is now b:2, c:3.
    run(&mut m, begin_on(&["a:1", "b:2"], 1)).unwrap();
    run(&mut m, commit()).unwrap();
    let unlink = Command::Unlink {
        key: b"/k".to_vec(),
        now_ms: 3,
    };
    run(&mut m, unlink).unwrap();
    let g4 = run(&mut m, begin_on(&["b:2", "c:3"], 4)).unwrap().unwrap();
    assert_eq!((g4.gen, g4.stale.len()), (4, 0));
    assert_eq!(retired(&m, 0), ["a:1", "b:2"]);
    // An abandoned intent replaced again on d:4: each generation's files are named.
    let g5 = run(&mut m, begin_on(&["d:4"], 5)).unwrap().unwrap();
    assert_eq!(g5.gen, 5);
    assert_eq!(retired(&m, 4), ["b:2", "c:3"]);
    assert_eq!(m[&b"/k"[..]].all_locations(), ["d:4"]);
    // An interrupted delete replaced by a write.
    let mut commit5 = commit();
    if let Command::Commit { gen, .. } = &mut commit5 {
        *gen = 5;
    }
    run(&mut m, commit5).unwrap();
    let del = Command::BeginDelete {
        key: b"/k".to_vec(),
        protect: false,
        now_ms: 6,
        owner: 0,
    };
    run(&mut m, del).unwrap();
    run(&mut m, begin_on(&["c:3"], 7)).unwrap();
    assert_eq!(retired(&m, 5), ["d:4"]);
    // Stale locations of a legacy record go with it when it is retired.
    let mut m = BTreeMap::new();
    run(&mut m, begin_on(&["a:1"], 1)).unwrap();
    run(&mut m, commit()).unwrap();
    m.get_mut(&b"/k"[..]).unwrap().stale = vec!["z:9".into()];
    run(&mut m, replace("b:1", 8, 0)).unwrap();
    run(&mut m, commit_gen(8, 0, 1)).unwrap();
    assert_eq!(retired(&m, 0), ["a:1", "z:9"]);
}

#[test]
fn an_intent_belongs_to_its_write() {
    let mut m = BTreeMap::new();
    let (node1, node1_later, node2) = (1 << 32 | 7, 1 << 32 | 8, 2 << 32 | 9);
    let begin = |owner, now_ms| Command::Begin {
        key: b"/k".to_vec(),
        volumes: vec!["a:1".into()],
        now_ms,
        owner,
        replace: false,
    };
    let commit = |owner, gen| Command::Commit {
        gen,
        key: b"/k".to_vec(),
        size: 3,
        md5: None,
        missing: Vec::new(),
        now_ms: 20,
        owner,
        meta: Vec::new(),
    };
    let gen = |applied: Applied| applied.unwrap().unwrap().gen;
    let first = gen(run(&mut m, begin(node1, 10)));
    assert_eq!(m[&b"/k"[..]].owner, node1);
    // Another node's write is refused while the intent is fresh…
    assert_eq!(run(&mut m, begin(node2, 11)), Err(Rejection::Busy));
    // …but the same node (a restarted process) may take it over.
    let later = gen(run(&mut m, begin(node1_later, 12)));
    // Only the owner commits.
    assert_eq!(run(&mut m, commit(node1, first)), Err(Rejection::Changed));
    assert_eq!(run(&mut m, commit(node1, later)), Err(Rejection::Changed));
    // Past the lease, another node takes the abandoned intent over.
    let second = gen(run(&mut m, begin(node2, 12 + WRITE_LEASE_MS)));
    assert_eq!(
        run(&mut m, commit(node1_later, later)),
        Err(Rejection::Changed)
    );
    run(&mut m, commit(node2, second)).unwrap();
    let r = &m[&b"/k"[..]];
    assert_eq!((r.state, r.owner), (State::Live, 0));

    // Deletes are owned the same way, with a shorter lease.
    let now = 20 + WRITE_LEASE_MS;
    let del = |owner, now_ms| Command::BeginDelete {
        key: b"/k".to_vec(),
        protect: false,
        now_ms,
        owner,
    };
    let rm = |owner| Command::Remove {
        key: b"/k".to_vec(),
        expect: State::Deleting,
        owner,
    };
    run(&mut m, del(node1, now)).unwrap();
    assert_eq!(run(&mut m, del(node2, now + 1)), Err(Rejection::Busy));
    assert_eq!(run(&mut m, begin(node2, now + 1)), Err(Rejection::Busy));
    assert_eq!(run(&mut m, rm(node2)), Err(Rejection::Changed));
    run(&mut m, del(node1_later, now + 2)).unwrap(); // its own node retries
    run(&mut m, del(node2, now + 2 + DELETE_LEASE_MS)).unwrap(); // lease over
    assert_eq!(run(&mut m, rm(node1_later)), Err(Rejection::Changed));
    run(&mut m, rm(node2)).unwrap();
    assert_eq!(state(&m), None);
}

#[test]
fn volume_list_set_once_or_replaced() {
    let mut m = BTreeMap::new();
    let set = |v: &str, if_unset| Command::SetVolumes {
        volumes: vec![v.into()],
        if_unset,
    };
    run(&mut m, set("a:1", true)).unwrap();
    assert_eq!(run(&mut m, set("b:2", true)), Err(Rejection::Changed));
    assert_eq!(m.get_meta(VOLUMES_META).unwrap().unwrap(), br#"["a:1"]"#);
    run(&mut m, set("c:3", false)).unwrap();
    assert_eq!(m.get_meta(VOLUMES_META).unwrap().unwrap(), br#"["c:3"]"#);
}

#[test]
fn relocate_requires_unchanged_volumes() {
    let mut m = BTreeMap::new();
    run(&mut m, begin()).unwrap();
    let reloc = |from: &str| Command::Relocate {
        gen: 0,
        key: b"/k".to_vec(),
        from: vec![from.into()],
        to: vec!["b:2".into()],
    };
    assert_eq!(
        run(&mut m, reloc("a:1")),
        Err(Rejection::WrongState(State::Writing))
    );
    run(&mut m, commit()).unwrap();
    assert_eq!(run(&mut m, reloc("z:9")), Err(Rejection::Changed));
    run(&mut m, reloc("a:1")).unwrap();
    assert_eq!(m[&b"/k"[..]].volumes, ["b:2"]);
}

fn replace(volume: &str, now_ms: u64, owner: u64) -> Command {
    Command::Begin {
        key: b"/k".to_vec(),
        volumes: vec![volume.into()],
        now_ms,
        owner,
        replace: true,
    }
}

fn commit_gen(gen: u64, owner: u64, size: u64) -> Command {
    Command::Commit {
        gen,
        key: b"/k".to_vec(),
        size,
        md5: None,
        missing: Vec::new(),
        now_ms: 10 + gen,
        owner,
        meta: Vec::new(),
    }
}

#[test]
fn overwrites_write_a_new_generation_beside_the_live_value() {
    let mut m = BTreeMap::new();
    let intent = run(&mut m, begin()).unwrap().unwrap();
    assert_eq!((intent.state, intent.gen), (State::Writing, 0));
    run(&mut m, commit()).unwrap();
    let first = m[&b"/k"[..]].clone();
    // Two overwrites at once, each its own generation beside the live record, which
    // stays as it is: readers keep the old value.
    let a = run(&mut m, replace("b:1", 3, 1 << 32)).unwrap().unwrap();
    let b = run(&mut m, replace("c:1", 3, 2 << 32)).unwrap().unwrap();
    assert_eq!((a.gen, b.gen), (3, 4));
    assert_eq!(m[&b"/k"[..]], first);
    assert_eq!(m[&gen_key(b"/k", 3)], a);
    assert_eq!(m[&gen_key(b"/k", 4)].state, State::Writing);
    // Only the owner commits an intent; a generation nobody wrote is not found.
    assert_eq!(
        run(&mut m, commit_gen(3, 2 << 32, 5)),
        Err(Rejection::Changed)
    );
    assert_eq!(
        run(&mut m, commit_gen(99, 1 << 32, 5)),
        Err(Rejection::WrongState(State::Live))
    );
    // The first to commit replaces the live record, which is retired.
    assert_eq!(
        run(&mut m, commit_gen(3, 1 << 32, 5)),
        Ok(Some(first.clone()))
    );
    let now = m[&b"/k"[..]].clone();
    assert_eq!((now.state, now.gen, now.size), (State::Live, 3, 5));
    assert_eq!(now.volumes, ["b:1"]);
    assert!(!m.contains_key(&gen_key(b"/k", 3)));
    let retired = &m[&gen_key(b"/k", 0)];
    assert_eq!(
        (retired.state, retired.owner, retired.gen),
        (State::Deleting, 0, 0)
    );
    assert_eq!(retired.volumes, ["a:1"]);
    // The last to commit wins.
    run(&mut m, commit_gen(4, 2 << 32, 6)).unwrap();
    assert_eq!((m[&b"/k"[..]].gen, m[&b"/k"[..]].size), (4, 6));
    assert_eq!(m[&gen_key(b"/k", 3)].volumes, ["b:1"]);
    // A failed overwrite drops its own intent: the value stays.
    let c = run(&mut m, replace("d:1", 4, 1 << 32)).unwrap().unwrap();
    assert_eq!(c.gen, 5, "above the live record's generation");
    let remove = |owner| Command::Remove {
        key: gen_key(b"/k", 5),
        expect: State::Writing,
        owner,
    };
    assert_eq!(run(&mut m, remove(2 << 32)), Err(Rejection::Changed));
    run(&mut m, remove(1 << 32)).unwrap();
    assert_eq!((m[&b"/k"[..]].gen, m[&b"/k"[..]].size), (4, 6));
    // Retired records finish like deletes.
    for gen in [0, 3] {
        let done = Command::Remove {
            key: gen_key(b"/k", gen),
            expect: State::Deleting,
            owner: 0,
        };
        run(&mut m, done).unwrap();
    }
    let prefix = gen_prefix(b"/k");
    assert_eq!(m.keys().filter(|k| k.starts_with(&prefix)).count(), 0);
}

#[test]
fn a_write_never_reuses_the_files_of_a_record_it_replaces() {
    let mut m = BTreeMap::new();
    run(&mut m, begin()).unwrap();
    run(&mut m, commit()).unwrap();
    run(
        &mut m,
        Command::Unlink {
            key: b"/k".to_vec(),
            now_ms: 3,
        },
    )
    .unwrap();
    // minikeyvalue's PUT over an unlinked value: the intent is the key's record, at a
    // new generation; the unlinked value is retired for deletion.
    let mut begin_at = begin();
    if let Command::Begin { now_ms, .. } = &mut begin_at {
        *now_ms = 7;
    }
    let intent = run(&mut m, begin_at.clone()).unwrap().unwrap();
    assert_eq!(intent.gen, 7);
    assert_eq!(m[&b"/k"[..]], intent);
    assert_eq!(m[&gen_key(b"/k", 0)].state, State::Deleting);
    // Gone meanwhile, with generation 0 still being deleted: a new first write does
    // not take generation 0's name.
    m.remove(&b"/k"[..]);
    assert_eq!(run(&mut m, begin_at).unwrap().unwrap().gen, 7);
    m.remove(&gen_key(b"/k", 0));
    m.remove(&b"/k"[..]);
    assert_eq!(run(&mut m, begin()).unwrap().unwrap().gen, 0);
}

#[test]
fn gen_keys_name_their_key_and_sort_before_keys() {
    let k = gen_key(b"/a/b", 258);
    assert!(is_gen_key(&k) && !is_gen_key(b"/a/b"));
    assert_eq!(value_key(&k), b"/a/b");
    assert_eq!(value_key(b"/a/b"), b"/a/b");
    assert!(k.starts_with(&gen_prefix(b"/a/b")));
    assert!(!gen_key(b"/a/bc", 1).starts_with(&gen_prefix(b"/a/b")));
    assert!(k < b"/".to_vec());
    assert!(gen_key(b"/a", 2) < gen_key(b"/a", 256));
}

#[test]
fn set_meta_replaces_only_the_metadata_of_the_version_read() {
    let mut m = BTreeMap::new();
    let set = |changed_ms, size, meta: &[u8]| Command::SetMeta {
        key: b"/k".to_vec(),
        changed_ms,
        size,
        meta: meta.to_vec(),
    };
    assert_eq!(run(&mut m, set(2, 0, b"m")), Err(Rejection::NotFound));
    run(&mut m, begin()).unwrap();
    assert_eq!(
        run(&mut m, set(1, 0, b"m")),
        Err(Rejection::WrongState(State::Writing))
    );
    run(
        &mut m,
        Command::Commit {
            gen: 0,
            key: b"/k".to_vec(),
            size: 0,
            md5: Some([7; 16]),
            missing: Vec::new(),
            now_ms: 2,
            owner: 0,
            meta: b"old".to_vec(),
        },
    )
    .unwrap();
    let before = m[&b"/k"[..]].clone();
    assert_eq!(run(&mut m, set(1, 0, b"new")), Err(Rejection::Changed));
    assert_eq!(run(&mut m, set(2, 5, b"new")), Err(Rejection::Changed));
    run(&mut m, set(2, 0, b"new")).unwrap();
    let after = m[&b"/k"[..]].clone();
    assert_eq!(after.meta, b"new");
    assert_eq!(
        Record {
            meta: before.meta.clone(),
            ..after
        },
        before
    );
}

fn put_inline(replace: bool, owner: u64) -> Command {
    Command::PutInline {
        key: b"/k".to_vec(),
        value: b"tiny".to_vec(),
        md5: Some([3; 16]),
        now_ms: 5,
        owner,
        replace,
        meta: b"m".to_vec(),
    }
}

#[test]
fn inline_values() {
    let mut m = BTreeMap::new();
    // Absent → live at once, no volumes.
    assert_eq!(run(&mut m, put_inline(false, 0)), Ok(None));
    let r = m.get(&b"/k"[..]).unwrap().clone();
    assert_eq!(
        (r.state, r.size, r.md5, r.changed_ms, r.inline.as_deref()),
        (State::Live, 4, Some([3; 16]), 5, Some(&b"tiny"[..]))
    );
    assert!(r.volumes.is_empty() && r.stale.is_empty() && r.meta == b"m");
    // A live key is refused without `replace`, by an inline or a volume write.
    assert_eq!(run(&mut m, put_inline(false, 0)), Err(Rejection::Exists));
    assert_eq!(run(&mut m, begin()), Err(Rejection::Exists));
    // Replaced by a volume write: the inline value is served until it commits, and
    // nothing is retired (the inline value had no file).
    let g = run(&mut m, replace("a:1", 6, 0)).unwrap().unwrap().gen;
    assert_eq!(m[&b"/k"[..]], r);
    run(&mut m, commit_gen(g, 0, 3)).unwrap();
    assert_eq!(m[&b"/k"[..]].inline, None);
    assert!(!m.contains_key(&gen_key(b"/k", 0)));
    // Replaced by an inline value: the old files are retired.
    assert_eq!(
        run(&mut m, put_inline(true, 0)).map(|p| p.map(|p| p.volumes)),
        Ok(Some(vec!["a:1".to_string()]))
    );
    let r = m.get(&b"/k"[..]).unwrap();
    assert!(r.stale.is_empty() && r.volumes.is_empty() && r.inline.is_some());
    assert_eq!(m[&gen_key(b"/k", g)].volumes, ["a:1"]);
    assert_eq!(m[&gen_key(b"/k", g)].state, State::Deleting);
    // Unlink and delete keep the value until the record goes.
    let unlink = Command::Unlink {
        key: b"/k".to_vec(),
        now_ms: 6,
    };
    run(&mut m, unlink).unwrap();
    assert_eq!(
        m.get(&b"/k"[..]).unwrap().inline.as_deref(),
        Some(&b"tiny"[..])
    );
    // Another node's fresh intent holds the key.
    let mut m = BTreeMap::new();
    let theirs = Command::Begin {
        key: b"/k".to_vec(),
        volumes: vec!["a:1".into()],
        now_ms: 1,
        owner: 2 << 32,
        replace: false,
    };
    run(&mut m, theirs).unwrap();
    assert_eq!(run(&mut m, put_inline(true, 1 << 32)), Err(Rejection::Busy));
    // Our own abandoned intent is taken over, its files retired.
    assert!(run(&mut m, put_inline(false, 2 << 32)).is_ok());
    assert_eq!(m[&gen_key(b"/k", 0)].volumes, ["a:1"]);
}

#[test]
fn intents_keep_the_highest_lease_time_in_replicated_meta() {
    let mut m = BTreeMap::new();
    let lease = |m: &mut BTreeMap<Vec<u8>, Record>| {
        crate::index::lease_clock(m.get_meta(LEASE_CLOCK_META).unwrap().as_deref())
    };
    let begin = |key: &str, now_ms| Command::Begin {
        key: key.as_bytes().to_vec(),
        volumes: vec!["a:1".into()],
        now_ms,
        owner: 1 << 32,
        replace: false,
    };
    assert_eq!(lease(&mut m), None);
    run(&mut m, begin("/a", 500)).unwrap();
    assert_eq!(lease(&mut m), Some(500));
    // An older stamp (a slower clock) never moves it back.
    run(&mut m, begin("/b", 400)).unwrap();
    assert_eq!(lease(&mut m), Some(500));
    let commit = Command::Commit {
        gen: 0,
        key: b"/a".to_vec(),
        size: 1,
        md5: None,
        missing: Vec::new(),
        now_ms: 600,
        owner: 1 << 32,
        meta: Vec::new(),
    };
    run(&mut m, commit).unwrap();
    assert_eq!(lease(&mut m), Some(500));
    let del = Command::BeginDelete {
        key: b"/a".to_vec(),
        protect: false,
        now_ms: 900,
        owner: 1 << 32,
    };
    run(&mut m, del).unwrap();
    assert_eq!(lease(&mut m), Some(900));
    // Other commands leave it alone.
    let unlink = Command::Unlink {
        key: b"/b".to_vec(),
        now_ms: 5_000,
    };
    let _ = run(&mut m, unlink);
    assert_eq!(lease(&mut m), Some(900));
}

#[test]
fn an_abandoned_intent_can_no_longer_commit() {
    let mut m = BTreeMap::new();
    run(&mut m, begin()).unwrap();
    let abandon = |owner, changed_ms| Command::Abandon {
        key: b"/k".to_vec(),
        owner,
        changed_ms,
    };
    // Not the intent read: refused, nothing changed.
    assert_eq!(run(&mut m, abandon(9, 1)), Err(Rejection::Changed));
    assert_eq!(run(&mut m, abandon(0, 5)), Err(Rejection::Changed));
    assert_eq!(state(&m), Some(State::Writing));
    run(&mut m, abandon(0, 1)).unwrap();
    assert_eq!(state(&m), Some(State::Deleting));
    assert_eq!(m[&b"/k"[..]].owner, 0);
    // The write that was only slow finds its intent gone.
    assert_eq!(
        run(&mut m, commit()),
        Err(Rejection::WrongState(State::Deleting))
    );
    assert_eq!(
        run(&mut m, abandon(0, 1)),
        Err(Rejection::WrongState(State::Deleting))
    );
    let remove = Command::Remove {
        key: b"/k".to_vec(),
        expect: State::Deleting,
        owner: 0,
    };
    run(&mut m, remove).unwrap();
    assert_eq!(state(&m), None);

    // An overwrite's intent beside a live value: abandoned, it cannot commit, and the
    // live value stays.
    let mut m = BTreeMap::new();
    run(&mut m, begin()).unwrap();
    run(&mut m, commit()).unwrap();
    let replace = Command::Begin {
        key: b"/k".to_vec(),
        volumes: vec!["a:1".into()],
        now_ms: 3,
        owner: 7,
        replace: true,
    };
    run(&mut m, replace).unwrap();
    let (at, intent) = m
        .iter()
        .find(|(k, r)| is_gen_key(k) && r.state == State::Writing)
        .map(|(k, r)| (k.clone(), r.clone()))
        .unwrap();
    let abandon = Command::Abandon {
        key: at.clone(),
        owner: 7,
        changed_ms: intent.changed_ms,
    };
    run(&mut m, abandon).unwrap();
    let commit = Command::Commit {
        gen: intent.gen,
        key: b"/k".to_vec(),
        size: 3,
        md5: None,
        missing: Vec::new(),
        now_ms: 4,
        owner: 7,
        meta: Vec::new(),
    };
    assert_eq!(run(&mut m, commit), Err(Rejection::Changed));
    assert_eq!(state(&m), Some(State::Live));
    assert_eq!(m[&at].state, State::Deleting);
}
