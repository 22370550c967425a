//! Index cluster membership endpoints (what `hoard cluster status|add|remove` calls).
//!
//! | request | effect |
//! | --- | --- |
//! | `GET /-/cluster` | members (id, address, voter/learner, log position on the leader), leader, term, retired ids |
//! | `POST /-/cluster/members` `{"id": 4, "addr": "host:port"}` | add a member started with `--join`: 200 `{"voters": […]}` once it caught up and votes |
//! | `DELETE /-/cluster/members/{id}` | remove a member and retire its id: 200 `{"voters": […]}` |
//!
//! Any member answers; changes are forwarded to the leader. Changes bypass
//! `--rate-limit` and `--request-timeout`, and are answered within
//! [`crate::raft::members::MEMBERSHIP_TIMEOUT`] (a change still running then goes on).
//! 400 for a refused change
//! (unknown or retired id, the last member) or a server without `--peers`, 503 when
//! the change failed or its outcome is unknown (no leader, the new node never caught
//! up).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::App;
use crate::raft::members::{MemberChange, MembersError};

/// Path of the cluster view; members are under `{PATH}/members`.
pub const PATH: &str = "/-/cluster";

/// Longest request body.
const MAX_BODY: usize = 4 << 10;

/// Whether `path` is one of ours.
pub fn owns(path: &str) -> bool {
    path == PATH || path.starts_with("/-/cluster/")
}

/// Body of `POST /-/cluster/members`.
#[derive(serde::Deserialize)]
struct AddMember {
    id: u64,
    addr: String,
}

/// Dispatches a request under [`PATH`].
pub async fn handle(app: &Arc<App>, req: Request) -> Response {
    let Some(node) = &app.raft else {
        return failure(
            StatusCode::BAD_REQUEST,
            "this server is not an index cluster member (started without --peers)",
        );
    };
    let path = req.uri().path().to_string();
    let rest = path[PATH.len()..].trim_start_matches('/');
    let change = match (req.method().clone(), rest) {
        (Method::GET | Method::HEAD, "") => return axum::Json(node.cluster_view()).into_response(),
        (Method::POST, "members") => {
            let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
                Ok(b) => b,
                Err(e) => return failure(StatusCode::BAD_REQUEST, &format!("reading body: {e}")),
            };
            match serde_json::from_slice::<AddMember>(&body) {
                Ok(a) => MemberChange::Add {
                    id: a.id,
                    addr: a.addr,
                },
                Err(e) => {
                    return failure(
                        StatusCode::BAD_REQUEST,
                        &format!("expected {{\"id\": N, \"addr\": \"host:port\"}}: {e}"),
                    )
                }
            }
        }
        (Method::DELETE, id) if id.starts_with("members/") => {
            match id["members/".len()..].parse::<u64>() {
                Ok(id) => MemberChange::Remove { id },
                Err(_) => return failure(StatusCode::BAD_REQUEST, "not a node id"),
            }
        }
        (_, "" | "members") => {
            return failure(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => return failure(StatusCode::NOT_FOUND, "not found"),
    };
    match node.change_members_detached(change).await {
        Ok(voters) => axum::Json(json!({ "voters": voters })).into_response(),
        Err(MembersError::Refused(e)) => failure(StatusCode::BAD_REQUEST, &e),
        Err(MembersError::Failed(e)) => failure(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

fn failure(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}
