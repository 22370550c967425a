//! A highly available index for tests: N `hoard server` processes (node ids 1..=N)
//! replicating the index with Raft, over shared native volumes, all on loopback.
//!
//! The interface assumed (the HA index's):
//! `hoard server --node-id N --peers 1=127.0.0.1:P1,2=…,3=… --db DIR --volumes v1,v2,v3
//! --port PN --bind 127.0.0.1`, each node's `--peers` naming the address *that node*
//! uses to reach each peer (its own entry is its own address). With
//! [`Links::Proxied`] every link `from → to` goes through its own [`Proxy`], so a test
//! can cut exactly the links it wants. `GET /-/health` carries
//! `"raft": {"node_id", "role", "leader_id", "term", "last_applied", "members"}`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cluster::{client, free_port, hoard_bin, wait_listening, Kind, Proc, Volume};
use super::netns::Net;
use super::proxy::Proxy;

/// How long the harness waits for the cluster to reach a state it asks for (a
/// leader, convergence): a bound against hanging, not a performance expectation.
pub const WAIT: Duration = Duration::from_secs(30);

/// How the index servers reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Directly.
    Direct,
    /// Every link `from → to` through its own proxy (see [`IndexCluster::partition`]).
    Proxied,
}

/// A node's Raft state, from `/-/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    /// `node_id`.
    pub node_id: u64,
    /// `role`: leader, follower, learner or candidate.
    pub role: String,
    /// `leader_id`.
    pub leader_id: Option<u64>,
    /// `term`.
    pub term: u64,
    /// `last_applied`.
    pub last_applied: u64,
    /// `members`.
    pub members: Vec<u64>,
}

impl RaftStatus {
    /// Parses the `raft` object of a health report.
    pub fn from_health(h: &serde_json::Value) -> Option<RaftStatus> {
        let r = h.get("raft")?;
        Some(RaftStatus {
            node_id: r["node_id"].as_u64()?,
            role: r["role"].as_str()?.to_owned(),
            leader_id: r["leader_id"].as_u64(),
            term: r["term"].as_u64()?,
            last_applied: r["last_applied"].as_u64()?,
            members: r["members"]
                .as_array()?
                .iter()
                .filter_map(serde_json::Value::as_u64)
                .collect(),
        })
    }

    /// Whether it says it is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == "leader"
    }
}

/// One observation of one node.
#[derive(Debug, Clone)]
pub struct RaftSample {
    /// When it was answered.
    pub at: Instant,
    /// The node asked.
    pub node: u64,
    /// What it said.
    pub status: RaftStatus,
}

/// Every observation made by the harness (its waits and the [`Sampler`]), for the
/// "at most one leader per term" check.
#[derive(Debug, Clone, Default)]
pub struct SampleLog(Arc<Mutex<Vec<RaftSample>>>);

impl SampleLog {
    fn push(&self, s: RaftSample) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }

    /// A copy of every sample so far.
    pub fn samples(&self) -> Vec<RaftSample> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Checks that no term ever had two leaders: per term, the nodes that said they
    /// lead and the leaders that nodes named are at most one node. Returns the number
    /// of terms in which a leader was seen (for the caller to check the samples
    /// cover what it expects), or a description of the two leaders.
    pub fn check_one_leader_per_term(&self) -> Result<usize, String> {
        let mut leaders: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        let mut witnesses: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for s in self.samples() {
            let st = &s.status;
            let named = if st.is_leader() {
                Some(st.node_id)
            } else {
                st.leader_id
            };
            if let Some(l) = named {
                leaders.entry(st.term).or_default().insert(l);
                witnesses
                    .entry(st.term)
                    .or_default()
                    .push(format!("node {} ({}) says leader {l}", s.node, st.role));
            }
        }
        for (term, ls) in &leaders {
            if ls.len() > 1 {
                let mut w = witnesses.remove(term).unwrap_or_default();
                w.dedup();
                return Err(format!("term {term} had leaders {ls:?}: {}", w.join("; ")));
            }
        }
        Ok(leaders.len())
    }
}

/// One index server.
pub struct IndexNode {
    /// Its Raft node id.
    pub id: u64,
    /// Its port (clients and peers; Raft rides on it under `/-/raft/`).
    pub port: u16,
    /// `host:port` where clients and peers reach it.
    pub addr: String,
    /// Its index directory.
    pub db: PathBuf,
    /// The process.
    pub proc: Proc,
}

