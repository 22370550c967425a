//! A bounded cache of small values the index server serves itself (`--cache-size`).
//!
//! [`Store::open`](super::Store::open) — used by the front-ends that stream values
//! through the index server (the binary protocol, the JSON interface) — answers a
//! whole-value read of a cached value from memory, and fills the cache with values of
//! at most `--cache-max-value` bytes as they stream by. minikeyvalue's GET (a 302 to a
//! replica) never reads values, so it neither uses nor fills the cache.
//!
//! **What a hit guarantees.** An entry is tagged with the version of the record it
//! was read under (`changed_ms`, size, md5, generation), and a lookup first reads the key's record
//! from the index, as any read does, and only serves an entry whose tag matches it. So
//! the cache never serves anything the index does not say is the current value: a
//! write or delete through this node's store invalidates the entry at once (the store
//! core's write and delete paths call [`ValueCache::invalidate`]), and one made through
//! another member of an index cluster changes the record in this node's replicated
//! index, which makes the entry miss. A cached read is therefore exactly as fresh as an
//! uncached read through the same node (with the cluster's read barrier when the front
//! end takes it). A value is inserted only when every byte arrived and, when the md5 is
//! known, its md5 matches the record's.
//!
//! The cache is weighted by bytes (the value, its key and a fixed overhead per entry)
//! and evicts with quick_cache's CLOCK-Pro-like policy. Metrics:
//! `hoard_cache_requests_total{result="hit"|"miss"}`, `hoard_cache_bytes`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, Stream, StreamExt};
use md5::{Digest, Md5};

use super::StoreError;
use crate::index::Record;

/// Bytes counted for an entry besides its key and value.
const ENTRY_OVERHEAD: u64 = 64;

/// `--cache-*` flags of `hoard server` and `hoard dev`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CacheArgs {
    /// Memory for a cache of small values served through the index server (binary
    /// protocol and JSON GETs), in MiB; 0 = no cache.
    #[arg(long, env = "HOARD_CACHE_SIZE", default_value_t = 0)]
    pub cache_size: u64,
    /// Largest value the cache keeps, in bytes.
    #[arg(long, env = "HOARD_CACHE_MAX_VALUE", default_value_t = 64 * 1024)]
    pub cache_max_value: u64,
}

/// The version of a record an entry was read under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    changed_ms: u64,
    size: u64,
    md5: Option<[u8; 16]>,
    gen: u64,
}

impl Tag {
    fn of(r: &Record) -> Tag {
        Tag {
            changed_ms: r.changed_ms,
            size: r.size,
            md5: r.md5,
            gen: r.gen,
        }
    }
}

#[derive(Clone)]
struct Entry {
    tag: Tag,
    value: Bytes,
}

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<Vec<u8>, Entry> for Weight {
    fn weight(&self, key: &Vec<u8>, e: &Entry) -> u64 {
        key.len() as u64 + e.value.len() as u64 + ENTRY_OVERHEAD
    }
}

struct Inner {
    cache: quick_cache::sync::Cache<Vec<u8>, Entry, Weight>,
    max_value: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The value cache; disabled until [`ValueCache::enable`] is called.
#[derive(Default)]
pub struct ValueCache {
    inner: OnceLock<Arc<Inner>>,
}

/// Counters of the cache, for health reports.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads of cacheable values that were not in it.
    pub misses: u64,
    /// Entries held.
    pub entries: usize,
    /// Bytes held (values, keys and overhead).
    pub bytes: u64,
}

impl ValueCache {
    /// Turns the cache on with `args` (no-op for size 0, or when already on).
    pub fn enable(&self, args: &CacheArgs) {
        if args.cache_size == 0 {
            return;
        }
        let bytes = args.cache_size.saturating_mul(1 << 20);
        let max_value = args.cache_max_value.min(bytes);
        let items = usize::try_from(bytes / (max_value.max(1024) + ENTRY_OVERHEAD))
            .unwrap_or(usize::MAX)
            .max(16);
        let _ = self.inner.set(Arc::new(Inner {
            cache: quick_cache::sync::Cache::with_weighter(items, bytes, Weight),
            max_value,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }));
        self.observe();
    }

