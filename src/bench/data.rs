//! Test values generated on the fly from a cheap PRNG, so that a value of any size is
//! sent and checked in constant memory: [`PrngBody`] streams it as a request body, and
//! [`Verifier`] regenerates the same stream to compare a response against, byte for byte.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use md5::{Digest, Md5};

/// Size of the blocks a value is generated (and sent) in.
pub const BLOCK: usize = 1 << 20;

/// wyrand: a 64-bit PRNG that fills memory at several GB/s — far faster than any link
/// or disk it feeds, so generation never limits a measurement.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Prng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut words = buf.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = words.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }

    /// The next block of a value, `len` (≤ [`BLOCK`]) bytes long. Blocks are always
    /// generated whole and then cut, so a value's bytes depend only on seed and offset.
    fn block(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; BLOCK];
        self.fill(&mut buf);
        buf.truncate(len);
        buf
    }
}

/// `size` bytes of the stream of `seed`, in memory (for small values).
pub fn small_value(seed: u64, size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; size];
    Prng::new(seed).fill(&mut buf);
    buf
}

/// md5 of the `size`-byte value of `seed`, computed block by block.
pub fn md5_of(seed: u64, size: u64) -> [u8; 16] {
    let mut prng = Prng::new(seed);
    let mut md5 = Md5::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        md5.update(prng.block(n));
        left -= n as u64;
    }
    md5.finalize().into()
}

/// A request body streaming the `size`-byte value of `seed` in [`BLOCK`]-sized frames,
/// with an exact size hint (so it is sent with a Content-Length, not chunked).
#[derive(Debug)]
pub struct PrngBody {
    prng: Prng,
    left: u64,
}

impl PrngBody {
    /// The value of `seed`, `size` bytes long.
    pub fn new(seed: u64, size: u64) -> Self {
        PrngBody {
            prng: Prng::new(seed),
            left: size,
        }
    }
}

impl Body for PrngBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(BLOCK as u64) as usize;
        let block = self.prng.block(n);
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(block)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Checks a received byte stream against the value of `seed`, in constant memory.
#[derive(Debug)]
pub struct Verifier {
    prng: Prng,
    size: u64,
    block: Vec<u8>,
    pos: usize,
    received: u64,
    first_difference: Option<u64>,
}

impl Verifier {
    /// Expects the `size`-byte value of `seed`.
    pub fn new(seed: u64, size: u64) -> Self {
        Verifier {
            prng: Prng::new(seed),
            size,
            block: Vec::new(),
            pos: 0,
            received: 0,
            first_difference: None,
        }
    }

    /// Compares the next received bytes.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.first_difference.is_none() {
            if self.received >= self.size {
                self.first_difference = Some(self.received);
                return;
            }
            if self.pos == self.block.len() {
                let n = (self.size - self.received).min(BLOCK as u64) as usize;
                self.block = self.prng.block(n);
                self.pos = 0;
            }
            let n = data.len().min(self.block.len() - self.pos);
            let want = &self.block[self.pos..self.pos + n];
            if let Some(i) = want.iter().zip(&data[..n]).position(|(a, b)| a != b) {
                self.first_difference = Some(self.received + i as u64);
                return;
            }
            self.pos += n;
            self.received += n as u64;
            data = &data[n..];
        }
    }

    /// Ok when exactly the expected bytes were received; otherwise what went wrong.
    pub fn finish(&self) -> Result<(), String> {
        match self.first_difference {
            Some(at) => Err(format!(
                "received bytes differ from those sent at offset {at}"
            )),
            None if self.received != self.size => Err(format!(
                "received {} bytes, sent {}",
                self.received, self.size
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn collect(seed: u64, size: u64) -> Vec<u8> {
        let body = PrngBody::new(seed, size);
        assert_eq!(body.size_hint().exact(), Some(size));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(body.collect()).unwrap().to_bytes().to_vec()
    }

    #[test]
    fn body_verifier_and_md5_agree() {
        let size = 2 * BLOCK as u64 + 12345;
        let sent = collect(7, size);
        assert_eq!(sent.len() as u64, size);
        assert_eq!(md5_of(7, size), <[u8; 16]>::from(Md5::digest(&sent)));
        // Any chunking verifies.
        let mut v = Verifier::new(7, size);
        for piece in sent.chunks(70_001) {
            v.feed(piece);
        }
        assert_eq!(v.finish(), Ok(()));
        // A flipped byte, a short and a long stream are caught.
        let mut bad = sent.clone();
        bad[BLOCK + 5] ^= 1;
        let mut v = Verifier::new(7, size);
        v.feed(&bad);
        assert!(v.finish().unwrap_err().contains(&format!("{}", BLOCK + 5)));
        let mut v = Verifier::new(7, size);
        v.feed(&sent[..100]);
        assert!(v.finish().is_err());
        let mut v = Verifier::new(7, size);
        v.feed(&sent);
        v.feed(b"x");
        assert!(v.finish().is_err());
        assert_ne!(collect(8, 64), collect(7, 64));
        assert_eq!(small_value(7, 100), sent[..100]);
    }
}
