//! The change feed: what asynchronous replication to other sites (`crate::sites`) ships.
//!
//! Three tables in the index's own redb file, written in the same transaction as the
//! command that caused them — by the single server's writer and by
//! `Index::apply_committed` alike, so in an index cluster they are replicated state and
//! travel in Raft snapshots (see [`export`], [`Importer`]):
//!
//! * `feed`: `seq → (commit ms, key)`, one entry per successful `Commit` (or
//!   `PutInline`), `Unlink` and
//!   `BeginDelete` of a *local* change (and per rollback of a failed write, which
//!   leaves the key absent), in commit order. Appended only while at least
//!   one target has a cursor (a store that replicates nowhere pays nothing). An entry
//!   says "this key changed"; the shipper sends the key's state *at shipping time*.
//! * `sites`: `"id"` → this site's id (random, set once); `"last"` → the last seq
//!   given; `"cursor:<target>"` → the last seq that target acknowledged. Entries at or
//!   below the lowest cursor are trimmed, a bounded number per [`FeedCommand::Advance`].
//! * `site_versions`: `key → Version`: the origin of the key's current state when it
//!   came from another site (origin site, origin commit ms), and local deletes' times
//!   (tombstones) while the feed is on. Last writer wins by `(ms, site id)`.
//!
//! A change applied on behalf of another site is announced first by
//! [`FeedCommand::Expect`]: the next `Commit`/`Unlink`/`BeginDelete` of that key then
//! records the remote version instead of a feed entry, so it is never shipped on (no
//! loops between sites replicating to each other).

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

pub use super::feed_command::{FeedCommand, Version};
use super::hlc::{self, Hlc};
use super::{store_err, Applied, Command, IndexError, Record, RecordMap, Rejection, State};

const FEED: TableDefinition<u64, &[u8]> = TableDefinition::new("feed");
const SITES: TableDefinition<&str, &[u8]> = TableDefinition::new("sites");
const VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("site_versions");

const ID: &str = "id";
const LAST: &str = "last";
/// The site's hybrid logical clock (`hlc::Clock`: u64 ms, u32 counter).
const CLOCK: &str = "hlc";
const CURSOR: &str = "cursor:";
/// Most feed entries one `Advance` trims.
const TRIM_BATCH: usize = 1024;

/// The version of a key's current state, as the conflict rule compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The version (site `""`: this site — resolve it with the site id to compare).
    pub version: Hlc,
    /// The key is absent (deleted, or deleting): the version is its tombstone's.
    pub deleted: bool,
}

impl Origin {
    /// The version made on this site.
    pub fn is_local(&self, here: &str) -> bool {
        self.version.site.is_empty() || self.version.site == here
    }
}

/// The version of a key's state given its record and stored version row (`None`:
/// never seen). A live or unlinked record's version is the row's when the row
/// describes it (`applied_ms` equals its `changed_ms`), else — a record from before
/// versions, or changed while nothing replicated — its `changed_ms` on this site, with
/// counter 0. Without such a record, the row is the key's tombstone.
pub fn origin(record: Option<&Record>, version: Option<&Version>) -> Option<Origin> {
    let version = version.filter(|v| !v.pending);
    let present = record.filter(|r| matches!(r.state, State::Live | State::Unlinked));
    let local = |ms| Hlc {
        ms,
        n: 0,
        site: String::new(),
    };
    match (present, version, record) {
        (Some(r), Some(v), _) if v.applied_ms == r.changed_ms => Some(Origin {
            version: v.hlc(),
            deleted: false,
        }),
        (Some(r), _, _) => Some(Origin {
            version: local(r.changed_ms),
            deleted: false,
        }),
        (None, Some(v), _) => Some(Origin {
            version: v.hlc(),
            deleted: true,
        }),
        (None, None, Some(r)) if r.state == State::Deleting => Some(Origin {
            version: local(r.changed_ms),
            deleted: true,
        }),
        (None, None, _) => None,
    }
}

/// One change to ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the feed.
    pub seq: u64,
    /// Commit time of the change, unix ms.
    pub ms: u64,
    /// The key that changed.
    pub key: Vec<u8>,
}

fn encode_entry(ms: u64, key: &[u8]) -> Vec<u8> {
    [&ms.to_le_bytes()[..], key].concat()
}

