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
    mut body: S,
    len: Option<u64>,
    hash: bool,
    stall: Duration,
) -> Result<Uploaded, FanoutError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut senders = Vec::with_capacity(urls.len());
    let mut tasks = Vec::with_capacity(urls.len());
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
        senders.push(tx);
    }
    // Abort every outgoing request that is still running when we return early.
    let guard = AbortOnDrop(tasks);

    let mut md5 = hash.then(Md5::new);
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| FanoutError::Client(e.to_string()))?;
        size += chunk.len() as u64;
        if let Some(h) = md5.as_mut() {
            h.update(&chunk);
        }
        for (i, tx) in senders.iter().enumerate() {
            match tokio::time::timeout(stall, tx.send(Msg::Data(chunk.clone()))).await {
                Ok(Ok(())) => {}
                // The replica request ended early: report its own error.
                Ok(Err(_)) => return Err(guard.first_error(i, &urls[i]).await),
                Err(_) => {
                    return Err(FanoutError::Stalled {
                        url: urls[i].clone(),
                        limit: stall,
                    })
                }
            }
        }
    }
    if let Some(want) = len.filter(|&want| want != size) {
        return Err(FanoutError::Length { got: size, want });
    }
    for tx in &senders {
        // A closed channel means the request already failed; its result says why.
        let _ = tx.send(Msg::End).await;
    }
    let mut tasks = guard.disarm();
    for (i, task) in tasks.iter_mut().enumerate() {
        match tokio::time::timeout(PUT_ACK_TIMEOUT, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(abort_rest(tasks, e.into())),
            Ok(Err(join)) => {
                return Err(abort_rest(
                    tasks,
                    FanoutError::Client(format!("replica task failed: {join}")),
                ))
            }
            Err(_) => {
                return Err(abort_rest(
                    tasks,
                    FanoutError::Stalled {
                        url: urls[i].clone(),
                        limit: PUT_ACK_TIMEOUT,
                    },
                ))
            }
        }
    }
    Ok(Uploaded {
        size,
        md5: md5.map(|h| h.finalize().into()),
    })
}

fn abort_rest(
    tasks: Vec<tokio::task::JoinHandle<Result<(), VolumeError>>>,
    e: FanoutError,
) -> FanoutError {
    drop(AbortOnDrop(tasks));
    e
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<Result<(), VolumeError>>>);

impl AbortOnDrop {
    fn disarm(mut self) -> Vec<tokio::task::JoinHandle<Result<(), VolumeError>>> {
        std::mem::take(&mut self.0)
    }

    /// The error of replica `i`, whose request ended before its body was complete.
    async fn first_error(mut self, i: usize, url: &str) -> FanoutError {
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
