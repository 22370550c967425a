//! Which table holds the records, and the copy that packs them.
//!
//! The records live in `keys`, or — once the migration of a legacy index (`super::
//! migrate`) has copied them, in key order, into [`PACKED`] — in `keys.packed`. The
//! copy appends records in key order, so redb fills its leaves (what a bulk load does);
//! rewriting records in place would leave every leaf of the legacy table half empty.
//!
//! While the copy runs, `keys` is the current table and `meta`'s [`COPY_CURSOR`] is the
//! last key copied. Invariant, true at every commit: `keys.packed` holds exactly the
//! records of `keys` whose key is at most the cursor. The copy keeps it (each batch
//! copies the keys after the cursor and moves the cursor, in one transaction), and so
//! do the writes: a write transaction opens the tables with [`open_write`], and a
//! record written or removed at a key at or below the cursor is written or removed in
//! `keys.packed` too ([`Shadow`]), in the same transaction. The batch that finds no key
//! after the cursor swaps: it names `keys.packed` current in `meta` ([`RECORDS_TABLE`]),
//! deletes `keys`, and asks for a file compaction at the next open
//! ([`COMPACT_FILE`]) — one transaction. A crash at any point leaves the last commit:
//! before the swap, `keys` (complete, current) and a partial copy that the invariant
//! keeps exact, from which the next open resumes; after it, `keys.packed` alone.
//!
//! Readers never see the partial copy: [`Index::read_records`] picks the table from an
//! in-memory hint set after the swap commits, read before the read transaction begins
//! (so a hint of `keys.packed` means the snapshot is after the swap), and falls back to
//! the other table when the hinted one does not exist in its snapshot. Writers read
//! `meta` in their transaction. A snapshot install ([`Index::import`]) deletes both
//! tables and writes `keys` again (in key order: packed).

use std::sync::atomic::Ordering;

use redb::{
    ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableError,
    WriteTransaction,
};

use super::{store_err, CompactError, Index, IndexError, KEYS, META};

/// The records table once the migration's copy is done.
pub(super) const PACKED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keys.packed");
/// `meta` entry present (value: the table name) once [`PACKED`] holds the records.
pub(super) const RECORDS_TABLE: &str = "records-table";
/// `meta` entry: the last key the migration's copy wrote into [`PACKED`].
pub(super) const COPY_CURSOR: &str = "compact-copy-cursor";
/// `meta` entry: the file has free space a compaction at the next open returns.
pub(super) const COMPACT_FILE: &str = "compact-file-pending";

/// A table of records in a write transaction.
pub(super) type Records<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

/// A table of records in a read transaction.
pub(super) type ReadRecords = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The records tables of one write transaction.
pub(super) struct Tables<'txn> {
    /// The current records table.
    pub(super) main: Records<'txn>,
    /// The copy in progress, if one is.
    pub(super) shadow: Option<Shadow<'txn>>,
}

/// The partial copy: every write at a key up to `cursor` goes to it too.
pub(super) struct Shadow<'txn> {
    table: Records<'txn>,
    cursor: Vec<u8>,
}

impl Shadow<'_> {
    /// Mirrors the record `encoded` stored at `key`.
    pub(super) fn put(&mut self, key: &[u8], encoded: &[u8]) -> Result<(), IndexError> {
        if key <= self.cursor.as_slice() {
            self.table.insert(key, encoded).map_err(store_err)?;
        }
        Ok(())
    }

    /// Mirrors the removal of `key`.
    pub(super) fn remove(&mut self, key: &[u8]) -> Result<(), IndexError> {
        if key <= self.cursor.as_slice() {
            self.table.remove(key).map_err(store_err)?;
        }
        Ok(())
    }
}

/// The current records table's definition, as of `txn`.
pub(super) fn current(
    txn: &WriteTransaction,
) -> Result<TableDefinition<'static, &'static [u8], &'static [u8]>, IndexError> {
    Ok(match is_packed(txn)? {
        true => PACKED,
        false => KEYS,
    })
}

/// True when [`PACKED`] holds the records, as of `txn`.
pub(super) fn is_packed(txn: &WriteTransaction) -> Result<bool, IndexError> {
    Ok(packed_and_cursor(txn)?.0)
}

/// Whether [`PACKED`] is current, and the copy's cursor.
fn packed_and_cursor(txn: &WriteTransaction) -> Result<(bool, Option<Vec<u8>>), IndexError> {
    let meta = txn.open_table(META).map_err(store_err)?;
    let packed = meta.get(RECORDS_TABLE).map_err(store_err)?.is_some();
    let cursor = meta
        .get(COPY_CURSOR)
        .map_err(store_err)?
        .map(|v| v.value().to_vec());
    Ok((packed, cursor))
}

/// Opens the records tables of a write transaction that writes records.
pub(super) fn open_write(txn: &WriteTransaction) -> Result<Tables<'_>, IndexError> {
    let (packed, cursor) = packed_and_cursor(txn)?;
    if packed {
        let main = txn.open_table(PACKED).map_err(store_err)?;
        return Ok(Tables { main, shadow: None });
    }
    let main = txn.open_table(KEYS).map_err(store_err)?;
    let shadow = match cursor {
        Some(cursor) => Some(Shadow {
            table: txn.open_table(PACKED).map_err(store_err)?,
            cursor,
        }),
        None => None,
    };
    Ok(Tables { main, shadow })
}

