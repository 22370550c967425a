//! An unlimited listing (`?list` / `?unlinked` without `limit`) as a streamed body.
//!
//! The body is produced chunk by chunk: each chunk is one [`Index::scan`] of at most
//! [`CHUNK_BUDGET`] records on the blocking pool, in its own short read transaction,
//! resuming at the previous chunk's `next`. Only one chunk is held in memory, and a
//! chunk is read only when hyper asks for more body, so:
//!
//! * when the client disconnects, hyper drops the body and no further chunk is read
//!   (one already running finishes: at most [`CHUNK_BUDGET`] records);
//! * when `--request-timeout` has passed since the listing started, the next chunk is
//!   not read: the body ends with an error, which aborts the response (the client sees
//!   a truncated body, never a short but well-formed listing);
//! * the stream holds no strong reference to the server state between chunks, so a
//!   shutdown is not held up by a slow reader.
//!
//! The bytes are those of the buffered listing: `{"next":"","keys":[…]}`, each key
//! serialised by serde_json as before. A descending listing (`reverse`) is streamed the
//! same way, each chunk moving the range's `end` down instead of its `start` up.

use crate::store::tenancy::is_internal;
use std::io;
use std::sync::{Arc, Weak};
use std::time::Instant;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::aborted;
use crate::index::{Index, Page, State, CHUNK_BUDGET};
use crate::server::{ApiError, App};
use crate::store::{list as scan, ListRange, Store};

/// Start of the body: an unlimited listing is never cut, so `next` is empty.
const HEAD: &[u8] = br#"{"next":"","keys":["#;
/// End of the body.
const TAIL: &[u8] = b"]}";

/// Gives the index for one chunk, or `None` when the server is shutting down.
type IndexOf = Box<dyn Fn() -> Option<Index> + Send + Sync>;

