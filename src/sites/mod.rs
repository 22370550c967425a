//! Sites: asynchronous replication of every committed PUT, DELETE and UNLINK to other
//! hoard stores (`--replicate-to URL,…`).
//!
//! * The change feed is in the index (`crate::index::feed`): local changes in commit
//!   order, a cursor per target, the origin of every key's state. It is replicated with
//!   the index in an index cluster.
//! * [`ship`]: on the leader (always, on a single server), one task per target reads
//!   the feed from its cursor and sends each changed key's *current* state to the
//!   target's `/-/sites/apply/<key>` — values streamed from a local replica, never
//!   buffered — then advances the cursor (`FeedCommand::Advance`). At least once: the
//!   receiver is idempotent.
//! * [`receive`]: the endpoint a site ships to. It applies a change through the store
//!   core (`put_with(replace)`, `unlink`, `delete`) if it is newer than what the key
//!   holds — **the highest hybrid-logical-clock version wins, ties broken by the
//!   larger site id** (`crate::index::hlc`), decided in the index's state machine
//!   (`Command::Remote`) — and records it with its version, never shipped on: two
//!   sites replicating to each other make no loop.

pub mod receive;
mod ship;

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::clock::now_ms;
use crate::index::feed::FeedCommand;
use crate::index::{Command, Index, IndexError};

pub use ship::start;

/// URL path prefix of the receiving endpoint; the key follows.
pub const APPLY_PATH: &str = "/-/sites/apply";
/// Request header: the change's version at its origin, `ms.n.site`
/// (`crate::index::hlc::Hlc::header`).
pub const VERSION_HEADER: &str = "hoard-site-version";
/// Request header of a PUT: the value's front-end metadata (content type, user
/// metadata, multipart ETag — `Record::meta`), base64; absent when none.
pub const META_HEADER: &str = "hoard-site-meta";
/// Request header of a PUT: `live` or `unlinked`.
pub const STATE_HEADER: &str = "hoard-site-state";
/// Request header of a PUT: the value's md5 (hex), when known.
pub const MD5_HEADER: &str = "hoard-site-md5";
/// Request header of a PUT without a body, state `unlinked`: the receiver holds the
/// live value of this very version; unlink it.
pub const REUSE_HEADER: &str = "hoard-site-reuse";

/// Replication settings.
#[derive(Debug, Clone, Default)]
pub struct SitesConfig {
    /// Base URLs of the other sites' index servers (`http://host:port`).
    pub targets: Vec<String>,
    /// Most changes shipped per second per target (0: no limit).
    pub rate: u32,
    /// Bearer token sent to the targets (the server's own `--auth-token`).
    pub token: Option<String>,
}

impl SitesConfig {
    /// Parses `--replicate-to` (comma-separated URLs) and `--replicate-rate`.
    pub fn parse(list: &[String], rate: u32, token: Option<String>) -> anyhow::Result<Self> {
        let mut targets = Vec::new();
        for url in list.iter().flat_map(|l| l.split(',')) {
            let url = url.trim().trim_end_matches('/');
            if url.is_empty() {
                continue;
            }
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| anyhow::anyhow!("--replicate-to {url:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                anyhow::bail!("--replicate-to {url:?}: expected http://host:port");
            }
            if !targets.iter().any(|t| t == url) {
                targets.push(url.to_string());
            }
        }
        Ok(SitesConfig {
            targets,
            rate,
            token,
        })
    }
}

/// What the shippers report, per target (shown by `/-/health`).
#[derive(Debug, Default)]
pub struct Status {
    targets: Mutex<BTreeMap<String, TargetStatus>>,
}

/// One target's shipping counters.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TargetStatus {
    /// Changes acknowledged by the target since this server started.
    pub shipped: u64,
    /// Failed attempts since this server started.
    pub errors: u64,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// Keys the target failed, waiting aside for a retry while the feed goes on.
    pub aside: usize,
}

impl Status {
    fn update(&self, target: &str, f: impl FnOnce(&mut TargetStatus)) {
        let mut map = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(target.to_string()).or_default());
    }

    /// The counters of `target`.
    pub fn get(&self, target: &str) -> TargetStatus {
        let map = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        map.get(target).cloned().unwrap_or_default()
    }
}

/// How far a target is behind, from the replicated feed (any member can tell).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Lag {
    /// The target has a cursor: changes are being recorded for it.
    pub registered: bool,
    /// Feed entries not yet acknowledged.
    pub entries: u64,
    /// Age of the oldest of them, seconds (0 when none).
    pub seconds: f64,
}

/// `target`'s lag.
pub fn lag(index: &Index, target: &str) -> Result<Lag, IndexError> {
    let (last, cursor) = index.feed_position(target)?;
    let cursor_set = cursor.is_some();
    let cursor = cursor.unwrap_or(last);
    let oldest = index.feed_after(cursor, 1)?;
    let seconds = oldest
        .first()
        .map_or(0.0, |e| now_ms().saturating_sub(e.ms) as f64 / 1000.0);
    Ok(Lag {
        registered: cursor_set,
        entries: last.saturating_sub(cursor),
        seconds,
    })
}

/// The targets: those with a cursor (replicated state), then configured ones not
/// registered yet.
pub fn targets(index: &Index, configured: &[String]) -> Vec<String> {
    let mut all = index.feed_targets().unwrap_or_default();
    for t in configured {
        if !all.contains(t) {
            all.push(t.clone());
        }
    }
    all
}

/// Sets `hoard_site_lag_entries{target}` and `hoard_site_lag_seconds{target}`.
pub fn observe(index: &Index, targets: &[String]) {
    for target in targets {
        if let Ok(l) = lag(index, target) {
            let t = target.clone();
            metrics::gauge!("hoard_site_lag_entries", "target" => t.clone()).set(l.entries as f64);
            metrics::gauge!("hoard_site_lag_seconds", "target" => t).set(l.seconds);
        }
    }
}

/// This site's id, drawn and stored (replicated) the first time it is needed.
pub async fn site_id(index: &Index) -> Result<String, IndexError> {
    if let Some(id) = index.site_id()? {
        return Ok(id);
    }
    let id = format!("{:016x}", fastrand::u64(..));
    let cmd = Command::Feed(FeedCommand::SetSiteId { id });
    // Rejections cannot happen; another proposer's id may win the race.
    let _ = index.apply(cmd).await?;
    index
        .site_id()?
        .ok_or_else(|| IndexError::Replication("site id not set".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_parsed_checked_and_deduplicated() {
        let list = vec![
            "http://b:3000/, https://c:443".to_string(),
            "http://b:3000".into(),
        ];
        let cfg = SitesConfig::parse(&list, 5, None).unwrap();
        assert_eq!(cfg.targets, vec!["http://b:3000", "https://c:443"]);
        assert!(SitesConfig::parse(&["b:3000".into()], 0, None).is_err());
        assert!(SitesConfig::parse(&["ftp://b".into()], 0, None).is_err());
        assert!(SitesConfig::parse(&[], 0, None).unwrap().targets.is_empty());
    }
}
