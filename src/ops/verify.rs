//! Verify (and with `repair`, fix) every key of the index, then look for orphan files
//! ([`super::orphans`]).
//!
//! For each record:
//!
//! * `live` / `unlinked`: every replica must exist with the record's size (`HEAD`);
//!   with `deep`, its content must also hash to the record's md5 (`GET`). An unknown md5
//!   is learned from the replicas when a strict majority agree, and recorded (`SetMd5`)
//!   when all agree or when repairing. Missing or corrupt replicas are re-created from a
//!   good one (`repair`). A volume that cannot be reached is counted, not repaired.
//! * `writing` older than the grace period (an intent left by a crash): with `repair`,
//!   first `Abandon` it (it becomes `deleting`, so a write that was only slow can no
//!   longer commit: it fails instead of acknowledging files deleted next), then delete
//!   whatever replica files exist, then `Remove { expect: Deleting }`.
//! * `deleting` (an interrupted DELETE): with `repair`, delete the files, then
//!   `Remove { expect: Deleting }`.
//! * `live` / `unlinked` stored inline (`--inline-max`): the value in the record must
//!   have the record's size and md5; there is no replica to check or repair.
//! * With zones: a key whose replicas span fewer zones than the placement can give
//!   (`min(replicas, zones)`) is counted `unspread`; with `repair`, once its replicas
//!   are all good, it is moved to its placement exactly as a rebalance moves it
//!   ([`super::rebalance::one`]; the old copies go after a short delay, or as orphans).
//!
//! Every repair holds the key's lock and first re-reads the record, acting only if it
//! is the version that was checked. Deleting files on verify's own judgement (rolling
//! back an intent, finishing a delete, orphans) first passes the job's
//! [`super::fence::Fence`]: in an index cluster a linearizable read, and this member
//! still owning the cluster's job; a member that lost the job stops it. What a kill -9 at each step leaves behind:
//!
//! * *While re-creating a replica:* the copy is a PUT of a checked stream to the
//!   location the record already names; the volume keeps the old file (or none) until
//!   the upload completes, so the location holds the old bad file or the good one. A
//!   rerun checks it again.
//! * *Rolling back an intent or finishing a delete, between deleting files and removing
//!   the record:* the record is `deleting` (an intent was abandoned first), naming
//!   files that are (partly) gone; deleting a missing file succeeds, so a rerun
//!   finishes the job.
//! * *After `SetMd5`:* it is one atomic command; nothing else changed.
//! * *Deleting an orphan:* the file is gone or still there; a rerun looks again.
//!
//! Nothing verify does is needed for reads to be correct, so stopping it at any point is
//! safe, and every step is idempotent.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use md5::{Digest, Md5};

use super::copy::{copy, hash, Expect};
use super::upkeep;
pub use super::verify_options::{Options, LOCK_PATIENCE};
use super::worker::{inc, Job};
use super::{blocking, count_keys, next_chunk, show, Ctx, OpsError};
use crate::index::{now_ms, Command, Record, State};
use crate::placement::server_of;
use crate::replica::VolumeClient;

/// Records read from the index per chunk.
const CHUNK: usize = 1024;

/// The state of one replica as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Replica {
    /// Right size; md5 when read in full.
    Good(Option<[u8; 16]>),
    /// No file.
    Missing,
    /// Wrong size, or an md5 other than the reference.
    Corrupt,
    /// The volume did not answer.
    Unreachable,
}

/// How long the old replicas of a key moved to restore zone spread stay (readers may
/// hold redirects to them).
const SPREAD_DELETE_DELAY: Duration = Duration::from_secs(5);

