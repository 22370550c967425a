//! Rebalance: move every key to the replica set its placement gives now (after volumes
//! joined or left).
//!
//! Per key, holding the key's lock (so no PUT, DELETE or UNLINK of it runs meanwhile; a
//! key whose lock is held is retried a few times, then counted `busy`), and what a
//! kill -9 at each step leaves behind:
//!
//! 1. Re-read the record. Only `live` and `unlinked` keys move; intents are left to
//!    verify. A key already at its placement costs nothing more.
//! 2. Copy the value to every new location: a GET of a current replica streamed into a
//!    PUT ([`copy`]), md5 (or, when the record has none, size) checked before the
//!    upload may complete, so a bad copy is never stored.
//!    *Killed here:* the index is unchanged and still names the old, complete replicas.
//!    New locations hold complete copies or nothing (volumes discard cut uploads);
//!    nothing refers to them. A rerun copies again (PUT overwrites); if the placement
//!    changed in between, verify --repair collects them as orphans.
//! 3. `Relocate { from: old, to: placement }`: one atomic index command; refused if the
//!    record changed since step 1.
//!    *Killed just before:* as in 2. *Just after:* the index names the new copies, all
//!    complete and checked; the old ones are unreferenced.
//! 4. Delete the old locations that left the replica set — online after a delay
//!    (readers may hold a redirect to them), offline at once — re-checking under the
//!    key's lock that the index still does not refer to them.
//!    *Killed before or during:* the leftover old copies are orphans: a rerun finds the
//!    key balanced and skips it; verify --repair deletes them after its grace period.
//!
//! So a rerun after a crash at any point converges, and never loses the last good copy:
//! the old replicas are deleted only after the index durably points at checked new ones.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use super::copy::{copy, Expect};
use super::worker::{inc, Job};
use super::{blocking, count_keys, next_chunk, show, Ctx, OpsError};
use crate::index::{Command, Record, State};
use crate::placement::server_of;
use crate::replica::{delete_files, VolumeClient};

/// Records read from the index per chunk.
const CHUNK: usize = 1024;

/// Passes over keys that were busy (locked by a request).
const BUSY_ROUNDS: u32 = 5;

/// Options of a rebalance run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keys copied concurrently (in [`run`], up to `PIPELINE` times as many more wait
    /// for their index commit meanwhile).
    pub concurrency: usize,
    /// How long old replicas stay after a key moved (readers may hold redirects).
    pub delete_delay: Duration,
}

/// What happened to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already at its placement.
    Balanced,
    /// Copied and relocated; `old` are the locations that left its replica set.
    Moved {
        /// Bytes copied.
        bytes: u64,
        /// Locations to delete.
        old: Vec<String>,
        /// The generation of the files moved (`Record::gen`).
        gen: u64,
    },
    /// A write or delete intent: left for verify.
    Skipped,
    /// A request holds the key's lock.
    Busy,
    /// No record (deleted meanwhile).
    Gone,
    /// The move failed; nothing changed in the index.
    Failed(String),
}

/// Keys in flight per copy slot in [`run`]: a key whose copies are done waits for its
/// `Relocate` to commit without holding a slot, so that while one group commit (an
/// fsync) is under way the next keys copy, and the commit after it takes them all in
/// one transaction.
const PIPELINE: usize = 8;

/// Moves `key` to its placement, holding its lock. Old locations are returned in
/// [`Outcome::Moved`], not deleted: see [`delete_old`].
pub async fn move_key(ctx: &Ctx, key: &[u8], job: Option<&Job>) -> Outcome {
    move_key_limited(ctx, key, job, None).await
}

