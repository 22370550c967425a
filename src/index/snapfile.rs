//! The framing of an index snapshot file ([`super::Index::export`] /
//! [`super::Index::import`]):
//!
//! ```text
//! header   "hoardsnp" u32 version (1)
//! items    u32 length, bytes   (key, value, key, value, …; each length ≤ 1 MiB)
//! trailer  u32 0xFFFF_FFFF, u64 number of key/value pairs, u32 CRC-32 of every byte before it
//! ```
//!
//! all integers little-endian. [`SnapReader`] yields items only as long as the file can
//! still turn out good; it reports the end only after the trailer matched (count and
//! checksum) and nothing follows it. A file without the header (the unversioned
//! format of earlier releases), of another version, cut anywhere (even at an item
//! boundary) or altered is refused: the importer commits nothing before the end.
//! [`upgrade_legacy`] rewrites a snapshot of the earlier format into this one (used once
//! on a member's own stored snapshot at start).

use std::io::{Read, Write};

use super::IndexError;

/// First bytes of every snapshot.
const MAGIC: &[u8; 8] = b"hoardsnp";
/// The format version written and the only one read.
const VERSION: u32 = 1;
/// Length marking the trailer (above any item's length).
const END: u32 = u32::MAX;
/// Most bytes of one key or record in a snapshot (far above real sizes).
const MAX_ITEM: u32 = 1 << 20;

/// One key and its value, as read from a snapshot.
pub type Pair = (Vec<u8>, Vec<u8>);

/// A refused snapshot.
pub fn snapshot_err(msg: &str) -> IndexError {
    IndexError::Store(redb::Error::Io(std::io::Error::other(format!(
        "index snapshot: {msg}"
    ))))
}

fn io(e: std::io::Error) -> IndexError {
    IndexError::Store(redb::Error::Io(e))
}

/// Writes a snapshot: the header at once, then items, then [`SnapWriter::finish`].
pub struct SnapWriter<'a, W: Write> {
    out: &'a mut W,
    crc: crc32fast::Hasher,
    pairs: u64,
}

impl<'a, W: Write> SnapWriter<'a, W> {
    /// Starts a snapshot on `out`.
    pub fn new(out: &'a mut W) -> Result<Self, IndexError> {
        let mut w = SnapWriter {
            out,
            crc: crc32fast::Hasher::new(),
            pairs: 0,
        };
        w.put(MAGIC)?;
        w.put(&VERSION.to_le_bytes())?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), IndexError> {
        self.crc.update(bytes);
        self.out.write_all(bytes).map_err(io)
    }

    /// Writes one key/value pair.
    pub fn pair(&mut self, key: &[u8], value: &[u8]) -> Result<(), IndexError> {
        for part in [key, value] {
            let len = u32::try_from(part.len())
                .ok()
                .filter(|&l| l <= MAX_ITEM)
                .ok_or_else(|| snapshot_err("item too large"))?;
            self.put(&len.to_le_bytes())?;
            self.put(part)?;
        }
        self.pairs += 1;
        Ok(())
    }

    /// Writes the trailer and flushes.
    pub fn finish(mut self) -> Result<(), IndexError> {
        self.put(&END.to_le_bytes())?;
        let pairs = self.pairs;
        self.put(&pairs.to_le_bytes())?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes()).map_err(io)?;
        self.out.flush().map_err(io)
    }
}

/// Reads a snapshot written by [`SnapWriter`], checking it as it goes.
pub struct SnapReader<'a, R: Read> {
    input: &'a mut R,
    crc: crc32fast::Hasher,
    pairs: u64,
}

impl<'a, R: Read> SnapReader<'a, R> {
    /// Reads and checks the header of `input`.
    pub fn new(input: &'a mut R) -> Result<Self, IndexError> {
        let mut r = SnapReader {
            input,
            crc: crc32fast::Hasher::new(),
            pairs: 0,
        };
        let mut magic = [0u8; 8];
        r.take(&mut magic)?;
        if &magic != MAGIC {
            return Err(snapshot_err(
                "no snapshot header (a snapshot of an older hoard, or not a snapshot)",
            ));
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(snapshot_err(&format!(
                "format version {version} (this hoard reads {VERSION})"
            )));
        }
        Ok(r)
    }

