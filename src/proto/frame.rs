//! minivault's frames: parsing request headers out of a buffer and encoding responses.
//!
//! Integers are little-endian. A request is `[op u8][keylen u16][key]`; SET adds
//! `[vallen u32][compressed u8][value]` (0 = raw, 1 = zstd). A response is
//! `[status u8][len u32][data]`, status [`STATUS_OK`] or [`STATUS_ERROR`] (then `data`
//! is a UTF-8 message). AUTH carries its token in the key slot, HEALTH an empty key.
//!
//! [`parse`] is pure: it looks at the bytes buffered so far and either needs more
//! ([`FrameError::Incomplete`]), returns the request header and how many bytes it took
//! (a SET's value follows: it is streamed by the caller, never buffered here), or says
//! why the frame is refused. A refusal says whether the frame's extent is known
//! ([`FrameError::Refused`]: the caller skips `frame_len` bytes and keeps serving the
//! connection) or not ([`FrameError::Fatal`]: an unknown op, whose length cannot be
//! known; the connection must close).

use bytes::Bytes;

/// Response status: success.
pub const STATUS_OK: u8 = 0x00;
/// Response status: error; the data is a UTF-8 message.
pub const STATUS_ERROR: u8 = 0xFF;
/// Bytes of a response header.
pub const RESPONSE_HEADER: usize = 5;
/// Bytes of `[op][keylen]`.
const PREFIX: usize = 3;
/// Bytes of a SET's `[vallen][compressed]`.
const VALUE_HEADER: usize = 5;

/// The operations of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// 0x01: read a value.
    Get,
    /// 0x02: store (overwrite) a value.
    Set,
    /// 0x03: delete a key.
    Delete,
    /// 0x05: server health as JSON.
    Health,
    /// 0x06: authenticate the connection with the shared token.
    Auth,
}

impl Op {
    /// The op for a wire byte, `None` if unknown.
    pub fn from_byte(b: u8) -> Option<Op> {
        Some(match b {
            0x01 => Op::Get,
            0x02 => Op::Set,
            0x03 => Op::Delete,
            0x05 => Op::Health,
            0x06 => Op::Auth,
            _ => return None,
        })
    }

    /// The wire byte.
    pub fn byte(self) -> u8 {
        match self {
            Op::Get => 0x01,
            Op::Set => 0x02,
            Op::Delete => 0x03,
            Op::Health => 0x05,
            Op::Auth => 0x06,
        }
    }

    /// A name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Health => "health",
            Op::Auth => "auth",
        }
    }

    /// True for ops that name a key (which must then be non-empty).
    fn needs_key(self) -> bool {
        matches!(self, Op::Get | Op::Set | Op::Delete)
    }
}

/// How a SET's value is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// The value as is.
    None,
    /// One or more zstd frames; stored decompressed.
    Zstd,
}

impl Compression {
    /// The wire byte.
    pub fn byte(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }
}

/// A SET's value header: the value's length on the wire and its encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueHeader {
    /// Bytes of value following the header (compressed, if it is).
    pub len: u32,
    /// Encoding of those bytes.
    pub compression: Compression,
}

/// A parsed request header. For a SET, `value.len` bytes of value follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The operation.
    pub op: Op,
    /// The key (AUTH: the token; HEALTH: usually empty), as sent.
    pub key: Bytes,
    /// SET only.
    pub value: Option<ValueHeader>,
}

/// Limits a request must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key (and AUTH token), in bytes.
    pub max_key: usize,
    /// Largest value, in bytes on the wire and after decompression.
    pub max_value: u64,
}

