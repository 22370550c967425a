//! A recorded client load on an index (one server or a cluster) and the checks made
//! over what it saw: [`Load`] runs clients doing PUT / GET / DELETE on a few keys at a
//! time through every node it is given, recording each request in a [`History`]
//! (tests/common/history.rs); [`check_history`] verifies it (linearizable per key,
//! volume reads explained), [`read_back`] reads every key from every node after the
//! faults and [`assert_certain_finals`] checks that no acknowledged write was lost.
//! Used by tests/ha.rs (loopback, proxies) and tests/nemesis.rs (network namespaces).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use super::ha::http;
use super::history::{History, Op, Operation, Outcome, Ret, ValueId};

/// Concurrent clients, spread over the nodes.
pub const CLIENTS: usize = 16;
/// Keys in use at a time: few, so that clients conflict on them.
const KEYS_PER_GEN: u64 = 8;
/// Operations per key before the load moves on to fresh keys: keeps each key's
/// history small for the checker (plus one final read per node).
const OPS_PER_KEY: u64 = 40;
/// Upper bound on one client's requests (the load normally stops long before).
const MAX_OPS_PER_CLIENT: usize = 4_000;
/// Client-side request timeout: a request without an answer by then is unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// Search steps per key for the linearizability checker.
pub const CHECK_BUDGET: u64 = 5_000_000;
/// The value id of bytes the test never wrote.
const FOREIGN: ValueId = u64::MAX;

/// Every value PUT by a test: unique bytes `"{key}|c{client}|v{id}"`, findable by id
/// and by MD5 (the index's `Content-Md5`).
#[derive(Default)]
pub struct Values {
    pub next: AtomicU64,
    pub by_id: Mutex<HashMap<ValueId, Vec<u8>>>,
    by_md5: Mutex<HashMap<String, ValueId>>,
}

impl Values {
    pub fn create(&self, key: &str, client: usize) -> (ValueId, Vec<u8>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = format!("{key}|c{client}|v{id}").into_bytes();
        let md5 = hex(&Md5::digest(&bytes));
        self.by_md5.lock().unwrap().insert(md5, id);
        self.by_id.lock().unwrap().insert(id, bytes.clone());
        (id, bytes)
    }

    pub fn content(&self, id: ValueId) -> Option<Vec<u8>> {
        self.by_id.lock().unwrap().get(&id).cloned()
    }

    /// The value an MD5 (hex) names, [`FOREIGN`] if none.
    pub fn by_md5(&self, md5: &str) -> ValueId {
        let md5 = md5.to_ascii_lowercase();
        self.by_md5
            .lock()
            .unwrap()
            .get(&md5)
            .copied()
            .unwrap_or(FOREIGN)
    }