    fn take(&mut self, buf: &mut [u8]) -> Result<(), IndexError> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => snapshot_err("truncated"),
            _ => io(e),
        })?;
        self.crc.update(buf);
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, IndexError> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn item(&mut self, len: u32) -> Result<Vec<u8>, IndexError> {
        if len > MAX_ITEM {
            return Err(snapshot_err("item too large"));
        }
        let mut item = vec![0; len as usize];
        self.take(&mut item)?;
        Ok(item)
    }

    /// The next key/value pair; `None` once the trailer was read and matched.
    pub fn next_pair(&mut self) -> Result<Option<Pair>, IndexError> {
        let len = self.u32()?;
        if len == END {
            return self.trailer().map(|()| None);
        }
        let key = self.item(len)?;
        let len = self.u32()?;
        let value = self.item(len)?;
        self.pairs += 1;
        Ok(Some((key, value)))
    }

    fn trailer(&mut self) -> Result<(), IndexError> {
        let mut count = [0u8; 8];
        self.take(&mut count)?;
        let expected = self.crc.clone().finalize();
        let mut crc = [0u8; 4];
        self.input
            .read_exact(&mut crc)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => snapshot_err("truncated"),
                _ => io(e),
            })?;
        if u64::from_le_bytes(count) != self.pairs {
            return Err(snapshot_err(&format!(
                "{} items read, the trailer says {}",
                self.pairs,
                u64::from_le_bytes(count)
            )));
        }
        if u32::from_le_bytes(crc) != expected {
            return Err(snapshot_err("checksum mismatch"));
        }
        let mut more = [0u8; 1];
        match self.input.read(&mut more).map_err(io)? {
            0 => Ok(()),
            _ => Err(snapshot_err("bytes after the trailer")),
        }
    }
}

/// Rewrites a snapshot of the earlier, unversioned format (length-prefixed items up to
/// the end of the file) from `input` into the current format on `out`; the number of
/// key/value pairs. Only for a snapshot this member wrote or installed itself.
pub fn upgrade_legacy(input: &mut impl Read, out: &mut impl Write) -> Result<u64, IndexError> {
    let mut w = SnapWriter::new(out)?;
    loop {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io(e)),
        }
        let key = legacy_part(input, len)?;
        let mut len = [0u8; 4];
        input
            .read_exact(&mut len)
            .map_err(|_| snapshot_err("record missing"))?;
        let value = legacy_part(input, len)?;
        w.pair(&key, &value)?;
    }
    let pairs = w.pairs;
    w.finish()?;
    Ok(pairs)
}

fn legacy_part(input: &mut impl Read, len: [u8; 4]) -> Result<Vec<u8>, IndexError> {
    let len = u32::from_le_bytes(len);
    if len > MAX_ITEM {
        return Err(snapshot_err("item too large"));
    }
    let mut item = vec![0; len as usize];
    input
        .read_exact(&mut item)
        .map_err(|_| snapshot_err("truncated"))?;
    Ok(item)
}

/// Whether `file` starts with the current snapshot header's magic.
pub fn is_current(file: &mut impl Read) -> std::io::Result<bool> {
    let mut magic = [0u8; 8];
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = SnapWriter::new(&mut out).unwrap();
        for (k, v) in pairs {
            w.pair(k, v).unwrap();
        }
        w.finish().unwrap();
        out
    }

    fn read_all(mut bytes: &[u8]) -> Result<Vec<Pair>, IndexError> {
        let mut r = SnapReader::new(&mut bytes)?;
        let mut out = Vec::new();
        while let Some(p) = r.next_pair()? {
            out.push(p);
        }
        Ok(out)
    }

    #[test]
    fn round_trip_and_every_cut_or_flip_is_refused() {
        let file = written(&[(b"/a", b"1"), (b"/b", b"22")]);
        let pairs = read_all(&file).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[1], (b"/b".to_vec(), b"22".to_vec()));
        for cut in 0..file.len() {
            assert!(read_all(&file[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x20;
            assert!(read_all(&bad).is_err(), "flip at {at}");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(read_all(&longer).is_err());
    }

    #[test]
    fn unknown_versions_are_refused_and_legacy_files_upgrade() {
        let mut v2 = written(&[(b"/a", b"1")]);
        v2[8] = 2;
        assert!(read_all(&v2).is_err());
        let mut legacy = Vec::new();
        for part in [&b"/a"[..], b"1", b"/b", b"22"] {
            legacy.extend((part.len() as u32).to_le_bytes());
            legacy.extend(part);
        }
        assert!(read_all(&legacy).is_err(), "no header: refused");
        assert!(!is_current(&mut legacy.as_slice()).unwrap());
        let mut upgraded = Vec::new();
        assert_eq!(
            upgrade_legacy(&mut legacy.as_slice(), &mut upgraded).unwrap(),
            2
        );
        assert!(is_current(&mut upgraded.as_slice()).unwrap());
        assert_eq!(upgraded, written(&[(b"/a", b"1"), (b"/b", b"22")]));
    }
}
