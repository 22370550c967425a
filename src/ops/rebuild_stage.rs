//! The staging area of a rebuild: every replica file found on the volumes, kept on disk
//! in a temporary redb database (`rebuild-staging.redb` in the new index's directory)
//! keyed by `(key, location)`, so that a key's replicas — listed from different volumes
//! at different times, in hashed-directory order — end up next to each other, and the
//! keys come out sorted. Files are added in large transactions; memory is the page
//! cache given to [`Stage::create`] plus the batch being added, whatever the key count.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::listing::Found;
use super::OpsError;

/// `(key, location)` → `(size, mtime_ms, generation)`: the newest generation's file
/// (`Record::gen`) when a location holds several.
const FILES: TableDefinition<(&[u8], &str), (u64, u64, u64)> = TableDefinition::new("files");

/// File name of the staging database, in the new index's directory.
pub const STAGE_FILE: &str = "rebuild-staging.redb";

/// What the volumes hold for one key.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// `(location, size, generation)` per replica file.
    pub replicas: Vec<(String, u64, u64)>,
    /// The newest modification time among them, unix ms.
    pub mtime_ms: u64,
}

/// The staging database; removed by [`Stage::remove`] (and replaced by the next
/// [`Stage::create`] if a rebuild was killed).
pub struct Stage {
    db: Database,
    path: PathBuf,
}

fn err(what: &str, e: impl Into<redb::Error>) -> OpsError {
    OpsError::Invalid(format!("rebuild staging area: {what}: {}", e.into()))
}

impl Stage {
    /// Creates an empty staging database in `dir` with `cache_bytes` of page cache.
    pub fn create(dir: &Path, cache_bytes: usize) -> Result<Stage, OpsError> {
        let path = dir.join(STAGE_FILE);
        let file_err = |source| OpsError::File {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(file_err)?;
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!("removed the staging area of an earlier, unfinished rebuild"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_err(e)),
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| err("create", e))?;
        Ok(Stage { db, path })
    }

    /// Adds `files` in one transaction (a file seen twice is kept once).
    pub fn add(&self, files: &[Found]) -> Result<(), OpsError> {
        let mut txn = self.db.begin_write().map_err(|e| err("write", e))?;
        // A crash loses the staging area anyway: no need to sync each batch.
        txn.set_durability(redb::Durability::None)
            .map_err(|e| err("write", e))?;
        {
            let mut table = txn.open_table(FILES).map_err(|e| err("write", e))?;
            for f in files {
                let at = (f.key.as_slice(), f.location.as_str());
                let newer = table
                    .get(at)
                    .map_err(|e| err("read", e))?
                    .is_none_or(|seen| seen.value().2 <= f.gen);
                if newer {
                    table
                        .insert(at, (f.size, f.mtime_ms, f.gen))
                        .map_err(|e| err("write", e))?;
                }
            }
        }
        txn.commit().map_err(|e| err("commit", e))
    }

    /// Calls `each` for every key in key order with what was found of it, until it
    /// returns false. One read transaction, streaming. Blocking.
    pub fn for_each_key(
        &self,
        mut each: impl FnMut(Vec<u8>, Seen) -> bool,
    ) -> Result<(), OpsError> {
        let txn = self.db.begin_read().map_err(|e| err("read", e))?;
        let table = match txn.open_table(FILES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(err("read", e)),
        };
        let mut current: Option<(Vec<u8>, Seen)> = None;
        for item in table.iter().map_err(|e| err("read", e))? {
            let (k, v) = item.map_err(|e| err("read", e))?;
            let (key, location) = k.value();
            let (size, mtime_ms, gen) = v.value();
            if current.as_ref().is_some_and(|(c, _)| c.as_slice() != key) {
                if let Some((c, seen)) = current.take() {
                    if !each(c, seen) {
                        return Ok(());
                    }
                }
            }
            let (_, seen) = current.get_or_insert_with(|| (key.to_vec(), Seen::default()));
            seen.replicas.push((location.to_string(), size, gen));
            seen.mtime_ms = seen.mtime_ms.max(mtime_ms);
        }
        if let Some((c, seen)) = current {
            each(c, seen);
        }
        Ok(())
    }

    /// The number of distinct keys staged (one pass). Blocking.
    pub fn count_keys(&self) -> Result<u64, OpsError> {
        let mut n = 0;
        self.for_each_key(|_, _| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    /// Closes and deletes the staging database.
    pub fn remove(self) -> Result<(), OpsError> {
        let Stage { db, path } = self;
        drop(db);
        std::fs::remove_file(&path).map_err(|source| OpsError::File { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(key: &str, location: &str, size: u64, mtime_ms: u64) -> Found {
        Found {
            location: location.into(),
            key: key.as_bytes().to_vec(),
            gen: 0,
            size,
            mtime_ms,
        }
    }

    #[test]
    fn groups_replicas_by_key_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let stage = Stage::create(dir.path(), 1 << 20).unwrap();
        stage
            .add(&[found("/b", "v2:1", 3, 5), found("/a", "v2:1", 1, 9)])
            .unwrap();
        stage
            .add(&[
                found("/b", "v1:1", 3, 7),
                found("/a", "v1:1", 2, 4),
                found("/b", "v1:1", 3, 7),
            ])
            .unwrap();
        assert_eq!(stage.count_keys().unwrap(), 2);
        let mut got = Vec::new();
        stage
            .for_each_key(|k, s| {
                got.push((String::from_utf8(k).unwrap(), s.replicas, s.mtime_ms));
                true
            })
            .unwrap();
        let loc = |l: &str, s| (l.to_string(), s, 0);
        assert_eq!(
            got,
            [
                ("/a".into(), vec![loc("v1:1", 2), loc("v2:1", 1)], 9),
                ("/b".into(), vec![loc("v1:1", 3), loc("v2:1", 3)], 7),
            ]
        );
        // A location holding two generations of a key: the newest is kept.
        let gen = |g, size| Found {
            gen: g,
            ..found("/c", "v1:1", size, 1)
        };
        stage.add(&[gen(7, 70), gen(9, 90), gen(8, 80)]).unwrap();
        let mut c = Vec::new();
        stage
            .for_each_key(|k, s| {
                if k == b"/c" {
                    c = s.replicas;
                }
                true
            })
            .unwrap();
        assert_eq!(c, [("v1:1".to_string(), 90, 9)]);
        stage.remove().unwrap();
        assert!(!dir.path().join(STAGE_FILE).exists());
        // An empty stage has no keys.
        let stage = Stage::create(dir.path(), 1 << 20).unwrap();
        assert_eq!(stage.count_keys().unwrap(), 0);
    }
}
