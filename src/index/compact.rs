//! The compact record encoding (version 16), which the index writes since issue 15:
//! replica locations as small ids into the index's volume table (`super::volume_table`),
//! integers as varints, optional parts behind flag bits.
//!
//! ```text
//! u8     version = 16
//! u8     state (1 writing, 2 live, 3 unlinked, 4 deleting) — as in versions 1–5
//! u8     flags: 0x01 md5, 0x02 missing, 0x04 stale, 0x08 owner, 0x10 meta, 0x20 inline,
//!        0x40 generation (0x80 is reserved: a record with it set does not decode)
//! varint size
//! varint changed_ms
//! [md5]     16 bytes
//! u8 n, n × location                 the replicas, in placement order
//! [missing] u8 m ≥ 1, m × u8 index into the replicas
//! [stale]   u8 s ≥ 1, s × location
//! [owner]   varint ≠ 0
//! [meta]    varint length (1..=MAX_META_LEN), bytes
//! [inline]  varint length, bytes (possibly empty: an empty value)
//! [gen]     varint ≠ 0: the generation of the value's files (absent: 0)
//!
//! location: varint (id << 1 | sub), then u8 subvolume when sub = 1 — the location is
//!           the volume table's name `id` followed by `/svXX` (XX: the byte in
//!           upper-case hex, as placement writes it); any other location is stored whole
//!           as a name of the table (sub = 0).
//! varint:   unsigned LEB128 (7 bits per byte, least significant group first, high bit
//!           set on every byte but the last), at most 10 bytes, no redundant zero group.
//! ```
//!
//! Version and state stay the first two bytes, so `Record::peek_state` reads both
//! layouts. A 50-byte key's live record with three replicas on subvolumes, a size and
//! an md5 takes about 35 bytes here, against 96 in version 1.

pub use super::record::VERSION_COMPACT;
use super::record::{DecodeError, Record, State, MAX_META_LEN};

const MD5: u8 = 0x01;
const MISSING: u8 = 0x02;
const STALE: u8 = 0x04;
const OWNER: u8 = 0x08;
const META: u8 = 0x10;
const INLINE: u8 = 0x20;
const GEN: u8 = 0x40;
const KNOWN: u8 = MD5 | MISSING | STALE | OWNER | META | INLINE | GEN;

/// Longest inline value a record carries (far above what a front-end inlines; a bound
/// so a corrupt length cannot ask for gigabytes).
pub const MAX_INLINE_LEN: usize = 1 << 20;

/// Splits a location into the volume table name and the subvolume byte, when it is
/// exactly `name/svXX` with XX the byte in two upper-case hex digits.
pub fn split_location(location: &str) -> (&str, Option<u8>) {
    if let Some((name, sv)) = location.rsplit_once("/sv") {
        if sv.len() == 2 && sv.bytes().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')) {
            if let Ok(b) = u8::from_str_radix(sv, 16) {
                if !name.is_empty() {
                    return (name, Some(b));
                }
            }
        }
    }
    (location, None)
}

/// Serialises `record` compactly; `id` gives (assigning if needed) the volume table id
/// of a name.
pub fn encode<E>(
    record: &Record,
    mut id: impl FnMut(&str) -> Result<u32, E>,
) -> Result<Vec<u8>, E> {
    let missing: Vec<u8> = record
        .volumes
        .iter()
        .enumerate()
        .filter(|(_, v)| record.missing.contains(v))
        .map(|(i, _)| i as u8)
        .collect();
    let mut flags = 0;
    for (set, flag) in [
        (record.md5.is_some(), MD5),
        (!missing.is_empty(), MISSING),
        (!record.stale.is_empty(), STALE),
        (record.owner != 0, OWNER),
        (!record.meta.is_empty(), META),
        (record.inline.is_some(), INLINE),
        (record.gen != 0, GEN),
    ] {
        if set {
            flags |= flag;
        }
    }
    let mut out = Vec::with_capacity(32 + 3 * record.volumes.len());
    out.extend([VERSION_COMPACT, record.state.to_byte(), flags]);
    put_varint(&mut out, record.size);
    put_varint(&mut out, record.changed_ms);
    if let Some(d) = &record.md5 {
        out.extend_from_slice(d);
    }
    put_locations(&mut out, &record.volumes, &mut id)?;
    if !missing.is_empty() {
        out.push(missing.len() as u8);
        out.extend_from_slice(&missing);
    }
    if !record.stale.is_empty() {
        put_locations(&mut out, &record.stale, &mut id)?;
    }
    if record.owner != 0 {
        put_varint(&mut out, record.owner);
    }
    if !record.meta.is_empty() {
        put_varint(&mut out, record.meta.len() as u64);
        out.extend_from_slice(&record.meta);
    }
    if let Some(inline) = &record.inline {
        put_varint(&mut out, inline.len() as u64);
        out.extend_from_slice(inline);
    }
    if record.gen != 0 {
        put_varint(&mut out, record.gen);
    }
    Ok(out)
}

