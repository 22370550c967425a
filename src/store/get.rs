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

use std::ops::Range;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};

use super::{Store, StoreError};
use crate::index::{Record, State};
use crate::placement::server_of;
use crate::replica::VolumeClient;

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
    pub async fn open(&self, key: &[u8], range: Option<Range<u64>>) -> Result<Opened, StoreError> {
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
        for volume in up {
            let url = VolumeClient::url(volume, key, record.gen);
            let header = (!whole).then(|| format!("bytes={}-{}", range.start, range.end - 1));
            match self.client.get_range(&url, header.as_deref()).await {
                Ok(resp) => {
                    let body = resp
                        .bytes_stream()
                        .map_err(|e| StoreError::Volume(format!("reading replica: {e}")))
                        .boxed();
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
                Err(e) => last = e.to_string(),
            }
        }
        Err(StoreError::Unavailable(last))
    }
}
