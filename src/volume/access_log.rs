//! `-v`: one log line per request.

use std::time::Instant;

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use http_body::Body as _;

/// Bytes a handler received, attached to its response so the log can report uploads.
#[derive(Debug, Clone, Copy)]
pub struct BytesReceived(pub u64);

/// Middleware logging method, path, status, bytes and time to the response head at
/// info level. Bytes are those received for an upload, else the response body length
/// (`-` when unknown).
pub async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    let bytes = match res.extensions().get::<BytesReceived>() {
        Some(BytesReceived(n)) => n.to_string(),
        None => res
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| res.body().size_hint().exact().map(|n| n.to_string()))
            .unwrap_or_else(|| "-".to_owned()),
    };
    tracing::info!(
        "{method} {path} {} {bytes} {:.1}ms",
        res.status().as_u16(),
        start.elapsed().as_secs_f64() * 1000.0
    );
    res
}
