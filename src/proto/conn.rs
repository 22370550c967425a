//! One binary-protocol connection's socket ([`Conn`]), what every connection shares
//! ([`Ctx`]), and how a store error reads in an error answer ([`message`]): used by
//! the listener (`super::server`) and the value paths (`super::value`).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::frame::{self, Limits, STATUS_ERROR};
use super::ProtoError;
use crate::auth::Auth;
use crate::store::{Store, StoreError};

/// Bytes read from the socket at a time.
pub(super) const READ_CHUNK: usize = 64 * 1024;

/// What every connection shares.
pub(super) struct Ctx {
    pub(super) store: Arc<Store>,
    pub(super) auth: Auth,
    pub(super) limits: Limits,
    pub(super) idle: Duration,
    /// `--rate-limit`, shared with the other front-ends.
    pub(super) limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
}

/// One connection's socket: a read buffer and a buffered writer, every operation
/// bounded by the idle timeout.
pub(super) struct Conn {
    reader: OwnedReadHalf,
    writer: BufWriter<OwnedWriteHalf>,
    pub(super) buf: BytesMut,
    idle: Duration,
}

impl Conn {
    pub(super) fn new(stream: TcpStream, idle: Duration) -> Self {
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Conn {
            reader,
            writer: BufWriter::with_capacity(READ_CHUNK, writer),
            buf: BytesMut::with_capacity(READ_CHUNK),
            idle,
        }
    }

    /// Flushes pending answers, then reads more bytes into the buffer: how many
    /// (0 at end of stream).
    pub(super) async fn fill(&mut self) -> Result<usize, ProtoError> {
        self.flush().await?;
        self.buf.reserve(READ_CHUNK);
        let read = self.reader.read_buf(&mut self.buf);
        match tokio::time::timeout(self.idle, read).await {
            Ok(n) => Ok(n?),
            Err(_) => Err(ProtoError::Timeout(self.idle)),
        }
    }

    /// Up to `max` bytes of the stream: buffered ones first. End of stream is
    /// [`ProtoError::Truncated`] (the caller is inside a frame).
    pub(super) async fn take(&mut self, max: usize) -> Result<Bytes, ProtoError> {
        if self.buf.is_empty() && self.fill().await? == 0 {
            return Err(ProtoError::Truncated);
        }
        let n = max.min(self.buf.len());
        Ok(self.buf.split_to(n).freeze())
    }

    /// Consumes and discards `n` bytes of the stream.
    pub(super) async fn skip(&mut self, mut n: u64) -> Result<(), ProtoError> {
        while n > 0 {
            let chunk = self.take(usize::try_from(n).unwrap_or(usize::MAX)).await?;
            n -= chunk.len() as u64;
        }
        Ok(())
    }

    /// Queues `bytes` for the peer (written out when the buffer fills or on flush).
    pub(super) async fn write(&mut self, bytes: &[u8]) -> Result<(), ProtoError> {
        let write = self.writer.write_all(bytes);
        match tokio::time::timeout(self.idle, write).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ProtoError::Timeout(self.idle)),
        }
    }

    pub(super) async fn flush(&mut self) -> Result<(), ProtoError> {
        if self.writer.buffer().is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(self.idle, self.writer.flush()).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ProtoError::Timeout(self.idle)),
        }
    }

    /// Queues a whole answer.
    pub(super) async fn answer(&mut self, status: u8, data: &[u8]) -> Result<(), ProtoError> {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.write(&frame::response_header(status, len)).await?;
        self.write(&data[..len as usize]).await
    }

    /// Queues an error answer.
    pub(super) async fn error(&mut self, msg: &str) -> Result<(), ProtoError> {
        self.answer(STATUS_ERROR, msg.as_bytes()).await
    }

    /// Best effort: an error answer, flushed, before the connection closes.
    pub(super) async fn last_error(&mut self, msg: &str) {
        if self.error(msg).await.is_ok() {
            let _ = self.flush().await;
        }
    }
}

/// A store error as the one-line message of an error answer.
pub(super) fn message(e: &StoreError) -> String {
    match e {
        StoreError::Empty => "empty values cannot be stored".into(),
        other => other.to_string(),
    }
}