/// Verifies every record, then collects orphans; updates `job`'s counters.
pub async fn run(ctx: Ctx, job: Arc<Job>, opts: Options) -> Result<(), OpsError> {
    let total = count_keys(&ctx.index);
    job.progress.total.store(total, Relaxed);
    let mut servers: BTreeSet<String> = ctx.placement.current().volumes().iter().cloned().collect();
    // A job taken over from another index server goes on where that one got to.
    let mut after: Option<Vec<u8>> = job.cursor();
    while !job.is_cancelled() {
        let (index, from) = (ctx.index.clone(), after.clone());
        let chunk = blocking(move || next_chunk(&index, from.as_deref(), CHUNK)).await?;
        let Some((last, _)) = chunk.last() else { break };
        after = Some(last.clone());
        for (_, record) in &chunk {
            servers.extend(record.volumes.iter().map(|v| server_of(v).to_string()));
        }
        let fenced = std::sync::Mutex::new(None);
        stream::iter(chunk)
            .for_each_concurrent(opts.concurrency.max(1), |(key, record)| {
                let (ctx, job, opts, fenced) = (&ctx, &job, &opts, &fenced);
                async move {
                    inc(&job.progress.scanned);
                    match check(ctx, job, opts, &key, record).await {
                        Ok(()) => {}
                        Err(OpsError::Fenced(e)) => {
                            *fenced.lock().unwrap_or_else(|p| p.into_inner()) = Some(e)
                        }
                        Err(e) => {
                            inc(&job.progress.failed);
                            tracing::warn!("verify of {}: {e}", show(&key));
                        }
                    }
                }
            })
            .await;
        if let Some(e) = fenced.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(OpsError::Fenced(e));
        }
        if let Some(done) = &after {
            job.set_cursor(done);
        }
    }
    if job.is_cancelled() {
        return Ok(());
    }
    let servers: Vec<String> = servers.into_iter().collect();
    super::orphans::collect(&ctx, &job, &servers, &opts).await
}

async fn check(
    ctx: &Ctx,
    job: &Job,
    opts: &Options,
    key: &[u8],
    record: Record,
) -> Result<(), OpsError> {
    let p = &job.progress;
    match record.state {
        State::Writing => {
            if now_ms().saturating_sub(record.changed_ms) < opts.grace.as_millis() as u64 {
                inc(&p.skipped);
                return Ok(());
            }
            inc(&p.stale_intents);
            if opts.repair && drop_record(ctx, opts, key, &record).await? {
                inc(&p.intents_rolled_back);
            }
            Ok(())
        }
        State::Deleting => {
            inc(&p.stale_deletes);
            if opts.repair && drop_record(ctx, opts, key, &record).await? {
                inc(&p.deletes_finished);
            }
            Ok(())
        }
        State::Live | State::Unlinked => check_replicas(ctx, job, opts, key, record, true).await,
    }
}

/// Deletes the files of an intent or interrupted delete, then its record. False when
/// the record changed meanwhile or the key stayed busy. The record is re-read after
/// the fence check (a linearizable read; the job still ours), so a member with a stale
/// copy of the index deletes nothing.
async fn drop_record(
    ctx: &Ctx,
    opts: &Options,
    key: &[u8],
    seen: &Record,
) -> Result<bool, OpsError> {
    // A record beside the key's (an overwrite's intent, a retired value) under the
    // key's lock too: a minikeyvalue write of the key holds it while it streams.
    let lock = crate::index::value_key(key);
    let Some(_guard) = ctx.locks.lock_within(lock, LOCK_PATIENCE).await else {
        return Ok(false);
    };
    opts.fence.check(&ctx.index).await?;
    if ctx.index.get(key)?.as_ref() != Some(seen) {
        return Ok(false);
    }
    if seen.state != State::Writing {
        return upkeep::release(ctx, key, seen, 0).await;
    }
    // The intent's write may still be running (slow, or on another index server, whose
    // lock is not ours): it must not be able to commit files deleted next.
    let abandon = Command::Abandon {
        key: key.to_vec(),
        owner: seen.owner,
        changed_ms: seen.changed_ms,
    };
    let Some(abandoned) = ctx
        .index
        .apply(abandon)
        .await?
        .ok()
        .and_then(|_| ctx.index.get(key).ok().flatten())
    else {
        return Ok(false);
    };
    upkeep::release(ctx, key, &abandoned, 0).await
}

