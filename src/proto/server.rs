//! The binary protocol's listener and connections.
//!
//! Each connection reads requests into a buffer and answers them one after another, in
//! order: a client may pipeline (send many requests before reading any answer). Answers
//! are buffered and flushed whenever the server is about to wait for more input, so a
//! pipelined batch goes out in few writes.
//!
//! * **Errors that leave the stream position known** (a key or value over the limits,
//!   an unknown compression byte, a store error, a bad zstd stream, a request before
//!   AUTH) answer `0xFF` with a message; the rest of the frame is skipped and the
//!   connection keeps serving.
//! * **Errors that do not** (an unknown op, whose frame length cannot be known; the peer
//!   closing mid-frame; the idle timeout mid-frame; a value failing midway while being
//!   sent) answer `0xFF` when they still can and close the connection.
//! * **Authentication**: when the server has a token (`--auth-token`, any auth mode),
//!   every request but AUTH is refused until an AUTH with the right token; a wrong
//!   token closes the connection.
//! * **Rate limit**: over `--rate-limit` (per client, shared with the server's other
//!   front-ends) a request is answered `0xFF` "rate limit exceeded: retry later", its
//!   value skipped, the connection kept; HEALTH is exempt.
//! * **Limits**: `--tcp-idle-timeout` bounds every read and write (an idle connection is
//!   closed), `--tcp-max-connections` connections are served at once, keys are at most
//!   1023 bytes (hoard's 1024 with the leading `/`), values at most `--tcp-max-value`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Buf;
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::conn::{message, Conn, Ctx};
use super::frame::{self, FrameError, Limits, Op, Request, STATUS_OK};
use super::{hoard_key, ProtoArgs, ProtoError};
use crate::auth::{Auth, AuthMode};
use crate::store::Store;

