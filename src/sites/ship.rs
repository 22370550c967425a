//! The shipper: one task per target, reading the change feed from the target's cursor.
//!
//! For each entry it sends the key's *current* state with its version (so several
//! changes of one key ship as its latest state, and a retried entry ships the same
//! thing again):
//!
//! * deleted here → `DELETE /-/sites/apply/<key>`;
//! * live or unlinked → first `GET /-/sites/apply/<key>` (the target's version of the
//!   key): nothing to send when the target holds this version or a higher one; a
//!   bodiless PUT with `Hoard-Site-Reuse` to unlink the live value of this very
//!   version there; else a PUT streaming the value from a local replica
//!   ([`Store::open_stored`]) with its metadata — nothing is buffered whole;
//! * whose current state came from another site, or that changed since it was read →
//!   nothing (the origin ships it; a later local change has its own entry).
//!
//! **One key never stalls the feed.** A key the target fails (busy: 409, 5xx) is put
//! *aside* and retried with its own backoff while the entries after it ship; later
//! entries of that key wait with it (its retry sends the latest state), so changes of
//! one key stay in order. At most [`MAX_ASIDE`] keys wait; beyond that the feed pauses.
//! A target that cannot be reached at all (connection refused, timeout) is a failure of
//! the whole feed, retried with backoff up to 5 s. The durable cursor
//! (`FeedCommand::Advance`, replicated) advances after each round to just before the
//! oldest entry still aside — a new leader, or this one after a restart, ships from
//! there again (at least once: the receiver is idempotent). Answers 400 (the target
//! refuses the key for good) are logged and skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::{SitesConfig, Status, APPLY_PATH};
use crate::hex::hex;
use crate::index::feed::{Entry, FeedCommand};
use crate::index::hlc::Hlc;
use crate::index::{Command, IndexError};
use crate::raft::RaftNode;
use crate::store::Store;

/// Entries read from the feed at a time.
const BATCH: usize = 64;
/// Most keys waiting aside for a retry per target.
pub const MAX_ASIDE: usize = 1024;
/// Pause when the feed is drained.
const IDLE: Duration = Duration::from_millis(200);
/// How often a member that does not lead checks whether it does now.
const LEADER_POLL: Duration = Duration::from_millis(250);
/// First and longest wait before a key put aside is tried again.
const ASIDE_FIRST: Duration = Duration::from_millis(250);
const ASIDE_MAX: Duration = Duration::from_secs(10);

/// How often the leader looks for targets added or removed (by another member).
const TARGETS_POLL: Duration = Duration::from_secs(2);

/// Starts the shippers. The targets are the replicated cursors (`FeedCommand::AddTarget`):
/// `--replicate-to` seeds them — registered by whichever member leads (always, without
/// an index cluster: before this returns, so no change the server accepts afterwards
/// is missed) — and a member started without the flag ships to them all the same.
/// While this server leads, one task ships to each target; a target whose cursor is
/// dropped stops being shipped to.
pub async fn start(
    store: Arc<Store>,
    raft: Option<Arc<RaftNode>>,
    cfg: SitesConfig,
    status: Arc<Status>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if raft.is_none() {
        register(&store, &cfg.targets).await?;
    }
    let http = http_client()?;
    Ok(tokio::spawn(async move {
        let leading = || raft.as_ref().is_none_or(|r| r.is_leader());
        // Dropped with this task (at shutdown): every shipper is aborted with it.
        let mut set = tokio::task::JoinSet::new();
        let mut tasks: BTreeMap<String, tokio::task::AbortHandle> = BTreeMap::new();
        let mut registered = raft.is_none();
        loop {
            if !leading() {
                registered = false;
                tokio::time::sleep(LEADER_POLL).await;
                continue;
            }
            if !registered {
                match register(&store, &cfg.targets).await {
                    Ok(()) => registered = true,
                    Err(e) => tracing::warn!("sites: registering targets: {e}"),
                }
            }
            while set.try_join_next().is_some() {}
            tasks.retain(|_, t| !t.is_finished());
            let targets = store.index.feed_targets().unwrap_or_default();
            for target in targets {
                if tasks.contains_key(&target) {
                    continue;
                }
                let shipper = Shipper {
                    store: Arc::clone(&store),
                    http: http.clone(),
                    target: target.clone(),
                    token: cfg.token.clone(),
                    rate: cfg.rate,
                    status: Arc::clone(&status),
                    site: String::new(),
                    aside: BTreeMap::new(),
                    read: 0,
                };
                let raft = raft.clone();
                let task = set.spawn(async move {
                    let leading = || raft.as_ref().is_none_or(|r| r.is_leader());
                    shipper.run(leading).await
                });
                tasks.insert(target, task);
            }
            tokio::time::sleep(TARGETS_POLL).await;
        }
    }))
}

