//! A closed-loop HTTP/1.1 GET generator in the style of wrk: `threads` OS threads, each
//! one single-threaded tokio event loop driving its share of `connections` keep-alive
//! connections; every connection sends its next request as soon as the previous answer
//! arrived, until the deadline. Bodies are read and discarded; redirects are not
//! followed. Latencies go into per-connection histograms, merged at the end.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper::Uri;
use hyper_util::rt::TokioIo;

use super::stats::Histogram;

/// What to load and for how long.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `host:port` to connect to (also sent as `Host`).
    pub authority: String,
    /// Request path (and query), e.g. `/key`.
    pub path: String,
    /// Keep-alive connections in total.
    pub connections: usize,
    /// OS threads sharing them.
    pub threads: usize,
    /// How long to keep sending.
    pub duration: Duration,
    /// Which answers count as success.
    pub accept: fn(u16) -> bool,
}

/// The outcome of one closed-loop run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Answers received (any status).
    pub requests: u64,
    /// From the first request sent to the last answer received.
    pub elapsed: Duration,
    /// Latency of every answer.
    pub latency: Histogram,
    /// Count per status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Transport failures plus answers `accept` refused.
    pub errors: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
}

impl Outcome {
    fn merge(&mut self, o: Outcome) {
        self.requests += o.requests;
        self.latency.merge(&o.latency);
        for (s, n) in o.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// Runs `plan` to completion (blocking the calling thread; call from `spawn_blocking`).
pub fn run(plan: Plan) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        plan.connections > 0 && plan.threads > 0,
        "need at least one connection and one thread"
    );
    let threads = plan.threads.min(plan.connections);
    let plan = Arc::new(plan);
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let share = plan.connections / threads + usize::from(k < plan.connections % threads);
            let (plan, barrier) = (Arc::clone(&plan), Arc::clone(&barrier));
            std::thread::Builder::new()
                .name(format!("bench-loop-{k}"))
                .spawn(move || one_thread(&plan, share, &barrier))
                .context("cannot start a load thread")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut total = Outcome::default();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for h in handles {
        let (outcome, start, end) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        first = Some(first.map_or(start, |f| f.min(start)));
        last = Some(last.map_or(end, |l| l.max(end)));
        total.merge(outcome);
    }
    if let (Some(first), Some(last)) = (first, last) {
        total.elapsed = last - first;
    }
    Ok(total)
}

/// One load thread: connect its `share` of connections, wait for the others, run.
fn one_thread(
    plan: &Plan,
    share: usize,
    barrier: &Barrier,
) -> anyhow::Result<(Outcome, Instant, Instant)> {
    let prepared = prepare(plan, share);
    // Every thread must reach the barrier, even one that failed to connect.
    barrier.wait();
    let (rt, conns) = prepared?;
    let start = Instant::now();
    let deadline = start + plan.duration;
    let loops = conns.into_iter().map(|c| drive(plan, c, deadline));
    let outcomes = rt.block_on(futures_util::future::join_all(loops));
    let end = Instant::now();
    let mut total = Outcome::default();
    for o in outcomes {
        total.merge(o);
    }
    Ok((total, start, end))
}

/// A single-threaded runtime and `share` connections opened on it.
type Prepared = (tokio::runtime::Runtime, Vec<SendRequest<Empty<Bytes>>>);

fn prepare(plan: &Plan, share: usize) -> anyhow::Result<Prepared> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a load thread's runtime")?;
    let conns = rt.block_on(async {
        let mut conns = Vec::with_capacity(share);
        for _ in 0..share {
            conns.push(connect(&plan.authority).await?);
        }
        Ok::<_, anyhow::Error>(conns)
    })?;
    Ok((rt, conns))
}

/// Opens one keep-alive HTTP/1.1 connection; its driver runs as a task on this thread.
async fn connect(authority: &str) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .with_context(|| format!("HTTP handshake with {authority}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The closed loop of one connection: send, wait for the whole answer, repeat.
async fn drive(plan: &Plan, mut sender: SendRequest<Empty<Bytes>>, deadline: Instant) -> Outcome {
    let mut out = Outcome::default();
    let target = match (
        plan.path.parse::<Uri>(),
        HeaderValue::from_str(&plan.authority),
    ) {
        (Ok(uri), Ok(host)) => (uri, host),
        _ => {
            out.error(format!(
                "bad request target {}{}",
                plan.authority, plan.path
            ));
            return out;
        }
    };
    while Instant::now() < deadline {
        let t = Instant::now();
        match request(plan, &target, &mut sender).await {
            Ok(status) => {
                out.latency.record(t.elapsed());
                out.requests += 1;
                *out.statuses.entry(status).or_default() += 1;
                if !(plan.accept)(status) {
                    out.error(format!("GET {}: unexpected status {status}", plan.path));
                }
            }
            Err(e) => {
                out.error(format!("{e:#}"));
                // The connection is unusable: open another, or give up on this one.
                match connect(&plan.authority).await {
                    Ok(s) => sender = s,
                    Err(e) => {
                        out.error(format!("{e:#}"));
                        break;
                    }
                }
            }
        }
    }
    out
}

/// One GET; the body is read to the end so the connection can be reused.
async fn request(
    plan: &Plan,
    (uri, host): &(Uri, HeaderValue),
    sender: &mut SendRequest<Empty<Bytes>>,
) -> anyhow::Result<u16> {
    sender.ready().await.context("connection closed")?;
    let mut req = hyper::Request::new(Empty::new());
    *req.uri_mut() = uri.clone();
    req.headers_mut().insert(hyper::header::HOST, host.clone());
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("GET {}", plan.path))?;
    let status = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .with_context(|| format!("GET {}: reading the body", plan.path))?;
    Ok(status)
}
