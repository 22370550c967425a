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
//!
//! Version 2 is version 1 followed by the replicas that do not hold the value yet (a
//! degraded write, `--write-quorum`): `u8 m, m × u8 index into the locations`. A record
//! with no missing replica is always written as version 1, byte for byte as before, so
//! stores written before version 2 existed and records of complete keys are unchanged.
//!
//! Version 3 is version 2 (its missing list may be empty) followed by the *stale*
//! locations: `u8 s, s × (u16 length, location)` — places outside `volumes` that may
//! still hold bytes of an older value of the key (a write that replaced an unlinked,
//! unfinished or interrupted record after the placement changed). They are never
//! served, and are deleted before the record can go away ([`Record::all_locations`]).
//! A record with no stale location is written as version 1 or 2, as before.
//!
//! Version 4 (only for `writing` records in an index cluster) is version 3 — both lists
//! possibly empty — followed by `u64 owner`: the write that holds the intent, so that
//! index servers never both write one key.
//!
//! Version 5 carries a front-end's metadata of the value (content type, user metadata,
//! an S3 multipart ETag — opaque bytes to the index, see `store::ObjectMeta`): version
//! 3 — both lists possibly empty — then `u64 owner` (possibly 0), then
//! `u32 length, length bytes` (at least one). A record without metadata is written as
//! before (versions 1–4), so older stores and records decode unchanged.
//!
//! Versions 1–5 are the *legacy* layouts: the index now writes the compact encoding
//! (version 16, `super::compact`), and migrates old records to it in the background
//! (`super::migrate`). Legacy records keep decoding forever.

/// Where a key is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
    pub(super) fn to_byte(self) -> u8 {
        match self {
            State::Writing => 1,
            State::Live => 2,
            State::Unlinked => 3,
            State::Deleting => 4,
        }
    }

    pub(super) fn from_byte(b: u8) -> Option<Self> {
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Locations (a subset of `volumes`) that do not hold the value yet: a degraded
    /// write. GET never redirects to them; repair copies the value there.
    pub missing: Vec<String>,
    /// Locations outside `volumes` that may hold bytes of an older value of this key:
    /// never served, deleted by the write path or the upkeep worker (`Cleaned`).
    pub stale: Vec<String>,
    /// While `writing`: the write holding the intent (see `Command::Begin`); 0 = none.
    pub owner: u64,
    /// A front-end's metadata of the value (opaque here; empty = none), set by
    /// `Command::Commit` and kept by every later command.
    pub meta: Vec<u8>,
    /// A small value stored in the record itself (`--inline-max`, `None`: the value is
    /// in the replica files): such a record names no volumes, and GET answers with these
    /// bytes. Only the compact encoding (`super::compact`) stores it; base64 in JSON (the
    /// Raft log), where a byte array would be 4–5 times larger.
    #[serde(default, with = "super::base64_serde::option")]
    pub inline: Option<Vec<u8>>,
    /// The generation of the value's files: they are named
    /// [`crate::placement::file_path`]`(key, gen)` on every location the record names.
    /// 0 for a key's first value (minikeyvalue's file name); an overwrite writes a new
    /// generation under a new name while readers still see the old one (see
    /// `Command::Begin`). Only the compact encoding stores it (legacy records are
    /// generation 0).
    #[serde(default)]
    pub gen: u64,
}