/// With a `--replicate-to` list: drops the cursors of targets not in it, then makes
/// sure every target in it has one (and that this site has an id). Without one (a
/// member started without the flag): nothing — the replicated targets stay.
async fn register(store: &Store, targets: &[String]) -> anyhow::Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    forget_old_targets(store, targets).await?;
    super::site_id(&store.index).await?;
    for target in targets {
        let add = FeedCommand::AddTarget {
            target: target.clone(),
        };
        let _ = store.index.apply(Command::Feed(add)).await?;
    }
    Ok(())
}

fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(60))
        .build()
}

async fn forget_old_targets(store: &Store, keep: &[String]) -> Result<(), IndexError> {
    for target in store.index.feed_targets()? {
        if !keep.contains(&target) {
            tracing::warn!(
                "sites: {target} is no longer a --replicate-to target; its cursor is dropped"
            );
            let cmd = Command::Feed(FeedCommand::DropTarget { target });
            let _ = store.index.apply(cmd).await?;
        }
    }
    Ok(())
}

/// What became of one key.
enum Shipped {
    /// The target has it (or needs nothing).
    Done,
    /// The target refuses it for good.
    Refused(String),
    /// The target failed this key (busy, an error of its own): retry it aside.
    Failed(String),
}

/// A key waiting for a retry.
struct Aside {
    /// The oldest feed entry of the key not yet shipped.
    seq: u64,
    /// When to try again.
    due: Instant,
    /// The next wait.
    backoff: Duration,
}

struct Shipper {
    store: Arc<Store>,
    http: reqwest::Client,
    target: String,
    token: Option<String>,
    rate: u32,
    status: Arc<Status>,
    /// This site's id (set by `run`).
    site: String,
    /// Keys the target failed, retried apart from the feed.
    aside: BTreeMap<Vec<u8>, Aside>,
    /// The last feed entry handed out (shipped, skipped or put aside).
    read: u64,
}