/// Answers an unlimited listing: reads the first chunk (so an index error is still a
/// proper status), then streams the rest.
pub async fn list_all(app: &Arc<App>, range: ListRange, want: State) -> Result<Response, ApiError> {
    let timeout = app.cfg.safety.request_timeout;
    let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
    let first = app
        .store
        .list(range.clone(), want, CHUNK_BUDGET, CHUNK_BUDGET)
        .await?;
    let weak: Weak<Store> = Arc::downgrade(&app.store);
    let index_of: IndexOf = Box::new(move || weak.upgrade().map(|store| store.index.clone()));
    let listing = Listing::new(index_of, range, want, CHUNK_BUDGET, deadline, first);
    let body = Body::from_stream(futures_util::stream::try_unfold(listing, Listing::step));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The state of a streamed listing between two pieces of body.
struct Listing {
    index_of: IndexOf,
    /// The range still to list (its `start`, or `end` if descending, moves on).
    range: ListRange,
    want: State,
    /// Records per chunk.
    chunk: usize,
    /// No chunk is read after this instant.
    deadline: Option<Instant>,
    /// The first chunk, read before the response head was sent.
    first: Option<Page>,
    /// Where the next chunk resumes ([`ListRange::resume`]); `None` once the range is
    /// exhausted.
    resume: Option<Vec<u8>>,
    /// A key was written (the next one needs a comma).
    any: bool,
    /// The tail was written.
    done: bool,
    _gauge: crate::telemetry::ListStream,
}

impl Listing {
    fn new(
        index_of: IndexOf,
        range: ListRange,
        want: State,
        chunk: usize,
        deadline: Option<Instant>,
        first: Page,
    ) -> Self {
        Listing {
            index_of,
            range,
            want,
            chunk,
            deadline,
            first: Some(first),
            resume: None,
            any: false,
            done: false,
            _gauge: crate::telemetry::ListStream::start(),
        }
    }

    /// The next piece of body: the head and first chunk, then one piece per chunk that
    /// found keys (chunks that found none are skipped over), the tail with the last.
    async fn step(mut self) -> io::Result<Option<(Bytes, Self)>> {
        if self.done {
            return Ok(None);
        }
        let mut buf = Vec::new();
        if let Some(first) = self.first.take() {
            buf.extend_from_slice(HEAD);
            self.take(&mut buf, first)?;
        } else {
            while let Some(next) = self.resume.take() {
                if self.deadline.is_some_and(|d| Instant::now() >= d) {
                    tracing::warn!("listing cut off by --request-timeout");
                    return Err(io::Error::other("listing exceeded the request timeout"));
                }
                let index =
                    (self.index_of)().ok_or_else(|| io::Error::other("server shutting down"))?;
                self.range.resume(next);
                let page = scan(index, self.range.clone(), self.want, self.chunk, self.chunk)
                    .await
                    .map_err(aborted)?;
                self.take(&mut buf, page)?;
                if !buf.is_empty() {
                    break;
                }
            }
        }
        if self.resume.is_none() {
            buf.extend_from_slice(TAIL);
            self.done = true;
        }
        Ok(Some((Bytes::from(buf), self)))
    }

    /// Appends the keys of `page` to `buf` (never the S3 API's own) and remembers
    /// where to resume.
    fn take(&mut self, buf: &mut Vec<u8>, page: Page) -> io::Result<()> {
        for key in page.keys.iter().filter(|k| !is_internal(k)) {
            if self.any {
                buf.push(b',');
            }
            self.any = true;
            serde_json::to_writer(&mut *buf, &String::from_utf8_lossy(key))
                .map_err(io::Error::other)?;
        }
        self.resume = page.next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    /// Keys of odd bytes (quote, backslash, control, non-UTF-8), some unlinked.
    async fn index() -> (tempfile::TempDir, Index, Vec<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let mut live = Vec::new();
        for i in 0..23u8 {
            let mut key = format!("/p/{i:02}\"\\\u{1}é").into_bytes();
            if i == 7 {
                key.push(0xff);
            }
            crate::index::testing::put_live(&index, &key, i % 4 == 1).await;
            if i % 4 != 1 {
                live.push(key);
            }
        }
        (dir, index, live)
    }

    /// Streams the live keys of `/p/` in chunks of `chunk` records; returns the body
    /// and the number of pieces it came in.
    async fn stream(
        index: &Index,
        chunk: usize,
        deadline: Option<Instant>,
    ) -> io::Result<(Vec<u8>, usize)> {
        stream_range(index, ListRange::prefix(b"/p/", None), chunk, deadline).await
    }

    /// Streams the live keys of `range` in chunks of `chunk` records.
    async fn stream_range(
        index: &Index,
        range: ListRange,
        chunk: usize,
        deadline: Option<Instant>,
    ) -> io::Result<(Vec<u8>, usize)> {
        let first = scan(index.clone(), range.clone(), State::Live, chunk, chunk)
            .await
            .unwrap();
        let idx = index.clone();
        let index_of: IndexOf = Box::new(move || Some(idx.clone()));
        let listing = Listing::new(index_of, range, State::Live, chunk, deadline, first);
        let pieces: Vec<Bytes> = futures_util::stream::try_unfold(listing, Listing::step)
            .try_collect()
            .await?;
        Ok((pieces.concat(), pieces.len()))
    }

    #[tokio::test]
    async fn same_bytes_as_a_buffered_listing() {
        let (_dir, index, live) = index().await;
        let expect = serde_json::to_vec(&super::super::ListResponse {
            next: String::new(),
            keys: live
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect(),
        })
        .unwrap();
        for chunk in [1, 2, 3, 5, 22, 23, 24, 1000] {
            let (body, pieces) = stream(&index, chunk, None).await.unwrap();
            assert_eq!(
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&expect),
                "chunk {chunk}"
            );
            // One piece per chunk that found keys (a chunk examines `chunk` records).
            assert!(pieces <= 23usize.div_ceil(chunk), "chunk {chunk}: {pieces}");
        }
        // Nothing matched: still a well-formed empty listing.
        let listing = Listing::new(
            Box::new(|| None),
            ListRange::prefix(b"/none/", None),
            State::Live,
            3,
            None,
            Page::default(),
        );
        let pieces: Vec<Bytes> = futures_util::stream::try_unfold(listing, Listing::step)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(pieces.concat(), br#"{"next":"","keys":[]}"#);
    }

    #[tokio::test]
    async fn descending_ranges_stream_in_chunks() {
        let (_dir, index, live) = index().await;
        // Keys from the 3rd live one up to (not including) the 3rd from the end.
        let (from, to) = (live[2].clone(), live[live.len() - 3].clone());
        let mut expect: Vec<String> = live[2..live.len() - 3]
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        expect.reverse();
        let expect = serde_json::to_vec(&super::super::ListResponse {
            next: String::new(),
            keys: expect,
        })
        .unwrap();
        for chunk in [1, 2, 3, 7, 1000] {
            let range = ListRange {
                prefix: b"/p/".to_vec(),
                start: Some(from.clone()),
                end: Some(to.clone()),
                reverse: true,
            };
            let (body, _) = stream_range(&index, range, chunk, None).await.unwrap();
            assert_eq!(
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&expect),
                "chunk {chunk}"
            );
        }
    }

    #[tokio::test]
    async fn no_chunk_after_the_deadline_or_shutdown() {
        let (_dir, index, _) = index().await;
        // The first chunk was read before the deadline; the second is refused.
        let past = Some(Instant::now());
        let err = stream(&index, 3, past).await.unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");
        // A deadline that has not passed changes nothing.
        let later = Some(Instant::now() + std::time::Duration::from_secs(3600));
        assert!(stream(&index, 3, later).await.is_ok());
        // The server state is gone (shutdown): the stream ends with an error.
        let range = ListRange::prefix(b"/p/", None);
        let first = scan(index.clone(), range.clone(), State::Live, 3, 3)
            .await
            .unwrap();
        let listing = Listing::new(Box::new(|| None), range, State::Live, 3, None, first);
        let result: io::Result<Vec<Bytes>> =
            futures_util::stream::try_unfold(listing, Listing::step)
                .try_collect()
                .await;
        assert!(result.unwrap_err().to_string().contains("shutting down"));
    }
}
