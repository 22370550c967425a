//! The highly available index: 3–5 index servers replicate every index command through
//! a Raft log (openraft 0.9), so any of them can fail without losing an acknowledged
//! write.
//!
//! Layers, bottom up: [`log_store`] (log and vote, fsynced, in `<db>/raft-log/`: [`segments`]),
//! [`state_machine`] (committed commands applied to the index with the same
//! `index::apply` as a single server; snapshots of the index as files), [`network`]
//! (HTTP to peers; AppendEntries in postcard, [`wire`]), [`api`] (the `/-/raft/…` endpoints), and [`RaftNode`]
//! here, which the index uses as its [`Replicator`]:
//!
//! * **Writes**: `Index::apply` proposes the command. On the leader it is appended,
//!   replicated to a majority, applied, and its outcome returned; on a follower the
//!   command is forwarded to the leader (`/-/raft/propose`), and the answer waits until
//!   this node has applied it too, so the caller's next read sees it. A proposal is
//!   retried only when it certainly was not applied (no leader yet, leader unreachable
//!   before the request was sent); otherwise its outcome is unknown and the caller
//!   fails the request (an intent, if any, is left for repair).
//! * **Reads** are linearizable by default: a read barrier asks the leader for its
//!   read index (the leader confirms its leadership with a quorum first), then waits
//!   until this node has applied that far. Concurrent reads share one barrier: a read
//!   joins the next round that starts after it arrived. `--read-consistency stale`
//!   skips the barrier.
//! * **Formation**: every node of a fresh cluster initializes it with the membership of
//!   `--peers` (openraft allows several nodes to do so with the same membership), so the
//!   cluster forms once a majority is up; restarted nodes just rejoin. A node started
//!   with `--join` does not: it waits to be added ([`members`]: online add and remove).

pub mod api;
mod batch;
mod campaign;
mod lease;
pub mod log_store;
pub mod members;
pub mod network;
mod segments;
pub mod state_machine;
pub mod wire;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use openraft::error::RaftError;
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use tokio::sync::oneshot;

use crate::index::{Applied, Command, Index, IndexError, Replicator};
pub use batch::Proposal;
use network::{CallError, Network, PeerClient};

openraft::declare_raft_types!(
    /// hoard's Raft types: index commands in, their outcomes out, the index snapshot
    /// as a file.
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = tokio::fs::File,
);

/// The outcome of applying one log entry: one per command it carries (none for
/// entries without a command).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome(pub Vec<Applied>);

/// How long a proposal or a read barrier may take before the request fails (no leader
/// elected meanwhile, or the leader unreachable).
const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// How long after a quorum acknowledged it the leader answers linearizable reads from
/// its own log without asking the quorum again (its lease is `election_timeout_max`,
/// [`ELECTION_MAX_MS`]; see [`RaftNode::lease_read_index`]): under half of it.
const LEASE_READ: Duration = Duration::from_millis(ELECTION_MAX_MS * 3 / 8);
/// The shortest election timeout, ms: a follower that heard no leader for
/// `ELECTION_MAX_MS` (openraft's leader lease) plus a random time from this to
/// [`ELECTION_MAX_MS`] campaigns, so a leader's death or isolation is followed by an
/// election after 1.2–1.6 s (heartbeats every 100 ms).
const ELECTION_MIN_MS: u64 = 400;
/// The longest election timeout, ms, and the followers' leader lease.
const ELECTION_MAX_MS: u64 = 800;
/// Most entries in one AppendEntries: with entries of at most `batch::MAX_ENTRY_BYTES`
/// (or one command), a request stays well under the Raft endpoint's body limit.
const MAX_PAYLOAD_ENTRIES: u64 = 64;
/// Pause between retries while there is no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a leader may go without any quorum acknowledging it before it stops taking
/// requests (etcd's CheckQuorum): twice the followers' leader lease, after which they
/// may well have elected another leader. Requests then fail at once, so clients move
/// on to a member that can serve them, instead of waiting out [`WAIT_LIMIT`].
const QUORUM_LOST_MS: u64 = 2 * ELECTION_MAX_MS;

