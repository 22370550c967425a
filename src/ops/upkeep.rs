//! Upkeep of records whose files differ from their replica set, and the release of a
//! record with all its files.
//!
//! * A degraded write (`--write-quorum` below `--replicas`) leaves replicas recorded as
//!   `missing`; a write that replaced an older record may leave `stale` locations
//!   outside its replica set. [`spawn`] runs the worker that copies the value to each
//!   missing replica (from a replica that holds it, through the checked, time-bounded
//!   [`copy`]) and records it (`Completed`), and deletes stale files and records that
//!   (`Cleaned`). Keys are queued by the write path and found by a walk of the index
//!   at start — a background walk, one chunk of records per step and paced
//!   (`WALK_PAUSE`), interleaved with the queued keys.
//! * A replica a read found corrupt (its bytes differ from the record's md5: the
//!   index's proxied reads, `Store::open`) is queued as [`Task::Corrupt`]: the worker
//!   copies the value over it from another replica (the same checked [`copy`], so only
//!   bytes matching the record's md5 are ever stored, and a PUT replaces the file
//!   atomically), under the key's lock, and only while the record still names that
//!   replica in that generation; it is tried [`CORRUPT_ATTEMPTS`] times (e.g. while
//!   every other replica is down or corrupt too), then left to `verify --deep --repair`.
//! * [`release`] deletes every file a record names (`volumes` and `stale`), then drops
//!   the record: the rollback of a failed write, the end of a DELETE, repair of an
//!   abandoned intent or an interrupted delete.
//!
//! Each key is handled under its lock, with every wait bounded (copies by [`copy`]'s
//! deadline and by the prober seeing either end down, deletes by the volume client's
//! timeouts and the prober), and up to
//! [`CONCURRENCY`] keys at once, so one stuck key or volume never holds up the others
//! or a request for longer than that bound. A crash at any step leaves the record
//! naming every file that may exist: a copied replica not yet recorded is still
//! `missing` (copied again later; PUT overwrites), a deleted stale file not yet
//! recorded is still `stale` (deleting a missing file succeeds).

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::copy::{copy, Expect};
use super::{show, Ctx, OpsError};
use crate::index::{gen_prefix, is_gen_key, Command, Record, State};
use crate::placement::server_of;
use crate::replica::{delete_files, VolumeClient};

/// Keys tidied at once.
pub const CONCURRENCY: usize = 8;
/// Pause before a key that could not be finished is tried again.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Most keys kept in the queue; beyond, the index is walked again later.
const MAX_QUEUED: usize = 100_000;
/// Records read from the index per step of a walk.
const WALK_CHUNK: usize = 1024;
/// Least time between two steps of a walk: at most ~100k records read a second, so the
/// start-up walk of a 10 M key index takes ~100 s in the background (1 B keys: ~3 h)
/// and never competes with requests for the disk.
const WALK_PAUSE: Duration = Duration::from_millis(10);
/// How long the worker waits for a key's lock before trying it later.
const LOCK_PATIENCE: Duration = Duration::from_millis(200);

/// Tries at repairing one corrupt replica before giving up on it.
pub const CORRUPT_ATTEMPTS: u32 = 5;

pub use crate::store::upkeep::{queue, Queue, Task};

