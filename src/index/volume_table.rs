//! The volume table: the names (`host:port`, or a whole location that is not
//! `name/svXX`) that compact records (`super::compact`) refer to by a small id. It is
//! two tables of the index's own redb database — `volume_names` (id → name) and
//! `volume_ids` (name → id) — so it is written in the same transaction as the records
//! that first use a name, travels with the index file, and is carried by snapshots.
//!
//! Ids are dense (0, 1, 2, …), assigned in a write transaction the first time a name is
//! written, and never change or get reused while the database exists: the table only
//! grows (by one entry per volume server the index has ever pointed at — a handful to
//! a few thousand). That is what makes the in-memory copy ([`VolumeTable`]) safe to use
//! from any transaction: it holds only committed entries, which no later transaction
//! can contradict; a record naming an id the copy does not have yet (committed moments
//! ago) is decoded from its own transaction's table, and the copy catches up.
//!
//! Ids are a storage detail of one database: they are not part of any command, and two
//! index servers (Raft members) may number the same volume differently (see
//! docs/ARCHITECTURE.md, "Compact records"). The snapshot carries the exporter's table
//! with its records; the importer decodes them with it and re-encodes them with its own.

use std::collections::HashMap;
use std::sync::RwLock;

use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction};

use super::record::{DecodeError, Record};
use super::{compact, store_err, IndexError};

/// id → name.
pub(super) const NAMES: TableDefinition<u32, &str> = TableDefinition::new("volume_names");
/// name → id.
pub(super) const IDS: TableDefinition<&str, u32> = TableDefinition::new("volume_ids");

/// The committed volume table, in memory.
#[derive(Debug, Default)]
pub struct VolumeTable {
    cache: RwLock<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl VolumeTable {
    /// Replaces the copy with every entry of `names` (a committed table), if it has more.
    pub(super) fn reload(
        &self,
        names: &impl ReadableTable<u32, &'static str>,
    ) -> Result<(), IndexError> {
        let all = read_all(names)?;
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if all.len() > cache.names.len() {
            cache.ids = all
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as u32))
                .collect();
            cache.names = all;
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn name(&self, id: u32) -> Option<String> {
        self.read().names.get(id as usize).cloned()
    }

    /// Adds entries committed by a write transaction (ids following the copy's);
    /// anything else is left for the next [`VolumeTable::reload`].
    pub(super) fn publish(&self, new: Vec<(u32, String)>) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        for (id, name) in new {
            if id as usize == cache.names.len() {
                cache.ids.insert(name.clone(), id);
                cache.names.push(name);
            }
        }
    }

    /// Decodes a stored record of `key` (legacy or compact) read in a read transaction
    /// `txn`, whose volume table resolves ids the copy does not have yet.
    pub(super) fn decode_read(
        &self,
        txn: &redb::ReadTransaction,
        key: &[u8],
        value: &[u8],
    ) -> Result<Record, IndexError> {
        self.decode_with(key, value, || {
            let names = txn.open_table(NAMES).map_err(store_err)?;
            self.reload(&names)?;
            Ok(None)
        })
    }

    /// Decodes with the copy; on an unknown id, calls `refresh`, which either updated
    /// the copy (`None`) or returns the names to use (uncommitted ones included).
    fn decode_with(
        &self,
        key: &[u8],
        value: &[u8],
        refresh: impl FnOnce() -> Result<Option<Vec<String>>, IndexError>,
    ) -> Result<Record, IndexError> {
        let corrupt = |source| IndexError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            source,
        };
        if value.first() != Some(&compact::VERSION_COMPACT) {
            return Record::decode_legacy(value).map_err(corrupt);
        }
        let first = {
            let cache = self.read();
            compact::decode(value, |id| cache.names.get(id as usize).cloned())
        };
        match first {
            Err(DecodeError(compact::UNKNOWN_VOLUME)) => match refresh()? {
                Some(names) => compact::decode(value, |id| names.get(id as usize).cloned()),
                None => compact::decode(value, |id| self.name(id)),
            }
            .map_err(corrupt),
            other => other.map_err(corrupt),
        }
    }
}

/// Every name of a volume table, by id; ids must be dense.
fn read_all(names: &impl ReadableTable<u32, &'static str>) -> Result<Vec<String>, IndexError> {
    let mut all = Vec::new();
    for item in names.iter().map_err(store_err)? {
        let (id, name) = item.map_err(store_err)?;
        if id.value() as usize != all.len() {
            return Err(IndexError::Corrupt {
                key: format!("volume table id {}", id.value()),
                source: DecodeError("volume table ids are not dense"),
            });
        }
        all.push(name.value().to_string());
    }
    Ok(all)
}