/// A running binary-protocol listener.
pub struct Running {
    addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The address it listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops accepting, lets each connection finish the request it is serving, and
    /// waits for them at most `grace` (then cuts them off). Call before the store is
    /// shut down: connections hold it.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Binds `bind:--tcp-port` and serves the protocol on `store` with `auth`, if the port
/// is set; `None` otherwise.
pub async fn start(
    args: &ProtoArgs,
    bind: &str,
    store: Arc<Store>,
    auth: Auth,
    limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
) -> anyhow::Result<Option<Running>> {
    let Some(port) = args.tcp_port else {
        return Ok(None);
    };
    let listener = TcpListener::bind((bind, port))
        .await
        .with_context(|| format!("cannot listen on {bind}:{port} (--tcp-port)"))?;
    let addr = listener.local_addr()?;
    let ctx = Arc::new(Ctx {
        store,
        auth,
        limits: Limits {
            max_key: crate::key::MAX_KEY_LEN - 1,
            max_value: args.tcp_max_value.min(u64::from(u32::MAX)),
        },
        idle: args.tcp_idle_timeout,
        limiter,
    });
    let (stop, stopped) = watch::channel(false);
    let cap = args.tcp_max_connections.max(1);
    let task = tokio::spawn(accept_loop(listener, ctx, stopped, cap));
    tracing::info!("binary protocol on {addr}");
    Ok(Some(Running { addr, stop, task }))
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
    cap: usize,
) {
    let slots = Arc::new(Semaphore::new(cap));
    let mut conns = JoinSet::new();
    loop {
        // Reap finished connections so the set stays small.
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped(&mut stop) => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut stop) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let ctx = Arc::clone(&ctx);
                let stop = stop.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    metrics::gauge!("hoard_proto_connections").increment(1.0);
                    if let Err(e) = serve(stream, peer.ip(), &ctx, stop).await {
                        tracing::debug!("binary protocol connection from {peer}: {e}");
                    }
                    metrics::gauge!("hoard_proto_connections").decrement(1.0);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off a little.
                tracing::warn!("binary protocol accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves one connection until the peer closes it, an error that leaves the stream
/// position unknown, the idle timeout, or (between requests) `stop`.
async fn serve(
    stream: TcpStream,
    peer: std::net::IpAddr,
    ctx: &Ctx,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ProtoError> {
    let mut conn = Conn::new(stream, ctx.idle);
    let mut authed = Session {
        authed: ctx.auth.mode() == AuthMode::None,
        operator: ctx.auth.is_open(),
    };
    loop {
        match frame::parse(&conn.buf, &ctx.limits) {
            Ok((req, used)) => {
                conn.buf.advance(used);
                let op = req.op;
                let limited =
                    op != Op::Health && ctx.limiter.as_ref().is_some_and(|l| l.take(peer).is_err());
                let outcome = if limited {
                    refuse(&mut conn, &req, "rate limit exceeded: retry later").await
                } else if !authed.authed && op != Op::Auth {
                    refuse(&mut conn, &req, "authentication required: send AUTH first").await
                } else {
                    handle(&mut conn, ctx, req, &mut authed).await
                };
                metrics::counter!("hoard_proto_requests_total", "op" => op.name(),
                    "result" => if matches!(outcome, Ok(true)) { "ok" } else { "error" })
                .increment(1);
                outcome?;
            }
            Err(FrameError::Incomplete) => {
                let between = conn.buf.is_empty();
                let n = if between {
                    tokio::select! {
                        n = conn.fill() => n?,
                        _ = stopped(&mut stop) => {
                            conn.flush().await?;
                            return Ok(());
                        }
                    }
                } else {
                    match conn.fill().await {
                        Ok(n) => n,
                        Err(e @ ProtoError::Timeout(_)) => {
                            conn.last_error("timed out in the middle of a frame").await;
                            return Err(e);
                        }
                        Err(e) => return Err(e),
                    }
                };
                if n == 0 {
                    if between {
                        return Ok(());
                    }
                    conn.last_error("truncated frame").await;
                    return Err(ProtoError::Truncated);
                }
            }
            Err(FrameError::Refused { why, frame_len }) => {
                let buffered = (conn.buf.len() as u64).min(frame_len);
                conn.buf.advance(buffered as usize);
                if let Err(e) = conn.skip(frame_len - buffered).await {
                    conn.last_error(&format!("{why}; then: {e}")).await;
                    return Err(e);
                }
                conn.error(&why.to_string()).await?;
                metrics::counter!("hoard_proto_requests_total", "op" => "refused", "result" => "error")
                    .increment(1);
            }
            Err(e @ FrameError::UnknownOp(_)) => {
                conn.last_error(&e.to_string()).await;
                return Err(ProtoError::Fatal(e.to_string()));
            }
        }
    }
}

/// A request refused before it is handled (before AUTH, or over `--rate-limit`): skip
/// its value, answer `why`, keep the connection.
async fn refuse(conn: &mut Conn, req: &Request, why: &str) -> Result<bool, ProtoError> {
    if let Some(v) = req.value {
        conn.skip(u64::from(v.len)).await?;
    }
    conn.error(why).await?;
    Ok(false)
}

/// What a connection has proved.
struct Session {
    /// It may send requests (AUTH done, or no auth mode).
    authed: bool,
    /// It acts as the operator for tenancy: it sent the token, or the native API is
    /// declared open (`--native-open`).
    operator: bool,
}

/// The store's access rule for a request's key (tenancy: S3 buckets' contents, the
/// S3 API's own keys).
fn allowed(ctx: &Ctx, session: &Session, req: &Request) -> Result<(), String> {
    use crate::store::tenancy::{Access, Principal};
    let who = if session.operator {
        Principal::Operator
    } else {
        Principal::Anonymous
    };
    let access = if req.op == Op::Get {
        Access::Read
    } else {
        Access::Write
    };
    crate::key::check(&hoard_key(&req.key)).map_err(|e| e.to_string())?;
    ctx.store
        .authorize(&who, &hoard_key(&req.key), access)
        .map_err(|e| message(&e))
}

/// Answers one request; `Ok(true)` when it succeeded, `Ok(false)` when it was answered
/// with an error, `Err` when the connection must close.
async fn handle(
    conn: &mut Conn,
    ctx: &Ctx,
    req: Request,
    authed: &mut Session,
) -> Result<bool, ProtoError> {
    // The rules an HTTP path's key follows (UTF-8, no control characters, length…),
    // then who may touch it.
    if matches!(req.op, Op::Get | Op::Set | Op::Delete) {
        if let Err(e) = allowed(ctx, authed, &req) {
            if let Some(v) = req.value {
                conn.skip(u64::from(v.len)).await?;
            }
            conn.error(&e).await?;
            return Ok(false);
        }
    }
    let result: Result<(), String> = match req.op {
        Op::Auth => {
            let token = ctx.auth.token_ok(&req.key);
            if ctx.auth.mode() == AuthMode::None || token {
                authed.authed = true;
                authed.operator |= token;
                Ok(())
            } else {
                conn.last_error("authentication failed").await;
                return Err(ProtoError::Fatal("authentication failed".into()));
            }
        }
        Op::Health => {
            let body = health(&ctx.store);
            conn.answer(STATUS_OK, &body).await?;
            return Ok(true);
        }
        Op::Get => return get(conn, ctx, &req.key).await,
        Op::Set => match req.value {
            Some(v) => super::value::set(conn, ctx, hoard_key(&req.key), v).await?,
            None => Err("SET without a value header".into()),
        },
        Op::Delete => ctx
            .store
            .delete(hoard_key(&req.key))
            .await
            .map_err(|e| message(&e)),
    };
    match result {
        Ok(()) => {
            conn.answer(STATUS_OK, &[]).await?;
            Ok(true)
        }
        Err(msg) => {
            conn.error(&msg).await?;
            Ok(false)
        }
    }
}

/// GET: the value streamed from a replica to the socket. An error before the first
/// byte is an error answer; one after it closes the connection (the answer's length is
/// already sent, so the client sees a short read, never a short value as complete).
async fn get(conn: &mut Conn, ctx: &Ctx, key: &[u8]) -> Result<bool, ProtoError> {
    let key = hoard_key(key);
    let opened = match ctx.store.open(&key, None).await {
        Ok(o) => o,
        Err(e) => {
            conn.error(&message(&e)).await?;
            return Ok(false);
        }
    };
    let Ok(len) = u32::try_from(opened.record.size) else {
        conn.error("value too large for the binary protocol (over 4 GiB)")
            .await?;
        return Ok(false);
    };
    conn.write(&frame::response_header(STATUS_OK, len)).await?;
    let mut body = opened.body;
    let mut sent: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ProtoError::Fatal(format!("GET failed midway: {e}")))?;
        sent += chunk.len() as u64;
        if sent > u64::from(len) {
            return Err(ProtoError::Fatal(
                "replica sent more than the value's size".into(),
            ));
        }
        conn.write(&chunk).await?;
    }
    if sent != u64::from(len) {
        return Err(ProtoError::Fatal(format!(
            "replica sent {sent} of {len} bytes"
        )));
    }
    Ok(true)
}

/// HEALTH's JSON: status, version, key counts and volumes up.
fn health(store: &Store) -> Vec<u8> {
    let mut body = store.summary();
    body["role"] = "index".into();
    serde_json::to_vec(&body).unwrap_or_else(|_| br#"{"status":"ok"}"#.to_vec())
}
