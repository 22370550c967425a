//! Streaming one request body to N replica volumes at once, in bounded memory.
//!
//! A pump reads the incoming body chunk by chunk, hashes it, and hands each chunk (a
//! reference-counted `Bytes`, not a copy) to one bounded channel per replica; each
//! channel feeds the body of an outgoing PUT. The slowest replica sets the pace, and at
//! most `CHANNEL_CHUNKS` chunks per replica are in memory at any time.
//!
//! A replica body ends cleanly only when the pump sends an explicit end marker; if the
//! pump stops for any reason (client disconnect, another replica failed, the request
//! task was dropped) the channel closes without it, the outgoing body yields an error,
//! the connection is aborted, and the volume discards its temp file. A chunked upload
//! can therefore never be cut short into a "complete" shorter file.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body::{Body, Frame, SizeHint};
use md5::{Digest, Md5};
use tokio::sync::mpsc;

use super::client::{VolumeClient, VolumeError, PUT_ACK_TIMEOUT};

/// Chunks buffered per replica before the pump waits for it.
const CHANNEL_CHUNKS: usize = 8;

/// What was stored on every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Bytes written to each replica.
    pub size: u64,
    /// md5 of the value, when hashing was on.
    pub md5: Option<[u8; 16]>,
}

/// Why a fan-out write failed. Whatever the cause, no replica holds a visible partial
/// value; some replicas may hold the complete value and must be cleaned by the caller.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// Reading the client's body failed (disconnect, bad framing).
    #[error("reading the request body: {0}")]
    Client(String),
    /// The body did not match its Content-Length.
    #[error("body has {got} bytes but Content-Length said {want}")]
    Length {
        /// Bytes received.
        got: u64,
        /// Content-Length.
        want: u64,
    },
    /// A replica refused or failed the write.
    #[error("replica write failed: {0}")]
    Replica(#[from] VolumeError),
    /// The health prober saw the replica's volume go down during the write.
    #[error("replica {url}: its volume stopped answering health probes")]
    Down {
        /// The replica URL.
        url: String,
    },
    /// A replica stopped accepting data for longer than the stall limit.
    #[error("replica {url} accepted no data for {limit:?}")]
    Stalled {
        /// The replica URL.
        url: String,
        /// The stall limit.
        limit: Duration,
    },
}

enum Msg {
    Data(Bytes),
    End,
}

/// The outgoing body of one replica PUT, fed by the pump.
struct ChannelBody {
    rx: mpsc::Receiver<Msg>,
    len: Option<u64>,
    done: bool,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Msg::Data(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Msg::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(std::io::Error::other("upload aborted"))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.len
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// Writes one value to every URL in `urls` concurrently. `body` yields the value's
/// chunks; `len` is its Content-Length when the client sent one (forwarded, so volumes
/// see a fixed-length upload), otherwise uploads are chunked. Succeeds only when every
/// replica acknowledged the complete value.
pub async fn put_all<S, E>(
    client: &VolumeClient,
    urls: &[String],
    body: S,
    len: Option<u64>,
    hash: bool,
    stall: Duration,
) -> Result<Uploaded, FanoutError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    put_quorum(client, urls, body, len, hash, stall, urls.len(), &|_| false)
        .await
        .map(|q| q.uploaded)
}

/// A write that reached its quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumUpload {
    /// What the acknowledging replicas hold.
    pub uploaded: Uploaded,
    /// Indexes (into `urls`) of replicas that do not hold the value.
    pub missing: Vec<usize>,
}

/// After `quorum` replicas acknowledged, how long the others get to do the same before
/// they are recorded as missing.
pub const QUORUM_GRACE: Duration = Duration::from_secs(5);

