//! Moving bytes between volumes without holding a value in memory: a GET response's
//! byte stream is piped into a PUT, hashed on the way. The checksum is checked before
//! the upload is allowed to complete: when the last chunk does not make the expected
//! md5 (or size), the upload body ends in an error instead, the connection is aborted
//! and the volume discards the partial file. A bad copy is therefore never stored.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body::{Body, Frame, SizeHint};
use md5::{Digest, Md5};

use super::OpsError;
use crate::replica::{VolumeClient, VolumeError};

/// What a copy (or a stored replica) must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// Size in bytes.
    pub size: u64,
    /// md5 of the value, when known.
    pub md5: Option<[u8; 16]>,
}

/// A copy deadline: generous, but a stalled volume cannot hang a job forever.
fn copy_timeout(size: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_secs(size / (1 << 20))
}

/// The upload body: the source stream, checked against [`Expect`] at its end.
struct CheckedBody<S> {
    source: S,
    expect: Expect,
    seen: u64,
    md5: Md5,
    done: bool,
}

impl<S> Body for CheckedBody<S>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let fail = |msg: String| Poll::Ready(Some(Err(std::io::Error::other(msg))));
        match self.source.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                self.md5.update(&chunk);
                if self.seen > self.expect.size {
                    self.done = true;
                    return fail(format!("source longer than {} bytes", self.expect.size));
                }
                if self.seen == self.expect.size {
                    self.done = true;
                    if let Some(want) = self.expect.md5 {
                        let got: [u8; 16] = self.md5.clone().finalize().into();
                        if got != want {
                            return fail("source md5 differs from the record".into());
                        }
                    }
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                fail(format!("reading source: {e}"))
            }
            Poll::Ready(None) => {
                self.done = true;
                fail(format!(
                    "source ended after {} of {} bytes",
                    self.seen, self.expect.size
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.expect.size)
    }
}

/// Copies `src_url` to `dst_url`, streaming. Succeeds only if the destination now holds
/// exactly `expect.size` bytes matching `expect.md5` (when known). Returns the bytes
/// copied.
pub async fn copy(
    client: &VolumeClient,
    src_url: &str,
    dst_url: &str,
    expect: Expect,
) -> Result<u64, OpsError> {
    let err = |reason: String| OpsError::Copy {
        from: src_url.to_string(),
        to: dst_url.to_string(),
        reason,
    };
    if expect.size == 0 {
        return Err(err("zero-length values are not stored by hoard".into()));
    }
    let work = async {
        let resp = client.get(src_url).await?;
        if let Some(len) = resp.content_length().filter(|&l| l != expect.size) {
            return Err(err(format!(
                "source has {len} bytes, the record says {}",
                expect.size
            )));
        }
        let body = CheckedBody {
            source: resp.bytes_stream(),
            expect,
            seen: 0,
            md5: Md5::new(),
            done: false,
        };
        client
            .put(dst_url, reqwest::Body::wrap(body))
            .await
            .map_err(|e| match e {
                // The body error (checksum, short source) surfaces as a transport error.
                VolumeError::Transport { source, .. } => err(format!("{source:#}")),
                other => OpsError::Volume(other),
            })?;
        Ok(expect.size)
    };
    tokio::time::timeout(copy_timeout(expect.size), work)
        .await
        .map_err(|_| err("timed out".into()))?
}

/// The size and md5 of the file at `url`, read in full; `None` if it does not exist.
pub async fn hash(client: &VolumeClient, url: &str) -> Result<Option<(u64, [u8; 16])>, OpsError> {
    let resp = match client.get(url).await {
        Ok(resp) => resp,
        Err(VolumeError::Status { status, .. }) if status.as_u16() == 404 => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let limit = copy_timeout(resp.content_length().unwrap_or(0));
    let work = async {
        let mut stream = resp.bytes_stream();
        let mut md5 = Md5::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| OpsError::Read {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
            size += chunk.len() as u64;
            md5.update(&chunk);
        }
        Ok(Some((size, md5.finalize().into())))
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| OpsError::Read {
            url: url.to_string(),
            reason: "timed out".into(),
        })?
}

/// Deletes every URL concurrently; the first failure, after all were tried.
pub async fn delete_all(client: &VolumeClient, urls: &[String]) -> Result<(), VolumeError> {
    let results = futures_util::future::join_all(urls.iter().map(|u| client.delete(u))).await;
    results.into_iter().collect()
}
