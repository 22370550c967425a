//! The `/-/raft/…` endpoints every index cluster member serves: Raft's own RPCs
//! (`append`, `vote`, `snapshot`), commands forwarded to the leader (`propose`),
//! membership changes forwarded to it (`members`) and read-index requests
//! (`read-index`). JSON in (AppendEntries also binary: [`super::wire`]), JSON
//! out; POST only. Under auth they
//! need the cluster token like any write. They bypass the client rate limit and
//! request time limit (`crate::ratelimit::exempt`): each call is bounded by the calling
//! member's own timeout, and a membership change by
//! [`super::members::MEMBERSHIP_TIMEOUT`].

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::RaftNode;
use crate::index::{Applied, Command};

/// Most bytes of one Raft request (a batch of entries or a snapshot chunk, as JSON).
const BODY_LIMIT: usize = 64 << 20;

/// The answer to a forwarded command.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ProposeAnswer {
    /// Applied at log `index` with this outcome.
    Applied {
        /// The command's outcome.
        applied: Applied,
        /// Its log index: the proposer waits to have applied it too.
        index: u64,
    },
    /// This node does not lead: the command was not appended.
    NotLeader,
    /// Appending or applying failed; the outcome is unknown.
    Failed(String),
}

/// Handles `POST /-/raft/{name}` with `headers` and `body`.
pub async fn handle(
    node: &RaftNode,
    name: &str,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Response {
    // A Raft RPC for another node (see `RAFT_TO_HEADER`): this node replaced it at its
    // address. Senders of an earlier version name no node.
    if let Some(to) = headers.get(super::network::RAFT_TO_HEADER) {
        let to = to.to_str().ok().and_then(|v| v.parse::<u64>().ok());
        if to != Some(node.id) {
            tracing::debug!(
                "refused a Raft {name} for node {to:?}: this is node {}",
                node.id
            );
            return (
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this is node {}, not node {}\n",
                    node.id,
                    to.map_or("?".into(), |t| t.to_string())
                ),
            )
                .into_response();
        }
    }
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("reading body: {e}\n")).into_response(),
    };
    macro_rules! parse {
        () => {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => {
                    return (
                        StatusCode::BAD_REQUEST,
                        format!("bad {name} request: {e}\n"),
                    )
                        .into_response()
                }
            }
        };
    }
    match name {
        "append" => match super::wire::decode_append(&bytes) {
            Ok(req) => {
                node.ahead.heard_leader();
                axum::Json(node.raft.append_entries(req).await).into_response()
            }
            Err(e) => (
                StatusCode::BAD_REQUEST,
                format!("bad append request: {e}\n"),
            )
                .into_response(),
        },
        "vote" => {
            let req: openraft::raft::VoteRequest<u64> = parse!();
            let resp = node.raft.vote(req.clone()).await;
            if let (Ok(resp), Some(me)) = (&resp, node.me.upgrade()) {
                super::campaign::Ahead::answered(&me, &req, resp);
            }
            axum::Json(resp).into_response()
        }
        "snapshot" => axum::Json(node.raft.install_snapshot(parse!()).await).into_response(),
        "propose" => {
            let cmd: Command = parse!();
            let answer = match node.propose_here(cmd).await {
                Ok(Some((applied, index))) => ProposeAnswer::Applied { applied, index },
                Ok(None) => ProposeAnswer::NotLeader,
                Err(e) => ProposeAnswer::Failed(e.to_string()),
            };
            axum::Json(answer).into_response()
        }
        "members" => {
            use super::members::{MemberAnswer, MembersError};
            let answer = match node.change_members_here_detached(parse!()).await {
                Ok(Some(voters)) => MemberAnswer::Done(voters),
                Ok(None) => MemberAnswer::NotLeader,
                Err(MembersError::Refused(e)) => MemberAnswer::Refused(e),
                Err(MembersError::Failed(e)) => MemberAnswer::Failed(e),
            };
            axum::Json(answer).into_response()
        }
        "read-index" => {
            let answer: Result<Option<u64>, String> =
                node.read_index_here().await.map_err(|e| e.to_string());
            axum::Json(answer).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