fn decode_entry(seq: u64, v: &[u8]) -> Entry {
    let mut ms = [0u8; 8];
    let n = v.len().min(8);
    ms[..n].copy_from_slice(&v[..n]);
    Entry {
        seq,
        ms: u64::from_le_bytes(ms),
        key: v.get(8..).unwrap_or_default().to_vec(),
    }
}

fn u64_of(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_le_bytes).unwrap_or(0)
}

fn version_of(v: &[u8]) -> Option<Version> {
    serde_json::from_slice(v).ok()
}

/// The feed tables inside one write transaction; [`Hook::after`] runs after each
/// command applied in it.
pub(super) struct Hook<'txn> {
    feed: Table<'txn, u64, &'static [u8]>,
    sites: Table<'txn, &'static str, &'static [u8]>,
    versions: Table<'txn, &'static [u8], &'static [u8]>,
    /// Whether any target has a cursor (computed on first need).
    enabled: Option<bool>,
}

impl<'txn> Hook<'txn> {
    /// Opens (creating if missing) the feed tables in `txn`.
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, IndexError> {
        Ok(Hook {
            feed: txn.open_table(FEED).map_err(store_err)?,
            sites: txn.open_table(SITES).map_err(store_err)?,
            versions: txn.open_table(VERSIONS).map_err(store_err)?,
            enabled: None,
        })
    }

    fn enabled(&mut self) -> Result<bool, IndexError> {
        if let Some(e) = self.enabled {
            return Ok(e);
        }
        let e = self
            .sites
            .range::<&str>(CURSOR.."cursor;")
            .map_err(store_err)?
            .next()
            .is_some();
        self.enabled = Some(e);
        Ok(e)
    }

    fn put_version(&mut self, key: &[u8], v: &Version) -> Result<(), IndexError> {
        let json = serde_json::to_vec(v).unwrap_or_default();
        self.versions
            .insert(key, json.as_slice())
            .map_err(store_err)?;
        Ok(())
    }

    fn get_u64(&self, name: &str) -> Result<Option<u64>, IndexError> {
        Ok(self
            .sites
            .get(name)
            .map_err(store_err)?
            .map(|v| u64_of(v.value())))
    }

    fn set_u64(&mut self, name: &str, n: u64) -> Result<(), IndexError> {
        self.sites
            .insert(name, &n.to_le_bytes()[..])
            .map_err(store_err)?;
        Ok(())
    }

    fn get_version(&self, key: &[u8]) -> Result<Option<Version>, IndexError> {
        Ok(self
            .versions
            .get(key)
            .map_err(store_err)?
            .and_then(|v| version_of(v.value())))
    }

    fn clock(&self) -> Result<hlc::Clock, IndexError> {
        let v = self.sites.get(CLOCK).map_err(store_err)?;
        Ok(v.map_or((0, 0), |v| {
            let b = v.value();
            let n = b.get(8..12).and_then(|n| n.try_into().ok());
            (
                u64_of(&b[..b.len().min(8)]),
                n.map_or(0, u32::from_le_bytes),
            )
        }))
    }

    fn set_clock(&mut self, c: hlc::Clock) -> Result<(), IndexError> {
        let b = [&c.0.to_le_bytes()[..], &c.1.to_le_bytes()[..]].concat();
        self.sites.insert(CLOCK, b.as_slice()).map_err(store_err)?;
        Ok(())
    }

