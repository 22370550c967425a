//! The body of an outgoing volume request: a stream of chunks, sent with an exact
//! Content-Length when the size is known (so volumes see a fixed-length upload).
//!
//! The one body type every upload to a volume uses — the write fan-out feeds it from a
//! channel, a volume-to-volume copy from a checked source stream. An error from the
//! stream ends the body in an error: the client aborts the connection and the volume
//! discards its temp file, so a broken stream never becomes a shorter "complete" file.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body::{Body, Frame, SizeHint};

/// An upload body over `S`.
pub struct StreamBody<S> {
    stream: S,
    len: Option<u64>,
    done: bool,
}

impl<S> StreamBody<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send + Sync + 'static,
{
    /// A request body streaming `stream`, announced as `len` bytes when given.
    pub fn request_body(stream: S, len: Option<u64>) -> reqwest::Body {
        reqwest::Body::wrap(StreamBody {
            stream,
            len,
            done: false,
        })
    }
}

impl<S> Body for StreamBody<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
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
        match self.stream.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn ends_on_the_first_error_and_reports_its_length() {
        let chunks = vec![
            Ok(Bytes::from_static(b"ab")),
            Err(std::io::Error::other("cut")),
            Ok(Bytes::from_static(b"never")),
        ];
        let mut body = StreamBody {
            stream: futures_util::stream::iter(chunks),
            len: Some(7),
            done: false,
        };
        assert_eq!(body.size_hint().exact(), Some(7));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        assert!(body.frame().await.unwrap().is_err());
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }
}
