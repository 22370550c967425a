//! The shipper: one task per target, reading the change feed from the target's cursor.
//!
//! For each entry it sends the key's *current* state (so several changes of one key
//! ship as its latest state, and a retried entry ships the same thing again):
//!
//! * absent with a local tombstone → `DELETE /-/sites/apply/<key>`;
//! * live or unlinked, changed here → first `GET /-/sites/apply/<key>` (the target's
//!   origin of the key): nothing to send when the target already holds this change or
//!   a newer one; a bodiless PUT with `Hoard-Site-Reuse` when it holds the same bytes
//!   (same md5 and size: an UNLINK after its PUT); else a PUT streaming the value from a
//!   local replica ([`Store::open_stored`]) — nothing is buffered whole;
//! * whose current state came from another site, or is being written → nothing (the
//!   write's own entry follows).
//!
//! The cursor advances (`FeedCommand::Advance`, replicated) after each batch and
//! before any retry, to the last entry acknowledged. A failure is retried with backoff
//! forever, in order (a later change is never shipped before an earlier one).
//! Answers 400 (the target refuses the key for good) are logged and skipped.

use std::sync::Arc;
use std::time::Duration;

use super::{SitesConfig, Status, APPLY_PATH};
use crate::hex::hex;
use crate::index::feed::{Entry, FeedCommand};
use crate::index::{Command, IndexError};
use crate::raft::RaftNode;
use crate::store::Store;

/// Entries read from the feed at a time (and acknowledged with one `Advance`).
const BATCH: usize = 64;
/// Pause when the feed is drained.
const IDLE: Duration = Duration::from_millis(200);
/// How often a member that does not lead checks whether it does now.
const LEADER_POLL: Duration = Duration::from_millis(250);

/// Starts the shippers: while this server leads (always, without an index cluster),
/// it drops the cursors of targets no longer configured, registers the configured ones
/// (a cursor from the current end of the feed on), then ships to each target. Without
/// an index cluster the targets are registered before this returns, so no change the
/// server accepts afterwards is missed.
pub async fn start(
    store: Arc<Store>,
    raft: Option<Arc<RaftNode>>,
    cfg: SitesConfig,
    status: Arc<Status>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if raft.is_none() {
        register(&store, &cfg.targets).await?;
    }
    Ok(tokio::spawn(async move {
        let leading = || raft.as_ref().is_none_or(|r| r.is_leader());
        while !leading() {
            tokio::time::sleep(LEADER_POLL).await;
        }
        if let Err(e) = register(&store, &cfg.targets).await {
            tracing::warn!("sites: registering targets: {e}");
        }
        let http = match http_client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("sites: no HTTP client: {e}");
                return;
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        for target in cfg.targets.clone() {
            let shipper = Shipper {
                store: Arc::clone(&store),
                http: http.clone(),
                target,
                token: cfg.token.clone(),
                rate: cfg.rate,
                status: Arc::clone(&status),
                site: String::new(),
            };
            let raft = raft.clone();
            tasks.spawn(async move {
                let leading = || raft.as_ref().is_none_or(|r| r.is_leader());
                shipper.run(leading).await
            });
        }
        while tasks.join_next().await.is_some() {}
    }))
}

