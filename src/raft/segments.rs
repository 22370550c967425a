//! The Raft log's files (`<db>/raft-log/`): append-only segment files of log entries
//! and a small metadata file (vote, purged and committed log ids).
//!
//! * A segment is named by the index of its first entry (`{index:016x}.seg`) and holds
//!   consecutive entries as records: `len: u32 LE | crc32: u32 LE | payload` (the
//!   payload is the entry's JSON, the CRC is over the payload). A record is only ever
//!   appended; a truncation cuts a segment's end and deletes the segments after it.
//!   Segments are grown ahead of the records in zeroed chunks, so that an append
//!   rewrites allocated blocks and its `fdatasync` has no file size or extent to
//!   journal: a zero length where a record would start marks the end of the records.
//! * A torn or corrupt record at the end of the *last* segment is what a crash during
//!   an append leaves (that append was never acknowledged): it is cut off when the log
//!   is opened. The same in an earlier segment is corruption, and opening fails.
//! * `meta.json` is replaced atomically (temporary file, fsync, rename, fsync of the
//!   directory); it changes only on a vote, a purge, and at a migration.
//! * A log written by an earlier version (`<db>/raft-log.redb`) is copied into this
//!   format when first opened ([`migrate_redb`]), then removed.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use openraft::{Entry, LogId, RaftLogId, Vote};

use super::TypeConfig;

/// Bytes of a record's header (length and CRC).
pub const HEADER: u64 = 8;
/// A record longer than this is not one (a torn length field).
const MAX_RECORD: u32 = 256 << 20;

/// What `meta.json` holds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// The vote, once one was saved.
    pub vote: Option<Vote<u64>>,
    /// Entries up to this one are gone (purged after a snapshot).
    pub purged: Option<LogId<u64>>,
    /// A committed log id this node knew of when the file was written (may be older
    /// than the latest: openraft re-learns it from the leader).
    pub committed: Option<LogId<u64>>,
}

/// The path of the segment starting at `first`.
pub fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:016x}.seg"))
}

/// The segments in `dir`, by their first index.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_suffix(".seg") {
            if let Ok(first) = u64::from_str_radix(hex, 16) {
                out.push(first);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Appends the record of `payload` to `out`.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// One entry found in a segment: its log id, and where its payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The entry's log id.
    pub log_id: LogId<u64>,
    /// Offset of the payload in the file.
    pub offset: u64,
    /// Payload length.
    pub len: u32,
}

/// Reads the records of the segment `file` in order, calling `each` for every entry.
/// Returns the length of its valid part, and whether something after it is not a
/// whole, intact record (a torn append, or corruption).
pub fn scan(file: &File, mut each: impl FnMut(Found)) -> std::io::Result<(u64, bool)> {
    let size = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut pos = 0u64;
    let mut payload = Vec::new();
    while pos < size {
        if size - pos < HEADER {
            // Room for no header: zeros of the allocation, or a torn header.
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            return Ok((pos, rest.iter().any(|b| *b != 0)));
        }
        let mut header = [0u8; HEADER as usize];
        reader.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 {
            // No record has an empty payload: the zeroed space after the last one, or
            // a torn header (a CRC without a length).
            return Ok((pos, crc != 0));
        }
        if len > MAX_RECORD || size - pos - HEADER < u64::from(len) {
            return Ok((pos, true));
        }
        payload.resize(len as usize, 0);
        reader.read_exact(&mut payload)?;
        if crc32fast::hash(&payload) != crc {
            return Ok((pos, true));
        }
        let Ok(entry) = serde_json::from_slice::<Entry<TypeConfig>>(&payload) else {
            return Ok((pos, true));
        };
        each(Found {
            log_id: *entry.get_log_id(),
            offset: pos + HEADER,
            len,
        });
        pos += HEADER + u64::from(len);
    }
    Ok((pos, false))
}

/// Reads and decodes the entry whose payload is at `offset` in `file`.
pub fn read_entry(file: &File, offset: u64, len: u32) -> std::io::Result<Entry<TypeConfig>> {
    use std::os::unix::fs::FileExt;
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, offset)?;
    serde_json::from_slice(&payload).map_err(std::io::Error::other)
}

/// Reads `meta.json` in `dir` (the default when there is none).
pub fn read_meta(dir: &Path) -> std::io::Result<Meta> {
    match std::fs::read(dir.join("meta.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::other(format!("{}: {e}", dir.join("meta.json").display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Meta::default()),
        Err(e) => Err(e),
    }
}

/// Replaces `meta.json` in `dir` with `meta`, durably.
pub fn write_meta(dir: &Path, meta: &Meta) -> std::io::Result<()> {
    let tmp = dir.join("meta.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(meta).map_err(std::io::Error::other)?,
    )?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join("meta.json"))?;
    sync_dir(dir)
}

/// Makes the names in `dir` (files created, renamed or removed) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Copies the log of an earlier version (`old`, a redb file with a `log` table of JSON
/// entries by index and a `meta` table of JSON `vote`, `last_purged`, `committed`)
/// into a new log directory `dir`, then removes `old`. Crash-safe: the copy is built
/// next to `dir` and renamed into place before `old` is removed.
pub fn migrate_redb(old: &Path, dir: &Path) -> anyhow::Result<()> {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    let ctx = |what: &str| format!("migrating Raft log {}: {what}", old.display());
    let db = redb::Database::open(old).map_err(|e| anyhow::anyhow!("{}: {e}", ctx("open")))?;
    let txn = db.begin_read()?;
    let meta_table = txn.open_table(META)?;
    let get = |name: &str| -> anyhow::Result<Option<Vec<u8>>> {
        Ok(meta_table.get(name)?.map(|v| v.value().to_vec()))
    };
    let meta = Meta {
        vote: get("vote")?
            .map(|v| serde_json::from_slice(&v))
            .transpose()?,
        purged: get("last_purged")?
            .map(|v| serde_json::from_slice(&v))
            .transpose()?,
        committed: get("committed")?
            .map(|v| serde_json::from_slice::<Option<LogId<u64>>>(&v))
            .transpose()?
            .flatten(),
    };
    let tmp = dir.with_extension("migrating");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let log = txn.open_table(LOG)?;
    let mut segment: Option<File> = None;
    let mut buf = Vec::new();
    for item in log.iter()? {
        let (index, bytes) = item?;
        if segment.is_none() {
            segment = Some(File::create(segment_path(&tmp, index.value()))?);
        }
        buf.clear();
        encode_record(bytes.value(), &mut buf);
        if let Some(file) = segment.as_mut() {
            std::io::Write::write_all(file, &buf)?;
        }
    }
    if let Some(f) = segment {
        f.sync_all()?;
    }
    write_meta(&tmp, &meta)?;
    std::fs::rename(&tmp, dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    drop((log, meta_table, txn, db));
    std::fs::remove_file(old)?;
    tracing::info!(
        "migrated the Raft log {} to {}",
        old.display(),
        dir.display()
    );
    Ok(())
}