/// A stored record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("corrupt index record: {0}")]
pub struct DecodeError(pub(super) &'static str);

const VERSION: u8 = 1;
/// Version 1 plus the missing replicas.
const VERSION_MISSING: u8 = 2;
/// Version 2 plus the stale locations.
const VERSION_STALE: u8 = 3;
/// Version 3 plus the owner of an intent.
const VERSION_OWNER: u8 = 4;
/// Version 4 (owner possibly 0) plus front-end metadata.
const VERSION_META: u8 = 5;
/// Version byte of the compact encoding (`super::compact`; versions 1–5 are the legacy
/// layouts; 6–15 are left for those).
pub const VERSION_COMPACT: u8 = 16;
/// Longest metadata a record carries.
pub const MAX_META_LEN: usize = 64 * 1024;
/// Longest value a record carries inline (the cap of `--inline-max`).
pub const MAX_INLINE_LEN: usize = 64 * 1024;

impl Record {
    /// The md5 as lower-case hex, if known.
    pub fn md5_hex(&self) -> Option<String> {
        self.md5.map(|d| crate::hex::hex(&d))
    }

    /// The locations that hold the value: `volumes` minus `missing`.
    pub fn holders(&self) -> impl Iterator<Item = &str> {
        self.volumes
            .iter()
            .filter(|v| !self.missing.contains(v))
            .map(String::as_str)
    }

    /// Every location that may hold bytes of this key: `volumes` then `stale`. A record
    /// may be dropped only once all of them were cleaned.
    pub fn all_locations(&self) -> Vec<String> {
        let mut all = self.volumes.clone();
        all.extend(
            self.stale
                .iter()
                .filter(|s| !self.volumes.contains(s))
                .cloned(),
        );
        all
    }

    /// Serialises the record in the legacy layout (versions 1–5, see the module docs),
    /// which `inline` and `gen` are not part of. The index writes the compact encoding
    /// (`super::compact`); this one is kept for benchmarks and migration tests that
    /// need an index in the old format.
    pub fn encode_legacy(&self) -> Vec<u8> {
        let missing: Vec<u8> = self
            .volumes
            .iter()
            .enumerate()
            .filter(|(_, v)| self.missing.contains(v))
            .map(|(i, _)| i as u8)
            .collect();
        let mut out =
            Vec::with_capacity(38 + self.volumes.iter().map(|v| v.len() + 2).sum::<usize>());
        let version = match (missing.is_empty(), self.stale.is_empty(), self.owner) {
            _ if !self.meta.is_empty() => VERSION_META,
            (_, _, 1..) => VERSION_OWNER,
            (_, false, 0) => VERSION_STALE,
            (false, true, 0) => VERSION_MISSING,
            (true, true, 0) => VERSION,
        };
        out.push(version);
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
        put_locations(&mut out, &self.volumes);
        if version >= VERSION_MISSING {
            out.push(missing.len() as u8);
            out.extend_from_slice(&missing);
        }
        if version >= VERSION_STALE {
            put_locations(&mut out, &self.stale);
        }
        if version >= VERSION_OWNER {
            out.extend_from_slice(&self.owner.to_le_bytes());
        }
        if version == VERSION_META {
            out.extend_from_slice(&(self.meta.len() as u32).to_le_bytes());
            out.extend_from_slice(&self.meta);
        }
        out
    }

    /// The state of an encoded record, read from its header (version and state byte)
    /// without decoding or checking the rest; listings filter on it.
    pub fn peek_state(b: &[u8]) -> Result<State, DecodeError> {
        match b {
            [VERSION..=VERSION_META | VERSION_COMPACT, state, ..] => {
                State::from_byte(*state).ok_or(DecodeError("unknown state"))
            }
            [_, _, ..] => Err(DecodeError("unknown version")),
            _ => Err(DecodeError("truncated")),
        }
    }

    /// Parses a record written by [`Record::encode_legacy`] (versions 1–5).
    pub fn decode_legacy(mut b: &[u8]) -> Result<Self, DecodeError> {
        let version = take(&mut b, 1)?[0];
        if !(VERSION..=VERSION_META).contains(&version) {
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
        let volumes = take_locations(&mut b)?;
        let mut missing = Vec::new();
        if version >= VERSION_MISSING {
            let m = take(&mut b, 1)?[0];
            for &i in take(&mut b, m.into())? {
                let v = volumes
                    .get(usize::from(i))
                    .ok_or(DecodeError("missing replica index out of range"))?;
                missing.push(v.clone());
            }
            if missing.is_empty() && version == VERSION_MISSING {
                return Err(DecodeError("version 2 without missing replicas"));
            }
        }
        let stale = if version >= VERSION_STALE {
            let stale = take_locations(&mut b)?;
            if stale.is_empty() && version == VERSION_STALE {
                return Err(DecodeError("version 3 without stale locations"));
            }
            stale
        } else {
            Vec::new()
        };
        let owner = if version >= VERSION_OWNER {
            let owner = u64::from_le_bytes(take(&mut b, 8)?.try_into().expect("8 bytes"));
            if owner == 0 && version == VERSION_OWNER {
                return Err(DecodeError("version 4 without an owner"));
            }
            owner
        } else {
            0
        };
        let meta = if version == VERSION_META {
            let len = u32::from_le_bytes(take(&mut b, 4)?.try_into().expect("4 bytes"));
            let len = usize::try_from(len).map_err(|_| DecodeError("metadata too long"))?;
            if len == 0 || len > MAX_META_LEN {
                return Err(DecodeError("version 5 with empty or oversized metadata"));
            }
            take(&mut b, len)?.to_vec()
        } else {
            Vec::new()
        };
        if !b.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(Record {
            state,
            volumes,
            size,
            md5,
            changed_ms,
            missing,
            stale,
            owner,
            meta,
            inline: None,
            gen: 0,
        })
    }
}

/// Appends `u8 n, n × (u16 length, location)`. Counts and lengths are bounded by
/// configuration checks (at most 255 volumes per key, `host:port/svXX` far below 64 KiB).
fn put_locations(out: &mut Vec<u8>, locations: &[String]) {
    out.push(locations.len() as u8);
    for v in locations {
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
}

/// Reads what [`put_locations`] wrote.
fn take_locations(b: &mut &[u8]) -> Result<Vec<String>, DecodeError> {
    let n = take(b, 1)?[0];
    let mut out = Vec::with_capacity(n.into());
    for _ in 0..n {
        let len = u16::from_le_bytes(take(b, 2)?.try_into().expect("2 bytes"));
        let v = std::str::from_utf8(take(b, len.into())?)
            .map_err(|_| DecodeError("location is not UTF-8"))?;
        out.push(v.to_string());
    }
    Ok(out)
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
            missing: Vec::new(),
            stale: Vec::new(),
            owner: 0,
            meta: Vec::new(),
            inline: None,
            gen: 0,
        }
    }

    #[test]
    fn known_encoding_with_meta() {
        let mut r = sample();
        r.meta = b"{}".to_vec();
        let mut want = sample().encode_legacy();
        want[0] = 5;
        want.extend([0, 0]); // no missing, no stale
        want.extend([0; 8]); // owner 0
        want.extend([2, 0, 0, 0]);
        want.extend(b"{}");
        assert_eq!(r.encode_legacy(), want);
        assert_eq!(Record::decode_legacy(&want), Ok(r.clone()));
        assert_eq!(Record::peek_state(&want), Ok(State::Live));
        // With an owner and lists too.
        r.owner = 7;
        r.stale = vec!["c:3".into()];
        r.missing = vec!["b:2".into()];
        assert_eq!(Record::decode_legacy(&r.encode_legacy()), Ok(r.clone()));
        // Empty metadata in version 5, or a cut, is corruption.
        let mut empty = sample().encode_legacy();
        empty[0] = 5;
        empty.extend([0, 0]);
        empty.extend([0; 8]);
        empty.extend([0; 4]);
        assert!(Record::decode_legacy(&empty).is_err());
        let good = r.encode_legacy();
        assert!(Record::decode_legacy(&good[..good.len() - 1]).is_err());
    }

    #[test]
    fn known_encoding() {
        let mut want = vec![1, 2, 5, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 1];
        want.extend([0xab; 16]);
        want.extend([2, 8, 0]);
        want.extend(b"a:1/sv07");
        want.extend([3, 0]);
        want.extend(b"b:2");
        assert_eq!(sample().encode_legacy(), want);
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
    fn known_encoding_with_missing_replica() {
        let mut r = sample();
        r.missing = vec!["b:2".into()];
        let mut want = sample().encode_legacy();
        want[0] = 2;
        want.extend([1, 1]);
        assert_eq!(r.encode_legacy(), want);
        assert_eq!(Record::decode_legacy(&want), Ok(r.clone()));
        assert_eq!(r.holders().collect::<Vec<_>>(), ["a:1/sv07"]);
        // A version 1 record decodes with nothing missing.
        assert_eq!(
            Record::decode_legacy(&sample().encode_legacy()),
            Ok(sample())
        );
        // An index past the locations, or an empty list, is corruption.
        let mut bad = want.clone();
        *bad.last_mut().unwrap() = 2;
        assert!(Record::decode_legacy(&bad).is_err());
        let mut empty = sample().encode_legacy();
        empty[0] = 2;
        empty.push(0);
        assert!(Record::decode_legacy(&empty).is_err());
        // Missing names no longer among the locations are not stored.
        r.missing = vec!["gone:9".into()];
        assert_eq!(r.encode_legacy(), sample().encode_legacy());
    }

    #[test]
    fn known_encoding_with_stale_locations() {
        let mut r = sample();
        r.stale = vec!["c:3".into()];
        let mut want = sample().encode_legacy();
        want[0] = 3;
        want.extend([0, 1, 3, 0]);
        want.extend(b"c:3");
        assert_eq!(r.encode_legacy(), want);
        assert_eq!(Record::decode_legacy(&want), Ok(r.clone()));
        assert_eq!(r.all_locations(), ["a:1/sv07", "b:2", "c:3"]);
        // With a missing replica too.
        r.missing = vec!["a:1/sv07".into()];
        let mut want = sample().encode_legacy();
        want[0] = 3;
        want.extend([1, 0, 1, 3, 0]);
        want.extend(b"c:3");
        assert_eq!(r.encode_legacy(), want);
        assert_eq!(Record::decode_legacy(&want), Ok(r));
        // Version 3 with nothing stale is corruption.
        let mut empty = sample().encode_legacy();
        empty[0] = 3;
        empty.extend([0, 0]);
        assert!(Record::decode_legacy(&empty).is_err());
    }

    #[test]
    fn known_encoding_with_owner() {
        let mut r = sample();
        r.state = State::Writing;
        r.owner = 0x0102;
        let mut want = r.clone();
        want.owner = 0;
        let mut want = want.encode_legacy();
        want[0] = 4;
        want.extend([0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.encode_legacy(), want);
        assert_eq!(Record::decode_legacy(&want), Ok(r));
        let mut zero = want.clone();
        let n = zero.len();
        zero[n - 8..].fill(0);
        assert!(Record::decode_legacy(&zero).is_err());
    }

    #[test]
    fn round_trips() {
        let mut r = sample();
        assert_eq!(Record::decode_legacy(&r.encode_legacy()), Ok(r.clone()));
        r.md5 = None;
        r.state = State::Writing;
        r.volumes.clear();
        assert_eq!(Record::decode_legacy(&r.encode_legacy()), Ok(r));
    }

    #[test]
    fn peeks_state() {
        for state in [
            State::Writing,
            State::Live,
            State::Unlinked,
            State::Deleting,
        ] {
            let mut r = sample();
            r.state = state;
            assert_eq!(Record::peek_state(&r.encode_legacy()), Ok(state));
            r.missing = vec!["b:2".into()];
            assert_eq!(Record::peek_state(&r.encode_legacy()), Ok(state));
            // Every version: stale locations (3), an owner (4).
            r.stale = vec!["c:3".into()];
            assert_eq!(r.encode_legacy()[0], 3);
            assert_eq!(Record::peek_state(&r.encode_legacy()), Ok(state));
            r.owner = 5;
            assert_eq!(r.encode_legacy()[0], 4);
            assert_eq!(Record::peek_state(&r.encode_legacy()), Ok(state));
        }
        assert_eq!(
            Record::peek_state(&[1, 9]),
            Err(DecodeError("unknown state"))
        );
        assert_eq!(
            Record::peek_state(&[7, 2]),
            Err(DecodeError("unknown version"))
        );
        assert_eq!(Record::peek_state(&[1]), Err(DecodeError("truncated")));
    }

    #[test]
    fn rejects_corruption() {
        let good = sample().encode_legacy();
        for cut in 0..good.len() {
            assert!(Record::decode_legacy(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[1] = 9;
        assert_eq!(
            Record::decode_legacy(&bad),
            Err(DecodeError("unknown state"))
        );
        let mut long = good;
        long.push(0);
        assert_eq!(
            Record::decode_legacy(&long),
            Err(DecodeError("trailing bytes"))
        );
    }
}
