//! The server's own endpoints under `/-/`.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use super::{ApiError, App};
use crate::replica::health::ServerStatus;

/// Body of `GET /-/health`.
#[derive(serde::Serialize)]
struct HealthReport {
    status: &'static str,
    version: &'static str,
    role: &'static str,
    uptime_seconds: u64,
    writes_in_flight: usize,
    volumes: Vec<ServerStatus>,
}

/// Dispatches a request under `/-/`.
pub async fn handle(app: &Arc<App>, req: Request) -> Response {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/-/health") => health(app),
        (_, path) if path.starts_with(super::admin_ops::PREFIX) => {
            super::admin_ops::handle(app, req).await
        }
        (&Method::GET | &Method::HEAD, _) => ApiError::NotFound.into_response(),
        _ => ApiError::Key(crate::key::KeyError::Reserved).into_response(),
    }
}

fn health(app: &App) -> Response {
    axum::Json(HealthReport {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        role: "index",
        uptime_seconds: app.started.elapsed().as_secs(),
        writes_in_flight: app.locks.len(),
        volumes: app.health.snapshot(),
    })
    .into_response()
}