/// Parses a compact record; `name` resolves volume table ids (`None`: unknown id, a
/// corrupt record or a table that is not this record's).
pub fn decode(
    mut b: &[u8],
    mut name: impl FnMut(u32) -> Option<String>,
) -> Result<Record, DecodeError> {
    let b = &mut b;
    if take(b, 1)?[0] != VERSION_COMPACT {
        return Err(DecodeError("unknown version"));
    }
    let state = State::from_byte(take(b, 1)?[0]).ok_or(DecodeError("unknown state"))?;
    let flags = take(b, 1)?[0];
    if flags & !KNOWN != 0 {
        return Err(DecodeError("unknown record flags"));
    }
    let size = take_varint(b)?;
    let changed_ms = take_varint(b)?;
    let md5 = match flags & MD5 {
        0 => None,
        _ => Some(take(b, 16)?.try_into().expect("16 bytes")),
    };
    let volumes = take_locations(b, &mut name)?;
    let mut missing = Vec::new();
    if flags & MISSING != 0 {
        let m = take(b, 1)?[0];
        if m == 0 {
            return Err(DecodeError("empty missing list"));
        }
        for &i in take(b, m.into())? {
            let v = volumes
                .get(usize::from(i))
                .ok_or(DecodeError("missing replica index out of range"))?;
            missing.push(v.clone());
        }
    }
    let mut stale = Vec::new();
    if flags & STALE != 0 {
        stale = take_locations(b, &mut name)?;
        if stale.is_empty() {
            return Err(DecodeError("empty stale list"));
        }
    }
    let mut owner = 0;
    if flags & OWNER != 0 {
        owner = take_varint(b)?;
        if owner == 0 {
            return Err(DecodeError("owner flag with owner 0"));
        }
    }
    let mut meta = Vec::new();
    if flags & META != 0 {
        meta = take_bytes(b, MAX_META_LEN)?.to_vec();
        if meta.is_empty() {
            return Err(DecodeError("empty metadata"));
        }
    }
    let inline = match flags & INLINE {
        0 => None,
        _ => Some(take_bytes(b, MAX_INLINE_LEN)?.to_vec()),
    };
    let mut gen = 0;
    if flags & GEN != 0 {
        gen = take_varint(b)?;
        if gen == 0 {
            return Err(DecodeError("generation flag with generation 0"));
        }
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
        missing,
        stale,
        owner,
        meta,
        inline,
        gen,
    })
}

/// Appends `u8 n, n × location`. At most 255 locations (configuration checks bound the
/// replica count far below).
fn put_locations<E>(
    out: &mut Vec<u8>,
    locations: &[String],
    id: &mut impl FnMut(&str) -> Result<u32, E>,
) -> Result<(), E> {
    out.push(locations.len() as u8);
    for location in locations {
        let (name, sub) = split_location(location);
        let id = u64::from(id(name)?);
        match sub {
            Some(sv) => {
                put_varint(out, (id << 1) | 1);
                out.push(sv);
            }
            None => put_varint(out, id << 1),
        }
    }
    Ok(())
}

fn take_locations(
    b: &mut &[u8],
    name: &mut impl FnMut(u32) -> Option<String>,
) -> Result<Vec<String>, DecodeError> {
    let n = take(b, 1)?[0];
    let mut out = Vec::with_capacity(n.into());
    for _ in 0..n {
        let v = take_varint(b)?;
        let id = u32::try_from(v >> 1).map_err(|_| DecodeError("volume id too large"))?;
        let mut location = name(id).ok_or(DecodeError(UNKNOWN_VOLUME))?;
        if v & 1 == 1 {
            let sv = take(b, 1)?[0];
            location.push_str(&format!("/sv{sv:02X}"));
        }
        out.push(location);
    }
    Ok(out)
}

/// The message of the decode error for an id the volume table does not hold.
pub const UNKNOWN_VOLUME: &str = "unknown volume id";

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint written by [`put_varint`]; overlong or redundant forms are refused.
pub fn take_varint(b: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = take(b, 1)?[0];
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return Err(DecodeError("varint overflow"));
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(DecodeError("varint not minimal"));
            }
            return Ok(v);
        }
    }
    Err(DecodeError("varint overflow"))
}

fn take_bytes<'a>(b: &mut &'a [u8], max: usize) -> Result<&'a [u8], DecodeError> {
    let len = usize::try_from(take_varint(b)?).map_err(|_| DecodeError("length too large"))?;
    if len > max {
        return Err(DecodeError("length too large"));
    }
    take(b, len)
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
#[path = "compact_tests.rs"]
mod tests;