impl IndexNode {
    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Index servers over shared volumes.
pub struct IndexCluster {
    /// By node id.
    pub nodes: BTreeMap<u64, IndexNode>,
    /// The shared volumes.
    pub volumes: Vec<Volume>,
    /// With [`Links::Proxied`]: the proxy of every link `(from, to)`.
    pub proxies: BTreeMap<(u64, u64), Proxy>,
    /// Every Raft observation made.
    pub samples: SampleLog,
    /// Keeps every directory alive (volumes, index databases, logs).
    pub tmp: tempfile::TempDir,
}

impl IndexCluster {
    /// Starts `volumes` native volumes and `n` index servers (ids 1..=n) over them,
    /// with `extra` server flags; waits until every process listens (not for a
    /// leader: see [`IndexCluster::leader`]).
    pub fn start(n: u64, volumes: usize, links: Links, extra: &[&str]) -> IndexCluster {
        let tmp = tempfile::tempdir().unwrap();
        let volumes: Vec<Volume> = (0..volumes)
            .map(|i| Volume::start(Kind::Native, tmp.path(), &format!("vol{i}")))
            .collect();
        let volume_list = addresses(&volumes);
        let ids: Vec<u64> = (1..=n).collect();
        let ports: BTreeMap<u64, u16> = ids.iter().map(|&id| (id, free_port())).collect();
        let mut proxies = BTreeMap::new();
        if links == Links::Proxied {
            for &from in &ids {
                for &to in &ids {
                    if from != to {
                        let target = format!("127.0.0.1:{}", ports[&to]).parse().unwrap();
                        proxies.insert((from, to), Proxy::start(target));
                    }
                }
            }
        }
        let mut nodes = BTreeMap::new();
        for &id in &ids {
            let peers = ids
                .iter()
                .map(|&to| match proxies.get(&(id, to)) {
                    Some(p) => format!("{to}={}", p.addr()),
                    None => format!("{to}=127.0.0.1:{}", ports[&to]),
                })
                .collect::<Vec<_>>()
                .join(",");
            let db = tmp.path().join(format!("db{id}"));
            let mut cmd = server_command(id, &peers, &db, &volume_list, ports[&id], "127.0.0.1");
            cmd.extend(extra.iter().map(|s| s.to_string()));
            let proc = Proc::spawn(cmd, tmp.path().join(format!("node{id}.log")));
            nodes.insert(
                id,
                IndexNode {
                    id,
                    port: ports[&id],
                    addr: format!("127.0.0.1:{}", ports[&id]),
                    db,
                    proc,
                },
            );
        }
        for node in nodes.values() {
            wait_listening(&node.addr);
        }
        IndexCluster {
            nodes,
            volumes,
            proxies,
            samples: SampleLog::default(),
            tmp,
        }
    }

    /// Starts `volumes` native volumes on host `vol` of `net` (ports 3001…) and `n`
    /// index servers on hosts `n1`…`n<n>` (port 3000 each), with `extra` server flags
    /// and, per node, `env(id)` in its environment (a clock offset through
    /// libfaketime, say); waits until every process listens. The caller's thread must
    /// be in a host of `net` that reaches them ([`Net::enter`]).
    pub fn start_netns(
        net: &Net,
        n: u64,
        volumes: usize,
        extra: &[&str],
        env: impl Fn(u64) -> Vec<(String, String)>,
    ) -> IndexCluster {
        let tmp = tempfile::tempdir().unwrap();
        let volumes: Vec<Volume> = (0..volumes)
            .map(|i| {
                Volume::start_netns(net, "vol", tmp.path(), &format!("vol{i}"), 3001 + i as u16)
            })
            .collect();
        let volume_list = addresses(&volumes);
        let addr = |id: u64| format!("{}:3000", net.ip(&format!("n{id}")));
        let peers = (1..=n)
            .map(|id| format!("{id}={}", addr(id)))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let db = tmp.path().join(format!("db{id}"));
            let host = format!("n{id}");
            let mut cmd = server_command(id, &peers, &db, &volume_list, 3000, net.ip(&host));
            cmd.extend(extra.iter().map(|s| s.to_string()));
            let cmd = net.command(&host, &env(id), &cmd);
            let proc = Proc::spawn(cmd, tmp.path().join(format!("node{id}.log")));
            let node = IndexNode {
                id,
                port: 3000,
                addr: addr(id),
                db,
                proc,
            };
            nodes.insert(id, node);
        }
        for node in nodes.values() {
            wait_listening(&node.addr);
        }
        IndexCluster {
            nodes,
            volumes,
            proxies: BTreeMap::new(),
            samples: SampleLog::default(),
            tmp,
        }
    }

