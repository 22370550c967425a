//! Small values stored in the index record itself (`--inline-max BYTES`).
//!
//! With `--inline-max` above 0, [`Store::put_with`] reads at most `inline_max + 1`
//! bytes of a body before deciding where the value goes (skipping the look when a
//! declared length is already larger):
//!
//! * the body ended within `inline_max` bytes: the value is stored in the key's record
//!   ([`Record::inline`]) by one atomic index command, `Command::PutInline` — no intent,
//!   no volume, nothing to roll back. It is replicated with the index (through Raft in
//!   an index cluster, shipped by the sites feed like any value) and read back from the
//!   record: the minikeyvalue GET answers 200 with the bytes instead of a 302, and
//!   [`Store::open`] streams them.
//! * it did not: the normal volume write goes on with the chunks already read sent
//!   first. So no value is ever held beyond `inline_max` bytes plus the chunk that
//!   crossed the limit (already in memory as the body's own buffer).
//!
//! An inline write has the same lock, ownership and replace semantics as a volume
//! write: a live key is refused unless `replace`, another node's fresh intent is
//! `Busy`, and every location the previous record named stays in the new record as
//! `stale` until its files are deleted — by the write itself, before it answers, or
//! (if a volume cannot be reached) by the upkeep worker. Turning the option off (0) only
//! stops new values from going inline: existing inline values are still served.
//!
//! The cap, [`MAX_INLINE`] (64 KiB), bounds a record's size: every index server holds
//! every inline value (an index cluster of three holds three copies), and rebuilding
//! the index from the volumes cannot recover them.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, Stream, StreamExt};
use md5::{Digest, Md5};

use super::detached;
use super::error::refusal;
use super::upkeep::release;
use super::{PutOptions, Store, StoreError, Written};
use crate::clock::now_ms;
use crate::index::{gen_key, Command, KeyGuard, Record, MAX_INLINE_LEN};

/// The largest `--inline-max`.
pub const MAX_INLINE: u64 = MAX_INLINE_LEN as u64;

/// `--inline-max` of `hoard server` and `hoard dev`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InlineArgs {
    /// Store values of at most this many bytes in the index itself (replicated with
    /// it; GET answers 200 with the value instead of a redirect); 0 = off, every value
    /// on the volumes. At most 65536.
    #[arg(long, env = "HOARD_INLINE_MAX", default_value_t = 0)]
    pub inline_max: u64,
}

impl InlineArgs {
    /// The limit, checked against [`MAX_INLINE`].
    pub fn limit(&self) -> anyhow::Result<u64> {
        if self.inline_max > MAX_INLINE {
            anyhow::bail!(
                "--inline-max {}: at most {MAX_INLINE} bytes (inline values live in index \
                 records, held by every index server)",
                self.inline_max
            );
        }
        Ok(self.inline_max)
    }
}

/// The start of a body, read to decide where its value goes.
pub(super) enum Head {
    /// The body ended within the limit: the whole value.
    Whole(Bytes),
    /// The body is longer: the chunks read so far, in order, to send before the rest.
    Longer(Vec<Bytes>),
}

/// Reads `body` after its `first` chunk (none: an empty body that ended) until it ends or more than `max` bytes were
/// read.
pub(super) async fn read_head<S, E>(
    first: Option<Bytes>,
    body: &mut S,
    max: u64,
) -> Result<Head, StoreError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    // No first chunk: an empty body (allowed by the caller) that has already ended.
    let Some(first) = first else {
        return Ok(Head::Whole(Bytes::new()));
    };
    let mut read = first.len() as u64;
    let mut chunks = vec![first];
    while read <= max {
        match body.next().await {
            None => return Ok(Head::Whole(concat(chunks))),
            Some(Err(e)) => return Err(StoreError::Invalid(format!("reading body: {e}"))),
            Some(Ok(chunk)) => {
                read += chunk.len() as u64;
                chunks.push(chunk);
            }
        }
    }
    Ok(Head::Longer(chunks))
}