/// Drops the cursors of targets no longer configured, then makes sure every configured
/// target has one (and that this site has an id).
async fn register(store: &Store, targets: &[String]) -> anyhow::Result<()> {
    forget_old_targets(store, targets).await?;
    if targets.is_empty() {
        return Ok(());
    }
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

/// What became of one entry.
enum Shipped {
    /// The target has it (or needs nothing).
    Done,
    /// The target refuses it for good.
    Refused(String),
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
}

impl Shipper {
    async fn run(mut self, leading: impl Fn() -> bool) {
        let mut backoff = Duration::from_millis(250);
        let mut registered = false;
        loop {
            if !leading() {
                registered = false;
                tokio::time::sleep(LEADER_POLL).await;
                continue;
            }
            let step = async {
                if !registered {
                    self.site = super::site_id(&self.store.index).await?;
                    let add = FeedCommand::AddTarget {
                        target: self.target.clone(),
                    };
                    let _ = self.store.index.apply(Command::Feed(add)).await?;
                    registered = true;
                }
                self.batch().await
            };
            match step.await {
                Ok(true) => backoff = Duration::from_millis(250),
                Ok(false) => tokio::time::sleep(IDLE).await,
                Err(e) => {
                    // Register again before the retry (a no-op while the cursor exists).
                    registered = false;
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

    /// Ships one batch; false when there was nothing to ship.
    async fn batch(&self) -> anyhow::Result<bool> {
        let index = &self.store.index;
        let (_, cursor) = index.feed_position(&self.target)?;
        let Some(cursor) = cursor else {
            anyhow::bail!("no cursor (dropped by another member?)");
        };
        let entries = index.feed_after(cursor, BATCH)?;
        if entries.is_empty() {
            return Ok(false);
        }
        let mut acked = cursor;
        let mut failed = None;
        for entry in &entries {
            let started = std::time::Instant::now();
            match self.ship(entry).await {
                Ok(Shipped::Done) => {}
                Ok(Shipped::Refused(why)) => tracing::error!(
                    "sites: {} refused {}: {why}; skipped",
                    self.target,
                    String::from_utf8_lossy(&entry.key)
                ),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            acked = entry.seq;
            self.status.update(&self.target, |s| {
                s.shipped += 1;
                s.last_error = None;
            });
            if self.rate > 0 {
                let pace = Duration::from_secs_f64(1.0 / f64::from(self.rate));
                tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
            }
        }
        if acked > cursor {
            let advance = FeedCommand::Advance {
                target: self.target.clone(),
                seq: acked,
            };
            let _ = index.apply(Command::Feed(advance)).await?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }

    fn url(&self, key: &[u8]) -> String {
        let key = String::from_utf8_lossy(key);
        let path = percent_encoding::utf8_percent_encode(&key, crate::key::URL_PATH);
        format!("{}{APPLY_PATH}{path}", self.target)
    }

    fn request(&self, method: reqwest::Method, key: &[u8], ms: u64) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, self.url(key))
            .header(super::SITE_HEADER, &self.site)
            .header(super::TIME_HEADER, ms.to_string());
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    async fn ship(&self, entry: &Entry) -> anyhow::Result<Shipped> {
        let index = &self.store.index;
        let Some(origin) = index.site_origin(&entry.key)? else {
            return Ok(Shipped::Done);
        };
        if !origin.site.is_empty() {
            return Ok(Shipped::Done);
        }
        if origin.deleted {
            let req = self.request(reqwest::Method::DELETE, &entry.key, origin.ms);
            return answer(req.send().await?).await;
        }
        // The target's view first: skip what it already has, reuse bytes it holds.
        let probe = self
            .request(reqwest::Method::GET, &entry.key, origin.ms)
            .send()
            .await?;
        let theirs: Option<super::receive::Held> = match probe.status().as_u16() {
            200 => Some(probe.json().await?),
            404 => None,
            _ => return answer(probe).await,
        };
        let opened = match self.store.open_stored(&entry.key).await {
            Ok(o) => o,
            // Changed since (deleted, being rewritten): its own entry follows.
            Err(crate::store::StoreError::NotFound) => return Ok(Shipped::Done),
            Err(e) => anyhow::bail!("reading {}: {e}", String::from_utf8_lossy(&entry.key)),
        };
        let record = &opened.record;
        let ms = record.changed_ms;
        if let Some(t) = &theirs {
            if (t.ms, t.site.as_str()) >= (ms, self.site.as_str()) {
                return Ok(Shipped::Done);
            }
        }
        let state = match record.state {
            crate::index::State::Unlinked => "unlinked",
            _ => "live",
        };
        let md5 = record.md5.map(|m| hex(&m));
        let mut req = self
            .request(reqwest::Method::PUT, &entry.key, ms)
            .header(super::STATE_HEADER, state);
        if let Some(m) = &md5 {
            req = req.header(super::MD5_HEADER, m);
        }
        let reuse = theirs.as_ref().is_some_and(|t| {
            t.md5.is_some() && t.md5 == md5 && t.size == record.size && !t.deleted
        });
        let resp = if reuse {
            drop(opened.body);
            req.header(super::REUSE_HEADER, "1")
                .header(reqwest::header::CONTENT_LENGTH, "0")
                .send()
                .await?
        } else {
            req.header(reqwest::header::CONTENT_LENGTH, record.size.to_string())
                .body(reqwest::Body::wrap_stream(opened.body))
                .send()
                .await?
        };
        answer(resp).await
    }
}

/// 2xx: done; 400: refused for good; anything else: an error to retry.
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
    anyhow::bail!("{why}")
}
