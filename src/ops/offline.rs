//! The offline commands `hoard rebuild`, `hoard rebalance` and `hoard verify`: open the
//! index directly (the server must be stopped — redb refuses a second opener), run the
//! job with a progress display, print its final status as JSON on stdout, and fail
//! (exit status 1) when something was left wrong.
//!
//! Progress goes to stderr: a bar (indicatif) on a terminal, otherwise a log line every
//! few seconds.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::args::{ClusterArgs, CompactArgs, RebalanceArgs, RebuildArgs, VerifyArgs};
use super::worker::{Counts, Job, JobKind, JobStatus};
use super::{rebalance, rebuild, verify, Ctx};
use crate::index::Index;
use crate::index::KeyLocks;
use crate::placement::SharedPlacement;

fn open(args: &ClusterArgs) -> anyhow::Result<Ctx> {
    let placement = args.placement.build()?;
    let index = Index::open(&args.db).with_context(|| {
        format!(
            "cannot open the index in {} (is a server running on it?)",
            args.db.display()
        )
    })?;
    Ok(Ctx {
        index,
        client: args.volume_client()?,
        placement: Arc::new(SharedPlacement::new(placement)),
        locks: KeyLocks::default(),
        health: None,
    })
}

/// `hoard rebuild`.
pub async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let placement = args.cluster.placement.build()?;
    let client = args.cluster.volume_client()?;
    let params = serde_json::json!({ "volumes": placement.volumes(), "md5": args.md5 });
    let job = Job::new(1, JobKind::Rebuild, params, None);
    let opts = rebuild::Options {
        concurrency: args.cluster.concurrency,
        md5: args.md5,
        memory: usize::try_from(args.memory_mb << 20).unwrap_or(usize::MAX),
    };
    let run = rebuild::run(client, &placement, &args.cluster.db, Arc::clone(&job), opts);
    let result = with_progress(&job, run).await;
    job.finish(&result);
    report(&job.status())?;
    // The peak resident memory of the whole rebuild, for operators and the tests.
    match peak_rss_kib() {
        Some(kib) => eprintln!("peak resident memory (VmHWM): {kib} kB"),
        None => eprintln!("peak resident memory: unknown (no /proc/self/status)"),
    }
    result?;
    Ok(())
}

/// This process's peak resident set size in KiB (`VmHWM` of `/proc/self/status`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `hoard rebalance`.
pub async fn rebalance(args: RebalanceArgs) -> anyhow::Result<()> {
    let ctx = open(&args.cluster)?;
    let params =
        serde_json::json!({ "volumes": args.cluster.placement.volumes, "max_rate": args.max_rate });
    let job = Job::new(1, JobKind::Rebalance, params, args.max_rate);
    let opts = rebalance::Options {
        concurrency: args.cluster.concurrency,
        delete_delay: Duration::ZERO,
    };
    let index = ctx.index.clone();
    let result = with_progress(&job, rebalance::run(ctx, Arc::clone(&job), opts)).await;
    index.close();
    job.finish(&result);
    let status = job.status();
    report(&status)?;
    result?;
    let c = status.counts;
    if c.failed + c.busy > 0 {
        bail!(
            "{} keys could not be moved; see the log and run again",
            c.failed + c.busy
        );
    }
    Ok(())
}

/// `hoard verify`.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let ctx = open(&args.cluster)?;
    let params = serde_json::json!({
        "volumes": args.cluster.placement.volumes,
        "repair": args.repair,
        "deep": args.deep,
        "grace_s": args.grace.as_secs_f64(),
        "max_rate": args.max_rate,
    });
    let job = Job::new(1, JobKind::Verify, params, args.max_rate);
    let opts = verify::Options {
        repair: args.repair,
        deep: args.deep,
        grace: args.grace,
        concurrency: args.cluster.concurrency,
        fence: Default::default(),
    };
    let index = ctx.index.clone();
    let result = with_progress(&job, verify::run(ctx, Arc::clone(&job), opts)).await;
    index.close();
    job.finish(&result);
    let status = job.status();
    report(&status)?;
    result?;
    if let Some(problem) = problems_left(&status.counts, args.repair) {
        bail!("{problem}");
    }
    Ok(())
}