    /// The counters, or `None` when the cache is off.
    pub fn stats(&self) -> Option<CacheStats> {
        self.inner.get().map(|i| CacheStats {
            hits: i.hits.load(Ordering::Relaxed),
            misses: i.misses.load(Ordering::Relaxed),
            entries: i.cache.len(),
            bytes: i.cache.weight(),
        })
    }

    /// Forgets `key` (a write or delete of it began or ended).
    pub fn invalidate(&self, key: &[u8]) {
        if let Some(i) = self.inner.get() {
            if i.cache.remove(key).is_some() {
                i.observe();
            }
        }
    }

    /// Sets `hoard_cache_bytes` to the bytes held now (called before every scrape, so
    /// the gauge and the health reports' `cache.bytes` read the same figure).
    pub fn observe(&self) {
        if let Some(i) = self.inner.get() {
            i.observe();
        }
    }

    /// `key`'s value if it is cached under exactly `record`; counts a hit or, for a
    /// value small enough to be cached, a miss.
    pub fn get(&self, key: &[u8], record: &Record) -> Option<Bytes> {
        let i = self.inner.get()?;
        if record.size > i.max_value {
            return None;
        }
        let hit = i
            .cache
            .get(key)
            .filter(|e| e.tag == Tag::of(record))
            .map(|e| e.value);
        let (counter, result) = match hit {
            Some(_) => (&i.hits, "hit"),
            None => (&i.misses, "miss"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("hoard_cache_requests_total", "result" => result).increment(1);
        hit
    }

    /// Wraps the body of a whole-value read of `key` under `record` so that, if the
    /// value is small enough, it is kept once it has streamed by completely and
    /// correctly.
    pub fn fill(
        &self,
        key: &[u8],
        record: &Record,
        body: BoxStream<'static, Result<Bytes, StoreError>>,
    ) -> BoxStream<'static, Result<Bytes, StoreError>> {
        match self.inner.get() {
            Some(i) if record.size <= i.max_value && record.size > 0 => Filling {
                body,
                key: key.to_vec(),
                tag: Tag::of(record),
                buf: BytesMut::with_capacity(record.size as usize),
                cache: Arc::clone(i),
            }
            .boxed(),
            _ => body,
        }
    }
}

impl Inner {
    fn insert(&self, key: Vec<u8>, tag: Tag, value: Bytes) {
        if value.len() as u64 != tag.size {
            return;
        }
        if let Some(want) = tag.md5 {
            if <[u8; 16]>::from(Md5::digest(&value)) != want {
                return;
            }
        }
        self.cache.insert(key, Entry { tag, value });
        self.observe();
    }

