//! Campaigning past a candidate that cannot win, so a failover takes one election
//! round, not two.
//!
//! When the leader dies under write load, the followers' logs differ by the entries in
//! flight. If the follower that is behind campaigns first, it takes term T+1 and votes
//! for itself; the other follower refuses it (its own log is longer) without moving to
//! T+1 (openraft 0.9's `handle_vote_req`). When that follower's own timer fires, it asks
//! for the same T+1 — which the first has already given to itself — is refused too, and
//! wins only in T+2, one election timeout (0.4–0.8 s) later. docs/RELIABILITY.md shows
//! that second round in the nemesis suite's failover times.
//!
//! Here, a member that refused a candidate because its own log is longer remembers that
//! candidate's term; once its own leader lease has run out with no word from a leader
//! (no AppendEntries since), it campaigns at once and keeps going until its term is past
//! the remembered one — T+2 at once — which the candidate that is behind grants. Safe:
//! any member may campaign at any time in Raft; this only times it. It does nothing
//! while a leader is heard from, so it cannot disturb a healthy cluster.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::raft::{VoteRequest, VoteResponse};
use openraft::ServerState;

use super::{RaftNode, ELECTION_MAX_MS};

/// At most this many elections are triggered for one refused candidate.
const MAX_ROUNDS: u64 = 3;

/// What a member knows of refused candidates and of its leader.
#[derive(Default)]
pub struct Ahead {
    /// When an AppendEntries (a heartbeat included) last arrived.
    last_append: Mutex<Option<Instant>>,
    /// The highest term of a candidate refused because its log was behind ours.
    refused_term: AtomicU64,
    /// Whether a campaign task is waiting or running.
    running: AtomicBool,
}

impl Ahead {
    /// A leader was heard from (an AppendEntries arrived).
    pub fn heard_leader(&self) {
        *self.last_append.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn last_append(&self) -> Option<Instant> {
        *self.last_append.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes this member's answer `resp` to the vote request `req`: a refusal because
    /// the candidate's log is behind starts a campaign past its term (see the module).
    pub fn answered(node: &Arc<RaftNode>, req: &VoteRequest<u64>, resp: &VoteResponse<u64>) {
        let ahead = &node.ahead;
        if resp.vote_granted || resp.last_log_id <= req.last_log_id {
            return;
        }
        ahead
            .refused_term
            .fetch_max(req.vote.leader_id().term, Ordering::SeqCst);
        if ahead.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let node = node.clone();
        tokio::spawn(async move {
            campaign(&node).await;
            node.ahead.running.store(false, Ordering::SeqCst);
        });
    }
}

/// Waits out this member's leader lease, then campaigns until its term is past the
/// refused candidate's — unless a leader is heard from, or this member leads, meanwhile.
async fn campaign(node: &RaftNode) {
    let lease = Duration::from_millis(ELECTION_MAX_MS);
    let heard = node.ahead.last_append();
    if let Some(at) = heard {
        tokio::time::sleep_until((at + lease).into()).await;
    }
    for _ in 0..MAX_ROUNDS {
        let (term, state, voter) = {
            let m = node.raft.metrics().borrow().clone();
            let voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == node.id);
            (m.current_term, m.state, voter)
        };
        let target = node.ahead.refused_term.load(Ordering::SeqCst);
        let quiet = node.ahead.last_append() == heard;
        if !quiet
            || !voter
            || term > target
            || !matches!(state, ServerState::Follower | ServerState::Candidate)
        {
            return;
        }
        tracing::info!(
            "campaigning past term {target} (a candidate whose log is behind ours): now in term {term}"
        );
        metrics::counter!("hoard_raft_campaigns_ahead_total").increment(1);
        if node.raft.trigger().elect().await.is_err() {
            return;
        }
        // The new term shows in the metrics once the vote is stored.
        let _ = node
            .raft
            .wait(Some(Duration::from_millis(500)))
            .metrics(|m| m.current_term > term, "campaign term")
            .await;
    }
}
