//! The index record of one key and its stable binary encoding.
//!
//! Encoding, version 1 (all integers little-endian):
//!
//! ```text
//! u8   version = 1
//! u8   state (1 writing, 2 live, 3 unlinked, 4 deleting)
//! u64  size in bytes (0 until committed)
//! u64  changed_ms: unix time in ms of the last state change
//! u8   has_md5 (0 or 1), then 16 bytes of md5 when 1
//! u8   replica count n, then n × (u16 length, UTF-8 location "host:port[/svXX]")
//! ```

/// Where a key is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Intent recorded, data being written; not visible. Left behind by a crash, repair
    /// rolls it back.
    Writing,
    /// Every replica acknowledged the value; visible to GET and `?list`.
    Live,
    /// Virtually deleted (`UNLINK`): data kept, listed by `?unlinked`, 404 to GET.
    Unlinked,
    /// Hard delete in progress: replica files are being removed; not visible.
    Deleting,
}

impl State {
    fn to_byte(self) -> u8 {
        match self {
            State::Writing => 1,
            State::Live => 2,
            State::Unlinked => 3,
            State::Deleting => 4,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => State::Writing,
            2 => State::Live,
            3 => State::Unlinked,
            4 => State::Deleting,
            _ => return None,
        })
    }

    /// Lower-case name, as used in logs and admin output.
    pub fn name(self) -> &'static str {
        match self {
            State::Writing => "writing",
            State::Live => "live",
            State::Unlinked => "unlinked",
            State::Deleting => "deleting",
        }
    }
}

/// What the index knows about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Life-cycle state.
    pub state: State,
    /// Replica locations, in placement order (`host:port` or `host:port/svXX`).
    pub volumes: Vec<String>,
    /// Value size in bytes (0 while writing).
    pub size: u64,
    /// md5 of the whole value, when known.
    pub md5: Option<[u8; 16]>,
    /// Unix time in milliseconds of the last state change.
    pub changed_ms: u64,
}

/// A stored record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("corrupt index record: {0}")]
pub struct DecodeError(&'static str);

const VERSION: u8 = 1;

impl Record {
    /// The md5 as lower-case hex, if known.
    pub fn md5_hex(&self) -> Option<String> {
        self.md5
            .map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Serialises the record (see the module docs for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(36 + self.volumes.iter().map(|v| v.len() + 2).sum::<usize>());
        out.push(VERSION);
        out.push(self.state.to_byte());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.changed_ms.to_le_bytes());
        match &self.md5 {
            Some(d) => {
                out.push(1);
                out.extend_from_slice(d);
            }
            None => out.push(0),
        }
        // Replica counts and location lengths are bounded by configuration checks
        // (at most 255 volumes per key, host:port/svXX far below 64 KiB).
        out.push(self.volumes.len() as u8);
        for v in &self.volumes {
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// Parses a record written by [`Record::encode`].
    pub fn decode(mut b: &[u8]) -> Result<Self, DecodeError> {
        let version = take(&mut b, 1)?[0];
        if version != VERSION {
            return Err(DecodeError("unknown version"));
        }
        let state = State::from_byte(take(&mut b, 1)?[0]).ok_or(DecodeError("unknown state"))?;
        let size = u64::from_le_bytes(take(&mut b, 8)?.try_into().expect("8 bytes"));
        let changed_ms = u64::from_le_bytes(take(&mut b, 8)?.try_into().expect("8 bytes"));
        let md5 = match take(&mut b, 1)?[0] {
            0 => None,
            1 => Some(take(&mut b, 16)?.try_into().expect("16 bytes")),
            _ => return Err(DecodeError("bad md5 flag")),
        };
        let n = take(&mut b, 1)?[0];
        let mut volumes = Vec::with_capacity(n.into());
        for _ in 0..n {
            let len = u16::from_le_bytes(take(&mut b, 2)?.try_into().expect("2 bytes"));
            let v = std::str::from_utf8(take(&mut b, len.into())?)
                .map_err(|_| DecodeError("location is not UTF-8"))?;
            volumes.push(v.to_string());
        }
        if !b.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(Record {
            state,
            volumes,
            size,
            md5,
            changed_ms,
        })
    }
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if b.len() < n {
        return Err(DecodeError("truncated"));
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            state: State::Live,
            volumes: vec!["a:1/sv07".into(), "b:2".into()],
            size: 5,
            md5: Some([0xab; 16]),
            changed_ms: 0x0102,
        }
    }

    #[test]
    fn known_encoding() {
        let mut want = vec![1, 2, 5, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 1];
        want.extend([0xab; 16]);
        want.extend([2, 8, 0]);
        want.extend(b"a:1/sv07");
        want.extend([3, 0]);
        want.extend(b"b:2");
        assert_eq!(sample().encode(), want);
    }

    #[test]
    fn md5_hex() {
        let mut r = sample();
        r.md5 = Some([
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 0, 0, 0, 0, 0, 0xff, 0x10,
        ]);
        assert_eq!(r.md5_hex().unwrap(), "0123456789abcdef000000000000ff10");
    }

    #[test]
    fn round_trips() {
        let mut r = sample();
        assert_eq!(Record::decode(&r.encode()), Ok(r.clone()));
        r.md5 = None;
        r.state = State::Writing;
        r.volumes.clear();
        assert_eq!(Record::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn rejects_corruption() {
        let good = sample().encode();
        for cut in 0..good.len() {
            assert!(Record::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[1] = 9;
        assert_eq!(Record::decode(&bad), Err(DecodeError("unknown state")));
        let mut long = good;
        long.push(0);
        assert_eq!(Record::decode(&long), Err(DecodeError("trailing bytes")));
    }
}