    fn observe(&self) {
        metrics::gauge!("hoard_cache_bytes").set(self.cache.weight() as f64);
    }
}

/// A body being read through, collecting its bytes for the cache.
struct Filling {
    body: BoxStream<'static, Result<Bytes, StoreError>>,
    key: Vec<u8>,
    tag: Tag,
    buf: BytesMut,
    cache: Arc<Inner>,
}

impl Stream for Filling {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.body.poll_next_unpin(cx);
        match &item {
            // Past the recorded size, stop collecting: the length check refuses it.
            Poll::Ready(Some(Ok(chunk))) if self.buf.len() as u64 <= self.tag.size => {
                self.buf.extend_from_slice(chunk);
            }
            // A failed read is never cached, even if its consumer reads on to the end.
            Poll::Ready(Some(Err(_))) => self.tag.size = u64::MAX,
            Poll::Ready(None) => {
                let value = std::mem::take(&mut self.buf).freeze();
                let key = std::mem::take(&mut self.key);
                self.cache.insert(key, self.tag, value);
            }
            _ => {}
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::State;

    fn record(value: &[u8], changed_ms: u64, md5: bool) -> Record {
        Record {
            state: State::Live,
            volumes: vec!["a:1".into()],
            size: value.len() as u64,
            md5: md5.then(|| Md5::digest(value).into()),
            changed_ms,
            missing: Vec::new(),
            stale: Vec::new(),
            owner: 0,
            meta: Vec::new(),
            inline: None,
            gen: 0,
        }
    }

    fn enabled(mb: u64, max_value: u64) -> ValueCache {
        let c = ValueCache::default();
        c.enable(&CacheArgs {
            cache_size: mb,
            cache_max_value: max_value,
        });
        c
    }

    /// Streams `chunks` through [`ValueCache::fill`] to the end; what came out.
    fn read_through(c: &ValueCache, key: &[u8], r: &Record, chunks: &[&[u8]]) -> Vec<u8> {
        let items: Vec<Result<Bytes, StoreError>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = c.fill(key, r, futures_util::stream::iter(items).boxed());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let out: Vec<_> = rt.block_on(body.collect::<Vec<_>>());
        out.into_iter().flat_map(|b| b.unwrap().to_vec()).collect()
    }

    #[test]
    fn off_by_default() {
        let c = ValueCache::default();
        let r = record(b"v", 1, true);
        assert_eq!(read_through(&c, b"/k", &r, &[b"v"]), b"v");
        assert_eq!(c.get(b"/k", &r), None);
        assert!(c.stats().is_none());
        let c = enabled(0, 100);
        assert!(c.stats().is_none(), "size 0 = off");
    }

    #[test]
    fn filled_by_a_complete_read_served_under_the_same_record_only() {
        let c = enabled(1, 1000);
        let r = record(b"hello world", 5, true);
        assert_eq!(c.get(b"/k", &r), None);
        assert_eq!(
            read_through(&c, b"/k", &r, &[b"hello ", b"world"]),
            b"hello world"
        );
        assert_eq!(c.get(b"/k", &r).as_deref(), Some(&b"hello world"[..]));
        // Another version of the record (a write through another index member): miss.
        assert_eq!(c.get(b"/k", &record(b"hello world", 6, true)), None);
        assert_eq!(c.get(b"/k", &record(b"hello there", 5, true)), None);
        let s = c.stats().unwrap();
        assert_eq!((s.hits, s.misses, s.entries), (1, 3, 1));
        // Invalidation (a write or delete through this store).
        c.invalidate(b"/k");
        assert_eq!(c.get(b"/k", &r), None);
        assert_eq!(c.stats().unwrap().entries, 0);
    }

    #[test]
    fn keeps_only_whole_correct_small_values() {
        let c = enabled(1, 8);
        // Over the size cap: streamed, not kept, not counted.
        let big = record(b"0123456789", 1, true);
        read_through(&c, b"/big", &big, &[b"0123456789"]);
        assert_eq!(c.get(b"/big", &big), None);
        assert_eq!(c.stats().unwrap().misses, 0);
        // Short body (a replica failing midway ends the stream early): not kept.
        let r = record(b"abcdef", 1, true);
        read_through(&c, b"/short", &r, &[b"abc"]);
        assert_eq!(c.get(b"/short", &r), None);
        // Bytes that do not match the recorded md5: not kept.
        read_through(&c, b"/bad", &r, &[b"abcxyz"]);
        assert_eq!(c.get(b"/bad", &r), None);
        // Unknown md5: kept on length alone.
        let r = record(b"abcdef", 1, false);
        read_through(&c, b"/nomd5", &r, &[b"abcdef"]);
        assert_eq!(c.get(b"/nomd5", &r).as_deref(), Some(&b"abcdef"[..]));
    }

    #[test]
    fn bounded_by_bytes() {
        let c = enabled(1, 64 * 1024);
        let value = vec![7u8; 32 * 1024];
        for i in 0..200 {
            let key = format!("/k{i}");
            let r = record(&value, 1, false);
            read_through(&c, key.as_bytes(), &r, &[&value]);
        }
        let s = c.stats().unwrap();
        assert!(s.bytes <= 1 << 20, "{s:?}");
        assert!(s.entries > 0 && s.entries < 200, "{s:?}");
    }
}
