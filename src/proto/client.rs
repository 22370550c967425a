//! A client of the binary protocol: one connection, requests answered in order.
//!
//! The simple calls ([`Client::get`], [`Client::set`], …) send one request and wait
//! for its answer. To pipeline, queue requests with [`Client::send`], then
//! [`Client::flush`] and read the answers in order with [`Client::recv`].
//!
//! An error answer is [`ProtoError::Server`] (the connection stays usable); any other
//! error means the connection is broken.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::frame::{self, Compression, Op, ValueHeader, RESPONSE_HEADER, STATUS_ERROR, STATUS_OK};
use super::ProtoError;

/// A value to SET: its bytes as sent, and whether they are zstd-compressed.
#[derive(Debug, Clone, Copy)]
pub struct Value<'a> {
    /// The bytes on the wire.
    pub bytes: &'a [u8],
    /// Their encoding.
    pub compression: Compression,
}

/// One connection to a binary-protocol server.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    timeout: Duration,
}

impl Client {
    /// Connects to `addr` (`host:port`); every later read and write must make progress
    /// within `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Client, ProtoError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ProtoError::Timeout(timeout))??;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(Client {
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: BufWriter::with_capacity(64 * 1024, w),
            timeout,
        })
    }

    /// Queues a request (sent on [`Client::flush`] or when the buffer fills).
    pub async fn send(
        &mut self,
        op: Op,
        key: &[u8],
        value: Option<Value<'_>>,
    ) -> Result<(), ProtoError> {
        if key.len() > usize::from(u16::MAX) {
            return Err(ProtoError::Fatal(format!(
                "key of {} bytes cannot be sent (at most 65535)",
                key.len()
            )));
        }
        let header = match value {
            Some(v) => Some(ValueHeader {
                len: u32::try_from(v.bytes.len()).map_err(|_| {
                    ProtoError::Fatal("values of 4 GiB or more cannot be sent".into())
                })?,
                compression: v.compression,
            }),
            None => None,
        };
        let head = frame::encode_request(op, key, header);
        self.io(|c| c.writer.write_all(&head)).await?;
        if let Some(v) = value {
            self.io(|c| c.writer.write_all(v.bytes)).await?;
        }
        Ok(())
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), ProtoError> {
        self.io(|c| c.writer.flush()).await
    }

    /// Reads the next answer: its data, or [`ProtoError::Server`] for an error answer.
    pub async fn recv(&mut self) -> Result<Bytes, ProtoError> {
        let mut head = [0u8; RESPONSE_HEADER];
        self.read_exact(&mut head).await?;
        let (status, len) = frame::parse_response_header(head);
        let mut data = vec![0u8; len as usize];
        self.read_exact(&mut data).await?;
        match status {
            STATUS_OK => Ok(Bytes::from(data)),
            STATUS_ERROR => Err(ProtoError::Server(
                String::from_utf8_lossy(&data).into_owned(),
            )),
            other => Err(ProtoError::BadResponse(format!("status 0x{other:02x}"))),
        }
    }

    /// One request, flushed, and its answer.
    async fn call(
        &mut self,
        op: Op,
        key: &[u8],
        value: Option<Value<'_>>,
    ) -> Result<Bytes, ProtoError> {
        self.send(op, key, value).await?;
        self.flush().await?;
        self.recv().await
    }

    /// Authenticates the connection.
    pub async fn auth(&mut self, token: &str) -> Result<(), ProtoError> {
        self.call(Op::Auth, token.as_bytes(), None).await.map(drop)
    }

    /// The value of `key` (`Server("not found")` when absent).
    pub async fn get(&mut self, key: &[u8]) -> Result<Bytes, ProtoError> {
        self.call(Op::Get, key, None).await
    }

    /// Stores (overwrites) `value` under `key`, sent as is.
    pub async fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), ProtoError> {
        let v = Value {
            bytes: value,
            compression: Compression::None,
        };
        self.call(Op::Set, key, Some(v)).await.map(drop)
    }

    /// Stores `value` under `key`, sent zstd-compressed at `level` (stored
    /// decompressed).
    pub async fn set_zstd(
        &mut self,
        key: &[u8],
        value: &[u8],
        level: i32,
    ) -> Result<(), ProtoError> {
        let packed = zstd::bulk::compress(value, level)?;
        let v = Value {
            bytes: &packed,
            compression: Compression::Zstd,
        };
        self.call(Op::Set, key, Some(v)).await.map(drop)
    }

    /// Deletes `key`.
    pub async fn delete(&mut self, key: &[u8]) -> Result<(), ProtoError> {
        self.call(Op::Delete, key, None).await.map(drop)
    }

    /// The server's health, as JSON.
    pub async fn health(&mut self) -> Result<serde_json::Value, ProtoError> {
        let body = self.call(Op::Health, b"", None).await?;
        serde_json::from_slice(&body).map_err(|e| ProtoError::BadResponse(e.to_string()))
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ProtoError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.reader.read_exact(buf)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(ProtoError::Truncated)
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ProtoError::Timeout(timeout)),
        }
    }

    async fn io<'a, F, Fut>(&'a mut self, f: F) -> Result<(), ProtoError>
    where
        F: FnOnce(&'a mut Self) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<()>> + 'a,
    {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, f(self)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ProtoError::Timeout(timeout)),
        }
    }
}
