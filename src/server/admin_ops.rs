//! Operations endpoints under `/-/admin/`, and the per-key `REBALANCE` method.
//!
//! | request | effect |
//! | --- | --- |
//! | `GET /-/admin/status` | running and last job (counters, rate, ETA), volumes in force |
//! | `POST /-/admin/rebalance[?max_rate=200\|50MB/s&concurrency=N]` | start a rebalance (202; 409 if a job runs) |
//! | `POST /-/admin/verify[?repair=1&deep=1&grace=1h&max_rate=…&concurrency=N]` | start a verify |
//! | `POST /-/admin/cancel` | ask the running job to stop |
//! | `GET /-/admin/volumes` | volumes in force and their health |
//! | `POST /-/admin/volumes` | change membership, body [`Change`]: `{"add": "h:p"}`, `{"remove": […]}`, `{"volumes": […]}`, optional `"rebalance": true`; kalavara's `{"url": "http://h:p"}` or a plain-text URL adds one |
//! | `POST /-/admin/compact` | compact this member's index file now (200 with sizes and pause; 503 if transactions stayed open) |
//! | `REBALANCE /key` | move one key now: 204, 404 (no such key), 409 (key busy), 400 (failed) |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::jobs::{self, JobParams, JobsError, DELETE_DELAY};
use super::{ApiError, App};
use crate::ops::membership::Change;
use crate::ops::rebalance::{self, Outcome};
use crate::ops::worker::{JobKind, Rate};

/// Longest wait for the leader to answer a forwarded request.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
use crate::ops::OpsError;

/// Paths handled here.
pub const PREFIX: &str = "/-/admin/";

/// Default keys worked on at once by online jobs.
const CONCURRENCY: usize = 8;

/// Longest membership request body.
const MAX_BODY: usize = 64 << 10;

/// Dispatches a request under [`PREFIX`].
pub async fn handle(app: &Arc<App>, req: Request) -> Response {
    let query: HashMap<String, String> =
        match axum::extract::Query::try_from_uri(req.uri()).map(|q| q.0) {
            Ok(q) => q,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()).into_response(),
        };
    let path = req.uri().path()[PREFIX.len()..].to_string();
    let path = path.as_str();
    // In an index cluster, jobs run on the leader: a follower passes these on.
    let on_leader = matches!(path, "rebalance" | "verify" | "cancel" | "volumes");
    if req.method() == Method::POST
        && on_leader
        && app.raft.as_ref().is_some_and(|n| !n.is_leader())
    {
        return forward_to_leader(app, req).await;
    }
    let result = match (req.method().clone(), path) {
        (Method::GET, "status") => match app.store.read_barrier().await {
            // In an index cluster: the job record as of now, not as of this member's lag.
            Ok(()) => Ok(status(app)),
            Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
        },
        (Method::POST, "rebalance") => start_rebalance(app, &query).await,
        (Method::POST, "verify") => start_verify(app, &query).await,
        (Method::POST, "cancel") => match jobs::cancel(app).await {
            Ok(cancelled) => Ok(axum::Json(json!({ "cancelled": cancelled })).into_response()),
            Err(e) => Err(jobs_error(e)),
        },
        (Method::GET, "volumes") => Ok(volumes(app)),
        (Method::POST, "volumes") => change_volumes(app, req).await,
        (Method::POST, "compact") => compact(app).await,
        (_, "status" | "rebalance" | "verify" | "cancel" | "volumes" | "compact") => {
            Err(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"))
        }
        _ => return ApiError::NotFound.into_response(),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Longest wait of an online compaction for a moment with no index transaction open.
const COMPACT_WAIT: Duration = Duration::from_secs(5);

/// `POST /-/admin/compact`: returns the free pages of this server's index file to the
/// file system while it serves (`Index::compact_online`). Not forwarded: each member
/// of an index cluster has its own file, compacted by a request to that member.
async fn compact(app: &Arc<App>) -> Result<Response, Failure> {
    use crate::index::CompactError;
    let index = app.store.index.clone();
    let done = tokio::task::spawn_blocking(move || index.compact_online(COMPACT_WAIT))
        .await
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("compaction task failed: {e}"),
            )
        })?;
    match done {
        Ok(c) => {
            tracing::info!(
                "index compacted online: {} → {} bytes, reads and writes paused {:.1} ms",
                c.before_bytes,
                c.after_bytes,
                c.paused_ms
            );
            Ok(axum::Json(c).into_response())
        }
        Err(e @ CompactError::Busy(_)) => {
            Err(error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()))
        }
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
}

/// A failed operations request: its status and message, answered as
/// `{"error": "…"}`.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, message: &str) -> Failure {
    Failure(status, message.to_string())
}

fn ops_error(e: OpsError) -> Failure {
    let status = match e {
        OpsError::Busy(_) => StatusCode::CONFLICT,
        OpsError::Placement(_) | OpsError::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string())
}

fn jobs_error(e: JobsError) -> Failure {
    match e {
        JobsError::NotLeader => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the leader changed meanwhile; try again",
        ),
        JobsError::Ops(e) => ops_error(e),
    }
}