/// Runs the upkeep worker until aborted (abort and await it before closing the index).
pub fn spawn(ctx: Ctx, mut rx: mpsc::UnboundedReceiver<Task>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut due: VecDeque<(Task, Instant)> = VecDeque::new();
        // Where the next walk of the index starts; `None` when no walk is needed.
        let mut walk: Option<Option<Vec<u8>>> = Some(None);
        let mut running = FuturesUnordered::new();
        // The walk reads one chunk at a time, at most one per `WALK_PAUSE`, between
        // the other work: at start it never holds up queued keys, and it reads at most
        // `WALK_CHUNK / WALK_PAUSE` records a second however large the index.
        let mut next_walk = Instant::now();
        loop {
            if due.len() < MAX_QUEUED && Instant::now() >= next_walk {
                if let Some(after) = walk.take() {
                    walk = refill(&ctx, after, &mut due).await;
                    next_walk = Instant::now() + WALK_PAUSE;
                }
            }
            let now = Instant::now();
            while running.len() < CONCURRENCY && due.front().is_some_and(|(_, at)| *at <= now) {
                if let Some((task, _)) = due.pop_front() {
                    let ctx = ctx.clone();
                    running.push(async move {
                        let done = match &task {
                            Task::Key(key) => tidy(&ctx, key).await,
                            Task::Corrupt {
                                key,
                                gen,
                                volume,
                                attempts,
                            } => repair_corrupt(&ctx, key, *gen, volume, *attempts).await,
                        };
                        (task, done)
                    });
                }
            }
            let next_due = due.front().map(|(_, at)| *at);
            tokio::select! {
                task = rx.recv() => match task {
                    Some(task) if due.len() < MAX_QUEUED => due.push_back((task, now)),
                    Some(Task::Corrupt { key, volume, .. }) => tracing::warn!(
                        "upkeep queue full: the corrupt replica of {} on {volume} is left \
                         to verify --deep --repair",
                        show(&key)
                    ),
                    Some(Task::Key(_)) => walk = walk.or(Some(None)),
                    None => return,
                },
                Some((task, done)) = running.next(), if !running.is_empty() => {
                    if let Some(task) = retry(task, done) {
                        due.push_back((task, Instant::now() + RETRY_INTERVAL));
                    }
                }
                () = tokio::time::sleep_until(next_due.unwrap_or(now)),
                    if next_due.is_some() && running.len() < CONCURRENCY => {}
                () = tokio::time::sleep_until(next_walk),
                    if walk.is_some() && due.len() < MAX_QUEUED => {}
            }
        }
    })
}

/// Queues the keys of records with missing replicas or stale files among the next
/// [`WALK_CHUNK`] records after `after` (one read transaction); returns where the walk
/// continues, `None` once it reached the end.
async fn refill(
    ctx: &Ctx,
    after: Option<Vec<u8>>,
    due: &mut VecDeque<(Task, Instant)>,
) -> Option<Option<Vec<u8>>> {
    let (index, from) = (ctx.index.clone(), after.clone());
    let chunk =
        super::blocking(move || super::next_chunk(&index, from.as_deref(), WALK_CHUNK)).await;
    let chunk = match chunk {
        Ok(chunk) => chunk,
        Err(e) => {
            tracing::warn!("upkeep: cannot walk the index: {e}");
            return Some(after);
        }
    };
    let more = chunk.len() == WALK_CHUNK;
    let last = chunk.last().map(|(k, _)| k.clone());
    let now = Instant::now();
    for (key, record) in chunk {
        if needs_upkeep(&key, &record) {
            due.push_back((Task::Key(key), now));
        }
    }
    more.then_some(last)
}

/// True when the record at `key` (an index key) names replicas to complete or stale
/// files to delete, or is a retired value ([`crate::index::gen_key`], `deleting`, no
/// owner) whose files are to be deleted.
pub fn needs_upkeep(key: &[u8], record: &Record) -> bool {
    if is_gen_key(key) {
        return record.state == State::Deleting && record.owner == 0;
    }
    matches!(record.state, State::Live | State::Unlinked)
        && (!record.missing.is_empty() || !record.stale.is_empty())
}

/// Retired records of one key tidied per call of [`tidy`] (the rest on its next).
const RETIRED_PER_TIDY: usize = 16;