/// The volume table inside one write transaction: encodes records (assigning ids to new
/// names) and decodes them (uncommitted names included). Once the transaction
/// committed, give [`Ids::finish`] to [`VolumeTable::publish`], so the in-memory copy
/// learns the new names.
pub struct Ids<'t, 'txn> {
    table: &'t VolumeTable,
    names: Table<'txn, u32, &'static str>,
    ids: Table<'txn, &'static str, u32>,
    new: Vec<(u32, String)>,
}

impl<'t, 'txn> Ids<'t, 'txn> {
    /// Opens the volume table of `txn`.
    pub(super) fn open(
        table: &'t VolumeTable,
        txn: &'txn WriteTransaction,
    ) -> Result<Self, IndexError> {
        Ok(Ids {
            table,
            names: txn.open_table(NAMES).map_err(store_err)?,
            ids: txn.open_table(IDS).map_err(store_err)?,
            new: Vec::new(),
        })
    }

    /// The id of `name`, assigned (next free id) if it has none.
    pub(super) fn id(&mut self, name: &str) -> Result<u32, IndexError> {
        if let Some(&id) = self.table.read().ids.get(name) {
            return Ok(id);
        }
        if let Some(id) = self.ids.get(name).map_err(store_err)? {
            return Ok(id.value());
        }
        let id = u32::try_from(self.names.len().map_err(store_err)?).map_err(|_| {
            IndexError::Corrupt {
                key: name.to_string(),
                source: DecodeError("volume table full"),
            }
        })?;
        self.names.insert(id, name).map_err(store_err)?;
        self.ids.insert(name, id).map_err(store_err)?;
        self.new.push((id, name.to_string()));
        Ok(id)
    }

    /// Encodes `record` compactly.
    pub(super) fn encode(&mut self, record: &Record) -> Result<Vec<u8>, IndexError> {
        compact::encode(record, |name| self.id(name))
    }

    /// Decodes a stored record of `key` (legacy or compact).
    pub(super) fn decode(&self, key: &[u8], value: &[u8]) -> Result<Record, IndexError> {
        self.table
            .decode_with(key, value, || read_all(&self.names).map(Some))
    }

    /// The names this transaction added, for [`VolumeTable::publish`] once it
    /// committed; drops the tables.
    pub(super) fn finish(self) -> Vec<(u32, String)> {
        self.new
    }
}

/// Creates the volume tables if missing and loads `table` from them.
pub(super) fn init(txn: &WriteTransaction, table: &VolumeTable) -> Result<(), IndexError> {
    txn.open_table(IDS).map_err(store_err)?;
    let names = txn.open_table(NAMES).map_err(store_err)?;
    table.reload(&names)
}

/// A volume table read from a snapshot (id → name), to decode the snapshot's records.
#[derive(Debug, Default)]
pub struct Foreign {
    names: Vec<String>,
}

impl Foreign {
    /// Adds the entry of a snapshot item; ids must come in order from 0.
    pub(super) fn push(&mut self, id: u32, name: String) -> Result<(), DecodeError> {
        if id as usize != self.names.len() {
            return Err(DecodeError("snapshot volume table ids are not dense"));
        }
        self.names.push(name);
        Ok(())
    }

    /// Decodes a snapshot record of `key` with this table.
    pub(super) fn decode(&self, key: &[u8], value: &[u8]) -> Result<Record, IndexError> {
        let decoded = if value.first() == Some(&compact::VERSION_COMPACT) {
            compact::decode(value, |id| self.names.get(id as usize).cloned())
        } else {
            Record::decode_legacy(value)
        };
        decoded.map_err(|source| IndexError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            source,
        })
    }
}

/// Visits every entry of the volume table read in `txn` (id order).
pub(super) fn each(
    txn: &redb::ReadTransaction,
    mut visit: impl FnMut(u32, &str) -> Result<(), IndexError>,
) -> Result<(), IndexError> {
    let names = txn.open_table(NAMES).map_err(store_err)?;
    for item in names.iter().map_err(store_err)? {
        let (id, name) = item.map_err(store_err)?;
        visit(id.value(), name.value())?;
    }
    Ok(())
}