    /// Starts a new index server `id` with `--join` on a fresh port and database over
    /// the same volumes (with `extra` flags); waits until it listens. It is not a
    /// member until added (`hoard cluster add`).
    pub fn start_joining(&mut self, id: u64, extra: &[&str]) {
        self.start_joining_at(id, free_port(), extra);
    }

    /// [`IndexCluster::start_joining`] on a port the caller chose (for instance one
    /// already named in a `cluster add` that is waiting for the node).
    pub fn start_joining_at(&mut self, id: u64, port: u16, extra: &[&str]) {
        assert!(!self.nodes.contains_key(&id), "node {id} exists");
        let db = self.tmp.path().join(format!("db{id}"));
        let volumes = addresses(&self.volumes);
        let peers = format!("{id}=127.0.0.1:{port}");
        let mut cmd = server_command(id, &peers, &db, &volumes, port, "127.0.0.1");
        cmd.push("--join".into());
        cmd.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(cmd, self.tmp.path().join(format!("node{id}.log")));
        let addr = format!("127.0.0.1:{port}");
        wait_listening(&addr);
        self.nodes.insert(
            id,
            IndexNode {
                id,
                port,
                addr,
                db,
                proc,
            },
        );
    }

    /// [`IndexCluster::start_joining`] on host `host` of `net` (port 3000, as in
    /// [`IndexCluster::start_netns`]), with `extra` flags and `env`: a member whose
    /// disk was wiped coming back under the new id `id`. Waits until it listens.
    pub fn start_joining_netns(
        &mut self,
        net: &Net,
        host: &str,
        id: u64,
        extra: &[&str],
        env: Vec<(String, String)>,
    ) {
        assert!(!self.nodes.contains_key(&id), "node {id} exists");
        let db = self.tmp.path().join(format!("db{id}"));
        let volumes = addresses(&self.volumes);
        let addr = format!("{}:3000", net.ip(host));
        let peers = format!("{id}={addr}");
        let mut cmd = server_command(id, &peers, &db, &volumes, 3000, net.ip(host));
        cmd.push("--join".into());
        cmd.extend(extra.iter().map(|s| s.to_string()));
        let cmd = net.command(host, &env, &cmd);
        let proc = Proc::spawn(cmd, self.tmp.path().join(format!("node{id}.log")));
        wait_listening(&addr);
        self.nodes.insert(
            id,
            IndexNode {
                id,
                port: 3000,
                addr,
                db,
                proc,
            },
        );
    }

