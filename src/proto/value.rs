//! SET: a value streamed from the socket into the store core.
//!
//! The connection reads exactly the frame's value bytes (so the stream position stays
//! known whatever happens) and passes them — through a streaming zstd decoder when
//! compressed — over a small channel to [`Store::put_with`] (`replace: true`), which
//! runs concurrently. Memory per SET is bounded: a prefetch of at most [`PREFETCH`]
//! bytes, the channel's few chunks, and zstd's window (at most 2^[`WINDOW_LOG_MAX`]
//! bytes, and never more than the value).
//!
//! The first [`PREFETCH`] bytes of (decompressed) value are held back until either that
//! much has arrived or the value ended: a small value that turns out bad — a corrupt or
//! truncated zstd stream, a decompressed size over the limit, a connection closed
//! midway — is refused before the store sees any of it, so nothing is written and an
//! existing value stays. A larger value failing later fails the write like an HTTP
//! upload cut short: it is rolled back, and since SET replaces, the key is then absent
//! (never half-written).
//!
//! [`Store::put_with`]: crate::store::Store::put_with

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

use super::conn::{message, Conn, Ctx};
use super::frame::{Compression, ValueHeader};
use super::ProtoError;
use crate::store::{PutOptions, Store};

/// Decompressed bytes held back before the store sees the value.
pub const PREFETCH: usize = 256 * 1024;
/// Bytes of value read from the socket at a time.
const CHUNK: usize = 64 * 1024;
/// Bytes of decompressed output produced at a time.
const OUT_CHUNK: usize = 128 * 1024;
/// Largest zstd window accepted (8 MiB): bounds the decoder's memory per SET. zstd's
/// levels up to 19 never use more; `--long` or `--ultra` streams may be refused.
pub const WINDOW_LOG_MAX: u32 = 23;
/// Chunks in flight between the connection and the write.
const DEPTH: usize = 4;

type Chunk = Result<Bytes, String>;

/// Stores the value that follows on `conn` under `key`. `Ok(Err(msg))`: refused or
/// failed, the value's bytes consumed, the connection fine; `Err`: the connection must
/// close.
pub(super) async fn set(
    conn: &mut Conn,
    ctx: &Ctx,
    key: Vec<u8>,
    v: ValueHeader,
) -> Result<Result<(), String>, ProtoError> {
    let (tx, rx) = mpsc::channel::<Chunk>(DEPTH);
    let body = tokio_stream(rx);
    let len = match v.compression {
        Compression::None => Some(u64::from(v.len)),
        Compression::Zstd => None,
    };
    let store: &Arc<Store> = &ctx.store;
    let (stored, fed) = {
        let put = store.put_with(
            key,
            body,
            len,
            PutOptions {
                replace: true,
                ..Default::default()
            },
        );
        let feed = feed(conn, v, ctx.limits.max_value, tx);
        tokio::pin!(put, feed);
        tokio::select! {
            stored = &mut put => {
                // Drop any unread body now, so the feeder sees the write is gone and only
                // skips the rest of the value.
                let stored = stored.map(|_| ()).map_err(|e| message(&e.error));
                (stored, feed.await)
            }
            fed = &mut feed => (put.await.map(|_| ()).map_err(|e| message(&e.error)), fed),
        }
    };
    let fed = match fed {
        Ok(fed) => fed,
        Err(e) => {
            // The value did not arrive: say so if the peer still listens, then close.
            let why = match &e {
                ProtoError::Timeout(_) => "timed out in the middle of a frame",
                _ => "truncated frame",
            };
            conn.last_error(why).await;
            return Err(e);
        }
    };
    match fed {
        // The feeder's own reason (bad zstd, too large) says more than the store's
        // "reading body: …".
        Some(refused) => Ok(Err(refused)),
        None => Ok(stored),
    }
}

/// The receiving end of the channel as a stream of chunks.
fn tokio_stream(
    rx: mpsc::Receiver<Chunk>,
) -> impl futures_util::Stream<Item = Chunk> + Send + Unpin + 'static {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }))
}

/// Where decoded bytes go: held back up to [`PREFETCH`], then sent to the write. Once
/// the write is gone (refused, failed) or the value refused, bytes are only counted.
struct Sink {
    tx: Option<mpsc::Sender<Chunk>>,
    held: Vec<Bytes>,
    held_len: usize,
    started: bool,
    total: u64,
    max: u64,
    refused: Option<String>,
}

impl Sink {
    fn open(&self) -> bool {
        self.tx.is_some() && self.refused.is_none()
    }

    async fn push(&mut self, b: Bytes) {
        if !self.open() || b.is_empty() {
            return;
        }
        self.total += b.len() as u64;
        if self.total > self.max {
            self.refuse(format!(
                "value is too large once decompressed (at most {} bytes)",
                self.max
            ))
            .await;
            return;
        }
        self.held_len += b.len();
        self.held.push(b);
        if self.started || self.held_len >= PREFETCH {
            self.release().await;
        }
    }

    /// Sends what is held back.
    async fn release(&mut self) {
        self.started = true;
        self.held_len = 0;
        for b in std::mem::take(&mut self.held) {
            let Some(tx) = &self.tx else { return };
            if tx.send(Ok(b)).await.is_err() {
                // The write ended early (refused): only skip from now on.
                self.tx = None;
            }
        }
    }

