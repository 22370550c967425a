//! Orphan files: value files on a volume that no index record refers to — left by a
//! crash between a copy and the index update, by old replicas a rebalance could not
//! delete, or by a write whose cleanup failed.
//!
//! Every volume is walked through its listings ([`super::listing`]). A file is an
//! orphan when the record of its key (in any state, intents included) does not list its
//! location and its mtime is older than the grace period, so files of writes still in
//! flight are never touched. With `repair`, orphans are deleted in batches: before each,
//! the job's [`super::fence::Fence`] is checked (in an index cluster: a read barrier, so
//! this member's copy of the index is current, and this member still owning the
//! cluster's job — a cut-off or deposed member stops there, having deleted nothing);
//! then each orphan is deleted under its key's lock after re-reading the record, so a
//! PUT, rebalance or repair that started meanwhile and now refers to the file keeps it.
//! The fence module documents what a crash or partition at each step leaves. Files
//! that are not hoard value files are never touched.
//!
//! The grace period compares a volume's mtimes with this machine's clock: keep it well
//! above any clock skew between machines.

use std::sync::atomic::Ordering::Relaxed;

use futures_util::stream::{self, StreamExt};

use super::listing::{walk, Found};
use super::verify_options::{Options, LOCK_PATIENCE};
use super::worker::{inc, Job};
use super::{Ctx, OpsError};
use crate::index::now_ms;
use crate::replica::VolumeClient;

/// Most orphans deleted after one [`super::fence::Fence`] check.
const DELETE_BATCH: usize = 64;

/// True when the index refers to `found`'s location for its key and generation (as a
/// replica, or as a location whose cleanup the record itself holds: stale, retired, an
/// overwrite in flight).
fn referenced(ctx: &Ctx, found: &Found) -> Result<bool, OpsError> {
    Ok(super::named_locations(&ctx.index, &found.key, found.gen)?.contains(&found.location))
}

/// Finds (and with `opts.repair`, deletes) orphans on `servers`.
pub async fn collect(
    ctx: &Ctx,
    job: &Job,
    servers: &[String],
    opts: &Options,
) -> Result<(), OpsError> {
    let p = &job.progress;
    let grace_ms = opts.grace.as_millis() as u64;
    let now = now_ms();
    let mut candidates = Vec::new();
    let mut index_error = None;
    let report = walk(&ctx.client, servers, opts.concurrency, |found| {
        inc(&p.files_listed);
        if job.is_cancelled() || index_error.is_some() {
            return;
        }
        let old_enough = found.mtime_ms > 0 && now.saturating_sub(found.mtime_ms) >= grace_ms;
        if !old_enough {
            return;
        }
        match referenced(ctx, &found) {
            Ok(true) => {}
            Ok(false) => candidates.push(found),
            Err(e) => index_error = Some(e),
        }
    })
    .await;
    if let Some(e) = index_error {
        return Err(e);
    }
    for (server, e) in &report.failed {
        inc(&p.unreachable);
        tracing::warn!("orphan scan of {server} incomplete: {e}");
    }
    p.orphans.fetch_add(candidates.len() as u64, Relaxed);
    if !opts.repair {
        return Ok(());
    }
    let batch = DELETE_BATCH.max(opts.concurrency);
    let mut candidates = candidates.into_iter().peekable();
    while candidates.peek().is_some() && !job.is_cancelled() {
        // Right before each batch: a linearizable read, and the job still ours.
        opts.fence.check(&ctx.index).await?;
        stream::iter(candidates.by_ref().take(batch))
            .for_each_concurrent(opts.concurrency.max(1), |found| async move {
                match delete_orphan(ctx, &found).await {
                    Ok(true) => inc(&p.orphans_deleted),
                    Ok(false) => {}
                    Err(e) => {
                        inc(&p.failed);
                        tracing::warn!("deleting orphan at {}: {e}", found.location);
                    }
                }
            })
            .await;
    }
    Ok(())
}

async fn delete_orphan(ctx: &Ctx, found: &Found) -> Result<bool, OpsError> {
    let Some(_guard) = ctx.locks.lock_within(&found.key, LOCK_PATIENCE).await else {
        return Ok(false);
    };
    if referenced(ctx, found)? {
        return Ok(false);
    }
    let url = VolumeClient::url(&found.location, &found.key, found.gen);
    ctx.client.delete(&url).await?;
    tracing::info!("deleted orphan {url}");
    Ok(true)
}
