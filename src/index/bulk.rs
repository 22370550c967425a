//! Bulk loading of a new, standalone index: records written in key order, many per
//! write transaction, straight into the records table — no [`super::Command`]s, no
//! writer thread, no read of the previous record (there is none). Used by rebuild and
//! the scale benchmark to fill an empty index fast and in memory bounded by the batch
//! size and the cache given to [`BulkLoad::create`].
//!
//! The counters ([`super::Counts`] and the per-volume counts) are summed as records go
//! in and stored by [`BulkLoad::finish`], which also marks the index cleanly closed. A
//! load that stops before `finish` leaves an index without up-to-date counters (the next
//! [`super::Index::open`] would recompute them by one scan); rebuild tells the operator
//! to delete such a partial index and run again.
//!
//! Records are written in the compact encoding (`super::compact`), with the volume
//! table in the same transactions, and the new index is marked migrated; only a
//! benchmark asks for the legacy encoding ([`BulkLoad::legacy`]), to measure it or to
//! make an index for the migration to work on.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTableMetadata};

use super::counts::{self, Counts, VolumeDeltas};
use super::record::Record;
use super::volume_table::{Ids, VolumeTable};
use super::{store_err, IndexError, COUNTS, KEYS, META};

/// A new index being filled in key order; see the module docs.
pub struct BulkLoad {
    db: Database,
    dir: PathBuf,
    counts: Counts,
    volumes: VolumeDeltas,
    /// The last key written: every later key must sort after it.
    last: Option<Vec<u8>>,
    written: u64,
    /// The volume table written so far.
    vt: VolumeTable,
    /// Write the legacy encoding (versions 1–5) instead of the compact one.
    legacy: bool,
}

impl BulkLoad {
    /// Creates a new index in `dir`, which must not hold one, with a page cache of
    /// `cache_bytes` (the memory the load may use besides the batches it is given).
    pub fn create(dir: &Path, cache_bytes: usize) -> Result<BulkLoad, IndexError> {
        let path = dir.join("index.redb");
        let open_err = |source: redb::Error| IndexError::Open {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        if path.exists() {
            return Err(open_err(redb::Error::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a bulk load needs a new index, and this one exists",
            ))));
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| open_err(e.into()))?;
        super::clear_clean_marker(dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        let vt = VolumeTable::default();
        super::init_tables(&db, &vt)?;
        Ok(BulkLoad {
            db,
            dir: dir.to_path_buf(),
            counts: Counts::default(),
            volumes: VolumeDeltas::new(),
            last: None,
            written: 0,
            vt,
            legacy: false,
        })
    }