/// Passes a job or membership request on to the index cluster's leader and answers
/// with its answer (503 when no leader is known or it cannot be reached).
async fn forward_to_leader(app: &App, req: Request) -> Response {
    let Some(node) = &app.raft else {
        return error(StatusCode::BAD_REQUEST, "not an index cluster member").into_response();
    };
    let Some((leader, addr)) = node.leader_addr() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no index cluster leader right now; try again",
        )
        .into_response();
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, &format!("reading body: {e}")).into_response()
        }
    };
    let call = node
        .peer_client()
        .post(&addr, &path)
        .timeout(FORWARD_TIMEOUT)
        .body(body);
    match call.send().await {
        Ok(resp) => {
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match resp.bytes().await {
                Ok(bytes) => (
                    status,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    bytes,
                )
                    .into_response(),
                Err(e) => error(
                    StatusCode::BAD_GATEWAY,
                    &format!("reading the leader's answer: {e}"),
                )
                .into_response(),
            }
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("forwarding to leader {leader} at {addr}: {e}"),
        )
        .into_response(),
    }
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| matches!(v.as_str(), "" | "1" | "true" | "yes" | "on"))
}

fn rate(query: &HashMap<String, String>) -> Result<Option<Rate>, Failure> {
    query
        .get("max_rate")
        .map(|r| {
            r.parse()
                .map_err(|e: String| error(StatusCode::BAD_REQUEST, &e))
        })
        .transpose()
}

fn concurrency(query: &HashMap<String, String>) -> Result<usize, Failure> {
    match query.get("concurrency") {
        None => Ok(CONCURRENCY),
        Some(n) => match n.parse() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                "concurrency must be a positive number",
            )),
        },
    }
}

fn status(app: &App) -> Response {
    let jobs = jobs::status(app);
    let placement = app.store.placement.current();
    axum::Json(json!({
        "running": jobs.running,
        "last": jobs.last,
        "volumes": placement.volumes(),
    }))
    .into_response()
}

fn started(status: crate::ops::worker::JobStatus) -> Response {
    (StatusCode::ACCEPTED, axum::Json(status)).into_response()
}

async fn start_rebalance(
    app: &Arc<App>,
    query: &HashMap<String, String>,
) -> Result<Response, Failure> {
    let params = JobParams {
        max_rate: rate(query)?,
        concurrency: concurrency(query)?,
        repair: false,
        deep: false,
        grace_s: 0.0,
    };
    jobs::start(app, JobKind::Rebalance, params)
        .await
        .map(started)
        .map_err(jobs_error)
}

async fn start_verify(
    app: &Arc<App>,
    query: &HashMap<String, String>,
) -> Result<Response, Failure> {
    let grace = match query.get("grace") {
        None => Duration::from_secs(3600),
        Some(g) => {
            crate::units::parse_duration(g).map_err(|e| error(StatusCode::BAD_REQUEST, &e))?
        }
    };
    let params = JobParams {
        max_rate: rate(query)?,
        concurrency: concurrency(query)?,
        repair: flag(query, "repair"),
        deep: flag(query, "deep"),
        grace_s: grace.as_secs_f64(),
    };
    jobs::start(app, JobKind::Verify, params)
        .await
        .map(started)
        .map_err(jobs_error)
}

fn volumes(app: &App) -> Response {
    let placement = app.store.placement.current();
    axum::Json(json!({
        "volumes": placement.volumes(),
        "zones": zones(&placement),
        "health": app.store.health.snapshot(),
    }))
    .into_response()
}

/// `{"host:port": "zone"}` for every volume with a zone.
fn zones(placement: &crate::placement::Placement) -> serde_json::Map<String, serde_json::Value> {
    placement
        .volumes()
        .iter()
        .filter_map(|v| Some((v.clone(), placement.zone_of(v)?.into())))
        .collect()
}

async fn change_volumes(app: &Arc<App>, req: Request) -> Result<Response, Failure> {
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("reading body: {e}")))?;
    let change = Change::parse(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("bad membership change: {e}"),
        )
    })?;
    let volumes = if app.raft.is_some() {
        app.membership
            .change_replicated(
                &app.store.index,
                &app.store.placement,
                &app.store.health,
                &change,
            )
            .await
            .map_err(ops_error)?
    } else {
        app.membership
            .change(&app.store.placement, &app.store.health, &change)
            .map_err(ops_error)?
            .volumes()
            .to_vec()
    };
    let job = if change.rebalance {
        let params = JobParams {
            max_rate: None,
            concurrency: CONCURRENCY,
            repair: false,
            deep: false,
            grace_s: 0.0,
        };
        Some(
            jobs::start(app, JobKind::Rebalance, params)
                .await
                .map_err(jobs_error)?,
        )
    } else {
        None
    };
    let zones = zones(&app.store.placement.current());
    Ok(axum::Json(json!({ "volumes": volumes, "zones": zones, "job": job })).into_response())
}

/// `REBALANCE /key` (minikeyvalue's): move one key to its placement now.
pub async fn rebalance_key(app: &App, key: &[u8]) -> Result<Response, ApiError> {
    match rebalance::one(&app.store.ctx(), key, DELETE_DELAY).await {
        Outcome::Balanced | Outcome::Moved { .. } => Ok(StatusCode::NO_CONTENT.into_response()),
        Outcome::Gone | Outcome::Skipped => Err(ApiError::NotFound),
        Outcome::Busy => Err(ApiError::Conflict),
        Outcome::Failed(why) => Err(ApiError::BadRequest(format!("rebalance failed: {why}"))),
    }
}
