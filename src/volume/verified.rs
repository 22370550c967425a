//! A value's bytes checked against an md5 while they stream, without ever passing on a
//! wrong value as complete: every chunk is passed on one step late, and the last one
//! only once the md5 of the whole matched. On a mismatch the last chunk is withheld and
//! the stream ends with an error instead, so an HTTP response carrying it is cut short
//! (short of its `Content-Length`, or without the chunked terminator) and the client
//! sees a broken transfer, never a clean end. Memory: one chunk held.
//!
//! Used by the native volume (whole-file GETs against the checksum stored with the file,
//! [`super::checksum`]) and by the index's proxied reads (`Store::open`, against the
//! record's md5).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use md5::{Digest, Md5};

/// Request header (value `1`) asking the native volume for a whole-file GET without its
/// own check against the checksum stored with the file: the reader checks the bytes
/// itself.
pub const UNVERIFIED: &str = "x-hoard-unverified";

/// Called with the md5 the bytes actually had, on a mismatch.
pub type OnMismatch = Box<dyn FnOnce([u8; 16]) + Send>;

/// `inner`, checked against `want`; see the module docs.
pub struct Verified<S> {
    inner: S,
    want: [u8; 16],
    md5: Md5,
    held: Option<Bytes>,
    what: String,
    on_mismatch: Option<OnMismatch>,
    done: bool,
}

impl<S> Verified<S> {
    /// Checks `inner` (the whole of `what`) against `want`; `on_mismatch` is called once
    /// if the bytes differ.
    pub fn new(inner: S, want: [u8; 16], what: String, on_mismatch: OnMismatch) -> Self {
        Verified {
            inner,
            want,
            md5: Md5::new(),
            held: None,
            what,
            on_mismatch: Some(on_mismatch),
            done: false,
        }
    }
}

impl<S, E> Stream for Verified<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    this.md5.update(&chunk);
                    if let Some(previous) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    this.held = None;
                    return Poll::Ready(Some(Err(io::Error::other(e))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let got: [u8; 16] = this.md5.clone().finalize().into();
                    if got == this.want {
                        return Poll::Ready(this.held.take().map(Ok));
                    }
                    this.held = None;
                    if let Some(report) = this.on_mismatch.take() {
                        report(got);
                    }
                    return Poll::Ready(Some(Err(io::Error::other(format!(
                        "{}: the bytes differ from their checksum",
                        this.what
                    )))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    async fn run(chunks: &[&'static [u8]], want: [u8; 16]) -> (Vec<u8>, bool, bool) {
        let source = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, io::Error>(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        );
        let reported = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&reported);
        let report = Box::new(move |_| flag.store(true, Ordering::SeqCst));
        let mut s = Verified::new(source, want, "test".into(), report);
        let mut out = Vec::new();
        let mut clean = true;
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => {
                    clean = false;
                    break;
                }
            }
        }
        (out, clean, reported.load(Ordering::SeqCst))
    }

    fn md5_of(b: &[u8]) -> [u8; 16] {
        Md5::digest(b).into()
    }

    #[tokio::test]
    async fn a_matching_value_passes_whole() {
        let (out, clean, reported) = run(&[b"ab", b"", b"cd", b"e"], md5_of(b"abcde")).await;
        assert!(clean && !reported);
        assert_eq!(out, b"abcde");
    }

    #[tokio::test]
    async fn a_mismatch_withholds_the_last_chunk_and_fails() {
        let (out, clean, reported) = run(&[b"ab", b"cd", b"e"], md5_of(b"abcdX")).await;
        assert!(!clean && reported);
        assert_eq!(out, b"abcd", "the last chunk must not be sent");
    }

    #[tokio::test]
    async fn an_empty_value_is_checked_too() {
        let (_, clean, _) = run(&[], md5_of(b"")).await;
        assert!(clean);
        let (_, clean, reported) = run(&[], md5_of(b"x")).await;
        assert!(!clean && reported);
    }
}