    /// Fails the value: the write sees an error (before any byte, if still held back).
    async fn refuse(&mut self, why: String) {
        self.held.clear();
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(why.clone())).await;
        }
        self.refused = Some(why);
    }
}

/// Reads the value's `v.len` bytes off `conn` into the write; `Ok(Some(why))` when the
/// value itself was refused (the bytes were still consumed).
async fn feed(
    conn: &mut Conn,
    v: ValueHeader,
    max: u64,
    tx: mpsc::Sender<Chunk>,
) -> Result<Option<String>, ProtoError> {
    let mut sink = Sink {
        tx: Some(tx),
        held: Vec::new(),
        held_len: 0,
        started: false,
        total: 0,
        max,
        refused: None,
    };
    let mut decoder = match v.compression {
        Compression::None => None,
        Compression::Zstd => match new_decoder() {
            Ok(d) => Some(d),
            Err(e) => {
                sink.refuse(format!("zstd: {e}")).await;
                None
            }
        },
    };
    // zstd's hint: 0 once a frame is complete (and everything flushed).
    let mut hint = 1;
    let mut remaining = u64::from(v.len);
    while remaining > 0 {
        let chunk = match conn
            .take(usize::try_from(remaining.min(CHUNK as u64)).unwrap_or(CHUNK))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                sink.refuse(format!("value not received: {e}")).await;
                return Err(e);
            }
        };
        remaining -= chunk.len() as u64;
        if !sink.open() {
            continue;
        }
        match &mut decoder {
            None => sink.push(chunk).await,
            Some(d) => {
                if let Err(e) = decompress(d, &chunk, &mut hint, &mut sink).await {
                    sink.refuse(format!("bad zstd stream: {e}")).await;
                }
            }
        }
    }
    if sink.open() {
        if v.compression == Compression::Zstd && hint != 0 {
            sink.refuse("bad zstd stream: truncated (incomplete frame)".into())
                .await;
        } else {
            sink.release().await;
        }
    }
    Ok(sink.refused)
}

fn new_decoder() -> std::io::Result<Decoder<'static>> {
    let mut d = Decoder::new()?;
    d.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))?;
    Ok(d)
}

/// Feeds `input` to the decoder, pushing output as it comes (so a small input that
/// expands hugely never accumulates: the sink's limit stops it).
async fn decompress(
    d: &mut Decoder<'static>,
    input: &[u8],
    hint: &mut usize,
    sink: &mut Sink,
) -> std::io::Result<()> {
    let mut inb = InBuffer::around(input);
    loop {
        let mut out = vec![0u8; OUT_CHUNK];
        let mut outb = OutBuffer::around(&mut out[..]);
        *hint = d.run(&mut inb, &mut outb)?;
        let produced = outb.pos();
        out.truncate(produced);
        if produced > 0 {
            sink.push(Bytes::from(out)).await;
            if !sink.open() {
                return Ok(());
            }
        }
        if inb.pos() == input.len() && produced < OUT_CHUNK {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in `step`-byte pieces through a sink with no write behind
    /// it; the decoded bytes and the final hint.
    fn decode(input: &[u8], step: usize, max: u64) -> (Vec<u8>, usize, Option<String>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = mpsc::channel(1024);
            let mut sink = Sink {
                tx: Some(tx),
                held: Vec::new(),
                held_len: 0,
                started: true,
                total: 0,
                max,
                refused: None,
            };
            let mut d = new_decoder().unwrap();
            let mut hint = 1;
            for piece in input.chunks(step) {
                if let Err(e) = decompress(&mut d, piece, &mut hint, &mut sink).await {
                    sink.refuse(format!("bad zstd stream: {e}")).await;
                    break;
                }
            }
            let refused = sink.refused.clone();
            drop(sink);
            let mut out = Vec::new();
            while let Some(Ok(b)) = rx.recv().await {
                out.extend_from_slice(&b);
            }
            (out, hint, refused)
        })
    }

    #[test]
    fn streams_zstd_in_any_pieces() {
        let value: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let packed = zstd::bulk::compress(&value, 3).unwrap();
        for step in [1, 7, 4096, packed.len()] {
            let (out, hint, refused) = decode(&packed, step, u64::MAX);
            assert_eq!(refused, None);
            assert_eq!(hint, 0, "frame complete");
            assert!(out == value, "step {step}");
        }
        // Two concatenated frames decode to both values.
        let mut two = zstd::bulk::compress(b"hello ", 1).unwrap();
        two.extend(zstd::bulk::compress(b"world", 1).unwrap());
        let (out, hint, _) = decode(&two, 3, u64::MAX);
        assert_eq!((out.as_slice(), hint), (&b"hello world"[..], 0));
    }

    #[test]
    fn truncated_garbage_and_bombs_are_caught() {
        let value = vec![7u8; 100_000];
        let packed = zstd::bulk::compress(&value, 3).unwrap();
        let (_, hint, refused) = decode(&packed[..packed.len() - 3], 1000, u64::MAX);
        assert_eq!(refused, None);
        assert_ne!(hint, 0, "a truncated stream leaves the frame incomplete");
        let (_, _, refused) = decode(b"definitely not zstd", 5, u64::MAX);
        assert!(refused.unwrap().starts_with("bad zstd stream"));
        // 100 kB of zeros compress to a few bytes; the limit stops decoding early.
        let (out, _, refused) = decode(&packed, packed.len(), 50_000);
        assert!(refused.unwrap().contains("too large"));
        assert!(out.len() <= 50_000);
    }
}