/// Completes the missing replicas of `key` and deletes its stale files (under the
/// key's lock), then deletes the files of its retired values (each is also found by
/// the walk on its own) — or, for a retired record's [`crate::index::gen_key`],
/// deletes that one's files and drops it. True when nothing is left to do (or the key
/// is gone or being rewritten).
///
/// Retired files need no lock: no record names them any more, and no write will (a
/// generation is never reused while a record of it exists), so deleting them cannot
/// race a request; two deleters at once (upkeep and verify) only delete twice.
pub async fn tidy(ctx: &Ctx, key: &[u8]) -> bool {
    let record = match ctx.index.get(key) {
        Ok(r) => r.filter(|r| needs_upkeep(key, r)),
        Err(e) => {
            tracing::warn!("upkeep of {}: {e}", show(key));
            return false;
        }
    };
    if is_gen_key(key) {
        return match record {
            Some(r) => release(ctx, key, &r, 0).await.is_ok(),
            None => true,
        };
    }
    let mut done = true;
    if record.is_some() {
        let Some(_guard) = ctx.locks.lock_within(key, LOCK_PATIENCE).await else {
            return false; // a write of the key is in flight: later
        };
        // Re-read under the lock.
        match ctx.index.get(key) {
            Ok(Some(r)) if needs_upkeep(key, &r) => done &= tidy_record(ctx, key, &r).await,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("upkeep of {}: {e}", show(key));
                return false;
            }
        }
    }
    done & release_retired(ctx, key).await
}

/// Completes the missing replicas of the record at `key` and deletes its stale files.
async fn tidy_record(ctx: &Ctx, key: &[u8], record: &Record) -> bool {
    let mut done = true;
    for target in &record.missing {
        done &= complete(ctx, key, record, target).await;
    }
    if !record.stale.is_empty() {
        done &= clean(ctx, key, record.gen, &record.stale).await;
    }
    done
}

/// Deletes the files of `key`'s retired values and drops their records (up to
/// [`RETIRED_PER_TIDY`]); false if some are left.
async fn release_retired(ctx: &Ctx, key: &[u8]) -> bool {
    let (index, prefix) = (ctx.index.clone(), gen_prefix(key));
    let page = super::blocking(move || {
        let limit = RETIRED_PER_TIDY;
        Ok(index.scan(&prefix, None, State::Deleting, limit, 4 * limit)?)
    })
    .await;
    let page = match page {
        Ok(page) => page,
        Err(e) => {
            tracing::warn!("upkeep of {}: {e}", show(key));
            return false;
        }
    };
    let mut done = page.next.is_none();
    for at in page.keys {
        done &= match ctx.index.get(&at) {
            Ok(Some(r)) if needs_upkeep(&at, &r) => release(ctx, &at, &r, 0).await.is_ok(),
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("upkeep of {}: {e}", show(&at));
                false
            }
        };
    }
    done
}

/// The task to try again after `task` ran (`done`: it finished), if any.
fn retry(task: Task, done: bool) -> Option<Task> {
    match task {
        _ if done => None,
        Task::Key(key) => Some(Task::Key(key)),
        Task::Corrupt {
            key,
            gen,
            volume,
            attempts,
        } => {
            if attempts + 1 >= CORRUPT_ATTEMPTS {
                tracing::error!(
                    "could not repair the corrupt replica of {} on {volume} after {} tries; \
                     left to verify --deep --repair",
                    show(&key),
                    attempts + 1
                );
                return None;
            }
            Some(Task::Corrupt {
                key,
                gen,
                volume,
                attempts: attempts + 1,
            })
        }
    }
}

/// Repairs the replica of generation `gen` of `key` on `volume`, which a read found
/// corrupt: copies the value over it from another replica (checked against the
/// record's md5), under the key's lock. True when done, or no longer needed (the
/// record changed, or no longer names that replica).
pub async fn repair_corrupt(ctx: &Ctx, key: &[u8], gen: u64, volume: &str, attempts: u32) -> bool {
    let Some(_guard) = ctx.locks.lock_within(key, LOCK_PATIENCE).await else {
        return false;
    };
    let still_ours = |r: &Record| {
        matches!(r.state, State::Live | State::Unlinked)
            && r.gen == gen
            && r.md5.is_some()
            && r.holders().any(|h| h == volume)
    };
    let record = match ctx.index.get(key) {
        Ok(Some(r)) if still_ours(&r) => r,
        Ok(_) => return true,
        Err(e) => {
            tracing::warn!("repairing {} on {volume}: {e}", show(key));
            return false;
        }
    };
    let dst = VolumeClient::url(volume, key, gen);
    if attempts > 0 {
        tracing::info!("repairing corrupt replica {dst}: try {}", attempts + 1);
    }
    if !copy_from_holders(ctx, key, &record, volume).await {
        return false;
    }
    // An overwrite takes no lock: if it committed meanwhile, this generation's files
    // are retired, and this copy may have put one back after upkeep deleted it.
    match ctx.index.get(key) {
        Ok(Some(r)) if still_ours(&r) => {}
        _ => {
            let gone = [volume.to_string()];
            if let Err(e) = delete_files(&ctx.client, ctx.health.as_deref(), key, gen, &gone).await
            {
                tracing::warn!("deleting {dst}, repaired after its value was replaced: {e}");
            }
            return true;
        }
    }
    metrics::counter!("hoard_corrupt_replicas_repaired_total").increment(1);
    tracing::info!("repaired corrupt replica {dst}");
    true
}