async fn inspect(ctx: &Ctx, job: &Job, deep: bool, url: &str, size: u64) -> Replica {
    if deep {
        match hash(&ctx.client, url).await {
            Ok(None) => Replica::Missing,
            Ok(Some((got, md5))) => {
                job.progress.bytes.fetch_add(got, Relaxed);
                job.throttle.bytes(got).await;
                if got == size {
                    Replica::Good(Some(md5))
                } else {
                    Replica::Corrupt
                }
            }
            Err(e) => {
                tracing::warn!("{e}");
                Replica::Unreachable
            }
        }
    } else {
        match ctx.client.head(url).await {
            Ok(None) => Replica::Missing,
            Ok(Some(got)) if got == size => Replica::Good(None),
            Ok(Some(_)) => Replica::Corrupt,
            Err(e) => {
                tracing::warn!("{e}");
                Replica::Unreachable
            }
        }
    }
}

/// The md5 most replicas agree on, if a strict majority of those read do.
fn majority(states: &[Replica]) -> Option<[u8; 16]> {
    let mut votes: HashMap<[u8; 16], usize> = HashMap::new();
    let mut read = 0;
    for s in states {
        if let Replica::Good(Some(m)) = s {
            *votes.entry(*m).or_default() += 1;
            read += 1;
        }
    }
    votes
        .into_iter()
        .find(|&(_, n)| n * 2 > read)
        .map(|(m, _)| m)
}

/// What verify does to one live or unlinked value — every replica checked (read in
/// full with `opts.deep`), an unknown md5 learned, with `opts.repair` missing and
/// corrupt replicas re-created — without moving it for zone spread: the scrubber's
/// step ([`super::scrub`]).
pub async fn scrub_one(
    ctx: &Ctx,
    job: &Job,
    opts: &Options,
    key: &[u8],
    record: Record,
) -> Result<(), OpsError> {
    check_replicas(ctx, job, opts, key, record, false).await
}

