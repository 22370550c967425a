//! Reading a value's bytes through the index server ([`Store::open`]), for front-ends
//! whose clients do not follow redirects (S3, the binary protocol, the JSON API).
//!
//! A value stored in its record (`--inline-max`) is served from the record.
//!
//! The minikeyvalue API never uses this: its GET answers 302 to a replica. Here the
//! index server opens a replica itself and hands back a stream of its body, so memory
//! stays bounded by hyper's buffers whatever the value's size.
//!
//! Replicas are tried in random order among the holders whose volume is up (those in
//! the server's own `--zone` first); a replica
//! that fails *before* its first byte (refused, 404, 5xx) is skipped and the next one
//! tried. Once bytes flow, a failure ends the stream with an error (the caller aborts
//! its response: a client never sees a short body presented as complete).
//!
//! **Checksums** (issue 25). A whole-value read of a value whose md5 the record knows is
//! checked against it, the replica asked for its bytes unchecked (the native volume's
//! own check would only cut the transfer short, hiding *why*):
//!
//! * a value of at most [`CHECK_FIRST`] bytes is read in full from the replica and
//!   checked before its first byte is passed on: a corrupt replica (or one whose stream
//!   breaks) is skipped for the next, and the client gets the right bytes whenever any
//!   replica holds them;
//! * a larger value is checked as it streams ([`Verified`]): its last chunk is passed on
//!   only once the md5 of the whole matched, else the stream ends with an error, so
//!   the front-end cuts its response short — never a clean end with wrong bytes. The
//!   client's retry reads another replica (or the repaired one).
//!
//! A replica found corrupt is counted (`hoard_corrupt_replicas_total`), logged, and
//! queued for repair ([`Task::Corrupt`]). Range reads and values
//! without a known md5 are not checked (the native volume checks a whole-file GET
//! against the checksum stored with the file itself).

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use md5::{Digest as _, Md5};

use super::upkeep::{Queue, Task};
use super::{Store, StoreError};
use crate::hex::hex;
use crate::index::{Record, State};
use crate::placement::server_of;
use crate::replica::VolumeClient;
use crate::volume::verified::{OnMismatch, Verified};

/// Whole values of at most this many bytes (with a known md5) are read in full from a
/// replica and checked before their first byte is passed on; see the module docs. At
/// most this much is held per read.
pub const CHECK_FIRST: u64 = 256 << 10;