fn concat(chunks: Vec<Bytes>) -> Bytes {
    match <[Bytes; 1]>::try_from(chunks) {
        Ok([one]) => one,
        Err(chunks) => {
            let mut all = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    }
}

impl Store {
    /// Stores `value` in `key`'s record (the caller holds the key's lock in `guard`,
    /// unless this is an overwrite).
    /// `len` is the length the caller declared, if any.
    pub(super) async fn put_inline(
        self: &Arc<Self>,
        key: Vec<u8>,
        value: Bytes,
        len: Option<u64>,
        guard: Option<KeyGuard>,
        opts: PutOptions,
    ) -> Result<Written, StoreError> {
        let size = value.len() as u64;
        if len.is_some_and(|l| l != size) {
            return Err(StoreError::Invalid(format!(
                "body of {size} bytes, {} declared",
                len.unwrap_or_default()
            )));
        }
        let md5: Option<[u8; 16]> =
            (self.cfg.md5sum || opts.md5).then(|| Md5::digest(&value).into());
        let store = Arc::clone(self);
        detached(async move {
            let _guard = guard;
            let cmd = Command::PutInline {
                key: key.clone(),
                value: value.to_vec(),
                md5,
                now_ms: now_ms(),
                owner: store.owner,
                replace: opts.replace,
                meta: opts.meta,
            };
            let cmd = super::put::as_remote(opts.origin.as_ref(), cmd);
            let prev = store.index.apply(cmd).await?.map_err(refusal)?;
            store.cache.invalidate(&key);
            // Files of the value this one replaced (retired by `PutInline`) are
            // deleted now, still under the key's lock (so a DELETE right after this PUT
            // does not meet the upkeep worker holding it); what cannot be deleted now
            // is the worker's.
            if let Some(p) = prev.filter(|p| !p.all_locations().is_empty()) {
                let at = gen_key(&key, p.gen);
                let released = match store.index.get(&at) {
                    Ok(Some(r)) => release(&store.ctx(), &at, &r, 0).await.unwrap_or(false),
                    _ => false,
                };
                if !released {
                    let _ = store.upkeep.send(super::upkeep::Task::Key(key));
                }
            }
            Ok(Written {
                size,
                md5,
                missing: Vec::new(),
            })
        })
        .await
    }
}

/// The bytes of `range` of an inline record's value, as a body stream; `None` for a
/// record whose value is on volumes. The range was checked against the record's size.
pub(super) fn body(
    record: &Record,
    range: &Range<u64>,
) -> Option<BoxStream<'static, Result<Bytes, StoreError>>> {
    let value = record.inline.as_deref()?;
    let bytes = usize::try_from(range.start)
        .ok()
        .zip(usize::try_from(range.end).ok())
        .and_then(|(start, end)| value.get(start..end))
        .map(Bytes::copy_from_slice);
    Some(match bytes {
        Some(b) if b.is_empty() => futures_util::stream::empty().boxed(),
        Some(b) => futures_util::stream::once(async { Ok(b) }).boxed(),
        None => {
            let e = StoreError::Invalid("inline value shorter than its record's size".into());
            futures_util::stream::once(async { Err(e) }).boxed()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn reads_at_most_one_chunk_past_the_limit() {
        // Ends within the limit: the whole value, in one piece.
        let mut rest = chunks(&[b"cd", b"ef"]);
        match read_head(Some(Bytes::from_static(b"ab")), &mut rest, 6).await {
            Ok(Head::Whole(v)) => assert_eq!(&v[..], b"abcdef"),
            _ => panic!("expected the whole value"),
        }
        // One byte over: the chunks read so far, and the rest left unread.
        let mut rest = chunks(&[b"cd", b"efg", b"h"]);
        match read_head(Some(Bytes::from_static(b"ab")), &mut rest, 6).await {
            Ok(Head::Longer(read)) => {
                assert_eq!(read.concat(), b"abcdefg");
                assert_eq!(rest.next().await.unwrap().unwrap(), &b"h"[..]);
            }
            _ => panic!("expected a longer body"),
        }
        // A first chunk already past the limit reads nothing more.
        let mut rest = chunks(&[b"x"]);
        match read_head(Some(Bytes::from_static(b"abcdefgh")), &mut rest, 6).await {
            Ok(Head::Longer(read)) => assert_eq!(read.len(), 1),
            _ => panic!("expected a longer body"),
        }
        assert!(rest.next().await.is_some());
        // A body error is the client's.
        let mut bad = futures_util::stream::iter([Err::<Bytes, _>("cut".to_string())]);
        assert!(matches!(
            read_head(Some(Bytes::from_static(b"a")), &mut bad, 6).await,
            Err(StoreError::Invalid(_))
        ));
    }

    async fn collect(record: &Record, range: Range<u64>) -> Option<Result<Vec<u8>, StoreError>> {
        let mut body = body(record, &range)?;
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => out.extend_from_slice(&c),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(out))
    }

    #[tokio::test]
    async fn serves_ranges_of_the_record() {
        let mut record = Record {
            state: crate::index::State::Live,
            volumes: Vec::new(),
            size: 5,
            md5: None,
            changed_ms: 1,
            missing: Vec::new(),
            stale: Vec::new(),
            owner: 0,
            meta: Vec::new(),
            inline: Some(b"hello".to_vec()),
            gen: 0,
        };
        assert_eq!(collect(&record, 0..5).await.unwrap().unwrap(), b"hello");
        assert_eq!(collect(&record, 1..3).await.unwrap().unwrap(), b"el");
        assert_eq!(collect(&record, 5..5).await.unwrap().unwrap(), b"");
        // A record whose bytes are shorter than its size ends the body with an error.
        assert!(collect(&record, 4..6).await.unwrap().is_err());
        // A record on volumes is not served from here.
        record.inline = None;
        assert!(collect(&record, 0..5).await.is_none());
    }

    #[test]
    fn limit_is_capped() {
        let args = |n| InlineArgs { inline_max: n };
        assert_eq!(args(0).limit().unwrap(), 0);
        assert_eq!(args(MAX_INLINE).limit().unwrap(), MAX_INLINE);
        assert!(args(MAX_INLINE + 1).limit().is_err());
    }
}