/// Copies the value of `record` to `target` from another replica that holds it and
/// whose volume is up (checked against the record's size and md5); true once one copy
/// succeeded.
async fn copy_from_holders(ctx: &Ctx, key: &[u8], record: &Record, target: &str) -> bool {
    if !ctx.is_up(server_of(target)) {
        return false;
    }
    let expect = Expect {
        size: record.size,
        md5: record.md5,
    };
    let dst = VolumeClient::url(target, key, record.gen);
    let sources = record
        .holders()
        .filter(|h| *h != target && ctx.is_up(server_of(h)));
    let mut copied = false;
    for src in sources {
        let src_url = VolumeClient::url(src, key, record.gen);
        let copying = copy(&ctx.client, &src_url, &dst, expect);
        let ends = [src.to_string(), target.to_string()];
        // Stop waiting (and free the key's lock) as soon as either end is seen down.
        let result = match ctx.health.as_deref() {
            Some(health) => tokio::select! {
                r = copying => r.map_err(|e| e.to_string()),
                server = health.first_down(&ends) => Err(format!("volume {server} went down")),
            },
            None => copying.await.map_err(|e| e.to_string()),
        };
        match result {
            Ok(_) => {
                copied = true;
                break;
            }
            Err(e) => tracing::warn!("copying to {dst}: {e}"),
        }
    }
    copied
}

/// Copies the value to `target` from a replica that holds it, then records it.
async fn complete(ctx: &Ctx, key: &[u8], record: &Record, target: &str) -> bool {
    if !copy_from_holders(ctx, key, record, target).await {
        return false;
    }
    let dst = VolumeClient::url(target, key, record.gen);
    let cmd = Command::Completed {
        key: key.to_vec(),
        location: target.to_string(),
        gen: record.gen,
    };
    match ctx.index.apply(cmd).await {
        Ok(Ok(_)) => {
            tracing::info!("completed replica {dst}");
            true
        }
        Ok(Err(r)) => {
            tracing::warn!("completing {dst}: {r}");
            true // the record changed: it is no longer ours to complete
        }
        Err(e) => {
            tracing::warn!("completing {dst}: {e}");
            false
        }
    }
}

/// Deletes the stale files of generation `gen` at `locations`, then records that
/// (`Cleaned`); false if some could not be deleted. The caller holds the key's lock.
pub async fn clean(ctx: &Ctx, key: &[u8], gen: u64, locations: &[String]) -> bool {
    if let Err(e) = delete_files(&ctx.client, ctx.health.as_deref(), key, gen, locations).await {
        tracing::warn!("cleaning stale copies of {}: {e}", show(key));
        return false;
    }
    let cmd = Command::Cleaned {
        key: key.to_vec(),
        locations: locations.to_vec(),
    };
    match ctx.index.apply(cmd).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("cleaning stale copies of {}: {e}", show(key));
            false
        }
    }
}

/// [`crate::store::upkeep::release`], for operations.
pub async fn release(ctx: &Ctx, key: &[u8], record: &Record, owner: u64) -> Result<bool, OpsError> {
    Ok(crate::store::upkeep::release(ctx, key, record, owner).await?)
}
