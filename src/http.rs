//! Serving an axum router on a listener, with graceful shutdown on SIGINT / SIGTERM.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;

/// Binds `bind:port`, naming the address in the error.
pub async fn bind(bind: &str, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind((bind, port))
        .await
        .with_context(|| format!("cannot listen on {bind}:{port}"))
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and
/// lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed")
}

/// Completes on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

/// Bytes a handler received, attached to its response so the access log can report
/// uploads.
#[derive(Debug, Clone, Copy)]
pub struct BytesReceived(pub u64);

/// Wraps `router` so that, when `verbose` (`-v`), every request is logged at info level.
pub fn with_access_log(router: axum::Router, verbose: bool) -> axum::Router {
    if verbose {
        router.layer(axum::middleware::from_fn(log_request))
    } else {
        router
    }
}

/// Middleware logging method, path, status, bytes and time to the response head.
/// Bytes are those received for an upload ([`BytesReceived`]), else the response body
/// length (`-` when unknown).
async fn log_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use http_body::Body as _;
    let start = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    let bytes = match res.extensions().get::<BytesReceived>() {
        Some(BytesReceived(n)) => n.to_string(),
        None => res
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| res.body().size_hint().exact().map(|n| n.to_string()))
            .unwrap_or_else(|| "-".to_owned()),
    };
    tracing::info!(
        target: "hoard::access",
        "{method} {path} {} {bytes} {:.1}ms",
        res.status().as_u16(),
        start.elapsed().as_secs_f64() * 1000.0
    );
    res
}