/// Why a well-delimited frame is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The key is longer than [`Limits::max_key`].
    #[error("key of {len} bytes is too long (at most {max})")]
    KeyTooLong {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// GET, SET and DELETE need a key.
    #[error("empty key")]
    EmptyKey,
    /// The value is larger than [`Limits::max_value`].
    #[error("value of {len} bytes is too large (at most {max})")]
    ValueTooLarge {
        /// Declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A compression byte other than 0 or 1.
    #[error("unknown compression {0} (0 = none, 1 = zstd)")]
    UnknownCompression(u8),
}

/// Why [`parse`] returned no request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// More bytes are needed to parse the header.
    #[error("incomplete frame")]
    Incomplete,
    /// The frame is refused; it is `frame_len` bytes long (header and value) from the
    /// start of the buffer, so the caller can skip it and go on.
    #[error("{why}")]
    Refused {
        /// Why.
        why: Refusal,
        /// The whole frame's length, value included.
        frame_len: u64,
    },
    /// An unknown op: the frame's length cannot be known, the connection must close.
    #[error("unknown op 0x{0:02x}")]
    UnknownOp(u8),
}

/// Parses the request header at the start of `buf`: the header and the bytes it took,
/// or why not. Never reads a SET's value, which may or may not be in `buf` yet.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<(Request, usize), FrameError> {
    let Some(&op_byte) = buf.first() else {
        return Err(FrameError::Incomplete);
    };
    let op = Op::from_byte(op_byte).ok_or(FrameError::UnknownOp(op_byte))?;
    if buf.len() < PREFIX {
        return Err(FrameError::Incomplete);
    }
    let keylen = usize::from(u16::from_le_bytes([buf[1], buf[2]]));
    let key_end = PREFIX + keylen;
    let header_len = key_end + if op == Op::Set { VALUE_HEADER } else { 0 };
    // The whole header is needed even to refuse it: a SET's value length comes after
    // the key, and skipping the frame needs it. A header is at most 64 KiB + 8.
    if buf.len() < header_len {
        return Err(FrameError::Incomplete);
    }
    let value = (op == Op::Set).then(|| {
        let h = &buf[key_end..header_len];
        (u32::from_le_bytes([h[0], h[1], h[2], h[3]]), h[4])
    });
    let frame_len = header_len as u64 + value.map_or(0, |(len, _)| u64::from(len));
    let refuse = |why| Err(FrameError::Refused { why, frame_len });
    if keylen > limits.max_key {
        return refuse(Refusal::KeyTooLong {
            len: keylen,
            max: limits.max_key,
        });
    }
    if keylen == 0 && op.needs_key() {
        return refuse(Refusal::EmptyKey);
    }
    let value = match value {
        None => None,
        Some((len, flag)) => {
            let compression = match flag {
                0 => Compression::None,
                1 => Compression::Zstd,
                other => return refuse(Refusal::UnknownCompression(other)),
            };
            if u64::from(len) > limits.max_value {
                return refuse(Refusal::ValueTooLarge {
                    len: u64::from(len),
                    max: limits.max_value,
                });
            }
            Some(ValueHeader { len, compression })
        }
    };
    let request = Request {
        op,
        key: Bytes::copy_from_slice(&buf[PREFIX..key_end]),
        value,
    };
    Ok((request, header_len))
}

/// Encodes a request header (a SET's value is to be sent after it). Panics if `key` is
/// longer than 65,535 bytes (a caller's bug: the protocol cannot express it).
pub fn encode_request(op: Op, key: &[u8], value: Option<ValueHeader>) -> Vec<u8> {
    let keylen = u16::try_from(key.len()).expect("key longer than 65535 bytes");
    let mut out = Vec::with_capacity(PREFIX + key.len() + VALUE_HEADER);
    out.push(op.byte());
    out.extend_from_slice(&keylen.to_le_bytes());
    out.extend_from_slice(key);
    if let Some(v) = value {
        out.extend_from_slice(&v.len.to_le_bytes());
        out.push(v.compression.byte());
    }
    out
}

/// A response header: `status`, then `len` bytes of data follow.
pub fn response_header(status: u8, len: u32) -> [u8; RESPONSE_HEADER] {
    let l = len.to_le_bytes();
    [status, l[0], l[1], l[2], l[3]]
}

/// Decodes a response header: status and data length.
pub fn parse_response_header(h: [u8; RESPONSE_HEADER]) -> (u8, u32) {
    (h[0], u32::from_le_bytes([h[1], h[2], h[3], h[4]]))
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