    fn here(&self) -> Result<String, IndexError> {
        Ok(self
            .sites
            .get(ID)
            .map_err(store_err)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned())
            .unwrap_or_default())
    }

    /// The conflict rule, in the transaction that applies `cmd`: a [`Command::Remote`]
    /// whose version does not win against the key's current one is rejected
    /// ([`Rejection::Superseded`]) before it changes anything; one that wins moves this
    /// site's clock up to its version. Every other command passes.
    pub(super) fn before<M: RecordMap<Error = IndexError>>(
        &mut self,
        map: &mut M,
        cmd: &Command,
    ) -> Result<Option<Rejection>, IndexError> {
        let Command::Remote {
            key,
            origin: v,
            cmd,
        } = cmd
        else {
            return Ok(None);
        };
        let here = self.here()?;
        let record = map.get(key)?;
        let row = self.get_version(key)?;
        let held = origin(record.as_ref(), row.as_ref());
        let current = held.as_ref().map(|o| o.version.clone().resolved(&here));
        let incoming = v.clone().resolved(&here);
        // An unlinked state of the very version a live value has: the second half of a
        // shipped unlinked value (written, then unlinked).
        let unlink_of_same = matches!(cmd.as_deref(), Some(Command::Unlink { .. }))
            && current.as_ref() == Some(&incoming)
            && record.as_ref().is_some_and(|r| r.state == State::Live);
        let wins = incoming.wins(current.as_ref()) || unlink_of_same;
        if !wins {
            return Ok(Some(Rejection::Superseded));
        }
        if cmd.is_none() && held.is_some_and(|o| !o.deleted) {
            // A delete of a value held here is a delete, not a tombstone.
            return Ok(Some(Rejection::Changed));
        }
        let clock = hlc::observe(self.clock()?, &incoming);
        self.set_clock(clock)?;
        Ok(None)
    }

    /// Records what `cmd`, applied with `outcome`, means for replication: the version
    /// of the key's new state (a remote change's own; a local change's stamped from
    /// this site's clock, above the key's current version) and, for a local change
    /// while some target has a cursor, a feed entry.
    pub(super) fn after(&mut self, cmd: &Command, outcome: &Applied) -> Result<(), IndexError> {
        if super::command::is_gen_key(cmd.key()) {
            // An overwrite's intent or a retired value: the key's own record tells
            // the other sites what changed (its `Commit`).
            return Ok(());
        }
        let (key, ms, deleting, prev) = match (cmd, outcome) {
            (Command::Feed(f), _) => return self.feed_command(f),
            (_, Err(_)) => return Ok(()),
            (Command::Remote { key, origin, cmd }, _) => {
                return self.remote(key, origin, cmd.as_deref())
            }
            (
                Command::Commit { key, now_ms, .. }
                | Command::PutInline { key, now_ms, .. }
                | Command::Unlink { key, now_ms },
                Ok(prev),
            ) => (key, *now_ms, false, prev),
            (Command::BeginDelete { key, now_ms, .. }, Ok(prev)) => (key, *now_ms, true, prev),
            // New metadata of the same value: a change the other sites must see.
            (
                Command::SetMeta {
                    key, changed_ms, ..
                },
                Ok(prev),
            ) => (key, *changed_ms, false, prev),
            // A failed write rolled back, or given up by repair (whose `Remove` then
            // finds it `deleting`): the key is gone here, so the other sites must drop
            // it too.
            (Command::Remove { key, .. } | Command::Abandon { key, .. }, Ok(Some(prev)))
                if prev.state == State::Writing =>
            {
                (key, prev.changed_ms, true, &None)
            }
            _ => return Ok(()),
        };
        let stored = self.get_version(key)?;
        if !self.enabled()? && stored.is_none() {
            // Nothing replicates and no other site ever wrote the key: no version.
            return Ok(());
        }
        let floor = origin(prev.as_ref(), stored.as_ref()).map(|o| o.version);
        let (v, clock) = hlc::tick(self.clock()?, floor.as_ref(), ms, "");
        self.set_clock(clock)?;
        let applied_ms = if deleting { 0 } else { ms };
        self.put_version(key, &Version::of(&v, applied_ms))?;
        if !self.enabled()? {
            return Ok(());
        }
        let seq = self.get_u64(LAST)?.unwrap_or(0) + 1;
        self.set_u64(LAST, seq)?;
        self.feed
            .insert(seq, encode_entry(ms, key).as_slice())
            .map_err(store_err)?;
        Ok(())
    }

    /// A remote change applied: its version is the key's (no feed entry: never
    /// shipped on).
    fn remote(&mut self, key: &[u8], v: &Hlc, cmd: Option<&Command>) -> Result<(), IndexError> {
        let applied_ms = match cmd {
            Some(
                Command::Commit { now_ms, .. }
                | Command::PutInline { now_ms, .. }
                | Command::Unlink { now_ms, .. },
            ) => *now_ms,
            _ => 0,
        };
        self.put_version(key, &Version::of(v, applied_ms))
    }

    fn feed_command(&mut self, f: &FeedCommand) -> Result<(), IndexError> {
        match f {
            FeedCommand::AddTarget { target } => {
                let name = format!("{CURSOR}{target}");
                if self.get_u64(&name)?.is_none() {
                    let last = self.get_u64(LAST)?.unwrap_or(0);
                    self.set_u64(&name, last)?;
                    self.enabled = Some(true);
                }
            }
            FeedCommand::DropTarget { target } => {
                self.sites
                    .remove(format!("{CURSOR}{target}").as_str())
                    .map_err(store_err)?;
                self.enabled = None;
                self.trim()?;
            }
            FeedCommand::Advance { target, seq } => {
                let name = format!("{CURSOR}{target}");
                // Only a target that is still configured, and only forward.
                if let Some(current) = self.get_u64(&name)? {
                    if *seq > current {
                        self.set_u64(&name, *seq)?;
                        self.trim()?;
                    }
                }
            }
            FeedCommand::SetSiteId { id } => {
                if self.sites.get(ID).map_err(store_err)?.is_none() {
                    self.sites.insert(ID, id.as_bytes()).map_err(store_err)?;
                }
            }
            FeedCommand::Expect { key, version } => {
                let v = Version {
                    pending: true,
                    ..version.clone()
                };
                self.put_version(key, &v)?;
            }
            FeedCommand::SetVersion { key, version } => self.put_version(key, version)?,
            FeedCommand::Unexpect { key } => {
                let pending = self
                    .versions
                    .get(key.as_slice())
                    .map_err(store_err)?
                    .and_then(|v| version_of(v.value()))
                    .is_some_and(|v| v.pending);
                if pending {
                    self.versions.remove(key.as_slice()).map_err(store_err)?;
                }
            }
        }
        Ok(())
    }

    /// Drops up to [`TRIM_BATCH`] entries every target has acknowledged (all of them
    /// when there is no target).
    fn trim(&mut self) -> Result<(), IndexError> {
        let mut low = u64::MAX;
        for item in self
            .sites
            .range::<&str>(CURSOR.."cursor;")
            .map_err(store_err)?
        {
            let (_, v) = item.map_err(store_err)?;
            low = low.min(u64_of(v.value()));
        }
        let mut done = Vec::new();
        for item in self.feed.range(..=low).map_err(store_err)?.take(TRIM_BATCH) {
            done.push(item.map_err(store_err)?.0.value());
        }
        for seq in done {
            self.feed.remove(seq).map_err(store_err)?;
        }
        Ok(())
    }
}

