//! Online membership changes of the index cluster: add a member, remove one, and the
//! cluster's view of its members (`hoard cluster status|add|remove`, `/-/cluster`).
//!
//! Both changes run on the leader; any member takes the request and forwards it
//! (`/-/raft/members`), like a proposal.
//!
//! * **Add** `id=addr`: the new node must be running with `--join` (an empty log; it
//!   does not form a cluster of its own). The leader adds it as a learner, waits until
//!   it has caught up (by snapshot and log), then makes it a voter through openraft's
//!   joint consensus. If it does not catch up within [`CATCH_UP_LIMIT`], the learner is
//!   dropped again and the request fails: membership never includes a voter that
//!   cannot vote.
//! * **Remove** `id`: the member stops being a voter (joint consensus), and its id is
//!   retired in the replicated index (`Command::RetireMember`): no later member may take
//!   it. Removing the leader is allowed; it steps down once the change commits.
//!
//! A node that lost its disk must come back under a **new** id (`--join`, then `add`),
//! and its old id be removed: a node restarted with an empty log under its old id could
//! vote twice in one term.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use super::network::CallError;
use super::{RaftNode, WAIT_LIMIT};
use crate::index::{Command, IndexError};

/// Longest wait for a new member to catch up with the leader's log before it becomes a
/// voter.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);

/// Longest a membership change request waits for its outcome (180 s): the catch-up,
/// the forwarding to the leader and the joint-consensus changes. Such requests bypass
/// `--request-timeout` and `--rate-limit` (`crate::ratelimit::exempt`); the change
/// itself runs on its own task, so neither this limit nor a client that hangs up stops
/// it half-way (say between adding a learner and dropping it again).
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(180);

/// A membership change, as forwarded to the leader.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum MemberChange {
    /// Add node `id`, reachable at `addr` (`host:port` of its HTTP API).
    Add {
        /// The new member's id.
        id: u64,
        /// Its address.
        addr: String,
    },
    /// Remove node `id`.
    Remove {
        /// The member's id.
        id: u64,
    },
}

/// The leader's answer to a forwarded [`MemberChange`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum MemberAnswer {
    /// Done: the voters now.
    Done(Vec<u64>),
    /// Not the leader: nothing was changed.
    NotLeader,
    /// Refused (bad request): nothing was changed.
    Refused(String),
    /// Failed part-way or with an unknown outcome.
    Failed(String),
}

/// Why a membership change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    /// The request is not acceptable (unknown id, id in use or retired, last member).
    #[error("{0}")]
    Refused(String),
    /// The change failed or its outcome is unknown (no leader, timeout).
    #[error("{0}")]
    Failed(String),
}

/// One member as `GET /-/cluster` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberView {
    /// Node id.
    pub id: u64,
    /// Address of its HTTP API.
    pub addr: String,
    /// `voter` or `learner`.
    pub kind: &'static str,
    /// Last log index the leader knows it holds (only when asked on the leader).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
}

/// The cluster's membership, from this member's point of view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterView {
    /// The member answering.
    pub node_id: u64,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
    /// The current term.
    pub term: u64,
    /// Last log index stored here.
    pub last_log: u64,
    /// Every member, voters first.
    pub members: Vec<MemberView>,
    /// Ids retired by `remove`, never to be reused.
    pub retired: Vec<u64>,
}

impl RaftNode {
    /// This member's view of the cluster's membership.
    pub fn cluster_view(&self) -> ClusterView {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let progress = m.replication.clone().unwrap_or_default();
        let mut members: Vec<MemberView> = membership
            .nodes()
            .map(|(id, node)| MemberView {
                id: *id,
                addr: node.addr.clone(),
                kind: if voters.contains(id) {
                    "voter"
                } else {
                    "learner"
                },
                matched: progress
                    .get(id)
                    .map(|p| p.map_or(0, |l| l.index))
                    .or_else(|| (*id == self.id).then(|| m.last_log_index.unwrap_or(0)))
                    .filter(|_| m.replication.is_some()),
            })
            .collect();
        members.sort_by_key(|v| (v.kind != "voter", v.id));
        ClusterView {
            node_id: self.id,
            leader_id: m.current_leader,
            term: m.current_term,
            last_log: m.last_log_index.unwrap_or(0),
            members,
            retired: self.retired(),
        }
    }