/// Forgets any copy and the packed table, leaving an empty `keys` current (a snapshot
/// install, which rewrites every record, calls it first).
pub(super) fn reset(txn: &WriteTransaction) -> Result<(), IndexError> {
    txn.delete_table(KEYS).map_err(store_err)?;
    txn.delete_table(PACKED).map_err(store_err)?;
    let mut meta = txn.open_table(META).map_err(store_err)?;
    meta.remove(RECORDS_TABLE).map_err(store_err)?;
    meta.remove(COPY_CURSOR).map_err(store_err)?;
    Ok(())
}

impl Index {
    /// A read transaction and its current records table (see the module docs).
    pub(super) fn read_records(&self) -> Result<(ReadTransaction, ReadRecords), IndexError> {
        // The hint is read before the transaction begins: see the module docs.
        let packed = self.migration.packed.load(Ordering::Acquire);
        let txn = self.db.begin_read().map_err(store_err)?;
        let (first, other) = match packed {
            true => (PACKED, KEYS),
            false => (KEYS, PACKED),
        };
        let table = match txn.open_table(first) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => txn.open_table(other).map_err(store_err)?,
            Err(e) => return Err(store_err(e)),
        };
        Ok((txn, table))
    }
}

/// Returns the file's free pages to the file system if the last swap asked for it: part
/// of opening the index, before anything else uses it. Logged, with the time it took.
pub(super) fn compact_if_pending(db: &mut redb::Database) -> Result<(), IndexError> {
    let pending = {
        let txn = db.begin_read().map_err(store_err)?;
        match txn.open_table(META) {
            Ok(meta) => meta.get(COMPACT_FILE).map_err(store_err)?.is_some(),
            Err(TableError::TableDoesNotExist(_)) => false,
            Err(e) => return Err(store_err(e)),
        }
    };
    if !pending {
        return Ok(());
    }
    let started = std::time::Instant::now();
    tracing::info!("compacting the index file once after the migration to compact records");
    while db.compact().map_err(|e| store_err(redb::Error::from(e)))? {}
    let mut txn = db.begin_write().map_err(store_err)?;
    txn.set_quick_repair(true);
    txn.open_table(META)
        .map_err(store_err)?
        .remove(COMPACT_FILE)
        .map_err(store_err)?;
    txn.commit().map_err(store_err)?;
    compact(db)?;
    tracing::info!(
        "index file compacted in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `hoard compact`: returns the free pages of the index file in `dir` to the file
/// system, offline (redb's file lock refuses it while a server has the index open).
/// The file's sizes before and after. The clean-shutdown marker is left as it was: a
/// compaction changes no record, and an index that was not closed cleanly is still
/// reported as recovered by the next server start (redb repairs it on open here).
pub fn compact_offline(dir: &std::path::Path) -> Result<(u64, u64), IndexError> {
    let path = dir.join("index.redb");
    let open_err = |source: redb::Error| IndexError::Open {
        path: path.clone(),
        source,
    };
    let size = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| open_err(redb::Error::Io(e)))
    };
    let before = size(&path)?;
    let mut db = redb::Database::builder()
        .open(&path)
        .map_err(|e| open_err(e.into()))?;
    compact(&mut db).map_err(|e| match e {
        IndexError::Store(source) => open_err(source),
        other => other,
    })?;
    drop(db);
    Ok((before, size(&path)?))
}

/// What an online compaction ([`Index::compact_online`]) did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Compacted {
    /// The file's size before.
    pub before_bytes: u64,
    /// The file's size after.
    pub after_bytes: u64,
    /// How long reads and writes waited at the gate while redb compacted (the wait
    /// for open transactions to finish not included: they went on meanwhile).
    pub paused_ms: f64,
}

impl Index {
    /// Returns the index file's free pages to the file system while the server runs:
    /// waits at most `wait` for a moment with no transaction open, pausing new ones
    /// only in short slices meanwhile, then compacts with reads and writes held back
    /// (see `db.rs`). Nothing is changed if that moment does not come
    /// ([`CompactError::Busy`]). Records are not changed either way. Blocking.
    pub fn compact_online(&self, wait: std::time::Duration) -> Result<Compacted, CompactError> {
        let path = self.dir.join("index.redb");
        let size = || {
            std::fs::metadata(&path)
                .map(|m| m.len())
                .map_err(|e| CompactError::Store(redb::Error::Io(e)))
        };
        let before_bytes = size()?;
        let (_, paused) = self.db.compact(wait)?;
        Ok(Compacted {
            before_bytes,
            after_bytes: size()?,
            paused_ms: paused.as_secs_f64() * 1000.0,
        })
    }
}

/// Compacts until redb finds nothing more to move.
fn compact(db: &mut redb::Database) -> Result<(), IndexError> {
    while db.compact().map_err(|e| store_err(redb::Error::from(e)))? {}
    Ok(())
}

#[cfg(test)]
#[path = "shrink_tests.rs"]
mod tests;
