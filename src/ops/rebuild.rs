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
//!
//! Memory stays within a fixed budget at any key count (see [`run`]): files found are
//! grouped by key on disk ([`super::rebuild_stage`]), then written in key order in
//! large transactions through the index's bulk-load path.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use super::copy::hash;
use super::listing::{walk, Found};
use super::rebuild_stage::{Seen, Stage};
use super::worker::{inc, Job};
use super::OpsError;
use crate::index::{BulkLoad, Record, State};
use crate::placement::{server_of, Placement};
use crate::replica::VolumeClient;

/// Options of a rebuild.
#[derive(Debug, Clone)]
pub struct Options {
    /// Listing requests in flight per volume.
    pub concurrency: usize,
    /// Read one replica of every key to record its md5.
    pub md5: bool,
    /// Memory budget in bytes for the page caches and batches (the process also needs
    /// a few tens of MB of its own); the rebuild stays within it at any key count.
    pub memory: usize,
}

/// Default of [`Options::memory`].
pub const DEFAULT_MEMORY: usize = 256 << 20;

/// The record fields of one key, derived from its replica files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Locations in placement order.
    pub volumes: Vec<String>,
    /// The size most replicas have.
    pub size: u64,
    /// True when replicas disagree on the size.
    pub size_conflict: bool,
    /// The newest generation of the key's files found (`Record::gen`); files of older
    /// ones are left out (verify collects them as orphans).
    pub gen: u64,
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
    // Generations are drawn from the clock, so the highest is the latest overwrite: an
    // older one's files are a retired value not deleted yet. (An overwrite that never
    // committed may have left complete files of a newer one: the index that knew is
    // lost, and its value is taken — a write of unknown outcome.)
    let gen = seen.replicas.iter().map(|r| r.2).max().unwrap_or(0);
    let replicas: Vec<&(String, u64, u64)> = seen.replicas.iter().filter(|r| r.2 == gen).collect();
    let locations: Vec<String> = replicas.iter().map(|(l, _, _)| l.clone()).collect();
    let volumes = order_locations(placement, ranking, key, &locations);
    let mut votes: Vec<(u64, usize)> = Vec::new();
    for loc in &volumes {
        let size = replicas
            .iter()
            .find(|(l, _, _)| l == loc)
            .map_or(0, |(_, s, _)| *s);
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
        gen,
    }
}

/// Walks `placement`'s volumes and writes a new index into `db`, which must not hold
/// one yet, in memory bounded by [`Options::memory`] whatever the number of keys:
///
/// 1. every file listed goes to a staging database on disk keyed by `(key, location)`
///    ([`Stage`]), in large transactions fed by a thread of its own;
/// 2. the staging database is read back in key order, each key's replicas together,
///    and the records are written in key order, many per transaction, with
///    [`BulkLoad`] (with `md5`, one replica of each key in a batch is read first).
///
/// Counters: `files_listed`, `total` (keys, known once listing ends), `scanned` (keys
/// written), `conflicts` (replica sizes disagree), `bytes` (hashed with `md5`),
/// `unreachable`.
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
    let budget = Budget::of(opts.memory);
    let stage = Arc::new(Stage::create(db, budget.stage_cache)?);
    list_into(&client, placement, &stage, &job, &opts, budget).await?;
    let counting = Arc::clone(&stage);
    let keys = super::blocking(move || counting.count_keys()).await?;
    job.progress.total.store(keys, Relaxed);
    let bulk = BulkLoad::create(db, budget.index_cache)?;
    write_records(&client, placement, &stage, bulk, &job, &opts, budget).await?;
    Arc::into_inner(stage)
        .ok_or_else(|| OpsError::Task("staging area still in use".into()))?
        .remove()
}

/// How [`Options::memory`] is shared out.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// Page cache of the staging database.
    stage_cache: usize,
    /// Page cache of the new index.
    index_cache: usize,
    /// Files per staging transaction (at most [`IN_FLIGHT`] + 2 batches exist at once).
    files_per_batch: usize,
    /// Keys per index transaction.
    keys_per_batch: usize,
}

/// Batches queued between the listing and the staging thread, and between the reader
/// of the staging area and the index writer.
const IN_FLIGHT: usize = 2;
/// Memory assumed per staged file / per key in a batch (key, location, record).
const BYTES_PER_ITEM: usize = 512;

impl Budget {
    fn of(memory: usize) -> Budget {
        // A quarter to each page cache, a quarter to each kind of batch.
        let quarter = memory / 4;
        let items = (quarter / BYTES_PER_ITEM / (IN_FLIGHT + 2)).clamp(256, 100_000);
        Budget {
            stage_cache: quarter.max(1 << 20),
            index_cache: quarter.max(1 << 20),
            files_per_batch: items,
            keys_per_batch: items,
        }
    }
}