/// `hoard server` options of an index cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// This server's id in the index cluster (with `--peers`). Never reuse the id of
    /// another (past) member.
    #[arg(long, env = "HOARD_NODE_ID", requires = "peers")]
    pub node_id: Option<u64>,
    /// Every member of the index cluster as `id=host:port`, comma-separated, this one
    /// included: the address where each serves its HTTP API (Raft rides on it under
    /// `/-/raft/`). Without it, the index is not replicated.
    #[arg(long, env = "HOARD_PEERS", value_delimiter = ',', requires = "node_id")]
    pub peers: Vec<String>,
    /// `linearizable` (default): a read sees every write acknowledged before it began,
    /// on any node. `stale`: reads answer from this node's copy, which may lag.
    #[arg(long, env = "HOARD_READ_CONSISTENCY", default_value = "linearizable")]
    pub read_consistency: ReadConsistency,
    /// Join an index cluster that already runs instead of forming one: this node waits
    /// with an empty log until a member adds it (`hoard cluster add ID=HOST:PORT`).
    /// Use it for every node added after the cluster formed, including a replacement
    /// for a node that lost its disk (under a new --node-id).
    #[arg(long, env = "HOARD_JOIN", requires = "node_id")]
    pub join: bool,
    /// Snapshot the index after this many log entries (the log before a snapshot is
    /// then dropped; a member that is that far behind catches up from the snapshot).
    #[arg(long, env = "HOARD_SNAPSHOT_EVERY", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,
}

/// What a read may return in an index cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadConsistency {
    /// Every read reflects all writes acknowledged before it began.
    Linearizable,
    /// Reads answer from the local copy.
    Stale,
}

/// A validated cluster configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id.
    pub node_id: u64,
    /// Every member: id → address.
    pub peers: BTreeMap<u64, String>,
    /// Read consistency.
    pub reads: ReadConsistency,
    /// Wait to be added instead of forming a cluster (`--join`).
    pub join: bool,
    /// Log entries between snapshots.
    pub snapshot_every: u64,
    /// Members serve HTTPS (`--tls-cert`): peers are called over it.
    pub https: bool,
    /// Trust roots for peers' certificates (`--tls-ca`).
    pub tls_ca: Option<std::path::PathBuf>,
}

impl ClusterArgs {
    /// The cluster configuration, or `None` for a single server.
    pub fn build(&self) -> anyhow::Result<Option<ClusterConfig>> {
        let Some(node_id) = self.node_id else {
            return Ok(None);
        };
        let mut peers = BTreeMap::new();
        for p in &self.peers {
            let (id, addr) = p
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--peers entry {p:?} is not id=host:port"))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("--peers entry {p:?}: the id is not a number"))?;
            if id > u64::from(u32::MAX) {
                anyhow::bail!("--peers entry {p:?}: node ids go up to {}", u32::MAX);
            }
            if peers.insert(id, addr.trim().to_string()).is_some() {
                anyhow::bail!("--peers names node {id} twice");
            }
        }
        if !peers.contains_key(&node_id) {
            anyhow::bail!("--peers does not list this node's id {node_id}");
        }
        Ok(Some(ClusterConfig {
            node_id,
            peers,
            reads: self.read_consistency,
            join: self.join,
            snapshot_every: self.snapshot_every,
            https: false,
            tls_ca: None,
        }))
    }
}

/// A running member of the index cluster.
pub struct RaftNode {
    /// The openraft handle.
    pub raft: Raft<TypeConfig>,
    /// This node's id.
    pub id: u64,
    /// The configured members.
    pub peers: BTreeMap<u64, String>,
    client: PeerClient,
    /// The index this node replicates (for the retired member ids); taken by
    /// [`RaftNode::stop`], since the index holds this node as its replicator (a cycle
    /// that would otherwise keep the index's writer open for ever).
    index: Mutex<Option<Index>>,
    /// Set by the first [`RaftNode::stop`].
    stopping: std::sync::atomic::AtomicBool,
    reads: ReadConsistency,
    barrier: Mutex<BarrierState>,
    /// While leading: the read lease, from this leader's read-index rounds.
    lease: lease::Lease,
    /// This node itself, for the background read-index rounds.
    me: std::sync::Weak<RaftNode>,
    /// Groups this leader's proposals into log entries.
    batcher: batch::Batcher,
    /// Refused candidates and the last word from a leader ([`campaign`]).
    ahead: campaign::Ahead,
}

