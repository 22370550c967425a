//! A recorded load on minivault's front-ends of an index cluster: clients of the JSON
//! interface (`--json-port`) and of the binary protocol (`--tcp-port`) overwriting,
//! reading and deleting the same few keys (a value written through one is read through
//! the other), every request recorded in a [`History`] with its invocation and
//! completion instants, and checked by the same linearizability checker as the other
//! workloads (an overwriting SET is [`Op::Set`], a DELETE answering "not found" told
//! the key was absent: [`Op::Delete`]). Used by tests/nemesis.rs.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hoard::proto::client::Client as ProtoClient;
use hoard::proto::ProtoError;

use super::ha::http;
use super::history::{History, Op, Outcome, Ret, ValueId};
use super::workload::REQUEST_TIMEOUT;

/// Clients of each front-end.
pub const CLIENTS_EACH: usize = 2;
/// Keys in use at a time, and operations per key before the load moves on.
const KEYS_PER_GEN: u64 = 4;
const OPS_PER_KEY: u64 = 40;
/// Upper bound on one client's requests.
const MAX_OPS_PER_CLIENT: usize = 3_000;
/// Answered requests a client sends to another member before it goes back to its own.
const AWAY_FROM_HOME: u32 = 32;
/// Value ids of this load start here (apart from the other loads').
const FIRST_VALUE: ValueId = 20_000_000;

/// Which front-end a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Json,
    Binary,
}

/// A member's front-ends: `(node, json "host:port", binary "host:port")`.
pub type Member = (u64, String, String);

/// What the clients share.
pub struct Shared {
    pub history: History,
    prefix: String,
    seq: AtomicU64,
    next_value: AtomicU64,
    stop: AtomicBool,
    /// Answers no case of the interfaces allows here.
    pub unexpected: std::sync::Mutex<Vec<String>>,
}

/// The bytes of value `id` of `key`, as written through the binary protocol (through
/// the JSON interface they are stored as a JSON string of the same text).
fn text(key: &str, id: ValueId) -> String {
    format!("{key}|f{id}")
}

/// The value id in bytes read back (the binary protocol's raw bytes, or the JSON
/// text of a string), if they are a value of this load.
fn identify(bytes: &[u8]) -> Option<ValueId> {
    let s = std::str::from_utf8(bytes).ok()?;
    let s = s.trim_matches('"');
    s.rsplit_once("|f")?.1.parse().ok()
}

/// What one request saw, for the client's next step.
enum Step {
    Answered,
    /// A failure: try another member.
    Failed,
}

/// One client's connections.
struct Conn {
    front: Front,
    /// Binary connections by member, opened when first needed.
    binary: std::collections::BTreeMap<u64, ProtoClient>,
}

impl Conn {
    /// One request: `op` on `key` through member `m`, recorded.
    async fn request(&mut self, sh: &Shared, c: usize, m: &Member, key: &str, op: Op) -> Step {
        let p = sh.history.begin(c, m.0, key, op);
        let (outcome, step) = match self.front {
            Front::Json => json(sh, m, key, op).await,
            Front::Binary => self.binary(sh, m, key, op).await,
        };
        p.end(outcome);
        step
    }

    async fn binary(&mut self, sh: &Shared, m: &Member, key: &str, op: Op) -> (Outcome, Step) {
        let conn = match self.binary.entry(m.0) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                match ProtoClient::connect(&m.2, REQUEST_TIMEOUT).await {
                    Ok(conn) => e.insert(conn),
                    // Nothing was sent.
                    Err(_) => return (Outcome::Failed, Step::Failed),
                }
            }
        };
        // The key on this protocol is the hoard key without its leading `/`.
        let k = key.trim_start_matches('/').as_bytes();
        let answer = match op {
            Op::Set(v) => conn.set(k, text(key, v).as_bytes()).await.map(|()| None),
            Op::Get => conn.get(k).await.map(Some),
            _ => conn.delete(k).await.map(|()| None),
        };
        match answer {
            Ok(None) if matches!(op, Op::Set(_)) => (Outcome::Ok(Ret::Created), Step::Answered),
            Ok(None) => (Outcome::Ok(Ret::Deleted), Step::Answered),
            Ok(Some(bytes)) => match identify(&bytes) {
                Some(v) => (Outcome::Ok(Ret::Value(v)), Step::Answered),
                None => {
                    unexpected(sh, m, key, op, format!("GET answered {bytes:?}"));
                    (Outcome::Unknown, Step::Answered)
                }
            },
            Err(ProtoError::Server(msg)) => server_error(sh, m, key, op, &msg),
            // The connection broke: the request may have been acted upon.
            Err(_) => {
                self.binary.remove(&m.0);
                (Outcome::Unknown, Step::Failed)
            }
        }
    }
}

/// A binary-protocol error answer: what it says happened.
fn server_error(sh: &Shared, m: &Member, key: &str, op: Op, msg: &str) -> (Outcome, Step) {
    match (op, msg) {
        (Op::Get, "not found") => (Outcome::Ok(Ret::Absent), Step::Answered),
        (Op::Delete, "not found") => (Outcome::Ok(Ret::NotFound), Step::Answered),
        // Another write of the key in flight: refused before anything happened.
        (_, text) if text.contains("another write of this key") => {
            (Outcome::Failed, Step::Answered)
        }
        (_, text) if text.contains("not found") || text.contains("empty value") => {
            unexpected(sh, m, key, op, msg.to_owned());
            (Outcome::Unknown, Step::Answered)
        }
        // Index or volume trouble: the outcome is unknown.
        _ => (Outcome::Unknown, Step::Failed),
    }
}