/// Phase 1: lists every volume into `stage`.
async fn list_into(
    client: &VolumeClient,
    placement: &Placement,
    stage: &Arc<Stage>,
    job: &Job,
    opts: &Options,
    budget: Budget,
) -> Result<(), OpsError> {
    let p = &job.progress;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Found>>(IN_FLIGHT);
    let staging = Arc::clone(stage);
    let writer = std::thread::spawn(move || -> Result<(), OpsError> {
        for batch in rx {
            staging.add(&batch)?;
        }
        Ok(())
    });
    let mut batch = Vec::with_capacity(budget.files_per_batch);
    let report = walk(
        &client.clone(),
        placement.volumes(),
        opts.concurrency,
        |found| {
            inc(&p.files_listed);
            batch.push(found);
            if batch.len() >= budget.files_per_batch {
                let full =
                    std::mem::replace(&mut batch, Vec::with_capacity(budget.files_per_batch));
                // Blocks while the staging thread is behind: the listing waits for the disk.
                // A send fails only if that thread stopped; its error is reported below.
                let _ = tx.send(full);
            }
        },
    )
    .await;
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
    drop(tx);
    let staged = tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_err(|e| OpsError::Task(e.to_string()))?
        .map_err(|_| OpsError::Task("the staging thread panicked".into()))?;
    staged?;
    if let Some((server, e)) = report.failed.into_iter().next() {
        return Err(OpsError::Invalid(format!(
            "cannot list volume {server} ({e}); a rebuild without it would lose its keys"
        )));
    }
    tracing::info!(
        "listed {} files with {} directory listings and {} streamed walks ({} foreign entries ignored)",
        p.files_listed.load(Relaxed),
        report.dirs,
        report.walks,
        report.foreign
    );
    Ok(())
}

/// Phase 2: reads `stage` in key order and writes the records with `bulk`.
async fn write_records(
    client: &VolumeClient,
    placement: &Placement,
    stage: &Arc<Stage>,
    mut bulk: BulkLoad,
    job: &Job,
    opts: &Options,
    budget: Budget,
) -> Result<(), OpsError> {
    let p = &job.progress;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(Vec<u8>, Seen)>>(IN_FLIGHT);
    let reading = Arc::clone(stage);
    let per_batch = budget.keys_per_batch;
    let reader = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(per_batch);
        let mut open = true;
        reading.for_each_key(|key, seen| {
            batch.push((key, seen));
            if batch.len() >= per_batch {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(per_batch));
                open = tx.blocking_send(full).is_ok();
            }
            open
        })?;
        if open && !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        Ok::<(), OpsError>(())
    });
    let servers = placement.volumes().to_vec();
    let ranking = Placement::new(servers.clone(), servers.len(), 1)?;
    let md5_concurrency = opts.concurrency.max(1) * servers.len().max(1);
    let mut written = Ok(());
    while let Some(batch) = rx.recv().await {
        let rebuilt: Vec<(Vec<u8>, Rebuilt, u64)> = batch
            .into_iter()
            .map(|(key, seen)| {
                let r = derive(placement, &ranking, &key, &seen);
                if r.size_conflict {
                    inc(&p.conflicts);
                    tracing::warn!(
                        "replicas of {} differ in size; run verify --repair --deep",
                        super::show(&key)
                    );
                }
                (key, r, seen.mtime_ms)
            })
            .collect();
        let md5s: Vec<Option<[u8; 16]>> = if opts.md5 {
            stream::iter(&rebuilt)
                .map(|(key, r, _)| md5_of(client, key, r, job))
                .buffered(md5_concurrency)
                .collect()
                .await
        } else {
            vec![None; rebuilt.len()]
        };
        let records: Vec<(Vec<u8>, Record)> = rebuilt
            .into_iter()
            .zip(md5s)
            .map(|((key, r, mtime_ms), md5)| {
                let record = Record {
                    state: State::Live,
                    volumes: r.volumes,
                    size: r.size,
                    md5,
                    changed_ms: mtime_ms,
                    missing: Vec::new(),
                    stale: Vec::new(),
                    owner: 0,
                    meta: Vec::new(),
                    inline: None,
                    gen: r.gen,
                };
                (key, record)
            })
            .collect();
        let n = records.len() as u64;
        let (back, result) = tokio::task::spawn_blocking(move || {
            let result = bulk.append(&records);
            (bulk, result)
        })
        .await
        .map_err(|e| OpsError::Task(e.to_string()))?;
        bulk = back;
        if let Err(e) = result {
            written = Err(OpsError::from(e));
            break;
        }
        p.scanned.fetch_add(n, Relaxed);
    }
    drop(rx);
    reader.await.map_err(|e| OpsError::Task(e.to_string()))??;
    written?;
    super::blocking(move || bulk.finish().map(|_| ()).map_err(OpsError::from)).await
}

/// The md5 of the first replica of the right size that reads completely.
async fn md5_of(
    client: &VolumeClient,
    key: &[u8],
    rebuilt: &Rebuilt,
    job: &Job,
) -> Option<[u8; 16]> {
    for loc in &rebuilt.volumes {
        match hash(client, &VolumeClient::url(loc, key, rebuilt.gen)).await {
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
                (volumes[0].clone(), 5, 0),
                (volumes[1].clone(), 7, 0),
                (volumes[2].clone(), 5, 0),
            ],
            mtime_ms: 1,
        };
        let r = derive(&p, &ranking, b"/k", &seen);
        assert_eq!((r.size, r.size_conflict, r.gen), (5, true, 0));
        assert_eq!(r.volumes.len(), 3);
        // Files of a newer generation (an overwrite) win over an older one's.
        let seen = Seen {
            replicas: vec![
                (volumes[0].clone(), 5, 0),
                (volumes[1].clone(), 9, 1765000000000),
                (volumes[2].clone(), 9, 1765000000000),
            ],
            mtime_ms: 1,
        };
        let r = derive(&p, &ranking, b"/k", &seen);
        assert_eq!((r.size, r.size_conflict, r.gen), (9, false, 1765000000000));
        assert_eq!(r.volumes.len(), 2);
    }
}
