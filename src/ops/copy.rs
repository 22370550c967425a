//! Moving bytes between volumes without holding a value in memory: a GET response's
//! byte stream is piped into a PUT, hashed on the way. The checksum is checked before
//! the upload is allowed to complete: when the last chunk does not make the expected
//! md5 (or size), the upload body ends in an error instead, the connection is aborted
//! and the volume discards the partial file. A bad copy is therefore never stored.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};

use super::OpsError;
use crate::replica::body::StreamBody;
use crate::replica::hash::copy_timeout;
use crate::replica::{HashError, VolumeClient, VolumeError};

/// What a copy (or a stored replica) must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// Size in bytes.
    pub size: u64,
    /// md5 of the value, when known.
    pub md5: Option<[u8; 16]>,
}

/// The source stream, checked against [`Expect`]: a chunk past the size, a short
/// source or a wrong md5 at the end becomes an error, which fails the upload.
struct Checked<S> {
    source: S,
    expect: Expect,
    seen: u64,
    md5: Md5,
    done: bool,
}

impl<S> Stream for Checked<S>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let fail = |msg: String| Poll::Ready(Some(Err(std::io::Error::other(msg))));
        let chunk = match self.source.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => chunk,
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                return fail(format!("reading source: {e}"));
            }
            Poll::Ready(None) => {
                self.done = true;
                let (seen, size) = (self.seen, self.expect.size);
                if seen == size {
                    // Only a zero-byte value gets here: check it like any other.
                    return match self.expect.md5 {
                        Some(want) if want != <[u8; 16]>::from(self.md5.clone().finalize()) => {
                            fail("source md5 differs from the record".into())
                        }
                        _ => Poll::Ready(None),
                    };
                }
                return fail(format!("source ended after {seen} of {size} bytes"));
            }
        };
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
        Poll::Ready(Some(Ok(chunk)))
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
    let work = async {
        let resp = client.get(src_url).await?;
        if let Some(len) = resp.content_length().filter(|&l| l != expect.size) {
            return Err(err(format!(
                "source has {len} bytes, the record says {}",
                expect.size
            )));
        }
        let checked = Checked {
            source: resp.bytes_stream(),
            expect,
            seen: 0,
            md5: Md5::new(),
            done: false,
        };
        client
            .put(
                dst_url,
                StreamBody::request_body(checked, Some(expect.size)),
            )
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

/// [`crate::replica::hash`], for operations.
pub async fn hash(client: &VolumeClient, url: &str) -> Result<Option<(u64, [u8; 16])>, OpsError> {
    crate::replica::hash(client, url)
        .await
        .map_err(|e| match e {
            HashError::Volume(e) => OpsError::Volume(e),
            HashError::Read { url, reason } => OpsError::Read { url, reason },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(
        chunks: Vec<&'static [u8]>,
        size: u64,
        md5: Option<[u8; 16]>,
    ) -> Checked<impl Stream<Item = Result<Bytes, reqwest::Error>> + Unpin> {
        Checked {
            source: futures_util::stream::iter(
                chunks.into_iter().map(|c| Ok(Bytes::from_static(c))),
            ),
            expect: Expect { size, md5 },
            seen: 0,
            md5: Md5::new(),
            done: false,
        }
    }

    async fn outcome(
        mut s: impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    ) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn zero_byte_values_copy_and_are_checked() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e.
        let empty: [u8; 16] = Md5::digest(b"").into();
        assert_eq!(empty[..4], [0xd4, 0x1d, 0x8c, 0xd9]);
        assert_eq!(outcome(checked(vec![], 0, Some(empty))).await, Ok(vec![]));
        assert_eq!(outcome(checked(vec![], 0, None)).await, Ok(vec![]));
        assert!(outcome(checked(vec![], 0, Some([0; 16]))).await.is_err());
        assert!(outcome(checked(vec![b"x"], 0, None)).await.is_err());
        assert!(outcome(checked(vec![], 3, None)).await.is_err());
        let abc: [u8; 16] = Md5::digest(b"abc").into();
        assert_eq!(
            outcome(checked(vec![b"ab", b"c"], 3, Some(abc))).await,
            Ok(b"abc".to_vec())
        );
    }
}
