//! Operations endpoints under `/-/admin/`, and the per-key `REBALANCE` method.
//!
//! | request | effect |
//! | --- | --- |
//! | `GET /-/admin/status` | running and last job (counters, rate, ETA), volumes in force |
//! | `POST /-/admin/rebalance[?max_rate=200\|50MB/s&concurrency=N]` | start a rebalance (202; 409 if a job runs) |
//! | `POST /-/admin/verify[?repair=1&deep=1&grace=1h&max_rate=…&concurrency=N]` | start a verify |
//! | `POST /-/admin/cancel` | ask the running job to stop |
//! | `GET /-/admin/volumes` | volumes in force and their health |
//! | `POST /-/admin/volumes` | change membership, body [`Change`]: `{"add": "h:p"}`, `{"remove": […]}`, `{"volumes": […]}`, optional `"rebalance": true` |
//! | `REBALANCE /key` | move one key now: 204, 404 (no such key), 409 (key busy), 400 (failed) |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, App};
use crate::ops::membership::Change;
use crate::ops::rebalance::{self, Outcome};
use crate::ops::worker::{JobKind, Rate};
use crate::ops::{verify, OpsError};

/// Paths handled here.
pub const PREFIX: &str = "/-/admin/";

/// How long old replicas stay after an online move: a reader may have just been
/// redirected to one.
pub const DELETE_DELAY: Duration = Duration::from_secs(5);

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
    let path = &req.uri().path()[PREFIX.len()..];
    let result = match (req.method().clone(), path) {
        (Method::GET, "status") => Ok(status(app)),
        (Method::POST, "rebalance") => start_rebalance(app, &query),
        (Method::POST, "verify") => start_verify(app, &query),
        (Method::POST, "cancel") => {
            Ok(axum::Json(json!({ "cancelled": app.jobs.cancel() })).into_response())
        }
        (Method::GET, "volumes") => Ok(volumes(app)),
        (Method::POST, "volumes") => change_volumes(app, req).await,
        (_, "status" | "rebalance" | "verify" | "cancel" | "volumes") => {
            Err(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"))
        }
        _ => return ApiError::NotFound.into_response(),
    };
    result.unwrap_or_else(IntoResponse::into_response)
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
    let jobs = app.jobs.status();
    let placement = app.store.placement.current();
    axum::Json(json!({
        "running": jobs.running,
        "last": jobs.last,
        "volumes": placement.volumes(),
    }))
    .into_response()
}

fn started(job: &crate::ops::worker::Job) -> Response {
    (StatusCode::ACCEPTED, axum::Json(job.status())).into_response()
}

fn start_rebalance(app: &Arc<App>, query: &HashMap<String, String>) -> Result<Response, Failure> {
    let max_rate = rate(query)?;
    let concurrency = concurrency(query)?;
    let ctx = app.store.ops_ctx();
    let params = json!({ "max_rate": max_rate, "concurrency": concurrency });
    let opts = rebalance::Options {
        concurrency,
        delete_delay: DELETE_DELAY,
    };
    app.jobs
        .start(JobKind::Rebalance, params, max_rate, move |job| {
            rebalance::run(ctx, job, opts)
        })
        .map(|job| started(&job))
        .map_err(ops_error)
}

fn start_verify(app: &Arc<App>, query: &HashMap<String, String>) -> Result<Response, Failure> {
    let max_rate = rate(query)?;
    let concurrency = concurrency(query)?;
    let grace = match query.get("grace") {
        None => Duration::from_secs(3600),
        Some(g) => crate::cli::parse_duration(g).map_err(|e| error(StatusCode::BAD_REQUEST, &e))?,
    };
    let opts = verify::Options {
        repair: flag(query, "repair"),
        deep: flag(query, "deep"),
        grace,
        concurrency,
    };
    let params = json!({
        "repair": opts.repair,
        "deep": opts.deep,
        "grace_s": grace.as_secs_f64(),
        "max_rate": max_rate,
        "concurrency": concurrency,
    });
    let ctx = app.store.ops_ctx();
    app.jobs
        .start(JobKind::Verify, params, max_rate, move |job| {
            verify::run(ctx, job, opts)
        })
        .map(|job| started(&job))
        .map_err(ops_error)
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
    let change: Change = serde_json::from_slice(&body).map_err(|e| {
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
        let ctx = app.store.ops_ctx();
        let opts = rebalance::Options {
            concurrency: CONCURRENCY,
            delete_delay: DELETE_DELAY,
        };
        let job = app
            .jobs
            .start(JobKind::Rebalance, json!({}), None, move |job| {
                rebalance::run(ctx, job, opts)
            })
            .map_err(ops_error)?;
        Some(job.status())
    } else {
        None
    };
    let zones = zones(&app.store.placement.current());
    Ok(axum::Json(json!({ "volumes": volumes, "zones": zones, "job": job })).into_response())
}

/// `REBALANCE /key` (minikeyvalue's): move one key to its placement now.
pub async fn rebalance_key(app: &App, key: &[u8]) -> Result<Response, ApiError> {
    match rebalance::one(&app.store.ops_ctx(), key, DELETE_DELAY).await {
        Outcome::Balanced | Outcome::Moved { .. } => Ok(StatusCode::NO_CONTENT.into_response()),
        Outcome::Gone | Outcome::Skipped => Err(ApiError::NotFound),
        Outcome::Busy => Err(ApiError::Conflict),
        Outcome::Failed(why) => Err(ApiError::BadRequest(format!("rebalance failed: {why}"))),
    }
}