    /// The value these bytes are exactly, [`FOREIGN`] if none.
    pub fn identify(&self, bytes: &[u8]) -> ValueId {
        self.by_md5(&hex(&Md5::digest(bytes)))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A GET whose bytes, read from the volume the index redirected to, were not the
/// value the index named (`Content-Md5`). Only a DELETE of the key running at the
/// same time explains that (it removes the file, and a later PUT may write another).
#[derive(Debug, Clone)]
pub struct VolumeRead {
    pub key: String,
    pub node: u64,
    pub index_said: ValueId,
    /// `None`: no file (or the volume refused).
    pub got: Option<ValueId>,
    pub invoked: Instant,
    pub finished: Instant,
}

/// What the clients share and saw.
pub struct Shared {
    pub history: History,
    pub values: Values,
    pub prefix: String,
    pub seq: AtomicU64,
    pub created: AtomicUsize,
    pub stop: AtomicBool,
    /// GETs whose volume read disagreed with the index.
    pub volume_reads: Mutex<Vec<VolumeRead>>,
    /// 5xx answers and transport errors: (node, description).
    pub errors: Mutex<Vec<(u64, String)>>,
    /// Answers that no case of the API allows here.
    pub unexpected: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(prefix: &str) -> Arc<Shared> {
        Arc::new(Shared {
            history: History::new(),
            values: Values::default(),
            prefix: prefix.to_owned(),
            seq: AtomicU64::new(0),
            created: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            volume_reads: Mutex::default(),
            errors: Mutex::default(),
            unexpected: Mutex::default(),
        })
    }

    pub fn error(&self, node: u64, what: String) {
        self.errors.lock().unwrap().push((node, what));
    }

    pub fn unexpected(&self, what: String) {
        self.unexpected.lock().unwrap().push(what);
    }
}

/// How a request went, for the client's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// An answer.
    Answered,
    /// The node refused the connection (down): try another.
    Refused,
    /// 5xx, timeout or broken connection: pause briefly.
    Trouble,
}

/// Classifies a transport error: refused connections are definitely not applied.
pub fn transport_error(sh: &Shared, node: u64, what: &str, e: &reqwest::Error) -> (Outcome, Step) {
    sh.error(node, format!("{what}: {e}"));
    if e.is_connect() {
        (Outcome::Failed, Step::Refused)
    } else {
        (Outcome::Unknown, Step::Trouble)
    }
}

pub async fn put(sh: &Shared, c: usize, node: u64, url: &str, key: &str) -> Step {
    let (v, body) = sh.values.create(key, c);
    let p = sh.history.begin(c, node, key, Op::Put(v));
    let r = http()
        .put(format!("{url}{key}"))
        .body(body)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await;
    let (outcome, step) = match r {
        Ok(r) => match r.status().as_u16() {
            201 => {
                sh.created.fetch_add(1, Ordering::Relaxed);
                (Outcome::Ok(Ret::Created), Step::Answered)
            }
            403 => (Outcome::Ok(Ret::Exists), Step::Answered),
            // Another write of the key in flight: refused before anything happened.
            409 => (Outcome::Failed, Step::Answered),
            s if s >= 500 => {
                sh.error(node, format!("PUT {key}: {s}"));
                (Outcome::Unknown, Step::Trouble)
            }
            s => {
                sh.unexpected(format!("node {node}: PUT {key}: {s}"));
                (Outcome::Unknown, Step::Answered)
            }
        },
        Err(e) => transport_error(sh, node, &format!("PUT {key}"), &e),
    };
    p.end(outcome);
    step
}

pub async fn delete(sh: &Shared, c: usize, node: u64, url: &str, key: &str) -> Step {
    let p = sh.history.begin(c, node, key, Op::Delete);
    let r = http()
        .delete(format!("{url}{key}"))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await;
    let (outcome, step) = match r {
        Ok(r) => match r.status().as_u16() {
            204 => (Outcome::Ok(Ret::Deleted), Step::Answered),
            404 => (Outcome::Ok(Ret::NotFound), Step::Answered),
            409 => (Outcome::Failed, Step::Answered),
            s if s >= 500 => {
                sh.error(node, format!("DELETE {key}: {s}"));
                (Outcome::Unknown, Step::Trouble)
            }
            s => {
                sh.unexpected(format!("node {node}: DELETE {key}: {s}"));
                (Outcome::Unknown, Step::Answered)
            }
        },
        Err(e) => transport_error(sh, node, &format!("DELETE {key}"), &e),
    };
    p.end(outcome);
    step
}

/// A GET answered with a redirect: the value the index named, and what the volume
/// served.
pub struct Found {
    pub index_said: ValueId,
    pub got: Option<ValueId>,
    pub volumes: Vec<String>,
    /// The path of the value's file on every volume (from the redirect: it names the
    /// value's generation, `placement::file_path`).
    pub path: String,
}

/// GET through node `url`, recorded as `client`; the value is the one the index's
/// `Content-Md5` names (its answer is the linearization point), the redirect is then
/// followed and the bytes identified. Returns the step and, for a 302, what was
/// found.
pub async fn get(sh: &Shared, c: usize, node: u64, url: &str, key: &str) -> (Step, Option<Found>) {
    let p = sh.history.begin(c, node, key, Op::Get);
    let invoked = p.invoked();
    let r = http()
        .get(format!("{url}{key}"))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            let (outcome, step) = transport_error(sh, node, &format!("GET {key}"), &e);
            p.end(outcome);
            return (step, None);
        }
    };
    match r.status().as_u16() {
        302 => {}
        404 => {
            p.end(Outcome::Ok(Ret::Absent));
            return (Step::Answered, None);
        }
        s if s >= 500 => {
            sh.error(node, format!("GET {key}: {s}"));
            p.end(Outcome::Unknown);
            return (Step::Trouble, None);
        }
        s => {
            sh.unexpected(format!("node {node}: GET {key}: {s}"));
            p.end(Outcome::Unknown);
            return (Step::Answered, None);
        }
    }
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(md5), Some(location)) = (header("content-md5"), header("location")) else {
        sh.unexpected(format!(
            "node {node}: GET {key}: 302 without Content-Md5 or Location"
        ));
        p.end(Outcome::Unknown);
        return (Step::Answered, None);
    };
    let volumes: Vec<String> = header("key-volumes")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let index_said = sh.values.by_md5(&md5);
    p.end(Outcome::Ok(Ret::Value(index_said)));
    let got = match http().get(&location).timeout(REQUEST_TIMEOUT).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => match r.bytes().await {
            Ok(b) => Some(sh.values.identify(&b)),
            Err(_) => None,
        },
        _ => None,
    };
    if got != Some(index_said) {
        sh.volume_reads.lock().unwrap().push(VolumeRead {
            key: key.to_owned(),
            node,
            index_said,
            got,
            invoked,
            finished: Instant::now(),
        });
    }
    let path = reqwest::Url::parse(&location)
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    // A subvolume's `/svXX` is part of the location in Key-Volumes, not of the path.
    let path = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((sv, rest)) if sv.len() == 4 && sv.starts_with("sv") => format!("/{rest}"),
        _ => path,
    };
    let found = Found {
        index_said,
        got,
        volumes,
        path,
    };
    (Step::Answered, Some(found))
}

