//! Rebuild: reconstruct the index from what the volumes hold, when the index is lost.
//!
//! Every volume is walked through its listings ([`super::listing`]); each value file
//! found becomes a location of its key. Each key's record gets:
//!
//! * locations in placement order: those in the key's placement for the given volume
//!   list first, in that order; locations outside it (the key was written under another
//!   volume list and not rebalanced) after them, ordered by the key's rendezvous score;
//! * the size most replicas have (a disagreement is reported; verify finds the bad one);
//! * md5 unknown — `verify --deep` fills it in, or pass `md5` to read one replica of
//!   every key while rebuilding;
//! * state `live`, and the newest replica mtime as its change time.
//!
//! What files cannot tell: unlinked keys come back live, and keys whose write or delete
//! was interrupted come back live if any replica file exists.
//!
//! The new index is written into an empty directory; the old one is never touched. A
//! rebuild killed midway leaves a partial new index: delete it and run again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use super::copy::hash;
use super::listing::walk;
use super::worker::{inc, Job};
use super::OpsError;
use crate::index::{Command, Index};
use crate::placement::{server_of, Placement};
use crate::replica::VolumeClient;

/// Index commands in flight at once (the writer commits them in batches).
const WRITE_CONCURRENCY: usize = 2048;

/// Options of a rebuild.
#[derive(Debug, Clone)]
pub struct Options {
    /// Listing requests in flight per volume.
    pub concurrency: usize,
    /// Read one replica of every key to record its md5.
    pub md5: bool,
}

/// What the volumes hold for one key.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// `(location, size)` per replica file.
    replicas: Vec<(String, u64)>,
    mtime_ms: u64,
}

/// The record fields of one key, derived from its replica files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Locations in placement order.
    pub volumes: Vec<String>,
    /// The size most replicas have.
    pub size: u64,
    /// True when replicas disagree on the size.
    pub size_conflict: bool,
}

/// Orders `found` locations of `key`: its placement's first, in placement order, then
/// the rest by the key's rendezvous score over `ranking`'s volumes, then by name.
pub fn order_locations(
    placement: &Placement,
    ranking: &Placement,
    key: &[u8],
    found: &[String],
) -> Vec<String> {
    let want = placement.locate(key);
    let mut out: Vec<String> = want.iter().filter(|w| found.contains(w)).cloned().collect();
    let rank = ranking.locate(key);
    let mut extra: Vec<&String> = found.iter().filter(|f| !want.contains(f)).collect();
    extra.sort_by_key(|loc| {
        let server = server_of(loc);
        let pos = rank.iter().position(|r| r == server).unwrap_or(usize::MAX);
        (pos, loc.as_str())
    });
    extra.dedup();
    out.extend(extra.into_iter().cloned());
    out
}

fn derive(placement: &Placement, ranking: &Placement, key: &[u8], seen: &Seen) -> Rebuilt {
    let locations: Vec<String> = seen.replicas.iter().map(|(l, _)| l.clone()).collect();
    let volumes = order_locations(placement, ranking, key, &locations);
    let mut votes: Vec<(u64, usize)> = Vec::new();
    for loc in &volumes {
        let size = seen
            .replicas
            .iter()
            .find(|(l, _)| l == loc)
            .map_or(0, |(_, s)| *s);
        match votes.iter_mut().find(|(s, _)| *s == size) {
            Some((_, n)) => *n += 1,
            None => votes.push((size, 1)),
        }
    }
    // Most votes wins; a tie goes to the size seen first in placement order.
    let size = votes
        .iter()
        .enumerate()
        .max_by_key(|(i, (_, n))| (*n, std::cmp::Reverse(*i)))
        .map_or(0, |(_, (s, _))| *s);
    Rebuilt {
        volumes,
        size,
        size_conflict: votes.len() > 1,
    }
}