fn unexpected(sh: &Shared, m: &Member, key: &str, op: Op, what: String) {
    sh.unexpected
        .lock()
        .unwrap()
        .push(format!("node {}: {op:?} {key}: {what}", m.0));
}

/// One JSON request.
async fn json(sh: &Shared, m: &Member, key: &str, op: Op) -> (Outcome, Step) {
    let url = format!("http://{}{key}", m.1);
    let req = match op {
        Op::Set(v) => http()
            .put(&url)
            .json(&serde_json::json!({ "value": text(key, v) })),
        Op::Get => http().get(&url),
        _ => http().delete(&url),
    };
    let r = match req.timeout(REQUEST_TIMEOUT).send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return (Outcome::Failed, Step::Failed),
        Err(_) => return (Outcome::Unknown, Step::Failed),
    };
    let status = r.status().as_u16();
    let body: serde_json::Value = match r.json().await {
        Ok(b) => b,
        Err(_) if status >= 500 => return (Outcome::Unknown, Step::Failed),
        Err(e) => {
            unexpected(sh, m, key, op, format!("{status} without JSON: {e}"));
            return (Outcome::Unknown, Step::Answered);
        }
    };
    match (op, status) {
        (Op::Set(_), 200) => (Outcome::Ok(Ret::Created), Step::Answered),
        (Op::Get, 200) => match body["data"].as_str().and_then(|s| identify(s.as_bytes())) {
            Some(v) => (Outcome::Ok(Ret::Value(v)), Step::Answered),
            None => {
                unexpected(sh, m, key, op, format!("GET answered {body}"));
                (Outcome::Unknown, Step::Answered)
            }
        },
        (Op::Delete, 200) => (Outcome::Ok(Ret::Deleted), Step::Answered),
        (Op::Get, 404) => (Outcome::Ok(Ret::Absent), Step::Answered),
        (Op::Delete, 404) => (Outcome::Ok(Ret::NotFound), Step::Answered),
        (_, 409) => (Outcome::Failed, Step::Answered),
        (_, s) if s >= 500 => (Outcome::Unknown, Step::Failed),
        (_, s) => {
            unexpected(sh, m, key, op, format!("{s} {body}"));
            (Outcome::Unknown, Step::Answered)
        }
    }
}

/// One client: SET (40 %) / GET (40 %) / DELETE (20 %) on the current keys, through its
/// own member; after a failure it moves on to the next member, and back to its own
/// after [`AWAY_FROM_HOME`] answers elsewhere (like tests/common/workload.rs).
async fn client_loop(sh: Arc<Shared>, members: Vec<Member>, c: usize, front: Front) {
    let mut rng = fastrand::Rng::with_seed(c as u64 * 104_729 + 3);
    let mut conn = Conn {
        front,
        binary: Default::default(),
    };
    let home = c % members.len();
    let (mut target, mut away) = (home, 0);
    for _ in 0..MAX_OPS_PER_CLIENT {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        let seq = sh.seq.fetch_add(1, Ordering::Relaxed);
        let generation = seq / (KEYS_PER_GEN * OPS_PER_KEY);
        let key = format!("/{}/g{generation}/k{}", sh.prefix, seq % KEYS_PER_GEN);
        let op = match rng.u8(0..100) {
            0..40 => Op::Set(FIRST_VALUE + sh.next_value.fetch_add(1, Ordering::Relaxed)),
            40..80 => Op::Get,
            _ => Op::Delete,
        };
        match conn.request(&sh, c, &members[target], &key, op).await {
            Step::Answered if target != home => {
                away += 1;
                if away >= AWAY_FROM_HOME {
                    (target, away) = (home, 0);
                }
            }
            Step::Answered => {}
            Step::Failed => {
                target = (target + 1) % members.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The front-end load: [`CLIENTS_EACH`] JSON and binary clients until
/// [`FrontLoad::finish`].
pub struct FrontLoad {
    pub sh: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FrontLoad {
    /// Starts the clients on `members`, keys under `/prefix/`.
    pub fn start(members: Vec<Member>, prefix: &str) -> FrontLoad {
        let sh = Arc::new(Shared {
            history: History::new(),
            prefix: prefix.to_owned(),
            seq: AtomicU64::new(0),
            next_value: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            unexpected: Default::default(),
        });
        let mut tasks = Vec::new();
        for i in 0..CLIENTS_EACH * 2 {
            let front = if i % 2 == 0 {
                Front::Json
            } else {
                Front::Binary
            };
            let sh = Arc::clone(&sh);
            tasks.push(tokio::spawn(client_loop(sh, members.clone(), i, front)));
        }
        FrontLoad { sh, tasks }
    }

    /// Stops the clients and waits for them.
    pub async fn finish(self) -> Arc<Shared> {
        self.sh.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.sh
    }
}

/// After the heal: reads every key through every member, once through each
/// front-end (recorded, as clients 2000 + node and 3000 + node); a read that fails is
/// reported.
pub async fn final_reads(sh: &Shared, members: &[Member]) -> Vec<String> {
    let keys: std::collections::BTreeSet<String> =
        sh.history.operations().into_iter().map(|o| o.key).collect();
    let mut failed = Vec::new();
    for m in members {
        for (front, base) in [(Front::Json, 2000), (Front::Binary, 3000)] {
            let mut conn = Conn {
                front,
                binary: Default::default(),
            };
            for key in &keys {
                let c = base + m.0 as usize;
                if let Step::Failed = conn.request(sh, c, m, key, Op::Get).await {
                    failed.push(format!("node {} ({front:?}): final GET {key} failed", m.0));
                }
            }
        }
    }
    failed
}