    /// Forgets node `id` (after killing it): later waits and samples leave it out.
    pub fn forget(&mut self, id: u64) -> IndexNode {
        self.nodes.remove(&id).expect("no such node")
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// `http://127.0.0.1:<port>` of node `id`.
    pub fn url(&self, id: u64) -> String {
        self.nodes[&id].url()
    }

    /// `(id, url)` of every node.
    pub fn urls(&self) -> Vec<(u64, String)> {
        self.nodes.values().map(|n| (n.id, n.url())).collect()
    }

    /// Node `id`'s Raft state, `None` if it does not answer within a second (or
    /// reports none). Recorded in [`IndexCluster::samples`].
    pub async fn status(&self, id: u64) -> Option<RaftStatus> {
        fetch_status(&self.samples, id, &self.url(id)).await
    }

    /// The Raft state of each node in `ids`, asked concurrently (and recorded).
    pub async fn statuses(&self, ids: &[u64]) -> BTreeMap<u64, Option<RaftStatus>> {
        let asks = ids.iter().map(|&id| {
            let (log, url) = (self.samples.clone(), self.url(id));
            async move { (id, fetch_status(&log, id, &url).await) }
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .collect()
    }

    /// One sample of every node: `(term, leader)` per node, recorded for the
    /// one-leader-per-term check.
    pub async fn raft_sample(&self) -> BTreeMap<u64, Option<(u64, Option<u64>)>> {
        self.statuses(&self.ids())
            .await
            .into_iter()
            .map(|(id, s)| (id, s.map(|s| (s.term, s.leader_id))))
            .collect()
    }

    /// Waits until, among the nodes `among`, exactly one says it leads, and every
    /// node of `among` that answers names it in the same term; returns `(leader,
    /// term)`. Panics after [`WAIT`] with the last statuses and the logs.
    pub async fn wait_leader_among(&self, among: &[u64]) -> (u64, u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let st = self.statuses(among).await;
            let leaders: Vec<&RaftStatus> =
                st.values().flatten().filter(|s| s.is_leader()).collect();
            if let [l] = leaders[..] {
                let agreed = st
                    .values()
                    .flatten()
                    .all(|s| s.term == l.term && s.leader_id == Some(l.node_id));
                if agreed {
                    return (l.node_id, l.term);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single leader among {among:?}: {st:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The leader, once all nodes agree on exactly one: `(id, term)`.
    pub async fn leader(&self) -> (u64, u64) {
        self.wait_leader_among(&self.ids()).await
    }

    /// Waits until the nodes other than `old` agree on a leader other than `old`;
    /// returns `(id, term)`.
    pub async fn wait_leader_other_than(&self, old: u64) -> (u64, u64) {
        let others: Vec<u64> = self.ids().into_iter().filter(|&i| i != old).collect();
        let deadline = Instant::now() + WAIT;
        loop {
            let (l, term) = self.wait_leader_among(&others).await;
            if l != old {
                return (l, term);
            }
            assert!(Instant::now() < deadline, "{old} stays the leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the nodes `ids` agree on leader and term, the leader is one of
    /// them, and all have applied the same log index twice in a row (nothing left in
    /// flight). Returns their common status as seen by the leader.
    pub async fn wait_converged(&self, ids: &[u64]) -> RaftStatus {
        let deadline = Instant::now() + WAIT;
        let mut previous: Option<u64> = None;
        loop {
            let st = self.statuses(ids).await;
            let all: Vec<&RaftStatus> = st.values().flatten().collect();
            let agreed = all.len() == ids.len()
                && all.iter().all(|s| {
                    s.term == all[0].term
                        && s.leader_id == all[0].leader_id
                        && s.last_applied == all[0].last_applied
                })
                && all[0].leader_id.is_some_and(|l| ids.contains(&l));
            if agreed {
                let applied = all[0].last_applied;
                if previous == Some(applied) {
                    let leader = all[0].leader_id.unwrap();
                    return all
                        .iter()
                        .find(|s| s.node_id == leader)
                        .map(|s| (*s).clone())
                        .unwrap();
                }
                previous = Some(applied);
            } else {
                previous = None;
            }
            assert!(
                Instant::now() < deadline,
                "nodes {ids:?} did not converge: {st:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until each node of `ids` has probed every volume and sees it up.
    pub async fn wait_volumes_up(&self, ids: &[u64]) {
        for &id in ids {
            let url = format!("{}/-/health", self.url(id));
            let deadline = Instant::now() + WAIT;
            loop {
                let h = get_json_within(&url, Duration::from_secs(2)).await;
                let up = h.as_ref().is_some_and(|h| {
                    h["volumes"].as_array().is_some_and(|vs| {
                        vs.len() == self.volumes.len()
                            && vs.iter().all(|v| {
                                v["up"] == true && v["last_seen_ms"].as_u64().unwrap_or(0) > 0
                            })
                    })
                });
                if up {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {id}: volumes not up: {h:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Sends `sig` to member `id` (SIGSTOP / SIGCONT to pause and resume it).
    pub fn signal(&self, id: u64, sig: libc::c_int) {
        if let Some(pid) = self.nodes[&id].proc.pid() {
            // SAFETY: kill(2) on a child we started and have not reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
        }
    }

    /// kill -9 node `id`.
    pub fn kill(&mut self, id: u64) {
        self.nodes.get_mut(&id).unwrap().proc.kill();
    }

    /// Starts node `id` again (same id, port, peers and database); waits until it
    /// listens.
    pub fn restart(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.proc.restart();
        wait_listening(&node.addr);
    }

    /// kill -9 every node at once (the signals are sent before any is reaped).
    pub fn kill_all(&mut self) {
        for node in self.nodes.values() {
            if let Some(pid) = node.proc.pid() {
                // SAFETY: kill(2) on a child we started and have not reaped yet.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        for node in self.nodes.values_mut() {
            node.proc.kill();
        }
    }

    /// Starts every node again; waits until all listen.
    pub fn restart_all(&mut self) {
        for node in self.nodes.values_mut() {
            node.proc.restart();
        }
        for node in self.nodes.values() {
            wait_listening(&node.addr);
        }
    }

    /// Cuts every link to and from node `id` (needs [`Links::Proxied`]). Clients
    /// still reach it directly.
    pub fn partition(&self, id: u64) {
        assert!(!self.proxies.is_empty(), "partition needs Links::Proxied");
        for ((from, to), p) in &self.proxies {
            if *from == id || *to == id {
                p.cut();
            }
        }
    }

    /// Heals every cut link.
    pub fn heal(&self) {
        for p in self.proxies.values() {
            p.heal();
        }
    }

    /// Bytes forwarded so far on the links to and from `id`, both ways.
    pub fn link_bytes(&self, id: u64) -> BTreeMap<(u64, u64), u64> {
        self.proxies
            .iter()
            .filter(|((from, to), _)| *from == id || *to == id)
            .map(|(&k, p)| (k, p.bytes_forwarded()))
            .collect()
    }

    /// Starts a background task sampling every node's Raft state every 50 ms into
    /// [`IndexCluster::samples`], until the returned sampler is stopped or dropped.
    pub fn start_sampler(&self) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (log, urls, flag) = (self.samples.clone(), self.urls(), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::Relaxed) {
                let asks = urls.iter().map(|(id, url)| fetch_status(&log, *id, url));
                futures_util::future::join_all(asks).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Sampler {
            stop,
            task: Some(task),
        }
    }

    /// Runs an online `verify --repair` (grace 0) through node `id` and waits for it
    /// to finish; returns the job's final status (asserted `done`, nothing failed).
    pub async fn repair(&self, id: u64) -> serde_json::Value {
        let url = self.url(id);
        let r = http()
            .post(format!("{url}/-/admin/verify?repair=1&grace=0s"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            reqwest::StatusCode::ACCEPTED,
            "repair not started"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) =
                get_json_within(&format!("{url}/-/admin/status"), Duration::from_secs(5)).await
            {
                if s["running"].is_null() && !s["last"].is_null() {
                    let last = s["last"].clone();
                    assert_eq!(last["state"], "done", "{last}");
                    assert_eq!(last["counts"]["failed"], 0, "{last}");
                    return last;
                }
            }
            assert!(Instant::now() < deadline, "repair did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every node of `ids` reports no `writing` record (no intent).
    pub async fn wait_no_intents(&self, ids: &[u64]) {
        for &id in ids {
            let url = format!("{}/-/health", self.url(id));
            let deadline = Instant::now() + WAIT;
            loop {
                let h = get_json_within(&url, Duration::from_secs(2)).await;
                if h.as_ref().is_some_and(|h| h["keys"]["writing"] == 0) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {id}: intents left after repair: {h:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The last 40 lines of each node's log (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in self.nodes.values() {
            let text = node.proc.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out.push_str(&format!(
                "--- node {} log (tail) ---\n{}\n",
                node.id,
                tail.join("\n")
            ));
        }
        out
    }
}

/// The volumes' addresses, comma-separated (`--volumes`).
fn addresses(volumes: &[Volume]) -> String {
    volumes
        .iter()
        .map(|v| v.addr.clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// `hoard server` as member `id` of an index cluster of `peers`, with its database in
/// `db`, over `volumes`, serving `bind:port`.
fn server_command(
    id: u64,
    peers: &str,
    db: &std::path::Path,
    volumes: &str,
    port: u16,
    bind: &str,
) -> Vec<String> {
    [
        hoard_bin(),
        "server",
        "--node-id",
        &id.to_string(),
        "--peers",
        peers,
        "--db",
        &db.display().to_string(),
        "--volumes",
        volumes,
        "--port",
        &port.to_string(),
        "--bind",
        bind,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A background Raft sampler (see [`IndexCluster::start_sampler`]).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Sampler {
    /// Stops sampling and waits for the task.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A client (no redirects followed) reused per thread: each test has its own runtime
/// and threads, and pooled connections belong to a runtime.
pub fn http() -> reqwest::Client {
    thread_local! {
        static HTTP: reqwest::Client = client();
    }
    HTTP.with(reqwest::Client::clone)
}

/// `GET url` as JSON, `None` on any failure or after `timeout`.
pub async fn get_json_within(url: &str, timeout: Duration) -> Option<serde_json::Value> {
    let r = http().get(url).timeout(timeout).send().await.ok()?;
    r.json().await.ok()
}

async fn fetch_status(log: &SampleLog, id: u64, url: &str) -> Option<RaftStatus> {
    let h = get_json_within(&format!("{url}/-/health"), Duration::from_secs(1)).await?;
    let status = RaftStatus::from_health(&h)?;
    log.push(RaftSample {
        at: Instant::now(),
        node: id,
        status: status.clone(),
    });
    Some(status)
}