/// [`move_key`], copying only while holding a permit of `copies` when given.
async fn move_key_limited(
    ctx: &Ctx,
    key: &[u8],
    job: Option<&Job>,
    copies: Option<&tokio::sync::Semaphore>,
) -> Outcome {
    let Some(_guard) = ctx.locks.try_lock(key) else {
        return Outcome::Busy;
    };
    let record = match ctx.index.get(key) {
        Ok(Some(record)) => record,
        Ok(None) => return Outcome::Gone,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    if !matches!(record.state, State::Live | State::Unlinked) {
        return Outcome::Skipped;
    }
    let target = ctx.placement.current().locate(key);
    // A value stored in its record (`--inline-max`) is on no volume: nothing to move.
    if record.volumes == target || record.inline.is_some() {
        return Outcome::Balanced;
    }
    if let Some(job) = job {
        job.throttle.keys(1).await;
    }
    let permit = match copies {
        Some(slots) => match slots.acquire().await {
            Ok(permit) => Some(permit),
            Err(e) => return Outcome::Failed(e.to_string()),
        },
        None => None,
    };
    let bytes = match copy_missing(ctx, key, &record, &target).await {
        Ok(bytes) => bytes,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    drop(permit);
    let relocate = Command::Relocate {
        key: key.to_vec(),
        from: record.volumes.clone(),
        to: target.clone(),
        gen: record.gen,
    };
    match ctx.index.apply(relocate).await {
        Ok(Ok(_)) => {}
        Ok(Err(r)) => return Outcome::Failed(format!("index refused the move: {r}")),
        Err(e) => return Outcome::Failed(e.to_string()),
    }
    if let Some(job) = job {
        job.throttle.bytes(bytes).await;
    }
    let old = record
        .volumes
        .into_iter()
        .filter(|v| !target.contains(v))
        .collect();
    Outcome::Moved {
        bytes,
        old,
        gen: record.gen,
    }
}

/// Copies the value to every location of `target` that `record` lacks, each from the
/// first current replica that yields a good copy. Returns the bytes copied.
async fn copy_missing(
    ctx: &Ctx,
    key: &[u8],
    record: &Record,
    target: &[String],
) -> Result<u64, OpsError> {
    let expect = Expect {
        size: record.size,
        md5: record.md5,
    };
    // Only replicas that hold the value (never one a degraded write left missing), those
    // on volumes believed up first.
    let mut sources: Vec<&str> = record.holders().collect();
    sources.sort_by_key(|v| !ctx.is_up(server_of(v)));
    let mut bytes = 0;
    for dst in target.iter().filter(|t| !record.volumes.contains(t)) {
        if !ctx.is_up(server_of(dst)) {
            return Err(OpsError::Invalid(format!(
                "target volume {} is down",
                server_of(dst)
            )));
        }
        let dst_url = VolumeClient::url(dst, key, record.gen);
        let mut last_err = OpsError::Invalid("the record lists no replica".into());
        let mut copied = false;
        for src in &sources {
            match copy(
                &ctx.client,
                &VolumeClient::url(src, key, record.gen),
                &dst_url,
                expect,
            )
            .await
            {
                Ok(n) => {
                    bytes += n;
                    copied = true;
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        if !copied {
            return Err(last_err);
        }
    }
    Ok(bytes)
}

/// Deletes `old` replica locations of `key` that the index does not refer to (any
/// more), under the key's lock (waiting up to 10 s while the key is busy). False if
/// some could not be deleted (they stay as orphans for verify).
pub async fn delete_old(ctx: &Ctx, key: &[u8], gen: u64, old: &[String]) -> bool {
    let Some(_guard) = ctx.locks.lock_within(key, Duration::from_secs(10)).await else {
        return false;
    };
    let referenced = match super::named_locations(&ctx.index, key, gen) {
        Ok(named) => named,
        Err(_) => return false,
    };
    let old: Vec<String> = old
        .iter()
        .filter(|v| !referenced.contains(v))
        .cloned()
        .collect();
    match delete_files(&ctx.client, ctx.health.as_deref(), key, gen, &old).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("old replica of {} left for verify: {e}", show(key));
            false
        }
    }
}

/// `REBALANCE /key`: moves one key; its old replicas are deleted after `delay`.
pub async fn one(ctx: &Ctx, key: &[u8], delay: Duration) -> Outcome {
    let outcome = move_key(ctx, key, None).await;
    if let Outcome::Moved { old, gen, .. } = &outcome {
        let (ctx, key, old, gen) = (ctx.clone(), key.to_vec(), old.clone(), *gen);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            delete_old(&ctx, &key, gen, &old).await;
        });
    }
    outcome
}

/// Rebalances every key of the index, updating `job`'s counters; stops early when the
/// job is cancelled.
pub async fn run(ctx: Ctx, job: Arc<Job>, opts: Options) -> Result<(), OpsError> {
    let total = count_keys(&ctx.index);
    job.progress
        .total
        .store(total, std::sync::atomic::Ordering::Relaxed);
    let concurrency = opts.concurrency.max(1);

    // Deletions of old replicas run behind the moves, each after `delete_delay`.
    let (tx, rx) =
        tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>, u64, Vec<String>)>();
    let mut deleter = {
        let (ctx, job) = (ctx.clone(), Arc::clone(&job));
        AbortOnDrop(tokio::spawn(async move {
            stream::unfold(rx, |mut rx| async {
                rx.recv().await.map(|item| (item, rx))
            })
            .for_each_concurrent(concurrency, |(due, key, gen, old)| {
                let (ctx, job) = (&ctx, &job);
                async move {
                    tokio::time::sleep_until(due).await;
                    if !delete_old(ctx, &key, gen, &old).await {
                        inc(&job.progress.cleanup_failed);
                    }
                }
            })
            .await;
        }))
    };

    let delay = opts.delete_delay;
    // `concurrency` keys copy at once; up to PIPELINE times as many wait for their
    // index commits meanwhile.
    let copies = tokio::sync::Semaphore::new(concurrency);
    let in_flight = concurrency * PIPELINE;
    let handle = |key: Vec<u8>| {
        let (ctx, job, tx, copies) = (&ctx, &job, &tx, &copies);
        async move {
            let outcome = move_key_limited(ctx, &key, Some(job), Some(copies)).await;
            let p = &job.progress;
            match &outcome {
                Outcome::Balanced => inc(&p.ok),
                Outcome::Moved { bytes, old, gen } => {
                    inc(&p.moved);
                    p.bytes
                        .fetch_add(*bytes, std::sync::atomic::Ordering::Relaxed);
                    let due = tokio::time::Instant::now() + delay;
                    let _ = tx.send((due, key.clone(), *gen, old.clone()));
                }
                Outcome::Skipped | Outcome::Gone => inc(&p.skipped),
                Outcome::Busy => {}
                Outcome::Failed(why) => {
                    inc(&p.failed);
                    tracing::warn!("rebalance of {} failed: {why}", show(&key));
                }
            }
            (key, outcome)
        }
    };

    // A job taken over from another index server goes on where that one got to.
    let mut after: Option<Vec<u8>> = job.cursor();
    let mut busy: Vec<Vec<u8>> = Vec::new();
    while !job.is_cancelled() {
        let (index, from) = (ctx.index.clone(), after.clone());
        let chunk = blocking(move || next_chunk(&index, from.as_deref(), CHUNK)).await?;
        let Some((last, _)) = chunk.last() else { break };
        after = Some(last.clone());
        let placement = ctx.placement.current();
        // Balanced keys and intents need no lock and no I/O. A key counts as scanned
        // once it is dealt with, so `scanned` (and the ETA computed from it) follows
        // the moves instead of running a chunk ahead.
        let mut todo = Vec::new();
        for (key, record) in chunk {
            if !matches!(record.state, State::Live | State::Unlinked) {
                inc(&job.progress.skipped);
                inc(&job.progress.scanned);
            } else if record.volumes == placement.locate(&key) {
                inc(&job.progress.ok);
                inc(&job.progress.scanned);
            } else {
                todo.push(key);
            }
        }
        let outcomes: Vec<_> = stream::iter(todo)
            .map(|key| {
                let moved = handle(key);
                async {
                    let outcome = moved.await;
                    inc(&job.progress.scanned);
                    outcome
                }
            })
            .buffer_unordered(in_flight)
            .collect()
            .await;
        busy.extend(
            outcomes
                .into_iter()
                .filter(|(_, o)| *o == Outcome::Busy)
                .map(|(k, _)| k),
        );
        if let Some(done) = &after {
            job.set_cursor(done);
        }
    }
    for round in 1..=BUSY_ROUNDS {
        if busy.is_empty() || job.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(round))).await;
        let outcomes: Vec<_> = stream::iter(std::mem::take(&mut busy))
            .map(&handle)
            .buffer_unordered(in_flight)
            .collect()
            .await;
        busy = outcomes
            .into_iter()
            .filter(|(_, o)| *o == Outcome::Busy)
            .map(|(k, _)| k)
            .collect();
    }
    job.progress
        .busy
        .fetch_add(busy.len() as u64, std::sync::atomic::Ordering::Relaxed);
    drop(tx);
    (&mut deleter.0)
        .await
        .map_err(|e| OpsError::Task(format!("deleting old replicas: {e}")))
}

/// Stops the deleter when a job is aborted (server shutdown), so that it does not keep
/// the index open; the deletions it had not done leave orphans for verify.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