/// Walks `placement`'s volumes and writes a new index into `db`, which must not hold
/// one yet. Counters: `files_listed`, `scanned` (keys written), `conflicts` (replica
/// sizes disagree), `bytes` (hashed with `md5`), `unreachable`.
pub async fn run(
    client: VolumeClient,
    placement: &Placement,
    db: &Path,
    job: Arc<Job>,
    opts: Options,
) -> Result<(), OpsError> {
    if db.join("index.redb").exists() {
        return Err(OpsError::Invalid(format!(
            "{} already holds an index: rebuild into a new, empty directory",
            db.display()
        )));
    }
    let p = &job.progress;
    let mut keys: HashMap<Vec<u8>, Seen> = HashMap::new();
    let report = walk(&client, placement.volumes(), opts.concurrency, |found| {
        inc(&p.files_listed);
        let seen = keys.entry(found.key).or_default();
        seen.replicas.push((found.location, found.size));
        seen.mtime_ms = seen.mtime_ms.max(found.mtime_ms);
    })
    .await;
    if let Some((server, e)) = report.failed.into_iter().next() {
        return Err(OpsError::Invalid(format!(
            "cannot list volume {server} ({e}); a rebuild without it would lose its keys"
        )));
    }
    tracing::info!(
        "listed {} files of {} keys in {} directories ({} foreign entries ignored)",
        p.files_listed.load(Relaxed),
        keys.len(),
        report.dirs,
        report.foreign
    );
    p.total.store(keys.len() as u64, Relaxed);
    let servers = placement.volumes().to_vec();
    let ranking = Placement::new(servers.clone(), servers.len(), 1)?;
    let index = Index::open(db)?;
    let written = stream::iter(keys)
        .map(|(key, seen)| {
            let (index, client, ranking, job) = (&index, &client, &ranking, &job);
            async move {
                let rebuilt = derive(placement, ranking, &key, &seen);
                if rebuilt.size_conflict {
                    inc(&p.conflicts);
                    tracing::warn!(
                        "replicas of {} differ in size; run verify --repair --deep",
                        super::show(&key)
                    );
                }
                let md5 = if opts.md5 {
                    md5_of(client, &key, &rebuilt, job).await
                } else {
                    None
                };
                let begin = Command::Begin {
                    key: key.clone(),
                    volumes: rebuilt.volumes,
                    now_ms: seen.mtime_ms,
                    owner: 0,
                    replace: false,
                };
                index.apply(begin).await?.map_err(|r| {
                    OpsError::Invalid(format!("writing {}: {r}", super::show(&key)))
                })?;
                let commit = Command::Commit {
                    key,
                    size: rebuilt.size,
                    md5,
                    missing: Vec::new(),
                    now_ms: seen.mtime_ms,
                    owner: 0,
                    meta: Vec::new(),
                };
                index
                    .apply(commit)
                    .await?
                    .map_err(|r| OpsError::Invalid(format!("committing a rebuilt record: {r}")))?;
                inc(&p.scanned);
                Ok::<(), OpsError>(())
            }
        })
        .buffer_unordered(if opts.md5 {
            opts.concurrency.max(1) * placement.volumes().len().max(1)
        } else {
            WRITE_CONCURRENCY
        })
        .fold(
            Ok(()),
            |acc: Result<(), OpsError>, r| async move { acc.and(r) },
        )
        .await;
    index.close();
    written
}

/// The md5 of the first replica of the right size that reads completely.
async fn md5_of(
    client: &VolumeClient,
    key: &[u8],
    rebuilt: &Rebuilt,
    job: &Job,
) -> Option<[u8; 16]> {
    for loc in &rebuilt.volumes {
        match hash(client, &VolumeClient::url(loc, key)).await {
            Ok(Some((size, md5))) if size == rebuilt.size => {
                job.progress.bytes.fetch_add(size, Relaxed);
                return Some(md5);
            }
            Ok(_) => {}
            Err(e) => {
                inc(&job.progress.unreachable);
                tracing::warn!("{e}");
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_placement_then_score() {
        let volumes: Vec<String> = (3001..=3005).map(|p| format!("localhost:{p}")).collect();
        let p = Placement::new(volumes.clone(), 3, 10).unwrap();
        let ranking = Placement::new(volumes, 5, 1).unwrap();
        let key = b"/wehave";
        let want = p.locate(key);
        // Found in scrambled order, plus one copy outside the placement.
        let found = vec![
            "localhost:3003/sv02".to_string(),
            want[2].clone(),
            want[0].clone(),
            want[1].clone(),
        ];
        let got = order_locations(&p, &ranking, key, &found);
        assert_eq!(&got[..3], &want[..]);
        assert_eq!(got[3], "localhost:3003/sv02");
        // Only part of the placement found: still in placement order.
        let got = order_locations(&p, &ranking, key, &[want[2].clone(), want[0].clone()]);
        assert_eq!(got, [want[0].clone(), want[2].clone()]);
    }

    #[test]
    fn size_by_majority() {
        let volumes: Vec<String> = (3001..=3003).map(|p| format!("h:{p}")).collect();
        let p = Placement::new(volumes.clone(), 3, 1).unwrap();
        let ranking = Placement::new(volumes.clone(), 3, 1).unwrap();
        let seen = Seen {
            replicas: vec![
                (volumes[0].clone(), 5),
                (volumes[1].clone(), 7),
                (volumes[2].clone(), 5),
            ],
            mtime_ms: 1,
        };
        let r = derive(&p, &ranking, b"/k", &seen);
        assert_eq!((r.size, r.size_conflict), (5, true));
        assert_eq!(r.volumes.len(), 3);
    }
}