    /// Writes records in the legacy encoding (versions 1–5, as `hoard` did before the
    /// compact one) and leaves the index to be migrated when it is opened: for the
    /// benchmark comparing both and for tests of the migration.
    pub fn legacy(mut self) -> Result<BulkLoad, IndexError> {
        self.legacy = true;
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut meta = txn.open_table(META).map_err(store_err)?;
            meta.remove(super::migrate::DONE).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)?;
        Ok(self)
    }

    /// Writes `batch` in one transaction. Keys must be strictly ascending, within the
    /// batch and after every key written before; a batch that is not is refused whole.
    pub fn append(&mut self, batch: &[(Vec<u8>, Record)]) -> Result<(), IndexError> {
        let mut prev = self.last.as_deref();
        for (key, _) in batch {
            if prev.is_some_and(|p| p >= key.as_slice()) {
                return Err(IndexError::Store(redb::Error::Io(std::io::Error::other(
                    format!(
                        "bulk load: key {:?} is not after the previous one",
                        String::from_utf8_lossy(key)
                    ),
                ))));
            }
            prev = Some(key);
        }
        let txn = self.db.begin_write().map_err(store_err)?;
        let names = {
            let mut table = txn.open_table(KEYS).map_err(store_err)?;
            let mut ids = Ids::open(&self.vt, &txn)?;
            for (key, record) in batch {
                let encoded = match self.legacy {
                    true => record.encode_legacy(),
                    false => ids.encode(record)?,
                };
                table
                    .insert(key.as_slice(), encoded.as_slice())
                    .map_err(store_err)?;
            }
            ids.finish()
        };
        txn.commit().map_err(store_err)?;
        self.vt.publish(names);
        for (key, record) in batch {
            self.counts.replace(None, Some(record));
            counts::volume_deltas(&mut self.volumes, key, None, Some(record));
        }
        if let Some((key, _)) = batch.last() {
            self.last = Some(key.clone());
        }
        self.written += batch.len() as u64;
        Ok(())
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Stores the counters, compacts the file (frees the pages the load's transactions
    /// replaced), closes the database and marks it cleanly closed; returns the number of
    /// records and the counts.
    pub fn finish(self) -> Result<(u64, Counts), IndexError> {
        let BulkLoad {
            db,
            dir,
            counts,
            volumes,
            written,
            ..
        } = self;
        let txn = db.begin_write().map_err(store_err)?;
        {
            let table = txn.open_table(KEYS).map_err(store_err)?;
            let stored = table.len().map_err(store_err)?;
            if stored != written {
                return Err(IndexError::Store(redb::Error::Io(std::io::Error::other(
                    format!("bulk load: {stored} records stored, {written} written"),
                ))));
            }
            let mut meta = txn.open_table(META).map_err(store_err)?;
            meta.insert(COUNTS, counts.encode().as_slice())
                .map_err(store_err)?;
            super::clear_volume_counts(&mut meta)?;
            super::write_volume_deltas(&mut meta, &volumes)?;
        }
        txn.commit().map_err(store_err)?;
        // The load's transactions left the pages they replaced free inside the file
        // (about a third of it); give them back, so the file is the size of the tree.
        let mut db = db;
        while db.compact().map_err(|e| store_err(redb::Error::from(e)))? {}
        drop(db);
        super::set_clean_marker(&dir).map_err(|e| IndexError::Store(redb::Error::Io(e)))?;
        Ok((written, counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Index, State};

    fn live(volumes: &[&str], size: u64) -> Record {
        Record {
            state: State::Live,
            volumes: volumes.iter().map(|v| v.to_string()).collect(),
            size,
            md5: None,
            changed_ms: 7,
            missing: Vec::new(),
            stale: Vec::new(),
            owner: 0,
            meta: Vec::new(),
            inline: None,
            gen: 0,
        }
    }

    #[tokio::test]
    async fn loads_records_and_counts_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut bulk = BulkLoad::create(dir.path(), 4 << 20).unwrap();
        let first: Vec<(Vec<u8>, Record)> = (0..100u32)
            .map(|i| (format!("/k/{i:05}").into_bytes(), live(&["a:1", "b:2"], 10)))
            .collect();
        bulk.append(&first).unwrap();
        // Out of order (before the last key written): refused, nothing written.
        let early = vec![(b"/a".to_vec(), live(&["a:1"], 1))];
        assert!(bulk.append(&early).is_err());
        let unsorted = vec![
            (b"/z/2".to_vec(), live(&["a:1"], 1)),
            (b"/z/1".to_vec(), live(&["a:1"], 1)),
        ];
        assert!(bulk.append(&unsorted).is_err());
        bulk.append(&[(b"/z".to_vec(), live(&["a:1/sv01"], 5))])
            .unwrap();
        assert_eq!(bulk.written(), 101);
        let (n, counts) = bulk.finish().unwrap();
        assert_eq!((n, counts.live, counts.bytes), (101, 101, 1005));
        assert!(dir.path().join(super::super::CLEAN_MARKER).exists());

        let index = Index::open(dir.path()).unwrap();
        assert!(!index.recovered());
        assert_eq!(index.counts().live, 101);
        assert_eq!(
            index.get(b"/k/00042").unwrap(),
            Some(live(&["a:1", "b:2"], 10))
        );
        assert_eq!(index.get(b"/a").unwrap(), None);
        let per_volume = index.volume_counts().unwrap();
        assert_eq!(
            (per_volume["a:1"].keys, per_volume["a:1"].bytes),
            (101, 1005)
        );
        assert_eq!(per_volume["b:2"].keys, 100);
        index.close();
        assert!(BulkLoad::create(dir.path(), 1 << 20).is_err(), "exists");
    }
}