/// Like [`put_all`], but succeeds once `quorum` replicas acknowledged the complete
/// value: a replica that fails or stalls is dropped from the write (its upload aborted,
/// so it never holds a partial file) as long as `quorum` can still be reached. With
/// `quorum == urls.len()` this is exactly [`put_all`]. `down(i)` tells whether the
/// health prober sees replica `i`'s volume down: such a replica is treated as failed
/// as soon as the write would wait on it, instead of after the stall limit.
#[allow(clippy::too_many_arguments)]
pub async fn put_quorum<S, E>(
    client: &VolumeClient,
    urls: &[String],
    mut body: S,
    len: Option<u64>,
    hash: bool,
    stall: Duration,
    quorum: usize,
    down: &(dyn Fn(usize) -> bool + Sync),
) -> Result<QuorumUpload, FanoutError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let n = urls.len();
    let quorum = quorum.clamp(1, n.max(1));
    let mut senders = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for url in urls {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let replica_body = reqwest::Body::wrap(ChannelBody {
            rx,
            len,
            done: false,
        });
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(
            async move { client.put(&url, replica_body).await },
        ));
        senders.push(Some(tx));
    }
    // Abort every outgoing request that is still running when we return early.
    let mut guard = AbortOnDrop(tasks);
    let mut missing: Vec<usize> = Vec::new();

    let mut md5 = hash.then(Md5::new);
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| FanoutError::Client(e.to_string()))?;
        size += chunk.len() as u64;
        if let Some(h) = md5.as_mut() {
            h.update(&chunk);
        }
        for i in 0..n {
            let Some(tx) = &senders[i] else { continue };
            let err = match send_watched(tx, Msg::Data(chunk.clone()), stall, || down(i)).await {
                Ok(()) => continue,
                // The replica request ended early: report its own error.
                Err(Stop::Closed) => guard.error_of(i, &urls[i]).await,
                Err(stop) => stop.error(&urls[i], stall),
            };
            drop_replica(&mut guard, &mut senders, &mut missing, i, err, n, quorum)?;
        }
    }
    if let Some(want) = len.filter(|&want| want != size) {
        return Err(FanoutError::Length { got: size, want });
    }
    for i in 0..n {
        let Some(tx) = &senders[i] else { continue };
        // A closed channel means the request already failed; its result says why.
        match send_watched(tx, Msg::End, stall, || down(i)).await {
            Ok(()) | Err(Stop::Closed) => {}
            Err(stop) => {
                let err = stop.error(&urls[i], stall);
                drop_replica(&mut guard, &mut senders, &mut missing, i, err, n, quorum)?;
            }
        }
    }
    let tasks = guard.disarm();
    let failed = collect_acks(tasks, urls, &missing, quorum, down).await?;
    missing.extend(failed);
    missing.sort_unstable();
    Ok(QuorumUpload {
        uploaded: Uploaded {
            size,
            md5: md5.map(|h| h.finalize().into()),
        },
        missing,
    })
}

/// How often a blocked send or a pending acknowledgement checks the replica's health.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Why [`send_watched`] gave up.
enum Stop {
    /// The replica's request ended (its body channel closed).
    Closed,
    /// No room in the channel for the stall limit.
    Stalled,
    /// The prober sees the replica's volume down.
    Down,
}

impl Stop {
    fn error(self, url: &str, stall: Duration) -> FanoutError {
        match self {
            Stop::Down => FanoutError::Down {
                url: url.to_string(),
            },
            Stop::Stalled | Stop::Closed => FanoutError::Stalled {
                url: url.to_string(),
                limit: stall,
            },
        }
    }
}

/// Sends `msg` to a replica, giving up after `stall` or as soon as `down()` says its
/// volume is down.
async fn send_watched(
    tx: &mpsc::Sender<Msg>,
    msg: Msg,
    stall: Duration,
    down: impl Fn() -> bool,
) -> Result<(), Stop> {
    let send = tx.send(msg);
    tokio::pin!(send);
    let deadline = tokio::time::Instant::now() + stall;
    loop {
        tokio::select! {
            r = &mut send => return r.map_err(|_| Stop::Closed),
            () = tokio::time::sleep(WATCH_INTERVAL) => {
                if down() {
                    return Err(Stop::Down);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(Stop::Stalled);
                }
            }
        }
    }
}

