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
//!
//! A failed write is *settled* before it returns: every replica request is let finish
//! (those whose body was incomplete fail at once; one that received the whole value is
//! waited for, as its volume may still store it) until its answer arrives or the
//! prober sees its volume down. Only a settled write may be cleaned up: a cleanup
//! DELETE that overtook a volume still renaming the value into place would leave that
//! file behind, unreferenced — or, if the key were written again meanwhile, under the
//! newer record. [`WriteFailed::settled`] says whether every replica's fate is known.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::body::StreamBody;
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

/// The chunks the pump sends one replica; an error if the pump stops without `End`.
struct Channel(mpsc::Receiver<Msg>);

impl Stream for Channel {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.0.poll_recv(cx) {
            Poll::Ready(Some(Msg::Data(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(Some(Msg::End)) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(std::io::Error::other("upload aborted")))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A fan-out write that failed.
#[derive(Debug)]
pub struct WriteFailed {
    /// Why.
    pub error: FanoutError,
    /// Every replica request has ended (answered, or failed before its body was
    /// complete), so no replica can still store this value: cleaning up is safe now.
    /// False when a replica that had received the whole value was given up on (its
    /// volume hung) — it might still store it later.
    pub settled: bool,
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

/// How often a blocked send, a pending acknowledgement or a wait for the client's
/// body checks the replicas' health.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Writes one value to every URL in `urls` concurrently and succeeds once `quorum`
/// replicas acknowledged the complete value (`quorum == urls.len()`: all of them).
/// `body` yields the value's chunks; `len` is its Content-Length when the client sent
/// one (forwarded, so volumes see a fixed-length upload), otherwise uploads are chunked.
///
/// A replica that fails or stalls is dropped from the write (recorded as missing) as
/// long as `quorum` can still be reached. `down(i)` tells whether the health prober
/// sees replica `i`'s volume down: such a replica is treated as failed as soon as the
/// write would wait on it, and the write fails as soon as fewer than `quorum` replicas
/// are up, even while it waits for the client.
#[allow(clippy::too_many_arguments)]
pub async fn put_quorum<S, E>(
    client: &VolumeClient,
    urls: &[String],
    body: S,
    len: Option<u64>,
    hash: bool,
    stall: Duration,
    quorum: usize,
    down: &(dyn Fn(usize) -> bool + Sync),
) -> Result<QuorumUpload, WriteFailed>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let quorum = quorum.clamp(1, urls.len().max(1));
    let mut replicas = Replicas::spawn(client, urls, len);
    let result = async {
        let uploaded = pump(&mut replicas, urls, body, len, hash, stall, quorum, down).await?;
        let failed = collect_acks(&mut replicas, urls, quorum, down).await?;
        Ok::<_, FanoutError>((uploaded, failed))
    }
    .await;
    match result {
        Ok((uploaded, failed)) => {
            let mut missing = replicas.dropped.clone();
            missing.extend(failed);
            missing.sort_unstable();
            Ok(QuorumUpload { uploaded, missing })
        }
        Err(error) => {
            let settled = replicas.settle(down).await;
            Err(WriteFailed { error, settled })
        }
    }
}

/// Reads the client's body and hands every chunk to each replica still in the write.
#[allow(clippy::too_many_arguments)]
async fn pump<S, E>(
    r: &mut Replicas,
    urls: &[String],
    mut body: S,
    len: Option<u64>,
    hash: bool,
    stall: Duration,
    quorum: usize,
    down: &(dyn Fn(usize) -> bool + Sync),
) -> Result<Uploaded, FanoutError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let n = urls.len();
    let mut md5 = hash.then(Md5::new);
    let mut size = 0u64;
    let mut watch = tokio::time::interval(WATCH_INTERVAL);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let chunk = tokio::select! {
            chunk = body.next() => chunk,
            _ = watch.tick() => {
                // Waiting for the client: fail now if the quorum can no longer be met.
                let up: Vec<usize> = (0..n).filter(|&i| r.senders[i].is_some()).collect();
                if let Some(&i) = up.iter().find(|&&i| down(i)) {
                    if up.iter().filter(|&&i| !down(i)).count() < quorum {
                        return Err(FanoutError::Down { url: urls[i].clone() });
                    }
                }
                continue;
            }
        };
        let Some(chunk) = chunk else { break };
        let chunk = chunk.map_err(|e| FanoutError::Client(e.to_string()))?;
        size += chunk.len() as u64;
        if let Some(h) = md5.as_mut() {
            h.update(&chunk);
        }
        for (i, url) in urls.iter().enumerate() {
            let Some(tx) = &r.senders[i] else { continue };
            let err = match send_watched(tx, Msg::Data(chunk.clone()), stall, || down(i)).await {
                Ok(()) => continue,
                // The replica request ended early: report its own error.
                Err(Stop::Closed) => r.error_of(i, url).await,
                Err(stop) => stop.error(url, stall),
            };
            r.drop_replica(i, err, quorum)?;
        }
    }
    if let Some(want) = len.filter(|&want| want != size) {
        return Err(FanoutError::Length { got: size, want });
    }
    for i in 0..n {
        if r.senders[i].is_some() {
            // Every byte is queued: from here the volume may end up with the value.
            r.all_sent[i] = true;
        }
    }
    for (i, url) in urls.iter().enumerate() {
        let Some(tx) = &r.senders[i] else { continue };
        // A closed channel means the request already failed; its result says why.
        match send_watched(tx, Msg::End, stall, || down(i)).await {
            Ok(()) | Err(Stop::Closed) => {}
            Err(stop) => {
                let err = stop.error(url, stall);
                r.drop_replica(i, err, quorum)?;
            }
        }
    }
    Ok(Uploaded {
        size,
        md5: md5.map(|h| h.finalize().into()),
    })
}

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

/// Waits for the replicas still in the write to acknowledge. With a full quorum, the
/// first failure fails the write; otherwise once `quorum` acknowledged the rest get
/// [`QUORUM_GRACE`]. A replica whose volume the prober sees down counts as failed at
/// once. Returns the replicas that failed.
async fn collect_acks(
    r: &mut Replicas,
    urls: &[String],
    quorum: usize,
    down: &(dyn Fn(usize) -> bool + Sync),
) -> Result<Vec<usize>, FanoutError> {
    let mut acked = 0;
    let mut failed = Vec::new();
    let mut deadline = tokio::time::Instant::now() + PUT_ACK_TIMEOUT;
    loop {
        let waiting = r.waiting_in_write();
        if waiting.is_empty() {
            return Ok(failed);
        }
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, r.next_answer()) => next,
            () = tokio::time::sleep(WATCH_INTERVAL) => match waiting.iter().find(|&&i| down(i)) {
                // Its answer will never count: give up on it, as failed.
                Some(&i) => {
                    r.give_up(i);
                    Ok(Some((i, Err(FanoutError::Down { url: urls[i].clone() }))))
                }
                None => continue,
            },
        };
        let (i, result) = match next {
            Ok(Some((i, _))) if r.dropped.contains(&i) => continue,
            Ok(Some(answer)) => answer,
            Ok(None) => return Ok(failed),
            Err(_) if acked >= quorum => {
                // The grace after the quorum is over: the late ones are missing.
                for &i in &waiting {
                    r.give_up(i);
                }
                failed.extend(waiting);
                return Ok(failed);
            }
            Err(_) => {
                return Err(FanoutError::Stalled {
                    url: urls[waiting[0]].clone(),
                    limit: PUT_ACK_TIMEOUT,
                })
            }
        };
        match result {
            Ok(()) => {
                acked += 1;
                if acked == quorum {
                    deadline = deadline.min(tokio::time::Instant::now() + QUORUM_GRACE);
                }
            }
            Err(err) => {
                failed.push(i);
                if urls.len() - r.dropped.len() - failed.len() < quorum {
                    return Err(err);
                }
                tracing::warn!("replica did not acknowledge a write, recorded as missing: {err}");
            }
        }
    }
}