/// Snapshot item key prefixes (see `Index::export`): no record key starts with NUL.
const SNAP_FEED: &[u8] = b"\0feed:";
const SNAP_SITE: &[u8] = b"\0site:";
const SNAP_VERSION: &[u8] = b"\0ver:";

/// Writes every feed table item to `emit` as `(snapshot key, value)`.
pub(super) fn export(
    txn: &redb::ReadTransaction,
    emit: &mut impl FnMut(&[u8], &[u8]) -> Result<(), IndexError>,
) -> Result<(), IndexError> {
    use redb::TableError;
    let missing = |e: &TableError| matches!(e, TableError::TableDoesNotExist(_));
    match txn.open_table(SITES) {
        Ok(t) => {
            for item in t.iter().map_err(store_err)? {
                let (k, v) = item.map_err(store_err)?;
                emit(&[SNAP_SITE, k.value().as_bytes()].concat(), v.value())?;
            }
        }
        Err(e) if missing(&e) => {}
        Err(e) => return Err(store_err(e)),
    }
    match txn.open_table(FEED) {
        Ok(t) => {
            for item in t.iter().map_err(store_err)? {
                let (k, v) = item.map_err(store_err)?;
                emit(
                    &[SNAP_FEED, &k.value().to_be_bytes()[..]].concat(),
                    v.value(),
                )?;
            }
        }
        Err(e) if missing(&e) => {}
        Err(e) => return Err(store_err(e)),
    }
    match txn.open_table(VERSIONS) {
        Ok(t) => {
            for item in t.iter().map_err(store_err)? {
                let (k, v) = item.map_err(store_err)?;
                emit(&[SNAP_VERSION, k.value()].concat(), v.value())?;
            }
        }
        Err(e) if missing(&e) => {}
        Err(e) => return Err(store_err(e)),
    }
    Ok(())
}

