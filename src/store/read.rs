//! Reads: where a key's value is ([`Store::locate_local`]) and listings of key ranges
//! ([`Store::list`]).
//!
//! Neither contacts a volume: a GET is answered from one index read and the prober's
//! view of which volumes are up, and a listing is a bounded scan of the index (see
//! `index::scan`: at most `limit` keys, at most `budget` records examined, on the
//! blocking pool, so a scan whose caller has gone ends soon on its own).

use super::{Store, StoreError};
use crate::index::feed::Origin;
use crate::index::{IndexError, Page, Record, State};
use crate::placement::server_of;
use crate::replica::VolumeClient;

pub use crate::index::KeyRange as ListRange;

/// Where to read a live key's value.
#[derive(Debug, Clone)]
pub struct Location {
    /// The key's record: size, md5, replica volumes.
    pub record: Record,
    /// A replica holding the value whose volume is up, picked at random to spread
    /// reads (among those in the index server's zone, when any is up).
    pub volume: String,
    /// The value's URL on that volume (with the volumes' scheme; unsigned).
    pub url: String,
    /// The record's volumes are those of the placement in force.
    pub balanced: bool,
}

/// Where a live key's value is: in its record, or on a volume.
#[derive(Debug, Clone)]
pub enum Found {
    /// Stored in the record itself (`--inline-max`): [`Record::inline`] holds it.
    Inline(Record),
    /// On volumes: where to read it.
    At(Location),
}

impl Store {
    /// The live record of `key`, or `None` when it is missing, unlinked or not yet
    /// (or no longer) visible.
    pub fn record(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        Ok(self.index.get(key)?.filter(|r| r.state == State::Live))
    }

    /// Waits until this node's copy of the index has caught up: in an index cluster a
    /// read barrier (every write acknowledged before the call is visible after it), at
    /// once otherwise. The store's reads ([`Store::find`], [`Store::list`],
    /// [`Store::open`], [`Store::site_origin`]) wait for it themselves; a front-end
    /// whose one request makes several reads (S3) calls it once, then reads with the
    /// `_local` calls.
    pub async fn read_barrier(&self) -> Result<(), IndexError> {
        self.index.read_barrier().await
    }

    /// Where to read `key` on a volume: `Ok(None)` when it is not live,
    /// [`StoreError::Unavailable`] when no volume holding it is up (or it has none: a
    /// value stored in its record, which [`Store::find`] tells apart). On this node's
    /// copy of the index as it is (the dashboard's view).
    pub fn locate_local(&self, key: &[u8]) -> Result<Option<Location>, StoreError> {
        match self.find_local(key, &[])? {
            None => Ok(None),
            Some(Found::At(at)) => Ok(Some(at)),
            Some(Found::Inline(_)) => Err(StoreError::Unavailable(
                "the value is stored in the index, on no volume".into(),
            )),
        }
    }

    /// Where `key`'s value is: in its record, or on a volume that is up (see
    /// [`Store::locate_local`]); `Ok(None)` when the key is not live. Linearizable.
    pub async fn find(&self, key: &[u8]) -> Result<Option<Found>, StoreError> {
        self.find_avoiding(key, &[]).await
    }

    /// [`Store::find`], picking a replica on none of the volume servers `avoid`
    /// (`host:port`: replicas a client already read and found wrong) while another is
    /// up; when every replica that is up is to be avoided, any of them. Linearizable.
    pub async fn find_avoiding(
        &self,
        key: &[u8],
        avoid: &[&str],
    ) -> Result<Option<Found>, StoreError> {
        self.read_barrier().await?;
        self.find_local(key, avoid)
    }

    /// [`Store::find_avoiding`] on this node's copy of the index as it is.
    fn find_local(&self, key: &[u8], avoid: &[&str]) -> Result<Option<Found>, StoreError> {
        let Some(record) = self.record(key)? else {
            return Ok(None);
        };
        if record.inline.is_some() {
            return Ok(Some(Found::Inline(record)));
        }
        let mut up: Vec<&str> = record
            .holders()
            .filter(|v| self.health.is_up(server_of(v)))
            .collect();
        if up.iter().any(|v| !avoid.contains(&server_of(v))) {
            up.retain(|v| !avoid.contains(&server_of(v)));
        }
        if up.is_empty() {
            return Err(StoreError::Unavailable(format!(
                "no replica volume of this key is up ({})",
                record.volumes.join(",")
            )));
        }
        let placement = self.placement.current();
        let near: Vec<&str> = match self.cfg.zone.as_deref() {
            Some(zone) => up
                .iter()
                .copied()
                .filter(|v| placement.zone_of(server_of(v)) == Some(zone))
                .collect(),
            None => Vec::new(),
        };
        let pool = if near.is_empty() { &up } else { &near };
        let volume = pool[fastrand::usize(..pool.len())].to_string();
        let url = self
            .client
            .scheme_url(&VolumeClient::url(&volume, key, record.gen));
        let balanced = placement.locate(key) == record.volumes;
        Ok(Some(Found::At(Location {
            record,
            volume,
            url,
            balanced,
        })))
    }

    /// One bounded page of the keys of `range` in state `want` (`Live` for `?list`,
    /// `Unlinked` for `?unlinked`): at most `limit` keys, at most `budget` records
    /// examined; [`Page::next`] says where to go on. Runs on the blocking pool.
    /// Linearizable.
    pub async fn list(
        &self,
        range: ListRange,
        want: State,
        limit: usize,
        budget: usize,
    ) -> Result<Page, StoreError> {
        self.read_barrier().await?;
        self.list_local(range, want, limit, budget).await
    }

    /// [`Store::list`] on this node's copy of the index as it is (after a
    /// [`Store::read_barrier`] of the caller's).
    pub async fn list_local(
        &self,
        range: ListRange,
        want: State,
        limit: usize,
        budget: usize,
    ) -> Result<Page, StoreError> {
        list(self.index.clone(), range, want, limit, budget).await
    }

    /// Where and when `key`'s current state was committed (replication to other
    /// sites). Linearizable.
    pub async fn site_origin(&self, key: &[u8]) -> Result<Option<Origin>, StoreError> {
        self.read_barrier().await?;
        Ok(self.index.site_origin(key)?)
    }
}

/// [`Store::list`] on an index handle alone (a streamed listing holds no store between
/// its chunks).
pub async fn list(
    index: crate::index::Index,
    range: ListRange,
    want: State,
    limit: usize,
    budget: usize,
) -> Result<Page, StoreError> {
    let page = tokio::task::spawn_blocking(move || {
        let page = index.scan_range(&range, want, limit, budget);
        if let Ok(p) = &page {
            crate::telemetry::record_list_scan(p.examined);
        }
        page
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("listing aborted: {e}")))??;
    Ok(page)
}