/// The replica requests of one write: their body channels, and their answers as they
/// arrive. Dropping it aborts every request still running.
struct Replicas {
    senders: Vec<Option<mpsc::Sender<Msg>>>,
    aborts: Vec<AbortHandle>,
    answers: mpsc::UnboundedReceiver<(usize, Result<(), VolumeError>)>,
    /// Answers received while waiting for a particular one, not yet consumed.
    unread: std::collections::VecDeque<(usize, Result<(), FanoutError>)>,
    /// The request's answer (or failure) arrived.
    answered: Vec<bool>,
    /// Aborted by us before it answered.
    given_up: Vec<bool>,
    /// Every byte of the value was queued to it: its volume may store the value.
    all_sent: Vec<bool>,
    /// Dropped from the write while the body was streaming (recorded as missing).
    dropped: Vec<usize>,
}

impl Replicas {
    /// Starts one PUT per URL, each fed by its own bounded channel.
    fn spawn(client: &VolumeClient, urls: &[String], len: Option<u64>) -> Self {
        let n = urls.len();
        let (answer_tx, answers) = mpsc::unbounded_channel();
        let mut senders = Vec::with_capacity(n);
        let mut aborts = Vec::with_capacity(n);
        for (i, url) in urls.iter().enumerate() {
            let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
            let body = StreamBody::request_body(Channel(rx), len);
            let (client, url, answer_tx) = (client.clone(), url.clone(), answer_tx.clone());
            // In the request's span, so the volume's PUT continues the client's trace.
            let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
                let result = client.put(&url, body).await;
                let _ = answer_tx.send((i, result));
            }));
            aborts.push(task.abort_handle());
            senders.push(Some(tx));
        }
        Replicas {
            senders,
            aborts,
            answers,
            unread: std::collections::VecDeque::new(),
            answered: vec![false; n],
            given_up: vec![false; n],
            all_sent: vec![false; n],
            dropped: Vec::new(),
        }
    }

    /// Replicas whose answer is still awaited (`dropped` ones included).
    fn waiting(&self) -> Vec<usize> {
        (0..self.aborts.len())
            .filter(|&i| !self.answered[i] && !self.given_up[i])
            .collect()
    }

    /// Replicas still in the write whose answer is awaited.
    fn waiting_in_write(&self) -> Vec<usize> {
        let mut waiting = self.waiting();
        waiting.retain(|i| !self.dropped.contains(i));
        waiting
    }

    /// The next answer of a replica not given up on; `None` when none is left.
    async fn next_answer(&mut self) -> Option<(usize, Result<(), FanoutError>)> {
        if let Some(answer) = self.unread.pop_front() {
            return Some(answer);
        }
        loop {
            let (i, result) = self.answers.recv().await?;
            self.answered[i] = true;
            if !self.given_up[i] {
                return Some((i, result.map_err(FanoutError::from)));
            }
        }
    }

    /// Stops waiting for replica `i`: its request is aborted.
    fn give_up(&mut self, i: usize) {
        self.senders[i] = None;
        if !self.answered[i] {
            self.aborts[i].abort();
            self.given_up[i] = true;
        }
    }

    /// Takes replica `i` out of the write after `err` (its body channel closes, so its
    /// upload fails and the volume keeps nothing); the error itself when the quorum can
    /// no longer be reached.
    fn drop_replica(
        &mut self,
        i: usize,
        err: FanoutError,
        quorum: usize,
    ) -> Result<(), FanoutError> {
        if self.aborts.len() - self.dropped.len() - 1 < quorum {
            return Err(err);
        }
        tracing::warn!("replica dropped from a write, recorded as missing: {err}");
        self.senders[i] = None;
        self.dropped.push(i);
        Ok(())
    }

    /// The error of replica `i`, whose request ended before its body was complete.
    async fn error_of(&mut self, i: usize, url: &str) -> FanoutError {
        let wait = async {
            if let Some(pos) = self.unread.iter().position(|(j, _)| *j == i) {
                return self.unread.remove(pos).and_then(|(_, r)| r.err());
            }
            loop {
                // Other answers are kept for later (this wait may be cut short).
                let (j, result) = self.answers.recv().await?;
                self.answered[j] = true;
                if self.given_up[j] {
                    continue;
                }
                let result = result.map_err(FanoutError::from);
                if j == i {
                    return result.err();
                }
                self.unread.push_back((j, result));
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), wait).await {
            Ok(Some(e)) => e,
            _ => FanoutError::Client(format!("replica {url} ended the upload early")),
        }
    }

    /// After a failure: closes every body (an incomplete upload fails at once) and waits
    /// for every request to end, giving up on one when the prober sees its volume down
    /// or after [`PUT_ACK_TIMEOUT`]. True when no replica that may hold the whole value
    /// was given up on.
    async fn settle(&mut self, down: &(dyn Fn(usize) -> bool + Sync)) -> bool {
        self.senders.iter_mut().for_each(|s| *s = None);
        let deadline = tokio::time::Instant::now() + PUT_ACK_TIMEOUT;
        loop {
            let waiting = self.waiting();
            if waiting.is_empty() || tokio::time::Instant::now() >= deadline {
                waiting.into_iter().for_each(|i| self.give_up(i));
                break;
            }
            tokio::select! {
                answer = self.next_answer() => if answer.is_none() { break },
                () = tokio::time::sleep(WATCH_INTERVAL) => {
                    for i in waiting.into_iter().filter(|&i| down(i)) {
                        self.give_up(i);
                    }
                }
            }
        }
        let settled = (0..self.aborts.len()).all(|i| !(self.given_up[i] && self.all_sent[i]));
        if !settled {
            tracing::warn!("a failed write could not be settled: a volume that may hold the value stopped answering");
        }
        settled
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for (i, a) in self.aborts.iter().enumerate() {
            if !self.answered[i] {
                a.abort();
            }
        }
    }
}