/// Replaces the feed tables from snapshot items, inside an import's transaction.
pub(super) struct Importer<'txn>(Hook<'txn>);

impl<'txn> Importer<'txn> {
    /// Empties the feed tables of `txn`.
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, IndexError> {
        txn.delete_table(FEED).map_err(store_err)?;
        txn.delete_table(SITES).map_err(store_err)?;
        txn.delete_table(VERSIONS).map_err(store_err)?;
        Hook::open(txn).map(Importer)
    }

    /// Takes one snapshot item if it is a feed item (true), else leaves it (false).
    pub(super) fn item(&mut self, key: &[u8], value: &[u8]) -> Result<bool, IndexError> {
        let t = &mut self.0;
        if let Some(name) = key.strip_prefix(SNAP_SITE) {
            let name = std::str::from_utf8(name).unwrap_or_default();
            t.sites.insert(name, value).map_err(store_err)?;
        } else if let Some(seq) = key.strip_prefix(SNAP_FEED) {
            t.feed
                .insert(
                    u64::from_be_bytes(seq.try_into().unwrap_or_default()),
                    value,
                )
                .map_err(store_err)?;
        } else if let Some(k) = key.strip_prefix(SNAP_VERSION) {
            t.versions.insert(k, value).map_err(store_err)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

impl super::Index {
    /// Up to `max` feed entries after `seq`, in order.
    pub fn feed_after(&self, seq: u64, max: usize) -> Result<Vec<Entry>, IndexError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let Some(table) = open_read(&txn, FEED)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in table.range(seq + 1..).map_err(store_err)?.take(max) {
            let (k, v) = item.map_err(store_err)?;
            out.push(decode_entry(k.value(), v.value()));
        }
        Ok(out)
    }

    /// The last seq given, and `target`'s cursor (`None`: not a target).
    pub fn feed_position(&self, target: &str) -> Result<(u64, Option<u64>), IndexError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let Some(sites) = open_read(&txn, SITES)? else {
            return Ok((0, None));
        };
        let get = |name: &str| -> Result<Option<u64>, IndexError> {
            Ok(sites
                .get(name)
                .map_err(store_err)?
                .map(|v| u64_of(v.value())))
        };
        Ok((get(LAST)?.unwrap_or(0), get(&format!("{CURSOR}{target}"))?))
    }

    /// Every target with a cursor.
    pub fn feed_targets(&self) -> Result<Vec<String>, IndexError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let Some(sites) = open_read(&txn, SITES)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in sites.range::<&str>(CURSOR.."cursor;").map_err(store_err)? {
            let (k, _) = item.map_err(store_err)?;
            out.push(k.value().trim_start_matches(CURSOR).to_string());
        }
        Ok(out)
    }

    /// This site's id, once set ([`FeedCommand::SetSiteId`]).
    pub fn site_id(&self) -> Result<Option<String>, IndexError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let Some(sites) = open_read(&txn, SITES)? else {
            return Ok(None);
        };
        Ok(sites
            .get(ID)
            .map_err(store_err)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }

    /// The origin of `key`'s current state (see [`origin`]).
    pub fn site_origin(&self, key: &[u8]) -> Result<Option<Origin>, IndexError> {
        Ok(self.site_state(key)?.1)
    }

    /// `key`'s record and the version of its state (see [`origin`]), read together.
    pub fn site_state(&self, key: &[u8]) -> Result<(Option<Record>, Option<Origin>), IndexError> {
        let (txn, table) = self.read_records()?;
        let record = match table.get(key).map_err(store_err)? {
            Some(v) => Some(self.vt.decode_read(&txn, key, v.value())?),
            None => None,
        };
        let version = match open_read(&txn, VERSIONS)? {
            Some(t) => t
                .get(key)
                .map_err(store_err)?
                .and_then(|v| version_of(v.value())),
            None => None,
        };
        let origin = origin(record.as_ref(), version.as_ref());
        Ok((record, origin))
    }
}

fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, IndexError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(store_err(e)),
    }
}

#[cfg(test)]
#[path = "feed_tests.rs"]
mod tests;