/// What a verify run left wrong, if anything (the exit status says so, as fsck does).
pub fn problems_left(c: &Counts, repaired: bool) -> Option<String> {
    let unfixable = c.failed + c.conflicts + c.unreachable + c.busy;
    let found = c.missing + c.corrupt + c.stale_intents + c.stale_deletes + c.orphans;
    if unfixable > 0 {
        Some(format!(
            "{unfixable} problems could not be checked or repaired; see the log"
        ))
    } else if !repaired && found > 0 {
        Some(format!(
            "{found} problems found; run with --repair to fix them"
        ))
    } else {
        None
    }
}

fn report(status: &JobStatus) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(status)?);
    Ok(())
}

/// The non-zero counters, for a progress line.
fn summary(c: &Counts) -> String {
    let value = serde_json::to_value(c).unwrap_or_default();
    let mut parts = Vec::new();
    if let Some(map) = value.as_object() {
        for (name, v) in map {
            let n = v.as_u64().unwrap_or(0);
            if n > 0 && name != "total" && name != "scanned" && name != "bytes" {
                parts.push(format!("{name} {n}"));
            }
        }
    }
    parts.join(", ")
}

/// Runs `work` while showing `job`'s progress on stderr.
async fn with_progress<T>(job: &Arc<Job>, work: impl std::future::Future<Output = T>) -> T {
    let job2 = Arc::clone(job);
    let ticker = tokio::spawn(async move {
        if std::io::stderr().is_terminal() {
            bar(job2).await;
        } else {
            log_lines(job2).await;
        }
    });
    let out = work.await;
    ticker.abort();
    let _ = ticker.await;
    out
}

async fn bar(job: Arc<Job>) {
    let pb = crate::progress::bar(
        0,
        "{spinner} {prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} keys ({per_sec}, eta {eta}) {msg}",
    );
    pb.set_prefix(job.kind().name());
    let _clear = Finish(pb.clone());
    loop {
        let c = job.progress.snapshot();
        if c.total > 0 {
            pb.set_length(c.total);
            pb.set_position(c.scanned);
        } else {
            // Still listing: nothing to count against yet.
            pb.set_position(0);
        }
        let mut msg = summary(&c);
        if c.bytes > 0 {
            msg = format!("{} MB, {msg}", c.bytes / 1_000_000);
        }
        pb.set_message(msg);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Clears the bar when the ticker task is aborted.
struct Finish(indicatif::ProgressBar);

impl Drop for Finish {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

async fn log_lines(job: Arc<Job>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let s = job.status();
        let eta = s.eta_s.map_or(String::new(), |e| format!(", eta {e:.0}s"));
        tracing::info!(
            "{}: {}/{} keys, {:.0} keys/s, {:.1} MB/s{eta}; {}",
            job.kind().name(),
            s.counts.scanned,
            s.counts.total,
            s.keys_per_s,
            s.bytes_per_s / 1e6,
            summary(&s.counts)
        );
    }
}

/// `hoard compact`: the index file's free pages back to the file system; prints the
/// sizes before and after as JSON.
pub async fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let Some(dir) = args.db else {
        anyhow::bail!(
            "give --db DIR (offline, server stopped) or --url URL (online, on a running server)"
        );
    };
    let db = dir.clone();
    let (before, after) = tokio::task::spawn_blocking(move || crate::index::compact_offline(&db))
        .await
        .context("compaction task failed")?
        .with_context(|| {
            format!(
                "cannot compact the index in {} (is a server running on it? \
                 `hoard compact --url` compacts a running server's)",
                dir.display()
            )
        })?;
    println!(
        "{}",
        serde_json::json!({ "before_bytes": before, "after_bytes": after })
    );
    Ok(())
}
