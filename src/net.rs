//! The connection layer shared by the index server and the volume server: accepting
//! connections (optionally over TLS), and the limits that keep hostile or broken
//! clients from exhausting the server.
//!
//! * **Header read timeout** (`--header-timeout`): a connection that does not deliver a
//!   complete request head in time — slowloris, or simply an idle keep-alive connection
//!   — is closed. The TLS handshake has the same budget.
//! * **Body read timeout** (`--body-timeout`): every request body is wrapped so that a
//!   gap between two chunks longer than the limit fails the body (the upload is rolled
//!   back like a client disconnect).
//! * **Header size**: header fields over [`MAX_HEADER_BYTES`] in total, or more than
//!   [`MAX_HEADERS`] of them, answer 431.
//! * **Framing**: hyper refuses malformed chunked framing, invalid or conflicting
//!   `Content-Length`s (400); with both `Content-Length` and `Transfer-Encoding` it
//!   follows RFC 9112 §6.3: `Transfer-Encoding` wins and `Content-Length` is dropped.
//! * **Connection cap** (`--max-connections`): at most that many connections are served
//!   at once; more wait in the kernel's accept queue (a warning is logged when the cap
//!   is reached, at most once a minute). At start the soft open-files limit is raised
//!   to the hard limit and the cap is lowered to fit under it, so the server never
//!   fails for lack of file descriptors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// Largest total size of request header fields accepted; larger answers 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// hyper's read buffer: a request head that does not fit answers 431 as well.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one request; more answers 431.
pub const MAX_HEADERS: usize = 100;
/// File descriptors kept free for files, the index and outgoing connections.
const FD_RESERVE: u64 = 512;
/// Least time between two "at the connection cap" warnings.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Connection-level flags shared by `hoard server` and `hoard volume`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Close a connection that has not sent a complete request head within this time
    /// (slow clients, idle keep-alive connections). Also bounds the TLS handshake.
    #[arg(long, env = "HOARD_HEADER_TIMEOUT", default_value = "30s", value_parser = crate::units::parse_duration)]
    pub header_timeout: Duration,
    /// Fail an upload whose body sends nothing for this long.
    #[arg(long, env = "HOARD_BODY_TIMEOUT", default_value = "30s", value_parser = crate::units::parse_duration)]
    pub body_timeout: Duration,
    /// Most connections served at once (lowered to fit the open-files limit).
    #[arg(long, env = "HOARD_MAX_CONNECTIONS", default_value_t = 16384)]
    pub max_connections: usize,
    /// PEM certificate chain: serve HTTPS (needs --tls-key).
    #[arg(long, env = "HOARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "HOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// On SIGTERM/SIGINT, how long in-flight requests (and, on the index server, writes
    /// still running) may take to finish before the server stops anyway; writes cut
    /// off leave intents that repair rolls back.
    #[arg(long, env = "HOARD_SHUTDOWN_GRACE", default_value = "30s", value_parser = crate::units::parse_duration)]
    pub shutdown_grace: Duration,
}

impl Default for ListenArgs {
    fn default() -> Self {
        ListenArgs {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_connections: 16384,
            tls_cert: None,
            tls_key: None,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// How [`serve`] treats connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// See [`ListenArgs::header_timeout`].
    pub header_timeout: Duration,
    /// See [`ListenArgs::body_timeout`].
    pub body_timeout: Duration,
    /// See [`ListenArgs::max_connections`].
    pub max_connections: usize,
    /// Terminate TLS with this acceptor.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// See [`ListenArgs::shutdown_grace`].
    pub grace: Duration,
}

impl ServeOptions {
    /// The options `args` describe, loading the TLS certificate if one is given.
    pub fn from_args(args: &ListenArgs) -> anyhow::Result<Self> {
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
            _ => None,
        };
        Ok(ServeOptions {
            header_timeout: args.header_timeout,
            body_timeout: args.body_timeout,
            max_connections: args.max_connections,
            tls,
            grace: args.shutdown_grace,
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Raises the soft open-files limit to the hard limit; returns the resulting soft limit
/// (`u64::MAX` if unknown or unlimited).
pub fn raise_fd_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return u64::MAX;
            }
            if lim.rlim_cur < lim.rlim_max {
                let want = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
        }
        if lim.rlim_cur == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            lim.rlim_cur
        }
    }
    #[cfg(not(unix))]
    {
        u64::MAX
    }
}

/// The connection cap actually used: `wanted`, lowered to fit under the open-files limit.
pub fn effective_max_connections(wanted: usize) -> usize {
    let fds = raise_fd_limit();
    let fit = fds.saturating_sub(FD_RESERVE).max(64);
    wanted.clamp(1, usize::try_from(fit).unwrap_or(usize::MAX))
}

/// Serves `router` on `listener` with the limits of `opts` until `shutdown` completes;
/// then stops accepting and gives in-flight requests up to `opts.grace` to finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    opts: ServeOptions,
) -> anyhow::Result<()> {
    let cap = effective_max_connections(opts.max_connections);
    if cap < opts.max_connections {
        tracing::info!("serving at most {cap} connections (open-files limit)");
    }
    let permits = Arc::new(Semaphore::new(cap));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let http = Arc::new(http);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Connections that never end would stop this server from accepting
                // any more: say so, rather than go quiet.
                if warned.is_none_or(|t| t.elapsed() >= CAP_WARNING_EVERY) {
                    tracing::warn!(
                        "serving {cap} connections, the most allowed (--max-connections): \
                         new ones wait in the accept queue"
                    );
                    warned = Some(tokio::time::Instant::now());
                }
                tokio::select! {
                    p = Arc::clone(&permits).acquire_owned() => p.context("connection limiter closed")?,
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = connection_service(router.clone(), peer, opts.body_timeout);
        let watcher = graceful.watcher();
        let (http, tls, handshake) = (Arc::clone(&http), opts.tls.clone(), opts.header_timeout);
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                None => {
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let conn = http.serve_connection(TokioIo::new(tls), service);
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake with {peer} timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(opts.grace) => {
            tracing::warn!("in-flight requests did not finish within {:?}", opts.grace);
        }
    }
    Ok(())
}

/// A response for request heads refused outright, before routing.
fn refuse_head<B>(req: &hyper::Request<B>) -> Option<axum::response::Response> {
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::IntoResponse as _;
    let size: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let (status, why) = if size > MAX_HEADER_BYTES {
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request header fields too large\n",
        )
    } else {
        return None;
    };
    let mut res = (status, why).into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Some(res)
}

/// The per-connection hyper service: the router, with the peer address available as
/// axum's `ConnectInfo` and the body wrapped in the idle timeout.
fn connection_service(
    router: axum::Router,
    peer: SocketAddr,
    body_timeout: Duration,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<
        Output = Result<axum::response::Response, std::convert::Infallible>,
    > + Send,
> + Clone {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            if let Some(refused) = refuse_head(&req) {
                return Ok(refused);
            }
            let mut req = req.map(|body| {
                axum::body::Body::new(tower_http::timeout::TimeoutBody::new(body_timeout, body))
            });
            req.extensions_mut().insert(ConnectInfo(peer));
            router.oneshot(req).await
        }
    })
}