impl Shipper {
    async fn run(mut self, leading: impl Fn() -> bool) {
        let mut backoff = Duration::from_millis(250);
        let mut registered = false;
        loop {
            if !leading() {
                // Whoever leads now ships from the replicated cursor.
                registered = false;
                self.aside.clear();
                self.read = 0;
                self.status.update(&self.target, |s| s.aside = 0);
                tokio::time::sleep(LEADER_POLL).await;
                continue;
            }
            if self
                .store
                .index
                .feed_position(&self.target)
                .ok()
                .and_then(|p| p.1)
                .is_none()
            {
                tracing::info!("sites: {} is no longer a target", self.target);
                return;
            }
            let step = async {
                if !registered {
                    self.site = super::site_id(&self.store.index).await?;
                    registered = true;
                }
                self.round().await
            };
            match step.await {
                Ok(true) => backoff = Duration::from_millis(250),
                Ok(false) => tokio::time::sleep(IDLE).await,
                Err(e) => {
                    tracing::warn!("sites: shipping to {}: {e}", self.target);
                    self.status.update(&self.target, |s| {
                        s.errors += 1;
                        s.last_error = Some(e.to_string());
                    });
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One round: the keys aside that are due, then a batch of new entries; then the
    /// cursor. False when there was nothing to do.
    async fn round(&mut self) -> anyhow::Result<bool> {
        let (_, cursor) = self.store.index.feed_position(&self.target)?;
        let Some(cursor) = cursor else {
            anyhow::bail!("no cursor (the target was removed)");
        };
        self.read = self.read.max(cursor);
        let retried = self.retry_due().await?;
        let entries = if self.aside.len() < MAX_ASIDE {
            self.store.index.feed_after(self.read, BATCH)?
        } else {
            Vec::new()
        };
        let result = self.ship_entries(&entries).await;
        let done = self.aside.values().map(|a| a.seq - 1).min();
        let durable = done.unwrap_or(self.read).min(self.read);
        if durable > cursor {
            let advance = FeedCommand::Advance {
                target: self.target.clone(),
                seq: durable,
            };
            let _ = self.store.index.apply(Command::Feed(advance)).await?;
        }
        result?;
        Ok(retried || !entries.is_empty())
    }

    /// Ships `entries` in order; a key the target fails goes aside. Stops at an error
    /// of the whole target (the entries from there are read again next round).
    async fn ship_entries(&mut self, entries: &[Entry]) -> anyhow::Result<()> {
        for entry in entries {
            if let Some(a) = self.aside.get_mut(&entry.key) {
                // Waits with the key's older change; its retry ships the latest state.
                a.seq = a.seq.min(entry.seq);
            } else {
                self.pace().await;
                let shipped = self.ship(&entry.key).await?;
                self.note(&entry.key, entry.seq, shipped);
            }
            self.read = entry.seq;
        }
        Ok(())
    }

    /// Tries the keys aside whose wait is over; true if there were any.
    async fn retry_due(&mut self) -> anyhow::Result<bool> {
        let now = Instant::now();
        let due: Vec<Vec<u8>> = self
            .aside
            .iter()
            .filter(|(_, a)| a.due <= now)
            .map(|(k, _)| k.clone())
            .take(BATCH)
            .collect();
        for key in &due {
            self.pace().await;
            let shipped = self.ship(key).await?;
            let seq = self.aside.get(key).map_or(0, |a| a.seq);
            self.note(key, seq, shipped);
        }
        Ok(!due.is_empty())
    }

    /// Records what became of `key` (its oldest pending entry: `seq`).
    fn note(&mut self, key: &[u8], seq: u64, shipped: Shipped) {
        self.remember(key, seq, shipped);
        let aside = self.aside.len();
        self.status.update(&self.target, |s| s.aside = aside);
    }

    fn remember(&mut self, key: &[u8], seq: u64, shipped: Shipped) {
        let name = || String::from_utf8_lossy(key).into_owned();
        match shipped {
            Shipped::Done | Shipped::Refused(_) => {
                if let Shipped::Refused(why) = shipped {
                    tracing::error!("sites: {} refused {}: {why}; skipped", self.target, name());
                }
                self.aside.remove(key);
                self.status.update(&self.target, |s| {
                    s.shipped += 1;
                    s.last_error = None;
                });
            }
            Shipped::Failed(why) => {
                tracing::warn!(
                    "sites: {} failed {}: {why}; retried aside",
                    self.target,
                    name()
                );
                self.status.update(&self.target, |s| {
                    s.errors += 1;
                    s.last_error = Some(why);
                });
                let a = self.aside.entry(key.to_vec()).or_insert(Aside {
                    seq,
                    due: Instant::now(),
                    backoff: ASIDE_FIRST,
                });
                a.due = Instant::now() + a.backoff;
                a.backoff = (a.backoff * 2).min(ASIDE_MAX);
            }
        }
    }

    async fn pace(&self) {
        if self.rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(1.0 / f64::from(self.rate))).await;
        }
    }

    fn url(&self, key: &[u8]) -> String {
        let key = String::from_utf8_lossy(key);
        let path = percent_encoding::utf8_percent_encode(&key, crate::key::URL_PATH);
        format!("{}{APPLY_PATH}{path}", self.target)
    }

    fn request(&self, method: reqwest::Method, key: &[u8], v: &Hlc) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, self.url(key))
            .header(super::VERSION_HEADER, v.header());
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    /// Sends `key`'s current state. An `Err` is a failure of the whole target (it
    /// could not be reached, or this site's index failed).
    async fn ship(&self, key: &[u8]) -> anyhow::Result<Shipped> {
        let index = &self.store.index;
        let (record, origin) = index.site_state(key)?;
        let Some(origin) = origin else {
            return Ok(Shipped::Done);
        };
        if !origin.is_local(&self.site) {
            return Ok(Shipped::Done);
        }
        let v = origin.version.clone().resolved(&self.site);
        if origin.deleted {
            let req = self.request(reqwest::Method::DELETE, key, &v);
            return answer(req.send().await?).await;
        }
        // The target's view first: skip what it already has, reuse bytes it holds.
        let probe = self.request(reqwest::Method::GET, key, &v).send().await?;
        let theirs: Option<super::receive::Held> = match probe.status().as_u16() {
            200 => Some(probe.json().await?),
            404 => None,
            _ => return answer(probe).await,
        };
        if theirs.as_ref().is_some_and(|t| t.version > v) {
            return Ok(Shipped::Done);
        }
        let opened = match self.store.open_stored(key).await {
            Ok(o) => o,
            // Changed since (deleted, being rewritten): its own entry follows.
            Err(crate::store::StoreError::NotFound) => return Ok(Shipped::Done),
            Err(e) => return Ok(Shipped::Failed(format!("reading it here: {e}"))),
        };
        let r = &opened.record;
        let unchanged = record.is_some_and(|x| {
            (x.changed_ms, x.gen, x.state, &x.meta) == (r.changed_ms, r.gen, r.state, &r.meta)
        });
        if !unchanged {
            return Ok(Shipped::Done);
        }
        let unlinked = r.state == crate::index::State::Unlinked;
        let same = theirs.as_ref().filter(|t| t.version == v && !t.deleted);
        if same.is_some() && !unlinked {
            return Ok(Shipped::Done);
        }
        let md5 = r.md5.map(|m| hex(&m));
        let mut req = self.request(reqwest::Method::PUT, key, &v).header(
            super::STATE_HEADER,
            if unlinked { "unlinked" } else { "live" },
        );
        if let Some(m) = &md5 {
            req = req.header(super::MD5_HEADER, m);
        }
        if !r.meta.is_empty() {
            let meta = base64::engine::general_purpose::STANDARD.encode(&r.meta);
            req = req.header(super::META_HEADER, meta);
        }
        let resp = if same.is_some() {
            // Live there at this very version: unlink it, no bytes.
            drop(opened.body);
            req.header(super::REUSE_HEADER, "1")
                .header(reqwest::header::CONTENT_LENGTH, "0")
                .send()
                .await?
        } else {
            req.header(reqwest::header::CONTENT_LENGTH, r.size.to_string())
                .body(reqwest::Body::wrap_stream(opened.body))
                .send()
                .await?
        };
        answer(resp).await
    }
}

/// 2xx: done; 400: refused for good; anything else: a failure of this key.
async fn answer(resp: reqwest::Response) -> anyhow::Result<Shipped> {
    let status = resp.status();
    if status.is_success() {
        return Ok(Shipped::Done);
    }
    let body = resp.text().await.unwrap_or_default();
    let why = format!("{status}: {}", body.trim());
    if status == reqwest::StatusCode::BAD_REQUEST {
        return Ok(Shipped::Refused(why));
    }
    Ok(Shipped::Failed(why))
}