/// An opened value: its record and a stream of (a range of) its bytes.
pub struct Opened {
    /// The key's record: size, md5, replicas.
    pub record: Record,
    /// The byte range being streamed (`0..size` without a range).
    pub range: Range<u64>,
    /// The bytes of `range`, in order. Ends with an error if the replica fails midway.
    pub body: BoxStream<'static, Result<Bytes, StoreError>>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("record", &self.record)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens `key`'s value for reading, the whole of it or `range` (end exclusive,
    /// already clamped by the caller to `0..size`; an empty range yields no bytes
    /// without contacting a volume).
    ///
    /// [`StoreError::NotFound`] when the key is not live, [`StoreError::Invalid`] for a
    /// range outside the value, [`StoreError::Unavailable`] when no replica answers.
    /// Linearizable (see [`Store::read_barrier`]).
    pub async fn open(&self, key: &[u8], range: Option<Range<u64>>) -> Result<Opened, StoreError> {
        self.read_barrier().await?;
        self.open_local(key, range).await
    }

    /// [`Store::open`] on this node's copy of the index as it is (after a
    /// [`Store::read_barrier`] of the caller's).
    pub async fn open_local(
        &self,
        key: &[u8],
        range: Option<Range<u64>>,
    ) -> Result<Opened, StoreError> {
        let record = self.record(key)?.ok_or(StoreError::NotFound)?;
        self.open_record(key, record, range).await
    }

    /// [`Store::open`] of a live *or unlinked* value (replication to another site ships
    /// unlinked values too).
    pub async fn open_stored(&self, key: &[u8]) -> Result<Opened, StoreError> {
        let record = self
            .index
            .get(key)?
            .filter(|r| matches!(r.state, State::Live | State::Unlinked))
            .ok_or(StoreError::NotFound)?;
        self.open_record(key, record, None).await
    }

    async fn open_record(
        &self,
        key: &[u8],
        record: Record,
        range: Option<Range<u64>>,
    ) -> Result<Opened, StoreError> {
        let range = range.unwrap_or(0..record.size);
        if range.start > range.end || range.end > record.size {
            return Err(StoreError::Invalid(format!(
                "range {}..{} outside a value of {} bytes",
                range.start, range.end, record.size
            )));
        }
        // A value stored in the record (`--inline-max`) needs neither volume nor cache.
        if let Some(body) = super::inline::body(&record, &range) {
            return Ok(Opened {
                record,
                range,
                body,
            });
        }
        let whole = range.start == 0 && range.end == record.size;
        if whole {
            if let Some(value) = self.cache.get(key, &record) {
                let body = futures_util::stream::once(async { Ok(value) }).boxed();
                return Ok(Opened {
                    record,
                    range,
                    body,
                });
            }
        }
        if range.is_empty() {
            return Ok(Opened {
                record,
                range,
                body: futures_util::stream::empty().boxed(),
            });
        }
        let mut up: Vec<&str> = record
            .holders()
            .filter(|v| self.health.is_up(server_of(v)))
            .collect();
        fastrand::shuffle(&mut up);
        // Replicas in this server's zone (`--zone`) first.
        if let Some(zone) = self.cfg.zone.as_deref() {
            let placement = self.placement.current();
            up.sort_by_key(|v| placement.zone_of(server_of(v)) != Some(zone));
        }
        let mut last = format!(
            "no replica volume of this key is up ({})",
            record.volumes.join(",")
        );
        // The md5 whole reads are checked against.
        let want = record.md5.filter(|_| whole);
        for volume in up {
            let url = VolumeClient::url(volume, key, record.gen);
            let header = (!whole).then(|| format!("bytes={}-{}", range.start, range.end - 1));
            let resp = match self
                .client
                .get_range(&url, header.as_deref(), want.is_some())
                .await
            {
                Ok(resp) => resp,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let stream = resp.bytes_stream();
            let body = match want {
                Some(want) if record.size <= CHECK_FIRST => {
                    match read_whole(stream, record.size).await {
                        Ok((value, got)) if got == want => {
                            futures_util::stream::once(async { Ok(value.freeze()) }).boxed()
                        }
                        Ok((_, got)) => {
                            self.corrupt_reporter(key, &record, volume, want)(got);
                            last = format!("replica {url} is corrupt");
                            continue;
                        }
                        Err(e) => {
                            last = format!("reading replica {url}: {e}");
                            continue;
                        }
                    }
                }
                Some(want) => {
                    let report = self.corrupt_reporter(key, &record, volume, want);
                    Verified::new(stream, want, url, report)
                        .map_err(|e| StoreError::Volume(format!("reading replica: {e}")))
                        .boxed()
                }
                None => stream
                    .map_err(|e| StoreError::Volume(format!("reading replica: {e}")))
                    .boxed(),
            };
            let body = match whole {
                true => self.cache.fill(key, &record, body),
                false => body,
            };
            return Ok(Opened {
                record,
                range,
                body,
            });
        }
        Err(StoreError::Unavailable(last))
    }
}

/// Reads a whole value of `size` bytes (a longer one is read up to one byte more) and
/// its md5.
async fn read_whole<S>(mut stream: S, size: u64) -> Result<(BytesMut, [u8; 16]), reqwest::Error>
where
    S: futures_util::Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
{
    let cap = usize::try_from(size).unwrap_or(usize::MAX);
    let mut value = BytesMut::with_capacity(cap);
    let mut md5 = Md5::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        md5.update(&chunk);
        value.extend_from_slice(&chunk);
        if value.len() as u64 > size {
            break; // wrong anyway: the md5 of what was read differs
        }
    }
    Ok((value, md5.finalize().into()))
}

/// Checks of replicas a client reported (see [`Store::check_replicas`]) running at once;
/// more are skipped.
const MAX_CHECKS: usize = 2;

impl Store {
    /// Reads, in the background, the replicas of `key` on the volume servers `servers`
    /// (`host:port`) that a client found wrong (`hoard get`'s `Hoard-Avoid-Volumes`),
    /// and reports each whose bytes differ from the record's md5 like a proxied read
    /// would ([`report_corrupt`]: counted, logged, queued for repair). The client's
    /// word alone changes nothing: only the index's own read of the replica counts. At
    /// most [`MAX_CHECKS`] run at once (others are skipped), each a bounded read.
    pub fn check_replicas(self: &std::sync::Arc<Self>, key: &[u8], servers: &[&str]) {
        static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CHECKS);
        let Ok(Some(record)) = self.record(key) else {
            return;
        };
        let Some(want) = record.md5 else {
            return;
        };
        let volumes: Vec<String> = record
            .holders()
            .filter(|v| servers.contains(&server_of(v)))
            .map(str::to_string)
            .collect();
        if volumes.is_empty() {
            return;
        }
        let Ok(permit) = RUNNING.try_acquire() else {
            return;
        };
        let (store, key) = (std::sync::Arc::clone(self), key.to_vec());
        tokio::spawn(async move {
            let _permit = permit;
            for volume in volumes {
                let url = VolumeClient::url(&volume, &key, record.gen);
                match crate::replica::hash(&store.client, &url).await {
                    Ok(Some((_, got))) if got != want => {
                        store.corrupt_reporter(&key, &record, &volume, want)(got);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!("checking {url}: {e}"),
                }
            }
        });
    }

    /// What reports the replica of `record` on `volume` as corrupt, given the md5 its
    /// bytes had (see [`report_corrupt`]).
    fn corrupt_reporter(
        &self,
        key: &[u8],
        record: &Record,
        volume: &str,
        want: [u8; 16],
    ) -> OnMismatch {
        let (queue, key, gen, volume) = (
            self.upkeep.clone(),
            key.to_vec(),
            record.gen,
            volume.to_string(),
        );
        Box::new(move |got| report_corrupt(&queue, key, gen, volume, want, got))
    }
}

/// Counts (`hoard_corrupt_replicas_total`), logs and queues for repair a replica whose
/// bytes had md5 `got` where the record says `want`.
pub fn report_corrupt(
    queue: &Queue,
    key: Vec<u8>,
    gen: u64,
    volume: String,
    want: [u8; 16],
    got: [u8; 16],
) {
    metrics::counter!("hoard_corrupt_replicas_total").increment(1);
    tracing::error!(
        "corrupt replica: {} (generation {gen}) on {volume} has md5 {}, the record says {}; \
         queued for repair",
        crate::index::show(&key),
        hex(&got),
        hex(&want)
    );
    let task = Task::Corrupt {
        key,
        gen,
        volume,
        attempts: 0,
    };
    if queue.send(task).is_err() {
        tracing::warn!("the upkeep worker is not running: the corrupt replica is not repaired");
    }
}