/// Reads waiting for the next read-index round, and whether a round is running.
#[derive(Default)]
struct BarrierState {
    running: bool,
    waiting: Vec<oneshot::Sender<Result<u64, String>>>,
}

/// Raft timing: heartbeats every 100 ms; an election after [`ELECTION_MIN_MS`] to
/// [`ELECTION_MAX_MS`] past the leader lease without one.
fn raft_config(snapshot_every: u64) -> anyhow::Result<Config> {
    let config = Config {
        cluster_name: "hoard".into(),
        heartbeat_interval: 100,
        election_timeout_min: ELECTION_MIN_MS,
        election_timeout_max: ELECTION_MAX_MS,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: snapshot_every.min(1_000),
        snapshot_max_chunk_size: 1 << 20,
        install_snapshot_timeout: 10_000,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    };
    Ok(config.validate()?)
}

impl RaftNode {
    /// Starts this member: opens the log in `db`, runs Raft over `index`, and forms the
    /// cluster if it is new. `token` authenticates calls to peers.
    pub async fn start(
        cfg: &ClusterConfig,
        db: &Path,
        index: Index,
        token: Option<String>,
    ) -> anyhow::Result<Arc<RaftNode>> {
        let log = log_store::LogStore::open(&db.join("raft-log"))?;
        let sm = state_machine::StateMachine::new(index.clone(), &db.join("snapshots"))?;
        let ca = match &cfg.tls_ca {
            Some(path) => crate::tls::ca_certificates(path)?,
            None => Vec::new(),
        };
        let client = PeerClient::new(Duration::from_secs(1), token, cfg.https, ca)?;
        let network = Network {
            client: client.clone(),
            peers: cfg.peers.clone(),
        };
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(raft_config(cfg.snapshot_every)?),
            network,
            log,
            sm,
        )
        .await
        .map_err(|e| anyhow::anyhow!("starting Raft: {e}"))?;
        let node = Arc::new_cyclic(|me| RaftNode {
            id: cfg.node_id,
            peers: cfg.peers.clone(),
            client,
            index: Mutex::new(Some(index.clone())),
            stopping: Default::default(),
            reads: cfg.reads,
            barrier: Mutex::default(),
            lease: lease::Lease::default(),
            me: me.clone(),
            batcher: batch::Batcher::start(raft.clone(), lease_seed(me.clone())),
            ahead: campaign::Ahead::default(),
            raft,
        });
        if cfg.join {
            if !node.raft.is_initialized().await? {
                tracing::info!(
                    "node {} waits to be added to an index cluster (`hoard cluster add {}=<this address>` on a member)",
                    cfg.node_id,
                    cfg.node_id
                );
            }
        } else if !node.raft.is_initialized().await? {
            let members: BTreeMap<u64, BasicNode> = cfg
                .peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            match node.raft.initialize(members).await {
                Ok(()) => tracing::info!("formed index cluster {:?}", cfg.peers),
                Err(e) => tracing::info!("index cluster already formed: {e}"),
            }
        }
        index.replicate_with(node.clone());
        tokio::spawn(export_metrics(node.raft.metrics()));
        Ok(node)
    }

    /// Stops Raft on this member (idempotent): it no longer votes, appends or answers
    /// peers, so nothing keeps its connections busy, and it lets go of its index
    /// handle so the index can close. Proposals and reads fail from then on.
    pub async fn stop(&self) {
        if self
            .stopping
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("stopping Raft: {e}");
        }
        self.index.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Role, leader, term and log positions, for `/-/health`.
    pub fn status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        RaftStatus {
            node_id: self.id,
            role: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            leader_id: m.current_leader,
            term: m.current_term,
            last_applied: m.last_applied.map_or(0, |l| l.index),
            last_log: m.last_log_index.unwrap_or(0),
            members: m.membership_config.membership().voter_ids().collect(),
            read_consistency: match self.reads {
                ReadConsistency::Linearizable => "linearizable",
                ReadConsistency::Stale => "stale",
            },
        }
    }

    /// On the leader: the last log index each member is known to hold (`None`: not
    /// yet known). `None` on other members.
    pub fn replication(&self) -> Option<BTreeMap<u64, Option<u64>>> {
        let m = self.raft.metrics().borrow().clone();
        m.replication.map(|r| {
            r.iter()
                .map(|(id, matched)| (*id, matched.map(|l| l.index)))
                .collect()
        })
    }

    /// The client this member calls its peers with (scheme, trust roots, token).
    pub fn peer_client(&self) -> &PeerClient {
        &self.client
    }

    /// Whether this member leads now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The leader's id and address, when one is known.
    pub fn leader_addr(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let addr = self.peers.get(&leader).cloned().or_else(|| {
            m.membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.addr.clone())
        })?;
        Some((leader, addr))
    }

    /// On a leader no quorum has acknowledged for over [`QUORUM_LOST_MS`]: how long it
    /// has been. `None` on a leader in touch with a quorum, and on other members.
    fn quorum_lost_for(&self) -> Option<u64> {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        let silent = m.millis_since_quorum_ack?;
        (m.state == ServerState::Leader && silent > QUORUM_LOST_MS).then_some(silent)
    }

    /// Resolves once this member leads without a quorum ([`RaftNode::quorum_lost_for`]),
    /// with how long it has; never while it is in touch with one or does not lead.
    /// (openraft reports its metrics on every tick, so this notices within one.)
    async fn quorum_lost(&self) -> u64 {
        let mut rx = self.raft.metrics();
        loop {
            if let Some(ms) = self.quorum_lost_for() {
                return ms;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// The error of a leader without a quorum; `outcome` says what became of the request.
    fn no_quorum(ms: u64, outcome: &str) -> IndexError {
        metrics::counter!("hoard_raft_quorum_lost_total").increment(1);
        IndexError::Replication(format!(
            "this member leads but no majority has answered it for {ms} ms (cut off?): \
             it lost its quorum; {outcome}"
        ))
    }

    /// Waits until this node has applied the log up to `index`.
    async fn applied_at_least(&self, index: u64) -> Result<(), IndexError> {
        self.raft
            .wait(Some(WAIT_LIMIT))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map(|_| ())
            .map_err(|e| IndexError::Replication(format!("waiting to apply {index}: {e}")))
    }

    /// Proposes `cmd` on this node if it leads: `None` when another node leads (the
    /// command was not appended).
    pub async fn propose_here(&self, cmd: Command) -> batch::Answer {
        self.batcher.propose(cmd).await
    }

    /// The leader's read index: on the leader, after confirming its leadership with a
    /// quorum (or within its lease, see [`RaftNode::lease_read_index`]); `None` when
    /// this node does not lead.
    pub async fn read_index_here(&self) -> Result<Option<u64>, IndexError> {
        if let Some(index) = self.lease_read_index() {
            metrics::counter!("hoard_raft_read_index_total", "by" => "lease").increment(1);
            return Ok(Some(index));
        }
        if let Some(ms) = self.quorum_lost_for() {
            return Err(Self::no_quorum(ms, "ask another member"));
        }
        metrics::counter!("hoard_raft_read_index_total", "by" => "quorum").increment(1);
        // Taken before the quorum is asked: its acknowledgement comes after this.
        let round = lease::Lease::round(self.raft.metrics().borrow().current_term);
        let read = tokio::select! {
            read = self.raft.get_read_log_id() => read,
            ms = self.quorum_lost() => return Err(Self::no_quorum(ms, "ask another member")),
        };
        match read {
            Ok((read, _applied)) => {
                self.lease.confirm(round);
                Ok(Some(read.map_or(0, |l| l.index)))
            }
            Err(RaftError::APIError(_)) => Ok(None),
            Err(e) => Err(IndexError::Replication(e.to_string())),
        }
    }

    /// The read index without a round trip, while the leader's lease holds: a read-index
    /// round of this leader's current term that began less than [`LEASE_READ`] ago was
    /// confirmed by a quorum ([`lease`]). openraft's followers refuse to vote for anyone
    /// else for `election_timeout_max` ([`ELECTION_MAX_MS`]) after a heartbeat of a leader, and every
    /// heartbeat of that round was sent after it began, so no other leader can exist,
    /// and so commit anything, until `election_timeout_max` after the round began: every write
    /// acknowledged before now is in this leader's log, and the read waits until it has
    /// applied its whole log. The margin ([`ELECTION_MAX_MS`] − [`LEASE_READ`]) covers clock drift.
    fn lease_read_index(&self) -> Option<u64> {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        (m.state == ServerState::Leader
            && self
                .lease
                .holds(m.current_term, std::time::Instant::now(), LEASE_READ))
        .then(|| m.last_log_index.unwrap_or(0))
    }

    /// One read-index round: from this node if it leads, else from the leader.
    async fn fetch_read_index(&self) -> Result<u64, IndexError> {
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            if let Some(index) = self.read_index_here().await? {
                return Ok(index);
            }
            if let Some((leader, addr)) = self.leader_addr().filter(|(l, _)| *l != self.id) {
                let call = self.client.call(&addr, "read-index", &(), WAIT_LIMIT);
                // A read is safe to ask again: stop waiting on a leader that has been
                // replaced (cut off, it may never answer) and ask the new one.
                let answer: Result<Result<Option<u64>, String>, CallError> = tokio::select! {
                    answer = call => answer,
                    () = self.leader_replaced(leader) => continue,
                };
                match answer {
                    Ok(Ok(Some(index))) => return Ok(index),
                    Ok(Ok(None)) | Err(CallError::Unreachable(_) | CallError::Timeout(_)) => {}
                    Ok(Err(e)) => return Err(IndexError::Replication(e)),
                    Err(e) => {
                        return Err(IndexError::Replication(format!(
                            "read index from node {leader}: {e}"
                        )))
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(IndexError::Replication(
                    "no leader to confirm a read".into(),
                ));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Resolves once this node knows of a leader other than `leader` (or Raft stops).
    async fn leader_replaced(&self, leader: u64) {
        let mut rx = self.raft.metrics();
        loop {
            {
                let m = rx.borrow_and_update();
                if m.state == ServerState::Shutdown || m.current_leader.is_some_and(|l| l != leader)
                {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Runs read-index rounds while reads wait, each round answering every read that
    /// arrived before it started.
    async fn barrier_rounds(self: Arc<Self>) {
        loop {
            let waiting = {
                let mut state = self.barrier.lock().unwrap_or_else(|p| p.into_inner());
                if state.waiting.is_empty() {
                    state.running = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            // Each waiting read wraps the message again (`IndexError::Replication`).
            let result = self.fetch_read_index().await.map_err(|e| match e {
                IndexError::Replication(why) => why,
                other => other.to_string(),
            });
            for w in waiting {
                let _ = w.send(result.clone());
            }
        }
    }
}

/// Reads the replicated lease clock from the index `node` replicates (see
/// `batch::LeaseClock`); weak, as the node owns the batcher that calls it.
fn lease_seed(node: std::sync::Weak<RaftNode>) -> batch::LeaseSeed {
    Box::new(move || {
        let node = node.upgrade()?;
        let index = node
            .index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let value = index.meta(crate::index::LEASE_CLOCK_META).ok()?;
        crate::index::lease_clock(value.as_deref())
    })
}

/// Keeps the Raft gauges of `/-/metrics` current, and counts leader changes, until Raft
/// stops.
async fn export_metrics(
    mut rx: tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>,
) {
    let mut leader = None;
    loop {
        let m = rx.borrow_and_update().clone();
        metrics::gauge!("hoard_raft_term").set(m.current_term as f64);
        metrics::gauge!("hoard_raft_is_leader")
            .set(f64::from(u8::from(m.state == ServerState::Leader)));
        metrics::gauge!("hoard_raft_last_applied")
            .set(m.last_applied.map_or(0, |l| l.index) as f64);
        if let Some(progress) = &m.replication {
            let last = m.last_log_index.unwrap_or(0);
            for (id, matched) in progress {
                let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
                metrics::gauge!("hoard_raft_apply_lag", "member" => id.to_string()).set(lag as f64);
            }
        }
        if m.current_leader.is_some() && m.current_leader != leader {
            if leader.is_some() {
                metrics::counter!("hoard_raft_leader_changes_total").increment(1);
            }
            leader = m.current_leader;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// A member's Raft state, as `/-/health` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RaftStatus {
    /// This node's id.
    pub node_id: u64,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: &'static str,
    /// The leader this node knows of.
    pub leader_id: Option<u64>,
    /// The current term.
    pub term: u64,
    /// Index of the last log entry applied to the index.
    pub last_applied: u64,
    /// Index of the last log entry stored.
    pub last_log: u64,
    /// Voting members.
    pub members: Vec<u64>,
    /// `linearizable` or `stale`.
    pub read_consistency: &'static str,
}

impl Replicator for RaftNode {
    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<Applied, IndexError>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
            loop {
                // A leader cut off from the majority cannot commit: it fails the
                // command at once when it has known so for a while, and in any case
                // by the deadline — then the outcome is unknown (the entry may still
                // commit if it reached a majority).
                if let Some(ms) = self.quorum_lost_for() {
                    return Err(Self::no_quorum(ms, "the command was not applied"));
                }
                let here = tokio::time::timeout_at(deadline, self.propose_here(cmd.clone()));
                let here = tokio::select! {
                    here = here => here,
                    ms = self.quorum_lost() => {
                        return Err(Self::no_quorum(ms, "the outcome is unknown"))
                    }
                };
                match here {
                    Ok(answer) => {
                        if let Some((applied, _)) = answer? {
                            return Ok(applied);
                        }
                    }
                    Err(_) => {
                        return Err(IndexError::Replication(
                            "the leader could not commit in time (no majority?); outcome unknown"
                                .into(),
                        ))
                    }
                }
                if let Some((leader, addr)) = self.leader_addr().filter(|(l, _)| *l != self.id) {
                    let call = self.client.call(&addr, "propose", &cmd, WAIT_LIMIT);
                    // A leader replaced while the command was with it may never answer
                    // (cut off) or may have appended it: the outcome is unknown, and
                    // failing now beats hanging until the timeout.
                    let answer: Result<api::ProposeAnswer, CallError> = tokio::select! {
                        answer = call => answer,
                        () = self.leader_replaced(leader) => {
                            return Err(IndexError::Replication(format!(
                                "leader {leader} was replaced while it had the command; outcome unknown"
                            )))
                        }
                    };
                    match answer {
                        Ok(api::ProposeAnswer::Applied { applied, index }) => {
                            self.applied_at_least(index).await?;
                            return Ok(applied);
                        }
                        // Not appended there: safe to try again.
                        Ok(api::ProposeAnswer::NotLeader) | Err(CallError::Unreachable(_)) => {}
                        Ok(api::ProposeAnswer::Failed(e)) => {
                            return Err(IndexError::Replication(e))
                        }
                        Err(e) => {
                            return Err(IndexError::Replication(format!(
                                "forwarding to leader {leader}, outcome unknown: {e}"
                            )))
                        }
                    }
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(IndexError::Replication("no leader elected".into()));
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        })
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<(), IndexError>> {
        Box::pin(async move {
            if self.reads == ReadConsistency::Stale {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            let start = {
                let mut state = self.barrier.lock().unwrap_or_else(|p| p.into_inner());
                state.waiting.push(tx);
                !std::mem::replace(&mut state.running, true)
            };
            if start {
                if let Some(me) = self.me.upgrade() {
                    tokio::spawn(me.barrier_rounds());
                }
            }
            let index = rx
                .await
                .map_err(|_| IndexError::Replication("read barrier dropped".into()))?
                .map_err(IndexError::Replication)?;
            self.applied_at_least(index).await
        })
    }
}
