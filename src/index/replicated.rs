//! What a replicated index needs from the local store: a [`Replicator`] that commands
//! and linearizable reads go through (implemented by the consensus layer, `crate::raft`,
//! which sits above this one), and the state-machine side — applying committed commands
//! with the log position they came from, and exporting or importing the whole index as
//! a snapshot.
//!
//! Applied commands are committed without fsync: the replicated log is durable, and
//! [`Index::sync`] makes the state durable before a snapshot lets the log be purged.

use std::io::{Read, Write};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use redb::{Durability, ReadableTable};

use super::snapfile::{snapshot_err, SnapReader, SnapWriter};
use super::volume_table::{self, Foreign, Ids};
use super::{apply, store_err, Applied, Command, Counts, Index, IndexError, TableMap};
use super::{KEYS, META};

/// Takes commands into a replicated log and serves linearizable reads.
pub trait Replicator: Send + Sync + 'static {
    /// Proposes `cmd`; its outcome, once this node has applied it.
    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<Applied, IndexError>>;
    /// Completes once this node's copy reflects every command acknowledged anywhere
    /// before the call: a read after it is linearizable.
    fn read_barrier(&self) -> BoxFuture<'_, Result<(), IndexError>>;
}

/// Values of named `meta` entries, in the order asked (`None`: absent).
pub type MetaValues = Vec<Option<Vec<u8>>>;

/// Snapshot item key prefix of a volume table entry: `\0vol:` and the id (u32,
/// little-endian); the value is the name. They come before the records, which are in
/// the exporter's encoding and refer to them.
const SNAP_VOLUME: &[u8] = b"\0vol:";

impl Index {
    /// Routes every later [`Index::apply`] through `replicator`. Set once, at start.
    pub fn replicate_with(&self, replicator: Arc<dyn Replicator>) {
        if self.replicator.set(replicator).is_err() {
            tracing::warn!("index replicator set twice; keeping the first");
        }
    }

    /// True when commands go through a replicated log (an index cluster).
    pub fn is_replicated(&self) -> bool {
        self.replicator.get().is_some()
    }

    /// Reads `key` linearizably: after a read barrier when the index is replicated.
    pub async fn get_linearizable(&self, key: &[u8]) -> Result<Option<super::Record>, IndexError> {
        self.read_barrier().await?;
        self.get(key)
    }

    /// Waits for a read barrier when the index is replicated; at once otherwise.
    pub async fn read_barrier(&self) -> Result<(), IndexError> {
        match self.replicator.get() {
            Some(r) => r.read_barrier().await,
            None => Ok(()),
        }
    }