/// Answered requests a client sends to another node before it goes back to its own.
const AWAY_FROM_HOME: u32 = 32;

/// One client: mixed PUT (35 %) / GET (40 %) / DELETE (25 %) on the current keys,
/// against its own node (`c % nodes`). Like a real client with several endpoints, it
/// moves on to the next node when a request fails — at once on a refused connection,
/// after a 250 ms pause on a 5xx or a timeout — and goes back to its own node after
/// [`AWAY_FROM_HOME`] answers elsewhere. (Clients that moved only on refused
/// connections were herded by kills onto one node and stayed on it when it was then
/// cut off — still accepting connections but unable to commit — so nothing reached
/// the majority: the "round that does not recover" of docs/RELIABILITY.md.)
pub async fn client_loop(sh: Arc<Shared>, nodes: Vec<(u64, String)>, c: usize) {
    let mut rng = fastrand::Rng::with_seed(c as u64 * 7919 + 17);
    let home = c % nodes.len();
    let mut target = home;
    let mut away = 0;
    for _ in 0..MAX_OPS_PER_CLIENT {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        let seq = sh.seq.fetch_add(1, Ordering::Relaxed);
        let generation = seq / (KEYS_PER_GEN * OPS_PER_KEY);
        let key = format!("/{}/g{generation}/k{}", sh.prefix, seq % KEYS_PER_GEN);
        let (node, url) = &nodes[target];
        let step = match rng.u8(0..100) {
            0..35 => put(&sh, c, *node, url, &key).await,
            35..75 => get(&sh, c, *node, url, &key).await.0,
            _ => delete(&sh, c, *node, url, &key).await,
        };
        match step {
            Step::Answered if target != home => {
                away += 1;
                if away >= AWAY_FROM_HOME {
                    (target, away) = (home, 0);
                }
            }
            Step::Answered => {}
            Step::Refused => {
                target = (target + 1) % nodes.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Back off: every such request is of unknown outcome, and each one
            // multiplies the checker's work on its key.
            Step::Trouble => {
                target = (target + 1) % nodes.len();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// The load: [`CLIENTS`] clients over every node until [`Load::finish`].
pub struct Load {
    pub sh: Arc<Shared>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the clients against `nodes` (`(id, url)`), keys under `/prefix/`.
    pub fn start(nodes: Vec<(u64, String)>, prefix: &str) -> Load {
        let sh = Shared::new(prefix);
        let tasks = (0..CLIENTS)
            .map(|i| tokio::spawn(client_loop(Arc::clone(&sh), nodes.clone(), i)))
            .collect();
        Load { sh, tasks }
    }

    /// Waits until `ok(recorded operations)` holds; panics after a minute.
    pub async fn wait(&self, what: &str, ok: impl Fn(&[Operation]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ops = self.sh.history.operations();
            if ok(&ops) {
                return;
            }
            if Instant::now() >= deadline {
                // What the clients saw, for the post-mortem (the nemesis suite's
                // history directory).
                if let Ok(dir) = std::env::var("HOARD_NEMESIS_HISTORY_DIR") {
                    let path =
                        std::path::Path::new(&dir).join(format!("{}-stuck.jsonl", self.sh.prefix));
                    let _ = self.sh.history.write_jsonl(&path);
                    let errors = self.sh.errors.lock().unwrap().clone();
                    let tail: Vec<String> = errors
                        .iter()
                        .rev()
                        .take(40)
                        .map(|(n, e)| format!("node {n}: {e}"))
                        .collect();
                    let _ = std::fs::write(path.with_extension("errors.txt"), tail.join("\n"));
                }
            }
            assert!(
                Instant::now() < deadline,
                "load never reached: {what} ({} operations, {} created)",
                ops.len(),
                self.sh.created.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for `n` 201s to PUTs sent after `t` to a node `at` accepts.
    pub async fn wait_created_after(&self, t: Instant, n: usize, at: impl Fn(u64) -> bool) {
        self.wait(&format!("{n} writes acknowledged"), |ops| {
            created(ops)
                .filter(|o| o.invoked >= t && at(o.node))
                .count()
                >= n
        })
        .await;
    }

    /// The time from `t` to the first 201 of a PUT sent after `t` (waits for it).
    pub async fn first_201_after(&self, t: Instant) -> Duration {
        self.wait_created_after(t, 1, |_| true).await;
        let ops = self.sh.history.operations();
        created(&ops)
            .filter(|o| o.invoked >= t)
            .filter_map(|o| o.returned)
            .min()
            .unwrap()
            - t
    }

    /// Stops the clients and waits for them.
    pub async fn finish(self) -> Arc<Shared> {
        self.sh.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.sh
    }
}

/// PUTs answered 201.
pub fn created(ops: &[Operation]) -> impl Iterator<Item = &Operation> {
    ops.iter()
        .filter(|o| matches!(o.op, Op::Put(_)) && o.outcome == Outcome::Ok(Ret::Created))
}

/// Reads every key ever used from every node of `nodes` (recorded in the history, as
/// client 1000 + node) and checks: byte-identical through every node, complete on
/// every replica, listed exactly when live; the same on every node. Returns the final
/// value of each key.
pub async fn read_back(sh: &Shared, nodes: &[(u64, String)]) -> BTreeMap<String, Option<ValueId>> {
    let ops = sh.history.operations();
    let keys: BTreeSet<String> = ops.iter().map(|o| o.key.clone()).collect();
    // A write of unknown outcome (its client gave up) may still take effect at any
    // time, even during these reads — the server finishes a write whose body it has
    // after the client went away — so such keys can change between two reads here;
    // the history checker judges them (these reads are in the history too).
    let uncertain: BTreeSet<String> = ops
        .iter()
        .filter(|o| o.op != Op::Get && o.outcome == Outcome::Unknown)
        .map(|o| o.key.clone())
        .collect();
    let mut seen: BTreeMap<u64, BTreeMap<String, Option<ValueId>>> = BTreeMap::new();
    for (node, url) in nodes {
        let node = *node;
        let reader = 1000 + node as usize;
        let mut values = BTreeMap::new();
        for key in &keys {
            let (step, found) = get(sh, reader, node, url, key).await;
            assert_eq!(step, Step::Answered, "node {node}: final GET {key} failed");
            let value = found.map(|f| {
                let want = sh.values.content(f.index_said);
                assert!(
                    want.is_some(),
                    "node {node}: {key} holds a value never written"
                );
                assert_eq!(
                    f.got,
                    Some(f.index_said),
                    "node {node}: {key}: the volume served other bytes than the index named"
                );
                assert!(!f.volumes.is_empty(), "node {node}: {key}: no Key-Volumes");
                (f.index_said, want.unwrap(), f.volumes, f.path)
            });
            if let Some((id, want, volumes, path)) = &value {
                for v in volumes {
                    let replica = format!("http://{v}{path}");
                    let r = http().get(&replica).send().await.unwrap();
                    assert_eq!(r.status(), 200, "{key}: replica {v} missing");
                    let bytes = r.bytes().await.unwrap();
                    assert!(bytes == want[..], "{key}: replica {v} is not v{id}");
                }
            }
            values.insert(key.clone(), value.map(|v| v.0));
        }
        let listed: BTreeSet<String> = list(url, &format!("/{}/", sh.prefix))
            .await
            .into_iter()
            .filter(|k| !uncertain.contains(k))
            .collect();
        let live: BTreeSet<String> = values
            .iter()
            .filter(|(k, v)| v.is_some() && !uncertain.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(listed, live, "node {node}: ?list disagrees with GET");
        seen.insert(node, values);
    }
    let (first_node, first) = seen.iter().next().unwrap();
    let certain =
        |values: &BTreeMap<String, Option<ValueId>>| -> BTreeMap<String, Option<ValueId>> {
            values
                .iter()
                .filter(|(k, _)| !uncertain.contains(*k))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
    for (node, values) in &seen {
        assert_eq!(
            certain(values),
            certain(first),
            "node {node} disagrees with node {first_node}"
        );
    }
    let live = first.values().filter(|v| v.is_some()).count();
    println!(
        "read back {} keys ({live} live) from nodes {:?}",
        keys.len(),
        seen.keys().collect::<Vec<_>>()
    );
    first.clone()
}

/// The plain form of "no acknowledged write lost, no acknowledged delete undone":
/// keys whose last write is certain (see [`certain_final`]) hold exactly its result
/// in `finals`. Asserts some keys were checked.
pub fn assert_certain_finals(sh: &Shared, finals: &BTreeMap<String, Option<ValueId>>) {
    let ops = sh.history.operations();
    let mut certain = 0;
    for (key, got) in finals {
        if let Some(want) = certain_final(&ops, key) {
            certain += 1;
            assert_eq!(*got, want, "{key}: final value is not the last write's");
        }
    }
    assert!(
        certain > 0,
        "no key had a certain final value: nothing was checked"
    );
    println!("{certain} keys had a certain last write, and hold its result");
}

/// The value `key` must hold if its last write is certain: the last write sent
/// (201 PUT or 204 DELETE, or one of unknown outcome) was answered, and every other
/// write of the key had been answered before it was sent.
pub fn certain_final(ops: &[Operation], key: &str) -> Option<Option<ValueId>> {
    let writes: Vec<&Operation> = ops
        .iter()
        .filter(|o| o.key == key)
        .filter(|o| match (o.op, o.outcome) {
            (Op::Get, _) => false,
            (_, Outcome::Unknown) => true,
            (_, Outcome::Ok(r)) => matches!(r, Ret::Created | Ret::Deleted),
            (_, Outcome::Failed) => false,
        })
        .collect();
    let last = writes.iter().max_by_key(|o| o.invoked)?;
    if last.outcome == Outcome::Unknown {
        return None;
    }
    let settled = writes
        .iter()
        .filter(|o| !std::ptr::eq(**o, *last))
        .all(|o| o.returned.is_some_and(|r| r < last.invoked));
    settled.then_some(last.op.value())
}

/// Every key under `prefix` (`GET prefix?list`).
pub async fn list(url: &str, prefix: &str) -> BTreeSet<String> {
    let r = http()
        .get(format!("{url}{prefix}?list"))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{prefix}?list");
    let v: serde_json::Value = r.json().await.unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

/// The checks over the whole history: no unexpected answer, every volume read that
/// disagreed with the index is explained by a concurrent DELETE, and the history is
/// linearizable per key.
pub fn check_history(sh: &Shared) {
    let unexpected = sh.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    let ops = sh.history.operations();
    for r in sh.volume_reads.lock().unwrap().iter() {
        let concurrent_delete = ops.iter().any(|o| {
            o.key == r.key
                && o.op == Op::Delete
                && matches!(o.outcome, Outcome::Ok(Ret::Deleted) | Outcome::Unknown)
                && o.invoked < r.finished
                && o.returned.is_none_or(|t| t > r.invoked)
        });
        assert!(
            concurrent_delete,
            "node {} redirected a GET of {} to v{} but the volume served {:?}, with no \
             DELETE of the key running",
            r.node, r.key, r.index_said, r.got
        );
    }
    let stats = match sh.history.check(CHECK_BUDGET) {
        Ok(stats) => stats,
        Err(v) => panic!("{v}"),
    };
    println!(
        "history: {} operations, {} keys, {} checked ({} writes of unknown outcome), \
         at most {} per key, {} search steps",
        ops.len(),
        stats.keys,
        stats.checked,
        stats.unknown,
        stats.max_per_key,
        stats.steps
    );
    assert!(
        stats.max_per_key <= 64,
        "keys got more operations than designed"
    );
    let count = |want: Ret| {
        ops.iter()
            .filter(|o| o.outcome == Outcome::Ok(want))
            .count()
    };
    // The load did what it is meant to: conflicting writes, deletes and reads of
    // values (not only of absent keys).
    assert!(count(Ret::Created) >= 50, "too few 201s");
    assert!(count(Ret::Deleted) >= 10, "too few 204s");
    assert!(count(Ret::Exists) >= 10, "too few conflicting PUTs");
    let reads = ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok(Ret::Value(_))))
        .count();
    assert!(reads >= 20, "too few reads of values");
}