/// Takes replica `i` out of a write after `err`; the error itself when the quorum can
/// no longer be reached.
fn drop_replica(
    guard: &mut AbortOnDrop,
    senders: &mut [Option<mpsc::Sender<Msg>>],
    missing: &mut Vec<usize>,
    i: usize,
    err: FanoutError,
    n: usize,
    quorum: usize,
) -> Result<(), FanoutError> {
    if n - missing.len() - 1 < quorum {
        return Err(err);
    }
    tracing::warn!("replica dropped from a write, recorded as missing: {err}");
    senders[i] = None;
    guard.0[i].abort();
    missing.push(i);
    Ok(())
}

/// Waits for the replicas not in `skip` to acknowledge. With a full quorum, the first
/// failure fails the write; otherwise once `quorum` acknowledged the rest get
/// [`QUORUM_GRACE`]. A replica whose volume the prober sees down counts as failed at
/// once. Returns the replicas that failed.
async fn collect_acks(
    tasks: Vec<tokio::task::JoinHandle<Result<(), VolumeError>>>,
    urls: &[String],
    skip: &[usize],
    quorum: usize,
    down: &(dyn Fn(usize) -> bool + Sync),
) -> Result<Vec<usize>, FanoutError> {
    use futures_util::stream::FuturesUnordered;
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let abort_all = || aborts.iter().for_each(|a| a.abort());
    let mut pending: FuturesUnordered<_> = tasks
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .map(|(i, t)| async move { (i, t.await) })
        .collect();
    let mut alive = pending.len();
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    let mut deadline = tokio::time::Instant::now() + PUT_ACK_TIMEOUT;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, pending.next()) => next,
            () = tokio::time::sleep(WATCH_INTERVAL) => {
                let gone = (0..urls.len()).find(|&i| {
                    !skip.contains(&i) && !acked.contains(&i) && !failed.contains(&i) && down(i)
                });
                match gone {
                    // Its task result will never count: abort it and treat it as failed.
                    Some(i) => {
                        aborts[i].abort();
                        Ok(Some((i, Ok(Err(VolumeError::Timeout {
                            url: urls[i].clone(),
                            timeout: WATCH_INTERVAL,
                        })))))
                    }
                    None => continue,
                }
            }
        };
        let (i, result) = match next {
            Ok(Some(done)) if failed.contains(&done.0) => continue,
            Ok(Some(done)) => done,
            Ok(None) => break,
            Err(_) if acked.len() >= quorum => {
                let late: Vec<usize> = (0..urls.len())
                    .filter(|i| !skip.contains(i) && !acked.contains(i) && !failed.contains(i))
                    .collect();
                for &i in &late {
                    aborts[i].abort();
                }
                failed.extend(late);
                break;
            }
            Err(_) => {
                abort_all();
                let url = (0..urls.len())
                    .find(|i| !skip.contains(i) && !acked.contains(i) && !failed.contains(i))
                    .map_or_else(String::new, |i| urls[i].clone());
                return Err(FanoutError::Stalled {
                    url,
                    limit: PUT_ACK_TIMEOUT,
                });
            }
        };
        let err = match result {
            Ok(Ok(())) => {
                acked.push(i);
                if acked.len() == quorum {
                    deadline = deadline.min(tokio::time::Instant::now() + QUORUM_GRACE);
                }
                continue;
            }
            Ok(Err(e)) => FanoutError::from(e),
            Err(join) => FanoutError::Client(format!("replica task failed: {join}")),
        };
        alive -= 1;
        if alive < quorum {
            abort_all();
            return Err(err);
        }
        tracing::warn!("replica did not acknowledge a write, recorded as missing: {err}");
        failed.push(i);
    }
    Ok(failed)
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<Result<(), VolumeError>>>);

impl AbortOnDrop {
    fn disarm(mut self) -> Vec<tokio::task::JoinHandle<Result<(), VolumeError>>> {
        std::mem::take(&mut self.0)
    }

    /// The error of replica `i`, whose request ended before its body was complete.
    async fn error_of(&mut self, i: usize, url: &str) -> FanoutError {
        let task = &mut self.0[i];
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Err(e))) => e.into(),
            _ => FanoutError::Client(format!("replica {url} ended the upload early")),
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