    /// A value of the index-wide `meta` table (the replicated state's log position…).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, IndexError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let meta = txn.open_table(META).map_err(store_err)?;
        Ok(meta
            .get(name)
            .map_err(store_err)?
            .map(|v| v.value().to_vec()))
    }

    /// The cluster's background job: its record (JSON) and its owner (`""`: none
    /// running), as set by `Command::SetJob`.
    pub fn job(&self) -> Result<(Option<String>, String), IndexError> {
        let text = |v: Option<Vec<u8>>| v.map(|b| String::from_utf8_lossy(&b).into_owned());
        let record = text(self.meta(super::command::JOB_META)?);
        let owner = text(self.meta(super::command::JOB_OWNER_META)?).unwrap_or_default();
        Ok((record, owner))
    }

    /// Ids of index cluster members removed for good (`Command::RetireMember`).
    pub fn retired_members(&self) -> Result<Vec<u64>, IndexError> {
        let json = self.meta(super::command::RETIRED_META)?;
        Ok(super::command::retired_members(json.as_deref()))
    }

    /// Applies committed commands in order (`None`: a log entry without one) in one
    /// transaction that also stores `state` in `meta`; the outcome of each. Not synced:
    /// the log is durable. Blocking.
    pub fn apply_committed(
        &self,
        batch: &[Option<Command>],
        state: &[(&str, Vec<u8>)],
    ) -> Result<Vec<Option<Applied>>, IndexError> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut txn = self.db.begin_write().map_err(store_err)?;
        txn.set_durability(Durability::None).map_err(store_err)?;
        let (results, after, names) = {
            let mut tables = super::shrink::open_write(&txn)?;
            let mut map = TableMap {
                table: &mut tables.main,
                shadow: tables.shadow.as_mut(),
                counts: *counts,
                meta: Vec::new(),
                reader: &self.db,
                volumes: super::counts::VolumeDeltas::new(),
                ids: Ids::open(&self.vt, &txn)?,
                // The log is durable; nothing here is synced.
                persist: false,
            };
            let mut feed = super::feed::Hook::open(&txn)?;
            let mut results = Vec::with_capacity(batch.len());
            for cmd in batch {
                results.push(match cmd {
                    Some(cmd) => {
                        let applied = match feed.before(&mut map, cmd)? {
                            Some(rejection) => Err(rejection),
                            None => apply(&mut map, cmd)?,
                        };
                        feed.after(cmd, &applied)?;
                        Some(applied)
                    }
                    None => None,
                });
            }
            drop(feed);
            let after = map.counts;
            let mut meta = txn.open_table(META).map_err(store_err)?;
            meta.insert(super::COUNTS, after.encode().as_slice())
                .map_err(store_err)?;
            for (name, value) in state {
                meta.insert(*name, value.as_slice()).map_err(store_err)?;
            }
            super::write_meta(&mut meta, &map.meta)?;
            (results, after, map.ids.finish())
        };
        txn.commit().map_err(store_err)?;
        self.vt.publish(names);
        *counts = after;
        drop(counts);
        if batch
            .iter()
            .any(|c| matches!(c, Some(Command::SetVolumes { .. })))
        {
            self.refresh_volumes();
        }
        Ok(results)
    }

    /// Makes everything applied so far durable (one synced, empty commit). Blocking.
    pub fn sync(&self) -> Result<(), IndexError> {
        let txn = self.db.begin_write().map_err(store_err)?;
        txn.commit().map_err(store_err)
    }

    /// Writes every record to `out` (`u32 key length, key, u32 record length, record`,
    /// little-endian, key order, framed as [`super::snapfile`] describes: a versioned
    /// header, and a trailer with the item count and a checksum) from one read transaction, which also reads the `meta`
    /// values named in `names` (so they describe exactly the records written); the
    /// number of records and those values. The replicated meta entries (volume list,
    /// job, retired members) come first, and front-ends' entries (`SetFrontend`) last,
    /// as items whose key is a NUL byte and the entry's name (no record key starts
    /// so). Blocking.
    pub fn export(
        &self,
        out: &mut impl Write,
        names: &[&str],
    ) -> Result<(u64, MetaValues), IndexError> {
        let (txn, records) = self.read_records()?;
        let meta = txn.open_table(META).map_err(store_err)?;
        let values = names
            .iter()
            .map(|n| Ok(meta.get(*n).map_err(store_err)?.map(|v| v.value().to_vec())))
            .collect::<Result<Vec<_>, IndexError>>()?;
        let mut w = SnapWriter::new(out)?;
        for name in super::command::REPLICATED_META {
            if let Some(v) = meta.get(*name).map_err(store_err)? {
                let key = [b"\0", name.as_bytes()].concat();
                w.pair(&key, v.value())?;
            }
        }
        // The change feed's tables (`super::feed`), as items of their own prefixes.
        super::feed::export(&txn, &mut |key: &[u8], value: &[u8]| w.pair(key, value))?;
        // The volume table the records' compact encoding refers to.
        volume_table::each(&txn, |id, name| {
            let key = [SNAP_VOLUME, &id.to_le_bytes()].concat();
            w.pair(&key, name.as_bytes())
        })?;
        let table = records;
        let mut n = 0;
        for item in table.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            w.pair(k.value(), v.value())?;
            n += 1;
        }
        // Front-ends' entries (`Command::SetFrontend`) follow the records, as items
        // whose key is a NUL byte and the entry's name (no record key starts so).
        let prefix = super::command::FRONTEND_META_PREFIX;
        for item in meta
            .range::<&str>(prefix..)
            .map_err(store_err)?
            .take_while(|item| {
                item.as_ref()
                    .map_or(true, |(k, _)| k.value().starts_with(prefix))
            })
        {
            let (k, v) = item.map_err(store_err)?;
            let key = [b"\0", k.value().as_bytes()].concat();
            w.pair(&key, v.value())?;
        }
        w.finish()?;
        Ok((n, values))
    }

    /// Replaces every record with those read from `input` (as written by
    /// [`Index::export`]) and stores `state` in `meta`, in one synced transaction,
    /// committed only once the whole snapshot was read and its trailer matched: a cut,
    /// altered or unversioned snapshot is refused with the index untouched;
    /// counts are recomputed. Records are decoded with the snapshot's volume table and
    /// stored in this index's compact encoding (a snapshot of legacy records is
    /// migrated on the way). Blocking.
    pub fn import(
        &self,
        input: &mut impl Read,
        state: &[(&str, Vec<u8>)],
    ) -> Result<u64, IndexError> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.db.begin_write().map_err(store_err)?;
        let mut fresh = Counts::default();
        let mut volumes = super::counts::VolumeDeltas::new();
        let mut n = 0;
        let mut entries = Vec::new();
        let names = {
            super::shrink::reset(&txn)?;
            let mut table = txn.open_table(KEYS).map_err(store_err)?;
            let mut ids = Ids::open(&self.vt, &txn)?;
            let mut foreign = Foreign::default();
            let mut feed = super::feed::Importer::open(&txn)?;
            // Nothing is committed unless the snapshot reads to its trailer and
            // matches it (count and checksum): `next_pair` fails otherwise.
            let mut reader = SnapReader::new(input)?;
            while let Some((key, value)) = reader.next_pair()? {
                if feed.item(&key, &value)? {
                    continue;
                }
                if let Some(id) = key.strip_prefix(SNAP_VOLUME) {
                    let id = <[u8; 4]>::try_from(id)
                        .map_err(|_| snapshot_err("bad volume table entry"))?;
                    let name = String::from_utf8(value)
                        .map_err(|_| snapshot_err("volume name is not UTF-8"))?;
                    foreign
                        .push(u32::from_le_bytes(id), name)
                        .map_err(|e| snapshot_err(&e.to_string()))?;
                    continue;
                }
                if let Some(name) = key.strip_prefix(b"\0") {
                    let name = String::from_utf8(name.to_vec())
                        .ok()
                        .filter(|n| {
                            n.starts_with(super::command::FRONTEND_META_PREFIX)
                                || super::command::REPLICATED_META.contains(&n.as_str())
                        })
                        .ok_or_else(|| snapshot_err("bad meta entry name"))?;
                    entries.push((name, Some(value)));
                    continue;
                }
                let record = foreign.decode(&key, &value)?;
                fresh.replace(None, Some(&record));
                super::counts::volume_deltas(&mut volumes, &key, None, Some(&record));
                table
                    .insert(key.as_slice(), ids.encode(&record)?.as_slice())
                    .map_err(store_err)?;
                n += 1;
            }
            let mut meta = txn.open_table(META).map_err(store_err)?;
            meta.insert(super::COUNTS, fresh.encode().as_slice())
                .map_err(store_err)?;
            super::clear_volume_counts(&mut meta)?;
            super::write_volume_deltas(&mut meta, &volumes)?;
            for (name, value) in state {
                meta.insert(*name, value.as_slice()).map_err(store_err)?;
            }
            // The snapshot's replicated entries replace this index's.
            let prefix = super::command::FRONTEND_META_PREFIX;
            meta.retain_in::<&str, _>(prefix.., |k, _| !k.starts_with(prefix))
                .map_err(store_err)?;
            for name in super::command::REPLICATED_META {
                meta.remove(*name).map_err(store_err)?;
            }
            super::write_meta(&mut meta, &entries)?;
            // Every record is now compact.
            super::migrate::mark_done(&mut meta)?;
            ids.finish()
        };
        txn.commit().map_err(store_err)?;
        self.vt.publish(names);
        self.migration_done();
        *counts = fresh;
        drop(counts);
        self.refresh_volumes();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::feed::FeedCommand;
    use crate::index::State;

    #[tokio::test]
    async fn export_then_import_restores_records_and_counts() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = Index::open(a.path()).unwrap();
        let begin = |k: &str| {
            Some(Command::Begin {
                key: k.as_bytes().to_vec(),
                volumes: vec!["v:1".into()],
                now_ms: 1,
                owner: 0,
                replace: false,
            })
        };
        let commit = Some(Command::Commit {
            gen: 0,
            key: b"/a".to_vec(),
            size: 7,
            md5: None,
            missing: Vec::new(),
            now_ms: 2,
            owner: 0,
            meta: Vec::new(),
        });
        let state = [("raft_applied", b"3".to_vec())];
        let retire = Some(Command::RetireMember { id: 3 });
        let frontend = |name: &str, value: &str| {
            Some(Command::SetFrontend {
                name: name.into(),
                value: Some(value.as_bytes().to_vec()),
                if_absent: true,
            })
        };
        source
            .apply_committed(&[frontend("s3/bucket/kept", "1")], &[])
            .unwrap();
        let feed = |f| Some(Command::Feed(f));
        let add = feed(FeedCommand::AddTarget {
            target: "http://b".into(),
        });
        let id = feed(FeedCommand::SetSiteId {
            id: "site-a".into(),
        });
        let out = source
            .apply_committed(
                &[add, id, begin("/a"), None, begin("/b"), commit, retire],
                &state,
            )
            .unwrap();
        assert_eq!(out[3], None);
        assert!(matches!(out[5], Some(Ok(Some(_)))));
        assert_eq!(source.meta("raft_applied").unwrap().unwrap(), b"3");
        let mut file = Vec::new();
        let (n, meta) = source.export(&mut file, &["raft_applied", "nope"]).unwrap();
        assert_eq!((n, meta), (2, vec![Some(b"3".to_vec()), None]));

        let target = Index::open(b.path()).unwrap();
        let job = Command::SetJob {
            record: "{}".into(),
            owner: "1/1".into(),
            expect: String::new(),
        };
        let other_id = Some(Command::Feed(FeedCommand::SetSiteId { id: "b".into() }));
        target
            .apply_committed(&[begin("/old"), Some(job), other_id], &[])
            .unwrap();
        assert_eq!(target.job().unwrap().1, "1/1");
        target
            .apply_committed(&[begin("/old"), frontend("s3/bucket/gone", "2")], &[])
            .unwrap();
        let n = target
            .import(&mut file.as_slice(), &[("raft_applied", b"4".to_vec())])
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(target.get(b"/old").unwrap(), None);
        assert_eq!(target.get(b"/a").unwrap().unwrap().state, State::Live);
        assert_eq!(target.get(b"/b").unwrap().unwrap().state, State::Writing);
        let c = target.counts();
        assert_eq!((c.live, c.writing, c.bytes), (1, 1, 7));
        assert_eq!(target.meta("raft_applied").unwrap().unwrap(), b"4");
        // Replicated meta entries travel with the records; others are dropped.
        assert_eq!(target.retired_members().unwrap(), vec![3]);
        assert_eq!(target.job().unwrap(), (None, String::new()));
        // Front-end entries travel with the snapshot and replace the target's.
        assert_eq!(target.frontend("s3/bucket/kept").unwrap().unwrap(), b"1");
        assert_eq!(target.frontend("s3/bucket/gone").unwrap(), None);
        // So does the change feed: entries, cursors, site id.
        let entries = target.feed_after(0, 10).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].seq, entries[0].key.as_slice()), (1, &b"/a"[..]));
        assert_eq!(target.feed_position("http://b").unwrap(), (1, Some(0)));
        assert_eq!(target.site_id().unwrap().as_deref(), Some("site-a"));
        // A truncated snapshot is refused, and the index is left as it was.
        let cut = &file[..file.len() - 3];
        assert!(target.import(&mut &cut[..], &[]).is_err());
        assert_eq!(target.counts().live, 1);
    }

    /// An index of `n` live records `/k/0…`, exported.
    fn snapshot_of(dir: &std::path::Path, n: usize) -> (Index, Vec<u8>) {
        let index = Index::open(dir).unwrap();
        let mut batch = Vec::new();
        for i in 0..n {
            let key = format!("/k/{i}").into_bytes();
            batch.push(Some(Command::Begin {
                key: key.clone(),
                volumes: vec!["v:1".into()],
                now_ms: 1,
                owner: 0,
                replace: false,
            }));
            batch.push(Some(Command::Commit {
                gen: 0,
                key,
                size: 1,
                md5: None,
                missing: Vec::new(),
                now_ms: 2,
                owner: 0,
                meta: Vec::new(),
            }));
        }
        index.apply_committed(&batch, &[]).unwrap();
        let mut file = Vec::new();
        index.export(&mut file, &[]).unwrap();
        (index, file)
    }

    /// Where the item of `key` (its length, then the key) starts in `file`.
    fn item_at(file: &[u8], key: &[u8]) -> usize {
        let needle = [&(key.len() as u32).to_le_bytes()[..], key].concat();
        file.windows(needle.len())
            .position(|w| w == needle.as_slice())
            .expect("key in the snapshot")
    }

    /// A target index holding one record `/old`, to see that a refused import leaves it.
    fn target_with_one_record(dir: &std::path::Path) -> Index {
        let target = Index::open(dir).unwrap();
        let begin = Command::Begin {
            key: b"/old".to_vec(),
            volumes: vec!["v:1".into()],
            now_ms: 1,
            owner: 0,
            replace: false,
        };
        target.apply_committed(&[Some(begin)], &[]).unwrap();
        target
    }

    #[test]
    fn a_snapshot_cut_at_an_item_boundary_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (_source, file) = snapshot_of(a.path(), 3);
        let target = target_with_one_record(b.path());
        // Cut just before the last record's key: every item before it is whole.
        let cut = &file[..item_at(&file, b"/k/2")];
        assert!(target.import(&mut &cut[..], &[]).is_err());
        assert!(target.get(b"/old").unwrap().is_some(), "index untouched");
        assert_eq!(target.get(b"/k/0").unwrap(), None);
        // The whole snapshot goes in.
        assert_eq!(target.import(&mut file.as_slice(), &[]).unwrap(), 3);
        assert_eq!(target.counts().live, 3);
    }

    #[test]
    fn a_snapshot_with_a_flipped_byte_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (_source, file) = snapshot_of(a.path(), 3);
        let target = target_with_one_record(b.path());
        // `/k/1` becomes `/k/9`: still a well-formed item.
        let mut bad = file.clone();
        bad[item_at(&file, b"/k/1") + 4 + 3] = b'9';
        assert!(target.import(&mut bad.as_slice(), &[]).is_err());
        assert!(target.get(b"/old").unwrap().is_some(), "index untouched");
        assert_eq!(target.get(b"/k/9").unwrap(), None);
    }
}
