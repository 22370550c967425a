//! The records table of one write transaction seen as a [`RecordMap`]: records are
//! encoded and decoded through the volume table ([`Ids`]), and [`Counts`] and the
//! per-volume counters follow every change.

use redb::ReadableTable;

use super::shrink::Shadow;
use super::volume_table::Ids;
use super::{counts, store_err, Counts, IndexError, Record, RecordMap, META};

/// The records table seen as a [`RecordMap`], keeping [`Counts`] up to date.
pub(super) struct TableMap<'a, 'txn> {
    pub(super) table: &'a mut redb::Table<'txn, &'static [u8], &'static [u8]>,
    /// The migration's partial copy, which every change up to its cursor goes to too.
    pub(super) shadow: Option<&'a mut Shadow<'txn>>,
    pub(super) counts: Counts,
    /// Index-wide values written (`None`: removed) by the commands, stored with the
    /// transaction.
    pub(super) meta: Vec<(String, Option<Vec<u8>>)>,
    /// Reads index-wide values not written in this batch.
    pub(super) reader: &'a super::db::Db,
    /// Changes of the per-volume counters.
    pub(super) volumes: counts::VolumeDeltas,
    /// The volume table, to encode and decode records.
    pub(super) ids: Ids<'a, 'txn>,
    /// A command asked for the batch to be durable ([`RecordMap::must_persist`]).
    pub(super) persist: bool,
}

impl RecordMap for TableMap<'_, '_> {
    type Error = IndexError;
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, IndexError> {
        match self.table.get(key).map_err(store_err)? {
            Some(v) => self.ids.decode(key, v.value()).map(Some),
            None => Ok(None),
        }
    }
    fn put(&mut self, key: &[u8], record: &Record) -> Result<(), IndexError> {
        let encoded = self.ids.encode(record)?;
        if let Some(shadow) = self.shadow.as_mut() {
            shadow.put(key, &encoded)?;
        }
        let old = self
            .table
            .insert(key, encoded.as_slice())
            .map_err(store_err)?
            .map(|v| self.ids.decode(key, v.value()))
            .transpose()?;
        self.counts.replace(old.as_ref(), Some(record));
        counts::volume_deltas(&mut self.volumes, key, old.as_ref(), Some(record));
        Ok(())
    }
    fn get_meta(&mut self, name: &str) -> Result<Option<Vec<u8>>, IndexError> {
        if let Some((_, v)) = self.meta.iter().rev().find(|(n, _)| n == name) {
            return Ok(v.clone());
        }
        let txn = self.reader.begin_read().map_err(store_err)?;
        let meta = txn.open_table(META).map_err(store_err)?;
        Ok(meta
            .get(name)
            .map_err(store_err)?
            .map(|v| v.value().to_vec()))
    }
    fn put_meta(&mut self, name: &str, value: Option<Vec<u8>>) -> Result<(), IndexError> {
        self.meta.push((name.to_string(), value));
        Ok(())
    }
    fn must_persist(&mut self) {
        self.persist = true;
    }
    fn remove(&mut self, key: &[u8]) -> Result<(), IndexError> {
        if let Some(shadow) = self.shadow.as_mut() {
            shadow.remove(key)?;
        }
        let old = self
            .table
            .remove(key)
            .map_err(store_err)?
            .map(|v| self.ids.decode(key, v.value()))
            .transpose()?;
        self.counts.replace(old.as_ref(), None);
        counts::volume_deltas(&mut self.volumes, key, old.as_ref(), None);
        Ok(())
    }
}
