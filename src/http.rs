//! HTTP plumbing shared by every role: binding, the shutdown signal, the metrics +
//! access-log middleware, and the one client builder for hoard's own servers (volumes
//! and index peers: [`internal_client`], [`bearer`]). Connections themselves are served
//! by [`crate::net`].

use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

/// The HTTP client for talking to hoard's own servers (volumes, index peers): HTTP/1.1,
/// no proxy, no redirects followed, Nagle off, connecting bounded by `connect`, idle
/// pooled connections dropped after 20 s (below the servers' default idle timeout of
/// 30 s, so the pool never reuses a connection the server is closing); over TLS it
/// trusts only `ca` when that is not empty. Per-request timeouts are the caller's.
/// Requests built for it pass through [`crate::otel::inject`] (the volume and peer
/// clients do), so they continue the caller's trace.
pub fn internal_client(
    connect: Duration,
    ca: Vec<reqwest::Certificate>,
) -> reqwest::Result<reqwest::Client> {
    crate::tls::install_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect)
        .pool_idle_timeout(Duration::from_secs(20))
        .tcp_nodelay(true)
        .http1_only()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none());
    if !ca.is_empty() {
        builder = builder.tls_certs_only(ca);
    }
    builder.build()
}

/// The `Authorization` value for the shared secret `token` (`Bearer …`), marked
/// sensitive so it never shows in logs.
pub fn bearer(
    token: &str,
) -> Result<reqwest::header::HeaderValue, reqwest::header::InvalidHeaderValue> {
    let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Binds `bind:port`, naming the address in the error.
pub async fn bind(bind: &str, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind((bind, port))
        .await
        .with_context(|| format!("cannot listen on {bind}:{port}"))
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

/// Wraps `router` with request metrics (always) and, when `verbose` (`-v`), one info
/// log line per request. `role` labels the metrics (`index` or `volume`).
pub fn observe(router: axum::Router, role: &'static str, verbose: bool) -> axum::Router {
    crate::telemetry::init();
    router.layer(axum::middleware::from_fn_with_state(
        (role, verbose),
        observe_request,
    ))
}

/// Records method, path, status, bytes and time to the response head. Bytes are those
/// received for an upload ([`BytesReceived`]), else the response body length.
async fn observe_request(
    axum::extract::State((role, verbose)): axum::extract::State<(&'static str, bool)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use http_body::Body as _;
    let start = std::time::Instant::now();
    let method = req.method().clone();
    let path = verbose.then(|| req.uri().path().to_owned());
    // The dashboard charts the index's client traffic, not its own polling.
    let tallied = role == "index" && !req.uri().path().starts_with(crate::key::RESERVED_PREFIX);
    let span = crate::otel::server_span(role, &req);
    let res = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let received = res.extensions().get::<BytesReceived>().map_or(0, |b| b.0);
    let sent = res
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .or_else(|| res.body().size_hint().exact())
        .unwrap_or(0);
    let status = res.status().as_u16();
    crate::otel::record_status(&span, status);
    crate::telemetry::record_request(role, method.as_str(), status, start, received, sent);
    if tallied {
        crate::telemetry::INDEX_TALLY.record(status, start.elapsed());
    }
    if let Some(path) = path {
        let bytes = if received > 0 { received } else { sent };
        let _in_span = span.enter();
        tracing::info!(
            target: "hoard::access",
            "{method} {path} {status} {bytes} {:.1}ms",
            start.elapsed().as_secs_f64() * 1000.0
        );
    }
    res
}

/// Most of a rejected body read and discarded so the client sees the status.
const DRAIN_LIMIT: u64 = 16 << 20;

/// Reads and discards (a bounded amount of) a rejected upload's body, so that a client
/// still sending it gets the error status instead of a broken pipe — what nginx's
/// lingering close achieves. Clients that sent `Expect: 100-continue` have not sent the
/// body and are answered at once.
pub async fn drain_rejected<S, E>(headers: &axum::http::HeaderMap, mut body: S)
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    use futures_util::StreamExt;
    if headers.contains_key(axum::http::header::EXPECT) {
        return;
    }
    let drain = async {
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.len() as u64;
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}