/// Checks (and repairs) the replicas of one live or unlinked value; with `spread`, a
/// value whose replicas span too few zones is counted (and moved, repairing).
async fn check_replicas(
    ctx: &Ctx,
    job: &Job,
    opts: &Options,
    key: &[u8],
    record: Record,
    spread_zones: bool,
) -> Result<(), OpsError> {
    let p = &job.progress;
    job.throttle.keys(1).await;
    // Replicas a degraded write left missing, and stale files, are the upkeep's to fix.
    let mut record = record;
    if upkeep::needs_upkeep(key, &record) {
        p.missing.fetch_add(record.missing.len() as u64, Relaxed);
        if opts.repair && upkeep::tidy(ctx, key).await {
            match ctx.index.get(key)? {
                Some(now) if matches!(now.state, State::Live | State::Unlinked) => record = now,
                _ => return Ok(()),
            }
        }
    }
    // A value stored in its record (`--inline-max`) has no replica: it is checked
    // against the record's size and md5 (the index's own copies are Raft's to keep).
    if let Some(value) = &record.inline {
        let md5 = || <[u8; 16]>::from(Md5::digest(value));
        if value.len() as u64 == record.size && record.md5.is_none_or(|m| m == md5()) {
            inc(&p.ok);
        } else {
            inc(&p.corrupt);
            tracing::warn!("inline value of {} does not match its record", show(key));
        }
        return Ok(());
    }
    // Only replicas that hold the value are checked, and only they are copied from.
    let urls: Vec<String> = record
        .holders()
        .map(|v| VolumeClient::url(v, key, record.gen))
        .collect();
    let mut states = futures_util::future::join_all(
        urls.iter()
            .map(|u| inspect(ctx, job, opts.deep, u, record.size)),
    )
    .await;
    // The md5 replicas must have: the record's, or (deep) what a majority agree on.
    let reference = match (record.md5, opts.deep) {
        (Some(m), _) => Some(m),
        (None, true) => match majority(&states) {
            Some(m) => Some(m),
            None if states.iter().any(|s| matches!(s, Replica::Good(Some(_)))) => {
                inc(&p.conflicts);
                tracing::warn!("replicas of {} disagree with no majority", show(key));
                return Ok(());
            }
            None => None,
        },
        (None, false) => None,
    };
    if let Some(want) = reference {
        for s in &mut states {
            if matches!(s, Replica::Good(Some(m)) if *m != want) {
                *s = Replica::Corrupt;
            }
        }
    }
    let count = |what: &Replica| states.iter().filter(|s| *s == what).count() as u64;
    let (missing, corrupt, unreachable) = (
        count(&Replica::Missing),
        count(&Replica::Corrupt),
        count(&Replica::Unreachable),
    );
    p.missing.fetch_add(missing, Relaxed);
    p.corrupt.fetch_add(corrupt, Relaxed);
    p.unreachable.fetch_add(unreachable, Relaxed);
    let unanimous = missing + corrupt + unreachable == 0;
    if unanimous {
        inc(&p.ok);
    }
    if let (None, Some(md5)) = (record.md5, reference) {
        if unanimous || opts.repair {
            let set = Command::SetMd5 {
                key: key.to_vec(),
                changed_ms: record.changed_ms,
                size: record.size,
                md5,
            };
            if ctx.index.apply(set).await?.is_ok() {
                inc(&p.md5_filled);
            }
        }
    }
    if unanimous && spread_zones {
        spread(ctx, job, opts, key, &record).await;
    }
    if !opts.repair || missing + corrupt == 0 {
        return Ok(());
    }
    let Some(_guard) = ctx.locks.lock_within(key, LOCK_PATIENCE).await else {
        inc(&p.busy);
        return Ok(());
    };
    // Act only on the version that was checked (md5 may have been filled in just now).
    match ctx.index.get(key)? {
        Some(now) if now.volumes == record.volumes && now.changed_ms == record.changed_ms => {}
        _ => {
            inc(&p.skipped);
            return Ok(());
        }
    }
    let expect = Expect {
        size: record.size,
        md5: reference,
    };
    let good: Vec<&String> = urls
        .iter()
        .zip(&states)
        .filter(|(_, s)| matches!(s, Replica::Good(_)))
        .map(|(u, _)| u)
        .collect();
    for (dst, _) in urls
        .iter()
        .zip(&states)
        .filter(|(_, s)| matches!(s, Replica::Missing | Replica::Corrupt))
    {
        let mut last = OpsError::Invalid(format!("no good replica of {} left", show(key)));
        let mut done = false;
        for src in &good {
            match copy(&ctx.client, src, dst, expect).await {
                Ok(n) => {
                    p.bytes.fetch_add(n, Relaxed);
                    inc(&p.repaired);
                    done = true;
                    break;
                }
                Err(e) => last = e,
            }
        }
        if !done {
            inc(&p.failed);
            tracing::warn!("cannot repair {dst}: {last}");
        }
    }
    Ok(())
}

/// Counts a key whose replicas span fewer zones than they could and, repairing, moves
/// it to its placement.
async fn spread(ctx: &Ctx, job: &Job, opts: &Options, key: &[u8], record: &Record) {
    let placement = ctx.placement.current();
    if !placement.zoned() || placement.spread(&record.volumes) >= placement.best_spread() {
        return;
    }
    let p = &job.progress;
    inc(&p.unspread);
    if !opts.repair {
        return;
    }
    match super::rebalance::one(ctx, key, SPREAD_DELETE_DELAY).await {
        super::rebalance::Outcome::Moved { bytes, .. } => {
            inc(&p.moved);
            p.bytes.fetch_add(bytes, Relaxed);
        }
        super::rebalance::Outcome::Failed(why) => {
            inc(&p.failed);
            tracing::warn!("restoring the zone spread of {}: {why}", show(key));
        }
        super::rebalance::Outcome::Busy => inc(&p.busy),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_vote() {
        let (a, b) = (Replica::Good(Some([1; 16])), Replica::Good(Some([2; 16])));
        assert_eq!(majority(&[a.clone(), a.clone(), b.clone()]), Some([1; 16]));
        assert_eq!(majority(&[a.clone(), b.clone()]), None);
        assert_eq!(
            majority(&[a.clone(), Replica::Missing, Replica::Corrupt]),
            Some([1; 16])
        );
        assert_eq!(majority(&[Replica::Missing]), None);
    }
}