    fn retired(&self) -> Vec<u64> {
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(index) = index else {
            return Vec::new(); // stopped
        };
        index.retired_members().unwrap_or_else(|e| {
            tracing::warn!("reading retired member ids: {e}");
            Vec::new()
        })
    }

    /// [`RaftNode::change_members`] on a task of its own, answered within
    /// [`MEMBERSHIP_TIMEOUT`] (after which the change goes on unobserved).
    pub async fn change_members_detached(
        &self,
        change: MemberChange,
    ) -> Result<Vec<u64>, MembersError> {
        self.detached(move |me| async move { me.change_members(change).await })
            .await
    }

    /// [`RaftNode::change_members_here`] on a task of its own, answered within
    /// [`MEMBERSHIP_TIMEOUT`] (after which the change goes on unobserved).
    pub async fn change_members_here_detached(
        &self,
        change: MemberChange,
    ) -> Result<Option<Vec<u64>>, MembersError> {
        self.detached(move |me| async move { me.change_members_here(change).await })
            .await
    }

    async fn detached<T, F>(
        &self,
        change: impl FnOnce(std::sync::Arc<RaftNode>) -> F,
    ) -> Result<T, MembersError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, MembersError>> + Send + 'static,
    {
        let me = self
            .me
            .upgrade()
            .ok_or_else(|| MembersError::Failed("Raft is stopping".into()))?;
        let task = tokio::spawn(change(me));
        match tokio::time::timeout(MEMBERSHIP_TIMEOUT, task).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Err(MembersError::Failed(format!("membership change task: {e}"))),
            Err(_) => Err(MembersError::Failed(format!(
                "no outcome after {} s; the change goes on (see `hoard cluster status`)",
                MEMBERSHIP_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Applies `change` on the leader, forwarding it there from any member. Returns
    /// the voters after the change.
    pub async fn change_members(&self, change: MemberChange) -> Result<Vec<u64>, MembersError> {
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            if let Some(done) = self.change_members_here(change.clone()).await? {
                return Ok(done);
            }
            if let Some((leader, addr)) = self.leader_addr().filter(|(l, _)| *l != self.id) {
                let limit = CATCH_UP_LIMIT + WAIT_LIMIT;
                let answer: Result<MemberAnswer, CallError> =
                    self.client.call(&addr, "members", &change, limit).await;
                match answer {
                    Ok(MemberAnswer::Done(voters)) => return Ok(voters),
                    Ok(MemberAnswer::Refused(e)) => return Err(MembersError::Refused(e)),
                    Ok(MemberAnswer::Failed(e)) => return Err(MembersError::Failed(e)),
                    Ok(MemberAnswer::NotLeader) | Err(CallError::Unreachable(_)) => {}
                    Err(e) => {
                        return Err(MembersError::Failed(format!(
                            "forwarding to leader {leader}, outcome unknown: {e}"
                        )))
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(MembersError::Failed("no leader elected".into()));
            }
            tokio::time::sleep(super::RETRY_PAUSE).await;
        }
    }

    /// Applies `change` if this member leads (`None` otherwise: nothing changed).
    pub async fn change_members_here(
        &self,
        change: MemberChange,
    ) -> Result<Option<Vec<u64>>, MembersError> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.id) {
            return Ok(None);
        }
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let known: BTreeMap<u64, String> = membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let outcome = match change {
            MemberChange::Add { id, addr } => {
                if id == 0 || id > u64::from(u32::MAX) {
                    return Err(MembersError::Refused(format!(
                        "node ids go from 1 to {}",
                        u32::MAX
                    )));
                }
                if voters.contains(&id) {
                    return Err(MembersError::Refused(format!(
                        "node {id} is already a member"
                    )));
                }
                let index = self.index.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let retired = index
                    .ok_or_else(|| MembersError::Failed("Raft is stopping".into()))?
                    .retired_members()
                    .map_err(|e| MembersError::Failed(e.to_string()))?;
                if retired.contains(&id) {
                    return Err(MembersError::Refused(format!(
                        "node id {id} belonged to a removed member and is never reused: \
                         start the new node with a new --node-id"
                    )));
                }
                if let Some(other) = known.get(&id).filter(|a| **a != addr) {
                    return Err(MembersError::Refused(format!(
                        "node {id} is already being added at {other}"
                    )));
                }
                if !addr.contains(':') || addr.contains('/') {
                    return Err(MembersError::Refused(format!("{addr:?} is not host:port")));
                }
                self.add_voter(id, addr).await
            }
            MemberChange::Remove { id } => {
                if !known.contains_key(&id) {
                    return Err(MembersError::Refused(format!("node {id} is not a member")));
                }
                if voters.len() == 1 && voters.contains(&id) {
                    return Err(MembersError::Refused(
                        "cannot remove the last member".into(),
                    ));
                }
                self.remove_member(id, voters.contains(&id)).await
            }
        };
        outcome.map(Some)
    }

    /// Learner, catch up, voter.
    async fn add_voter(&self, id: u64, addr: String) -> Result<Vec<u64>, MembersError> {
        let node = BasicNode { addr: addr.clone() };
        self.raft
            .add_learner(id, node, false)
            .await
            .map_err(failed("adding the learner"))?;
        if let Err(e) = self.wait_caught_up(id).await {
            // Leave no learner behind that never answered.
            let drop = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
            if let Err(d) = self.raft.change_membership(drop, false).await {
                tracing::warn!("dropping learner {id} that did not catch up: {d}");
            }
            return Err(MembersError::Failed(format!(
                "node {id} at {addr} did not catch up: {e} (is it running with --join?)"
            )));
        }
        let resp = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(failed("making it a voter"))?;
        tracing::info!("node {id} at {addr} joined the index cluster");
        Ok(voters_of(&resp))
    }

    /// Waits until the leader knows the learner `id` holds its log up to where the log
    /// was when the wait began.
    async fn wait_caught_up(&self, id: u64) -> Result<(), String> {
        let mut rx = self.raft.metrics();
        let target = rx.borrow().last_log_index.unwrap_or(0);
        let deadline = tokio::time::Instant::now() + CATCH_UP_LIMIT;
        loop {
            let matched = {
                let m = rx.borrow_and_update();
                if m.current_leader != Some(self.id) {
                    return Err("this node stopped leading".into());
                }
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned())
                    .flatten()
                    .map(|l| l.index)
            };
            if matched.is_some_and(|i| i >= target) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("Raft stopped".into()),
                Err(_) => {
                    return Err(format!(
                        "holds log index {} of {target} after {} s",
                        matched.map_or("none".into(), |i| i.to_string()),
                        CATCH_UP_LIMIT.as_secs()
                    ))
                }
            }
        }
    }

    /// Voter (or learner) out, id retired.
    async fn remove_member(&self, id: u64, voter: bool) -> Result<Vec<u64>, MembersError> {
        let ids = BTreeSet::from([id]);
        let change = if voter {
            // `retain: false` drops it as a learner too.
            ChangeMembers::RemoveVoters(ids)
        } else {
            ChangeMembers::RemoveNodes(ids)
        };
        let resp = self
            .raft
            .change_membership(change, false)
            .await
            .map_err(failed("removing it"))?;
        let voters = voters_of(&resp);
        // Through whichever node leads now (this one may have just stepped down).
        if let Err(e) = self.index_apply(Command::RetireMember { id }).await {
            return Err(MembersError::Failed(format!(
                "node {id} was removed, but retiring its id failed ({e}): run remove again"
            )));
        }
        tracing::info!("node {id} left the index cluster");
        Ok(voters)
    }

    async fn index_apply(&self, cmd: Command) -> Result<(), IndexError> {
        use crate::index::Replicator;
        self.propose(cmd).await.map(|_| ())
    }
}

fn failed(
    what: &'static str,
) -> impl Fn(RaftError<u64, ClientWriteError<u64, BasicNode>>) -> MembersError {
    move |e: RaftError<u64, ClientWriteError<u64, BasicNode>>| match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            MembersError::Failed(format!("{what}: this node stopped leading; try again"))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            MembersError::Refused(format!("{what}: {c}"))
        }
        other => MembersError::Failed(format!("{what}: {other}")),
    }
}

fn voters_of(resp: &openraft::raft::ClientWriteResponse<super::TypeConfig>) -> Vec<u64> {
    resp.membership
        .as_ref()
        .map(|m| m.voter_ids().collect())
        .unwrap_or_default()
}
